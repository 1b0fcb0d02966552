//! Shared by the prune tests: a `file://` vault in a temp dir, generated folders, backups and
//! exact restores.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rbackup_engine::crypto::{KdfParams, MasterKeys, Passphrase};
use rbackup_engine::store::Store;
use rbackup_engine::{
    BackupOptions, BackupReport, Registration, Repository, RestoreOptions, Unlock, Vault,
};

pub struct Env {
    pub work: tempfile::TempDir,
    pub vault: Vault,
    pub machine: String,
    pub repo: Repository,
}

/// Creates a vault on `store` and registers one machine (cheap KDF): the vault, the machine
/// id and its master keys.
pub async fn register(
    store: Arc<dyn Store>,
    url: &str,
    pass: &Passphrase,
) -> (Vault, String, MasterKeys) {
    let (vault, creds) = Vault::create(store, url, Duration::from_secs(600))
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

/// A registered machine in a fresh local vault, with a metadata cache.
pub async fn env() -> Env {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("vault");
    std::fs::create_dir_all(&root).unwrap();
    let url = format!("file://{}", root.display());
    let store = rbackup_engine::store::open(&url, &Default::default()).unwrap();
    let pass = Passphrase::new("prune tests passphrase").unwrap();
    let (vault, machine, keys) = register(store, &url, &pass).await;
    let cache = work.path().join("cache");
    let repo = Repository::open(&vault, &machine, Unlock::Keys(keys), Some(&cache))
        .await
        .unwrap();
    Env {
        work,
        vault,
        machine,
        repo,
    }
}

impl Env {
    pub fn dir(&self, name: &str) -> PathBuf {
        let d = self.work.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    pub fn options(&self, paths: &[&Path], job: Option<&str>) -> BackupOptions {
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

    pub async fn pack_bytes(&self) -> u64 {
        self.objects("packs").await.iter().map(|(_, s)| s).sum()
    }

    pub async fn check_clean(&self) {
        let c = self.repo.check(true).await.unwrap();
        assert!(c.ok(), "check --read-data: {:?}", c.errors);
        assert_eq!(c.unreferenced_packs, 0, "{c:?}");
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
