//! Restore: select from a recovery point, stage into the recovery folder, verify every blob,
//! then move into the target.
//!
//! Staging follows the MARS recovery folder: nothing appears in the target until its content
//! has been decrypted and checked against its blob ids, and the staging area is removed
//! afterwards whatever happened (a killed restore's leftovers are removed by the next one).

mod apply;
mod plan;

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::runtime::Handle;

use crate::error::{EngineError, Result};
use crate::index::Index;
use crate::pack;
use crate::progress::{NoProgress, Progress};
use crate::repo::{Repository, pack_rel};
use crate::report::{RestoreReport, Skipped};
use crate::workdir::WorkDir;
use plan::{BlobRead, Plan};

/// Reads of neighbouring blobs are merged when the gap is at most this...
const MERGE_GAP: u64 = 256 << 10;
/// ...and the merged read stays under this, which bounds a worker's memory.
const MAX_READ: u64 = 16 << 20;

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
    /// Staging area (the recovery folder).
    pub recovery_dir: PathBuf,
    /// Worker threads (0: one per core).
    pub threads: usize,
    /// Check the recovery folder's free space first.
    pub check_space: bool,
    /// Progress receiver.
    pub progress: Arc<dyn Progress>,
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
        }
    }
}

impl Repository {
    /// Restores a recovery point (or chosen paths of it).
    pub async fn restore(&self, opts: RestoreOptions) -> Result<RestoreReport> {
        let started = Instant::now();
        let (rp_id, rp) = self.find_recovery_point(&opts.recovery_point).await?;
        let index = Arc::new(self.load_index().await?);
        let mut plan = Plan::build(self, &index, &rp.tree, &opts.paths).await?;
        plan.finish();
        opts.progress
            .total(plan.files.len() as u64, plan.data_bytes);
        let work = WorkDir::create(&opts.recovery_dir.join("rbackup-restore"), plan.data_bytes)?;
        if opts.check_space {
            work.check_space("the recovery folder", "--recovery-dir")?;
        }
        let threads = match opts.threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let plan = Arc::new(plan);
        let stage = work.path().to_path_buf();
        let failures = {
            let (repo, plan, index, stage) =
                (self.clone(), plan.clone(), index.clone(), stage.clone());
            let progress = opts.progress.clone();
            let handle = Handle::current();
            tokio::task::spawn_blocking(move || {
                apply::create_staged(&plan, &stage)?;
                let failures =
                    fetch_all(&repo, &handle, &index, &plan, &stage, threads, &*progress);
                Ok::<_, EngineError>(failures)
            })
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))??
        };
        let mut failed: Vec<Skipped> = failures
            .into_iter()
            .chain(plan.broken.iter().map(|(f, r)| (*f, r.clone())))
            .map(|(f, reason)| Skipped {
                path: Path::new("/")
                    .join(&plan.files[f].rel)
                    .display()
                    .to_string(),
                reason,
            })
            .collect();
        failed.sort_by(|a, b| a.path.cmp(&b.path));
        failed.dedup_by(|a, b| a.path == b.path);
        let bad: std::collections::HashSet<&str> = failed.iter().map(|s| s.path.as_str()).collect();
        let target = opts.target.clone();
        let moved = {
            let (plan, bad): (Arc<Plan>, Vec<bool>) = (
                plan.clone(),
                plan.files
                    .iter()
                    .map(|e| {
                        bad.contains(Path::new("/").join(&e.rel).display().to_string().as_str())
                    })
                    .collect(),
            );
            tokio::task::spawn_blocking(move || {
                apply::move_into_target(&plan, &stage, &target, &bad)
            })
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))??
        };
        drop(work);
        failed.extend(moved.failed);
        Ok(RestoreReport {
            recovery_point: rp_id.to_hex(),
            files: moved.files,
            dirs: moved.dirs,
            bytes: moved.bytes,
            failed,
            warnings: plan.warnings.clone(),
            duration_s: started.elapsed().as_secs_f64(),
        })
    }
}

/// Reads every pack's needed blobs on `threads` threads; returns the files that failed.
fn fetch_all(
    repo: &Repository,
    handle: &Handle,
    index: &Index,
    plan: &Plan,
    stage: &Path,
    threads: usize,
    progress: &dyn Progress,
) -> HashMap<usize, String> {
    let failures = Mutex::new(HashMap::new());
    let queue = Mutex::new(plan.packs.iter());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let next = queue.lock().unwrap_or_else(|p| p.into_inner()).next();
                    let Some((&pack, reads)) = next else { break };
                    for (file, reason) in
                        fetch_pack(repo, handle, index, plan, stage, pack, reads, progress)
                    {
                        failures
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .entry(file)
                            .or_insert(reason);
                    }
                }
            });
        }
    });
    failures.into_inner().unwrap_or_else(|p| p.into_inner())
}

/// Reads one pack's blobs in merged ranges and writes them to the staged files.
#[allow(clippy::too_many_arguments)]
fn fetch_pack(
    repo: &Repository,
    handle: &Handle,
    index: &Index,
    plan: &Plan,
    stage: &Path,
    pack: u32,
    reads: &[BlobRead],
    progress: &dyn Progress,
) -> Vec<(usize, String)> {
    let pack_id = index.pack_id(pack);
    let key = repo.keys.pack_key(&pack_id.0);
    let path = repo.path(&pack_rel(&pack_id));
    let mut failed = Vec::new();
    for group in merge_reads(reads) {
        let start = group[0].offset;
        let end = group
            .iter()
            .map(|r| r.offset + u64::from(r.len))
            .max()
            .unwrap_or(start);
        let bytes = match handle.block_on(repo.store.get_range(&path, Some(start..end))) {
            Ok(b) => b,
            Err(e) => {
                let reason = format!("cannot read pack {}: {e}", pack_id.to_hex());
                failed.extend(
                    group
                        .iter()
                        .flat_map(|r| r.targets.iter().map(|t| (t.file, reason.clone()))),
                );
                continue;
            }
        };
        for r in group {
            let lo = (r.offset - start) as usize;
            let sealed = bytes.get(lo..lo + r.len as usize).unwrap_or_default();
            let result = pack::open_blob(
                &repo.keys,
                &key,
                crate::pack::BlobKind::Data,
                &r.id,
                r.raw_len,
                sealed,
            )
            .map_err(|e| format!("blob {} in pack {} is damaged: {e}", r.id, pack_id.to_hex()))
            .and_then(|content| {
                for t in &r.targets {
                    write_at(&stage.join(&plan.files[t.file].rel), t.offset, &content)?;
                }
                Ok(content.len() as u64 * r.targets.len() as u64)
            });
            match result {
                Ok(n) => progress.bytes(n),
                Err(reason) => failed.extend(r.targets.iter().map(|t| (t.file, reason.clone()))),
            }
        }
    }
    failed
}

fn write_at(path: &Path, offset: u64, data: &[u8]) -> std::result::Result<(), String> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    f.write_all_at(data, offset)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Groups reads (sorted by offset) into ranges worth one request each.
fn merge_reads(reads: &[BlobRead]) -> Vec<&[BlobRead]> {
    let mut groups = Vec::new();
    let mut begin = 0;
    for i in 1..=reads.len() {
        let split = i == reads.len() || {
            let prev_end = reads[i - 1].offset + u64::from(reads[i - 1].len);
            let gap = reads[i].offset.saturating_sub(prev_end);
            let span = reads[i].offset + u64::from(reads[i].len) - reads[begin].offset;
            gap > MERGE_GAP || span > MAX_READ
        };
        if split {
            groups.push(&reads[begin..i]);
            begin = i;
        }
    }
    groups
}
