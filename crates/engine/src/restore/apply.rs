//! The file-system side of a restore: create the staged files, then give files and
//! directories their metadata and move them into the target.
//!
//! Every operation goes through `rbackup-beneath`: relative to an open directory (the staging
//! folder or the target), along validated names, never following a symlink. Metadata is set
//! on the open file or directory, never by path. What stands in the way in the target (a
//! symlink, a non-directory where a directory must be, a directory where a file must be) is
//! reported for that entry and left alone; the rest of the restore goes on.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use rbackup_beneath::{Access, Dir, Error as FsError, Name, RelPath, Replace};
use rustix::fd::AsFd;

use super::decide::Decision;
use super::plan::{Meta, Plan};
use super::stage::Stage;
use super::stop::{Stop, fs_cause};
use crate::report::NotRestored;

/// The mode of directories a restore creates before their metadata is applied (and of the
/// parents of a file restored without its directory, which get no other).
const NEW_DIR_MODE: u32 = 0o700;

/// What `move_into_target` did.
#[derive(Debug, Default)]
pub(crate) struct Moved {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    pub symlinks: u64,
    pub hard_links: u64,
    /// Of `files`, those written over something.
    pub overwritten: u64,
    pub failed: Vec<NotRestored>,
    pub warnings: Vec<String>,
}

/// What [`move_into_target`] works from besides the plan.
pub(crate) struct Apply<'a> {
    pub stage: &'a Stage,
    pub target: &'a Dir,
    /// Files whose data could not be staged.
    pub bad: &'a [bool],
    /// Files to write (the others stay as the target has them).
    pub decisions: &'a [Decision],
    /// `Overwrite::Never`: a symlink is not made where the target has something already.
    pub keep_existing: bool,
    pub stop: &'a Stop,
}

