//! A store wrapper with the permissions of an append-only machine: create and read, never
//! delete or overwrite. Every refused attempt is recorded, so a test can show that an
//! operation did not even try.

use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rbackup_engine::Throttle;
use rbackup_engine::store::{Bytes, ObjectMeta, PutMode, Store, StoreError};

/// Refuses `delete` and every `PutMode::Overwrite` put, as a store whose credentials lack
/// those permissions does; everything else goes to `inner`.
#[derive(Debug)]
pub struct AppendOnlyStore {
    inner: Arc<dyn Store>,
    refused: Mutex<Vec<String>>,
    calls: AtomicUsize,
}

impl AppendOnlyStore {
    pub fn new(inner: Arc<dyn Store>) -> Arc<AppendOnlyStore> {
        Arc::new(AppendOnlyStore {
            inner,
            refused: Mutex::new(Vec::new()),
            calls: AtomicUsize::new(0),
        })
    }

    /// Every refused attempt so far (`delete <key>`, `overwrite <key>`).
    pub fn refused(&self) -> Vec<String> {
        self.refused.lock().unwrap().clone()
    }

    /// How many calls the store received, of any kind.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn count(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
    }

    fn refuse(&self, what: &str, path: &str) -> StoreError {
        self.refused.lock().unwrap().push(format!("{what} {path}"));
        StoreError::PermissionDenied {
            path: path.into(),
            source: std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("these credentials may not {what} objects"),
            ),
        }
    }

    fn check(&self, path: &str, mode: PutMode) -> Result<(), StoreError> {
        self.count();
        match mode {
            PutMode::Overwrite => Err(self.refuse("overwrite", path)),
            _ => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl Store for AppendOnlyStore {
    async fn put(&self, path: &str, data: Bytes, mode: PutMode) -> Result<(), StoreError> {
        self.check(path, mode)?;
        self.inner.put(path, data, mode).await
    }

    async fn get_range(&self, path: &str, range: Option<Range<u64>>) -> Result<Bytes, StoreError> {
        self.count();
        self.inner.get_range(path, range).await
    }

    async fn head(&self, path: &str) -> Result<ObjectMeta, StoreError> {
        self.count();
        self.inner.head(path).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.count();
        self.inner.list(prefix).await
    }

    async fn delete(&self, path: &str) -> Result<(), StoreError> {
        self.count();
        Err(self.refuse("delete", path))
    }

    fn describe(&self) -> String {
        format!("append-only {}", self.inner.describe())
    }

    fn requests_in_flight(&self) -> usize {
        self.inner.requests_in_flight()
    }

    async fn put_file(&self, path: &str, local: &Path, mode: PutMode) -> Result<(), StoreError> {
        self.check(path, mode)?;
        self.inner.put_file(path, local, mode).await
    }

    async fn put_file_throttled(
        &self,
        path: &str,
        local: &Path,
        mode: PutMode,
        throttle: &Throttle,
    ) -> Result<(), StoreError> {
        self.check(path, mode)?;
        self.inner
            .put_file_throttled(path, local, mode, throttle)
            .await
    }
}
