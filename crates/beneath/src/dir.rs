//! [`Dir`]: an owned directory fd and the operations confined beneath it.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, CWD, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::meta::{self, FileKind, Meta, STATX_MASK};
use crate::name::{Name, RelPath, join};
use crate::walk::{self, Failed, Resolve, Step};

/// The mode of every file this crate creates. The real mode is set on the open file once its
/// content is complete, so nobody else can open it while it is being written.
pub const STAGED_FILE_MODE: u32 = 0o600;

/// How an existing file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    ReadWrite,
}

/// What a rename may do to an object already at the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// Refuse if the destination exists (`RENAME_NOREPLACE`): [`Error::Exists`].
    Never,
    /// Replace whatever non-directory is at the destination. A symlink there is replaced
    /// itself; its target is never touched (rename does not follow the last component). A
    /// directory there is refused ([`Error::WouldReplaceDirectory`]). The source must not be
    /// a directory ([`Error::SourceIsDirectory`]): then the kernel itself refuses a directory
    /// at the destination, with no window between a check and the rename. The source's kind
    /// is checked just before the rename, so the source should live where only the caller
    /// writes (a 0700 staging folder).
    NonDirectory,
}

/// An open directory. Every path handed to its methods is a [`RelPath`] resolved beneath it
/// without following any symlink; see the crate documentation.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    label: PathBuf,
    resolve: Resolve,
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Dir {
    /// Opens the base directory `path` by ordinary path lookup (symlinks in `path` itself
    /// are followed: the base is the caller's trust anchor, not data). Everything beneath it
    /// is then resolved strictly.
    pub fn open(path: impl AsRef<Path>) -> Result<Dir> {
        Dir::open_with(path, Resolve::Auto)
    }

    /// [`Dir::open`] with a chosen resolution method, inherited by every directory opened
    /// through this one.
    pub fn open_with(path: impl AsRef<Path>, resolve: Resolve) -> Result<Dir> {
        let path = path.as_ref();
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = rustix::fs::open(path, flags, Mode::empty())
            .map_err(|e| Error::io("open directory", path.to_path_buf(), e))?;
        Ok(Dir {
            fd,
            label: path.to_path_buf(),
            resolve,
        })
    }

    /// The path this directory was opened as; used in error messages only.
    pub fn label(&self) -> &Path {
        &self.label
    }

    pub fn resolve(&self) -> Resolve {
        self.resolve
    }

    /// A second handle on the same directory.
    pub fn try_clone(&self) -> Result<Dir> {
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| io_error("duplicate", self.label.clone(), e))?;
        Ok(Dir {
            fd,
            label: self.label.clone(),
            resolve: self.resolve,
        })
    }

    /// Opens the directory `rel`.
    pub fn open_dir(&self, rel: &RelPath) -> Result<Dir> {
        let fd = walk::open_dir(self.as_fd(), rel.names(), self.resolve, None)
            .map_err(|f| self.failed(rel, 0, f))?;
        Ok(self.child(fd, rel))
    }

    /// `mkdir -p` beneath: opens `rel`, creating missing components with `mode` (less the
    /// umask; set the real mode on the returned directory). A symlink or a non-directory in
    /// the way is reported and left alone.
    pub fn create_dir_all(&self, rel: &RelPath, mode: u32) -> Result<Dir> {
        let mode = Some(Mode::from_raw_mode(mode & 0o7777));
        let fd = walk::open_dir(self.as_fd(), rel.names(), self.resolve, mode)
            .map_err(|f| self.failed(rel, 0, f))?;
        Ok(self.child(fd, rel))
    }

    /// Creates the directory `rel` (its parent must exist) and opens it; [`Error::Exists`]
    /// if the name is taken by anything.
    pub fn create_dir(&self, rel: &RelPath, mode: u32) -> Result<Dir> {
        let fd = self.with_parent(rel, "create directory", |parent, name| {
            let mode = Mode::from_raw_mode(mode & 0o7777);
            match rustix::fs::mkdirat(parent, name.as_os_str(), mode) {
                Ok(()) => {}
                Err(Errno::EXIST) => return Err(self.exists(rel)),
                Err(e) => return Err(Error::io("create directory", self.label_of(rel), e)),
            }
            // Opened again by name: if it was swapped meanwhile, the walk step says so.
            walk::open_dir(parent, std::slice::from_ref(name), Resolve::Walk, None)
                .map_err(|f| self.failed(rel, rel.names().len() - 1, f))
        })?;
        Ok(self.child(fd, rel))
    }

    /// Creates the regular file `rel` exclusively (`O_CREAT | O_EXCL | O_NOFOLLOW`, mode
    /// 0600), open for reading and writing. Anything at the name, a dangling symlink or a
    /// FIFO included, makes it fail with [`Error::Exists`] without being opened.
    pub fn create_file(&self, rel: &RelPath) -> Result<File> {
        self.with_parent(rel, "create file", |parent, name| {
            let flags =
                OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::RDWR | OFlags::CLOEXEC;
            let mode = Mode::from_raw_mode(STAGED_FILE_MODE);
            match rustix::fs::openat(parent, name.as_os_str(), flags, mode) {
                Ok(fd) => Ok(File::from(fd)),
                Err(Errno::EXIST) => Err(self.exists(rel)),
                Err(e) => Err(Error::io("create file", self.label_of(rel), e)),
            }
        })
    }

    /// Opens the existing regular file `rel`. A symlink is not followed and anything but a
    /// regular file is refused with [`Error::NotAFile`]: the name is looked at first, so a
    /// FIFO or device is not even opened (it could block, or act on open); if it is swapped
    /// in between, `O_NONBLOCK` keeps the open from hanging and the check on the open fd
    /// refuses it.
    pub fn open_file(&self, rel: &RelPath, access: Access) -> Result<File> {
        self.with_parent(rel, "open file", |parent, name| {
            let path = || self.label_of(rel);
            let not_a_file = |found| Error::NotAFile {
                path: path(),
                found,
            };
            match walk::kind_of(parent, name) {
                Ok(FileKind::File) => {}
                Ok(found) => return Err(not_a_file(found)),
                Err(e) => return Err(meta::stat_error(path(), e)),
            }
            let access = match access {
                Access::Read => OFlags::RDONLY,
                Access::Write => OFlags::WRONLY,
                Access::ReadWrite => OFlags::RDWR,
            };
            let flags =
                access | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
            let fd = match rustix::fs::openat(parent, name.as_os_str(), flags, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::LOOP) => return Err(not_a_file(FileKind::Symlink)),
                // ENXIO: a FIFO with no reader, opened for writing without blocking.
                Err(Errno::NXIO) => return Err(not_a_file(FileKind::Fifo)),
                Err(e) => return Err(Error::io("open file", path(), e)),
            };
            let found = meta::metadata(&fd).map_err(|e| io_error("stat", path(), e))?;
            if found.kind != FileKind::File {
                return Err(not_a_file(found.kind));
            }
            // Non-blocking only guarded the open; for a regular file it means nothing, but
            // the caller gets the flags it would expect.
            rustix::fs::fcntl_getfl(&fd)
                .and_then(|f| rustix::fs::fcntl_setfl(&fd, f - OFlags::NONBLOCK))
                .map_err(|e| Error::io("open file", path(), e))?;
            Ok(File::from(fd))
        })
    }

    /// Opens the existing regular file `rel` in a directory *only the caller can change* (a
    /// 0700 staging folder of its own), and returns it with its metadata. Two system calls
    /// instead of [`open_file`](Dir::open_file)'s five: the name is not looked at before the
    /// open, because nobody else can have put a FIFO or device there; a symlink is still not
    /// followed (`O_NOFOLLOW`), and anything but a regular file is still refused
    /// ([`Error::NotAFile`]) from the open fd. Do not use it where others can write.
    pub fn open_own_file(&self, rel: &RelPath, access: Access) -> Result<(File, Meta)> {
        self.with_parent(rel, "open file", |parent, name| {
            let path = || self.label_of(rel);
            let access = match access {
                Access::Read => OFlags::RDONLY,
                Access::Write => OFlags::WRONLY,
                Access::ReadWrite => OFlags::RDWR,
            };
            let flags = access | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC;
            let fd = match rustix::fs::openat(parent, name.as_os_str(), flags, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::LOOP) => {
                    return Err(Error::NotAFile {
                        path: path(),
                        found: FileKind::Symlink,
                    });
                }
                Err(Errno::ISDIR) => {
                    return Err(Error::NotAFile {
                        path: path(),
                        found: FileKind::Dir,
                    });
                }
                Err(Errno::NOENT) => return Err(meta::stat_error(path(), Errno::NOENT)),
                Err(e) => return Err(Error::io("open file", path(), e)),
            };
            let found = meta::metadata(&fd).map_err(|e| io_error("stat", path(), e))?;
            if found.kind != FileKind::File {
                return Err(Error::NotAFile {
                    path: path(),
                    found: found.kind,
                });
            }
            Ok((File::from(fd), found))
        })
    }

    /// Creates an unnamed file (`O_TMPFILE`, mode 0600) in the directory `dir`, to be given a
    /// name with [`TmpFile::publish`] once complete. File systems without `O_TMPFILE` fail
    /// with an [`Error::Io`] whose [`raw_os_error`](Error::raw_os_error) is `EOPNOTSUPP`
    /// (`EISDIR` on kernels older than 3.11); use [`Dir::create_file`] there.
    pub fn create_tmpfile(&self, dir: &RelPath) -> Result<TmpFile> {
        let opened;
        let parent = if dir.is_empty() {
            self.as_fd()
        } else {
            opened = self.open_dir(dir)?;
            opened.as_fd()
        };
        let flags = OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(parent, ".", flags, Mode::from_raw_mode(STAGED_FILE_MODE))
            .map_err(|e| Error::io("create unnamed file", self.label_of(dir), e))?;
        Ok(TmpFile {
            file: File::from(fd),
        })
    }

    /// Renames `from` (beneath this directory) to `to` (beneath `to_dir`, which may be this
    /// one). Neither last component is followed: a symlink moves or is replaced as a link.
    pub fn rename(&self, from: &RelPath, to_dir: &Dir, to: &RelPath, how: Replace) -> Result<()> {
        self.with_parent(from, "rename", |src, src_name| {
            to_dir.with_parent(to, "rename", |dst, dst_name| {
                let (from_s, to_s) = (src_name.as_os_str(), dst_name.as_os_str());
                let res = match how {
                    Replace::Never => {
                        rustix::fs::renameat_with(src, from_s, dst, to_s, RenameFlags::NOREPLACE)
                    }
                    Replace::NonDirectory => {
                        match walk::kind_of(src, src_name) {
                            Ok(FileKind::Dir) => {
                                return Err(Error::SourceIsDirectory {
                                    path: self.label_of(from),
                                });
                            }
                            Ok(_) => {}
                            Err(e) => return Err(meta::stat_error(self.label_of(from), e)),
                        }
                        rustix::fs::renameat(src, from_s, dst, to_s)
                    }
                };
                res.map_err(|e| match e {
                    Errno::EXIST => to_dir.exists(to),
                    Errno::ISDIR | Errno::NOTEMPTY => Error::WouldReplaceDirectory {
                        path: to_dir.label_of(to),
                    },
                    Errno::NOENT => meta::stat_error(self.label_of(from), e),
                    e => Error::io("rename", self.label_of(from), e),
                })
            })
        })
    }

    /// Creates the symbolic link `rel` pointing at `target` (`symlinkat` in the held parent;
    /// the target is stored as given and never resolved here). [`Error::Exists`] if the name
    /// is taken by anything.
    pub fn symlink(&self, target: &OsStr, rel: &RelPath) -> Result<()> {
        self.with_parent(
            rel,
            "create symlink",
            |parent, name| match rustix::fs::symlinkat(target, parent, name.as_os_str()) {
                Ok(()) => Ok(()),
                Err(Errno::EXIST) => Err(self.exists(rel)),
                Err(e) => Err(Error::io("create symlink", self.label_of(rel), e)),
            },
        )
    }

    /// Makes `to` (beneath `to_dir`) a new hard link to the object `from` beneath this
    /// directory (`linkat` without `AT_SYMLINK_FOLLOW`: a symlink at `from` is linked itself,
    /// never its target). [`Error::Exists`] if `to` is taken.
    pub fn hard_link(&self, from: &RelPath, to_dir: &Dir, to: &RelPath) -> Result<()> {
        self.with_parent(from, "link", |src, src_name| {
            to_dir.with_parent(to, "link", |dst, dst_name| {
                let (from_s, to_s) = (src_name.as_os_str(), dst_name.as_os_str());
                match rustix::fs::linkat(src, from_s, dst, to_s, AtFlags::empty()) {
                    Ok(()) => Ok(()),
                    Err(Errno::EXIST) => Err(to_dir.exists(to)),
                    Err(Errno::NOENT) => Err(meta::stat_error(self.label_of(from), Errno::NOENT)),
                    Err(e) => Err(Error::io("link", to_dir.label_of(to), e)),
                }
            })
        })
    }

    /// Sets the owner (when given) and the times of the symlink `rel` itself. A symlink
    /// cannot be opened to set them on a fd as [`set_owner`](crate::set_owner) does, so they
    /// are set by its one name in the held parent with `AT_SYMLINK_NOFOLLOW`: nothing is
    /// resolved but that name, and it is not followed.
    pub fn set_symlink_meta(
        &self,
        rel: &RelPath,
        owner: Option<(u32, u32)>,
        mtime_ns: i64,
    ) -> Result<()> {
        self.with_parent(rel, "set symlink metadata", |parent, name| {
            let at = || self.label_of(rel);
            if let Some((uid, gid)) = owner {
                // As in `set_owner`: `u32::MAX` would mean "leave as is" to the kernel.
                if uid == u32::MAX || gid == u32::MAX {
                    return Err(Error::io("set symlink owner", at(), Errno::INVAL));
                }
                let (uid, gid) = (
                    rustix::fs::Uid::from_raw(uid),
                    rustix::fs::Gid::from_raw(gid),
                );
                rustix::fs::chownat(
                    parent,
                    name.as_os_str(),
                    Some(uid),
                    Some(gid),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| Error::io("set symlink owner", at(), e))?;
            }
            let t = meta::timespec(mtime_ns);
            let times = rustix::fs::Timestamps {
                last_access: t,
                last_modification: t,
            };
            rustix::fs::utimensat(parent, name.as_os_str(), &times, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| Error::io("set symlink times", at(), e))
        })
    }

    /// Removes the non-directory `rel` (a symlink is removed itself).
    pub fn remove_file(&self, rel: &RelPath) -> Result<()> {
        self.unlink(rel, AtFlags::empty(), "remove file")
    }

    /// Removes the empty directory `rel`.
    pub fn remove_dir(&self, rel: &RelPath) -> Result<()> {
        self.unlink(rel, AtFlags::REMOVEDIR, "remove directory")
    }

    fn unlink(&self, rel: &RelPath, flags: AtFlags, op: &'static str) -> Result<()> {
        self.with_parent(rel, op, |parent, name| {
            rustix::fs::unlinkat(parent, name.as_os_str(), flags).map_err(|e| match e {
                Errno::NOENT => meta::stat_error(self.label_of(rel), e),
                e => Error::io(op, self.label_of(rel), e),
            })
        })
    }

    /// `statx` of `rel` without following it (the directory itself for the empty path).
    pub fn stat(&self, rel: &RelPath) -> Result<Meta> {
        if rel.is_empty() {
            return meta::metadata(self).map_err(|e| io_error("stat", self.label.clone(), e));
        }
        self.with_parent(rel, "stat", |parent, name| {
            rustix::fs::statx(
                parent,
                name.as_os_str(),
                AtFlags::SYMLINK_NOFOLLOW,
                STATX_MASK,
            )
            .map(|s| Meta::from_statx(&s))
            .map_err(|e| meta::stat_error(self.label_of(rel), e))
        })
    }

    /// Runs `f` on the opened parent of `rel` and its last name. The empty path has no last
    /// name and is refused with `EINVAL`.
    fn with_parent<T>(
        &self,
        rel: &RelPath,
        op: &'static str,
        f: impl FnOnce(BorrowedFd<'_>, &Name) -> Result<T>,
    ) -> Result<T> {
        let Some((dirs, name)) = rel.split_last() else {
            return Err(Error::io(op, self.label.clone(), Errno::INVAL));
        };
        if dirs.is_empty() {
            return f(self.as_fd(), name);
        }
        let parent = walk::open_dir(self.as_fd(), dirs, self.resolve, None)
            .map_err(|fail| self.failed(rel, 0, fail))?;
        f(parent.as_fd(), name)
    }

    fn child(&self, fd: OwnedFd, rel: &RelPath) -> Dir {
        Dir {
            fd,
            label: self.label_of(rel),
            resolve: self.resolve,
        }
    }

    fn label_of(&self, rel: &RelPath) -> PathBuf {
        if rel.is_empty() {
            self.label.clone()
        } else {
            self.label.join(rel.to_path_buf())
        }
    }

    fn exists(&self, rel: &RelPath) -> Error {
        Error::Exists {
            path: self.label_of(rel),
        }
    }

    /// The error for a resolution of `rel` that failed at component `skip + f.index`.
    fn failed(&self, rel: &RelPath, skip: usize, f: Failed) -> Error {
        let path = self.label_of(rel);
        let end = (skip + f.index + 1).min(rel.names().len());
        let at = self.label.join(join(&rel.names()[..end]));
        match f.step {
            Step::Missing => Error::NotFound { path, at },
            Step::Symlink => Error::Symlink { path, at },
            Step::NotDir(found) => Error::NotADirectory { path, at, found },
            Step::Io(op, e) => Error::io(op, at, e),
        }
    }
}

