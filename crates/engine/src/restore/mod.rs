//! Restore: select from a recovery point, stage into the recovery folder, verify every blob,
//! then move into the target.
//!
//! Staging follows the MARS recovery folder: nothing appears in the target until its content
//! has been decrypted and checked against its blob ids, and the staging area is removed
//! afterwards whatever happened (a killed restore's leftovers are removed by the next one).
//!
//! Before anything is read, each file is decided against what the target holds
//! ([`Overwrite`]); only the files to write are fetched and counted against free space (the
//! recovery folder's, and the target's when it is on another file system). A full file system
//! or a [`Cancel`] stops the restore (`stop.rs`); `delete` then removes what the recovery
//! point lacks beneath the restored paths; a dry run stops after deciding and counting.

mod apply;
mod decide;
mod delete;
mod fetch;
mod links;
pub(crate) mod plan;
mod stage;
mod stop;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rbackup_beneath::Dir;
use rbackup_crypto::BlobId;
use tokio::runtime::Handle;

pub use decide::Overwrite;

use crate::backup::Cancel;
use crate::error::{EngineError, Result};
use crate::progress::{NoProgress, Progress};
use crate::repo::Repository;
use crate::report::{FailureCause, NotRestored, RestoreReport};
use crate::workdir::WorkDir;
use decide::Decision;
use plan::Plan;
use stop::Stop;

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
    /// Ranged reads of the vault kept in flight (0: what the store asks for,
    /// [`Store::requests_in_flight`](crate::store::Store::requests_in_flight): 2 for a local
    /// vault, 8 for a cloud one). Each read is fetched, opened and written by a thread of its
    /// own, so this many threads fetch when it is more than `threads`.
    pub downloads: usize,
    /// Check the free space of the recovery folder, and of the target when it is on another
    /// file system, first ([`EngineError::NoSpace`](crate::EngineError::NoSpace)).
    pub check_space: bool,
    /// What to do with files already in the target.
    pub overwrite: Overwrite,
    /// Remove what the recovery point does not have from beneath the restored paths in the
    /// target (the selected `paths`, or the recovery point's own when none are selected).
    pub delete: bool,
    /// Decide and count everything, but write, stage and delete nothing.
    pub dry_run: bool,
    /// Stops the restore cleanly: nothing more is fetched or moved, the staging area is
    /// removed, and the report says it stopped ([`crate::StopCause::Cancelled`]).
    pub cancel: Option<Cancel>,
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
            .field("overwrite", &self.overwrite)
            .field("delete", &self.delete)
            .field("dry_run", &self.dry_run)
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
            downloads: 0,
            check_space: true,
            overwrite: Overwrite::default(),
            delete: false,
            dry_run: false,
            cancel: None,
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
        let existing = open_existing(&opts.target)?;
        let mut decisions = decide::decide(&plan, existing.as_ref(), opts.overwrite);
        if let Some(target) = &existing {
            decide::compare_contents(&plan, target, &self.keys, &mut decisions);
        }
        plan.only_files(|f| decisions[f].writes());
        let mut report = tally(&plan, &decisions);
        report.recovery_point = rp_id.to_hex();
        report.soft_deleted = deleted;
        let roots = match opts.paths.is_empty() {
            true => rp.paths.iter().map(PathBuf::from).collect(),
            false => opts.paths.clone(),
        };
        let decided = Decided {
            plan,
            decisions,
            existing,
            roots,
        };
        if opts.dry_run {
            dry_run(&decided, &opts, &mut report);
        } else {
            self.write(index, decided, &opts, &mut report).await?;
        }
        report.failed.sort_by(|a, b| a.path.cmp(&b.path));
        report.duration_s = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Stages, moves into the target and (with `delete`) removes extras; fills `report`.
    async fn write(
        &self,
        index: Arc<crate::index::Index>,
        decided: Decided,
        opts: &RestoreOptions,
        report: &mut RestoreReport,
    ) -> Result<()> {
        let Decided {
            plan,
            decisions,
            existing,
            roots,
        } = decided;
        let started = Instant::now();
        opts.progress.total(report.files_planned, plan.data_bytes);
        let work = WorkDir::create(
            &opts.recovery_dir,
            "rbackup-restore",
            crate::error::ScratchFolder::Recovery,
            plan.data_bytes,
        )?;
        if opts.check_space {
            work.check_space()?;
            let data = decide::data_per_file(&plan).into_iter();
            decide::check_target_space(&opts.target, existing.as_ref(), &opts.recovery_dir, data)?;
        }
        let threads = match opts.threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        // The operator's path is followed and made as given; beneath it nothing is followed.
        std::fs::create_dir_all(&opts.target).map_err(|e| EngineError::io(&opts.target, e))?;
        let target = Dir::open(&opts.target)?;
        if decide::folds_case(Some(&target), true) {
            report.warnings.extend(plan.case_collisions.iter().cloned());
        }
        let plan = Arc::new(plan);
        let stage = Arc::new(stage::Stage::create(
            work.dir().try_clone()?,
            plan.files.len(),
        )?);
        let stop = Arc::new(Stop::new(opts.cancel.clone()));
        let fetch = fetch::Fetch {
            repo: self.clone(),
            handle: Handle::current(),
            index,
            plan: plan.clone(),
            stage: stage.clone(),
            throttle: opts.throttle.clone(),
            progress: opts.progress.clone(),
            stop: stop.clone(),
        };
        // A read waiting on the network holds a thread but no core: cover the round trips.
        let fetchers = threads.max(self.in_flight(opts.downloads));
        let failures = tokio::task::spawn_blocking(move || fetch.run(fetchers))
            .await
            .map_err(|e| EngineError::join("restore fetch", e))?;
        tracing::info!("restore data fetched: {:?}", started.elapsed());
        let (failed, bad) = failed_files(&plan, failures);
        report.failed = failed;
        // A fetch that stopped leaves files half staged: none of them is moved.
        if !stop.is_set() {
            let placing = Placing {
                plan: plan.clone(),
                stage,
                target,
                bad,
                decisions,
                keep_existing: opts.overwrite == Overwrite::Never,
                stop: stop.clone(),
            };
            let (moved, target) = placing.run(threads).await?;
            tracing::info!("restore moved into target: {:?}", started.elapsed());
            report.files = moved.files;
            report.dirs = moved.dirs;
            report.bytes = moved.bytes;
            report.symlinks = moved.symlinks;
            report.hard_links = moved.hard_links;
            report.files_overwritten = moved.overwritten;
            report.failed.extend(moved.failed);
            report.warnings.extend(moved.warnings);
            if opts.delete && !stop.is_set() {
                note_deleted(report, delete::extras(&plan, &target, &roots, false));
            }
        }
        report.stopped = stop.outcome();
        drop(work);
        tracing::info!("restore staging removed: {:?}", started.elapsed());
        Ok(())
    }
}

