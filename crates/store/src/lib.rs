//! Object storage for the rbackup vault, behind one small async trait.
//!
//! The key design choice is how *little* [`Store`] promises. It has five required methods
//! (`put`, `get_range`, `head`, `list`, `delete`), and every promise it makes is one that a
//! local directory, an in-memory map and the big object stores (S3, Azure Blob, GCS) can all
//! keep *atomically*:
//!
//! - a put publishes the whole object or nothing, so readers never see part of one;
//! - a put in [`PutMode::Create`] fails with [`StoreError::AlreadyExists`] if the key is taken,
//!   decided in one atomic step (a hard link locally, a conditional request in the cloud; see
//!   [`PutMode::Create`] for the one documented exception, very large cloud objects);
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
//! plain paths), [`ObjectStoreBackend`] (any `object_store` store plus a key prefix; used for
//! `memory://`) and [`CloudStore`] (`s3://`, `az://`, `gs://`: an [`ObjectStoreBackend`] over
//! object_store's cloud clients, plus multipart uploads, uploads paced on the wire, and errors
//! that name the bucket, the credentials or the endpoint). [`open`] turns a vault URL into the
//! right one.
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
use std::time::Duration;

pub use bytes::Bytes;
use rbackup_throttle::{Throttle, ThrottledReader};
use tokio::io::AsyncReadExt;

mod cloud;
pub mod conformance;
mod error;
mod key;
mod local;
mod object;
mod url;

pub use cloud::CloudStore;
pub use error::{RefusedOperation, StoreError};
pub use local::{LocalStore, STAGING_DIR};
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
    ///
    /// Cloud stores keep this promise with a conditional request (`If-None-Match: *` on S3,
    /// which AWS has honoured since 2024 and moto does too, and on Azure Blob;
    /// `ifGenerationMatch=0` on GCS) for objects up to [`StoreOptions::multipart_threshold`].
    /// A *larger* `Create` is a multipart upload, and object_store cannot make the completion
    /// of a multipart upload conditional; it is emulated as "head, then upload", with a race:
    /// two writers that both find the key free both upload, and the later completion replaces
    /// the earlier object (whole: readers never see a mix). The engine only sends objects that
    /// large as packs, whose keys are unique to their content, so neither writer loses data;
    /// whoever needs every `Create` atomic raises the threshold (single requests reach 5 GiB
    /// on S3 and 5000 MiB on Azure).
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

    /// Removes what interrupted puts left behind and nobody has touched for `older_than`, and
    /// returns how many were removed. Only [`LocalStore`] leaves anything a later call can
    /// find: staging files of killed writers in its staging folder. A cloud put leaves at
    /// most an incomplete multipart upload, which the bucket's lifecycle rule aborts; this
    /// default does nothing. Deletes, so it needs delete rights (an admin host's prune).
    async fn remove_stale_staging(&self, older_than: Duration) -> Result<u64, StoreError> {
        let _ = older_than;
        Ok(0)
    }

    /// How many requests the engine should keep in flight against this store to keep it busy
    /// (uploads of packs during a backup, ranged reads during a restore). A hint, not a limit.
    /// A local disk gains nothing from more than a couple, so this default is 2; a store
    /// behind a network needs enough to cover its round-trip time ([`CloudStore`] answers
    /// [`StoreOptions::requests_in_flight`]).
    fn requests_in_flight(&self) -> usize {
        2
    }

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

    /// [`Store::put_file`] with the upload paced by `throttle` as its bytes are sent, so that
    /// the bytes leave at the throttle's rate rather than at line speed after a wait.
    ///
    /// Same atomicity as [`Store::put`]: a paced upload is as invisible until complete as any
    /// other. [`CloudStore`] paces the HTTP request bodies on the socket (parts of a multipart
    /// upload included, and a retried request pays again); [`LocalStore`] paces the copy into
    /// its staging file. This default paces the reading of the file into memory and then calls
    /// `put`, which is the same thing for stores where `put` does no network I/O (memory);
    /// a backend that sends over a network overrides it.
    async fn put_file_throttled(
        &self,
        path: &str,
        local: &Path,
        mode: PutMode,
        throttle: &Throttle,
    ) -> Result<(), StoreError> {
        let io_error = |source| StoreError::Io {
            path: local.display().to_string(),
            source,
        };
        let file = tokio::fs::File::open(local).await.map_err(io_error)?;
        let mut data = Vec::new();
        ThrottledReader::new(file, throttle.clone())
            .read_to_end(&mut data)
            .await
            .map_err(io_error)?;
        self.put(path, Bytes::from(data), mode).await
    }
}

