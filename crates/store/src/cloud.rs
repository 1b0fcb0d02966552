//! [`CloudStore`]: `s3://`, `az://` and `gs://` vaults.
//!
//! The object semantics come whole from [`ObjectStoreBackend`] over object_store's clients;
//! this layer adds what a person and a slow link need: a first-use check of the bucket, errors
//! that say whether the bucket, the credentials or the network is at fault, and multipart
//! uploads for large objects.

mod build;
mod explain;
mod paced;

use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use rbackup_throttle::Throttle;
use tokio::io::AsyncReadExt;
use tokio::sync::OnceCell;

use crate::key::{normalize_prefix, validate_key};
use crate::{
    ObjectMeta, ObjectStoreBackend, PutMode, RefusedOperation, Store, StoreError, StoreOptions,
    VaultUrl,
};
use explain::Context;

/// Size of the parts of a multipart upload: above S3's 5 MiB minimum, and small enough that a
/// failed part at a throttled rate costs seconds, not minutes, to send again.
const PART_SIZE: usize = 8 * 1024 * 1024;

/// Parts of one upload in flight at once; with the part being filled, this bounds an upload's
/// memory to `(PARTS_IN_FLIGHT + 1) * PART_SIZE`.
const PARTS_IN_FLIGHT: usize = 2;

/// The cloud services behind the vault URL schemes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Provider {
    S3,
    Azure,
    Gcs,
}

impl Provider {
    fn scheme(self) -> &'static str {
        match self {
            Provider::S3 => "s3://",
            Provider::Azure => "az://",
            Provider::Gcs => "gs://",
        }
    }

    fn example_keys(self) -> &'static str {
        match self {
            Provider::S3 => "aws_endpoint, aws_region, aws_access_key_id, allow_http",
            Provider::Azure => {
                "azure_storage_account_name, azure_storage_account_key, azure_storage_endpoint"
            }
            Provider::Gcs => "google_service_account, google_base_url",
        }
    }

    fn credentials_hint(self) -> &'static str {
        match self {
            Provider::S3 => {
                "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (plus AWS_SESSION_TOKEN for \
                 temporary credentials) or the instance role, and that they may list, read and \
                 write this bucket"
            }
            Provider::Azure => {
                "check AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_ACCOUNT_KEY, or \
                 AZURE_STORAGE_SAS_KEY, or the service principal (AZURE_CLIENT_ID, \
                 AZURE_CLIENT_SECRET, AZURE_TENANT_ID), and that they may list, read and write \
                 this container"
            }
            Provider::Gcs => {
                "check GOOGLE_SERVICE_ACCOUNT (or GOOGLE_APPLICATION_CREDENTIALS) and that the \
                 account may list, read and write this bucket"
            }
        }
    }

    fn endpoint_hint(self) -> &'static str {
        match self {
            Provider::S3 => "AWS_ENDPOINT, AWS_REGION",
            Provider::Azure => "AZURE_STORAGE_ENDPOINT, AZURE_STORAGE_ACCOUNT_NAME",
            Provider::Gcs => "GOOGLE_BASE_URL",
        }
    }
}

/// A [`Store`] for a cloud vault (`s3://`, `az://`, `gs://`), made by [`open`](crate::open).
///
/// Every operation first makes sure, once per store, that the bucket or container can be
/// listed, so that a missing bucket, refused credentials or an unreachable endpoint surface as
/// [`StoreError::BucketNotFound`], [`StoreError::AuthFailed`] or [`StoreError::Unreachable`]
/// instead of as "object not found" (a HEAD on a missing bucket and on a missing object both
/// answer a bare 404); the credentials therefore need list permission on the bucket, which
/// the engine needs anyway. Objects above [`StoreOptions::multipart_threshold`] are uploaded in
/// parts; see [`PutMode::Create`] for what that means for create-only puts.
///
/// Append-only credentials (allowed to create and read but not to delete or overwrite: an S3
/// policy denying `s3:DeleteObject`, an Azure SAS with `rcl`): a delete or an overwrite of an
/// existing object that the service refuses is [`StoreError::OperationRefused`]; a `Create` on
/// a taken key that the service refuses with 403 (Azure does, where it would otherwise answer
/// 409) is told apart by a `head` and reported as [`StoreError::AlreadyExists`]; and when the
/// service refuses to stage the parts of a large `Create` (Put Block needs Azure's `w`), the
/// object goes as one conditional put instead, from then on for this store.
///
/// Retries: object_store retries server errors, throttling (429/503) and requests that never
/// reached the server, with backoff ([`StoreOptions::retries`]); a timed-out request is retried
/// only when it is idempotent, so never for a `Create`. One corner remains: a `Create` whose
/// first attempt was stored but answered with a 5xx is retried and reports
/// [`StoreError::AlreadyExists`] for the writer's own object; callers that retry a lost
/// `Create` should compare contents when that matters.
#[derive(Debug)]
pub struct CloudStore {
    backend: ObjectStoreBackend,
    context: Context,
    multipart_threshold: u64,
    requests_in_flight: usize,
    checked: OnceCell<()>,
    /// Set once the service refused to stage the parts of an upload (see `put_large`).
    parts_refused: AtomicBool,
}

