//! Unit tests of leases: dead holders, the lost rule, liveness.

use super::*;
use std::time::Duration;

use crate::{Registration, Unlock, Vault};
use jiff::Timestamp;
use rbackup_crypto::{KdfParams, MasterKeys, Passphrase};

async fn memory_repo(name: &str) -> Repository {
    memory_vault(name).await.2
}

/// A registered machine on a new `memory://` vault: the vault, the machine's keys, and the
/// machine opened with them.
async fn memory_vault(name: &str) -> (Vault, MasterKeys, Repository) {
    let url = format!("memory://{name}");
    let store = rbackup_store::open(&url, &Default::default()).unwrap();
    let (vault, creds) = Vault::create(store, &url, Duration::from_secs(600))
        .await
        .unwrap();
    let pass = Passphrase::new("lease tests passphrase").unwrap();
    let reg = Registration {
        name: "t".into(),
        hostname: "t".into(),
        passphrase: &pass,
        kdf: KdfParams::fast_insecure_for_tests(),
        chunker: Default::default(),
    };
    let (machine, keys) = vault.register(&creds, reg).await.unwrap();
    // Not `Clone` by design; a test may make a second copy through the secret bytes.
    let copy = MasterKeys::from_secret_bytes(&keys.to_secret_bytes()).unwrap();
    let repo = Repository::open(&vault, &machine, Unlock::Keys(copy), None)
        .await
        .unwrap();
    (vault, keys, repo)
}

/// A lease left behind (not refreshed, not deleted) that names `holder`.
async fn left_behind(repo: &Repository, holder: Holder) -> Id {
    let lease = repo.take_lease(LeaseKind::Shared, "backup").await.unwrap();
    write(&lease.shared, |i| i.holder = Some(holder), false)
        .await
        .unwrap();
    let id = lease.id();
    lease.abandon();
    id
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_lease_of_a_holder_gone_from_this_host_is_released() {
    let repo = memory_repo("lease-dead-holder").await;
    let me = Holder::current().unwrap();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let dead = Holder { pid, ..me.clone() };
    let dead_again = dead.clone();
    let elsewhere = Holder {
        host: format!("{}-elsewhere", me.host),
        ..dead
    };
    let remote = left_behind(&repo, elsewhere).await;
    let alive = left_behind(&repo, me).await;
    // Last: taking a lease releases dead ones, so an earlier one would be gone already.
    let killed = left_behind(&repo, dead_again).await;
    assert_eq!(repo.release_dead_leases().await.unwrap(), 1);
    let mut left: Vec<Id> = repo
        .leases()
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.0)
        .collect();
    left.sort();
    let mut want = vec![remote, alive];
    want.sort();
    assert_eq!(
        left, want,
        "the killed holder's lease {killed:?} went, no other"
    );
    // Taking a lease releases dead ones first, so nothing ever waits for them.
    left_behind(
        &repo,
        Holder {
            pid,
            ..Holder::current().unwrap()
        },
    )
    .await;
    let next = repo
        .take_lease(LeaseKind::Exclusive, "prune")
        .await
        .unwrap();
    let infos = repo.leases().await.unwrap();
    assert_eq!(infos.len(), 3, "{infos:?}");
    assert!(
        infos
            .iter()
            .all(|(_, i)| !i.as_ref().unwrap().holder_is_gone())
    );
    next.release().await;
}

fn state(valid_for: Duration) -> (LeaseState, Timestamp) {
    let now = Timestamp::from_second(1_900_000_000).unwrap();
    let info = LeaseInfo {
        kind: LeaseKind::Shared,
        purpose: "backup".into(),
        hostname: "h".into(),
        pid: 1,
        created: now.to_string(),
        expires: plus(now, valid_for).to_string(),
        honours: Vec::new(),
        holder: None,
        released: false,
    };
    let s = LeaseState {
        info,
        seq: 1,
        valid_until: plus(now, valid_for),
        lost: false,
    };
    (s, now)
}

#[test]
fn a_lease_is_lost_once_less_than_a_third_of_its_ttl_is_left_and_stays_lost() {
    let ttl = Duration::from_secs(60);
    let (mut s, now) = state(Duration::from_secs(45));
    note_if_lost(&mut s, now, ttl);
    assert!(!s.lost, "45 s of 60 left");
    let (mut s, now) = state(Duration::from_secs(19));
    note_if_lost(&mut s, now, ttl);
    assert!(s.lost, "19 s of 60 left");
    // A later successful refresh does not make it held again.
    s.valid_until = plus(now, ttl);
    note_if_lost(&mut s, now, ttl);
    assert!(s.lost);
}

