//! The engine's error type.
//!
//! Rules (after rustic_core's `error.rs`):
//! - every variant says *what* went wrong and *where* (the path, object, machine or URL), with
//!   its *figures* as numbers (bytes needed and available, counts, limits), so an embedder can
//!   `match` on it and render it as it likes;
//! - the lower-level error is kept as `source`, so `{:#}`-style chains still show the OS, store
//!   or decoder detail;
//! - no variant gives advice: the engine knows nothing of the command line, so no message names
//!   a command or a flag. What the user should do is the application's to say (the agent's
//!   `advice.rs`); a source-scan test keeps command-line text out of this crate;
//! - no variant carries secret material.

use std::path::PathBuf;
use std::time::Duration;

use rbackup_crypto::{BlobId, CryptoError};
use rbackup_store::StoreError;

use crate::lock::LeaseInfo;

mod corrupt;
mod kinds;
pub use corrupt::CorruptReason;
pub use kinds::{
    CredentialsProblem, FolderRisk, InternalFailure, PinProblem, ScratchFolder, SpacePlace,
};

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

    /// No key file of the machine could be tried: each (and its copy) is damaged or has
    /// refused parameters (the passphrase was not the problem).
    #[error(
        "the key files of machine {machine} are damaged (the passphrase was not tried): all \
         {damaged} key-file objects are damaged or have refused parameters"
    )]
    NoUsableKeyFile {
        /// The machine id.
        machine: String,
        /// Key files skipped.
        damaged: usize,
    },

    /// The machine has no key file in the vault at all.
    #[error("machine {machine} has no key file in the vault")]
    NoKeyFile {
        /// The machine id.
        machine: String,
    },

    /// The passphrase does not open any key file of the machine.
    #[error("the passphrase does not open machine {machine}")]
    WrongPassphrase {
        /// The machine id.
        machine: String,
    },

    /// No vault at the URL.
    #[error("{url} holds no vault")]
    NotAVault {
        /// Where we looked.
        url: String,
    },

    /// Creating a vault on a URL that already holds one.
    #[error("{url} already holds a vault")]
    VaultExists {
        /// The vault URL.
        url: String,
    },

    /// A vault name outside the rules of [`check_vault_name`](crate::check_vault_name).
    #[error(
        "the vault name {name:?} is not valid: a vault name must be 2 to 50 characters long, \
         start with a letter, and contain only letters, numbers and hyphens"
    )]
    InvalidVaultName {
        /// The name given (its first 60 characters).
        name: String,
    },

    /// The vault is read-only (its owner set it so): nothing new may be written into it.
    #[error(
        "vault {url} is read-only (set by {set_by} at {set_at}): it does not {operation} it; \
         restores, checks and listings still work, and its owner can make it active again"
    )]
    VaultReadOnly {
        /// The vault URL.
        url: String,
        /// What was refused (`take backups into`, `take copies into`).
        operation: &'static str,
        /// Who made it read-only.
        set_by: String,
        /// When (RFC 3339).
        set_at: String,
    },

    /// The destination of a copy holds this machine with other master keys (registered there
    /// on its own): copies need the same keys on both sides.
    #[error(
        "machine {machine} in {to} was registered there with other keys, so recovery points \
         cannot be copied into it; copy into a vault where the machine is not registered yet \
         (it is then registered with the same keys)"
    )]
    CopyKeysDiffer {
        /// The machine id.
        machine: String,
        /// The destination vault.
        to: String,
    },

    /// A copy was stopped (cancelled or interrupted) before it finished.
    #[error(
        "the copy was stopped before it finished: {copied} recovery point(s) were copied \
         whole; the {packs} pack(s) uploaded are kept and indexed, so the next copy goes on \
         where this one stopped"
    )]
    CopyStopped {
        /// Recovery points copied whole before the stop.
        copied: usize,
        /// Packs uploaded and indexed.
        packs: u64,
    },

    /// Registering a machine in a vault that already has a machine with that id.
    #[error("vault {vault} already has machine {machine}")]
    MachineExists {
        /// The machine id.
        machine: String,
        /// The vault URL.
        vault: String,
    },

    /// A format version this release cannot read.
    #[error("{what} has format version {found}, but this build reads version {supported}")]
    UnsupportedFormat {
        /// Which object.
        what: String,
        /// Version found.
        found: u32,
        /// Version we read.
        supported: u32,
    },

    /// The machine id is not registered in the vault.
    #[error("machine {machine} is not registered in vault {vault}")]
    MachineNotFound {
        /// The machine id.
        machine: String,
        /// The vault URL.
        vault: String,
    },

    /// Vault credentials that are corrupted, forged or superseded.
    #[error("Invalid vault credentials provided: {problem}")]
    InvalidCredentials {
        /// What is wrong with them.
        #[source]
        problem: CredentialsProblem,
    },

    /// Vault credentials older than their validity.
    #[error("Vault credentials file provided has expired (it was valid until {expired_at})")]
    CredentialsExpired {
        /// When they stopped being valid, by the vault's own record.
        expired_at: jiff::Timestamp,
    },

    /// Stored data that decrypted but does not parse, or does not match its id.
    #[error("{object} is corrupt: {reason}")]
    Corrupt {
        /// Which object (`pack <id>`, `blob <id> in pack <id>`, `index/<id>`, ...).
        object: String,
        /// What is wrong with it.
        #[source]
        reason: CorruptReason,
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

    /// A file-system operation confined beneath a directory (the restore target or the
    /// staging folder) was refused or failed; whatever stood in the way was left alone.
    #[error(transparent)]
    Confined(#[from] rbackup_beneath::Error),

    /// The requested recovery point does not exist.
    #[error("no recovery point {id} on this machine")]
    RecoveryPointNotFound {
        /// What was asked for.
        id: String,
    },

    /// A prefix that names more than one recovery point.
    #[error("recovery point prefix {id} is ambiguous")]
    AmbiguousRecoveryPoint {
        /// What was asked for.
        id: String,
    },

    /// The machine has no recovery point yet.
    #[error("this machine has no recovery points yet")]
    NoRecoveryPoints,

    /// A recovery point that was soft-deleted and whose data a prune has since reclaimed:
    /// only its tombstone is left.
    #[error(
        "recovery point {id} was deleted on {deleted_at} and purged after its soft-delete \
         window: it is gone for good"
    )]
    RecoveryPointPurged {
        /// Its id (hex).
        id: String,
        /// When it was deleted (RFC 3339).
        deleted_at: String,
    },

    /// A recovery point asked to be brought back that is not soft-deleted.
    #[error("recovery point {id} is not deleted")]
    NotDeleted {
        /// Its id (hex).
        id: String,
    },

    /// A critical operation (shortening the soft-delete window, purging at once) without a
    /// valid security PIN.
    #[error("security PIN refused: {problem}")]
    PinRefused {
        /// What is wrong with it.
        problem: PinProblem,
    },

    /// A path asked for in a restore that the recovery point does not hold.
    #[error("{} is not in this recovery point", path.display())]
    PathNotInRecoveryPoint {
        /// The absolute path asked for.
        path: PathBuf,
    },

    /// `latest` asked for with paths, and no recovery point holds them all.
    #[error("no recovery point of this machine holds {}", path.display())]
    NoRecoveryPointHolds {
        /// The first path none holds.
        path: PathBuf,
    },

    /// A file's bytes asked for, and the recovery point has something else at that path.
    #[error("{} is not a file in this recovery point (it is a {kind})", path.display())]
    NotAFile {
        /// The absolute path asked for.
        path: PathBuf,
        /// What it is (`dir`, ...).
        kind: String,
    },

    /// A search pattern that is not a valid glob.
    #[error("bad pattern {pattern:?}: {source}")]
    BadPattern {
        /// The pattern.
        pattern: String,
        /// The glob parser's complaint.
        source: globset::Error,
    },

    /// MARS: the sources of one backup exceed the size of a data source
    /// ([`MAX_SOURCE_BYTES`](crate::MAX_SOURCE_BYTES)).
    #[error("the sources hold {bytes} bytes, over the limit of {max} bytes per data source")]
    SourceTooLarge {
        /// Bytes found under the sources.
        bytes: u64,
        /// The limit.
        max: u64,
    },

    /// A directory with so many entries that its tree blob would pass
    /// [`MAX_BLOB_BYTES`](crate::MAX_BLOB_BYTES) (millions of entries in one directory).
    #[error(
        "{path}: its listing takes {bytes} bytes, over the limit of {max} bytes for one directory"
    )]
    DirectoryTooLarge {
        /// The directory.
        path: PathBuf,
        /// Size of its encoded listing.
        bytes: u64,
        /// The limit.
        max: u64,
    },

    /// MARS: the machine already holds the most recovery points allowed
    /// ([`MAX_RECOVERY_POINTS`](crate::MAX_RECOVERY_POINTS)).
    #[error("this machine already has {existing} recovery points, the most it may hold ({max})")]
    TooManyRecoveryPoints {
        /// Recovery points the machine has.
        existing: usize,
        /// The limit.
        max: usize,
    },

    /// Not enough local space to stage a backup or a restore.
    #[error(
        "{place} {} has {available} bytes free but needs {needed} bytes",
        path.display()
    )]
    NoSpace {
        /// Which place, with the figures that explain `needed`.
        place: SpacePlace,
        /// The directory checked.
        path: PathBuf,
        /// Bytes this run needs there.
        needed: u64,
        /// Bytes free there for this run (less what other runs reserved).
        available: u64,
    },

    /// A backup was asked for with no source path.
    #[error("nothing to back up: no source path given")]
    NothingToBackUp,

    /// An exclude pattern that is not a valid glob.
    #[error("bad exclude pattern{}: {source}", pattern.as_ref().map(|p| format!(" {p:?}")).unwrap_or_default())]
    BadExclude {
        /// The pattern, when one alone is at fault.
        pattern: Option<String>,
        /// The glob parser's complaint.
        source: globset::Error,
    },

    /// A retention policy that keeps nothing, so it would forget every recovery point.
    #[error("the retention policy is empty, so it would forget every recovery point")]
    EmptyRetentionPolicy,

    /// A credentials validity that cannot be added to the current time.
    #[error("a validity of {valid_for:?} is out of range: {source}")]
    InvalidValidity {
        /// The validity asked for.
        valid_for: Duration,
        /// The time library's complaint.
        source: jiff::Error,
    },

    /// Chunker parameters given at registration that the chunker refuses.
    #[error("invalid chunker parameters: {source}")]
    InvalidChunker {
        /// The chunker's complaint.
        source: rbackup_chunker::ChunkerError,
    },

    /// A zstd compression level zstd refuses.
    #[error("zstd compression level {level} is refused: {source}")]
    CompressionLevel {
        /// The level asked for.
        level: i32,
        /// zstd's complaint.
        source: std::io::Error,
    },

    /// This process's lease ran out before it committed, so a prune may have removed data it
    /// relied on; nothing was committed.
    #[error(
        "this {purpose}'s lease on the repository ran out (the process was suspended or the \
         vault unreachable for longer than {ttl:?}), so a prune may have removed data it \
         relied on; nothing was committed"
    )]
    LeaseLost {
        /// What held the lease (`backup`, `prune`).
        purpose: String,
        /// The lease's time to live.
        ttl: Duration,
    },

    /// The embedder asked the backup to stop ([`crate::Cancel`]): no recovery point was
    /// written; the packs uploaded by then are indexed and the next backup reuses them.
    #[error(
        "the backup was stopped before it finished; no recovery point was written; {packs} \
         packs ({bytes} bytes) uploaded by it are kept and indexed, so the next backup does \
         not upload them again"
    )]
    Cancelled {
        /// Packs this run uploaded and indexed.
        packs: u64,
        /// Their bytes.
        bytes: u64,
    },

    /// The repository was opened append-only (a machine whose store credentials may create
    /// and read but not delete or overwrite) and `operation` would delete or overwrite; it was
    /// refused before any store call.
    #[error(
        "machine {machine} is append-only: it does not {operation}, since that deletes or \
         overwrites objects in the vault; retention and prune for it run from an admin host \
         with delete-capable store access and this machine's passphrase or key file"
    )]
    AppendOnly {
        /// The machine id.
        machine: String,
        /// What was refused (`forget recovery points`, `prune`, ...).
        operation: &'static str,
    },

    /// Another process holds an exclusive lease on the repository.
    #[error(
        "another {} is running on this repository (host {}, pid {}, since {}); its lease runs \
         out at {}",
        holder.purpose, holder.hostname, holder.pid, holder.created, holder.expires
    )]
    RepositoryBusy {
        /// The other process's lease.
        holder: Box<LeaseInfo>,
    },

    /// Prune could not read a tree, so it cannot know what is in use; it deleted nothing.
    #[error("prune stopped without deleting anything: tree {tree} cannot be read: {source}")]
    PruneStopped {
        /// The tree blob.
        tree: BlobId,
        /// Why it cannot be read.
        source: Box<EngineError>,
    },

    /// A worker thread panicked or the runtime went away.
    #[error("internal error: {task}: {failure}")]
    Internal {
        /// Which task (`backup walk`, `restore fetch`, ...).
        task: &'static str,
        /// How it failed.
        #[source]
        failure: InternalFailure,
    },

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

impl EngineError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> EngineError {
        EngineError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(
        object: impl Into<String>,
        reason: impl Into<CorruptReason>,
    ) -> EngineError {
        EngineError::Corrupt {
            object: object.into(),
            reason: reason.into(),
        }
    }

    /// A failed `spawn_blocking` or task join.
    pub(crate) fn join(task: &'static str, e: tokio::task::JoinError) -> EngineError {
        EngineError::Internal {
            task,
            failure: InternalFailure::Task(e),
        }
    }

    pub(crate) fn internal(task: &'static str, failure: InternalFailure) -> EngineError {
        EngineError::Internal { task, failure }
    }
}

/// Shorthand for engine results.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
