//! The one error type of the crate.

use std::io;
use std::path::PathBuf;

use crate::meta::FileKind;

/// What went wrong, where. `path` is the path the caller asked for (the [`Dir`](crate::Dir)'s
/// label joined with the relative path); `at` is the prefix of it that ends in the component
/// found in the way. Whatever stands in the way is left as it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A component is a symbolic link. It was not followed.
    #[error("{}: {} is a symbolic link; not followed", .path.display(), .at.display())]
    Symlink { path: PathBuf, at: PathBuf },
    /// A component that must be a directory is something else.
    #[error("{}: {} is {found}, not a directory", .path.display(), .at.display())]
    NotADirectory {
        path: PathBuf,
        at: PathBuf,
        found: FileKind,
    },
    /// A component does not exist.
    #[error("{}: {} does not exist", .path.display(), .at.display())]
    NotFound { path: PathBuf, at: PathBuf },
    /// A file was to be opened and something other than a regular file is there.
    #[error("{}: is {found}, not a regular file", .path.display())]
    NotAFile { path: PathBuf, found: FileKind },
    /// An exclusive creation (or a no-replace rename or publish) found the name taken.
    #[error("{}: already exists", .path.display())]
    Exists { path: PathBuf },
    /// A replacing rename found a directory at the destination; it was left alone.
    #[error("{}: is a directory; not replaced", .path.display())]
    WouldReplaceDirectory { path: PathBuf },
    /// A replacing rename was asked to move a directory, which could replace an empty
    /// directory at the destination; only non-directories move in that mode.
    #[error("{}: is a directory; only non-directories move with replacement", .path.display())]
    SourceIsDirectory { path: PathBuf },
    /// Any other failure of the system call `op`. Here `path` is the object the call failed
    /// on: during a resolution, the prefix that ends in the component it failed at.
    #[error("{}: cannot {op}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// The OS error number behind an [`Error::Io`], so a caller can recognise `EXDEV` (rename
    /// across file systems) or `EOPNOTSUPP` (no `O_TMPFILE` on this file system).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// The path the failed operation was asked for.
    pub fn path(&self) -> &std::path::Path {
        match self {
            Error::Symlink { path, .. }
            | Error::NotADirectory { path, .. }
            | Error::NotFound { path, .. }
            | Error::NotAFile { path, .. }
            | Error::Exists { path }
            | Error::WouldReplaceDirectory { path }
            | Error::SourceIsDirectory { path }
            | Error::Io { path, .. } => path,
        }
    }

    pub(crate) fn io(op: &'static str, path: PathBuf, e: rustix::io::Errno) -> Error {
        Error::Io {
            op,
            path,
            source: e.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
