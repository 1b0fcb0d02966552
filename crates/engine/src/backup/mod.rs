//! Backup: walk → read → chunk → id → dedup → compress → seal → pack → stage → upload → index
//! → recovery point.
//!
//! Write order is the crash-safety argument: a pack is in the vault before any index file lists
//! it, and every index file is written before the recovery point that needs it. A run killed at
//! any moment leaves at worst packs no index lists (ignored, removed by prune) and index files
//! no recovery point needs — never a recovery point that points at missing data.
//!
//! A run is three steps: `plan` (sources, limits, parent, staging, and the index to
//! deduplicate against), `pipeline` (the walker, packer and uploader threads), `commit` (the
//! last index file, then the recovery point).

mod adopt;
pub(crate) use adopt::check_tiling;
mod commit;
pub(crate) mod excludes;
mod links;
mod open;
pub(crate) mod packer;
pub(crate) mod pipeline;
mod plan;
pub(crate) mod sent;
mod walk;

pub(crate) use walk::data_segments;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rbackup_throttle::Throttle;

use crate::error::{EngineError, InternalFailure, Result, SpacePlace};
use crate::id::Id;
use crate::lock::{Lease, LeaseKind};
use crate::progress::{NoProgress, Progress};
use crate::repo::Repository;
use crate::report::BackupReport;
use crate::snapshot::RecoveryPoint;
use excludes::Excludes;

/// MARS: a data source may not exceed 54,400 GB.
pub const MAX_SOURCE_BYTES: u64 = 54_400 * 1_000_000_000;
/// MARS: at most 9999 recovery points per protected item.
pub const MAX_RECOVERY_POINTS: usize = 9999;
/// MARS: the cache (scratch) location needs free space of at least 5% of the data.
pub const CACHE_PERCENT: u64 = 5;

/// What to back up and how.
#[non_exhaustive]
#[derive(Clone)]
pub struct BackupOptions {
    /// Files or directories; relative paths are made absolute.
    pub paths: Vec<PathBuf>,
    /// Glob patterns to leave out (see the crate docs).
    pub excludes: Vec<String>,
    /// Name of the job, recorded in the recovery point.
    pub job: Option<String>,
    /// Cache dir for staging packs (default: a private folder in the system temp dir, made
    /// for this run and removed after it). An existing one is refused if another user could
    /// change it ([`EngineError::UnsafeFolder`]).
    pub cache_dir: Option<PathBuf>,
    /// zstd level. The default, 4, was measured with `cargo xtask bench` (850 MB corpus, five
    /// versions of a source tree): against level 3 it made the versions' vault 3% smaller
    /// (59.1 vs 60.8 MB) for a quarter less first-backup throughput (221 vs 295 MB/s, still
    /// 1.7x restic's); level 5 saved nothing more and fell to 187 MB/s.
    pub compression_level: i32,
    /// Worker threads for compression and sealing (0: one per core).
    pub threads: usize,
    /// Target pack size in bytes.
    pub pack_size: u64,
    /// Packs uploaded at once (0: what the store asks for,
    /// [`Store::requests_in_flight`](crate::store::Store::requests_in_flight): 2 for a local
    /// vault, 8 for a cloud one). Each upload in flight holds one staged pack, so the staging
    /// budget is shared out between the workers' open packs and the uploads.
    pub uploads: usize,
    /// Enforce the 5% cache rule (free space check and staging budget).
    pub cache_rule: bool,
    /// Progress receiver.
    pub progress: Arc<dyn Progress>,
    /// Upload bandwidth limit (work hours); `None` uploads at full speed.
    pub throttle: Option<Throttle>,
    /// Asks the run to stop (an embedder's Ctrl-C): see [`Cancel`].
    pub cancel: Cancel,
    /// Symlinks and hard links: skipped by rule (the default) or stored as links.
    pub links: crate::LinkMode,
    /// Test hook: called with each entry's path after the walker classified it and before
    /// it opens it, so the race tests can swap the entry for a symlink, a FIFO or another
    /// file at exactly that moment (see `backup/open.rs`). Not for production use.
    #[doc(hidden)]
    pub before_open: Option<BeforeOpen>,
}