/// Creates the planned directories, moves verified files into the target (skipping the
/// `bad` and the kept ones) on `threads` threads, then sets directory metadata deepest first,
/// so that adding files does not disturb a directory's mtime after it was set. An entry that
/// cannot be placed is reported in `failed` and skipped; a full target stops the moves.
pub(crate) fn move_into_target(plan: &Plan, how: &Apply<'_>, threads: usize) -> Moved {
    let target = how.target;
    let root = rustix::process::geteuid().is_root();
    let mut moved = Moved::default();
    let mut created = vec![false; plan.dirs.len()];
    for (d, ok) in plan.dirs.iter().zip(&mut created) {
        match target.create_dir_all(&plan.path(d), NEW_DIR_MODE) {
            Ok(_) => *ok = true,
            Err(e) => moved.failed.push(not_restored(&plan.shown(d), &e)),
        }
    }
    // Each file is a handful of system calls on its own names, independent of the others:
    // the files are split into runs that each go to one thread.
    let runs = split_runs(plan, threads);
    let results: Vec<Moved> = std::thread::scope(|s| {
        let workers: Vec<_> = runs
            .iter()
            .map(|run| s.spawn(|| move_files(plan, run.clone(), how, root)))
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    for r in results {
        moved.files += r.files;
        moved.bytes += r.bytes;
        moved.overwritten += r.overwritten;
        moved.failed.extend(r.failed);
        moved.warnings.extend(r.warnings);
    }
    // Links and symlinks, before directory metadata: making them moves a directory's mtime.
    if !how.stop.is_set() {
        super::links::place(plan, how, root, &mut moved);
    }
    let mut dirs: Vec<_> = plan
        .dirs
        .iter()
        .zip(&created)
        .filter(|(_, ok)| **ok)
        .map(|(d, _)| (plan.depth(d), d))
        .collect();
    dirs.sort_by_key(|(depth, _)| std::cmp::Reverse(*depth));
    for (_, d) in dirs {
        let path = plan.path(d);
        let result = target.open_dir(&path).and_then(|dir| {
            apply_metadata(&dir, None, &d.meta, root)
                .map_err(|e| io_at("set metadata", target, &path, e))
        });
        match result {
            Ok(()) => moved.dirs += 1,
            Err(e) => moved.failed.push(not_restored(&plan.shown(d), &e)),
        }
    }
    moved
}

/// Splits the plan's files into at most `threads` runs of about equal length, each ending
/// where the parent directory changes, so that a directory's files stay on one thread (which
/// keeps that directory open for them).
fn split_runs(plan: &Plan, threads: usize) -> Vec<std::ops::Range<usize>> {
    let n = plan.files.len();
    let per = n.div_ceil(threads.max(1)).max(1);
    let mut runs = Vec::new();
    let mut start = 0;
    while start < n {
        let mut end = (start + per).min(n);
        while end < n && plan.files[end].parent == plan.files[end - 1].parent {
            end += 1;
        }
        runs.push(start..end);
        start = end;
    }
    runs
}

/// Moves the files numbered `run` into the target (see [`move_into_target`]).
fn move_files(plan: &Plan, run: std::ops::Range<usize>, how: &Apply<'_>, root: bool) -> Moved {
    let (stage, target) = (how.stage, how.target);
    let mut moved = Moved::default();
    // Files come in tree order, so consecutive ones mostly share a parent: keep it open.
    let mut parent: Option<(Option<usize>, Dir)> = None;
    for i in run {
        let f = &plan.files[i];
        let decision = how.decisions[i];
        // Later links of a hard-link group are placed after every file (`links.rs`).
        if how.bad[i]
            || plan.links.members.contains_key(&i)
            || !(decision.writes() || decision == Decision::Refresh)
        {
            continue;
        }
        if how.stop.is_set() {
            break;
        }
        let dir = match &parent {
            Some((p, dir)) if *p == f.parent => Ok(dir),
            _ => open_parent(plan, target, f.parent).map(|dir| &parent.insert((f.parent, dir)).1),
        };
        if decision == Decision::Refresh {
            if let Err(e) = dir.and_then(|dir| refresh(dir, &f.name, &f.meta, root)) {
                moved.failed.push(not_restored(&plan.shown(f), &e));
            }
            continue;
        }
        let result = dir.and_then(|dir| move_file(stage, i, dir, &f.name, &f.meta, root));
        match result {
            Ok(()) => {
                moved.files += 1;
                moved.bytes += f.meta.size;
                moved.overwritten += u64::from(how.decisions[i] == Decision::Overwrite);
            }
            Err(e) => {
                how.stop.note(fs_cause(&e), target.label());
                moved.failed.push(not_restored(&plan.shown(f), &e));
            }
        }
    }
    moved
}

pub(super) fn not_restored(path: &str, e: &FsError) -> NotRestored {
    NotRestored {
        path: path.to_string(),
        reason: e.to_string(),
        cause: fs_cause(e),
    }
}

/// The directory a file goes into: the plan's directory number `dir`, or the target itself.
/// It was created with the plan's directories; only a file restored without its directory
/// finds it missing, and then it is made.
pub(super) fn open_parent(plan: &Plan, target: &Dir, dir: Option<usize>) -> Result<Dir, FsError> {
    let rel = dir.map_or_else(RelPath::new, |d| plan.path(&plan.dirs[d]));
    match target.open_dir(&rel) {
        Err(FsError::NotFound { .. }) => target.create_dir_all(&rel, NEW_DIR_MODE),
        other => other,
    }
}

/// Gives the file `name` already in `parent`, whose content is the backed-up one, the
/// backed-up metadata, on the file it opened (never following a symlink).
fn refresh(parent: &Dir, name: &Name, meta: &Meta, root: bool) -> Result<(), FsError> {
    let rel = RelPath::from(name.clone());
    let file = parent.open_file(&rel, Access::Read)?;
    apply_metadata(&file, None, meta, root).map_err(|e| io_at("set metadata", parent, &rel, e))
}

/// Gives the staged file `i` its metadata and renames it to `name` in `parent`. A file,
/// symlink or FIFO at the destination is replaced itself (never followed); a directory there
/// is reported and left alone.
pub(super) fn move_file(
    stage: &Stage,
    i: usize,
    parent: &Dir,
    name: &Name,
    meta: &Meta,
    root: bool,
) -> Result<(), FsError> {
    let (folder, staged) = stage.slot(i);
    // The staging folder is this restore's own (0700), so its files need none of the checks
    // an open in the target gets: this is one open and one stat per file.
    let (file, has) = match stage.open_staged(i)? {
        Some(opened) => opened,
        // Empty files and all-hole sparse files received no data, so nothing created them.
        None => {
            let f = stage.open(i, meta.size)?;
            let has =
                rbackup_beneath::metadata(&f).map_err(|e| io_at("stat", folder, &staged, e))?;
            (f, has)
        }
    };
    apply_metadata(&file, Some(&has), meta, root)
        .map_err(|e| io_at("set metadata", folder, &staged, e))?;
    let dest = RelPath::from(name.clone());
    // A fresh target has nothing at the name: one `RENAME_NOREPLACE` does it. Only when
    // something is there (or the file system lacks the flag) is it checked and replaced.
    let placed = match folder.rename(&staged, parent, &dest, Replace::Never) {
        Err(FsError::Exists { .. }) => None,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => None,
        other => Some(other),
    };
    match placed.unwrap_or_else(|| folder.rename(&staged, parent, &dest, Replace::NonDirectory)) {
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            copy_across(&file, parent, &dest, meta, root)?;
            stage.remove(i)
        }
        other => other,
    }
}

/// The staging folder is on another file system: copy into a new file in `parent` (unnamed
/// where the file system allows, else under a fresh hidden name), set its metadata, then
/// rename it over `dest`. No temporary file is left behind on failure.
fn copy_across(
    from: &File,
    parent: &Dir,
    dest: &RelPath,
    meta: &Meta,
    root: bool,
) -> Result<(), FsError> {
    let tmp_name = RelPath::from(
        Name::try_from(
            format!(
                ".rbackup-tmp-{}",
                hex::encode(crate::id::random_bytes::<8>())
            )
            .as_str(),
        )
        .expect("a hex suffix is a valid name"),
    );
    let fill = |to: &File| {
        copy_keeping_holes(from, to)
            .and_then(|()| apply_metadata(to, None, meta, root))
            .and_then(|()| to.sync_all())
            .map_err(|e| io_at("copy", parent, dest, e))
    };
    match parent.create_tmpfile(&RelPath::new()) {
        Ok(tmp) => {
            fill(tmp.file())?;
            tmp.publish(parent, &tmp_name)?;
        }
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP) | Some(libc::EISDIR)
            ) =>
        {
            let to = parent.create_file(&tmp_name)?;
            if let Err(e) = fill(&to) {
                let _ = parent.remove_file(&tmp_name);
                return Err(e);
            }
        }
        Err(e) => return Err(e),
    }
    parent
        .rename(&tmp_name, parent, dest, Replace::NonDirectory)
        .inspect_err(|_| {
            let _ = parent.remove_file(&tmp_name);
        })
}

