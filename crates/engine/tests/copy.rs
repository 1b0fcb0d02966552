//! Copying recovery points to the same machine in another vault (`Repository::copy_to`), and
//! the vault states and names that go with a second vault.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rbackup_engine::crypto::{KdfParams, Passphrase};
use rbackup_engine::{
    Cancel, CopyOptions, EngineError, Progress, Repository, RestoreOptions, SystemClock, Unlock,
    Vault, VaultState,
};
use support::{Env, env, noise, snapshot, write};

const PASS: &str = "prune tests passphrase";

/// A second local vault in `e`'s work dir, with the machine of `e` registered in it by
/// `register_copy`, opened with the passphrase (so the new key file is proven to work).
async fn second_vault(e: &Env, name: &str) -> (Vault, Repository) {
    let root = e.dir(name);
    let url = format!("file://{}", root.display());
    let store = rbackup_engine::store::open(&url, &Default::default()).unwrap();
    let (vault, creds) = Vault::create(store, &url, Duration::from_secs(600))
        .await
        .unwrap();
    let pass = Passphrase::new(PASS).unwrap();
    vault
        .register_copy(&creds, &e.repo, &pass, KdfParams::fast_insecure_for_tests())
        .await
        .unwrap();
    let again = vault
        .register_copy(&creds, &e.repo, &pass, KdfParams::fast_insecure_for_tests())
        .await
        .unwrap_err();
    assert!(
        matches!(again, EngineError::MachineExists { .. }),
        "{again:?}"
    );
    let repo = Repository::open(&vault, &e.machine, Unlock::Passphrase(&pass), None)
        .await
        .unwrap();
    (vault, repo)
}

fn options() -> CopyOptions {
    let mut o = CopyOptions::default();
    o.threads = 1;
    o
}