/// A handle that stops a running backup when triggered. The walk stops at the next chunk or
/// file; the packs already being written are finished and uploaded, their index is written,
/// no recovery point is written, and the backup returns [`EngineError::Cancelled`] with what
/// it kept. Clones share one flag, so the embedder keeps a clone to trigger.
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// Asks the backup to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether [`Cancel::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The type of [`BackupOptions::before_open`].
#[doc(hidden)]
pub type BeforeOpen = Arc<dyn Fn(&Path) + Send + Sync>;

impl std::fmt::Debug for BackupOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupOptions")
            .field("paths", &self.paths)
            .field("excludes", &self.excludes)
            .field("job", &self.job)
            .finish_non_exhaustive()
    }
}

/// The zstd level a backup uses unless told otherwise (see [`BackupOptions::compression_level`]);
/// prune's repack compresses new bundles at it too.
pub(crate) const DEFAULT_COMPRESSION_LEVEL: i32 = 4;

impl BackupOptions {
    /// Defaults for backing up `paths`.
    pub fn new(paths: impl IntoIterator<Item = impl Into<PathBuf>>) -> BackupOptions {
        BackupOptions {
            paths: paths.into_iter().map(Into::into).collect(),
            excludes: Vec::new(),
            job: None,
            cache_dir: None,
            compression_level: DEFAULT_COMPRESSION_LEVEL,
            threads: 0,
            pack_size: 32 << 20,
            uploads: 0,
            cache_rule: true,
            progress: Arc::new(NoProgress),
            throttle: None,
            cancel: Cancel::default(),
            links: crate::LinkMode::Skip,
            before_open: None,
        }
    }
}

impl Repository {
    /// Backs up the sources and writes a recovery point, under a shared lease (see `lock.rs`;
    /// the steps keep the order B1–B5 that ARCHITECTURE.md gives for running beside a prune).
    /// A read-only vault refuses it ([`EngineError::VaultReadOnly`]) before anything is read.
    pub async fn backup(&self, opts: BackupOptions) -> Result<BackupReport> {
        self.refuse_if_read_only("take backups into")?;
        // B1: the lease is written first, honouring no prune marker.
        let lease = self.take_lease(LeaseKind::Shared, "backup").await?;
        let result = self.backup_leased(opts, &lease).await;
        lease.release().await;
        result
    }

    /// Plan (B2–B4: the index without doomed packs, the lease rewritten honouring the markers
    /// seen), run the pipeline against that index only, then commit (B5: the lease checked
    /// right before the recovery point is written).
    async fn backup_leased(&self, opts: BackupOptions, lease: &Lease) -> Result<BackupReport> {
        // Real elapsed time for the report; the recovery point's time is the vault's clock's.
        let started = Instant::now();
        let time = self.clock.now();
        let plan = self.plan_backup(&opts, lease).await?;
        let ran = self.run_pipeline(&opts, &plan).await?;
        self.commit_backup(&opts, lease, plan, ran, time, started)
            .await
    }
}

/// MARS allows 9999 recovery points; the run that would make the 10,000th is refused.
fn check_recovery_point_limit(existing: usize) -> Result<()> {
    if existing >= MAX_RECOVERY_POINTS {
        return Err(EngineError::TooManyRecoveryPoints {
            existing,
            max: MAX_RECOVERY_POINTS,
        });
    }
    Ok(())
}

/// Absolute, existing, without sources nested inside other sources.
fn normalize_sources(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    if paths.is_empty() {
        return Err(EngineError::NothingToBackUp);
    }
    let mut out = Vec::new();
    for p in paths {
        let abs = std::path::absolute(p).map_err(|e| EngineError::Source {
            path: p.clone(),
            source: e,
        })?;
        let clean: PathBuf = abs.components().collect();
        std::fs::symlink_metadata(&clean).map_err(|e| EngineError::Source {
            path: p.clone(),
            source: e,
        })?;
        out.push(clean);
    }
    out.sort();
    out.dedup();
    let all = out.clone();
    out.retain(|p| !all.iter().any(|q| q != p && p.starts_with(q)));
    Ok(out)
}

