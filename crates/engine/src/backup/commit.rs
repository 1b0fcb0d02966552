//! The end of a backup: the last index file, then (B5) the lease check right before the
//! recovery point is written, then the report. A cancelled run stops after the index file.

use std::time::Instant;

use super::BackupOptions;
use super::pipeline::Ran;
use super::plan::Plan;
use crate::error::{EngineError, Result};
use crate::lock::Lease;
use crate::repo::Repository;
use crate::report::BackupReport;
use crate::snapshot::{self, RecoveryPoint};

impl Repository {
    /// Flushes the index, writes the recovery point started at `time` and fills in the report.
    pub(super) async fn commit_backup(
        &self,
        opts: &BackupOptions,
        lease: &Lease,
        plan: Plan,
        ran: Ran,
        time: jiff::Timestamp,
        started: Instant,
    ) -> Result<BackupReport> {
        let Ran {
            root,
            mut report,
            collector,
            budget,
            files,
        } = ran;
        let mut collector = collector.lock().await;
        collector.flush(self).await?;
        let Some(root) = root else {
            return Err(EngineError::Cancelled {
                packs: collector.packs,
                bytes: collector.pack_bytes,
            });
        };
        let added = collector.bytes + plan.adopted.index_bytes;
        let rp_id = plan.rp_id;
        let rp = RecoveryPoint {
            time: time.to_string(),
            hostname: self.config.hostname.clone(),
            paths: plan.path_strings,
            tree: root,
            parent: plan.parent.as_ref().map(|(id, _)| *id),
            job: opts.job.clone(),
            // Every non-directory entry: a restore bounds its walk of the trees by this.
            files: report.files_new
                + report.files_changed
                + report.files_unchanged
                + report.symlinks
                + report.hard_links,
            dirs: report.dirs,
            bytes: plan.bytes,
            bytes_added: added,
            sequence: plan.sequence,
            predecessors: plan.predecessors,
        };
        let sealed = snapshot::seal(&self.keys, &rp_id, &rp);
        let rp_bytes = sealed.len() as u64;
        lease.ensure_held()?; // B5: a lapsed lease means a prune may have removed what we reused
        self.put_immutable(&format!("{}/{}", snapshot::KIND, rp_id.to_hex()), sealed)
            .await?;
        // Only now: a generation must never name a point that was not written.
        if let (Some(fc), Some(w)) = (&plan.files_cache, files) {
            w.finish();
            let mut keep = plan.keep_generations.clone();
            keep.insert(rp_id);
            let started_at = std::time::SystemTime::now() - started.elapsed();
            fc.retain(&keep, started_at);
        }

        report.recovery_point = Some(rp_id.to_hex());
        report.sequence = rp.sequence;
        report.parent = plan.parent.map(|(id, _)| id.to_hex());
        report.bytes_added = added + rp_bytes;
        report.packs = collector.packs;
        report.packs_adopted = plan.adopted.packs;
        report.packs_missing = plan.adopted.missing;
        report.bytes_adopted = plan.adopted.bytes;
        report.source_files = plan.files;
        report.source_bytes = plan.bytes;
        report.cache_high_water = budget.high_water();
        report.throttle_wait_s = opts
            .throttle
            .as_ref()
            .map_or(0.0, |t| t.total_wait().as_secs_f64());
        report.duration_s = started.elapsed().as_secs_f64();
        Ok(report)
    }
}
