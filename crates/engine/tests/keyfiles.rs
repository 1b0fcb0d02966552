//! Key files in the vault: a second copy of each, damage found by `check` without the
//! passphrase and never reported as a wrong passphrase, repair, recovery key files, and the
//! plain objects (`machine.json`) and the config checked or authenticated.

use std::sync::Arc;

use rbackup_engine::crypto::{KdfParams, KeyFile, MasterKeys, Passphrase};
use rbackup_engine::store::{Bytes, PutMode, Store};
use rbackup_engine::{CorruptReason, EngineError, KeyFileState, Repository, Unlock, Vault};

mod support;

const PASS: &str = "key files test passphrase";

struct Machine {
    _work: tempfile::TempDir,
    store: Arc<dyn Store>,
    vault: Vault,
    id: String,
    keys: MasterKeys,
}

async fn machine() -> Machine {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("vault");
    std::fs::create_dir_all(&root).unwrap();
    let url = format!("file://{}", root.display());
    let store = rbackup_engine::store::open(&url, &Default::default()).unwrap();
    let (vault, id, keys) = support::register(store.clone(), &url, &pass()).await;
    Machine {
        _work: work,
        store,
        vault,
        id,
        keys,
    }
}

fn pass() -> Passphrase {
    Passphrase::new(PASS).unwrap()
}

fn same_keys(a: &MasterKeys) -> MasterKeys {
    MasterKeys::from_secret_bytes(&a.to_secret_bytes()).unwrap()
}

impl Machine {
    fn keys_dir(&self) -> String {
        format!("machines/{}/keys", self.id)
    }

    /// Key-file object paths, sorted: the primary of a pair sorts before its copy.
    async fn key_objects(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .store
            .list(&self.keys_dir())
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.path)
            .collect();
        v.sort();
        v
    }

    async fn flip(&self, path: &str, at: usize) {
        let mut b = self.store.get(path).await.unwrap().to_vec();
        b[at] ^= 0x01;
        self.store
            .put(path, Bytes::from(b), PutMode::Overwrite)
            .await
            .unwrap();
    }

    async fn open_pass(&self, p: &Passphrase) -> rbackup_engine::Result<Repository> {
        Repository::open(&self.vault, &self.id, Unlock::Passphrase(p), None).await
    }

    async fn open_keys(&self) -> rbackup_engine::Result<Repository> {
        let k = same_keys(&self.keys);
        Repository::open(&self.vault, &self.id, Unlock::Keys(k), None).await
    }
}

/// The byte offset of the wrapped keys' value in a key file's JSON: a flip there is damage
/// that, without a checksum, would look exactly like a wrong passphrase.
fn inside_wrapped(json: &[u8]) -> usize {
    let text = std::str::from_utf8(json).unwrap();
    text.find("\"wrapped\"").unwrap() + 20
}

#[tokio::test]
async fn registration_writes_each_key_file_twice_and_check_is_clean() {
    let m = machine().await;
    let objs = m.key_objects().await;
    assert_eq!(objs.len(), 2, "{objs:?}");
    assert_eq!(format!("{}.copy", objs[0]), objs[1]);
    let a = m.store.get(&objs[0]).await.unwrap();
    assert_eq!(
        a,
        m.store.get(&objs[1]).await.unwrap(),
        "the copy is the same bytes"
    );
    let parsed = KeyFile::parse(&a).unwrap();
    assert!(parsed.has_integrity_record());
    assert_eq!(
        parsed.bound_to(),
        Some(format!("{}/{}", m.vault.id(), m.id).as_str())
    );
    let repo = m.open_keys().await.unwrap();
    let report = repo.check(true).await.unwrap();
    assert!(report.ok(), "{:?}", report.errors);
    assert!(report.key_files.is_empty(), "{:?}", report.key_files);
}

