//! The engine's error type.
//!
//! Rules (after rustic_core's `error.rs`): every variant's message says what was wrong and,
//! where the user can act, what to do; lower-level errors are kept as `source` so `{:#}`-style
//! chains still show the OS or store detail; no variant carries secret material.

use std::path::PathBuf;

use rbackup_crypto::CryptoError;
use rbackup_store::StoreError;

/// Everything that can go wrong in the engine.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The object store failed.
    #[error(transparent)]
    Store(#[from] StoreError),

    /// A cryptographic check failed (passphrase policy, tampered data, bad key file).
    #[error(transparent)]
    Crypto(#[from] CryptoError),

    /// The passphrase does not open any key file of the machine.
    #[error(
        "the passphrase does not open machine {machine}: check that you use the passphrase \
         saved when this machine was registered"
    )]
    WrongPassphrase {
        /// The machine id.
        machine: String,
    },

    /// No vault at the URL.
    #[error("no rbackup vault at {url}: create one with `rbackup vault create {url}`")]
    NotAVault {
        /// Where we looked.
        url: String,
    },

    /// `vault create` on a URL that already holds a vault.
    #[error(
        "{url} already holds an rbackup vault; use `rbackup vault credentials` for new credentials"
    )]
    VaultExists {
        /// The vault URL.
        url: String,
    },

    /// A format version this release cannot read.
    #[error(
        "{what} has format version {found}, but this rbackup reads version {supported}: upgrade rbackup"
    )]
    UnsupportedFormat {
        /// Which object.
        what: String,
        /// Version found.
        found: u32,
        /// Version we read.
        supported: u32,
    },

    /// The machine id is not registered in the vault.
    #[error(
        "machine {machine} is not registered in vault {vault}: check the id with `rbackup recovery-points` on that machine, or register it"
    )]
    MachineNotFound {
        /// The machine id.
        machine: String,
        /// The vault URL.
        vault: String,
    },

    /// Vault credentials that are corrupted, forged or superseded.
    #[error("Invalid vault credentials provided: {reason}")]
    InvalidCredentials {
        /// Why.
        reason: String,
    },

    /// Vault credentials older than their validity.
    #[error(
        "Vault credentials file provided has expired (it was valid until {expired_at}): \
         download new ones with `rbackup vault credentials <URL> --out FILE`"
    )]
    CredentialsExpired {
        /// When they stopped being valid.
        expired_at: String,
    },

    /// Stored data that decrypted but does not parse, or does not match its id.
    #[error("{what} is corrupt: {detail}; run `rbackup check --read-data` to see what is affected")]
    Corrupt {
        /// Which object.
        what: String,
        /// What is wrong.
        detail: String,
    },

    /// A backup source that does not exist or cannot be read at all.
    #[error("cannot back up {}: {source}", path.display())]
    Source {
        /// The path given.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },

    /// A local file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The local path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },

    /// The requested recovery point does not exist.
    #[error("no recovery point {id} on this machine: list them with `rbackup recovery-points`")]
    RecoveryPointNotFound {
        /// What was asked for.
        id: String,
    },

    /// A prefix that names more than one recovery point.
    #[error("recovery point prefix {id} is ambiguous: give more digits")]
    AmbiguousRecoveryPoint {
        /// What was asked for.
        id: String,
    },

    /// The machine has no recovery point yet.
    #[error("this machine has no recovery points yet: run `rbackup backup` first")]
    NoRecoveryPoints,

    /// A limit of the MARS model was reached.
    #[error("{0}")]
    Limit(String),

    /// Not enough local space (cache or recovery folder).
    #[error("{0}")]
    NoSpace(String),

    /// Invalid arguments passed through the library API.
    #[error("{0}")]
    Invalid(String),

    /// A worker thread panicked or the runtime went away.
    #[error("internal error: {0}")]
    Internal(String),

    /// A cache, recovery or scratch folder that another local user could change, refused
    /// before anything was written there (see `workdir.rs`).
    #[error(
        "{} cannot be used as the {role}: {risk} (owner uid {owner}, mode {mode:04o}); \
         it must belong to this user or root, and nobody else may write to it unless it has \
         the sticky bit",
        path.display()
    )]
    UnsafeFolder {
        /// The folder refused.
        path: PathBuf,
        /// What it was to be used for.
        role: ScratchFolder,
        /// Its owner.
        owner: u32,
        /// Its permission bits (with set-id and sticky bits).
        mode: u32,
        /// Why it was refused.
        risk: FolderRisk,
    },
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

impl EngineError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> EngineError {
        EngineError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(what: impl Into<String>, detail: impl std::fmt::Display) -> EngineError {
        EngineError::Corrupt {
            what: what.into(),
            detail: detail.to_string(),
        }
    }
}

/// Shorthand for engine results.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
