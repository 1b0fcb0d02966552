//! The one error type of the crate, and the mapping from `std::io` and `object_store` errors.

use std::io;

/// Everything that can go wrong when talking to a vault's storage.
///
/// Callers usually only need [`StoreError::is_not_found`] and the `AlreadyExists` variant (the
/// outcome of a lost [`PutMode::Create`](crate::PutMode::Create) race); the other variants exist
/// so that the message shown to a person says what to do.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object does not exist.
    #[error("object {path:?} not found in the vault")]
    NotFound {
        /// The key that was asked for.
        path: String,
    },

    /// A [`PutMode::Create`](crate::PutMode::Create) found the key already taken; the existing
    /// object was left untouched.
    #[error("object {path:?} already exists in the vault (it was left unchanged)")]
    AlreadyExists {
        /// The key that was asked for.
        path: String,
    },

    /// The vault URL could not be understood.
    #[error(
        "invalid vault URL {url:?}: {reason}; accepted forms are file:///abs/path or /abs/path \
         (or a relative path), memory://[name], s3://bucket/prefix, az://container/prefix, \
         gs://bucket/prefix"
    )]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What was wrong with it.
        reason: String,
    },

    /// An object key broke the key rules.
    #[error(
        "invalid object key {path:?}: keys are relative '/'-separated paths with no leading or \
         trailing '/', no empty, '.' or '..' segments, no segment starting with '.tmp-', \
         and no control characters or backslashes"
    )]
    InvalidPath {
        /// The offending key.
        path: String,
    },

    /// A ranged read asked for bytes outside the object. Ranges are never clamped, because a
    /// short read of a pack would otherwise look like a smaller, valid blob.
    #[error(
        "byte range {start}..{end} of object {path:?} is outside the object, which is {size} \
         bytes long (the object may be truncated, or the index pointing into it is stale)"
    )]
    InvalidRange {
        /// The key that was read.
        path: String,
        /// Requested start offset.
        start: u64,
        /// Requested end offset (exclusive).
        end: u64,
        /// The object's actual size.
        size: u64,
    },

    /// The feature or URL scheme is not available in this build.
    #[error("not supported: {what}")]
    Unsupported {
        /// What was asked for, and what to do instead.
        what: String,
    },

    /// The operating system refused access.
    #[error(
        "permission denied on {path:?}: {source}; check the ownership and permissions of the \
         vault folder (the user running rbackup must be able to read, write and create files \
         in it)"
    )]
    PermissionDenied {
        /// The file or key concerned.
        path: String,
        /// The underlying error.
        source: io::Error,
    },

    /// The disk holding the vault is full, or a quota is exhausted.
    #[error(
        "no space left for {path:?}: {source}; the vault's disk is full (or the user's quota \
         is exhausted): free space or move the vault, then run again"
    )]
    NoSpace {
        /// The file or key concerned.
        path: String,
        /// The underlying error.
        source: io::Error,
    },

    /// Any other local I/O error.
    #[error("I/O error on {path:?}: {source}")]
    Io {
        /// The file or key concerned.
        path: String,
        /// The underlying error.
        source: io::Error,
    },

    /// Any other error from a storage backend (network, credentials, service errors).
    #[error("storage backend error on {path:?}: {source}")]
    Backend {
        /// The key concerned.
        path: String,
        /// The underlying error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The bucket (S3, GCS) or container (Azure) named in a cloud vault URL does not exist.
    #[error(
        "bucket or container {bucket:?} of vault {url} does not exist at {endpoint}: create it \
         (rbackup does not create buckets), or fix the vault URL or the endpoint"
    )]
    BucketNotFound {
        /// The vault URL.
        url: String,
        /// The bucket or container name.
        bucket: String,
        /// The service endpoint that was asked.
        endpoint: String,
    },

    /// The cloud store (or the proxy) refused the credentials, or they do not allow the
    /// operation.
    #[error("the store refused the credentials for vault {url} ({detail}); {hint}")]
    AuthFailed {
        /// The vault URL.
        url: String,
        /// What the service said.
        detail: String,
        /// Where the credentials come from and what to check.
        hint: String,
    },

    /// No connection could be made to the cloud endpoint (refused, no route, DNS failure,
    /// proxy failure).
    #[error(
        "cannot reach {endpoint} for vault {url} ({detail}): check the network, the proxy \
         setting, and the endpoint ({hint})"
    )]
    Unreachable {
        /// The vault URL.
        url: String,
        /// The service endpoint.
        endpoint: String,
        /// The connection error.
        detail: String,
        /// Which settings choose the endpoint.
        hint: String,
    },

    /// A request to the cloud endpoint did not finish within the request timeout, retries
    /// included.
    #[error(
        "a request to {endpoint} for vault {url} timed out ({detail}): the network or the proxy \
         may be down, or too slow for the request timeout (a throttled upload of a large pack \
         needs a longer one)"
    )]
    TimedOut {
        /// The vault URL.
        url: String,
        /// The service endpoint.
        endpoint: String,
        /// The timeout error.
        detail: String,
    },

    /// The store accepted the credentials but refused to delete or overwrite an object: they
    /// may create and read objects only, as a registered machine's append-only credentials
    /// should (an S3 policy denying `s3:DeleteObject`, an Azure SAS without `d` and `w`). The
    /// object was left as it was.
    #[error(
        "the store refused to {operation} object {path:?} in vault {url} ({detail}): these \
         credentials may create and read objects but not delete or overwrite them (append-only \
         credentials); the object was left unchanged. Deleting or replacing objects (retention, \
         cleanup) needs the vault owner's delete-capable credentials, on an admin host"
    )]
    OperationRefused {
        /// The vault URL.
        url: String,
        /// The key concerned.
        path: String,
        /// What was refused.
        operation: RefusedOperation,
        /// What the service said.
        detail: String,
    },

    /// A cloud vault could not be configured from the environment and the options.
    #[error("cannot configure vault {url}: {reason}")]
    Config {
        /// The vault URL.
        url: String,
        /// What is missing or wrong, and how to set it.
        reason: String,
    },
}