fn io_error(op: &'static str, path: PathBuf, source: std::io::Error) -> Error {
    Error::Io { op, path, source }
}

/// An unnamed file from [`Dir::create_tmpfile`]: write it and set its metadata through
/// [`TmpFile::file`], then [`publish`](TmpFile::publish) it. Dropped unpublished, it vanishes.
#[derive(Debug)]
pub struct TmpFile {
    file: File,
}

impl TmpFile {
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Gives the file the name `rel` beneath `dir` (`linkat`, which never replaces:
    /// [`Error::Exists`] if the name is taken) and returns it.
    pub fn publish(self, dir: &Dir, rel: &RelPath) -> Result<File> {
        dir.with_parent(rel, "publish", |parent, name| {
            let res = rustix::fs::linkat(
                &self.file,
                "",
                parent,
                name.as_os_str(),
                AtFlags::EMPTY_PATH,
            )
            .or_else(|e| match e {
                // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; without it the kernel says
                // ENOENT, and open(2)'s documented way is the fd's /proc link.
                Errno::NOENT => {
                    let link = format!("/proc/self/fd/{}", self.file.as_raw_fd());
                    let flags = AtFlags::SYMLINK_FOLLOW;
                    rustix::fs::linkat(CWD, link.as_str(), parent, name.as_os_str(), flags)
                }
                e => Err(e),
            });
            match res {
                Ok(()) => Ok(self.file),
                Err(Errno::EXIST) => Err(dir.exists(rel)),
                Err(e) => Err(Error::io("publish", dir.label_of(rel), e)),
            }
        })
    }
}
