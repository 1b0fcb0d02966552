//! Whole-directory operations on a [`Dir`]: listing it, removing (or measuring) a tree
//! beneath it, its file system's free space, and whether that file system folds case.
//!
//! Like everything in this crate they work from held directory fds and never follow a
//! symlink: a symlink inside a tree being removed is removed itself, and what it points to is
//! left alone.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use rustix::fd::AsFd;
use rustix::io::Errno;

use crate::dir::Dir;
use crate::error::{Error, Result};
use crate::meta::FileKind;
use crate::name::{Name, RelPath};

/// Trees nested deeper than this are not removed: each level holds a directory fd, and a
/// tree someone made deliberately deep must not exhaust them.
pub const MAX_TREE_DEPTH: usize = 1024;

/// What [`Dir::remove_tree`] removed (or [`Dir::measure_tree`] found).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeCount {
    /// Non-directories: files, symlinks, FIFOs...
    pub files: u64,
    pub dirs: u64,
    /// The sizes of the regular files.
    pub bytes: u64,
}

/// A file system's free space ([`Dir::space`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Bytes free for an unprivileged user.
    pub free: u64,
    /// The unit of allocation: a file takes a whole number of these.
    pub block_size: u64,
}

impl Dir {
    /// The entries of this directory (without `.` and `..`), with the kind each had when
    /// listed, in the order the file system returns them.
    pub fn entries(&self) -> Result<Vec<(Name, FileKind)>> {
        let err = |e: Errno| Error::io("list directory", self.label().to_path_buf(), e);
        let mut out = Vec::new();
        for entry in rustix::fs::Dir::read_from(self.as_fd()).map_err(err)? {
            let entry = entry.map_err(err)?;
            let bytes = entry.file_name().to_bytes();
            if bytes == b"." || bytes == b".." {
                continue;
            }
            // The kernel never stores a name that is not a valid `Name`.
            let Ok(name) = Name::new(OsStr::from_bytes(bytes)) else {
                continue;
            };
            let kind = match FileKind::from_file_type(entry.file_type()) {
                // Some file systems do not fill in `d_type`: ask.
                FileKind::Unknown => self.stat(&RelPath::from(name.clone()))?.kind,
                kind => kind,
            };
            out.push((name, kind));
        }
        Ok(out)
    }

    /// Removes `rel` and, when it is a directory (not a symlink to one), everything beneath
    /// it, deepest first. Returns what was removed; on an error, what was removed before it
    /// stays removed.
    pub fn remove_tree(&self, rel: &RelPath) -> Result<TreeCount> {
        let mut count = TreeCount::default();
        self.visit_tree(rel, true, 0, &mut count)?;
        Ok(count)
    }

    /// What [`remove_tree`](Dir::remove_tree) would remove, changing nothing.
    pub fn measure_tree(&self, rel: &RelPath) -> Result<TreeCount> {
        let mut count = TreeCount::default();
        self.visit_tree(rel, false, 0, &mut count)?;
        Ok(count)
    }

    fn visit_tree(
        &self,
        rel: &RelPath,
        remove: bool,
        depth: usize,
        count: &mut TreeCount,
    ) -> Result<()> {
        let meta = self.stat(rel)?;
        if meta.kind != FileKind::Dir {
            if remove {
                self.remove_file(rel)?;
            }
            count.files += 1;
            if meta.kind == FileKind::File {
                count.bytes += meta.size;
            }
            return Ok(());
        }
        if depth >= MAX_TREE_DEPTH {
            return Err(Error::io(
                "remove tree",
                self.label().join(rel.to_path_buf()),
                Errno::LOOP,
            ));
        }
        // Opened without following: if it was swapped for a symlink since the stat, this
        // refuses instead of descending into what the link points to.
        let dir = self.open_dir(rel)?;
        for (name, _) in dir.entries()? {
            dir.visit_tree(&RelPath::from(name), remove, depth + 1, count)?;
        }
        if remove {
            self.remove_dir(rel)?;
        }
        count.dirs += 1;
        Ok(())
    }

