//! Copying recovery points from one repository of a machine to another: a local tier to the
//! cloud vault, one vault to a second one, a folder to S3.
//!
//! # The one design choice: both ends hold the same keys
//!
//! Blob ids are keyed hashes and every object is sealed under the machine's master keys, so a
//! copy between repositories with different keys would have to give every blob a new id and
//! rewrite every tree. Instead the destination is the *same machine* in another vault — same
//! machine id, same master keys under a key file bound to that vault
//! ([`Vault::register_copy`](crate::Vault::register_copy)). Then a blob is the same blob on
//! both sides: deduplication against what the destination holds is a lookup in its index,
//! trees are copied as they are, and a recovery point's sealed bytes are valid in both.
//!
//! # Order and resumption
//!
//! Recovery points are copied oldest first, each one as a backup would write it: its missing
//! blobs (read from the source and verified, packed and sealed again by the backup's own
//! workers and uploaders, so the destination's padding and bundles are its own), the index
//! files for them, and only then the recovery point. A copy that is killed leaves packs that
//! the next copy (or backup) adopts and index files written at most a minute apart; recovery
//! points already in the destination are not copied again.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use rbackup_crypto::BlobId;
use rbackup_throttle::Throttle;

use crate::backup::packer::BlobJob;
use crate::backup::pipeline::StageSettings;
use crate::backup::sent::Sent;
use crate::backup::{Cancel, first_error};
use crate::error::{EngineError, Result, ScratchFolder};
use crate::id::Id;
use crate::index::Index;
use crate::lock::LeaseKind;
use crate::pack::BlobKind;
use crate::progress::{NoProgress, Progress};
use crate::repo::Repository;
use crate::snapshot::{self, RecoveryPoint};
use crate::tree::NodeKind;
use crate::workdir::WorkDir;

/// Staging space a copy uses at most: packs wait here for their upload.
const COPY_STAGING: u64 = 256 << 20;

/// What to copy and how.
#[non_exhaustive]
#[derive(Clone)]
pub struct CopyOptions {
    /// Recovery points to copy (ids, unique prefixes, or `latest`); empty: every recovery
    /// point of the source that is not soft-deleted and that the destination lacks.
    pub recovery_points: Vec<String>,
    /// Where packs are staged (default: a private folder in the system temp dir).
    pub cache_dir: Option<PathBuf>,
    /// Packer threads (0: one per core).
    pub threads: usize,
    /// Uploads in flight (0: the destination store's hint).
    pub uploads: usize,
    /// Reads from the source in flight (0: the source store's hint).
    pub downloads: usize,
    /// Upload bandwidth limit, as for a backup.
    pub throttle: Option<Throttle>,
    /// Stops the copy after the blobs being written: what was uploaded is indexed, the
    /// recovery point being copied is not written ([`EngineError::CopyStopped`]).
    pub cancel: Cancel,
    /// Progress: `total` once per recovery point with its blobs to copy and their bytes,
    /// `bytes` as blobs are read.
    pub progress: Arc<dyn Progress>,
}

impl Default for CopyOptions {
    fn default() -> CopyOptions {
        CopyOptions {
            recovery_points: Vec::new(),
            cache_dir: None,
            threads: 0,
            uploads: 0,
            downloads: 0,
            throttle: None,
            cancel: Cancel::default(),
            progress: Arc::new(NoProgress),
        }
    }
}

impl std::fmt::Debug for CopyOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyOptions")
            .field("recovery_points", &self.recovery_points)
            .finish_non_exhaustive()
    }
}

/// What a copy did.
#[non_exhaustive]
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CopyReport {
    /// The source vault's URL.
    pub from: String,
    /// The destination vault's URL.
    pub to: String,
    /// Recovery points copied by this run (hex ids), oldest first.
    pub copied: Vec<String>,
    /// Recovery points asked for (or, by default, the source's) that the destination had.
    pub already_there: Vec<String>,
    /// Blobs read from the source and written to the destination.
    pub blobs_copied: u64,
    /// Their plaintext bytes.
    pub bytes_read: u64,
    /// Bytes written into the destination: packs, index files and recovery points.
    pub bytes_added: u64,
    /// Packs written.
    pub packs: u64,
    /// Packs an interrupted copy or backup had left unindexed, taken into the index.
    pub packs_adopted: u64,
    /// Seconds spent waiting for the throttle.
    pub throttle_wait_s: f64,
    /// Wall time.
    pub duration_s: f64,
}

