//! The file-system side of a restore: create the staged files, then give files and
//! directories their metadata and move them into the target.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;

use rustix::fs::{AtFlags, CWD, Timestamps};

use super::plan::Plan;
use crate::error::{EngineError, Result};
use crate::report::Skipped;
use crate::tree::Node;

/// What `move_into_target` did.
#[derive(Debug, Default)]
pub(crate) struct Moved {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    pub failed: Vec<Skipped>,
}

/// Where file number `i` of the plan is staged. Files are staged flat, by number, not in a copy
/// of the tree: the tree is created in the target directly, and an emptied staging tree of
/// thousands of directories would cost thousands of removals at the end.
pub(crate) fn staged_path(stage: &Path, i: usize) -> std::path::PathBuf {
    stage.join(i.to_string())
}

/// Opens (creating it at its final size, so holes stay holes) the staged file number `i`.
/// Several fetch threads may do this for the same file: creation without truncation and the
/// same length make that harmless.
pub(crate) fn open_staged(stage: &Path, i: usize, size: u64) -> io::Result<File> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(staged_path(stage, i))?;
    f.set_len(size)?;
    Ok(f)
}

/// Moves verified files into `target` (skipping the `bad` ones), then creates directories and
/// sets their metadata deepest first, so that adding files does not disturb a directory's
/// mtime after it was set.
pub(crate) fn move_into_target(
    plan: &Plan,
    stage: &Path,
    target: &Path,
    bad: &[bool],
) -> Result<Moved> {
    let root = rustix::process::geteuid().is_root();
    let mut moved = Moved::default();
    fs::create_dir_all(target).map_err(|e| EngineError::io(target, e))?;
    for d in &plan.dirs {
        let p = target.join(&d.rel);
        fs::create_dir_all(&p).map_err(|e| EngineError::io(&p, e))?;
    }
    for (i, f) in plan.files.iter().enumerate() {
        if bad[i] {
            continue;
        }
        let (src, dest) = (staged_path(stage, i), target.join(&f.rel));
        match move_file(&src, &dest, &f.node, root) {
            Ok(()) => {
                moved.files += 1;
                moved.bytes += f.node.size;
            }
            Err(e) => moved.failed.push(Skipped {
                path: f.shown(),
                reason: format!("cannot place {}: {e}", dest.display()),
            }),
        }
    }
    let mut dirs: Vec<_> = plan.dirs.iter().collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.rel.components().count()));
    for d in dirs {
        let p = target.join(&d.rel);
        apply_metadata(&p, &d.node, root).map_err(|e| EngineError::io(&p, e))?;
        moved.dirs += 1;
    }
    Ok(moved)
}

fn move_file(src: &Path, dest: &Path, node: &Node, root: bool) -> io::Result<()> {
    // Parents were created with the plan's directories; only a file restored on its own
    // (its directory not selected) may need them.
    if let Some(parent) = dest.parent()
        && !parent.is_dir()
    {
        fs::create_dir_all(parent)?;
    }
    if !src.exists() {
        // Empty files and all-hole sparse files received no data, so nothing created them.
        File::create(src)?.set_len(node.size)?;
    }
    apply_metadata(src, node, root)?;
    match fs::rename(src, dest) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            copy_keeping_holes(src, dest)?;
            apply_metadata(dest, node, root)?;
            fs::remove_file(src)
        }
        Err(e) => Err(e),
    }
}

/// Copies across file systems without filling holes.
fn copy_keeping_holes(src: &Path, dest: &Path) -> io::Result<()> {
    let from = File::open(src)?;
    let size = from.metadata()?.len();
    let tmp = dest.with_file_name(format!(
        ".{}.rbackup-tmp",
        dest.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let to = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    to.set_len(size)?;
    let mut buf = vec![0u8; 1 << 20];
    for (start, len) in crate::backup::data_segments(&from, size)? {
        let mut off = start;
        while off < start + len {
            let n = ((start + len - off) as usize).min(buf.len());
            from.read_exact_at(&mut buf[..n], off)?;
            to.write_all_at(&buf[..n], off)?;
            off += n as u64;
        }
    }
    to.sync_all()?;
    fs::rename(&tmp, dest)
}

/// Owner (as root only), mode, then mtime — in that order, because chown clears set-id bits
/// and any write would move the mtime.
fn apply_metadata(path: &Path, node: &Node, root: bool) -> io::Result<()> {
    if root {
        std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid))?;
    }
    fs::set_permissions(path, Permissions::from_mode(node.mode & 0o7777))?;
    let t = rustix::fs::Timespec {
        tv_sec: node.mtime_ns.div_euclid(1_000_000_000),
        tv_nsec: node.mtime_ns.rem_euclid(1_000_000_000) as _,
    };
    let times = Timestamps {
        last_access: t,
        last_modification: t,
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::empty())?;
    Ok(())
}