/// Options for [`open`]. Local and memory stores ignore all of them.
///
/// The cloud defaults suit a backup agent on a possibly slow, throttled link: a short connect
/// timeout (a dead endpoint is reported in seconds) but a long request timeout (a 32 MiB pack
/// sent at 512 KiB/s takes 64 s, so the default allows 5 minutes per request), and patient
/// retries with exponential backoff for the transient failures object stores are known for.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StoreOptions {
    /// HTTP(S) proxy URL for cloud backends, e.g. `http://proxy.corp:3128`. Proxy credentials
    /// may be given in the URL (`http://user:pass@proxy.corp:3128`, percent-encoded); they are
    /// sent as `Proxy-Authorization: Basic`. When unset, the `HTTPS_PROXY`/`HTTP_PROXY`/
    /// `NO_PROXY` environment variables apply.
    pub proxy: Option<String>,
    /// Time allowed for one whole request, upload included (default 300 s). A request of a
    /// throttled upload ([`Store::put_file_throttled`]) is allowed this plus the time its body
    /// takes at the throttle's rate when four uploads share it, since its bytes are paced
    /// while it runs.
    pub request_timeout: Duration,
    /// Time allowed to open a connection (default 5 s).
    pub connect_timeout: Duration,
    /// Retries of a failed request (server errors, throttling, dropped connections), with
    /// exponential backoff from 100 ms up to 15 s between attempts (default 10; 0 disables).
    pub retries: usize,
    /// No retry is started after this much time since a request's first attempt (default 10
    /// minutes).
    pub retry_timeout: Duration,
    /// Objects larger than this are uploaded in parts (multipart upload), so a failure costs
    /// one part, not the whole object (default 16 MiB). See [`PutMode::Create`] for what this
    /// means for create-only puts on cloud stores.
    pub multipart_threshold: u64,
    /// Whether the cloud builders read the usual environment variables (`AWS_*`, `AZURE_*`,
    /// `GOOGLE_*`, as object_store's `from_env` builders do). Default true; tests turn it off
    /// so that the developer's own cloud settings cannot leak in.
    pub use_env: bool,
    /// object_store configuration keys applied after the environment, overriding it: the same
    /// names as the environment variables, in any case (`aws_endpoint`, `AWS_ACCESS_KEY_ID`,
    /// `azure_storage_account_key`, `google_service_account`, ...) plus the client keys such
    /// as `allow_http`. Unknown keys are refused with [`StoreError::Config`].
    pub cloud_config: Vec<(String, String)>,
    /// Requests a cloud store asks the engine to keep in flight
    /// ([`Store::requests_in_flight`]; default 8, at least 1): enough to keep a link with a
    /// 40 ms round trip busy, as measured with `cargo xtask bench --network`.
    pub requests_in_flight: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            proxy: None,
            request_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(5),
            retries: 10,
            retry_timeout: Duration::from_secs(600),
            multipart_threshold: 16 * 1024 * 1024,
            use_env: true,
            cloud_config: Vec::new(),
            requests_in_flight: 8,
        }
    }
}

impl StoreOptions {
    /// Sets [`StoreOptions::proxy`] (the struct is `#[non_exhaustive]`, so it cannot be built
    /// with a literal outside this crate).
    pub fn with_proxy(mut self, proxy: impl Into<String>) -> Self {
        self.proxy = Some(proxy.into());
        self
    }

    /// Sets [`request_timeout`](Self::request_timeout) and
    /// [`connect_timeout`](Self::connect_timeout).
    pub fn with_timeouts(mut self, request: Duration, connect: Duration) -> Self {
        self.request_timeout = request;
        self.connect_timeout = connect;
        self
    }

    /// Sets [`retries`](Self::retries) and [`retry_timeout`](Self::retry_timeout).
    pub fn with_retries(mut self, retries: usize, retry_timeout: Duration) -> Self {
        self.retries = retries;
        self.retry_timeout = retry_timeout;
        self
    }

    /// Sets [`multipart_threshold`](Self::multipart_threshold).
    pub fn with_multipart_threshold(mut self, bytes: u64) -> Self {
        self.multipart_threshold = bytes;
        self
    }

    /// Sets [`use_env`](Self::use_env).
    pub fn with_env(mut self, use_env: bool) -> Self {
        self.use_env = use_env;
        self
    }

    /// Sets [`requests_in_flight`](Self::requests_in_flight).
    pub fn with_requests_in_flight(mut self, n: usize) -> Self {
        self.requests_in_flight = n;
        self
    }

    /// Adds one entry to [`cloud_config`](Self::cloud_config); later entries win.
    pub fn with_cloud_config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.cloud_config.push((key.into(), value.into()));
        self
    }
}

/// Parses a vault URL (see [`VaultUrl::parse`]) and opens its store.
///
/// Opening does no I/O: a local vault directory need not exist yet (the first put creates it,
/// and listing a missing vault gives an empty list). `memory://NAME` returns the same store for
/// the same name within this process; `memory://` a fresh private one. `s3://`, `az://` and
/// `gs://` are configured from the environment and `options` (see [`StoreOptions`]); a missing
/// setting such as the Azure account name is [`StoreError::Config`] here, while a missing
/// bucket, refused credentials or an unreachable endpoint are reported by the first operation
/// ([`StoreError::BucketNotFound`], [`StoreError::AuthFailed`], [`StoreError::Unreachable`]).
pub fn open(url: &str, options: &StoreOptions) -> Result<Arc<dyn Store>, StoreError> {
    // Destructured so that adding an option is a compile error here until open() decides
    // what to do with it: every option is for the cloud backends.
    let StoreOptions {
        proxy: _,
        request_timeout: _,
        connect_timeout: _,
        retries: _,
        retry_timeout: _,
        multipart_threshold: _,
        use_env: _,
        cloud_config: _,
        requests_in_flight: _,
    } = options;
    match VaultUrl::parse(url)? {
        VaultUrl::Local(path) => Ok(Arc::new(LocalStore::new(path)?)),
        VaultUrl::Memory(name) => Ok(Arc::new(ObjectStoreBackend::memory(&name))),
        cloud => Ok(Arc::new(CloudStore::open(&cloud, options)?)),
    }
}
