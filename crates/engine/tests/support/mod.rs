//! Shared by the prune tests: a `file://` vault in a temp dir, generated folders, backups and
//! exact restores.

#![allow(dead_code)]

pub mod append_only;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rbackup_engine::crypto::{KdfParams, MasterKeys, Passphrase};
use rbackup_engine::store::Store;
use rbackup_engine::{
    BackupOptions, BackupReport, Clock, ManualClock, Progress, Registration, Repository,
    RestoreOptions, SystemClock, Unlock, Vault,
};

pub struct Env {
    pub work: tempfile::TempDir,
    pub vault: Vault,
    pub machine: String,
    pub repo: Repository,
    /// The vault's clock: time moves only when a test advances it.
    pub clock: Arc<ManualClock>,
}

/// Creates a vault on `store` and registers one machine (cheap KDF): the vault, the machine
/// id and its master keys.
pub async fn register(
    store: Arc<dyn Store>,
    url: &str,
    pass: &Passphrase,
) -> (Vault, String, MasterKeys) {
    register_on(store, url, pass, Arc::new(SystemClock::new())).await
}

/// [`register`] with the vault on `clock`.
pub async fn register_on(
    store: Arc<dyn Store>,
    url: &str,
    pass: &Passphrase,
    clock: Arc<dyn Clock>,
) -> (Vault, String, MasterKeys) {
    let (vault, creds) = Vault::create_with_clock(store, url, Duration::from_secs(600), clock)
        .await
        .unwrap();
    let (machine, keys) = vault
        .register(
            &creds,
            Registration {
                name: "t".into(),
                hostname: "test-host".into(),
                passphrase: pass,
                kdf: KdfParams::fast_insecure_for_tests(),
                chunker: Default::default(),
            },
        )
        .await
        .unwrap();
    (vault, machine, keys)
}

/// A manual clock at a fixed moment (a Monday morning, UTC).
pub fn manual_clock() -> Arc<ManualClock> {
    ManualClock::new("2030-01-07T09:00:00+00:00[UTC]".parse().unwrap())
}

/// A registered machine in a fresh local vault on a [`manual_clock`], with a metadata cache.
pub async fn env() -> Env {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("vault");
    std::fs::create_dir_all(&root).unwrap();
    let url = format!("file://{}", root.display());
    let store = rbackup_engine::store::open(&url, &Default::default()).unwrap();
    let pass = Passphrase::new("prune tests passphrase").unwrap();
    let clock = manual_clock();
    let (vault, machine, keys) = register_on(store, &url, &pass, clock.clone()).await;
    let cache = work.path().join("cache");
    let repo = Repository::open(&vault, &machine, Unlock::Keys(keys), Some(&cache))
        .await
        .unwrap();
    Env {
        work,
        vault,
        machine,
        repo,
        clock,
    }
}