/// Copies between open files without filling holes.
fn copy_keeping_holes(from: &File, to: &File) -> io::Result<()> {
    let size = from.metadata()?.len();
    to.set_len(size)?;
    let mut buf = vec![0u8; 1 << 20];
    for (start, len) in crate::backup::data_segments(from, size)? {
        let mut off = start;
        while off < start + len {
            let n = ((start + len - off) as usize).min(buf.len());
            from.read_exact_at(&mut buf[..n], off)?;
            to.write_all_at(&buf[..n], off)?;
            off += n as u64;
        }
    }
    Ok(())
}

/// Owner (as root only), mode, then mtime, on the open object — in that order, because chown
/// clears set-id bits and any write would move the mtime. With `has`, the object's current
/// metadata, an owner or mode it already has is not set again (a root restore of root's
/// files skips the chown); that is only for files this restore created, which carry no
/// set-id bits for a chown to clear.
fn apply_metadata(
    fd: impl AsFd,
    has: Option<&rbackup_beneath::Meta>,
    meta: &Meta,
    root: bool,
) -> io::Result<()> {
    if root && has.is_none_or(|h| (h.uid, h.gid) != (meta.uid, meta.gid)) {
        rbackup_beneath::set_owner(&fd, Some(meta.uid), Some(meta.gid))?;
    }
    if has.is_none_or(|h| h.mode & 0o7777 != meta.mode & 0o7777) {
        rbackup_beneath::set_mode(&fd, meta.mode)?;
    }
    rbackup_beneath::set_times(&fd, Some(meta.mtime_ns), Some(meta.mtime_ns))
}

fn io_at(op: &'static str, dir: &Dir, rel: &RelPath, source: io::Error) -> FsError {
    FsError::Io {
        op,
        path: dir.label().join(rel.to_path_buf()),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restore::plan::Entry;

    fn plan_with_parents(parents: &[Option<usize>]) -> Plan {
        let entry = |parent| Entry {
            parent,
            name: Name::try_from("f").unwrap(),
            meta: Meta {
                mode: 0o100644,
                uid: 0,
                gid: 0,
                mtime_ns: 0,
                size: 0,
            },
        };
        Plan {
            files: parents.iter().map(|&p| entry(p)).collect(),
            ..Plan::default()
        }
    }

    #[test]
    fn runs_cover_every_file_once_and_keep_a_directory_on_one_thread() {
        let parents = [0, 0, 1, 1, 1, 2, 3, 3, 3, 3].map(Some);
        let mut parents = parents.to_vec();
        parents.extend([None, None]);
        let plan = plan_with_parents(&parents);
        for threads in [0, 1, 2, 3, 5, 64] {
            let runs = split_runs(&plan, threads);
            assert!(runs.len() <= threads.max(1), "{threads}: {runs:?}");
            let flat: Vec<usize> = runs.iter().cloned().flatten().collect();
            assert_eq!(flat, (0..parents.len()).collect::<Vec<_>>(), "{threads}");
            for r in &runs[1..] {
                assert_ne!(
                    parents[r.start],
                    parents[r.start - 1],
                    "{threads}: {runs:?}"
                );
            }
        }
        assert_eq!(split_runs(&plan, 2), [0..6, 6..12]);
        assert!(split_runs(&plan_with_parents(&[]), 2).is_empty());
    }
}
