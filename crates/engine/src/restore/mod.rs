//! Restore: select from a recovery point, stage into the recovery folder, verify every blob,
//! then move into the target.
//!
//! Staging follows the MARS recovery folder: nothing appears in the target until its content
//! has been decrypted and checked against its blob ids, and the staging area is removed
//! afterwards whatever happened (a killed restore's leftovers are removed by the next one).

mod apply;
mod fetch;
mod plan;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

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
        let started = Instant::now();
        let (rp_id, rp) = self.find_recovery_point(&opts.recovery_point).await?;
        let index = Arc::new(self.load_index().await?);
        let mut plan = Plan::build(self, &index, &rp.tree, &opts.paths).await?;
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
            work.check_space("the recovery folder", "--recovery-dir")?;
        }
        let threads = match opts.threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let plan = Arc::new(plan);
        let stage = work.path().to_path_buf();
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
        tracing::info!("restore moved into target: {:?}", started.elapsed());
        drop(work);
        tracing::info!("restore staging removed: {:?}", started.elapsed());
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
