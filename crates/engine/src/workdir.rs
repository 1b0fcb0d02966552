//! Per-run scratch directories (pack staging in the cache dir, restore staging in the recovery
//! folder): `<base>/<pid>-<random>/`, removed when dropped, and removed by the next run when
//! their process died. Each records how many bytes it expects to hold, so concurrent restores
//! can count each other's needs before they start.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{EngineError, Result, SpacePlace};
use crate::id::random_bytes;

const RESERVE_FILE: &str = ".rbackup-reserved";

/// A scratch directory owned by this process.
#[derive(Debug)]
pub(crate) struct WorkDir {
    base: PathBuf,
    dir: PathBuf,
    reserve: u64,
}

impl WorkDir {
    /// Creates a fresh scratch dir under `base`, after removing dead runs' leftovers.
    pub(crate) fn create(base: &Path, reserve: u64) -> Result<WorkDir> {
        fs::create_dir_all(base).map_err(|e| EngineError::io(base, e))?;
        clean_stale(base);
        let dir = base.join(format!(
            "{}-{}",
            std::process::id(),
            hex::encode(random_bytes::<4>())
        ));
        fs::create_dir(&dir).map_err(|e| EngineError::io(&dir, e))?;
        let marker = dir.join(RESERVE_FILE);
        fs::write(&marker, reserve.to_string()).map_err(|e| EngineError::io(&marker, e))?;
        Ok(WorkDir {
            base: base.to_path_buf(),
            dir,
            reserve,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }

    /// Refuses to start when the free space, less what other live runs reserved, is smaller
    /// than this run's reservation.
    pub(crate) fn check_space(&self) -> Result<()> {
        let free = crate::free_space(&self.base)?;
        let others: u64 = live_siblings(&self.base)
            .filter(|p| *p != self.dir)
            .filter_map(|p| fs::read_to_string(p.join(RESERVE_FILE)).ok())
            .filter_map(|s| s.trim().parse::<u64>().ok())
            .sum();
        let available = free.saturating_sub(others);
        if available < self.reserve {
            return Err(EngineError::NoSpace {
                place: SpacePlace::RecoveryFolder {
                    free,
                    reserved_by_others: others,
                },
                path: self.base.clone(),
                needed: self.reserve,
                available,
            });
        }
        Ok(())
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
        // Leave no empty shell behind either (fails harmlessly while others are running).
        let _ = fs::remove_dir(&self.base);
    }
}

fn live_siblings(base: &Path) -> impl Iterator<Item = PathBuf> {
    fs::read_dir(base)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| owner_pid(&e.file_name().to_string_lossy()).is_some_and(process_alive))
        .map(|e| e.path())
}

fn owner_pid(name: &str) -> Option<u32> {
    name.split('-').next()?.parse().ok()
}

/// Removes scratch dirs whose process is gone (a run killed with -9).
pub(crate) fn clean_stale(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        if let Some(pid) = owner_pid(&e.file_name().to_string_lossy())
            && !process_alive(pid)
        {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

fn process_alive(pid: u32) -> bool {
    pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists()
}
