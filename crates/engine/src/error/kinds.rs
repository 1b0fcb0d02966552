//! The small enums that [`EngineError`](super::EngineError) variants carry: where space ran
//! out, what was wrong with a PIN or credentials, which scratch folder, what risk a folder
//! poses, and internal failures.

/// Where local space ran out ([`EngineError::NoSpace`](super::EngineError::NoSpace)).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpacePlace {
    /// The cache dir, which must have free space of at least
    /// [`CACHE_PERCENT`](crate::CACHE_PERCENT)% of the data backed up (MARS).
    Cache {
        /// Bytes under the sources; `needed` is `CACHE_PERCENT`% of it.
        source_bytes: u64,
    },
    /// The recovery folder, where a restore stages the data before moving it into place.
    RecoveryFolder {
        /// Free bytes on its file system.
        free: u64,
        /// Of those, bytes reserved by other restores in progress.
        reserved_by_others: u64,
    },
    /// The restore target, when it is on another file system than the recovery folder (on
    /// the same one, files move by rename and the recovery folder's check covers it).
    /// `needed` is what will be written there, after the overwrite decision, each file
    /// rounded up to the file system's block size.
    Target,
}

impl std::fmt::Display for SpacePlace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SpacePlace::Cache { .. } => "the cache dir",
            SpacePlace::RecoveryFolder { .. } => "the recovery folder",
            SpacePlace::Target => "the restore target",
        })
    }
}

/// Why a security PIN was refused ([`EngineError::PinRefused`](super::EngineError::PinRefused)).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum PinProblem {
    /// The operation needs a PIN and none was given.
    #[error("this operation needs the vault's security PIN")]
    Required,
    /// The vault has no PIN in force (none was issued, or it was used).
    #[error("the vault has no PIN in force (none was issued since the last one was used)")]
    NoneIssued,
    /// Not the PIN in force.
    #[error("it is not the PIN in force")]
    Wrong,
    /// The PIN in force, but past its validity.
    #[error("it expired at {expired_at}")]
    Expired {
        /// When it stopped being valid, by the vault's own record.
        expired_at: jiff::Timestamp,
    },
}

/// Why vault credentials are invalid ([`EngineError::InvalidCredentials`](super::EngineError::InvalidCredentials)).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum CredentialsProblem {
    /// The file does not parse as a credentials file.
    #[error("the file is not a vault credentials file: {0}")]
    NotCredentials(#[source] serde_json::Error),
    /// A credentials file of a format this build does not know.
    #[error("unknown format {0:?}")]
    UnknownFormat(String),
    /// Credentials of another vault.
    #[error("the file belongs to another vault")]
    OtherVault,
    /// Credentials superseded by newer ones: only the newest are valid.
    #[error("only the newest credentials downloaded for a vault are valid")]
    Superseded,
}

/// How an engine task failed ([`EngineError::Internal`](super::EngineError::Internal)).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum InternalFailure {
    /// A tokio task panicked or was cancelled.
    #[error("{0}")]
    Task(#[source] tokio::task::JoinError),
    /// A worker thread panicked.
    #[error("a thread panicked")]
    ThreadPanicked,
    /// The next stage of a pipeline went away (its own error is the real one).
    #[error("the next stage stopped")]
    StageStopped,
}

/// What a scratch folder was to be used for.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScratchFolder {
    /// The cache dir (metadata cache and pack staging of a backup).
    Cache,
    /// The recovery folder (restore staging).
    Recovery,
    /// The scratch dir of a prune (repacking).
    Prune,
}

impl std::fmt::Display for ScratchFolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ScratchFolder::Cache => "cache folder",
            ScratchFolder::Recovery => "recovery folder",
            ScratchFolder::Prune => "prune scratch folder",
        })
    }
}

/// Why a scratch folder was refused.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FolderRisk {
    /// It belongs to a user other than us (`us`) and root.
    OwnedByOther {
        /// Our effective uid.
        us: u32,
    },
    /// Its group or others may write to it and it lacks the sticky bit.
    WritableByOthers,
    /// It is not a directory (a symlink or file where our folder should be).
    NotADirectory,
}

impl std::fmt::Display for FolderRisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FolderRisk::OwnedByOther { us } => write!(
                f,
                "it belongs to another user, not to this one (uid {us}) or root"
            ),
            FolderRisk::WritableByOthers => {
                f.write_str("other users may write to it and it lacks the sticky bit")
            }
            FolderRisk::NotADirectory => f.write_str("it is not a directory"),
        }
    }
}