/// What the store refused in [`StoreError::OperationRefused`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedOperation {
    /// Deleting an object.
    Delete,
    /// Replacing an existing object ([`PutMode::Overwrite`](crate::PutMode::Overwrite)).
    Overwrite,
}

impl std::fmt::Display for RefusedOperation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RefusedOperation::Delete => "delete",
            RefusedOperation::Overwrite => "overwrite",
        })
    }
}

impl StoreError {
    /// True for [`StoreError::OperationRefused`]: append-only credentials met a delete or an
    /// overwrite.
    pub fn is_refused(&self) -> bool {
        matches!(self, StoreError::OperationRefused { .. })
    }

    /// True for [`StoreError::NotFound`]: the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }

    /// True for [`StoreError::AlreadyExists`]: a `Create` lost to an existing object.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, StoreError::AlreadyExists { .. })
    }

    /// Maps an I/O error met while reading the object `key` from the file `file`: a missing
    /// file means a missing object (reported by key); anything else names the file.
    pub(crate) fn from_read_io(key: &str, file: &str, err: io::Error) -> StoreError {
        if is_missing(&err) {
            return StoreError::NotFound { path: key.into() };
        }
        StoreError::from_write_io(file, err)
    }

    /// Maps an I/O error met while writing `path`. A missing file here is not a missing
    /// object (it is a vanished directory, say), so it stays an `Io` error.
    pub(crate) fn from_write_io(path: &str, err: io::Error) -> StoreError {
        let path = path.to_string();
        if is_no_space(&err) {
            StoreError::NoSpace { path, source: err }
        } else if err.kind() == io::ErrorKind::PermissionDenied {
            StoreError::PermissionDenied { path, source: err }
        } else {
            StoreError::Io { path, source: err }
        }
    }

    /// Maps an `object_store` error met while reading `key`: besides `NotFound`, an OS error
    /// saying the file or a directory on its way is missing, or that the key names a directory,
    /// also means a missing object (object_store's local backend reports these as generic
    /// errors).
    pub(crate) fn from_object_store_read(key: &str, err: object_store::Error) -> StoreError {
        let missing = io_kind_in_chain(&err).is_some_and(|k| {
            use io::ErrorKind::{IsADirectory, NotADirectory, NotFound};
            matches!(k, NotFound | NotADirectory | IsADirectory)
        });
        if missing {
            return StoreError::NotFound { path: key.into() };
        }
        StoreError::from_object_store(key, err)
    }

    /// Maps an `object_store` error concerning the object `key`.
    pub(crate) fn from_object_store(key: &str, err: object_store::Error) -> StoreError {
        let path = key.to_string();
        match err {
            object_store::Error::NotFound { .. } => StoreError::NotFound { path },
            object_store::Error::AlreadyExists { .. } => StoreError::AlreadyExists { path },
            other => match io_kind_in_chain(&other) {
                Some(kind) if kind == io::ErrorKind::PermissionDenied => {
                    let source = io::Error::new(kind, other);
                    StoreError::PermissionDenied { path, source }
                }
                Some(kind) if is_no_space_kind(kind) => {
                    let source = io::Error::new(kind, other);
                    StoreError::NoSpace { path, source }
                }
                _ => StoreError::Backend {
                    path,
                    source: Box::new(other),
                },
            },
        }
    }
}