impl Env {
    pub fn dir(&self, name: &str) -> PathBuf {
        let d = self.work.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Options for a backup of `paths`. The clock moves on a second first, so that recovery
    /// points made one after the other have distinct times (retention orders by time).
    pub fn options(&self, paths: &[&Path], job: Option<&str>) -> BackupOptions {
        self.clock.advance(Duration::from_secs(1));
        let mut o = BackupOptions::new(paths.iter().copied());
        o.cache_dir = Some(self.work.path().join("cache"));
        o.job = job.map(str::to_string);
        // Small packs, one worker: several packs per backup, in a predictable order.
        o.pack_size = 512 << 10;
        o.threads = 1;
        // The 5% staging budget would ship every blob in a pack of its own at these sizes.
        o.cache_rule = false;
        o
    }

    pub async fn backup(&self, paths: &[&Path], job: Option<&str>) -> BackupReport {
        self.repo.backup(self.options(paths, job)).await.unwrap()
    }

    /// Restores `rp` and checks that `dir` comes back exactly as `expected`.
    pub async fn assert_restores(&self, rp: &str, dir: &Path, expected: &Tree) {
        let target = self.work.path().join(format!("restored-{rp}"));
        let recovery = self.work.path().join("recovery");
        self.repo
            .restore(RestoreOptions::new(rp, &target, &recovery))
            .await
            .unwrap();
        let back = target.join(dir.strip_prefix("/").unwrap());
        assert_eq!(&snapshot(&back), expected, "recovery point {rp} restored");
        std::fs::remove_dir_all(&target).unwrap();
    }

    pub fn store(&self) -> std::sync::Arc<dyn Store> {
        self.vault.store()
    }

    /// Object names (last path segment) under `machines/<id>/<dir>`.
    pub async fn objects(&self, dir: &str) -> Vec<(String, u64)> {
        let prefix = format!("machines/{}/{dir}", self.machine);
        let mut v: Vec<(String, u64)> = self
            .store()
            .list(&prefix)
            .await
            .unwrap()
            .into_iter()
            .map(|m| (m.path.rsplit('/').next().unwrap().to_string(), m.size))
            .collect();
        v.sort();
        v
    }

    /// Moves the vault's clock one day past the default soft-delete window: what `forget`
    /// soft-deleted is then reclaimed by the next prune, as it would be 15 days later.
    pub fn expire_deleted(&self) {
        let days = u64::from(rbackup_engine::DEFAULT_SOFT_DELETE_DAYS) + 1;
        self.clock.advance(Duration::from_secs(days * 86_400));
    }

    pub async fn pack_bytes(&self) -> u64 {
        self.objects("packs").await.iter().map(|(_, s)| s).sum()
    }

    pub async fn check_clean(&self) {
        let c = self.repo.check(true).await.unwrap();
        assert!(c.ok(), "check --read-data: {:?}", c.errors);
        assert_eq!(c.unreferenced_packs, 0, "{c:?}");
    }
}

/// Stops the walker at the first file until released.
struct Gate {
    hit: AtomicBool,
    reached: Mutex<Option<Sender<()>>>,
    release: Mutex<Receiver<()>>,
}

impl Progress for Gate {
    fn file(&self, _: &Path) {
        if !self.hit.swap(true, Ordering::SeqCst) {
            if let Some(tx) = self.reached.lock().unwrap().take() {
                tx.send(()).unwrap();
            }
            let _ = self.release.lock().unwrap().recv();
        }
    }
}

/// A backup running in a task, paused at its first file: it has taken its lease and loaded
/// the index it deduplicates against, and has read no file yet.
pub struct Paused {
    task: tokio::task::JoinHandle<rbackup_engine::Result<BackupReport>>,
    release: Sender<()>,
}

/// Starts a backup with `opts` (whose sources must hold a file) and returns once it is paused.
pub async fn start_paused(repo: &Repository, mut opts: BackupOptions) -> Paused {
    let (reached_tx, reached_rx) = channel();
    let (release_tx, release_rx) = channel();
    opts.progress = Arc::new(Gate {
        hit: AtomicBool::new(false),
        reached: Mutex::new(Some(reached_tx)),
        release: Mutex::new(release_rx),
    });
    let repo = repo.clone();
    let task = tokio::spawn(async move { repo.backup(opts).await });
    tokio::task::spawn_blocking(move || reached_rx.recv().unwrap())
        .await
        .unwrap();
    Paused {
        task,
        release: release_tx,
    }
}

impl Paused {
    /// Lets the backup go on and waits for its result.
    pub async fn finish(self) -> rbackup_engine::Result<BackupReport> {
        self.release.send(()).unwrap();
        self.task.await.unwrap()
    }
}

/// File contents under a directory, by relative path.
pub type Tree = BTreeMap<PathBuf, Vec<u8>>;

pub fn snapshot(dir: &Path) -> Tree {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(dir).unwrap().to_path_buf();
            (rel, std::fs::read(e.path()).unwrap())
        })
        .collect()
}

/// Deterministic incompressible bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn write(dir: &Path, name: &str, bytes: &[u8]) {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

/// The ids (hex) of the repository's recovery points, in the order it lists them.
#[allow(dead_code)]
pub async fn point_ids(repo: &Repository) -> Vec<String> {
    let points = repo.recovery_points().await.unwrap();
    points.iter().map(|(id, _)| id.to_hex()).collect()
}
