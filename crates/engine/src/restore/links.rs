//! Symlinks and hard-link groups in a restore (see [`crate::LinkMode::Store`]).
//!
//! Both are made after every file is in place and before directory metadata is set (making
//! them moves their directory's mtime). Neither can steer a write: every path is resolved
//! beneath the target without following a symlink (`rbackup-beneath`), so a symlink restored
//! before a file that a crafted recovery point puts "inside" it makes that file fail, not land
//! where the link points; and a link is created at a fresh hidden name in its held parent,
//! then renamed over its destination, replacing only a non-directory.
//!
//! A later member of a hard-link group is linked to the first member the restore placed, if
//! that one is a regular file with the same content and metadata in the plan (a crafted group
//! joining different files, or files outside the selection, is restored as separate copies);
//! when the link cannot be made (the target file system refuses, or the first member is
//! missing) it is restored as a copy of its own, with a warning.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use rbackup_beneath::{Dir, Error as FsError, FileKind, Name, RelPath, Replace};
use rbackup_crypto::BlobId;

use super::apply::{Apply, Moved, move_file, not_restored, open_parent};
use super::plan::{Entry, Meta, Plan};
use crate::tree::{MAX_SYMLINK_TARGET, Node};

/// A symlink to create.
#[derive(Debug, Clone)]
pub(crate) struct PlannedSymlink {
    pub entry: Entry,
    pub target: OsString,
}

/// The target of the symlink `node`, or why it is refused: none, empty, longer than
/// [`MAX_SYMLINK_TARGET`] or holding a NUL (which no Linux symlink can).
pub(crate) fn symlink_target(node: &Node) -> Result<OsString, String> {
    let Some(t) = &node.target else {
        return Err("refused: a symbolic link without a target".into());
    };
    if t.is_empty() || t.len() > MAX_SYMLINK_TARGET || t.contains(&0) {
        return Err(format!(
            "refused: a symbolic link target must be 1 to {MAX_SYMLINK_TARGET} bytes without NUL"
        ));
    }
    Ok(OsString::from_vec(t.to_vec()))
}

/// The hard-link groups among the selected files.
#[derive(Debug, Default)]
pub(crate) struct Groups {
    /// Group number → the first selected file of the group, while the plan is built.
    leaders: HashMap<u64, Leader>,
    /// File number of each later member → file number of the one it is linked to.
    pub members: BTreeMap<usize, usize>,
}

#[derive(Debug)]
struct Leader {
    file: usize,
    meta: Meta,
    content: Vec<BlobId>,
    segments: Vec<(u64, u64)>,
}

impl Groups {
    /// Notes the selected file number `file`, planned from `node`.
    pub(crate) fn note(&mut self, file: usize, node: &Node) {
        let Some(group) = node.link_group else {
            return;
        };
        match self.leaders.get(&group) {
            None => {
                let leader = Leader {
                    file,
                    meta: Meta::from(node),
                    content: node.content.clone(),
                    segments: node.segments.clone(),
                };
                self.leaders.insert(group, leader);
            }
            // Links of one inode have one content and one set of metadata; anything else is
            // not a link, whatever the number says.
            Some(l)
                if l.meta == Meta::from(node)
                    && l.content == node.content
                    && l.segments == node.segments =>
            {
                self.members.insert(file, l.file);
            }
            Some(_) => {}
        }
    }
}

/// Places the later members of hard-link groups, then the symlinks (see the module docs).
///
/// A member the overwrite decision keeps (the target's file stays) is left alone; a member
/// whose first link was not written by this restore (failed, or kept as the target had it) is
/// restored as a copy of its own, since what the target holds there may differ.
pub(crate) fn place(plan: &Plan, how: &Apply<'_>, root: bool, moved: &mut Moved) {
    let (stage, target) = (how.stage, how.target);
    for (&member, &leader) in &plan.links.members {
        if !how.bad[member] && how.decisions[member].writes() {
            let leader_missing = how.bad[leader] || !how.decisions[leader].writes();
            place_member(
                plan,
                stage,
                target,
                (member, leader),
                leader_missing,
                root,
                moved,
            );
        }
    }
    let replace = if how.keep_existing {
        Replace::Never
    } else {
        Replace::NonDirectory
    };
    for s in &plan.symlinks {
        let made = open_parent(plan, target, s.entry.parent)
            .and_then(|dir| make_symlink(&dir, &s.entry, &s.target, root, replace));
        match made {
            Ok(()) => moved.symlinks += 1,
            // `--overwrite never`: what the target has there stays.
            Err(FsError::Exists { .. }) if how.keep_existing => {}
            Err(e) => moved.failed.push(not_restored(&plan.shown(&s.entry), &e)),
        }
    }
}

