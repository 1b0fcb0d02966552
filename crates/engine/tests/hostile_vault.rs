//! The vault is untrusted input: hostile ids, oversized objects, damaged key files and a
//! damaged metadata cache are refused or repaired, and nothing outside the allowed folders
//! changes.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rbackup_engine::crypto::Passphrase;
use rbackup_engine::store::{Bytes, ObjectMeta, PutMode, Store, StoreError};
use rbackup_engine::{CorruptReason, EngineError, Repository, Unlock, Vault};

mod support;

/// BLAKE3 of every file under `dir`, by relative path.
fn checksums(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(dir) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let hash = blake3::hash(&std::fs::read(e.path()).unwrap());
            let rel = e.path().strip_prefix(dir).unwrap().to_path_buf();
            out.insert(rel, hash.to_hex().to_string());
        }
    }
    out
}

/// A file:// vault under `work/vault` with one registered machine.
async fn local_vault(
    work: &Path,
    pass: &Passphrase,
) -> (
    Arc<dyn Store>,
    String,
    Vault,
    String,
    rbackup_engine::crypto::MasterKeys,
) {
    let root = work.join("vault");
    std::fs::create_dir_all(&root).unwrap();
    let url = format!("file://{}", root.display());
    let store = rbackup_engine::store::open(&url, &Default::default()).unwrap();
    let (vault, machine, keys) = support::register(store.clone(), &url, pass).await;
    (store, url, vault, machine, keys)
}

#[tokio::test]
async fn a_hostile_vault_id_is_refused_before_any_folder_is_derived_from_it() {
    let work = tempfile::tempdir().unwrap();
    let pass = Passphrase::new("hostile vault passphrase").unwrap();
    let (store, url, _vault, _machine, _keys) = local_vault(work.path(), &pass).await;
    // The decoy: where "../../x" from the cache's meta folder would land, and the cache itself.
    let decoy = work.path().join("decoy");
    std::fs::create_dir_all(decoy.join("x")).unwrap();
    std::fs::write(decoy.join("x/keep.txt"), b"not yours").unwrap();
    let cache = decoy.join("cache");
    let original: serde_json::Value =
        serde_json::from_slice(&store.get("vault.json").await.unwrap()).unwrap();
    for bad in [
        "../../x",
        "..",
        "",
        "/etc",
        "0123456789ABCDEF0123456789ABCDEF",
        "0123456789abcdef0123456789abcdef/..",
        "0123456789abcdef0123456789abcdef0",
    ] {
        let mut hostile = original.clone();
        hostile["vault_id"] = bad.into();
        let bytes = Bytes::from(serde_json::to_vec(&hostile).unwrap());
        store
            .put("vault.json", bytes, PutMode::Overwrite)
            .await
            .unwrap();
        let before = checksums(work.path());

        let err = Vault::open(store.clone(), &url).await.unwrap_err();
        assert!(
            matches!(&err, EngineError::Corrupt { object, reason: CorruptReason::BadId { .. } }
                if object == "vault.json"),
            "{bad:?}: {err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("vault id") && msg.contains("vault.json"),
            "{msg}"
        );
        assert_eq!(checksums(work.path()), before, "{bad:?} changed files");
        assert!(!cache.exists(), "{bad:?}: a cache folder was created");
    }
}

#[tokio::test]
async fn machine_ids_that_are_not_ours_never_become_paths() {
    let work = tempfile::tempdir().unwrap();
    let pass = Passphrase::new("hostile vault passphrase").unwrap();
    let (store, _url, vault, machine, _keys) = local_vault(work.path(), &pass).await;
    // A folder that looks like a machine but is not named like one.
    let marker = store.get(&format!("machines/{machine}/machine.json")).await;
    store
        .put(
            "machines/NOT-A-MACHINE/machine.json",
            marker.unwrap(),
            PutMode::Create,
        )
        .await
        .unwrap();
    assert_eq!(vault.machines().await.unwrap(), vec![machine.clone()]);

    let cache = work.path().join("cache");
    for bad in ["../x", "..", "NOT-A-MACHINE", ""] {
        let err = Repository::open(&vault, bad, Unlock::Passphrase(&pass), Some(&cache))
            .await
            .unwrap_err();
        assert!(
            matches!(err, EngineError::MachineNotFound { .. }),
            "{bad:?}: {err}"
        );
    }
    assert!(!cache.exists());
}

