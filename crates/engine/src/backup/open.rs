//! The backup reads what it classified.
//!
//! The walker classifies each entry with a `statx` of its name, then opens it. Between the
//! two, a local user who can write to the source can swap the entry: for a symlink to
//! `/etc/shadow` (a root backup would store it under the user's path), for a FIFO (the open
//! or the read would hang the backup), or for another file. So every open here is relative
//! to the already opened parent directory, with `O_NOFOLLOW | O_NONBLOCK`, and the open fd is
//! compared with the classification (device, inode, type) before a byte is read. A mismatch is
//! [`OpenError::Changed`] with the reason; the walker reports the entry as skipped.
//!
//! `O_NONBLOCK` only guards the open: a FIFO opened for reading without a writer returns at
//! once, and the type check then refuses it. For the regular file that passes the check, the
//! flag is cleared before reading.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, StatxFlags};
use rustix::io::Errno;

use crate::classify::Probe;

/// Why an entry was not opened.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// It is no longer what was classified; the reason says what it is now.
    Changed(String),
    /// Any other failure (`NotFound` when it vanished).
    Io(io::Error),
}

impl From<Errno> for OpenError {
    fn from(e: Errno) -> Self {
        OpenError::Io(e.into())
    }
}

/// Opens the directory `name` beneath `at`, checked against its classification.
pub(crate) fn open_dir(
    at: BorrowedFd<'_>,
    name: &OsStr,
    probe: &Probe,
) -> Result<OwnedFd, OpenError> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = openat(at, name, flags)?;
    check(&fd, probe, FileType::Directory, "directory")?;
    Ok(fd)
}

/// Opens the regular file `name` beneath `at` for reading, checked against its
/// classification, without updating its atime where the kernel lets us (owner or root), so a
/// backup does not dirty every inode it reads.
pub(crate) fn open_file(
    at: BorrowedFd<'_>,
    name: &OsStr,
    probe: &Probe,
) -> Result<File, OpenError> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY;
    let flags = flags | OFlags::CLOEXEC;
    let fd = match openat(at, name, flags | OFlags::NOATIME) {
        Err(OpenError::Io(e)) if e.kind() == io::ErrorKind::PermissionDenied => {
            openat(at, name, flags)?
        }
        r => r?,
    };
    check(&fd, probe, FileType::RegularFile, "file")?;
    let fl = rustix::fs::fcntl_getfl(&fd)?;
    rustix::fs::fcntl_setfl(&fd, fl - OFlags::NONBLOCK)?;
    Ok(File::from(fd))
}

/// The names in the open directory `dir`, sorted, without `.` and `..`.
pub(crate) fn list(dir: &OwnedFd) -> io::Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(name);
        }
    }
    names.sort_unstable();
    Ok(names)
}

/// Opens a directory given by path: the parents of the sources, which the user named and
/// which are the walk's trust anchor (symlinks in them are followed, as for any path given).
pub(crate) fn open_path(path: &Path) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    Ok(rustix::fs::open(path, flags, Mode::empty())?)
}

fn openat(at: BorrowedFd<'_>, name: &OsStr, flags: OFlags) -> Result<OwnedFd, OpenError> {
    match rustix::fs::openat(at, name, flags, Mode::empty()) {
        Ok(fd) => Ok(fd),
        // A symlink (ELOOP; ENOTDIR with O_DIRECTORY), a non-directory where a directory was,
        // a socket (ENXIO): say what is there now rather than the errno.
        Err(e @ (Errno::LOOP | Errno::NOTDIR | Errno::NXIO)) => Err(match kind_now(at, name) {
            Some(kind) => OpenError::Changed(changed(&format!("it is now {kind}"))),
            None => OpenError::Io(e.into()),
        }),
        Err(e) => Err(e.into()),
    }
}

/// Refuses an open fd that is not the object classified: another type, or another inode.
fn check(fd: &OwnedFd, probe: &Probe, want: FileType, what: &str) -> Result<(), OpenError> {
    let st = rustix::fs::statx(fd, c"", AtFlags::EMPTY_PATH, StatxFlags::BASIC_STATS)?;
    let found = FileType::from_raw_mode(st.stx_mode.into());
    if found != want {
        let now = format!("it is now {}", kind_name(found));
        return Err(OpenError::Changed(changed(&now)));
    }
    if (st.stx_dev_major, st.stx_dev_minor) != probe.dev || st.stx_ino != probe.ino {
        let now = format!("it was replaced by another {what}");
        return Err(OpenError::Changed(changed(&now)));
    }
    Ok(())
}

fn changed(now: &str) -> String {
    format!("changed during the backup ({now}); not read, not backed up")
}

fn kind_now(at: BorrowedFd<'_>, name: &OsStr) -> Option<&'static str> {
    let flags = AtFlags::SYMLINK_NOFOLLOW | AtFlags::NO_AUTOMOUNT;
    let st = rustix::fs::statx(at.as_fd(), name, flags, StatxFlags::TYPE).ok()?;
    Some(kind_name(FileType::from_raw_mode(st.stx_mode.into())))
}

fn kind_name(t: FileType) -> &'static str {
    match t {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link, which is never followed",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        _ => "an object of unknown type",
    }
}

/// A name as the `OsStr` the system calls take.
pub(crate) fn os(name: &[u8]) -> &OsStr {
    OsStr::from_bytes(name)
}
