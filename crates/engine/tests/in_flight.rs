//! Requests in flight: a backup keeps `uploads` pack uploads going at once and a restore
//! `downloads` ranged reads, and both default to what the store asks for
//! (`Store::requests_in_flight`). The store here answers every pack request slowly, as a
//! store behind a link with latency does, and records the most requests it saw at once.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rbackup_engine::crypto::Passphrase;
use rbackup_engine::store::{Bytes, ObjectMeta, PutMode, Store, StoreError};
use rbackup_engine::{BackupOptions, Repository, RestoreOptions, Unlock};

mod support;

/// Delays every pack upload and pack read by `LATENCY` and records the peak concurrency.
#[derive(Debug)]
struct Slow {
    inner: Arc<dyn Store>,
    hint: usize,
    now: AtomicUsize,
    peak_puts: AtomicUsize,
    peak_gets: AtomicUsize,
}

// Long enough that even a debug build packs faster than the uploads drain.
const LATENCY: Duration = Duration::from_millis(200);

impl Slow {
    async fn slowly<T>(&self, path: &str, peak: &AtomicUsize, f: impl Future<Output = T>) -> T {
        if !path.contains("packs/") {
            return f.await;
        }
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        peak.fetch_max(n, Ordering::SeqCst);
        tokio::time::sleep(LATENCY).await;
        let out = f.await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        out
    }

    fn reset(&self) {
        self.peak_puts.store(0, Ordering::SeqCst);
        self.peak_gets.store(0, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl Store for Slow {
    async fn put(&self, path: &str, data: Bytes, mode: PutMode) -> Result<(), StoreError> {
        let put = self.inner.put(path, data, mode);
        self.slowly(path, &self.peak_puts, put).await
    }
    async fn get_range(&self, path: &str, range: Option<Range<u64>>) -> Result<Bytes, StoreError> {
        let get = self.inner.get_range(path, range);
        self.slowly(path, &self.peak_gets, get).await
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
        let put = self.inner.put_file(path, local, mode);
        self.slowly(path, &self.peak_puts, put).await
    }
    fn requests_in_flight(&self) -> usize {
        self.hint
    }
}

/// 24 files of 1 MiB of incompressible bytes: with 1 MiB packs, two dozen packs.
fn source(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for f in 0..24 {
        let bytes: Vec<u8> = (0..1 << 20)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        std::fs::write(root.join(format!("f{f:02}")), bytes).unwrap();
    }
}

struct Fixture {
    _work: tempfile::TempDir,
    slow: Arc<Slow>,
    repo: Repository,
    src: std::path::PathBuf,
    root: std::path::PathBuf,
}

async fn fixture(hint: usize) -> Fixture {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().to_path_buf();
    let url = format!("file://{}", root.join("vault").display());
    let slow = Arc::new(Slow {
        inner: rbackup_engine::store::open(&url, &Default::default()).unwrap(),
        hint,
        now: AtomicUsize::new(0),
        peak_puts: AtomicUsize::new(0),
        peak_gets: AtomicUsize::new(0),
    });
    let pass = Passphrase::new("in flight test passphrase").unwrap();
    let (vault, machine, _) = support::register(slow.clone(), &url, &pass).await;
    let cache = root.join("cache");
    let repo = Repository::open(&vault, &machine, Unlock::Passphrase(&pass), Some(&cache))
        .await
        .unwrap();
    let src = root.join("src");
    source(&src);
    Fixture {
        _work: work,
        slow,
        repo,
        src,
        root,
    }
}

impl Fixture {
    async fn backup(&self, uploads: usize) -> String {
        let mut o = BackupOptions::new([&self.src]);
        o.cache_dir = Some(self.root.join("cache"));
        o.pack_size = 1 << 20;
        o.cache_rule = false;
        o.uploads = uploads;
        let report = self.repo.backup(o).await.unwrap();
        assert_eq!(report.files_new, 24);
        report.recovery_point.unwrap()
    }

    async fn restore(&self, rp: &str, downloads: usize, name: &str) {
        let target = self.root.join(name);
        let mut o = RestoreOptions::new(rp, &target, self.root.join("recovery"));
        o.threads = 1;
        o.downloads = downloads;
        let report = self.repo.restore(o).await.unwrap();
        assert_eq!(report.files, 24);
        let restored = target.join(self.src.strip_prefix("/").unwrap());
        for f in 0..24 {
            let name = format!("f{f:02}");
            let (a, b) = (self.src.join(&name), restored.join(&name));
            assert!(
                std::fs::read(a).unwrap() == std::fs::read(b).unwrap(),
                "{name} differs"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_and_downloads_keep_the_asked_number_in_flight() {
    // The old fixed two uploads and one read a thread would fail every bound below.
    let f = fixture(2).await;
    let rp = f.backup(6).await;
    let puts = f.slow.peak_puts.load(Ordering::SeqCst);
    assert!((4..=6).contains(&puts), "peak uploads {puts}, asked for 6");

    f.slow.reset();
    f.restore(&rp, 6, "six").await;
    let gets = f.slow.peak_gets.load(Ordering::SeqCst);
    assert!((4..=6).contains(&gets), "peak reads {gets}, asked for 6");

    // One at a time really is one at a time: the counter above can tell the difference.
    f.slow.reset();
    f.restore(&rp, 1, "one").await;
    assert_eq!(f.slow.peak_gets.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_hint_is_the_default() {
    let f = fixture(5).await;
    let rp = f.backup(0).await;
    let puts = f.slow.peak_puts.load(Ordering::SeqCst);
    assert!(
        (3..=5).contains(&puts),
        "peak uploads {puts}, the store asked for 5"
    );

    f.slow.reset();
    f.restore(&rp, 0, "hinted").await;
    let gets = f.slow.peak_gets.load(Ordering::SeqCst);
    assert!(
        (3..=5).contains(&gets),
        "peak reads {gets}, the store asked for 5"
    );
}