/// What is decided before anything is written: the plan (holding only the reads of the files
/// to write), the decision per file, the target if it exists, and the restored paths.
struct Decided {
    plan: Plan,
    decisions: Vec<Decision>,
    existing: Option<Dir>,
    roots: Vec<PathBuf>,
}

/// What moving the staged files into the target takes, owned for its blocking task.
struct Placing {
    plan: Arc<Plan>,
    stage: Arc<stage::Stage>,
    target: Dir,
    bad: Vec<bool>,
    decisions: Vec<Decision>,
    keep_existing: bool,
    stop: Arc<Stop>,
}

impl Placing {
    /// Moves the files on `threads` threads; returns what was moved, and the target.
    async fn run(self, threads: usize) -> Result<(apply::Moved, Dir)> {
        tokio::task::spawn_blocking(move || {
            let how = apply::Apply {
                stage: &self.stage,
                target: &self.target,
                bad: &self.bad,
                decisions: &self.decisions,
                keep_existing: self.keep_existing,
                stop: &self.stop,
            };
            let moved = apply::move_into_target(&self.plan, &how, threads);
            (moved, self.target)
        })
        .await
        .map_err(|e| EngineError::join("restore apply", e))
    }
}

/// The target, open, if it exists. Its path is the operator's: followed, like the base of
/// any [`Dir`].
fn open_existing(target: &Path) -> Result<Option<Dir>> {
    match Dir::open(target) {
        Ok(d) => Ok(Some(d)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The report's counts of what the decisions plan to write and keep.
fn tally(plan: &Plan, decisions: &[Decision]) -> RestoreReport {
    let mut r = RestoreReport::default();
    for (f, d) in plan.files.iter().zip(decisions) {
        if d.writes() {
            r.files_planned += 1;
            r.bytes_planned += f.meta.size;
        } else {
            r.files_kept += 1;
            r.bytes_kept += f.meta.size;
        }
    }
    r
}

/// Fills `report` with what a restore would do, touching nothing: the files it would write
/// (and of them, those it would write over), and what `delete` would remove.
fn dry_run(decided: &Decided, opts: &RestoreOptions, report: &mut RestoreReport) {
    let Decided {
        plan,
        decisions,
        existing,
        roots,
    } = decided;
    report.dry_run = true;
    report.files = report.files_planned;
    report.bytes = report.bytes_planned;
    report.dirs = plan.dirs.len() as u64;
    report.failed = failed_files(plan, HashMap::new()).0;
    let Some(target) = existing.as_ref() else {
        report.warnings.extend(plan.case_collisions.iter().cloned());
        return;
    };
    let overwrites = decisions.iter().filter(|d| **d == Decision::Overwrite);
    report.files_overwritten = overwrites.count() as u64;
    if decide::folds_case(Some(target), false) {
        report.warnings.extend(plan.case_collisions.iter().cloned());
    }
    if opts.delete {
        note_deleted(report, delete::extras(plan, target, roots, true));
    }
}

fn note_deleted(report: &mut RestoreReport, deleted: delete::Deleted) {
    report.files_deleted = deleted.count.files;
    report.dirs_deleted = deleted.count.dirs;
    report.bytes_deleted = deleted.count.bytes;
    report.warnings.extend(deleted.warnings);
}

/// The files that will not be restored, by file number: those whose reads failed (with the
/// fetch's reason) and those the plan found broken; with them, the entries the plan refused.
/// Returns them as reported, sorted by path, and as a flag per file of the plan.
fn failed_files(
    plan: &Plan,
    mut failures: HashMap<usize, fetch::Failure>,
) -> (Vec<NotRestored>, Vec<bool>) {
    for (&f, reason) in &plan.broken {
        failures
            .entry(f)
            .or_insert_with(|| (reason.clone(), FailureCause::VaultData));
    }
    let bad = (0..plan.files.len())
        .map(|f| failures.contains_key(&f))
        .collect();
    let mut failed: Vec<NotRestored> = failures
        .into_iter()
        .map(|(f, (reason, cause))| NotRestored {
            path: plan.shown(&plan.files[f]),
            reason,
            cause,
        })
        .collect();
    failed.extend(plan.refused.iter().map(|r| NotRestored {
        path: r.path.clone(),
        reason: r.reason.clone(),
        cause: FailureCause::VaultData,
    }));
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
        let fetch = HashMap::from([
            (0, ("pack unreadable".into(), FailureCause::VaultUnreadable)),
            (3, ("damaged".into(), FailureCause::VaultData)),
        ]);
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