/// A missing file, or a missing directory on the way to it (a file where a directory should be).
pub(crate) fn is_missing(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

fn is_no_space_kind(kind: io::ErrorKind) -> bool {
    matches!(
        kind,
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

fn is_no_space(err: &io::Error) -> bool {
    let raw = rustix::io::Errno::from_io_error(err);
    is_no_space_kind(err.kind())
        || raw == Some(rustix::io::Errno::NOSPC)
        || raw == Some(rustix::io::Errno::DQUOT)
}

/// The kind of the first `io::Error` in `err`'s source chain, if any: object_store's local
/// backend wraps the OS error several layers deep.
fn io_kind_in_chain(err: &(dyn std::error::Error + 'static)) -> Option<io::ErrorKind> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(if is_no_space(io) {
                io::ErrorKind::StorageFull
            } else {
                io.kind()
            });
        }
        current = e.source();
    }
    None
}

/// A failed `spawn_blocking` (the blocking closure panicked or the runtime is shutting down).
pub(crate) fn join_error(path: &str, err: tokio::task::JoinError) -> StoreError {
    StoreError::Io {
        path: path.to_string(),
        source: io::Error::other(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_kinds_map_to_variants() {
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        assert!(matches!(
            StoreError::from_write_io("k", denied),
            StoreError::PermissionDenied { .. }
        ));
        let full = io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error());
        assert!(matches!(
            StoreError::from_write_io("k", full),
            StoreError::NoSpace { .. }
        ));
        let quota = io::Error::from_raw_os_error(rustix::io::Errno::DQUOT.raw_os_error());
        assert!(matches!(
            StoreError::from_write_io("k", quota),
            StoreError::NoSpace { .. }
        ));
        let missing = io::Error::from(io::ErrorKind::NotFound);
        assert!(StoreError::from_read_io("k", "/v/k", missing).is_not_found());
        let missing = io::Error::from(io::ErrorKind::NotFound);
        assert!(matches!(
            StoreError::from_write_io("k", missing),
            StoreError::Io { .. }
        ));
    }

    #[test]
    fn messages_say_what_to_do() {
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        let msg = StoreError::from_write_io("/srv/vault/x", denied).to_string();
        assert!(msg.contains("permissions of the vault folder"), "{msg}");
        let full = io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error());
        let msg = StoreError::from_write_io("/srv/vault/x", full).to_string();
        assert!(msg.contains("disk is full"), "{msg}");
        let msg = StoreError::InvalidUrl {
            url: "ftp://x".into(),
            reason: "unknown scheme".into(),
        }
        .to_string();
        assert!(msg.contains("file:///abs/path") && msg.contains("s3://bucket/prefix"));
    }

    #[test]
    fn object_store_errors_map() {
        let nf = object_store::Error::NotFound {
            path: "x".into(),
            source: "gone".into(),
        };
        assert!(StoreError::from_object_store("k", nf).is_not_found());
        let ae = object_store::Error::AlreadyExists {
            path: "x".into(),
            source: "there".into(),
        };
        assert!(StoreError::from_object_store("k", ae).is_already_exists());
        let deep = object_store::Error::Generic {
            store: "test",
            source: Box::new(io::Error::from_raw_os_error(
                rustix::io::Errno::NOSPC.raw_os_error(),
            )),
        };
        assert!(matches!(
            StoreError::from_object_store("k", deep),
            StoreError::NoSpace { .. }
        ));
    }
}
