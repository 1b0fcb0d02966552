//! Backup: walk → read → chunk → id → dedup → compress → seal → pack → stage → upload → index
//! → recovery point.
//!
//! Write order is the crash-safety argument: a pack is in the vault before any index file lists
//! it, and every index file is written before the recovery point that needs it. A run killed at
//! any moment leaves at worst packs no index lists (ignored, removed by prune) and index files
//! no recovery point needs — never a recovery point that points at missing data.

mod excludes;
mod open;
mod packer;
mod walk;

pub(crate) use walk::data_segments;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rbackup_chunker::Chunker;
use rbackup_throttle::Throttle;
use tokio::runtime::Handle;

use crate::error::{EngineError, Result};
use crate::id::Id;
use crate::lock::{Lease, LeaseKind};
use crate::progress::{NoProgress, Progress};
use crate::repo::Repository;
use crate::report::BackupReport;
use crate::snapshot::{self, RecoveryPoint};
use crate::workdir::WorkDir;
use excludes::Excludes;
use packer::{Budget, IndexCollector, PackerConfig};
use walk::{SourceTrie, Walker};

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
    /// Enforce the 5% cache rule (free space check and staging budget).
    pub cache_rule: bool,
    /// Progress receiver.
    pub progress: Arc<dyn Progress>,
    /// Upload bandwidth limit (work hours); `None` uploads at full speed.
    pub throttle: Option<Throttle>,
    /// Test hook: called with each entry's path after the walker classified it and before
    /// it opens it, so the race tests can swap the entry for a symlink, a FIFO or another
    /// file at exactly that moment (see `backup/open.rs`). Not for production use.
    #[doc(hidden)]
    pub before_open: Option<BeforeOpen>,
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

impl BackupOptions {
    /// Defaults for backing up `paths`.
    pub fn new(paths: impl IntoIterator<Item = impl Into<PathBuf>>) -> BackupOptions {
        BackupOptions {
            paths: paths.into_iter().map(Into::into).collect(),
            excludes: Vec::new(),
            job: None,
            cache_dir: None,
            compression_level: 4,
            threads: 0,
            pack_size: 32 << 20,
            cache_rule: true,
            progress: Arc::new(NoProgress),
            throttle: None,
            before_open: None,
        }
    }
}

impl Repository {
    /// Backs up the sources and writes a recovery point, under a shared lease (see `lock.rs`).
    pub async fn backup(&self, opts: BackupOptions) -> Result<BackupReport> {
        let lease = self.take_lease(LeaseKind::Shared, "backup").await?;
        let result = self.backup_leased(opts, &lease).await;
        lease.release().await;
        result
    }