#[test]
fn liveness_follows_the_expiry_and_unreadable_counts_as_live() {
    let (s, now) = state(Duration::from_secs(10));
    assert!(s.info.is_live(now));
    assert!(!s.info.is_live(plus(now, Duration::from_secs(11))));
    let mut odd = s.info.clone();
    odd.expires = "soon".into();
    assert!(odd.is_live(plus(now, Duration::from_secs(1 << 30))));
}

/// Any command opens the machine first (check, restore, forget as well as backup and
/// prune): opening it is what clears a killed holder's lease.
#[tokio::test(flavor = "multi_thread")]
async fn opening_the_machine_releases_the_lease_of_a_killed_holder() {
    let (vault, keys, repo) = memory_vault("lease-open-releases").await;
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let me = Holder::current().unwrap();
    let alive = left_behind(&repo, me.clone()).await;
    left_behind(&repo, Holder { pid, ..me }).await;
    assert_eq!(repo.leases().await.unwrap().len(), 2);

    let again = Repository::open(&vault, repo.machine_id(), Unlock::Keys(keys), None)
        .await
        .unwrap();
    let left: Vec<Id> = again
        .leases()
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.0)
        .collect();
    assert_eq!(left, vec![alive], "only the live holder's lease is left");
}

/// The names of the objects under `locks/`, sorted.
async fn lock_names(repo: &Repository) -> Vec<String> {
    let mut names: Vec<String> = repo
        .store
        .list(&repo.path(KIND))
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.path.rsplit('/').next().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn lease_object_names_have_one_form_each() {
    let chain = Id::random();
    let hex = chain.to_hex();
    for seq in [0, 1, 9, 10, u32::MAX] {
        let o = LeaseObject { chain, seq };
        assert_eq!(LeaseObject::parse(&o.name()), Some(o), "{}", o.name());
    }
    assert_eq!(
        LeaseObject { chain, seq: 0 }.name(),
        hex,
        "seq 0 is the old form"
    );
    for bad in [
        format!("{hex}-0"),
        format!("{hex}-01"),
        format!("{hex}-+1"),
        format!("{hex}--1"),
        format!("{hex}-"),
        format!("{hex}-4294967296"),
        format!("{hex}-1-2"),
        format!("{}-1", &hex[..63]),
        format!("{}-1", hex.to_uppercase()),
        "../x-1".to_string(),
        String::new(),
    ] {
        assert_eq!(LeaseObject::parse(&bad), None, "{bad:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_write_is_a_new_object_and_the_newest_is_the_lease() {
    let repo = memory_repo("lease-chain-newest").await;
    let lease = repo.take_lease(LeaseKind::Shared, "backup").await.unwrap();
    let chain = lease.id().to_hex();
    let marker = Id::random();
    lease.honour(vec![marker]).await.unwrap();
    write(&lease.shared, |_| {}, false).await.unwrap();
    assert_eq!(
        lock_names(&repo).await,
        vec![
            format!("{chain}-1"),
            format!("{chain}-2"),
            format!("{chain}-3")
        ],
        "one create per write, nothing rewritten"
    );
    let leases = repo.leases().await.unwrap();
    assert_eq!(leases.len(), 1, "one lease, however many objects");
    let (id, info) = &leases[0];
    assert_eq!(*id, lease.id());
    assert_eq!(info.as_ref().unwrap().honours, vec![marker]);
    // The prune argument: a superseded object honours no more than the newest. Here the
    // first object (read alone, as a listing that raced the refreshes would) honours nothing.
    let first = LeaseObject {
        chain: lease.id(),
        seq: 1,
    };
    let bytes = repo.store.get(&repo.lease_path(&first)).await.unwrap();
    let old: LeaseInfo = codec::open_meta(&repo.keys, KIND, &first.name(), &bytes).unwrap();
    assert!(old.honours.is_empty());
    // Normal release: every object of the chain goes.
    lease.release().await;
    assert!(lock_names(&repo).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lease_of_an_earlier_release_is_read_as_seq_0_and_superseded_by_seq_1() {
    let repo = memory_repo("lease-legacy").await;
    let (s, now) = state(Duration::from_secs(600));
    let legacy = LeaseObject {
        chain: Id::random(),
        seq: 0,
    };
    let mut info = s.info.clone();
    info.created = repo.clock.now().to_string();
    info.expires = plus(repo.clock.now(), Duration::from_secs(600)).to_string();
    let sealed = codec::seal_meta(&repo.keys, KIND, &legacy.name(), &info);
    repo.store
        .put(&repo.lease_path(&legacy), sealed.into(), PutMode::Create)
        .await
        .unwrap();
    let leases = repo.leases().await.unwrap();
    assert_eq!(leases, vec![(legacy.chain, Some(info.clone()))]);
    // A newer object of the same chain wins (here: a released one, as an append-only
    // release of a killed holder writes).
    assert!(
        repo.write_released(legacy.chain, 0, info.clone(), now)
            .await
            .unwrap()
    );
    let leases = repo.leases().await.unwrap();
    assert_eq!(leases.len(), 1);
    assert!(leases[0].1.as_ref().unwrap().released);
    assert!(!leases[0].1.as_ref().unwrap().is_live(repo.clock.now()));
    // Released: both objects go, the legacy one included.
    assert_eq!(repo.remove_expired_leases(Duration::ZERO).await.unwrap(), 2);
    assert!(lock_names(&repo).await.is_empty());
}

/// A holder on this host whose process has exited.
fn dead_holder() -> Holder {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    Holder {
        pid,
        ..Holder::current().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_append_only_handle_releases_by_writing_and_deletes_nothing() {
    let (_vault, _keys, mut repo) = memory_vault("lease-append-only").await;
    repo.set_append_only(true);
    let prune = repo
        .take_lease(LeaseKind::Exclusive, "prune")
        .await
        .unwrap();
    write(&prune.shared, |_| {}, false).await.unwrap();
    let chain = prune.id().to_hex();
    prune.release().await;
    assert_eq!(
        lock_names(&repo).await,
        [1, 2, 3].map(|n| format!("{chain}-{n}")),
        "released by a third object, nothing deleted"
    );
    let leases = repo.leases().await.unwrap();
    assert!(leases[0].1.as_ref().unwrap().released);
    // Released, so the next prune need not wait for its TTL; dropped (an error path), it is
    // released the same way, in the background.
    let next = repo
        .take_lease(LeaseKind::Exclusive, "prune")
        .await
        .unwrap();
    let next_chain = next.id();
    drop(next);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let leases = repo.leases().await.unwrap();
        let l = leases.iter().find(|(id, _)| *id == next_chain).unwrap();
        if l.1.as_ref().unwrap().released {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the dropped lease was not released"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A killed holder's lease: one released object, once.
    let dead = left_behind(&repo, dead_holder()).await;
    let before = lock_names(&repo).await;
    assert_eq!(repo.release_dead_leases().await.unwrap(), 1);
    assert_eq!(repo.release_dead_leases().await.unwrap(), 0);
    let after = lock_names(&repo).await;
    assert!(before.iter().all(|n| after.contains(n)), "nothing deleted");
    assert_eq!(after.len(), before.len() + 1);
    assert!(after.contains(&format!("{}-3", dead.to_hex())));
    // Cleanup is the admin's: refused here, done by a handle that may delete.
    let refused = repo
        .remove_expired_leases(Duration::ZERO)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, EngineError::AppendOnly { .. }),
        "{refused}"
    );
    assert_eq!(lock_names(&repo).await, after);
    repo.set_append_only(false);
    let removed = repo.remove_expired_leases(Duration::ZERO).await.unwrap();
    assert_eq!(removed, after.len() as u64);
    assert!(lock_names(&repo).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn cleanup_keeps_the_newest_object_of_a_live_lease_until_it_ran_out_past_the_grace() {
    let (_vault, _keys, mut repo) = memory_vault("lease-cleanup-grace").await;
    repo.set_lease_ttl(Duration::from_millis(30));
    let lease = repo.take_lease(LeaseKind::Shared, "backup").await.unwrap();
    write(&lease.shared, |_| {}, false).await.unwrap();
    let chain = lease.id();
    lease.abandon();
    let names = lock_names(&repo).await;
    assert!(names.len() >= 2, "{names:?}");
    let hour = Duration::from_secs(3600);
    // Superseded objects go at once; the newest stays while it may count.
    assert_eq!(
        repo.remove_expired_leases(hour).await.unwrap(),
        names.len() as u64 - 1
    );
    let left = lock_names(&repo).await;
    assert_eq!(left, [names.last().unwrap().clone()]);
    assert_eq!(repo.leases().await.unwrap()[0].0, chain);
    // Run out, but not yet past the grace period: kept.
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(repo.remove_expired_leases(hour).await.unwrap(), 0);
    assert_eq!(lock_names(&repo).await, left);
    assert_eq!(repo.remove_expired_leases(Duration::ZERO).await.unwrap(), 1);
    assert!(repo.leases().await.unwrap().is_empty());
}
