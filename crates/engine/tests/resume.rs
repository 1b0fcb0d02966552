//! Resuming after an interrupted backup: the packs a killed run uploaded but never indexed are
//! adopted by the next run when (and only when) their header authenticates; a pack a prune
//! decided on is never adopted; a cancelled run keeps and indexes what it uploaded; index
//! files are written on a time bound as well as a count bound.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rbackup_engine::store::PutMode;
use rbackup_engine::{Cancel, EngineError, Id, ManualClock, Progress, PruneOptions};
use support::{Env, env, noise, snapshot, write};

/// Removes every index file and recovery point: what a run killed before its first index
/// file leaves (its packs, no index, no recovery point).
async fn forget_index_and_points(e: &Env) {
    for dir in ["index", "snapshots"] {
        for (name, _) in e.objects(dir).await {
            let path = format!("machines/{}/{dir}/{name}", e.machine);
            e.store().delete(&path).await.unwrap();
        }
    }
}

fn pack_path(e: &Env, name: &str) -> String {
    format!("machines/{}/packs/{}/{name}", e.machine, &name[..2])
}

async fn pack(e: &Env, name: &str) -> rbackup_engine::store::Bytes {
    e.store().get(&pack_path(e, name)).await.unwrap()
}

/// A source of `files` incompressible files of 300 KiB each.
fn source(e: &Env, files: u64) -> std::path::PathBuf {
    let src = e.dir("src");
    for i in 0..files {
        write(&src, &format!("f{i}.bin"), &noise(300 << 10, 100 + i));
    }
    src
}

