//! An append-only machine: its store credentials create and read but never delete or
//! overwrite ([`AppendOnlyStore`] refuses and records every such attempt). Backups (with
//! leases taken, refreshed and released), restores and checks must not even try; forget,
//! prune and key-file rewrites are refused by the engine before any store call; the lease
//! objects the machine leaves are removed by a delete-capable prune.

mod support;

use std::sync::Arc;
use std::time::Duration;

use rbackup_engine::crypto::{KdfParams, Passphrase};
use rbackup_engine::{
    BackupOptions, EngineError, ManualClock, PruneOptions, Repository, RestoreOptions,
    RetentionPolicy, Unlock, Vault,
};
use support::append_only::AppendOnlyStore;
use support::{manual_clock, noise, register_on, snapshot, write};

struct Machine {
    work: tempfile::TempDir,
    /// The machine's view of the vault.
    store: Arc<AppendOnlyStore>,
    repo: Repository,
    /// The same machine opened with delete-capable credentials (the admin host).
    admin: Repository,
    /// The vault's store as the admin sees it.
    full: Arc<dyn rbackup_engine::store::Store>,
    clock: Arc<ManualClock>,
}

async fn machine() -> Machine {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("vault");
    std::fs::create_dir_all(&root).unwrap();
    let url = format!("file://{}", root.display());
    let full = rbackup_engine::store::open(&url, &Default::default()).unwrap();
    let pass = Passphrase::new("append-only tests passphrase").unwrap();
    let clock = manual_clock();
    let (admin_vault, id, keys) = register_on(full.clone(), &url, &pass, clock.clone()).await;
    let store = AppendOnlyStore::new(full.clone());
    let vault = Vault::open(store.clone(), &url)
        .await
        .unwrap()
        .with_clock(clock.clone())
        .with_append_only(true);
    let copy = || rbackup_engine::crypto::MasterKeys::from_secret_bytes(&keys.to_secret_bytes());
    let cache = work.path().join("cache");
    let repo = Repository::open(&vault, &id, Unlock::Keys(copy().unwrap()), Some(&cache))
        .await
        .unwrap();
    assert!(repo.is_append_only(), "inherited from the vault handle");
    let admin = Repository::open(&admin_vault, &id, Unlock::Keys(keys), None)
        .await
        .unwrap();
    Machine {
        work,
        store,
        repo,
        admin,
        full,
        clock,
    }
}

impl Machine {
    fn options(&self, src: &std::path::Path) -> BackupOptions {
        self.clock.advance(Duration::from_secs(60));
        let mut o = BackupOptions::new([src]);
        o.cache_dir = Some(self.work.path().join("cache"));
        o.pack_size = 256 << 10;
        o.threads = 1;
        o.cache_rule = false;
        o
    }