impl Repository {
    /// Copies recovery points from this repository to `dest`, the same machine in another
    /// vault (see the module docs). Refused when `dest` holds other keys
    /// ([`EngineError::CopyKeysDiffer`]) or its vault is read-only
    /// ([`EngineError::VaultReadOnly`]).
    pub async fn copy_to(&self, dest: &Repository, opts: CopyOptions) -> Result<CopyReport> {
        let started = Instant::now();
        dest.refuse_if_read_only("take copies into")?;
        if self.keys.to_secret_bytes() != dest.keys.to_secret_bytes() {
            return Err(EngineError::CopyKeysDiffer {
                machine: dest.machine.clone(),
                to: dest.vault_url().into(),
            });
        }
        let mut report = CopyReport {
            from: self.vault_url().into(),
            to: dest.vault_url().into(),
            ..CopyReport::default()
        };
        let wanted = self.points_to_copy(&opts.recovery_points).await?;
        let present: HashSet<Id> = dest
            .stored_recovery_points()
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let (todo, there): (Vec<_>, Vec<_>) = wanted
            .into_iter()
            .partition(|(id, _)| !present.contains(id));
        report.already_there = there.iter().map(|(id, _)| id.to_hex()).collect();
        if !todo.is_empty() {
            let lease = dest.take_lease(LeaseKind::Shared, "copy").await?;
            let result = self
                .copy_leased(dest, &opts, &todo, &lease, &mut report)
                .await;
            lease.release().await;
            result?;
        }
        report.throttle_wait_s = opts
            .throttle
            .as_ref()
            .map_or(0.0, |t| t.total_wait().as_secs_f64());
        report.duration_s = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Whether recovery point `spec` (an id, a unique prefix or `latest`) can be restored from
    /// here without a read failing for want of data: every tree opens (decrypted and checked),
    /// every content blob is in the index, and every pack they are in is in the store with its
    /// indexed size. Returns its id. Content bytes are not read: a pack damaged since it was
    /// written is found by the restore itself, which verifies every blob it reads.
    pub async fn verify_recovery_point(&self, spec: &str) -> Result<Id> {
        let (id, rp) = self.find_recovery_point(spec).await?;
        let index = self.load_index().await?;
        let blobs = self
            .missing_blobs(&index, &Index::default(), &rp, &mut Sent::default())
            .await?;
        let stored = self.stored_packs().await?;
        let sizes: std::collections::HashMap<Id, u64> =
            index.packs().map(|(_, pack, size)| (pack, size)).collect();
        for (_, blob) in &blobs {
            let loc = index.get(blob).ok_or_else(|| {
                EngineError::corrupt(
                    format!("blob {blob}"),
                    crate::error::CorruptReason::NotIndexed,
                )
            })?;
            let pack = index.pack_id(loc.pack);
            let name = pack.to_hex();
            if stored.get(&name) != sizes.get(&pack) {
                return Err(EngineError::corrupt(
                    format!("pack {name}"),
                    crate::error::CorruptReason::PackMissing,
                ));
            }
        }
        Ok(id)
    }

    /// The live recovery points `specs` names (all of them when empty), oldest first.
    async fn points_to_copy(&self, specs: &[String]) -> Result<Vec<(Id, RecoveryPoint)>> {
        if specs.is_empty() {
            return Ok(self.recovery_point_listing().await?.live);
        }
        let mut out = Vec::new();
        for spec in specs {
            let found = self.find_recovery_point(spec).await?;
            if !out
                .iter()
                .any(|(id, _): &(Id, RecoveryPoint)| *id == found.0)
            {
                out.push(found);
            }
        }
        out.sort_by(|a, b| a.1.time.cmp(&b.1.time));
        Ok(out)
    }

    async fn copy_leased(
        &self,
        dest: &Repository,
        opts: &CopyOptions,
        todo: &[(Id, RecoveryPoint)],
        lease: &crate::lock::Lease,
        report: &mut CopyReport,
    ) -> Result<()> {
        // As a backup plans: the destination's index without doomed packs, plus the packs an
        // interrupted copy left behind.
        let (mut index, named) = dest.load_index_for_backup(lease).await?;
        let adopted = dest.adopt_unindexed(&mut index, &named, lease).await?;
        report.packs_adopted = adopted.packs;
        report.bytes_added += adopted.index_bytes;
        let source_index = Arc::new(self.load_index().await?);
        let staging = match &opts.cache_dir {
            Some(dir) => WorkDir::create(dir, "staging", ScratchFolder::Cache, 0)?,
            None => WorkDir::private_temp("staging", ScratchFolder::Cache)?,
        };
        let free = crate::free_space(staging.path())?;
        let budget_bytes = COPY_STAGING.min(free / 2).max(1 << 20);
        let mut sent = Sent::default();
        for (id, rp) in todo {
            let needed = self
                .missing_blobs(&source_index, &index, rp, &mut sent)
                .await?;
            let settings = StageSettings {
                threads: match opts.threads {
                    0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
                    n => n,
                },
                uploads: opts.uploads,
                budget_bytes,
                staging: staging.path().to_path_buf(),
                pack_size: 32 << 20,
                level: crate::backup::DEFAULT_COMPRESSION_LEVEL,
                throttle: opts.throttle.clone(),
            };
            let fed = self
                .feed(dest, settings, &source_index, &needed, opts, report)
                .await;
            let stopped = opts.cancel.is_cancelled();
            if stopped || fed.is_err() {
                fed?;
                return Err(EngineError::CopyStopped {
                    copied: report.copied.len(),
                    packs: report.packs,
                });
            }
            lease.ensure_held()?;
            report.bytes_added += self.copy_point(dest, id).await?;
            report.copied.push(id.to_hex());
        }
        Ok(())
    }

    /// Every blob of `rp` — its trees and its files' content — that `dest_index` lacks and
    /// this run has not sent yet, trees included in the walk whether or not they are missing
    /// (a tree in the destination does not prove that all beneath it is).
    async fn missing_blobs(
        &self,
        source: &Index,
        dest_index: &Index,
        rp: &RecoveryPoint,
        sent: &mut Sent,
    ) -> Result<Vec<(BlobKind, BlobId)>> {
        let mut out = Vec::new();
        let mut seen: HashSet<BlobId> = HashSet::new();
        let mut queue = vec![rp.tree];
        let mut want = |kind, id: BlobId, out: &mut Vec<_>| {
            if !dest_index.contains(&id) && sent.insert(id) {
                out.push((kind, id));
            }
        };
        while let Some(tree_id) = queue.pop() {
            if !seen.insert(tree_id) {
                continue;
            }
            want(BlobKind::Tree, tree_id, &mut out);
            let tree = self.load_tree(source, &tree_id).await?;
            for node in &tree.nodes {
                match (node.kind, node.subtree) {
                    (NodeKind::Dir, Some(sub)) => queue.push(sub),
                    (NodeKind::File, _) => {
                        for c in &node.content {
                            want(BlobKind::Data, *c, &mut out);
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    /// Reads `needed` from this repository (verified, several reads in flight) into `dest`'s
    /// packer workers, then finishes the stages and writes the index files for what they
    /// uploaded.
    async fn feed(
        &self,
        dest: &Repository,
        settings: StageSettings,
        source_index: &Arc<Index>,
        needed: &[(BlobKind, BlobId)],
        opts: &CopyOptions,
        report: &mut CopyReport,
    ) -> Result<()> {
        let stages = dest.start_stages(settings);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<BlobJob>(16);
        let blobs = stages.blobs.clone();
        // The packer channel blocks; a thread of its own moves jobs across.
        let forward = tokio::task::spawn_blocking(move || {
            while let Some(job) = rx.blocking_recv() {
                if blobs.send(job).is_err() {
                    return;
                }
            }
        });
        let total: u64 = needed
            .iter()
            .filter_map(|(_, id)| source_index.get(id).map(|l| u64::from(l.raw_len)))
            .sum();
        opts.progress.total(needed.len() as u64, total);
        let reads = futures::stream::iter(needed.iter().copied())
            .map(|(kind, id)| async move {
                let data = self.read_blob(source_index, &id).await?;
                Ok::<_, EngineError>(BlobJob { kind, id, data })
            })
            .buffered(self.in_flight(opts.downloads));
        let sent = reads
            .try_for_each(|job| {
                let tx = tx.clone();
                let progress = opts.progress.clone();
                let cancel = opts.cancel.clone();
                let n = job.data.len() as u64;
                async move {
                    if cancel.is_cancelled() {
                        return Err(EngineError::internal(
                            "copy",
                            crate::error::InternalFailure::StageStopped,
                        ));
                    }
                    tx.send(job).await.map_err(|_| {
                        EngineError::internal("copy", crate::error::InternalFailure::StageStopped)
                    })?;
                    progress.bytes(n);
                    Ok(())
                }
            })
            .await;
        drop(tx);
        let _ = forward.await;
        let (results, _budget, collector) = stages.finish().await;
        let mut collector = collector.lock().await;
        // What was uploaded is indexed even when the copy stops, so the next one reuses it.
        let flushed = collector.flush(dest).await;
        report.packs += collector.packs;
        report.bytes_added += collector.bytes;
        let sent = match sent {
            Err(_) if opts.cancel.is_cancelled() => Ok(()),
            other => other,
        };
        first_error(sent, results.into_iter())?;
        flushed?;
        report.blobs_copied += needed.len() as u64;
        report.bytes_read += total;
        Ok(())
    }

    /// Puts recovery point `id`'s sealed bytes into `dest` as they are (the same keys open
    /// them there), once they open here. Returns the bytes written.
    async fn copy_point(&self, dest: &Repository, id: &Id) -> Result<u64> {
        let rel = format!("{}/{}", snapshot::KIND, id.to_hex());
        let max = crate::layout::limits(snapshot::KIND).stored;
        let bytes = crate::layout::get_bounded(&*self.store, &self.path(&rel), max).await?;
        snapshot::open(&self.keys, id, &bytes)?;
        let n = bytes.len() as u64;
        dest.put_immutable(&rel, bytes.to_vec()).await?;
        Ok(n)
    }
}
