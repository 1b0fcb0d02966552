//! Small blobs in bundles (ARCHITECTURE.md, "Bundles"): many small files cost one sealed,
//! solidly compressed unit instead of one each, restore exactly, and stay deduplicated per
//! blob; damage to a unit is found by `check --read-data` and named per file by a restore;
//! prune drops a bundle's dead members and keeps its live ones.

mod support;

use std::time::Duration;

use rbackup_engine::{PruneOptions, RestoreOptions, RetentionPolicy};
use support::{env, noise, snapshot, write};

/// `n` small files that share most of their bytes with each other but not within themselves:
/// random, so zstd cannot shrink any one of them alone, yet a bundle holds the shared part once.
fn similar_small_files(dir: &std::path::Path, n: usize) -> u64 {
    let shared = noise(3000, 7);
    let mut total = 0;
    for i in 0..n {
        let mut body = shared.clone();
        body.extend_from_slice(format!("file {i}\n").as_bytes());
        total += body.len() as u64;
        write(dir, &format!("d{}/f{i}.txt", i % 7), &body);
    }
    total
}

#[tokio::test(flavor = "multi_thread")]
async fn small_files_are_compressed_together_and_restore_exactly() {
    let e = env().await;
    let src = e.dir("src");
    let raw = similar_small_files(&src, 300);
    write(&src, "large.bin", &noise(2 << 20, 3));
    let r = e.backup(&[&src], None).await;
    // Sealed one by one, 300 incompressible files of 3 KB take at least their 900 KB; in
    // bundles, the shared bytes are stored about once per bundle.
    let packs = e.pack_bytes().await;
    let large = 2u64 << 20;
    assert!(
        packs < large + raw / 5,
        "packs {packs} bytes for {raw} bytes of small files and {large} of a large one"
    );
    e.assert_restores(r.recovery_point.as_deref().unwrap(), &src, &snapshot(&src))
        .await;
    e.check_clean().await;

    // Deduplication is per blob: an unchanged re-run and a copy of a small file add no data.
    std::fs::copy(src.join("d1/f1.txt"), src.join("copy.txt")).unwrap();
    let again = e.backup(&[&src], None).await;
    // Only the trees of the changed folders are new: the copy's 3 KB of random content is not.
    assert!(again.bytes_added < 3000, "{again:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_bundle_fails_its_members_and_check_finds_it() {
    let e = env().await;
    let src = e.dir("src");
    similar_small_files(&src, 40);
    let r = e.backup(&[&src], None).await;
    let rp = r.recovery_point.unwrap();
    // Damage the first byte of every pack: the first unit of each (a bundle here) no longer
    // authenticates.
    let root = e
        .work
        .path()
        .join("vault")
        .join("machines")
        .join(&e.machine);
    let mut damaged = 0;
    let packs = walkdir::WalkDir::new(root.join("packs")).into_iter();
    for entry in packs
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file())
    {
        let mut bytes = std::fs::read(entry.path()).unwrap();
        bytes[20] ^= 0x40;
        std::fs::write(entry.path(), bytes).unwrap();
        damaged += 1;
    }
    assert!(damaged > 0);
    let c = e.repo.check(true).await.unwrap();
    assert!(!c.ok(), "check --read-data must see the damaged bundle");
    assert!(
        c.errors.iter().any(|m| m.contains("damaged")),
        "{:?}",
        c.errors
    );
    let target = e.work.path().join("restored");
    let recovery = e.work.path().join("recovery");
    let out = e
        .repo
        .restore(RestoreOptions::new(&rp, &target, &recovery))
        .await;
    let failed = match out {
        Ok(report) => report.failed.len(),
        Err(err) => panic!("restore should report the damaged files, not fail: {err}"),
    };
    assert!(
        failed > 1,
        "every member of the damaged bundle fails: {failed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_keeps_the_live_members_of_a_bundle_and_drops_the_rest() {
    let e = env().await;
    let src = e.dir("src");
    for i in 0..200u64 {
        write(&src, &format!("f{i}"), &noise(2000, 100 + i));
    }
    e.backup(&[&src], Some("j")).await;
    for i in 40..200u64 {
        std::fs::remove_file(src.join(format!("f{i}"))).unwrap();
    }
    let kept = e.backup(&[&src], Some("j")).await.recovery_point.unwrap();
    let before = e.pack_bytes().await;
    let policy = RetentionPolicy {
        keep_last: Some(1),
        ..Default::default()
    };
    e.repo.forget(&policy, None, false).await.unwrap();
    e.expire_deleted();
    let mut opts = PruneOptions::default();
    opts.grace = Duration::ZERO;
    let first = e.repo.prune(opts.clone()).await.unwrap();
    assert!(first.packs_repacked > 0, "{first:?}");
    e.clock.advance(Duration::from_secs(3600));
    e.repo.prune(opts).await.unwrap();
    let after = e.pack_bytes().await;
    assert!(
        after < before / 3,
        "a fifth of the small files is live: {before} -> {after} bytes"
    );
    e.assert_restores(&kept, &src, &snapshot(&src)).await;
    e.check_clean().await;
}
