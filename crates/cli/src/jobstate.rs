//! What the agent keeps per job between runs, under `$XDG_STATE_HOME/rbackup/<machine>/`:
//! - `schedule/<job>.json`, the start time of its last successful run (written only after a
//!   run that ended ok or with warnings). A failed run leaves it alone, so the job stays due
//!   and the next timer tick retries it. A state file rather than the job history: history
//!   records are best effort and listing them all on every tick would grow with time.
//! - `locks/<job>.lock`, an exclusive `flock` held for the whole run, with the holder's pid
//!   inside. The kernel drops it when the process ends, however it ends, so a crash never
//!   leaves a job locked.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::config::{AgentConfig, check_job_name, state_dir, write_atomic};

/// What the agent remembers about a job between runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobState {
    /// Start of the last run that ended ok or with warnings.
    pub last_success: Option<Timestamp>,
}

/// `<state>/<dir>/<job>.<ext>`; an error for a name that could leave that dir (a config edited
/// by hand is not checked by `job add`).
fn job_file(cfg: &AgentConfig, dir: &str, job: &str, ext: &str) -> Result<PathBuf> {
    check_job_name(job)?;
    Ok(state_dir(&cfg.machine_id)?
        .join(dir)
        .join(format!("{job}.{ext}")))
}

fn state_path(cfg: &AgentConfig, job: &str) -> Result<PathBuf> {
    job_file(cfg, "schedule", job, "json")
}

/// The job's state; a missing or unreadable file means it never succeeded.
pub fn load_state(cfg: &AgentConfig, job: &str) -> JobState {
    state_path(cfg, job)
        .ok()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

pub fn save_state(cfg: &AgentConfig, job: &str, state: &JobState) -> Result<()> {
    let path = state_path(cfg, job)?;
    write_atomic(&path, &serde_json::to_vec(state)?, 0o600)
}

/// Drops a removed job's state, so that a new job of the same name starts afresh.
pub fn forget_state(cfg: &AgentConfig, job: &str) {
    if let Ok(p) = state_path(cfg, job) {
        let _ = std::fs::remove_file(p);
    }
}

/// The job's lock, held until dropped.
#[derive(Debug)]
pub struct JobLock {
    _file: File,
}

/// Takes the job's lock without waiting; `Err(pid)` when another process holds it.
pub fn try_lock(cfg: &AgentConfig, job: &str) -> Result<Result<JobLock, Option<u32>>> {
    let path = job_file(cfg, "locks", job, "lock")?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // No truncate on open: the file holds the pid of whoever has the lock.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open the job lock {}", path.display()))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Ok(Err(text.trim().parse().ok()));
        }
        Err(e) => bail!("cannot lock {}: {e}", path.display()),
    }
    file.set_len(0)?;
    file.rewind()?;
    write!(file, "{}", std::process::id())?;
    Ok(Ok(JobLock { _file: file }))
}
