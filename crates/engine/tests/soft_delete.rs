//! Soft delete through the public API: forget writes tombstones, listing leaves the points
//! out, an explicit listing and restore by id still reach them, prune keeps their data inside
//! the vault's window and reclaims it after; a forged tombstone hides nothing; the security
//! PIN guards shortening the window and purging at once. Time is the vault's manual clock.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use rbackup_engine::store::{Bytes, PutMode};
use rbackup_engine::{
    Actor, Clock, EngineError, Freshness, PinProblem, PruneOptions, RestoreOptions,
    RetentionPolicy, Vault, assess, assess_accounting,
};
use support::{env, noise, snapshot, write};

const DAY: Duration = Duration::from_secs(86_400);

fn keep_last(n: u32) -> RetentionPolicy {
    RetentionPolicy {
        keep_last: Some(n),
        ..Default::default()
    }
}

/// Prune with no grace: a first run purges and decides, a second carries the decision out
/// (`wait` would sleep on the manual clock).
fn prune_now() -> PruneOptions {
    let mut o = PruneOptions::default();
    o.grace = Duration::ZERO;
    o
}

/// Two prunes: the first's report (purges), and the packs the second deleted.
async fn prune_twice(e: &support::Env, opts: PruneOptions) -> (rbackup_engine::PruneReport, u64) {
    let first = e.repo.prune(opts).await.unwrap();
    e.clock.advance(Duration::from_secs(1));
    let second = e.repo.prune(prune_now()).await.unwrap();
    (first, second.packs_deleted)
}

/// Two recovery points of different content; returns (older id, newer id).
async fn two_points(e: &support::Env) -> (String, String, support::Tree) {
    let src = e.dir("src");
    write(&src, "old.bin", &noise(900 << 10, 1));
    let old = e.backup(&[&src], None).await.recovery_point.unwrap();
    let old_tree = snapshot(&src);
    std::fs::remove_file(src.join("old.bin")).unwrap();
    write(&src, "new.bin", &noise(300 << 10, 2));
    let new = e.backup(&[&src], None).await.recovery_point.unwrap();
    (old, new, old_tree)
}

