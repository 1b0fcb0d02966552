//! Restore: select from a recovery point, stage into the recovery folder, verify every blob,
//! then move into the target.
//!
//! Staging follows the MARS recovery folder: nothing appears in the target until its content
//! has been decrypted and checked against its blob ids, and the staging area is removed
//! afterwards whatever happened (a killed restore's leftovers are removed by the next one).

mod apply;
mod fetch;
mod links;
pub(crate) mod plan;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use rbackup_beneath::Dir;
use rbackup_crypto::BlobId;
use tokio::runtime::Handle;

use crate::error::{EngineError, Result};
use crate::progress::{NoProgress, Progress};
use crate::repo::Repository;
use crate::report::{RestoreReport, Skipped};
use crate::workdir::WorkDir;
use plan::Plan;

/// What to restore and where.
#[non_exhaustive]
#[derive(Clone)]
pub struct RestoreOptions {
    /// `latest` or a recovery point id (a unique prefix is enough).
    pub recovery_point: String,
    /// Absolute paths to restore (empty: everything).
    pub paths: Vec<PathBuf>,
    /// Each path is recreated under this dir at its absolute path.
    pub target: PathBuf,
    /// Staging area (the recovery folder). Refused if another user could change it
    /// ([`EngineError::UnsafeFolder`](crate::EngineError::UnsafeFolder)).
    pub recovery_dir: PathBuf,
    /// Worker threads (0: one per core).
    pub threads: usize,
    /// Check the recovery folder's free space first.
    pub check_space: bool,
    /// Progress receiver.
    pub progress: Arc<dyn Progress>,
    /// Limit on reads from the vault (when configured for restores).
    pub throttle: Option<rbackup_throttle::Throttle>,
}

impl std::fmt::Debug for RestoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoreOptions")
            .field("recovery_point", &self.recovery_point)
            .field("paths", &self.paths)
            .field("target", &self.target)
            .field("recovery_dir", &self.recovery_dir)
            .finish_non_exhaustive()
    }
}

impl RestoreOptions {
    /// Restore everything of `recovery_point` under `target`, staging in `recovery_dir`.
    pub fn new(
        recovery_point: &str,
        target: impl Into<PathBuf>,
        recovery_dir: impl Into<PathBuf>,
    ) -> Self {
        RestoreOptions {
            recovery_point: recovery_point.into(),
            paths: Vec::new(),
            target: target.into(),
            recovery_dir: recovery_dir.into(),
            threads: 0,
            check_space: true,
            progress: Arc::new(NoProgress),
            throttle: None,
        }
    }
}