/// Files and bytes under the sources, for progress, the size limit and the cache rule.
fn prescan(paths: &[PathBuf], excludes: &Excludes) -> (u64, u64) {
    let (mut files, mut bytes) = (0, 0);
    for p in paths {
        let walk = walkdir::WalkDir::new(p)
            .same_file_system(true)
            .into_iter()
            .filter_entry(|e| e.depth() == 0 || !excludes.is_excluded(e.path()));
        for e in walk.flatten() {
            if e.file_type().is_file()
                && let Ok(m) = e.metadata()
            {
                files += 1;
                bytes += m.len();
            }
        }
    }
    (files, bytes)
}

/// The newest recovery point of the same job and paths; else of the same paths; else none.
fn choose_parent(
    rps: &[(Id, RecoveryPoint)],
    paths: &[String],
    job: Option<&str>,
) -> Option<(Id, RecoveryPoint)> {
    let same_paths = |rp: &RecoveryPoint| rp.paths == paths;
    rps.iter()
        .rev()
        .find(|(_, rp)| same_paths(rp) && rp.job.as_deref() == job)
        .or_else(|| rps.iter().rev().find(|(_, rp)| same_paths(rp)))
        .cloned()
}

/// Checks the 5% rule and returns the staging budget.
fn check_cache_space(cache_dir: &Path, source_bytes: u64) -> Result<u64> {
    let need = source_bytes * CACHE_PERCENT / 100;
    let available = crate::free_space(cache_dir)?;
    if available < need {
        return Err(EngineError::NoSpace {
            place: SpacePlace::Cache { source_bytes },
            path: cache_dir.to_path_buf(),
            needed: need,
            available,
        });
    }
    Ok(need)
}

pub(crate) async fn join_all(handles: Vec<std::thread::JoinHandle<Result<()>>>) -> Vec<Result<()>> {
    tokio::task::spawn_blocking(move || {
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(EngineError::internal(
                        "backup",
                        InternalFailure::ThreadPanicked,
                    ))
                })
            })
            .collect()
    })
    .await
    .unwrap_or_else(|e| vec![Err(EngineError::join("backup join", e))])
}

/// The walker's and workers' errors are often just "the next stage stopped"; the cause is
/// another thread's error, so prefer any error that is not internal.
pub(crate) fn first_error<T>(
    main: Result<T>,
    others: impl Iterator<Item = Result<()>>,
) -> Result<T> {
    let mut errors: Vec<EngineError> = others.filter_map(|r| r.err()).collect();
    let main = match main {
        Ok(v) if errors.is_empty() => return Ok(v),
        Ok(_) => None,
        Err(e) => Some(e),
    };
    errors.splice(0..0, main);
    let pos = errors
        .iter()
        .position(|e| !matches!(e, EngineError::Internal { .. }))
        .unwrap_or(0);
    Err(errors.swap_remove(pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ten_thousandth_recovery_point_is_refused_with_the_limit() {
        assert!(check_recovery_point_limit(0).is_ok());
        assert!(
            check_recovery_point_limit(9998).is_ok(),
            "the 9999th is allowed"
        );
        let e = check_recovery_point_limit(9999).unwrap_err();
        assert!(
            matches!(
                e,
                EngineError::TooManyRecoveryPoints {
                    existing: 9999,
                    max: 9999
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("9999"), "{e}");
    }

    #[test]
    fn nested_sources_collapse_and_missing_ones_are_named() {
        let d = tempfile::tempdir().unwrap();
        let inner = d.path().join("a/b");
        std::fs::create_dir_all(&inner).unwrap();
        let got =
            normalize_sources(&[inner.clone(), d.path().join("a"), d.path().join("a/")]).unwrap();
        assert_eq!(got, vec![d.path().join("a")]);
        let e = normalize_sources(&[d.path().join("nope")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope") && e.contains("No such file"), "{e}");
        assert!(matches!(
            normalize_sources(&[]),
            Err(EngineError::NothingToBackUp)
        ));
    }
}