#[tokio::test(flavor = "multi_thread")]
async fn forget_soft_deletes_and_listing_restore_and_undelete_follow() {
    let e = env().await;
    let (old, new, old_tree) = two_points(&e).await;
    let f = e.repo.forget(&keep_last(1), None, false).await.unwrap();
    assert_eq!((f.kept, f.forgotten), (1, 1));

    // The tombstone is an object of its own; the recovery point object stays.
    assert_eq!(e.objects("deleted").await.len(), 1);
    assert_eq!(e.objects("snapshots").await.len(), 2);
    assert_eq!(support::point_ids(&e.repo).await, [new.as_str()]);

    let listing = e.repo.recovery_point_listing().await.unwrap();
    assert_eq!(listing.live.len(), 1);
    assert!(listing.unreadable_tombstones.is_empty());
    let [d] = &listing.deleted[..] else {
        panic!("{:?}", listing.deleted)
    };
    assert_eq!(d.id, old);
    assert!(!d.purged);
    assert_eq!(d.reason, "keep last 1");
    assert_eq!(d.deleted_by, Actor::current(Some(&e.machine)));
    let deleted_at: jiff::Timestamp = d.deleted_at.parse().unwrap();
    assert_eq!(deleted_at, e.clock.now());
    let purge: jiff::Timestamp = d.purge_after.parse().unwrap();
    assert_eq!(purge.duration_since(deleted_at).as_secs(), 14 * 86_400);
    assert_eq!(d.days_left(e.clock.now()), 14);

    // `latest` never picks it; its id does, and the report says it is soft-deleted.
    let src = e.work.path().join("src");
    e.assert_restores(&old, &src, &old_tree).await;
    let target = e.work.path().join("t");
    let r = e
        .repo
        .restore(RestoreOptions::new(&old[..10], &target, e.dir("rec")))
        .await
        .unwrap();
    assert_eq!(
        r.soft_deleted.as_ref().map(|d| d.id.as_str()),
        Some(old.as_str())
    );
    let r = e
        .repo
        .restore(RestoreOptions::new("latest", e.dir("t2"), e.dir("rec")))
        .await
        .unwrap();
    assert_eq!(r.recovery_point, new);
    assert!(r.soft_deleted.is_none());

    // A second forget does not see it again.
    let f = e.repo.forget(&keep_last(1), None, false).await.unwrap();
    assert_eq!((f.kept, f.forgotten), (1, 0));

    let back = e.repo.undelete(&old[..8]).await.unwrap();
    assert_eq!(back.to_hex(), old);
    assert_eq!(
        support::point_ids(&e.repo).await,
        [old.clone(), new.clone()]
    );
    assert!(e.objects("deleted").await.is_empty());
    let again = e.repo.undelete(&old).await.unwrap_err();
    assert!(matches!(again, EngineError::NotDeleted { .. }), "{again}");
    e.check_clean().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_keeps_data_inside_the_window_and_reclaims_it_after() {
    let e = env().await;
    let (old, _new, old_tree) = two_points(&e).await;
    e.repo.forget(&keep_last(1), None, false).await.unwrap();
    let before = e.pack_bytes().await;

    // Inside the window: nothing is reclaimed, the point restores.
    e.clock.advance(13 * DAY);
    let (p, deleted) = prune_twice(&e, prune_now()).await;
    assert_eq!(p.recovery_points_purged, 0, "{p:?}");
    assert_eq!(p.soft_deleted_kept, 1);
    assert_eq!(p.recovery_points, 2, "soft-deleted points keep their data");
    assert_eq!((p.packs_doomed, deleted), (0, 0), "{p:?}");
    assert!(p.next_purge_after.is_some());
    assert_eq!(e.pack_bytes().await, before);
    let src = e.work.path().join("src");
    e.assert_restores(&old, &src, &old_tree).await;

    // After it: the point object goes, then its packs as any unreferenced ones.
    e.clock.advance(2 * DAY);
    let (p, deleted) = prune_twice(&e, prune_now()).await;
    assert_eq!(p.recovery_points_purged, 1, "{p:?}");
    assert_eq!(p.soft_deleted_kept, 0);
    assert!(deleted > 0, "{p:?}");
    assert!(e.pack_bytes().await < before - (800 << 10));
    assert_eq!(e.objects("snapshots").await.len(), 1);

    // Its tombstone stays: restore and undelete say it is gone for good.
    let err = e
        .repo
        .restore(RestoreOptions::new(&old, e.dir("t"), e.dir("rec")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::RecoveryPointPurged { .. }),
        "{err}"
    );
    let err = e.repo.undelete(&old).await.unwrap_err();
    assert!(
        matches!(err, EngineError::RecoveryPointPurged { .. }),
        "{err}"
    );
    let listing = e.repo.recovery_point_listing().await.unwrap();
    assert!(listing.deleted.iter().all(|d| d.purged));
    e.check_clean().await;

    // It goes once one more window has passed and no remaining point names it: here after
    // the point that named it is forgotten and purged in turn.
    let src = e.dir("src");
    write(&src, "newer.bin", &noise(1000, 3));
    e.backup(&[&src], None).await;
    e.repo.forget(&keep_last(1), None, false).await.unwrap();
    e.clock.advance(15 * DAY);
    let p = e.repo.prune(prune_now()).await.unwrap();
    assert_eq!(
        (p.recovery_points_purged, p.tombstones_removed),
        (1, 1),
        "{p:?}"
    );
    let left = e.repo.recovery_point_listing().await.unwrap().deleted;
    assert_eq!(
        left.len(),
        1,
        "the newly purged point's tombstone stays: {left:?}"
    );
    assert_ne!(left[0].id, old);
    assert_eq!(e.objects("deleted").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forged_or_damaged_tombstone_hides_nothing_and_check_reports_it() {
    let e = env().await;
    let (old, new, _) = two_points(&e).await;
    let store = e.store();
    let path = format!("machines/{}/deleted/{old}", e.machine);
    // Garbage, and then a tombstone sealed for the other point moved to this name.
    store
        .put(&path, Bytes::from_static(b"not sealed"), PutMode::Create)
        .await
        .unwrap();
    let listing = e.repo.recovery_point_listing().await.unwrap();
    assert_eq!(listing.live.len(), 2);
    assert!(listing.deleted.is_empty());
    assert_eq!(listing.unreadable_tombstones.len(), 1);
    let c = e.repo.check(false).await.unwrap();
    assert!(
        c.errors
            .iter()
            .any(|m| m.contains("tombstone") && m.contains(&old[..8])),
        "{:?}",
        c.errors
    );
    store.delete(&path).await.unwrap();

    e.repo.forget(&keep_last(1), None, false).await.unwrap();
    let real = store.get(&path).await.unwrap();
    let moved = format!("machines/{}/deleted/{new}", e.machine);
    store.put(&moved, real, PutMode::Create).await.unwrap();
    let listing = e.repo.recovery_point_listing().await.unwrap();
    assert_eq!(support::point_ids(&e.repo).await, [new.as_str()]);
    assert_eq!(listing.deleted.len(), 1, "only the real tombstone counts");
    assert_eq!(listing.unreadable_tombstones.len(), 1);

    // A forget over the unreadable name still records the deletion.
    e.clock.advance(Duration::from_secs(5));
    let src = e.dir("src");
    write(&src, "third.bin", &noise(1000, 9));
    e.backup(&[&src], None).await;
    let f = e.repo.forget(&keep_last(1), None, false).await.unwrap();
    assert_eq!(f.forgotten, 1);
    let listing = e.repo.recovery_point_listing().await.unwrap();
    assert!(listing.unreadable_tombstones.is_empty());
    assert_eq!(listing.deleted.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn freshness_counts_tombstoned_and_purged_points_as_accounted_for() {
    let e = env().await;
    let (old, _new, _) = two_points(&e).await;
    // A third point names the second; forget the first two, as another host would (the local
    // mark has not forgotten them).
    let src = e.dir("src");
    write(&src, "third.bin", &noise(1000, 4));
    e.backup(&[&src], None).await;
    let mut mark = Freshness::default();
    mark.observe(&e.repo.recovery_points().await.unwrap());
    let admin = Actor {
        hostname: "admin".into(),
        user: "root".into(),
        machine: None,
    };
    e.repo
        .forget_as(&keep_last(1), None, false, &admin)
        .await
        .unwrap();
    let listing = e.repo.recovery_point_listing().await.unwrap();
    assert!(listing.deleted.iter().all(|d| d.deleted_by == admin));
    let live = &listing.live;
    assert_eq!(live.len(), 1);
    // Without the tombstones the second point looks deleted by someone else.
    assert_eq!(assess(live, Some(&mark)).len(), 1);
    assert_eq!(
        assess_accounting(live, &listing.accounted(), Some(&mark)),
        vec![]
    );

    // After the purge the tombstones still account for them; a point deleted from the store
    // without one is reported.
    e.clock.advance(15 * DAY);
    prune_twice(&e, prune_now()).await;
    let listing = e.repo.recovery_point_listing().await.unwrap();
    assert_eq!(listing.deleted.len(), 2);
    assert!(listing.deleted.iter().all(|d| d.purged));
    let c = e.repo.check_with(check_opts(&mark)).await.unwrap();
    assert!(c.freshness.is_empty(), "{:?}", c.freshness);
    let named = listing.live[0].1.predecessors[0];
    let mut without: HashSet<_> = listing.accounted();
    assert!(without.iter().any(|id| id.to_hex() == old));
    without.remove(&named);
    assert_eq!(
        assess_accounting(&listing.live, &without, Some(&mark)).len(),
        1
    );
}

/// Why a critical operation was refused (it must have been, for the PIN).
fn refused<T: std::fmt::Debug>(r: Result<T, EngineError>) -> PinProblem {
    match r {
        Err(EngineError::PinRefused { problem }) => problem,
        other => panic!("{other:?}"),
    }
}

fn check_opts(mark: &Freshness) -> rbackup_engine::CheckOptions {
    let mut o = rbackup_engine::CheckOptions::new(false);
    o.freshness = Some(mark.clone());
    o
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pin_guards_shortening_the_window_and_purging_at_once() {
    let e = env().await;
    let (old, _new, _) = two_points(&e).await;
    e.repo.forget(&keep_last(1), None, false).await.unwrap();
    let mut vault = e.vault.clone();
    assert_eq!(vault.soft_delete_days(), 14);

    // Lengthening needs nothing; shortening needs the PIN.
    assert_eq!(vault.set_soft_delete_days(30, None).await.unwrap(), 14);
    let p = refused(vault.set_soft_delete_days(7, None).await);
    assert!(matches!(p, PinProblem::Required), "{p}");
    let p = refused(vault.set_soft_delete_days(7, Some("12345678")).await);
    assert!(matches!(p, PinProblem::NoneIssued), "{p}");
    let pin = vault.issue_pin(Duration::from_secs(300)).await.unwrap().0;
    let json = String::from_utf8(e.store().get("vault.json").await.unwrap().to_vec()).unwrap();
    assert!(json.contains("\"pin\"") && !json.contains(&pin), "{json}");
    let wrong = if pin == "00000000" {
        "00000001"
    } else {
        "00000000"
    };
    let p = refused(vault.set_soft_delete_days(7, Some(wrong)).await);
    assert!(matches!(p, PinProblem::Wrong), "{p}");
    assert_eq!(vault.set_soft_delete_days(7, Some(&pin)).await.unwrap(), 30);
    // Used up.
    let p = refused(vault.set_soft_delete_days(3, Some(&pin)).await);
    assert!(matches!(p, PinProblem::NoneIssued), "{p}");
    let reopened = Vault::open(e.store(), "x").await.unwrap();
    assert_eq!(reopened.soft_delete_days(), 7);
    let d = &e.repo.recovery_point_listing().await.unwrap().deleted[0];
    let purge: jiff::Timestamp = d.purge_after.parse().unwrap();
    let at: jiff::Timestamp = d.deleted_at.parse().unwrap();
    assert_eq!(purge.duration_since(at).as_secs(), 7 * 86_400);

    // Purging at once: refused without a PIN, with an expired one; done with a fresh one.
    let mut opts = prune_now();
    opts.purge_deleted_now = true;
    let p = refused(e.repo.prune(opts.clone()).await);
    assert!(matches!(p, PinProblem::Required), "{p}");
    let pin = vault.issue_pin(Duration::from_secs(300)).await.unwrap().0;
    // A newer PIN replaces it.
    let pin2 = vault.issue_pin(Duration::from_secs(300)).await.unwrap().0;
    opts.pin = Some(pin.clone());
    if pin != pin2 {
        let p = refused(e.repo.prune(opts.clone()).await);
        assert!(matches!(p, PinProblem::Wrong), "{p}");
    }
    e.clock.advance(Duration::from_secs(301));
    opts.pin = Some(pin2);
    let p = refused(e.repo.prune(opts.clone()).await);
    assert!(matches!(p, PinProblem::Expired { .. }), "{p}");
    assert_eq!(e.objects("snapshots").await.len(), 2, "nothing purged");
    opts.pin = Some(vault.issue_pin(Duration::from_secs(300)).await.unwrap().0);
    let (p, deleted) = prune_twice(&e, opts).await;
    assert_eq!(p.recovery_points_purged, 1, "{p:?}");
    assert!(deleted > 0, "{p:?}");
    let err = e.repo.undelete(&old).await.unwrap_err();
    assert!(
        matches!(err, EngineError::RecoveryPointPurged { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn a_vault_json_from_before_soft_delete_reads_as_fourteen_days() {
    let store =
        rbackup_engine::store::open("memory://soft-old-vault", &Default::default()).unwrap();
    let old = r#"{"format":1,"vault_id":"0123456789abcdef0123456789abcdef",
        "created":"2026-01-01T00:00:00Z","credentials":{"generation":1,"secret_hash":"00",
        "issued_at":"2026-01-01T00:00:00Z","expires_at":"2026-01-03T00:00:00Z"}}"#;
    store
        .put(
            "vault.json",
            Bytes::from_static(old.as_bytes()),
            PutMode::Create,
        )
        .await
        .unwrap();
    let v = Vault::open(store, "memory://soft-old-vault").await.unwrap();
    assert_eq!(
        v.soft_delete_days(),
        rbackup_engine::DEFAULT_SOFT_DELETE_DAYS
    );
    assert_eq!(v.soft_delete_days(), 14);
}