/// What a multipart upload reads from.
enum Source<'a> {
    Memory(Bytes),
    File(&'a Path),
}

impl CloudStore {
    /// Configures the client for a cloud vault URL from the environment and `options` (see
    /// [`StoreOptions`]). Does no I/O. Local and memory URLs are [`StoreError::InvalidUrl`].
    pub fn open(url: &VaultUrl, options: &StoreOptions) -> Result<CloudStore, StoreError> {
        let (provider, bucket, prefix) = match url {
            VaultUrl::S3 { bucket, prefix } => (Provider::S3, bucket, prefix),
            VaultUrl::Azure { container, prefix } => (Provider::Azure, container, prefix),
            VaultUrl::Gcs { bucket, prefix } => (Provider::Gcs, bucket, prefix),
            other => {
                return Err(StoreError::InvalidUrl {
                    url: other.to_url_string(),
                    reason: "not a cloud vault URL".into(),
                });
            }
        };
        let canonical = url.to_url_string();
        let built = build::build(provider, bucket, &canonical, options)?;
        let endpoint = without_userinfo(&built.endpoint);
        let backend = ObjectStoreBackend::new(built.store, prefix)?
            .with_description(format!("{canonical} at {endpoint}"));
        Ok(CloudStore {
            backend,
            context: Context {
                provider,
                url: canonical,
                bucket: bucket.clone(),
                endpoint,
            },
            multipart_threshold: options.multipart_threshold,
            requests_in_flight: options.requests_in_flight.max(1),
            checked: OnceCell::new(),
            parts_refused: AtomicBool::new(false),
        })
    }

    /// The service endpoint this store talks to, e.g. `https://s3.us-east-1.amazonaws.com`.
    pub fn endpoint(&self) -> &str {
        &self.context.endpoint
    }

    /// The [`ObjectStoreBackend`] underneath (no bucket check, no error explanations).
    pub fn backend(&self) -> &ObjectStoreBackend {
        &self.backend
    }

