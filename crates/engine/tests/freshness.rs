//! Freshness: a recovery point deleted from the vault, a vault rolled back to an older copy and
//! a sequence that goes backwards are reported by `check`; recovery points this machine forgot
//! are not; recovery points from before sequences are never reported. Index entries of packs
//! that are gone are reported by `check` and ignored by backup, which writes the blobs again.

mod support;

use rbackup_engine::crypto::BlobId;
use rbackup_engine::{
    CheckOptions, Freshness, FreshnessFinding, Id, RecoveryPoint, RetentionPolicy, assess,
};
use support::{Env, env, noise, snapshot, write};

fn rp_path(e: &Env, id: &str) -> String {
    format!("machines/{}/snapshots/{id}", e.machine)
}

async fn check_against(e: &Env, mark: Option<Freshness>) -> rbackup_engine::CheckReport {
    let mut opts = CheckOptions::new(false);
    opts.freshness = mark;
    e.repo.check_with(opts).await.unwrap()
}

/// Three backups of a small source; their recovery point ids, oldest first.
async fn three_backups(e: &Env) -> Vec<String> {
    let src = e.dir("src");
    let mut ids = Vec::new();
    for i in 0..3 {
        write(&src, &format!("f{i}"), &noise(4096, i));
        let r = e.backup(&[&src], None).await;
        assert_eq!(r.sequence, i + 1, "{r:?}");
        ids.push(r.recovery_point.unwrap());
    }
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn each_recovery_point_names_its_predecessor_and_a_higher_sequence() {
    let e = env().await;
    let ids = three_backups(&e).await;
    let rps = e.repo.recovery_points().await.unwrap();
    let got: Vec<(String, u64, Vec<String>)> = rps
        .iter()
        .map(|(id, rp)| {
            let preds = rp.predecessors.iter().map(Id::to_hex).collect();
            (id.to_hex(), rp.sequence, preds)
        })
        .collect();
    let want = vec![
        (ids[0].clone(), 1, vec![]),
        (ids[1].clone(), 2, vec![ids[0].clone()]),
        (ids[2].clone(), 3, vec![ids[1].clone()]),
    ];
    assert_eq!(got, want);
    let c = check_against(&e, None).await;
    assert!(c.ok(), "{c:?}");
    assert_eq!(c.freshness_mark.newest_sequence, 3);
    assert_eq!(
        c.freshness_mark.newest_id.map(|i| i.to_hex()),
        Some(ids[2].clone())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_recovery_point_is_reported_with_its_id() {
    let e = env().await;
    let ids = three_backups(&e).await;
    e.store().delete(&rp_path(&e, &ids[1])).await.unwrap();
    // Without a mark a missing predecessor may be this machine's own forget.
    assert!(check_against(&e, None).await.ok());
    // A new install's empty mark: nothing was forgotten, so the deletion is reported.
    let c = check_against(&e, Some(Freshness::default())).await;
    assert!(!c.ok());
    let missing = Id::from_hex(&ids[1]).unwrap();
    let named_by = Id::from_hex(&ids[2]).unwrap();
    assert_eq!(
        c.freshness,
        vec![FreshnessFinding::Disappeared { missing, named_by }]
    );
    assert!(
        c.freshness[0].to_string().contains(&ids[1]),
        "{}",
        c.freshness[0]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vault_rolled_back_to_an_older_copy_is_reported_against_the_local_mark() {
    let e = env().await;
    let ids = three_backups(&e).await;
    let mark = check_against(&e, None).await.freshness_mark;
    // The newest point removed: the rest of the vault is self-consistent, so only the local
    // mark shows it.
    e.store().delete(&rp_path(&e, &ids[2])).await.unwrap();
    let alone = check_against(&e, Some(Freshness::default())).await;
    assert!(alone.ok(), "{alone:?}");
    let c = check_against(&e, Some(mark.clone())).await;
    let want = FreshnessFinding::RolledBack {
        local_sequence: 3,
        local_id: Some(Id::from_hex(&ids[2]).unwrap()),
        vault_sequence: 2,
        vault_id: Some(Id::from_hex(&ids[1]).unwrap()),
    };
    assert_eq!(c.freshness, vec![want]);
    assert!(c.freshness[0].to_string().contains("rolled back"));
    // The mark is never lowered by what the rolled-back vault shows.
    assert_eq!(c.freshness_mark, mark);
}

#[tokio::test(flavor = "multi_thread")]
async fn recovery_points_this_machine_forgot_are_not_reported() {
    let e = env().await;
    let ids = three_backups(&e).await;
    let mut mark = check_against(&e, None).await.freshness_mark;
    let policy = RetentionPolicy {
        keep_last: Some(1),
        ..Default::default()
    };
    let report = e.repo.forget(&policy, None, false).await.unwrap();
    assert_eq!(report.forgotten, 2);
    // Forget soft-deletes: the points and their tombstones are there, nothing is reported.
    let c = check_against(&e, Some(mark.clone())).await;
    assert!(c.ok() && c.soft_deleted == 2, "{c:?}");
    // Gone without a tombstone, as an older rbackup's forget left them: without the record,
    // the forgotten predecessor looks deleted by someone else...
    for id in &ids[..2] {
        e.store().delete(&rp_path(&e, id)).await.unwrap();
        let tomb = format!("machines/{}/deleted/{id}", e.machine);
        e.store().delete(&tomb).await.unwrap();
    }
    let unrecorded = check_against(&e, Some(mark.clone())).await;
    assert_eq!(unrecorded.freshness.len(), 1, "{unrecorded:?}");
    // ...with it, nothing is reported, and the record shrinks to what is still named.
    mark.forgot_in(&report);
    let c = check_against(&e, Some(mark)).await;
    assert!(c.ok(), "{c:?}");
    assert_eq!(
        c.freshness_mark.forgotten,
        vec![Id::from_hex(&ids[1]).unwrap()]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn forgetting_the_newest_point_is_not_a_rollback() {
    let e = env().await;
    let src = e.dir("src");
    write(&src, "a", b"one");
    e.backup(&[&src], Some("a")).await;
    write(&src, "a", b"two");
    let newest = e.backup(&[&src], Some("b")).await.recovery_point.unwrap();
    let mut mark = check_against(&e, None).await.freshness_mark;
    // Job b's only point, removed as `forget` removes points (a policy that keeps nothing of
    // a job is refused, so the deletion is done directly and recorded as forget's would be).
    e.store().delete(&rp_path(&e, &newest)).await.unwrap();
    let reported = check_against(&e, Some(mark.clone())).await;
    assert_eq!(reported.freshness.len(), 1, "{reported:?}");
    mark.forgot([Id::from_hex(&newest).unwrap()]);
    let c = check_against(&e, Some(mark)).await;
    assert!(c.ok(), "{c:?}");
}

fn point(n: u8, sequence: u64, predecessors: &[u8]) -> (Id, RecoveryPoint) {
    let id = |n: u8| Id([n; 32]);
    let rp = RecoveryPoint {
        time: format!("2030-01-0{n}T00:00:00Z"),
        hostname: "h".into(),
        paths: vec!["/d".into()],
        tree: BlobId([n; 32]),
        parent: None,
        job: None,
        files: 0,
        dirs: 0,
        bytes: 0,
        bytes_added: 0,
        sequence,
        predecessors: predecessors.iter().map(|&p| id(p)).collect(),
    };
    (id(n), rp)
}

#[test]
fn old_points_without_a_sequence_are_never_reported() {
    // Two old points (one of them gone), then a new one whose predecessor is the newest old.
    let rps = vec![point(1, 0, &[]), point(3, 0, &[]), point(4, 1, &[3])];
    assert_eq!(assess(&rps, Some(&Freshness::default())), vec![]);
    assert_eq!(assess(&rps[..2], Some(&Freshness::default())), vec![]);
    let mut mark = Freshness::default();
    mark.observe(&rps[..2]);
    assert_eq!(
        mark,
        Freshness::default(),
        "old points never count as the newest"
    );
}

#[test]
fn a_sequence_not_above_its_predecessors_is_reported() {
    let rps = vec![point(1, 1, &[]), point(2, 5, &[1]), point(3, 5, &[2])];
    let found = assess(&rps, None);
    assert_eq!(
        found,
        vec![FreshnessFinding::SequenceBackwards {
            id: Id([3; 32]),
            sequence: 5,
            predecessor: Id([2; 32]),
            predecessor_sequence: 5,
        }]
    );
    assert!(found[0].to_string().contains("sequence went backwards"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_index_naming_a_deleted_pack_is_reported_and_backup_writes_the_blobs_again() {
    let e = env().await;
    let src = e.dir("src");
    for i in 0..4 {
        write(&src, &format!("f{i}.bin"), &noise(300 << 10, 10 + i));
    }
    let first = e.backup(&[&src], None).await;
    assert!(first.packs >= 2, "{first:?}");
    let (name, _) = e.objects("packs").await.remove(0);
    let path = format!("machines/{}/packs/{}/{name}", e.machine, &name[..2]);
    e.store().delete(&path).await.unwrap();

    let c = check_against(&e, None).await;
    assert_eq!(c.missing_packs, 1, "{c:?}");
    assert!(c.errors.iter().any(|m| m.contains(&name)), "{:?}", c.errors);

    let next = e.backup(&[&src], None).await;
    assert_eq!(next.packs_missing, 1, "{next:?}");
    assert!(next.packs >= 1 && next.bytes_added > 0, "{next:?}");
    let rp = next.recovery_point.unwrap();
    e.assert_restores(&rp, &src, &snapshot(&src)).await;

    // Once the first point is forgotten, prune rewrites the index without the missing pack.
    let mut opts = rbackup_engine::PruneOptions::default();
    opts.grace = std::time::Duration::ZERO;
    let keep = RetentionPolicy {
        keep_last: Some(1),
        ..Default::default()
    };
    e.repo.forget(&keep, None, false).await.unwrap();
    e.expire_deleted();
    e.repo.prune(opts.clone()).await.unwrap();
    e.repo.prune(opts).await.unwrap();
    let c = check_against(&e, None).await;
    assert!(c.ok() && c.missing_packs == 0, "{c:?}");
    // The copies the second backup wrote were kept, not the missing pack's entries.
    e.assert_restores(&rp, &src, &snapshot(&src)).await;
}