/// Records every path read with `get_range`.
#[derive(Debug)]
struct Recording {
    inner: Arc<dyn Store>,
    reads: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl Store for Recording {
    async fn put(&self, path: &str, data: Bytes, mode: PutMode) -> Result<(), StoreError> {
        self.inner.put(path, data, mode).await
    }
    async fn get_range(&self, path: &str, range: Option<Range<u64>>) -> Result<Bytes, StoreError> {
        self.reads.lock().unwrap().push(path.to_string());
        self.inner.get_range(path, range).await
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
}

#[tokio::test]
async fn an_oversized_snapshot_is_refused_without_reading_it() {
    let work = tempfile::tempdir().unwrap();
    let pass = Passphrase::new("hostile vault passphrase").unwrap();
    let (store, url, _vault, machine, keys) = local_vault(work.path(), &pass).await;
    // 100 MiB, sparse: a download of it would show in the recorded reads.
    let name = "ab".repeat(32);
    let dir = work
        .path()
        .join(format!("vault/machines/{machine}/snapshots"));
    std::fs::create_dir_all(&dir).unwrap();
    let f = std::fs::File::create(dir.join(&name)).unwrap();
    f.set_len(100 << 20).unwrap();

    let recording = Arc::new(Recording {
        inner: store,
        reads: Mutex::new(Vec::new()),
    });
    let vault = Vault::open(recording.clone(), &url).await.unwrap();
    let repo = Repository::open(&vault, &machine, Unlock::Keys(keys), None)
        .await
        .unwrap();
    let err = repo.recovery_points().await.unwrap_err();
    assert!(
        matches!(&err, EngineError::Corrupt { reason: CorruptReason::TooLarge { size, max }, .. }
            if *size == 100 << 20 && *max < *size),
        "{err}"
    );
    let reads = recording.reads.lock().unwrap();
    assert!(!reads.iter().any(|p| p.ends_with(&name)), "{reads:?}");
}

#[tokio::test]
async fn a_key_file_with_refused_parameters_is_skipped_and_the_good_one_opens() {
    let work = tempfile::tempdir().unwrap();
    let pass = Passphrase::new("hostile vault passphrase").unwrap();
    let (store, _url, vault, machine, _keys) = local_vault(work.path(), &pass).await;
    let keys_dir = format!("machines/{machine}/keys");
    let mut pair: Vec<String> = store
        .list(&keys_dir)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.path)
        .collect();
    pair.sort();
    let good = pair[0].clone();
    let mut kf: serde_json::Value =
        serde_json::from_slice(&store.get(&good).await.unwrap()).unwrap();
    kf["kdf"]["m_cost_kib"] = (1u64 << 30).into(); // 1 TiB
    // Named to sort first, so it is tried before the good file.
    let huge = format!("{keys_dir}/{}", "0".repeat(64));
    let bytes = Bytes::from(serde_json::to_vec(&kf).unwrap());
    store.put(&huge, bytes, PutMode::Create).await.unwrap();

    let repo = Repository::open(&vault, &machine, Unlock::Passphrase(&pass), None)
        .await
        .unwrap();
    let skipped = repo.skipped_key_files();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0].path, huge);
    assert!(
        skipped[0].reason.contains("memory"),
        "{}",
        skipped[0].reason
    );

    // A wrong passphrase is still called that, with a damaged file beside the good one.
    let wrong = Passphrase::new("not the passphrase at all").unwrap();
    let err = Repository::open(&vault, &machine, Unlock::Passphrase(&wrong), None)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::WrongPassphrase { .. }), "{err}");

    // With only damaged files left, the error says so rather than blaming the passphrase.
    // (The good file's copy goes too: it would open the machine.)
    for p in &pair {
        store.delete(p).await.unwrap();
    }
    let garbage = format!("{keys_dir}/{}", "1".repeat(64));
    store
        .put(&garbage, Bytes::from_static(b"{ not json"), PutMode::Create)
        .await
        .unwrap();
    let err = Repository::open(&vault, &machine, Unlock::Passphrase(&pass), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::NoUsableKeyFile { damaged: 2, .. }),
        "{err}"
    );
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    checksums(dir).into_keys().collect()
}

/// Damages one cached index file, recovery point and tree pack with `damage`, then checks
/// that a backup and a restore still succeed and leave the vault's bytes in the cache.
async fn cache_damage_is_repaired(damage: fn(&Path)) {
    let env = support::env().await;
    let src = env.dir("src");
    for i in 0..30 {
        let body = format!("file {i} ").repeat(100 + i);
        std::fs::write(src.join(format!("f{i}.txt")), body).unwrap();
    }
    env.backup(&[&src], None).await;
    let expected = support::snapshot(&src);
    let cache = env
        .work
        .path()
        .join("cache/meta")
        .join(env.vault.id())
        .join(&env.machine);
    let cached = files_under(&cache);
    let mut damaged = Vec::new();
    for kind in ["index", "snapshots", "packs"] {
        let rel = cached
            .iter()
            .find(|p| p.starts_with(kind))
            .unwrap_or_else(|| panic!("no cached {kind} in {cached:?}"))
            .clone();
        damage(&cache.join(&rel));
        damaged.push(rel);
    }

    env.backup(&[&src], None).await;
    env.assert_restores("latest", &src, &expected).await;
    for rel in damaged {
        let key = format!("machines/{}/{}", env.machine, rel.display());
        let stored = env.store().get(&key).await.unwrap();
        let now = std::fs::read(cache.join(&rel)).unwrap();
        assert!(
            now == stored,
            "cache file {} was not replaced",
            rel.display()
        );
    }
}

/// Flips a bit of the first sealed message (past its 12-byte nonce): in a tree pack that is
/// the first tree blob, which every restore reads.
fn flip_a_byte(path: &Path) {
    let mut b = std::fs::read(path).unwrap();
    b[20] ^= 0x40;
    std::fs::write(path, b).unwrap();
}

/// Cuts the file inside its first sealed message, as a torn write would.
fn truncate(path: &Path) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(20)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flipped_byte_in_the_cache_is_evicted_and_fetched_again() {
    cache_damage_is_repaired(flip_a_byte).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_truncated_cache_file_is_evicted_and_fetched_again() {
    cache_damage_is_repaired(truncate).await;
}
