//! Prune beside running backups. A backup is paused at its first file (after it took its
//! lease and loaded its index) by a progress callback, and time is the test vault's manual
//! clock, so the interleavings are exact, not left to timing.

mod support;

use std::path::Path;
use std::time::Duration;

use rbackup_engine::{DEFAULT_LEASE_TTL, PruneOptions, RetentionPolicy};
use support::{Env, Paused, Tree, env, noise, snapshot, write};

async fn start_paused(e: &Env, dir: &Path) -> Paused {
    support::start_paused(&e.repo, e.options(&[dir], Some("j"))).await
}

fn now_opts() -> PruneOptions {
    let mut o = PruneOptions::default();
    o.grace = Duration::ZERO;
    o
}

/// Two recovery points of job `j`; the older one (with `x.bin` and `s.bin`) is forgotten.
/// Returns the kept point, its folder and contents.
async fn forgotten_history(e: &Env, x: &[u8]) -> (String, std::path::PathBuf, Tree) {
    let old = e.dir("old");
    write(&old, "x.bin", x);
    write(&old, "s.bin", &noise(3 << 20, 22));
    e.backup(&[&old], Some("j")).await;
    let keep = e.dir("keep");
    write(&keep, "y.bin", &noise(300 << 10, 23));
    let r = e.backup(&[&keep], Some("j")).await;
    let policy = RetentionPolicy {
        keep_last: Some(1),
        ..Default::default()
    };
    let f = e.repo.forget(&policy, Some("j"), false).await.unwrap();
    assert_eq!(f.forgotten, 1);
    // Past the soft-delete window, so the forgotten point's data is prune's to reclaim.
    e.expire_deleted();
    (r.recovery_point.unwrap(), keep.clone(), snapshot(&keep))
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_beside_a_running_backup_keeps_what_it_reuses() {
    let e = env().await;
    let x = noise(3 << 20, 21);
    let (kept_rp, keep_dir, keep_tree) = forgotten_history(&e, &x).await;

    // Backup C starts before the decision, and will reuse x.bin's blobs from its index.
    let newer = e.dir("newer");
    write(&newer, "a-new.bin", &noise(200 << 10, 24));
    write(&newer, "x-copy.bin", &x);
    let c = start_paused(&e, &newer).await;

    let p1 = e.repo.prune(now_opts()).await.unwrap();
    assert!(p1.packs_doomed > 0, "{p1:?}");
    let p2 = e.repo.prune(now_opts()).await.unwrap();
    assert_eq!(
        p2.packs_deleted, 0,
        "the running backup holds deletion: {p2:?}"
    );
    assert!(
        p2.waiting_for.iter().any(|w| w.contains("backup")),
        "{p2:?}"
    );

    let report = c.finish().await.unwrap();
    assert!(
        report.bytes_added < 1 << 20,
        "x-copy.bin was deduplicated against the doomed packs: {report:?}"
    );
    let c_tree = snapshot(&newer);

    let p3 = e.repo.prune(now_opts()).await.unwrap();
    assert!(p3.packs_kept_in_use > 0, "packs with x.bin stay: {p3:?}");
    assert!(p3.packs_deleted > 0, "packs with only s.bin go: {p3:?}");
    assert!(p3.bytes_freed > 2 << 20, "{p3:?}");
    e.check_clean().await;
    e.assert_restores(report.recovery_point.as_deref().unwrap(), &newer, &c_tree)
        .await;
    e.assert_restores(&kept_rp, &keep_dir, &keep_tree).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_started_after_the_decision_stores_its_own_copies() {
    let e = env().await;
    let x = noise(2 << 20, 31);
    let (kept_rp, keep_dir, keep_tree) = forgotten_history(&e, &x).await;
    let p1 = e.repo.prune(now_opts()).await.unwrap();
    assert!(p1.packs_doomed > 0);

    let newer = e.dir("newer");
    write(&newer, "x-copy.bin", &x);
    let d = e.backup(&[&newer], Some("j")).await;
    assert!(
        d.bytes_added > 3 << 19,
        "doomed blobs are not reused, so x is stored again: {d:?}"
    );
    let d_tree = snapshot(&newer);

    let p2 = e.repo.prune(now_opts()).await.unwrap();
    assert_eq!(p2.packs_kept_in_use, 0, "{p2:?}");
    assert!(p2.packs_deleted > 0, "{p2:?}");
    e.check_clean().await;
    e.assert_restores(d.recovery_point.as_deref().unwrap(), &newer, &d_tree)
        .await;
    e.assert_restores(&kept_rp, &keep_dir, &keep_tree).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_waiting_prune_finishes_once_the_running_backup_ends() {
    let e = env().await;
    let (kept_rp, keep_dir, keep_tree) = forgotten_history(&e, &noise(1 << 20, 41)).await;
    let newer = e.dir("newer");
    write(&newer, "n.bin", &noise(500 << 10, 42));
    let c = start_paused(&e, &newer).await;

    let mut opts = now_opts();
    opts.wait = true;
    let repo = e.repo.clone();
    let prune = tokio::spawn(async move { repo.prune(opts).await });
    // Asleep on the clock: the backup's lease refresher, the prune's, and the prune's wait
    // (which it only starts when something is left to delete that it may not delete yet).
    e.clock.settled(3).await;
    // Over two lease lifetimes, in steps of one refresh period: the backup keeps refreshing
    // its lease, and the prune, waking at each step, keeps waiting for it.
    for _ in 0..6 {
        e.clock.advance(DEFAULT_LEASE_TTL / 3);
        e.clock.settled(3).await;
        assert!(!prune.is_finished(), "prune waits for the backup's lease");
    }

    let report = c.finish().await.unwrap();
    // The backup's lease is gone; the prune notices at its next check.
    e.clock.settled(2).await;
    e.clock.advance(DEFAULT_LEASE_TTL / 3);
    let p = tokio::time::timeout(Duration::from_secs(20), prune)
        .await
        .expect("prune finished after the backup")
        .unwrap()
        .unwrap();
    assert!(p.packs_deleted > 0, "{p:?}");
    assert_eq!((p.markers_completed, p.candidates_pending), (1, 0), "{p:?}");
    e.check_clean().await;
    e.assert_restores(
        report.recovery_point.as_deref().unwrap(),
        &newer,
        &snapshot(&newer),
    )
    .await;
    e.assert_restores(&kept_rp, &keep_dir, &keep_tree).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn prunes_in_a_loop_during_a_free_running_backup_lose_nothing() {
    let e = env().await;
    let x = noise(2 << 20, 51);
    let (kept_rp, keep_dir, keep_tree) = forgotten_history(&e, &x).await;
    // A larger folder that shares x.bin with the forgotten point, so the backup reuses
    // blobs of packs the prunes are deciding on, at whatever moment it gets to them.
    let big = e.dir("big");
    for i in 0..120u64 {
        write(
            &big,
            &format!("d{}/f{i}.bin", i % 7),
            &noise(48 << 10, 100 + i),
        );
    }
    write(&big, "zz/x.bin", &x);
    let mut o = e.options(&[&big], Some("j"));
    o.threads = 2;
    let repo = e.repo.clone();
    let task = tokio::spawn(async move { repo.backup(o).await });
    let mut prunes = 0;
    while !task.is_finished() {
        e.repo.prune(now_opts()).await.unwrap();
        prunes += 1;
    }
    let report = task.await.unwrap().unwrap();
    for _ in 0..2 {
        e.repo.prune(now_opts()).await.unwrap();
    }
    assert!(prunes > 0);
    e.check_clean().await;
    e.assert_restores(
        report.recovery_point.as_deref().unwrap(),
        &big,
        &snapshot(&big),
    )
    .await;
    e.assert_restores(&kept_rp, &keep_dir, &keep_tree).await;
}
