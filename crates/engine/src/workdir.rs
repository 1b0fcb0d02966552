//! Per-run scratch directories (pack staging in the cache dir, restore staging in the recovery
//! folder): `<folder>/<sub>/<pid>-<random>/`, removed when dropped, and removed by the next run
//! when their process died. Each records how many bytes it expects to hold, so concurrent
//! restores can count each other's needs before they start.
//!
//! Scratch space is private. Staged packs and restored files sit here before they move, so
//! another local user who could write here could swap a staged file for a symlink, or read
//! plaintext on its way to a restore target. Before anything is written, the caller's folder
//! and the `<sub>` folder are checked with [`check_folder`]; the per-run folder is created 0700
//! with the mode set on the open folder (no umask in the way). The caller's folder itself is
//! followed if it is a symlink: it is the user's choice, like the base of a `Dir` in
//! `rbackup-beneath`; what lies beneath it must be ours.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rbackup_beneath::Dir;
use rustix::fs::{Mode, OFlags};

use crate::error::{EngineError, FolderRisk, Result, ScratchFolder, SpacePlace};
use crate::id::random_bytes;

const RESERVE_FILE: &str = ".rbackup-reserved";

/// The mode of every folder this module creates.
const PRIVATE_DIR_MODE: u32 = 0o700;

/// A scratch directory owned by this process.
#[derive(Debug)]
pub(crate) struct WorkDir {
    base: PathBuf,
    dir: PathBuf,
    /// `dir`, open: what is staged there is created and moved relative to it.
    handle: Dir,
    reserve: u64,
    /// The private temp folder holding `base`, when the caller named no folder; declared last
    /// so it is removed after the scratch dir.
    _private: Option<tempfile::TempDir>,
}

impl WorkDir {
    /// Creates a fresh scratch dir under `<folder>/<sub>`, after checking that both are
    /// private enough ([`check_folder`]) and removing dead runs' leftovers. Missing folders
    /// are created 0700.
    pub(crate) fn create(
        folder: &Path,
        sub: &str,
        role: ScratchFolder,
        reserve: u64,
    ) -> Result<WorkDir> {
        create_checked(folder, role)?;
        let base = folder.join(sub);
        match fs::DirBuilder::new().mode(PRIVATE_DIR_MODE).create(&base) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(EngineError::io(&base, e));
            }
            _ => {}
        }
        // Ours to the last component: a symlink planted here is refused, not followed.
        let meta = fs::symlink_metadata(&base).map_err(|e| EngineError::io(&base, e))?;
        check_folder(&base, &meta, role)?;
        clean_stale(&base);
        let dir = base.join(format!(
            "{}-{}",
            std::process::id(),
            hex::encode(random_bytes::<4>())
        ));
        create_private_dir(&dir)?;
        let handle = Dir::open(&dir)?;
        let marker = dir.join(RESERVE_FILE);
        fs::write(&marker, reserve.to_string()).map_err(|e| EngineError::io(&marker, e))?;
        Ok(WorkDir {
            base,
            dir,
            handle,
            reserve,
            _private: None,
        })
    }

    /// A scratch dir for a caller that named no folder: inside a fresh private (0700) folder
    /// in the system temp dir, removed with it. Never a fixed name in a shared temp dir,
    /// which any local user could have created first.
    pub(crate) fn private_temp(sub: &str, role: ScratchFolder) -> Result<WorkDir> {
        let temp = tempfile::Builder::new()
            .prefix("rbackup-")
            .permissions(fs::Permissions::from_mode(PRIVATE_DIR_MODE))
            .tempdir()
            .map_err(|e| EngineError::io(std::env::temp_dir(), e))?;
        set_private_mode(temp.path())?;
        let mut work = WorkDir::create(temp.path(), sub, role, 0)?;
        work._private = Some(temp);
        Ok(work)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }

    /// The scratch dir, open.
    pub(crate) fn dir(&self) -> &Dir {
        &self.handle
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

/// Creates `folder` (0700, with its missing parents) unless it exists, then [`check_folder`]s
/// it, following a symlink (the caller's folder is the caller's choice).
pub(crate) fn create_checked(folder: &Path, role: ScratchFolder) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(folder)
        .map_err(|e| EngineError::io(folder, e))?;
    let meta = fs::metadata(folder).map_err(|e| EngineError::io(folder, e))?;
    check_folder(folder, &meta, role)
}

/// Refuses a folder that another local user could change: one owned by a user other than us
/// or root (root owns the system folders everyone relies on, and could change anything
/// anyway), or one that others may write to (group or world write) without the sticky bit.
/// A sticky world-writable folder such as `/tmp` is fine: others cannot rename or remove
/// what we create in it, and what we create is 0700.
pub(crate) fn check_folder(path: &Path, meta: &fs::Metadata, role: ScratchFolder) -> Result<()> {
    let (owner, mode) = (meta.uid(), meta.mode() & 0o7777);
    let me = rustix::process::geteuid().as_raw();
    let risk = if !meta.is_dir() {
        Some(FolderRisk::NotADirectory)
    } else if owner != me && owner != 0 {
        Some(FolderRisk::OwnedByOther { us: me })
    } else if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        Some(FolderRisk::WritableByOthers)
    } else {
        None
    };
    match risk {
        Some(risk) => Err(EngineError::UnsafeFolder {
            path: path.to_path_buf(),
            role,
            owner,
            mode,
            risk,
        }),
        None => Ok(()),
    }
}

/// `mkdir` 0700, then the mode set again on the open folder: the umask can only have taken
/// bits away, but a folder whose mode depends on the caller's umask is not a guarantee.
fn create_private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .mode(PRIVATE_DIR_MODE)
        .create(dir)
        .map_err(|e| EngineError::io(dir, e))?;
    set_private_mode(dir)
}

fn set_private_mode(dir: &Path) -> Result<()> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rustix::fs::open(dir, flags, Mode::empty())
        .and_then(|fd| rustix::fs::fchmod(&fd, Mode::from_raw_mode(PRIVATE_DIR_MODE)))
        .map_err(|e| EngineError::io(dir, e.into()))
}
