//! Stopping a restore early, and naming the cause of each failure.
//!
//! A full file system fails every following file the same way, so the first "no space" stops
//! the restore (one cause reported, not one per file); so does the embedder's [`Cancel`].
//! Workers look at [`Stop::is_set`] before each file or pack.

use std::io;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use rbackup_beneath::Error as FsError;

use crate::backup::Cancel;
use crate::report::{FailureCause, RestoreStop, StopCause};

/// Shared by the fetch and apply workers.
#[derive(Debug, Default)]
pub(crate) struct Stop {
    cancel: Option<Cancel>,
    full: AtomicBool,
    /// Where space ran out first.
    at: Mutex<Option<String>>,
}

impl Stop {
    pub(crate) fn new(cancel: Option<Cancel>) -> Stop {
        Stop {
            cancel,
            ..Stop::default()
        }
    }

    /// Whether workers should stop taking new work.
    pub(crate) fn is_set(&self) -> bool {
        self.full.load(Ordering::SeqCst) || self.cancel.as_ref().is_some_and(Cancel::is_cancelled)
    }

    /// Notes a failure of `cause` on the file system of `place`: a full one stops the restore.
    pub(crate) fn note(&self, cause: FailureCause, place: &Path) {
        if cause != FailureCause::NoSpace {
            return;
        }
        let mut at = self.at.lock().unwrap_or_else(|p| p.into_inner());
        at.get_or_insert_with(|| place.display().to_string());
        self.full.store(true, Ordering::SeqCst);
    }

    /// Why the restore stopped, if it did.
    pub(crate) fn outcome(&self) -> Option<RestoreStop> {
        let at = self.at.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match at {
            Some(path) => Some(RestoreStop {
                cause: StopCause::NoSpace,
                path,
            }),
            None if self.is_set() => Some(RestoreStop {
                cause: StopCause::Cancelled,
                path: String::new(),
            }),
            None => None,
        }
    }
}

/// The kind of cause of a local file-system failure.
pub(crate) fn fs_cause(e: &FsError) -> FailureCause {
    match e {
        FsError::Io { source, .. } => io_cause(source),
        _ => FailureCause::InTheWay,
    }
}

/// The kind of cause of a local I/O error.
pub(crate) fn io_cause(e: &io::Error) -> FailureCause {
    match e.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT) => FailureCause::NoSpace,
        Some(libc::EACCES | libc::EPERM) => FailureCause::PermissionDenied,
        Some(libc::EROFS) => FailureCause::ReadOnly,
        Some(libc::ENOTDIR | libc::EISDIR | libc::ELOOP | libc::EEXIST) => FailureCause::InTheWay,
        _ => FailureCause::Io,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_full_file_system_stops_and_is_the_one_reported() {
        let stop = Stop::new(None);
        stop.note(FailureCause::PermissionDenied, Path::new("/t"));
        assert!(!stop.is_set() && stop.outcome().is_none());
        stop.note(FailureCause::NoSpace, Path::new("/t"));
        stop.note(FailureCause::NoSpace, Path::new("/recovery"));
        assert!(stop.is_set());
        let out = stop.outcome().unwrap();
        assert_eq!((out.cause, out.path.as_str()), (StopCause::NoSpace, "/t"));
    }

    #[test]
    fn a_cancel_stops_without_a_place() {
        let cancel = Cancel::default();
        let stop = Stop::new(Some(cancel.clone()));
        assert!(!stop.is_set());
        cancel.cancel();
        assert_eq!(stop.outcome().map(|o| o.cause), Some(StopCause::Cancelled));
    }

    #[test]
    fn errno_kinds_are_named() {
        let of = |n| io_cause(&io::Error::from_raw_os_error(n));
        assert_eq!(of(libc::ENOSPC), FailureCause::NoSpace);
        assert_eq!(of(libc::EDQUOT), FailureCause::NoSpace);
        assert_eq!(of(libc::EACCES), FailureCause::PermissionDenied);
        assert_eq!(of(libc::EROFS), FailureCause::ReadOnly);
        assert_eq!(of(libc::EIO), FailureCause::Io);
        let in_the_way = FsError::Symlink {
            path: "/t/a".into(),
            at: "/t/a".into(),
        };
        assert_eq!(fs_cause(&in_the_way), FailureCause::InTheWay);
    }
}