impl Repository {
    /// Restores a recovery point (or chosen paths of it).
    pub async fn restore(&self, opts: RestoreOptions) -> Result<RestoreReport> {
        // Real elapsed time for the report, whatever the vault's clock says.
        let started = Instant::now();
        // `latest` is never a deleted point; one named by id is restored in its window.
        let (rp_id, rp, deleted) = self
            .find_restorable(&opts.recovery_point, &opts.paths)
            .await?;
        let index = Arc::new(self.load_index().await?);
        let load = async |id: &BlobId| self.load_tree(&index, id).await;
        let max_entries = plan::max_entries(&rp);
        let mut plan = Plan::build(load, &index, &rp.tree, &opts.paths, max_entries).await?;
        tracing::info!(
            "restore plan: {} files, {} packs, {:?}",
            plan.files.len(),
            plan.packs.len(),
            started.elapsed()
        );
        plan.finish();
        opts.progress
            .total(plan.files.len() as u64, plan.data_bytes);
        let work = WorkDir::create(
            &opts.recovery_dir,
            "rbackup-restore",
            crate::error::ScratchFolder::Recovery,
            plan.data_bytes,
        )?;
        if opts.check_space {
            work.check_space()?;
        }
        let threads = match opts.threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        // The operator's path is followed and made as given; beneath it nothing is followed.
        std::fs::create_dir_all(&opts.target).map_err(|e| EngineError::io(&opts.target, e))?;
        let target = Dir::open(&opts.target)?;
        let plan = Arc::new(plan);
        let stage = Arc::new(work.dir().try_clone()?);
        let failures = {
            let fetch = fetch::Fetch {
                repo: self.clone(),
                handle: Handle::current(),
                index: index.clone(),
                plan: plan.clone(),
                stage: stage.clone(),
                throttle: opts.throttle.clone(),
                progress: opts.progress.clone(),
            };
            tokio::task::spawn_blocking(move || {
                let failures = fetch.run(threads);
                tracing::info!("restore data fetched: {:?}", started.elapsed());
                Ok::<_, EngineError>(failures)
            })
            .await
            .map_err(|e| EngineError::join("restore fetch", e))??
        };
        let (mut failed, bad) = failed_files(&plan, failures);
        let moved = {
            let plan = plan.clone();
            tokio::task::spawn_blocking(move || {
                apply::move_into_target(&plan, &stage, &target, &bad, threads)
            })
            .await
            .map_err(|e| EngineError::join("restore apply", e))?
        };
        tracing::info!("restore moved into target: {:?}", started.elapsed());
        drop(work);
        tracing::info!("restore staging removed: {:?}", started.elapsed());
        failed.extend(moved.failed);
        failed.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(RestoreReport {
            recovery_point: rp_id.to_hex(),
            files: moved.files,
            dirs: moved.dirs,
            bytes: moved.bytes,
            symlinks: moved.symlinks,
            hard_links: moved.hard_links,
            failed,
            warnings: [plan.warnings.clone(), moved.warnings].concat(),
            soft_deleted: deleted,
            duration_s: started.elapsed().as_secs_f64(),
        })
    }
}

/// The files that will not be restored, by file number: those whose reads failed (with the
/// fetch's reason) and those the plan found broken; with them, the entries the plan refused. Returns them as reported, sorted by path,
/// and as a flag per file of the plan.
fn failed_files(plan: &Plan, mut failures: HashMap<usize, String>) -> (Vec<Skipped>, Vec<bool>) {
    for (&f, reason) in &plan.broken {
        failures.entry(f).or_insert_with(|| reason.clone());
    }
    let bad = (0..plan.files.len())
        .map(|f| failures.contains_key(&f))
        .collect();
    let mut failed: Vec<Skipped> = failures
        .into_iter()
        .map(|(f, reason)| Skipped::error(plan.shown(&plan.files[f]), reason))
        .collect();
    failed.extend(
        plan.refused
            .iter()
            .map(|r| Skipped::error(r.path.clone(), r.reason.clone())),
    );
    failed.sort_by(|a, b| a.path.cmp(&b.path));
    (failed, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(parent: Option<usize>, name: &str) -> plan::Entry {
        plan::Entry {
            parent,
            name: rbackup_beneath::Name::try_from(name).unwrap(),
            meta: plan::Meta {
                mode: 0o100644,
                uid: 0,
                gid: 0,
                mtime_ns: 0,
                size: 0,
            },
        }
    }

    #[test]
    fn failed_files_are_flagged_by_number_and_a_fetch_reason_wins() {
        let mut plan = Plan {
            dirs: ["z", "a", "m", "b"].map(|d| entry(None, d)).into(),
            files: vec![
                entry(Some(0), "last"),
                entry(Some(1), "ok"),
                entry(Some(2), "broken"),
                entry(Some(3), "both"),
            ],
            ..Plan::default()
        };
        plan.broken.insert(2, "blob missing".into());
        plan.broken.insert(3, "blob missing".into());
        let fetch = HashMap::from([(0, "pack unreadable".into()), (3, "damaged".into())]);
        let (failed, bad) = failed_files(&plan, fetch);
        assert_eq!(bad, [true, false, true, true]);
        let got: Vec<(&str, &str)> = failed
            .iter()
            .map(|s| (s.path.as_str(), s.reason.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("/b/both", "damaged"),
                ("/m/broken", "blob missing"),
                ("/z/last", "pack unreadable"),
            ]
        );
    }
}
