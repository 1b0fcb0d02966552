//! Object storage for the rbackup vault, behind one small async trait.
//!
//! The key design choice is how *little* [`Store`] promises. It has five required methods
//! (`put`, `get_range`, `head`, `list`, `delete`), and every promise it makes is one that a
//! local directory, an in-memory map and the big object stores (S3, Azure Blob, GCS) can all
//! keep *atomically*:
//!
//! - a put publishes the whole object or nothing, so readers never see part of one;
//! - a put in [`PutMode::Create`] fails with [`StoreError::AlreadyExists`] if the key is taken,
//!   decided in one atomic step (a hard link locally, a conditional request in the cloud);
//! - there is no append, rename, partial write or multipart session to go wrong half-way.
//!
//! The engine builds everything on these: packs, indexes and recovery points are immutable,
//! content-addressed objects written once, and `Create` is the only coordination primitive
//! (for locks and for "first writer wins" on configuration). Anything richer would have to be
//! emulated non-atomically on at least one backend, and a backup tool's correctness would then
//! depend on which backend it happens to run on. Keeping the trait this small is also what
//! makes the [`conformance`] suite meaningful: one suite, run against every implementation,
//! pins down the whole contract.
//!
//! Backends: [`LocalStore`] (std::fs with fsync and atomic publication, for `file://` URLs and
//! plain paths) and [`ObjectStoreBackend`] (any `object_store` store plus a key prefix; used
//! for `memory://` now, and the slot through which `s3://`, `az://` and `gs://` arrive later).
//! [`open`] turns a vault URL into the right one.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rbackup_store::StoreError> {
//! use rbackup_store::{Bytes, PutMode, StoreOptions, open};
//!
//! let vault = open("memory://doc-example", &StoreOptions::default())?;
//! vault.put("config", Bytes::from_static(b"v1"), PutMode::Create).await?;
//! // A second Create loses, atomically, and leaves the first object alone.
//! let lost = vault.put("config", Bytes::from_static(b"v2"), PutMode::Create).await;
//! assert!(lost.is_err_and(|e| e.is_already_exists()));
//! assert_eq!(vault.get_range("config", Some(0..1)).await?, &b"v"[..]);
//! # Ok(())
//! # }
//! ```
//!
//! Object keys are relative '/'-separated paths such as `machines/ab12/packs/3f/3f0a...`: no
//! leading or trailing '/', no empty, `.` or `..` segments, no segment starting with `.tmp-`
//! (reserved for staging files), no control characters and no backslashes. Every backend
//! enforces the same rules ([`StoreError::InvalidPath`]), so a vault can move between them.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

pub use bytes::Bytes;

pub mod conformance;
mod error;
mod key;
mod local;
mod object;
mod url;

pub use error::StoreError;
pub use local::LocalStore;
pub use object::ObjectStoreBackend;
pub use url::VaultUrl;

/// An object's key and size, as returned by [`Store::head`] and [`Store::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The object's full key (relative to the store, not to a listing prefix).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
}

/// What [`Store::put`] does when the key already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Replace the existing object atomically.
    Overwrite,
    /// Fail with [`StoreError::AlreadyExists`] and leave the existing object untouched. The
    /// check and the publication are one atomic step: of several racing `Create`s on one key,
    /// exactly one succeeds.
    Create,
}

