//! [`ObjectStoreBackend`]: any `object_store` store, seen through a key prefix.
//!
//! This is what the cloud backends are made of: an `object_store` builder makes the
//! `Arc<dyn ObjectStore>`, the vault URL's path becomes the prefix, and everything below stays
//! the same ([`CloudStore`](crate::CloudStore) adds error explanations and multipart uploads).
//! It also serves `memory://` (with `object_store::memory::InMemory`).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, LazyLock, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt, PutOptions, PutPayload};

use crate::key::{normalize_prefix, validate_key};
use crate::{ObjectMeta, PutMode, Store, StoreError};

/// A [`Store`] over an `object_store` implementation, with every key placed under `prefix`.
#[derive(Debug, Clone)]
pub struct ObjectStoreBackend {
    inner: Arc<dyn ObjectStore>,
    prefix: String,
    description: String,
}

/// Named in-memory stores, so `memory://NAME` opened twice in one process is one store. They
/// live until the process ends, which is what tests and embedding examples want.
static NAMED_MEMORY: LazyLock<Mutex<HashMap<String, Arc<InMemory>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

impl ObjectStoreBackend {
    /// Wraps `inner`, placing all keys under `prefix` ("" for none; one trailing '/' is
    /// ignored). The prefix follows the key rules, else [`StoreError::InvalidPath`].
    /// [`Store::describe`] shows `inner`'s `Display` form and the prefix until
    /// [`with_description`](Self::with_description) says otherwise.
    pub fn new(inner: Arc<dyn ObjectStore>, prefix: &str) -> Result<Self, StoreError> {
        let prefix = normalize_prefix(prefix)?.to_string();
        let description = if prefix.is_empty() {
            inner.to_string()
        } else {
            format!("{inner} (prefix {prefix})")
        };
        Ok(ObjectStoreBackend {
            inner,
            prefix,
            description,
        })
    }

    /// Replaces the text [`Store::describe`] returns (e.g. the vault URL, without credentials).
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// The store for `memory://NAME`: the same store for the same non-empty `name` within this
    /// process, a fresh private one for the empty name.
    pub fn memory(name: &str) -> Self {
        let store = if name.is_empty() {
            Arc::new(InMemory::new())
        } else {
            // A panic elsewhere while holding the lock leaves the map itself intact.
            let mut named = NAMED_MEMORY.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(named.entry(name.to_string()).or_default())
        };
        ObjectStoreBackend {
            inner: store,
            prefix: String::new(),
            description: format!("memory://{name}"),
        }
    }

    /// The wrapped `object_store` store.
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    /// The key prefix every object lives under ("" for none), without a trailing '/'.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The object_store location of `key`, after checking it against the key rules.
    pub(crate) fn location(&self, key: &str) -> Result<ObjectPath, StoreError> {
        validate_key(key)?;
        let full = if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        };
        ObjectPath::parse(full).map_err(|_| StoreError::InvalidPath { path: key.into() })
    }

    /// The key for a listed location, or None if it lies outside this backend's prefix.
    fn key_of<'a>(&self, location: &'a ObjectPath) -> Option<&'a str> {
        let full = location.as_ref();
        if self.prefix.is_empty() {
            Some(full)
        } else {
            full.strip_prefix(self.prefix.as_str())?.strip_prefix('/')
        }
    }

    /// Reads `range`, which is not empty, rejecting rather than clamping a range past the end.
    async fn read_bounded(
        &self,
        key: &str,
        location: &ObjectPath,
        range: Range<u64>,
    ) -> Result<Bytes, StoreError> {
        let options = GetOptions::new().with_range(Some(range.clone()));
        let map = |e| StoreError::from_object_store_read(key, e);
        match self.inner.get_opts(location, options).await {
            Ok(result) if result.meta.size >= range.end => result.bytes().await.map_err(map),
            Ok(result) => Err(invalid_range(key, range, result.meta.size)),
            Err(object_store::Error::NotFound { .. }) => {
                Err(StoreError::NotFound { path: key.into() })
            }
            // Backends reject a start past the end in their own words; say it in ours.
            Err(original) => match self.head(key).await {
                Ok(meta) if meta.size < range.end => Err(invalid_range(key, range, meta.size)),
                _ => Err(map(original)),
            },
        }
    }
}

fn invalid_range(key: &str, range: Range<u64>, size: u64) -> StoreError {
    StoreError::InvalidRange {
        path: key.into(),
        start: range.start,
        end: range.end,
        size,
    }
}

#[async_trait]
impl Store for ObjectStoreBackend {
    async fn put(&self, path: &str, data: Bytes, mode: PutMode) -> Result<(), StoreError> {
        let location = self.location(path)?;
        let mode = match mode {
            PutMode::Overwrite => object_store::PutMode::Overwrite,
            PutMode::Create => object_store::PutMode::Create,
        };
        self.inner
            .put_opts(&location, PutPayload::from(data), PutOptions::from(mode))
            .await
            .map(drop)
            .map_err(|e| StoreError::from_object_store(path, e))
    }

    async fn get_range(&self, path: &str, range: Option<Range<u64>>) -> Result<Bytes, StoreError> {
        let location = self.location(path)?;
        match range {
            None => {
                let result = self.inner.get(&location).await;
                let result = result.map_err(|e| StoreError::from_object_store_read(path, e))?;
                result
                    .bytes()
                    .await
                    .map_err(|e| StoreError::from_object_store_read(path, e))
            }
            // object_store rejects empty ranges, so check those (and reversed ones) by size.
            Some(range) if range.start >= range.end => {
                let size = self.head(path).await?.size;
                if range.start == range.end && range.end <= size {
                    Ok(Bytes::new())
                } else {
                    Err(invalid_range(path, range, size))
                }
            }
            Some(range) => self.read_bounded(path, &location, range).await,
        }
    }

    async fn head(&self, path: &str) -> Result<ObjectMeta, StoreError> {
        let location = self.location(path)?;
        let meta = self
            .inner
            .head(&location)
            .await
            .map_err(|e| StoreError::from_object_store_read(path, e))?;
        Ok(ObjectMeta {
            path: path.to_string(),
            size: meta.size,
        })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let prefix = normalize_prefix(prefix)?;
        let full = match (self.prefix.is_empty(), prefix.is_empty()) {
            (true, _) => prefix.to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{prefix}", self.prefix),
        };
        let full = ObjectPath::parse(&full).map_err(|_| StoreError::InvalidPath {
            path: prefix.into(),
        })?;
        let search = (!full.as_ref().is_empty()).then_some(&full);
        let metas: Vec<object_store::ObjectMeta> = self
            .inner
            .list(search)
            .try_collect()
            .await
            .map_err(|e| StoreError::from_object_store(prefix, e))?;
        let wanted = |key: &str| {
            prefix.is_empty()
                || key
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('/'))
        };
        Ok(metas
            .iter()
            .filter_map(|meta| {
                let key = self.key_of(&meta.location).filter(|k| wanted(k))?;
                Some(ObjectMeta {
                    path: key.to_string(),
                    size: meta.size,
                })
            })
            .collect())
    }

    async fn delete(&self, path: &str) -> Result<(), StoreError> {
        let location = self.location(path)?;
        match self.inner.delete(&location).await {
            Ok(()) => Ok(()),
            Err(e) => match StoreError::from_object_store_read(path, e) {
                missing if missing.is_not_found() => Ok(()),
                other => Err(other),
            },
        }
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}