    /// The free space of this directory's file system (`fstatvfs`).
    pub fn space(&self) -> Result<Space> {
        let st = rustix::fs::fstatvfs(self.as_fd())
            .map_err(|e| Error::io("statvfs", self.label().to_path_buf(), e))?;
        Ok(Space {
            free: st.f_bavail.saturating_mul(st.f_frsize),
            block_size: st.f_frsize.max(1),
        })
    }

    /// Whether names in this directory are matched without regard to case (vfat, exFAT,
    /// NTFS, SMB shares, ext4 and f2fs directories with the casefold attribute). No flag says
    /// it for every file system, so it is probed: an entry with a letter in its name is looked
    /// up in the other case (found, and not an entry of its own in the listing: folds; not
    /// found, or listed as a second entry: does not). An empty directory is
    /// probed, with `may_write`, by creating a mixed-case file and removing it again; without,
    /// the answer is `None` (unknown).
    pub fn folds_case(&self, may_write: bool) -> Result<Option<bool>> {
        let err = |e: Errno| Error::io("list directory", self.label().to_path_buf(), e);
        // The names, to tell a second entry spelled in the other case (a case-sensitive
        // directory that has both) from the same entry found again. Bounded: past the cap the
        // other spelling is compared by inode, which FUSE file systems do not keep stable.
        let mut names = std::collections::HashSet::new();
        let mut candidate = None;
        for entry in rustix::fs::Dir::read_from(self.as_fd()).map_err(err)? {
            let bytes = entry.map_err(err)?.file_name().to_bytes().to_vec();
            if candidate.is_none() && bytes.iter().any(u8::is_ascii_alphabetic) {
                candidate = Some(bytes.clone());
            }
            if names.len() >= MAX_PROBE_NAMES {
                break;
            }
            names.insert(bytes);
        }
        if let Some(bytes) = candidate {
            let swapped = swap_case(&bytes);
            let listed = names.contains(&swapped);
            let (Ok(name), Ok(other)) = (
                Name::new(OsStr::from_bytes(&bytes)),
                Name::new(OsStr::from_bytes(&swapped)),
            ) else {
                return Ok(None);
            };
            if listed {
                return Ok(Some(false));
            }
            let here = self.stat(&RelPath::from(name))?;
            return match self.stat(&RelPath::from(other)) {
                Ok(_) if names.len() < MAX_PROBE_NAMES => Ok(Some(true)),
                Ok(there) => Ok(Some((there.dev, there.ino) == (here.dev, here.ino))),
                Err(Error::NotFound { .. }) => Ok(Some(false)),
                Err(e) => Err(e),
            };
        }
        if !may_write {
            return Ok(None);
        }
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let probe = format!(".Case-Probe-{}-{stamp:x}", std::process::id());
        let name =
            |s: &[u8]| RelPath::from(Name::new(OsStr::from_bytes(s)).expect("an ASCII name"));
        let (probe, swapped) = (name(probe.as_bytes()), name(&swap_case(probe.as_bytes())));
        drop(self.create_file(&probe)?);
        let found = match self.stat(&swapped) {
            Ok(_) => Ok(Some(true)),
            Err(Error::NotFound { .. }) => Ok(Some(false)),
            Err(e) => Err(e),
        };
        self.remove_file(&probe)?;
        found
    }
}

/// How many names [`Dir::folds_case`] keeps to tell two spellings apart.
const MAX_PROBE_NAMES: usize = 65_536;

/// `name` with ASCII letters in the other case.
fn swap_case(name: &[u8]) -> Vec<u8> {
    name.iter()
        .map(|&c| match c {
            c if c.is_ascii_lowercase() => c.to_ascii_uppercase(),
            c => c.to_ascii_lowercase(),
        })
        .collect()
}