#[tokio::test]
async fn a_damaged_key_file_is_bypassed_through_its_copy_then_found_and_repaired() {
    let m = machine().await;
    let objs = m.key_objects().await;
    let json = m.store.get(&objs[0]).await.unwrap();
    m.flip(&objs[0], inside_wrapped(&json)).await;

    // Unlocking skips the damaged file, says why, and opens with the copy.
    let repo = m.open_pass(&pass()).await.unwrap();
    let skipped = repo.skipped_key_files();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0].path, objs[0]);
    assert!(
        skipped[0].reason.contains("damaged"),
        "{}",
        skipped[0].reason
    );

    // `check` finds it with the master keys alone, naming the object.
    let report = m.open_keys().await.unwrap().check(false).await.unwrap();
    assert!(!report.ok());
    assert_eq!(report.key_files.len(), 1, "{:?}", report.key_files);
    assert_eq!(report.key_files[0].path, objs[0]);
    assert_eq!(report.key_files[0].state, KeyFileState::Damaged);
    assert!(report.errors[0].contains(&objs[0]), "{:?}", report.errors);

    // Repair rewrites the pair from the keys; the old objects go; check is clean again.
    let the_pass = pass();
    let fixed = repo.repair_key_files(&the_pass, KdfParams::fast_insecure_for_tests());
    let fixed = fixed.await.unwrap();
    assert!(
        fixed.passphrase_verified,
        "the intact copy checked the passphrase"
    );
    assert_eq!(fixed.removed.len(), 2, "{fixed:?}");
    let now = m.key_objects().await;
    assert_eq!(now.len(), 2);
    assert!(
        !now.contains(&objs[0]) && !now.contains(&objs[1]),
        "{now:?}"
    );
    let report = repo.check(false).await.unwrap();
    assert!(report.ok() && report.key_files.is_empty(), "{report:?}");
    assert!(
        m.open_pass(&pass())
            .await
            .unwrap()
            .skipped_key_files()
            .is_empty()
    );
    // Nothing to do a second time.
    let again = repo.repair_key_files(&the_pass, KdfParams::fast_insecure_for_tests());
    assert!(again.await.unwrap().written.is_none());
}

