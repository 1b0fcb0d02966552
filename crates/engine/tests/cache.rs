//! The metadata cache: an unchanged re-run lists the vault but downloads nothing.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rbackup_engine::crypto::Passphrase;
use rbackup_engine::store::{Bytes, ObjectMeta, PutMode, Store, StoreError};
use rbackup_engine::{BackupOptions, Repository, Unlock};

mod support;

/// Counts reads that fetch object content.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn Store>,
    reads: AtomicU64,
    read_bytes: AtomicU64,
}

#[async_trait::async_trait]
impl Store for Counting {
    async fn put(&self, path: &str, data: Bytes, mode: PutMode) -> Result<(), StoreError> {
        self.inner.put(path, data, mode).await
    }
    async fn get_range(&self, path: &str, range: Option<Range<u64>>) -> Result<Bytes, StoreError> {
        let b = self.inner.get_range(path, range).await?;
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.read_bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
        Ok(b)
    }
    async fn head(&self, path: &str) -> Result<ObjectMeta, StoreError> {
        self.inner.head(path).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, path: &str) -> Result<(), StoreError> {
        self.inner.delete(path).await
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn put_file(&self, path: &str, local: &Path, mode: PutMode) -> Result<(), StoreError> {
        self.inner.put_file(path, local, mode).await
    }
}

fn tree(root: &Path) {
    for d in 0..5 {
        let dir = root.join(format!("dir{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..40 {
            std::fs::write(
                dir.join(format!("f{f}.txt")),
                format!("file {d}/{f} ").repeat(200 + f),
            )
            .unwrap();
        }
    }
}

#[tokio::test]
async fn unchanged_rerun_downloads_nothing() {
    let work = tempfile::tempdir().unwrap();
    let url = format!("file://{}", work.path().join("vault").display());
    let inner = rbackup_engine::store::open(&url, &Default::default()).unwrap();
    let counting = Arc::new(Counting {
        inner,
        reads: AtomicU64::new(0),
        read_bytes: AtomicU64::new(0),
    });
    let pass = Passphrase::new("cache test passphrase!").unwrap();
    let (vault, machine, _) = support::register(counting.clone(), &url, &pass).await;
    let src = work.path().join("src");
    tree(&src);
    let cache = work.path().join("cache");
    let backup = |repo: Repository| {
        let (src, cache) = (src.clone(), cache.clone());
        async move {
            let mut o = BackupOptions::new([&src]);
            o.cache_dir = Some(cache);
            repo.backup(o).await.unwrap()
        }
    };
    let repo = Repository::open(&vault, &machine, Unlock::Passphrase(&pass), Some(&cache))
        .await
        .unwrap();
    let first = backup(repo).await;
    assert_eq!(first.files_new, 200);

    // A new process would open the repository afresh: only the cache carries over.
    let repo = Repository::open(&vault, &machine, Unlock::Passphrase(&pass), Some(&cache))
        .await
        .unwrap();
    let before = counting.reads.load(Ordering::Relaxed);
    let second = backup(repo).await;
    assert_eq!(second.files_unchanged, 200);
    assert_eq!(second.bytes_read, 0);
    assert_eq!(
        counting.reads.load(Ordering::Relaxed),
        before,
        "the unchanged re-run downloaded something"
    );

    // Without the cache the same run must download the metadata: the test can fail.
    let empty = work.path().join("nocache");
    let repo = Repository::open(&vault, &machine, Unlock::Passphrase(&pass), Some(&empty))
        .await
        .unwrap();
    let before = counting.reads.load(Ordering::Relaxed);
    let mut o = BackupOptions::new([&src]);
    o.cache_dir = Some(empty);
    let third = repo.backup(o).await.unwrap();
    // A new cache dir has no files cache either: the files are read again (their inode and
    // ctime are not in the trees).
    assert_eq!((third.files_unchanged, third.files_changed), (0, 200));
    assert!(counting.reads.load(Ordering::Relaxed) > before);
}