/// Links file `member` to file `leader` (already placed unless `leader_bad`), or falls back
/// to moving its own staged copy.
fn place_member(
    plan: &Plan,
    stage: &super::stage::Stage,
    target: &Dir,
    (member, leader): (usize, usize),
    leader_bad: bool,
    root: bool,
    moved: &mut Moved,
) {
    let f = &plan.files[member];
    let Ok(dir) = open_parent(plan, target, f.parent)
        .inspect_err(|e| moved.failed.push(not_restored(&plan.shown(f), e)))
    else {
        return;
    };
    let linked = if leader_bad {
        Err("the file it is linked to was not restored".to_string())
    } else {
        link_to(plan, target, &plan.files[leader], &dir, &f.name).map_err(|e| e.to_string())
    };
    match linked {
        Ok(()) => {
            // The staged copy is not needed; the staging folder goes anyway if this fails.
            let _ = stage.remove(member);
            moved.files += 1;
            moved.hard_links += 1;
        }
        Err(why) => {
            moved.warnings.push(format!(
                "{} is restored as a separate copy, not as a hard link to {}: {why}",
                plan.shown(f),
                plan.shown(&plan.files[leader])
            ));
            match move_file(stage, member, &dir, &f.name, &f.meta, root) {
                Ok(()) => {
                    moved.files += 1;
                    moved.bytes += f.meta.size;
                }
                Err(e) => moved.failed.push(not_restored(&plan.shown(f), &e)),
            }
        }
    }
}

/// Links `name` in `dir` to the placed file `leader`, which must be a regular file.
fn link_to(
    plan: &Plan,
    target: &Dir,
    leader: &Entry,
    dir: &Dir,
    name: &Name,
) -> Result<(), FsError> {
    let from = plan.path(leader);
    let found = target.stat(&from)?;
    if found.kind != FileKind::File {
        return Err(FsError::NotAFile {
            path: target.label().join(from.to_path_buf()),
            found: found.kind,
        });
    }
    let tmp = tmp_name();
    target.hard_link(&from, dir, &tmp)?;
    replace_with(dir, &tmp, name, Replace::NonDirectory)
}

/// Creates the symlink `e` in `dir` with its owner (as root) and time.
fn make_symlink(
    dir: &Dir,
    e: &Entry,
    to: &OsString,
    root: bool,
    replace: Replace,
) -> Result<(), FsError> {
    let tmp = tmp_name();
    dir.symlink(to, &tmp)?;
    let owner = root.then_some((e.meta.uid, e.meta.gid));
    if let Err(err) = dir.set_symlink_meta(&tmp, owner, e.meta.mtime_ns) {
        let _ = dir.remove_file(&tmp);
        return Err(err);
    }
    replace_with(dir, &tmp, &e.name, replace)
}

/// Renames the fresh `tmp` over `name` (replacing a non-directory, or with `Replace::Never`
/// nothing), removing `tmp` on failure.
fn replace_with(dir: &Dir, tmp: &RelPath, name: &Name, replace: Replace) -> Result<(), FsError> {
    let dest = RelPath::from(name.clone());
    dir.rename(tmp, dir, &dest, replace).inspect_err(|_| {
        let _ = dir.remove_file(tmp);
    })
}

fn tmp_name() -> RelPath {
    let name = format!(
        ".rbackup-tmp-{}",
        hex::encode(crate::id::random_bytes::<8>())
    );
    RelPath::from(Name::try_from(name.as_str()).expect("a hex suffix is a valid name"))
}