#[tokio::test]
async fn both_copies_damaged_is_damage_not_a_wrong_passphrase() {
    let m = machine().await;
    let objs = m.key_objects().await;
    for o in &objs {
        let json = m.store.get(o).await.unwrap();
        m.flip(o, inside_wrapped(&json)).await;
    }
    let err = m.open_pass(&pass()).await.unwrap_err();
    assert!(
        matches!(err, EngineError::NoUsableKeyFile { damaged: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("damaged"), "{err}");
    // With the intact files a wrong passphrase is still called that.
    let m = machine().await;
    let wrong = Passphrase::new("not the key files passphrase").unwrap();
    let err = m.open_pass(&wrong).await.unwrap_err();
    assert!(matches!(err, EngineError::WrongPassphrase { .. }), "{err}");
    // Nor does repair with a wrong passphrase change anything.
    let before = m.key_objects().await;
    let repo = m.open_keys().await.unwrap();
    m.store.delete(&before[1]).await.unwrap();
    let r = repo.repair_key_files(&wrong, KdfParams::fast_insecure_for_tests());
    assert!(matches!(r.await, Err(EngineError::WrongPassphrase { .. })));
    assert_eq!(m.key_objects().await, before[..1]);
}

#[tokio::test]
async fn a_missing_copy_and_a_stray_name_are_reported() {
    let m = machine().await;
    let objs = m.key_objects().await;
    m.store.delete(&objs[1]).await.unwrap();
    let stray = format!("{}/notes.txt", m.keys_dir());
    let bytes = Bytes::from_static(b"hello");
    m.store.put(&stray, bytes, PutMode::Create).await.unwrap();
    let report = m.open_keys().await.unwrap().check(false).await.unwrap();
    let states: Vec<_> = report
        .key_files
        .iter()
        .map(|i| (i.path.as_str(), i.state))
        .collect();
    assert!(
        states.contains(&(objs[1].as_str(), KeyFileState::Missing)),
        "{states:?}"
    );
    assert!(
        states.contains(&(stray.as_str(), KeyFileState::Damaged)),
        "{states:?}"
    );
    assert_eq!(report.errors.len(), 2, "{:?}", report.errors);
}

#[tokio::test]
async fn a_key_file_copied_from_another_machine_is_damage() {
    let a = machine().await;
    let b = machine().await;
    let from_b = b.store.get(&b.key_objects().await[0]).await.unwrap();
    let objs = a.key_objects().await;
    for o in &objs {
        a.store.delete(o).await.unwrap();
    }
    let planted = format!("{}/{}", a.keys_dir(), "ab".repeat(32));
    a.store
        .put(&planted, from_b, PutMode::Create)
        .await
        .unwrap();
    // Same passphrase, other machine: refused before Argon2id, as damage.
    let err = a.open_pass(&pass()).await.unwrap_err();
    assert!(
        matches!(err, EngineError::NoUsableKeyFile { damaged: 1, .. }),
        "{err}"
    );
}

/// An old vault: one version-1 key file, no copy. It opens; check says it has no integrity
/// record without failing; repair turns it into a version-2 pair.
#[tokio::test]
async fn a_vault_from_before_copies_opens_and_is_upgraded_by_repair() {
    let m = machine().await;
    let objs = m.key_objects().await;
    let v2 = KeyFile::parse(&m.store.get(&objs[0]).await.unwrap()).unwrap();
    let v1 = KeyFile {
        version: 1,
        bound_to: None,
        mac: None,
        checksum: None,
        ..v2
    };
    for o in &objs {
        m.store.delete(o).await.unwrap();
    }
    let legacy = format!("{}/{}", m.keys_dir(), "cd".repeat(32));
    let bytes = Bytes::from(v1.to_json());
    m.store.put(&legacy, bytes, PutMode::Create).await.unwrap();

    let repo = m.open_pass(&pass()).await.unwrap();
    assert!(repo.skipped_key_files().is_empty());
    let the_pass = pass();
    let report = repo.check(false).await.unwrap();
    assert!(report.ok(), "{:?}", report.errors);
    assert_eq!(report.key_files.len(), 1);
    assert_eq!(report.key_files[0].state, KeyFileState::NoIntegrityRecord);
    assert_eq!(report.key_files[0].path, legacy);

    let fixed = repo.repair_key_files(&the_pass, KdfParams::fast_insecure_for_tests());
    assert!(fixed.await.unwrap().passphrase_verified);
    let report = repo.check(false).await.unwrap();
    assert!(report.ok() && report.key_files.is_empty(), "{report:?}");
    assert_eq!(m.key_objects().await.len(), 2);
}

#[tokio::test]
async fn a_recovery_key_file_opens_the_machine_without_any_key_file_in_the_vault() {
    let m = machine().await;
    let repo = m.open_keys().await.unwrap();
    let export_pass = Passphrase::new("the export passphrase, another one").unwrap();
    let file = repo
        .export_key_file(&export_pass, KdfParams::fast_insecure_for_tests())
        .unwrap();
    let file = KeyFile::parse_printable(&file.to_printable().unwrap()).unwrap();
    for o in m.key_objects().await {
        m.store.delete(&o).await.unwrap();
    }
    let err = m.open_pass(&pass()).await.unwrap_err();
    assert!(matches!(err, EngineError::NoKeyFile { .. }), "{err}");

    let unlock = Unlock::KeyFile(&file, &export_pass);
    let opened = Repository::open(&m.vault, &m.id, unlock, None)
        .await
        .unwrap();
    assert_eq!(
        *opened.master_keys().to_secret_bytes(),
        *m.keys.to_secret_bytes()
    );
    // The machine's own passphrase does not open it; another machine does not take it.
    let err = Repository::open(&m.vault, &m.id, Unlock::KeyFile(&file, &pass()), None)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::WrongPassphrase { .. }), "{err}");
    let other = machine().await;
    let unlock = Unlock::KeyFile(&file, &export_pass);
    let err = Repository::open(&other.vault, &other.id, unlock, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            EngineError::Corrupt {
                reason: CorruptReason::KeyFileBinding { .. },
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_damaged_config_is_named_not_blamed_on_the_keys() {
    let m = machine().await;
    let config = format!("machines/{}/config", m.id);
    m.flip(&config, 40).await;
    for err in [
        m.open_keys().await.unwrap_err(),
        m.open_pass(&pass()).await.unwrap_err(),
    ] {
        assert!(
            matches!(&err, EngineError::Corrupt { object, .. } if object.contains("config")),
            "{err}"
        );
    }
    // Keys of another machine are still wrong keys.
    let other = MasterKeys::generate();
    let err = Repository::open(&m.vault, &m.id, Unlock::Keys(other), None)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::WrongPassphrase { .. }), "{err}");
}

#[tokio::test]
async fn machine_json_must_match_the_sealed_config() {
    let m = machine().await;
    let path = format!("machines/{}/machine.json", m.id);
    let text = String::from_utf8(m.store.get(&path).await.unwrap().to_vec()).unwrap();
    let created_at = text.find("\"created\"").unwrap() + 14;
    // A changed digit of the creation time still parses; check compares it with the config.
    let mut b = text.into_bytes();
    b[created_at] = if b[created_at] == b'1' { b'2' } else { b'1' };
    m.store
        .put(&path, Bytes::from(b), PutMode::Overwrite)
        .await
        .unwrap();
    let report = m.open_keys().await.unwrap().check(false).await.unwrap();
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert!(report.errors[0].contains(&path), "{:?}", report.errors);
}
