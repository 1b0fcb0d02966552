//! Forget and prune through the public API: space comes back, every remaining recovery point
//! still restores exactly and passes `check --read-data`; orphans and leases hold deletion as
//! documented in ARCHITECTURE.md. Time is the test vault's manual clock, moved by the tests.

mod support;

use std::time::Duration;

use rbackup_engine::{
    Clock, DEFAULT_GRACE, DEFAULT_LEASE_TTL, Id, LeaseKind, PruneOptions, RetentionPolicy,
};
use support::{env, noise, snapshot, write};

fn now_opts() -> PruneOptions {
    let mut o = PruneOptions::default();
    o.grace = Duration::ZERO;
    o
}

fn keep_last(n: u32) -> RetentionPolicy {
    RetentionPolicy {
        keep_last: Some(n),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn forget_then_prune_frees_space_and_every_remaining_point_restores() {
    let e = env().await;
    let src = e.dir("src");
    write(&src, "shared/base.bin", &noise(1 << 20, 1));
    let mut states = Vec::new();
    for i in 0..4u64 {
        write(&src, &format!("gen{i}.bin"), &noise(700 << 10, 10 + i));
        write(
            &src,
            "notes.txt",
            format!("version {i}\n").repeat(50).as_bytes(),
        );
        if i == 2 {
            std::fs::remove_file(src.join("gen1.bin")).unwrap();
        }
        let r = e.backup(&[&src], Some("docs")).await;
        states.push((r.recovery_point.unwrap(), snapshot(&src)));
    }
    let before = e.objects("packs").await;

    let f = e.repo.forget(&keep_last(2), None, false).await.unwrap();
    assert_eq!((f.kept, f.forgotten), (2, 2));
    // Forget soft-deletes: prune reclaims the data once the window has passed.
    e.expire_deleted();
    let left = support::point_ids(&e.repo).await;
    assert_eq!(left, [states[2].0.clone(), states[3].0.clone()]);

    // Phase 1 decides but deletes nothing; the vault stays fully valid in between.
    let p1 = e.repo.prune(now_opts()).await.unwrap();
    assert!(p1.packs_doomed > 0, "{p1:?}");
    assert_eq!(p1.packs_deleted, 0);
    assert!(p1.candidates_pending > 0);
    let mid = e.objects("packs").await;
    assert!(
        before.iter().all(|p| mid.contains(p)),
        "no pack removed yet"
    );
    assert_eq!(e.objects("prune").await.len(), 1, "one marker");
    e.check_clean().await;

    // Phase 2 (the next prune) deletes.
    let p2 = e.repo.prune(now_opts()).await.unwrap();
    assert!(p2.packs_deleted > 0, "{p2:?}");
    assert_eq!(p2.markers_completed, 1);
    assert_eq!(p2.candidates_pending, 0);
    let mid: u64 = mid.iter().map(|(_, s)| s).sum();
    assert_eq!(mid - e.pack_bytes().await, p2.bytes_freed, "{p2:?}");
    // gen1 (700 KiB of noise) was only in the forgotten points.
    assert!(p2.bytes_freed > 600 << 10, "{p2:?}");
    assert!(e.objects("prune").await.is_empty());
    e.check_clean().await;
    for (rp, tree) in &states[2..] {
        e.assert_restores(rp, &src, tree).await;
    }

    // Nothing left to do: a third prune decides nothing.
    let p3 = e.repo.prune(now_opts()).await.unwrap();
    assert_eq!((p3.packs_doomed, p3.packs_deleted), (0, 0), "{p3:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn repack_copies_used_blobs_out_of_mostly_unused_packs() {
    let e = env().await;
    let src = e.dir("src");
    // One data pack with a big file (to be forgotten) and a small one (kept).
    write(&src, "big.bin", &noise(400 << 10, 7));
    write(&src, "small.bin", &noise(60 << 10, 8));
    let mut o = e.options(&[&src], None);
    o.pack_size = 32 << 20;
    e.repo.backup(o).await.unwrap();
    std::fs::remove_file(src.join("big.bin")).unwrap();
    let r2 = e.backup(&[&src], None).await;
    let tree2 = snapshot(&src);
    e.repo.forget(&keep_last(1), None, false).await.unwrap();
    e.expire_deleted();
    let packs_before = e.objects("packs").await;

    // Dry runs change nothing. Below the threshold the partly used pack is left alone.
    let mut lax = now_opts();
    lax.dry_run = true;
    lax.repack_threshold = 0.95;
    let d = e.repo.prune(lax).await.unwrap();
    assert_eq!(d.packs_repacked, 0, "{d:?}");
    assert!(d.partly_used_kept >= 1, "{d:?}");
    let mut strict = now_opts();
    strict.dry_run = true;
    let d = e.repo.prune(strict.clone()).await.unwrap();
    assert_eq!(d.packs_repacked, 1, "{d:?}");
    assert_eq!(e.objects("packs").await, packs_before);
    assert!(e.objects("prune").await.is_empty());

    strict.dry_run = false;
    let p1 = e.repo.prune(strict.clone()).await.unwrap();
    assert_eq!(p1.packs_repacked, 1, "{p1:?}");
    assert!(p1.blobs_repacked >= 1, "{p1:?}");
    e.check_clean().await;
    let p2 = e.repo.prune(strict).await.unwrap();
    assert!(
        p2.packs_deleted >= 2,
        "old data pack and old tree pack: {p2:?}"
    );
    assert!(p2.bytes_freed > 300 << 10, "{p2:?}");
    e.check_clean().await;
    e.assert_restores(r2.recovery_point.as_deref().unwrap(), &src, &tree2)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn orphan_packs_go_after_the_grace_period_and_not_before() {
    let e = env().await;
    let src = e.dir("src");
    write(&src, "a.bin", &noise(200 << 10, 3));
    let r = e.backup(&[&src], None).await;
    // What a killed backup leaves: packs that no index lists.
    let orphan = Id::random().to_hex();
    let path = format!("machines/{}/packs/{}/{orphan}", e.machine, &orphan[..2]);
    e.store()
        .put(
            &path,
            noise(5000, 9).into(),
            rbackup_engine::store::PutMode::Create,
        )
        .await
        .unwrap();
    assert_eq!(e.repo.check(false).await.unwrap().unreferenced_packs, 1);

    // The default grace period, one second short of it, then one second past it.
    let opts = PruneOptions::default();
    let p1 = e.repo.prune(opts.clone()).await.unwrap();
    assert_eq!((p1.orphans_found, p1.orphans_deleted), (1, 0), "{p1:?}");
    let due = e.clock.now() + DEFAULT_GRACE;
    assert_eq!(p1.deletable_after, Some(due.to_string()), "{p1:?}");
    e.clock.advance(DEFAULT_GRACE - Duration::from_secs(1));
    let p2 = e.repo.prune(opts.clone()).await.unwrap();
    assert_eq!(p2.orphans_deleted, 0, "within the grace period: {p2:?}");
    assert!(e.store().exists(&path).await.unwrap());

    e.clock.advance(Duration::from_secs(2));
    let p3 = e.repo.prune(opts).await.unwrap();
    assert_eq!((p3.orphans_deleted, p3.bytes_freed), (1, 5000), "{p3:?}");
    assert!(!e.store().exists(&path).await.unwrap());
    e.check_clean().await;
    e.assert_restores(r.recovery_point.as_deref().unwrap(), &src, &snapshot(&src))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_backups_lease_holds_deletion_until_it_runs_out() {
    let e = env().await;
    let src = e.dir("src");
    write(&src, "one.bin", &noise(300 << 10, 4));
    e.backup(&[&src], None).await;
    write(&src, "one.bin", &noise(300 << 10, 5));
    e.backup(&[&src], None).await;
    e.repo.forget(&keep_last(1), None, false).await.unwrap();
    e.expire_deleted();
    let p1 = e.repo.prune(now_opts()).await.unwrap();
    assert!(p1.packs_doomed > 0);

    // A backup that was killed: its lease stays behind, honouring no marker.
    let lease = e
        .repo
        .take_lease(LeaseKind::Shared, "backup")
        .await
        .unwrap();
    lease.abandon();
    let p2 = e.repo.prune(now_opts()).await.unwrap();
    assert_eq!(p2.packs_deleted, 0, "{p2:?}");
    assert!(
        p2.waiting_for.iter().any(|w| w.contains("backup")),
        "{p2:?}"
    );
    // At its expiry the lease still counts; a second later it does not.
    e.clock.advance(DEFAULT_LEASE_TTL);
    let p3 = e.repo.prune(now_opts()).await.unwrap();
    assert_eq!(p3.packs_deleted, 0, "{p3:?}");
    e.clock.advance(Duration::from_secs(1));
    let p3 = e.repo.prune(now_opts()).await.unwrap();
    assert!(p3.packs_deleted > 0, "{p3:?}");
    assert!(e.objects("locks").await.is_empty(), "ran-out lease removed");
    e.check_clean().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_prune_is_refused_while_one_runs() {
    let e = env().await;
    let held = e
        .repo
        .take_lease(LeaseKind::Exclusive, "prune")
        .await
        .unwrap();
    let err = e.repo.prune(now_opts()).await.unwrap_err().to_string();
    assert!(err.contains("another prune is running"), "{err}");
    assert_eq!(
        e.objects("locks").await.len(),
        1,
        "the refused one left no lease"
    );
    held.release().await;
    assert!(e.objects("locks").await.is_empty());
    e.repo.prune(now_opts()).await.unwrap();
    // Shared leases (backups) never stop a prune.
    let backup = e
        .repo
        .take_lease(LeaseKind::Shared, "backup")
        .await
        .unwrap();
    e.repo.prune(now_opts()).await.unwrap();
    backup.release().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn forget_is_per_job_and_refuses_an_empty_policy() {
    let e = env().await;
    let (a, b) = (e.dir("a"), e.dir("b"));
    for i in 0..3u8 {
        write(&a, "f", &[i; 100]);
        e.backup(&[&a], Some("alpha")).await;
    }
    for i in 0..2u8 {
        write(&b, "f", &[i; 100]);
        e.backup(&[&b], Some("beta")).await;
    }
    let err = e
        .repo
        .forget(&RetentionPolicy::default(), None, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("empty"), "{err}");

    let dry = e
        .repo
        .forget(&keep_last(1), Some("alpha"), true)
        .await
        .unwrap();
    assert_eq!((dry.kept, dry.forgotten), (1, 2));
    assert_eq!(e.repo.recovery_points().await.unwrap().len(), 5, "dry run");

    let f = e
        .repo
        .forget(&keep_last(1), Some("alpha"), false)
        .await
        .unwrap();
    assert_eq!(f.groups.len(), 1);
    let jobs = |rps: &[(Id, rbackup_engine::RecoveryPoint)], j: &str| {
        rps.iter()
            .filter(|(_, rp)| rp.job.as_deref() == Some(j))
            .count()
    };
    let rps = e.repo.recovery_points().await.unwrap();
    assert_eq!((jobs(&rps, "alpha"), jobs(&rps, "beta")), (1, 2));

    // Without --job every job is its own group: beta keeps its newest, alpha its one.
    let f = e.repo.forget(&keep_last(1), None, false).await.unwrap();
    assert_eq!((f.groups.len(), f.kept, f.forgotten), (2, 2, 1));
    let rps = e.repo.recovery_points().await.unwrap();
    assert_eq!((jobs(&rps, "alpha"), jobs(&rps, "beta")), (1, 1));
    let json = serde_json::to_value(&f).unwrap();
    assert_eq!(json["groups"][0]["points"][0]["action"], "keep");
    assert_eq!(json["groups"][0]["points"][0]["reasons"][0]["rule"], "last");
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_removes_the_stale_staging_files_of_killed_writers_only() {
    let env = env().await;
    let src = env.dir("src");
    write(&src, "a", &noise(10_000, 1));
    env.backup(&[&src], None).await;
    // What a writer killed between staging and publishing leaves on a local vault.
    let staging = env
        .work
        .path()
        .join("vault")
        .join(rbackup_engine::store::STAGING_DIR);
    let stale = staging.join(".tmp-00000000deadbeef");
    let fresh = staging.join(".tmp-00000000feedface");
    for (path, age) in [
        (&stale, rbackup_engine::STALE_STAGING * 2),
        (&fresh, Duration::ZERO),
    ] {
        std::fs::write(path, b"partial pack").unwrap();
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(std::time::SystemTime::now() - age).unwrap();
    }
    let mut dry = PruneOptions::default();
    dry.dry_run = true;
    assert_eq!(env.repo.prune(dry).await.unwrap().staging_files_removed, 0);
    assert!(stale.exists(), "a dry run removes nothing");
    let report = env.repo.prune(PruneOptions::default()).await.unwrap();
    assert_eq!(report.staging_files_removed, 1, "{report:?}");
    assert!(!stale.exists() && fresh.exists());
    env.check_clean().await;
}
