//! Metadata read and set on open file descriptors, never by path.
//!
//! Every setter takes an fd the caller opened through a [`Dir`](crate::Dir) (a file or a
//! directory), so the object changed is the object opened: a name swapped for a symlink
//! after the open changes nothing here.

use std::fmt;

use rustix::fd::AsFd;
use rustix::fs::{AtFlags, FileType, Gid, Mode, StatxFlags, Timespec, Timestamps, Uid};

use crate::error::Error;

/// The kind of object found at a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    Unknown,
}

impl FileKind {
    pub(crate) fn from_mode(mode: u32) -> FileKind {
        FileKind::from_file_type(FileType::from_raw_mode(mode))
    }

    pub(crate) fn from_file_type(t: FileType) -> FileKind {
        match t {
            FileType::RegularFile => FileKind::File,
            FileType::Directory => FileKind::Dir,
            FileType::Symlink => FileKind::Symlink,
            FileType::Fifo => FileKind::Fifo,
            FileType::Socket => FileKind::Socket,
            FileType::CharacterDevice => FileKind::CharDevice,
            FileType::BlockDevice => FileKind::BlockDevice,
            _ => FileKind::Unknown,
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::File => "a regular file",
            FileKind::Dir => "a directory",
            FileKind::Symlink => "a symbolic link",
            FileKind::Fifo => "a FIFO",
            FileKind::Socket => "a socket",
            FileKind::CharDevice => "a character device",
            FileKind::BlockDevice => "a block device",
            FileKind::Unknown => "an object of unknown type",
        })
    }
}

/// What `statx` says about one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Meta {
    pub kind: FileKind,
    /// Permission bits, set-id and sticky bits (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub nlink: u32,
    pub ino: u64,
    /// The device as `(major, minor)`.
    pub dev: (u32, u32),
    /// Nanoseconds since the epoch.
    pub mtime_ns: i64,
}

impl Meta {
    pub(crate) fn from_statx(s: &rustix::fs::Statx) -> Meta {
        Meta {
            kind: FileKind::from_mode(u32::from(s.stx_mode)),
            mode: u32::from(s.stx_mode) & 0o7777,
            uid: s.stx_uid,
            gid: s.stx_gid,
            size: s.stx_size,
            nlink: s.stx_nlink,
            ino: s.stx_ino,
            dev: (s.stx_dev_major, s.stx_dev_minor),
            mtime_ns: s.stx_mtime.tv_sec * 1_000_000_000 + i64::from(s.stx_mtime.tv_nsec),
        }
    }
}

pub(crate) const STATX_MASK: StatxFlags = StatxFlags::BASIC_STATS;

/// The metadata of the open object `fd`.
pub fn metadata(fd: impl AsFd) -> std::io::Result<Meta> {
    let s = rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, STATX_MASK)?;
    Ok(Meta::from_statx(&s))
}

/// `fchmod`: sets permission, set-id and sticky bits (`mode & 0o7777`) on the open object.
pub fn set_mode(fd: impl AsFd, mode: u32) -> std::io::Result<()> {
    Ok(rustix::fs::fchmod(fd, Mode::from_raw_mode(mode & 0o7777))?)
}

/// `fchown`: sets owner and group (`None` leaves one as it is). The kernel clears set-id
/// bits on a chown, so set the mode after the owner.
pub fn set_owner(fd: impl AsFd, uid: Option<u32>, gid: Option<u32>) -> std::io::Result<()> {
    // `u32::MAX` is the kernel's "leave as is" (-1), which a stored id must not silently mean.
    if uid == Some(u32::MAX) || gid == Some(u32::MAX) {
        return Err(std::io::Error::from(rustix::io::Errno::INVAL));
    }
    let uid = uid.map(Uid::from_raw);
    let gid = gid.map(Gid::from_raw);
    Ok(rustix::fs::fchown(fd, uid, gid)?)
}

/// `futimens`: sets access and modification times, in nanoseconds since the epoch (`None`
/// leaves one as it is).
pub fn set_times(
    fd: impl AsFd,
    atime_ns: Option<i64>,
    mtime_ns: Option<i64>,
) -> std::io::Result<()> {
    let spec = |t: Option<i64>| match t {
        Some(ns) => timespec(ns),
        None => Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT as _,
        },
    };
    let times = Timestamps {
        last_access: spec(atime_ns),
        last_modification: spec(mtime_ns),
    };
    Ok(rustix::fs::futimens(fd, &times)?)
}

/// Nanoseconds since the epoch as a `Timespec`.
pub(crate) fn timespec(ns: i64) -> Timespec {
    Timespec {
        tv_sec: ns.div_euclid(1_000_000_000),
        tv_nsec: ns.rem_euclid(1_000_000_000) as _,
    }
}

/// Maps a `statx` of a name to the crate's "not found" or I/O error.
pub(crate) fn stat_error(path: std::path::PathBuf, e: rustix::io::Errno) -> Error {
    if e == rustix::io::Errno::NOENT {
        Error::NotFound {
            at: path.clone(),
            path,
        }
    } else {
        Error::io("stat", path, e)
    }
}