/// Object storage for a vault. See the crate documentation for the key rules and for why the
/// trait is this small.
///
/// All methods validate keys and fail with [`StoreError::InvalidPath`] on a bad one.
#[async_trait::async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Stores `data` under `path`.
    ///
    /// Atomic: a reader sees no object or the whole object, never part of one; a failed put
    /// leaves the previous state (no object, or the old object) in place. With
    /// [`PutMode::Create`] it fails with [`StoreError::AlreadyExists`] if the key exists,
    /// decided atomically with no race window. When it returns `Ok`, the object is durable
    /// (for the local backend: file and directory entry are fsynced).
    async fn put(&self, path: &str, data: Bytes, mode: PutMode) -> Result<(), StoreError>;

    /// Reads the whole object (`range` None) or the bytes `range.start..range.end`.
    ///
    /// The range must lie inside the object (`start <= end <= size`); otherwise the result is
    /// [`StoreError::InvalidRange`]. Ranges are deliberately *not* clamped to the object's end:
    /// a short read would make a truncated pack look like a smaller valid blob. An empty range
    /// inside the object gives empty bytes. A missing object gives [`StoreError::NotFound`].
    /// The bytes returned all come from one version of the object, even if it is overwritten
    /// concurrently.
    async fn get_range(&self, path: &str, range: Option<Range<u64>>) -> Result<Bytes, StoreError>;

    /// The object's metadata, or [`StoreError::NotFound`].
    async fn head(&self, path: &str) -> Result<ObjectMeta, StoreError>;

    /// All objects whose key starts with `prefix` + '/' (prefix "" = every object), recursively,
    /// in no particular order. Keys in the result are full keys. A missing prefix gives an empty
    /// list, not an error; staging files never appear. One trailing '/' on `prefix` is ignored.
    /// Not a snapshot: objects put or deleted during the listing may or may not appear.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError>;

    /// Deletes the object. Deleting a missing key is `Ok` (idempotent).
    async fn delete(&self, path: &str) -> Result<(), StoreError>;

    /// A human-readable location for messages, e.g. `file:///srv/vault`. Never includes
    /// credentials.
    fn describe(&self) -> String;

    /// The whole object; shorthand for `get_range(path, None)`.
    async fn get(&self, path: &str) -> Result<Bytes, StoreError> {
        self.get_range(path, None).await
    }

    /// Whether the object exists (a `head` where `NotFound` becomes `false`).
    async fn exists(&self, path: &str) -> Result<bool, StoreError> {
        match self.head(path).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Uploads the local file `local` as `path`, with the same atomicity as [`Store::put`].
    ///
    /// Used for packs staged in the cache directory. This default reads the whole file into
    /// memory and calls `put`; [`LocalStore`] overrides it to copy the file in place without
    /// holding it in memory. Errors reading `local` are [`StoreError::Io`] naming `local`.
    async fn put_file(&self, path: &str, local: &Path, mode: PutMode) -> Result<(), StoreError> {
        let data = tokio::fs::read(local)
            .await
            .map_err(|source| StoreError::Io {
                path: local.display().to_string(),
                source,
            })?;
        self.put(path, Bytes::from(data), mode).await
    }
}

/// Options for [`open`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct StoreOptions {
    /// HTTP(S) proxy URL for cloud backends. Kept for the cloud backends of a later release;
    /// ignored by local and memory stores.
    pub proxy: Option<String>,
}

impl StoreOptions {
    /// Sets [`StoreOptions::proxy`] (the struct is `#[non_exhaustive]`, so it cannot be built
    /// with a literal outside this crate).
    pub fn with_proxy(mut self, proxy: impl Into<String>) -> Self {
        self.proxy = Some(proxy.into());
        self
    }
}

/// Parses a vault URL (see [`VaultUrl::parse`]) and opens its store.
///
/// Opening does no I/O: a local vault directory need not exist yet (the first put creates it,
/// and listing a missing vault gives an empty list). `memory://NAME` returns the same store for
/// the same name within this process; `memory://` a fresh private one. `s3://`, `az://` and
/// `gs://` parse, but opening them gives [`StoreError::Unsupported`] in this release.
pub fn open(url: &str, options: &StoreOptions) -> Result<Arc<dyn Store>, StoreError> {
    // Destructured so that adding an option is a compile error here until open() decides
    // what to do with it. The proxy is for the cloud backends of a later release.
    let StoreOptions { proxy: _ } = options;
    match VaultUrl::parse(url)? {
        VaultUrl::Local(path) => Ok(Arc::new(LocalStore::new(path)?)),
        VaultUrl::Memory(name) => Ok(Arc::new(ObjectStoreBackend::memory(&name))),
        cloud @ (VaultUrl::S3 { .. } | VaultUrl::Azure { .. } | VaultUrl::Gcs { .. }) => {
            let kind = match cloud {
                VaultUrl::S3 { .. } => "s3:// vaults (Amazon S3 and compatible services)",
                VaultUrl::Azure { .. } => "az:// vaults (Azure Blob Storage)",
                _ => "gs:// vaults (Google Cloud Storage)",
            };
            Err(StoreError::Unsupported {
                what: format!(
                    "{kind} arrive with a later release of rbackup; for now use a local vault \
                     (file:///abs/path or a plain path, which may be a mounted network share)"
                ),
            })
        }
    }
}