    async fn listing(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .full
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|m| format!("{} {}", m.path, m.size))
            .collect();
        v.sort();
        v
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn backups_restores_and_checks_never_delete_or_overwrite() {
    let m = machine().await;
    let src = m.work.path().join("src");
    write(&src, "a.bin", &noise(700 << 10, 1));
    write(&src, "docs/b.txt", b"first version");
    let first = m.repo.backup(m.options(&src)).await.unwrap();
    let first_tree = snapshot(&src);
    write(&src, "docs/b.txt", b"second version, longer");
    write(&src, "c.bin", &noise(300 << 10, 2));
    // A backup stopped half-way (its task dropped, as on an error path): its lease is
    // released without a delete, and the next backup goes on from what it uploaded.
    let paused = support::start_paused(&m.repo, m.options(&src)).await;
    drop(paused);
    let second = m.repo.backup(m.options(&src)).await.unwrap();
    let second_tree = snapshot(&src);

    for (report, tree) in [(&first, &first_tree), (&second, &second_tree)] {
        let rp = report.recovery_point.as_deref().unwrap();
        let target = m.work.path().join(format!("restored-{rp}"));
        let recovery = m.work.path().join("recovery");
        m.repo
            .restore(RestoreOptions::new(rp, &target, &recovery))
            .await
            .unwrap();
        let back = target.join(src.strip_prefix("/").unwrap());
        assert_eq!(&snapshot(&back), tree);
    }
    let check = m.repo.check(true).await.unwrap();
    assert!(check.ok(), "{:?}", check.errors);
    assert_eq!(
        m.store.refused(),
        Vec::<String>::new(),
        "the machine attempted no delete and no overwrite"
    );

    // The admin's prune removes the lease objects the machine left (released ones).
    let leases_before = m.admin.leases().await.unwrap();
    assert!(leases_before.len() >= 3, "{leases_before:?}");
    let report = m.admin.prune(PruneOptions::default()).await.unwrap();
    assert!(report.lease_objects_removed >= 3, "{report:?}");
    assert!(m.admin.leases().await.unwrap().is_empty());
    assert!(m.repo.check(true).await.unwrap().ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_operations_are_refused_before_any_store_call() {
    let m = machine().await;
    let src = m.work.path().join("src");
    write(&src, "a.txt", b"one");
    m.repo.backup(m.options(&src)).await.unwrap();
    write(&src, "a.txt", b"two");
    m.repo.backup(m.options(&src)).await.unwrap();
    let before = m.listing().await;
    let calls = m.store.calls();

    let keep_one = RetentionPolicy {
        keep_last: Some(1),
        ..RetentionPolicy::default()
    };
    let pass = Passphrase::new("another passphrase here").unwrap();
    let kdf = KdfParams::fast_insecure_for_tests;
    let refusals = [
        m.repo.forget(&keep_one, None, false).await.map(drop),
        m.repo.prune(PruneOptions::default()).await.map(drop),
        m.repo.repair_key_files(&pass, kdf()).await.map(drop),
        m.repo.change_passphrase(&pass, kdf()).await,
        m.repo.remove_expired_leases(Duration::ZERO).await.map(drop),
    ];
    for (r, op) in refusals.into_iter().zip([
        "forget recovery points",
        "prune",
        "repair key files",
        "change the passphrase",
        "remove expired leases",
    ]) {
        match r {
            Err(EngineError::AppendOnly { operation, machine }) => {
                assert_eq!(operation, op);
                assert_eq!(machine, m.repo.machine_id());
            }
            other => panic!("{op}: {other:?}"),
        }
    }
    assert_eq!(m.store.calls(), calls, "refused before any store call");
    assert_eq!(m.listing().await, before, "nothing changed");

    // Dry runs change nothing, so they are allowed.
    let dry = m.repo.forget(&keep_one, None, true).await.unwrap();
    assert_eq!(dry.forgotten, 1);
    let mut opts = PruneOptions::default();
    opts.dry_run = true;
    m.repo.prune(opts).await.unwrap();
    assert_eq!(m.listing().await, before);
    assert!(m.store.refused().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handle_not_told_it_is_append_only_marks_its_lease_released_when_the_delete_is_refused() {
    let m = machine().await;
    let mut repo = m.repo.clone();
    repo.set_append_only(false);
    let lease = repo
        .take_lease(rbackup_engine::LeaseKind::Exclusive, "prune")
        .await
        .unwrap();
    let chain = lease.id();
    lease.release().await;
    let refused = m.store.refused();
    assert_eq!(refused.len(), 1, "one delete tried: {refused:?}");
    assert!(refused[0].starts_with("delete "), "{refused:?}");
    let leases = m.admin.leases().await.unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].0, chain);
    let info = leases[0].1.as_ref().unwrap();
    assert!(info.released, "{info:?}");
    // Released: the next prune (here the admin's) is not held back by it.
    m.admin.prune(PruneOptions::default()).await.unwrap();
    assert!(m.admin.leases().await.unwrap().is_empty());
}
