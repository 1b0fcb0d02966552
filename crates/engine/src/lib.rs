//! rbackup's engine: the vault and repository format, backup, restore and check — the library
//! the `rbackup` agent is a thin shell over, and that other programs embed.
//!
//! # The one key design choice: the vault never sees anything it could use
//!
//! Everything in a machine's repository is sealed with keys that only the passphrase unlocks,
//! and even the *shape* of the data is hidden: blob ids are keyed BLAKE3 (the store cannot
//! confirm a guessed file), the chunker's gear table is derived from a secret key (boundaries
//! do not fingerprint content), and blobs are padded (sizes do not leak). The price is that the
//! vault cannot help — it cannot deduplicate, verify or prune on its own — so the engine does
//! all of that client-side, and keeps a local cache of the (still sealed) metadata so that the
//! common case, an unchanged re-run, downloads nothing.
//!
//! # Embedding
//!
//! ```no_run
//! # async fn demo() -> Result<(), rbackup_engine::EngineError> {
//! use std::time::Duration;
//! use rbackup_engine::{BackupOptions, Registration, Repository, RestoreOptions, Unlock, Vault};
//! use rbackup_engine::crypto::{KdfParams, Passphrase};
//!
//! let store = rbackup_engine::store::open("memory://demo", &Default::default())?;
//! let (vault, creds) = Vault::create(store, "memory://demo", Duration::from_secs(3600)).await?;
//! let pass = Passphrase::new("correct horse battery staple")?;
//! let (machine, _) = vault.register(&creds, Registration {
//!     name: "laptop".into(),
//!     hostname: "laptop".into(),
//!     passphrase: &pass,
//!     kdf: KdfParams::default(),
//!     chunker: Default::default(),
//! }).await?;
//! let repo = Repository::open(&vault, &machine, Unlock::Passphrase(&pass), None).await?;
//! let report = repo.backup(BackupOptions::new(["/home/me/documents"])).await?;
//! println!("recovery point {:?}", report.recovery_point);
//! repo.restore(RestoreOptions::new("latest", "/tmp/restored", "/tmp/recovery")).await?;
//! # Ok(()) }
//! ```
//!
//! See `examples/embed.rs` for a runnable version, and ARCHITECTURE.md for the format.

mod backup;
mod browse;
mod bundle;
mod cache;
mod check;
pub mod classify;
mod codec;
mod copy;
mod crafted;
mod credentials;
mod error;
mod filescache;
mod freshness;
#[doc(hidden)]
pub mod fuzz_support;
mod holder;
mod id;
mod index;
mod keyfiles;
mod layout;
mod lock;
mod pack;
mod pin;
mod policy;
mod progress;
mod prune;
mod repo;
mod report;
mod restore;
pub mod retention;
mod snapshot;
mod tombstone;
pub mod tree;
mod unlock;
mod vault;
mod vault_state;
mod workdir;

pub use backup::{BackupOptions, CACHE_PERCENT, Cancel, MAX_RECOVERY_POINTS, MAX_SOURCE_BYTES};
pub use browse::{
    Browser, Change, DiffEntry, DiffReport, DiffSummary, DirListing, Entry, FileReader, FindHit,
    FindOptions, FindReport, Listing, MAX_READ, MachineSummary, PointStats, RandomFile,
    StatsReport,
};
pub use classify::{LinkMode, SkipRule};
pub use copy::{CopyOptions, CopyReport};
pub use credentials::{CredentialsRecord, VaultCredentials};
pub use error::{
    CorruptReason, CredentialsProblem, EngineError, FolderRisk, InternalFailure, PinProblem,
    Result, ScratchFolder, SpacePlace,
};
pub use freshness::{Freshness, FreshnessFinding, assess, assess_accounting};
pub use holder::Holder;
pub use id::Id;
pub use keyfiles::{KeyFileIssue, KeyFileState, KeyRepairReport};
pub use layout::{
    DEFAULT_SOFT_DELETE_DAYS, FORMAT_VERSION, MAX_BLOB_BYTES, VaultMeta, machine_folders,
};
pub use lock::{DEFAULT_LEASE_TTL, Lease, LeaseInfo, LeaseKind};
pub use pack::BlobKind;
pub use pin::{DEFAULT_PIN_VALIDITY, PIN_DIGITS, PinRecord};
pub use policy::PublishedPolicies;
pub use progress::{NoProgress, Progress};
pub use prune::{DEFAULT_GRACE, PruneOptions, PruneReport, STALE_STAGING};
pub use repo::{Repository, Unlock};
pub use report::{
    BackupReport, CheckOptions, CheckReport, FailureCause, NotRestored, RestoreReport, RestoreStop,
    SkipKind, Skipped, StopCause, rule_counts,
};
pub use restore::{Overwrite, RestoreOptions};
pub use retention::{ForgetReport, KeepReason, RetentionPolicy, Verdict};
pub use snapshot::RecoveryPoint;
pub use tombstone::{Actor, DeletedPoint, RecoveryPointListing};
pub use unlock::SkippedKeyFile;
pub use vault::{Registration, Vault};
pub use vault_state::{
    MAX_SET_BY, StateRecord, VAULT_NAME_LEN, VaultState, check_vault_name, refuse_if_read_only,
};

/// Time sources for [`Vault::with_clock`]: the system clock (the default) and a manual clock
/// for tests.
pub use rbackup_throttle::{Clock, ManualClock, SystemClock};

/// The chunker crate, re-exported so embedders need one dependency.
pub use rbackup_chunker as chunker;
/// The crypto crate, re-exported.
pub use rbackup_crypto as crypto;
/// The store crate, re-exported.
pub use rbackup_store as store;
/// The throttle crate, re-exported (clocks, rates, calendars and the limiter itself).
pub use rbackup_throttle as throttle;
/// The throttle types [`BackupOptions::throttle`] and [`RestoreOptions::throttle`] take, so
/// an embedder needs no other crate to limit bandwidth.
pub use rbackup_throttle::{Rate, Schedule, Throttle, WorkDays, WorkHours};

/// Free bytes for an unprivileged user on the file system holding `path`.
pub fn free_space(path: &std::path::Path) -> Result<u64> {
    let st = rustix::fs::statvfs(path).map_err(|e| EngineError::io(path, e.into()))?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}