async fn restore_exact(repo: &Repository, e: &Env, rp: &str, src: &Path, expected: &support::Tree) {
    let target = e.work.path().join(format!("copy-restored-{rp}"));
    let recovery = e.work.path().join("recovery");
    repo.restore(RestoreOptions::new(rp, &target, &recovery))
        .await
        .unwrap();
    let back = target.join(src.strip_prefix("/").unwrap());
    assert_eq!(
        &snapshot(&back),
        expected,
        "recovery point {rp} from the copy"
    );
    std::fs::remove_dir_all(&target).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn every_point_is_copied_restores_from_the_copy_and_a_second_copy_sends_nothing() {
    let e = env().await;
    let src = e.dir("src");
    write(&src, "big.bin", &noise(3 << 20, 1));
    write(&src, "small.txt", b"a small file");
    write(&src, "deep/er/file.txt", b"deeper");
    let first = e.backup(&[&src], None).await;
    let v1 = snapshot(&src);
    write(&src, "small.txt", b"a changed small file");
    write(&src, "new.bin", &noise(1 << 20, 2));
    let second = e.backup(&[&src], None).await;
    let v2 = snapshot(&src);
    let (_, dest) = second_vault(&e, "dest").await;

    let r = e.repo.copy_to(&dest, options()).await.unwrap();
    let ids = |r: &rbackup_engine::BackupReport| r.recovery_point.clone().unwrap();
    assert_eq!(r.copied, vec![ids(&first), ids(&second)], "{r:?}");
    assert!(r.already_there.is_empty() && r.packs > 0, "{r:?}");
    // Deduplicated within the copy: the second point's unchanged blobs went once.
    assert!(r.bytes_read < (5 << 20) + (1 << 16), "{r:?}");
    restore_exact(&dest, &e, &ids(&first), &src, &v1).await;
    restore_exact(&dest, &e, &ids(&second), &src, &v2).await;
    let c = dest.check(true).await.unwrap();
    assert!(c.ok() && c.unreferenced_packs == 0, "{c:?}");

    let again = e.repo.copy_to(&dest, options()).await.unwrap();
    assert!(again.copied.is_empty(), "{again:?}");
    assert_eq!(again.already_there.len(), 2);
    assert_eq!((again.packs, again.bytes_read), (0, 0), "{again:?}");

    // A new point: only what it adds is read and written.
    write(&src, "third.bin", &noise(512 << 10, 3));
    let third = e.backup(&[&src], None).await;
    let r3 = e.repo.copy_to(&dest, options()).await.unwrap();
    assert_eq!(r3.copied, vec![ids(&third)]);
    assert!(
        r3.bytes_read >= 512 << 10 && r3.bytes_read < (512 << 10) + (64 << 10),
        "{r3:?}"
    );
}

/// Stops the copy once `after` bytes have been read.
struct StopAfter {
    after: u64,
    seen: AtomicU64,
    cancel: Cancel,
}

impl Progress for StopAfter {
    fn bytes(&self, n: u64) {
        if self.seen.fetch_add(n, Ordering::SeqCst) + n >= self.after {
            self.cancel.cancel();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_copy_keeps_what_it_uploaded_and_the_next_one_goes_on_from_there() {
    let e = env().await;
    let src = e.dir("src");
    for i in 0..12 {
        write(&src, &format!("f{i}.bin"), &noise(1 << 20, 10 + i));
    }
    let point = e.backup(&[&src], None).await;
    let expected = snapshot(&src);
    let (_, dest) = second_vault(&e, "dest").await;

    let cancel = Cancel::default();
    let mut o = options();
    o.cancel = cancel.clone();
    o.progress = Arc::new(StopAfter {
        after: 6 << 20,
        seen: AtomicU64::new(0),
        cancel,
    });
    let stopped = e.repo.copy_to(&dest, o).await.unwrap_err();
    let EngineError::CopyStopped { copied: 0, packs } = stopped else {
        panic!("{stopped:?}");
    };
    assert!(packs > 0, "the stopped copy uploaded and indexed packs");
    assert!(
        dest.recovery_points().await.unwrap().is_empty(),
        "no recovery point is written for a point copied in part"
    );

    let resumed = e.repo.copy_to(&dest, options()).await.unwrap();
    assert_eq!(resumed.copied, vec![point.recovery_point.clone().unwrap()]);
    assert!(
        resumed.bytes_read <= 7 << 20,
        "the resumed copy read again what the stopped one had uploaded: {resumed:?}"
    );
    restore_exact(
        &dest,
        &e,
        point.recovery_point.as_deref().unwrap(),
        &src,
        &expected,
    )
    .await;
    let c = dest.check(true).await.unwrap();
    assert!(c.ok(), "{c:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_vault_refuses_backups_and_copies_and_still_restores() {
    let e = env().await;
    let src = e.dir("src");
    write(&src, "a.txt", b"kept");
    let point = e.backup(&[&src], None).await;
    let (mut dest_vault, dest) = second_vault(&e, "dest").await;

    let mut vault = e.vault.clone();
    assert_eq!(vault.state(), VaultState::Active);
    let old = vault
        .set_state(VaultState::ReadOnly, "owner@admin-host")
        .await
        .unwrap();
    assert!(old.is_none());
    let reopened = Vault::open(e.store(), e.vault.url()).await.unwrap();
    assert_eq!(reopened.state(), VaultState::ReadOnly);
    let rec = reopened.state_record().unwrap();
    assert_eq!(rec.set_by, "owner@admin-host");
    let keys = rbackup_engine::crypto::MasterKeys::from_secret_bytes(
        &e.repo.master_keys().to_secret_bytes(),
    )
    .unwrap();
    let repo = Repository::open(&reopened, &e.machine, Unlock::Keys(keys), None)
        .await
        .unwrap();
    let refused = repo.backup(e.options(&[&src], None)).await.unwrap_err();
    assert!(
        matches!(&refused, EngineError::VaultReadOnly { set_by, .. } if set_by == "owner@admin-host"),
        "{refused:?}"
    );
    assert!(refused.to_string().contains("read-only"), "{refused}");
    // Restores, checks and listings go on; so does copying *out of* it.
    let expected = snapshot(&src);
    restore_exact(
        &repo,
        &e,
        point.recovery_point.as_deref().unwrap(),
        &src,
        &expected,
    )
    .await;
    assert!(repo.check(false).await.unwrap().ok());
    assert_eq!(repo.recovery_points().await.unwrap().len(), 1);
    assert_eq!(
        repo.copy_to(&dest, options()).await.unwrap().copied.len(),
        1
    );

    // A read-only destination refuses copies.
    dest_vault
        .set_state(VaultState::ReadOnly, "owner@admin-host")
        .await
        .unwrap();
    let pass = Passphrase::new(PASS).unwrap();
    let dest = Repository::open(&dest_vault, &e.machine, Unlock::Passphrase(&pass), None)
        .await
        .unwrap();
    let e2 = e.repo.copy_to(&dest, options()).await.unwrap_err();
    assert!(matches!(e2, EngineError::VaultReadOnly { .. }), "{e2:?}");

    // Active again: backups resume.
    vault
        .set_state(VaultState::Active, "owner@admin-host")
        .await
        .unwrap();
    let active = Vault::open(e.store(), e.vault.url()).await.unwrap();
    let keys = rbackup_engine::crypto::MasterKeys::from_secret_bytes(
        &e.repo.master_keys().to_secret_bytes(),
    )
    .unwrap();
    let repo = Repository::open(&active, &e.machine, Unlock::Keys(keys), None)
        .await
        .unwrap();
    assert!(repo.backup(e.options(&[&src], None)).await.is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_copy_into_a_machine_with_other_keys_is_refused() {
    let e = env().await;
    let src = e.dir("src");
    write(&src, "a.txt", b"x");
    e.backup(&[&src], None).await;
    let root = e.dir("other");
    let url = format!("file://{}", root.display());
    let store = rbackup_engine::store::open(&url, &Default::default()).unwrap();
    let pass = Passphrase::new(PASS).unwrap();
    let (vault, machine, keys) = support::register(store, &url, &pass).await;
    let other = Repository::open(&vault, &machine, Unlock::Keys(keys), None)
        .await
        .unwrap();
    let err = e.repo.copy_to(&other, options()).await.unwrap_err();
    assert!(matches!(err, EngineError::CopyKeysDiffer { .. }), "{err:?}");
    assert!(other.recovery_points().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_new_vault_name_follows_the_rules_and_a_bad_one_writes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let url = format!("file://{}", work.path().display());
    let store = rbackup_engine::store::open(&url, &Default::default()).unwrap();
    let clock = Arc::new(SystemClock::new());
    let day = Duration::from_secs(86_400);
    for bad in ["1st-vault", "v", "my_vault"] {
        let err = Vault::create_named(store.clone(), &url, Some(bad), day, clock.clone())
            .await
            .unwrap_err();
        assert!(
            matches!(err, EngineError::InvalidVaultName { .. }),
            "{err:?}"
        );
        assert!(!store.exists("vault.json").await.unwrap());
    }
    let (vault, _) = Vault::create_named(store.clone(), &url, Some("Backups-2026"), day, clock)
        .await
        .unwrap();
    assert_eq!(vault.name(), Some("Backups-2026"));
    let opened = Vault::open(store, &url).await.unwrap();
    assert_eq!(opened.name(), Some("Backups-2026"));
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_recovery_point_needs_every_tree_index_entry_and_pack() {
    let e = env().await;
    let src = e.dir("src");
    write(&src, "a.bin", &noise(2 << 20, 5));
    write(&src, "b/c.txt", b"text");
    let report = e.backup(&[&src], None).await;
    let id = report.recovery_point.unwrap();
    assert_eq!(
        e.repo
            .verify_recovery_point("latest")
            .await
            .unwrap()
            .to_hex(),
        id
    );
    assert_eq!(
        e.repo
            .verify_recovery_point(&id[..10])
            .await
            .unwrap()
            .to_hex(),
        id
    );
    let missing = e.repo.verify_recovery_point("ffffffff").await.unwrap_err();
    assert!(
        matches!(missing, EngineError::RecoveryPointNotFound { .. }),
        "{missing:?}"
    );
    // The data pack gone from the store (the largest: trees are small): the point cannot be
    // restored from here, and the error names the pack.
    let (pack, _) = e
        .objects("packs")
        .await
        .into_iter()
        .max_by_key(|(_, size)| *size)
        .unwrap();
    let path = format!("machines/{}/packs/{}/{pack}", e.machine, &pack[..2]);
    // Cut short: its size is not the indexed one.
    let store = e.store();
    let whole = store.get(&path).await.unwrap();
    let short = whole.slice(..whole.len() / 2);
    store
        .put(&path, short, rbackup_engine::store::PutMode::Overwrite)
        .await
        .unwrap();
    let err = e.repo.verify_recovery_point("latest").await.unwrap_err();
    match &err {
        EngineError::Corrupt { object, reason } => {
            assert_eq!(object, &format!("pack {pack}"), "{err}");
            assert!(
                matches!(reason, rbackup_engine::CorruptReason::PackMissing),
                "{err}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Gone: its blobs are in no index the store backs.
    store.delete(&path).await.unwrap();
    let err = e.repo.verify_recovery_point("latest").await.unwrap_err();
    assert!(
        matches!(
            &err,
            EngineError::Corrupt {
                reason: rbackup_engine::CorruptReason::NotIndexed,
                ..
            }
        ),
        "{err:?}"
    );
}