    async fn backup_leased(&self, opts: BackupOptions, lease: &Lease) -> Result<BackupReport> {
        let started = Instant::now();
        let time = jiff::Timestamp::now();
        let paths = normalize_sources(&opts.paths)?;
        let excludes = Excludes::new(&opts.excludes)?;
        let (files, bytes) = {
            let (p, e) = (paths.clone(), excludes.clone());
            tokio::task::spawn_blocking(move || prescan(&p, &e))
                .await
                .map_err(|e| EngineError::Internal(e.to_string()))?
        };
        if bytes > MAX_SOURCE_BYTES {
            return Err(EngineError::Limit(format!(
                "the sources hold {} GB, over the limit of 54,400 GB per data source: split them into several jobs",
                bytes / 1_000_000_000
            )));
        }
        opts.progress.total(files, bytes);
        let rps = self.recovery_points().await?;
        check_recovery_point_limit(rps.len())?;
        let path_strings: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        let parent = choose_parent(&rps, &path_strings, opts.job.as_deref());
        let role = crate::error::ScratchFolder::Cache;
        let staging = match &opts.cache_dir {
            Some(dir) => WorkDir::create(dir, "staging", role, 0)?,
            None => WorkDir::private_temp("staging", role)?,
        };
        let budget_bytes = if opts.cache_rule {
            let cache_dir = opts.cache_dir.clone().unwrap_or_else(std::env::temp_dir);
            check_cache_space(&cache_dir, bytes)?
        } else {
            u64::MAX
        };
        // Without the packs a pending prune will delete (see prune.rs).
        let index = Arc::new(self.load_index_for_backup(lease).await?);
        let parent_root = match &parent {
            Some((_, rp)) if index.contains(&rp.tree) => {
                Some(self.load_tree(&index, &rp.tree).await?)
            }
            _ => None,
        };

        let threads = match opts.threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let budget = Arc::new(Budget::new(budget_bytes));
        let pack_target = opts
            .pack_size
            .min((budget_bytes / (threads as u64 + 2)).max(1 << 20));
        let cfg = PackerConfig {
            keys: self.keys.clone(),
            staging: staging.path().to_path_buf(),
            pack_target,
            level: opts.compression_level,
            budget: budget.clone(),
        };
        let chunker = Chunker::new(self.keys.chunker_key(), self.config.chunker)
            .map_err(|e| EngineError::corrupt("machine config", e))?;
        let (blob_tx, blob_rx) = crossbeam_channel::bounded(threads * 2);
        let (pack_tx, pack_rx) = crossbeam_channel::bounded(2);
        let collector = Arc::new(tokio::sync::Mutex::new(IndexCollector::default()));
        let handle = Handle::current();

        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (cfg, rx, tx) = (cfg.clone(), blob_rx.clone(), pack_tx.clone());
                std::thread::spawn(move || packer::worker(cfg, rx, tx))
            })
            .collect();
        drop((blob_rx, pack_tx));
        let uploaders: Vec<_> = (0..2)
            .map(|_| {
                let (repo, h, rx) = (self.clone(), handle.clone(), pack_rx.clone());
                let (b, c, t) = (budget.clone(), collector.clone(), opts.throttle.clone());
                std::thread::spawn(move || packer::uploader(repo, h, rx, b, c, t))
            })
            .collect();
        drop(pack_rx);

        let walked = {
            let (repo, idx, progress) = (self.clone(), index.clone(), opts.progress.clone());
            let before_open = opts.before_open.clone();
            let trie = SourceTrie::new(&paths);
            tokio::task::spawn_blocking(move || {
                let mut w = Walker {
                    repo: &repo,
                    handle,
                    index: &idx,
                    chunker,
                    tx: blob_tx,
                    excludes,
                    progress,
                    report: BackupReport::default(),
                    sent: HashSet::new(),
                    root_dev: None,
                    before_open,
                };
                let root = w.run(&trie, parent_root.as_ref());
                (root, w.report)
            })
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))?
        };
        // The walker dropped its sender: workers drain, flush their packs and stop; then the
        // uploaders stop. Join everything before looking at any result.
        let worker_results = join_all(workers).await;
        let uploader_results = join_all(uploaders).await;
        let (root, mut report) = walked;
        let root = first_error(root, worker_results.into_iter().chain(uploader_results))?;

        let mut collector = collector.lock().await;
        collector.flush(self).await?;
        let rp_id = Id::random();
        let rp = RecoveryPoint {
            time: time.to_string(),
            hostname: self.config.hostname.clone(),
            paths: path_strings,
            tree: root,
            parent: parent.as_ref().map(|(id, _)| *id),
            job: opts.job.clone(),
            files: report.files_new + report.files_changed + report.files_unchanged,
            dirs: report.dirs,
            bytes,
            bytes_added: collector.bytes,
        };
        let sealed = snapshot::seal(&self.keys, &rp_id, &rp);
        let rp_bytes = sealed.len() as u64;
        lease.ensure_held()?; // a lapsed lease means a prune may have removed what we reused
        self.put_immutable(&format!("{}/{}", snapshot::KIND, rp_id.to_hex()), sealed)
            .await?;

        report.recovery_point = Some(rp_id.to_hex());
        report.parent = parent.map(|(id, _)| id.to_hex());
        report.bytes_added = collector.bytes + rp_bytes;
        report.packs = collector.packs;
        report.source_files = files;
        report.source_bytes = bytes;
        report.cache_high_water = budget.high_water();
        report.throttle_wait_s = opts
            .throttle
            .as_ref()
            .map_or(0.0, |t| t.total_wait().as_secs_f64());
        report.duration_s = started.elapsed().as_secs_f64();
        Ok(report)
    }
}

/// MARS allows 9999 recovery points; the run that would make the 10,000th is refused.
fn check_recovery_point_limit(existing: usize) -> Result<()> {
    if existing >= MAX_RECOVERY_POINTS {
        return Err(EngineError::Limit(format!(
            "this machine already has {existing} recovery points, the most it may hold: remove old ones with `rbackup forget --keep-last N --prune`"
        )));
    }
    Ok(())
}

/// Absolute, existing, without sources nested inside other sources.
fn normalize_sources(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    if paths.is_empty() {
        return Err(EngineError::Invalid(
            "nothing to back up: name at least one path".into(),
        ));
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
        return Err(EngineError::NoSpace(format!(
            "the cache dir {} has {} free but needs {}: the cache must have free space of at least {CACHE_PERCENT}% of the data backed up ({} here). Free space there or choose another cache dir (`--cache-dir`)",
            cache_dir.display(),
            crate::human_bytes(available),
            crate::human_bytes(need),
            crate::human_bytes(source_bytes),
        )));
    }
    Ok(need)
}

async fn join_all(handles: Vec<std::thread::JoinHandle<Result<()>>>) -> Vec<Result<()>> {
    tokio::task::spawn_blocking(move || {
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(EngineError::Internal("a backup thread panicked".into()))
                })
            })
            .collect()
    })
    .await
    .unwrap_or_else(|e| vec![Err(EngineError::Internal(e.to_string()))])
}

/// The walker's and workers' errors are often just "the next stage stopped"; the cause is
/// another thread's error, so prefer any error that is not internal.
fn first_error<T>(main: Result<T>, others: impl Iterator<Item = Result<()>>) -> Result<T> {
    let mut errors: Vec<EngineError> = others.filter_map(|r| r.err()).collect();
    let main = match main {
        Ok(v) if errors.is_empty() => return Ok(v),
        Ok(_) => None,
        Err(e) => Some(e),
    };
    errors.splice(0..0, main);
    let pos = errors
        .iter()
        .position(|e| !matches!(e, EngineError::Internal(_)))
        .unwrap_or(0);
    Err(errors.swap_remove(pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ten_thousandth_recovery_point_is_refused_naming_forget() {
        assert!(check_recovery_point_limit(0).is_ok());
        assert!(
            check_recovery_point_limit(9998).is_ok(),
            "the 9999th is allowed"
        );
        let e = check_recovery_point_limit(9999).unwrap_err().to_string();
        assert!(e.contains("9999") && e.contains("rbackup forget"), "{e}");
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
        assert!(normalize_sources(&[]).is_err());
    }
}