    /// Lists the vault's prefix once, so that a missing bucket, bad credentials or a dead
    /// endpoint are reported as such. Not cached on failure: the next operation tries again.
    async fn ready(&self) -> Result<(), StoreError> {
        self.checked
            .get_or_try_init(|| async {
                let prefix = (!self.backend.prefix().is_empty())
                    .then(|| ObjectPath::from(self.backend.prefix()));
                match self
                    .backend
                    .inner()
                    .list_with_delimiter(prefix.as_ref())
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(e) => Err(self.explain_raw("", e, true)),
                }
            })
            .await
            .map(drop)
    }

    /// Replaces a generic backend error by a clearer one where it is a known case.
    fn explain(&self, err: StoreError) -> StoreError {
        let StoreError::Backend { path, source } = err else {
            return err;
        };
        match self.context.classify(source.as_ref(), false) {
            Some(clear) => clear,
            None => StoreError::Backend { path, source },
        }
    }

    fn explain_raw(&self, key: &str, err: object_store::Error, listing: bool) -> StoreError {
        self.context
            .classify(&err, listing)
            .unwrap_or_else(|| StoreError::from_object_store(key, err))
    }

    /// A multipart upload of `source` to `key`; `Create` is emulated by a prior `head` (see
    /// [`PutMode::Create`]). Credentials that may create objects but not stage parts (an Azure
    /// SAS with `c` and without `w`: Put Block needs `w`) get a `Create` sent as one
    /// conditional request instead, which is also atomic; the store remembers the refusal.
    async fn put_large(
        &self,
        key: &str,
        source: Source<'_>,
        mode: PutMode,
    ) -> Result<(), StoreError> {
        if mode == PutMode::Create && self.exists(key).await? {
            return Err(StoreError::AlreadyExists { path: key.into() });
        }
        if mode == PutMode::Create && self.parts_refused.load(Ordering::Relaxed) {
            return self.put_whole_source(key, source).await;
        }
        match self.upload_parts(key, &source).await {
            Ok(()) => Ok(()),
            Err(Upload::Service(e)) if mode == PutMode::Create && self.context.forbidden(&e) => {
                self.parts_refused.store(true, Ordering::Relaxed);
                self.put_whole_source(key, source).await
            }
            Err(Upload::Service(e)) => Err(self.put_error(key, e, mode).await),
            Err(Upload::Store(e)) => Err(e),
        }
    }

    /// Sends `source` in parts; the service's errors come back unexplained.
    async fn upload_parts(&self, key: &str, source: &Source<'_>) -> Result<(), Upload> {
        let location = self.backend.location(key)?;
        let upload = self.backend.inner().put_multipart(&location).await?;
        // Parts are sent from tasks of their own; a paced upload's throttle goes with them.
        let upload = Box::new(paced::PacedUpload(upload));
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let fed = match source {
            Source::Memory(data) => feed_memory(&mut writer, data).await,
            Source::File(local) => feed_file(&mut writer, local).await,
        };
        match fed {
            Ok(()) => writer.finish().await.map(drop).map_err(Upload::Service),
            Err(e) => {
                // Best effort: an upload left behind is invisible (never listed) and expires
                // under the bucket's lifecycle rule for incomplete uploads, if it has one.
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }

    /// A `Create` of `source` in one request, for credentials that may not stage parts. It
    /// holds the whole object in memory; the engine's large objects are packs of tens of MiB.
    async fn put_whole_source(&self, key: &str, source: Source<'_>) -> Result<(), StoreError> {
        let data = match source {
            Source::Memory(data) => data,
            Source::File(local) => {
                let read = tokio::fs::read(local).await;
                Bytes::from(read.map_err(|source| StoreError::Io {
                    path: local.display().to_string(),
                    source,
                })?)
            }
        };
        self.put_whole(key, data, PutMode::Create).await
    }

    /// One put request, with a refused one explained (see [`CloudStore::put_refusal`]).
    async fn put_whole(&self, key: &str, data: Bytes, mode: PutMode) -> Result<(), StoreError> {
        match self.backend.put(key, data, mode).await {
            Ok(()) => Ok(()),
            Err(StoreError::NotFound { .. }) => Err(self.context.bucket_not_found()),
            Err(StoreError::Backend { path, source }) => Err(self
                .put_refusal(key, source.as_ref(), mode)
                .await
                .unwrap_or_else(|| self.explain(StoreError::Backend { path, source }))),
            Err(other) => Err(other),
        }
    }

    /// What a put of `key` that the service refused (a 403 to accepted credentials) means: if
    /// the key is taken, a `Create` lost to the existing object ([`StoreError::AlreadyExists`],
    /// as append-only credentials answer where others get a 409 or 412) and an `Overwrite` was
    /// refused ([`StoreError::OperationRefused`]). None when the service did not refuse it, or
    /// the key is free (then the credentials may not write at all, which is
    /// [`StoreError::AuthFailed`]).
    async fn put_refusal(
        &self,
        key: &str,
        err: &(dyn std::error::Error + Send + Sync + 'static),
        mode: PutMode,
    ) -> Option<StoreError> {
        if !self.context.forbidden(err) || !self.exists(key).await.ok()? {
            return None;
        }
        Some(match mode {
            PutMode::Create => StoreError::AlreadyExists { path: key.into() },
            PutMode::Overwrite => self.context.refused(key, RefusedOperation::Overwrite, err),
        })
    }

    /// An upload error; a 404 on an upload can only mean the bucket has gone.
    async fn put_error(&self, key: &str, err: object_store::Error, mode: PutMode) -> StoreError {
        if let Some(refusal) = self.put_refusal(key, &err, mode).await {
            return refusal;
        }
        match self.explain_raw(key, err, false) {
            StoreError::NotFound { .. } => self.context.bucket_not_found(),
            other => other,
        }
    }
}

/// Why a multipart upload failed: the service's error, still to be explained, or ours.
enum Upload {
    Service(object_store::Error),
    Store(StoreError),
}

impl From<object_store::Error> for Upload {
    fn from(err: object_store::Error) -> Upload {
        Upload::Service(err)
    }
}

impl From<StoreError> for Upload {
    fn from(err: StoreError) -> Upload {
        Upload::Store(err)
    }
}

async fn feed_memory(writer: &mut WriteMultipart, data: &Bytes) -> Result<(), Upload> {
    for start in (0..data.len()).step_by(PART_SIZE) {
        writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
        writer.put(data.slice(start..data.len().min(start + PART_SIZE)));
    }
    Ok(())
}

/// Streams `local` into `writer` a part at a time, so memory stays bounded whatever the
/// file's size.
async fn feed_file(writer: &mut WriteMultipart, local: &Path) -> Result<(), Upload> {
    let io_error = |source| StoreError::Io {
        path: local.display().to_string(),
        source,
    };
    let mut file = tokio::fs::File::open(local).await.map_err(io_error)?;
    loop {
        writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
        let mut part = Vec::with_capacity(PART_SIZE);
        let read = (&mut file)
            .take(PART_SIZE as u64)
            .read_to_end(&mut part)
            .await
            .map_err(io_error)?;
        if read == 0 {
            return Ok(());
        }
        writer.put(Bytes::from(part));
    }
}

#[async_trait]
impl Store for CloudStore {
    async fn put(&self, path: &str, data: Bytes, mode: PutMode) -> Result<(), StoreError> {
        validate_key(path)?;
        self.ready().await?;
        if data.len() as u64 > self.multipart_threshold {
            return self.put_large(path, Source::Memory(data), mode).await;
        }
        self.put_whole(path, data, mode).await
    }

    async fn get_range(&self, path: &str, range: Option<Range<u64>>) -> Result<Bytes, StoreError> {
        validate_key(path)?;
        self.ready().await?;
        let got = self.backend.get_range(path, range).await;
        got.map_err(|e| self.explain(e))
    }

    async fn head(&self, path: &str) -> Result<ObjectMeta, StoreError> {
        validate_key(path)?;
        self.ready().await?;
        self.backend.head(path).await.map_err(|e| self.explain(e))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        normalize_prefix(prefix)?;
        self.ready().await?;
        self.backend.list(prefix).await.map_err(|e| self.explain(e))
    }

    async fn delete(&self, path: &str) -> Result<(), StoreError> {
        validate_key(path)?;
        self.ready().await?;
        match self.backend.delete(path).await {
            Err(StoreError::Backend { source, .. }) if self.context.forbidden(source.as_ref()) => {
                Err(self
                    .context
                    .refused(path, RefusedOperation::Delete, source.as_ref()))
            }
            other => other.map_err(|e| self.explain(e)),
        }
    }

    fn describe(&self) -> String {
        self.backend.describe()
    }

    fn requests_in_flight(&self) -> usize {
        self.requests_in_flight
    }

    /// Uploads in parts, streaming from the file, when it is larger than the multipart
    /// threshold; otherwise reads it and puts it in one request.
    async fn put_file(&self, path: &str, local: &Path, mode: PutMode) -> Result<(), StoreError> {
        validate_key(path)?;
        let io_error = |source| StoreError::Io {
            path: local.display().to_string(),
            source,
        };
        let size = tokio::fs::metadata(local).await.map_err(io_error)?.len();
        if size <= self.multipart_threshold {
            let data = tokio::fs::read(local).await.map_err(io_error)?;
            return self.put(path, Bytes::from(data), mode).await;
        }
        self.ready().await?;
        self.put_large(path, Source::File(local), mode).await
    }

    /// `put_file` with every request body paced on its way to the socket (see the `paced`
    /// module): the single request of a small file, and each part of a multipart upload.
    async fn put_file_throttled(
        &self,
        path: &str,
        local: &Path,
        mode: PutMode,
        throttle: &Throttle,
    ) -> Result<(), StoreError> {
        paced::scope(throttle.clone(), self.put_file(path, local, mode)).await
    }
}

/// `endpoint` without any `user:password@` part, for messages.
fn without_userinfo(endpoint: &str) -> String {
    let Some((scheme, rest)) = endpoint.split_once("://") else {
        return endpoint.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => endpoint.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_removed_from_endpoints() {
        assert_eq!(
            without_userinfo("http://u:p@127.0.0.1:9/x@y"),
            "http://127.0.0.1:9/x@y"
        );
        assert_eq!(without_userinfo("https://h/a"), "https://h/a");
        assert_eq!(without_userinfo("weird"), "weird");
    }
}