#[tokio::test(flavor = "multi_thread")]
async fn the_packs_of_a_killed_run_are_adopted_and_not_uploaded_again() {
    let e = env().await;
    let src = source(&e, 8);
    let first = e.backup(&[&src], None).await;
    assert!(first.packs >= 3, "{first:?}");
    let uploaded = e.pack_bytes().await;
    forget_index_and_points(&e).await;
    assert_eq!(
        e.repo.check(false).await.unwrap().unreferenced_packs,
        first.packs
    );

    let next = e.backup(&[&src], None).await;
    assert_eq!(next.packs_adopted, first.packs, "{next:?}");
    assert_eq!(next.bytes_adopted, uploaded, "{next:?}");
    // Only trees can be new: the folders above the source changed (the vault is beside it).
    assert!(next.packs <= 1, "no data uploaded again: {next:?}");
    assert!(
        next.bytes_added * 10 <= uploaded,
        "added {} of {uploaded}",
        next.bytes_added
    );
    e.check_clean().await;
    e.assert_restores(
        next.recovery_point.as_deref().unwrap(),
        &src,
        &snapshot(&src),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn packs_whose_header_does_not_authenticate_or_describe_them_are_not_adopted() {
    let e = env().await;
    let src = source(&e, 4);
    e.backup(&[&src], None).await;
    forget_index_and_points(&e).await;
    let packs = e.objects("packs").await;
    assert!(packs.len() >= 3, "{packs:?}");
    // A pack cut short (its trailer gone), one with a byte missing before its header (the
    // header no longer tiles it), and a genuine pack copied under another name (its header
    // is sealed for the old name): none may be adopted.
    let (a, b, c) = (&packs[0].0, &packs[1].0, &packs[2].0);
    let whole = pack(&e, a).await;
    let cut = whole.slice(..whole.len() - 3);
    let whole_b = pack(&e, b).await;
    let mut gap = whole_b[..100].to_vec();
    gap.extend_from_slice(&whole_b[101..]);
    let copy = pack(&e, c).await;
    let store = e.store();
    store
        .put(&pack_path(&e, a), cut, PutMode::Overwrite)
        .await
        .unwrap();
    store
        .put(&pack_path(&e, b), gap.into(), PutMode::Overwrite)
        .await
        .unwrap();
    let forged = Id::random().to_hex();
    store
        .put(&pack_path(&e, &forged), copy, PutMode::Create)
        .await
        .unwrap();
    // Noise with a well-formed trailer pointing at a "header" of noise.
    let junk = Id::random().to_hex();
    let mut fake = noise(4000, 7);
    fake.extend_from_slice(&1000u32.to_le_bytes());
    fake.extend_from_slice(b"RBP1");
    store
        .put(&pack_path(&e, &junk), fake.into(), PutMode::Create)
        .await
        .unwrap();

    let next = e.backup(&[&src], None).await;
    assert_eq!(
        next.packs_adopted,
        packs.len() as u64 - 2,
        "all but the damaged two: {next:?}"
    );
    let check = e.repo.check(true).await.unwrap();
    assert!(check.ok(), "{:?}", check.errors);
    assert_eq!(check.unreferenced_packs, 4, "the refused packs: {check:?}");
    e.assert_restores(
        next.recovery_point.as_deref().unwrap(),
        &src,
        &snapshot(&src),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pack_a_prune_has_marked_as_orphan_is_never_adopted() {
    let e = env().await;
    let src = source(&e, 4);
    let first = e.backup(&[&src], None).await;
    forget_index_and_points(&e).await;
    // The prune decides: every pack is an orphan; deletion waits for the grace period.
    let p = e.repo.prune(PruneOptions::default()).await.unwrap();
    assert_eq!(p.orphans_found, first.packs, "{p:?}");

    let next = e.backup(&[&src], None).await;
    assert_eq!(next.packs_adopted, 0, "{next:?}");
    assert!(next.packs > 0, "uploaded its own copies: {next:?}");
    // Once the marker ripens the orphans go, and the new point does not miss them.
    e.clock
        .advance(rbackup_engine::DEFAULT_GRACE + Duration::from_secs(1));
    let p = e.repo.prune(PruneOptions::default()).await.unwrap();
    assert_eq!(p.orphans_deleted, first.packs, "{p:?}");
    e.check_clean().await;
    e.assert_restores(
        next.recovery_point.as_deref().unwrap(),
        &src,
        &snapshot(&src),
    )
    .await;
}

/// Cancels the run once `after` bytes were read.
struct CancelAfter {
    cancel: Cancel,
    after: u64,
    read: AtomicU64,
}

impl Progress for CancelAfter {
    fn bytes(&self, n: u64) {
        if self.read.fetch_add(n, Ordering::SeqCst) + n >= self.after {
            self.cancel.cancel();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_run_indexes_what_it_uploaded_and_leaves_no_lease_or_staging() {
    let e = env().await;
    let src = source(&e, 12);
    let mut opts = e.options(&[&src], None);
    let cancel = Cancel::default();
    opts.cancel = cancel.clone();
    opts.progress = Arc::new(CancelAfter {
        cancel,
        after: 6 * (300 << 10),
        read: AtomicU64::new(0),
    });
    let err = e.repo.backup(opts).await.unwrap_err();
    let EngineError::Cancelled { packs, bytes } = err else {
        panic!("{err:?}")
    };
    assert!(packs > 0 && bytes > 0, "{err}");
    assert_eq!(
        bytes,
        e.pack_bytes().await,
        "every uploaded pack is counted"
    );
    assert!(e.repo.recovery_points().await.unwrap().is_empty());
    assert!(e.objects("locks").await.is_empty(), "lease released");
    let check = e.repo.check(true).await.unwrap();
    assert!(check.ok(), "{:?}", check.errors);
    assert_eq!(check.unreferenced_packs, 0, "all indexed: {check:?}");
    let staging = e.work.path().join("cache");
    let left: Vec<_> = std::fs::read_dir(&staging)
        .unwrap()
        .flatten()
        .filter(|d| d.file_name().to_string_lossy().contains("staging"))
        .collect();
    assert!(left.is_empty(), "staging folder removed: {left:?}");

    let next = e.backup(&[&src], None).await;
    assert_eq!(next.packs_adopted, 0, "indexed already: {next:?}");
    let total = e.pack_bytes().await;
    assert!(
        next.bytes_added <= total - bytes + (total / 10),
        "the next run uploads only the rest: added {}, kept {bytes}, total {total}",
        next.bytes_added
    );
    e.check_clean().await;
    e.assert_restores(
        next.recovery_point.as_deref().unwrap(),
        &src,
        &snapshot(&src),
    )
    .await;
}

/// Moves the vault clock on by a fixed step at every file.
struct Tick(Arc<ManualClock>, Duration);

impl Progress for Tick {
    fn file(&self, _: &Path) {
        self.0.advance(self.1);
    }
}

async fn index_files_written(step: Duration) -> (u64, usize) {
    let e = env().await;
    let src = source(&e, 6);
    let mut opts = e.options(&[&src], None);
    opts.progress = Arc::new(Tick(e.clock.clone(), step));
    let r = e.repo.backup(opts).await.unwrap();
    e.check_clean().await;
    (r.packs, e.objects("index").await.len())
}

#[tokio::test(flavor = "multi_thread")]
async fn index_files_are_written_when_a_minute_has_passed_not_only_every_64_packs() {
    // Without time passing, a run of a few packs writes one index file at its end.
    let (packs, files) = index_files_written(Duration::ZERO).await;
    assert!(packs >= 3, "{packs}");
    assert_eq!(files, 1);
    // A minute passes at the first file, before any pack exists: the first pack uploaded
    // is indexed at once, mid-run, and the rest at the end.
    let (packs, files) = index_files_written(Duration::from_secs(61)).await;
    assert!(packs >= 3, "{packs}");
    assert!(
        files >= 2 && files as u64 <= packs,
        "{files} files for {packs} packs"
    );
}
