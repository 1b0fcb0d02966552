//! Change detection through the local files cache: a file is reused without reading only when
//! the parent's tree has its size and mtime and the parent's files cache generation vouches for
//! its inode and ctime. Whatever is wrong with the cache, files are read, never skipped.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod support;

use support::{Env, noise, snapshot, write};

/// Writes `n` files of distinct content under `dir`, in two folders.
fn populate(dir: &Path, n: usize) {
    for i in 0..n {
        write(
            dir,
            &format!("d{}/f{i}.bin", i % 2),
            &noise(3000, i as u64 + 1),
        );
    }
}

/// Every files cache generation under the env's cache dir.
fn generations(env: &Env) -> Vec<PathBuf> {
    walkdir::WalkDir::new(env.work.path().join("cache/files"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "fc"))
        .map(|e| e.into_path())
        .collect()
}

/// Rewrites `path` with other bytes of the same length and puts its mtime back, as a careless
/// tool (or an attacker) would: only the ctime shows the change.
fn rewrite_keeping_size_and_mtime(path: &Path) {
    let old = fs::metadata(path).unwrap();
    // The kernel's ctime clock may be coarse: let it tick past the last backup's reading.
    std::thread::sleep(Duration::from_millis(30));
    let len = old.len() as usize;
    fs::write(path, noise(len, 999)).unwrap();
    let f = fs::File::options().write(true).open(path).unwrap();
    f.set_modified(old.modified().unwrap()).unwrap();
    let new = fs::metadata(path).unwrap();
    assert_eq!(
        (new.len(), new.modified().unwrap()),
        (old.len(), old.modified().unwrap())
    );
}

#[tokio::test]
async fn an_unchanged_rerun_reads_nothing_and_a_content_change_under_the_same_mtime_is_read() {
    let env = support::env().await;
    let src = env.dir("src");
    populate(&src, 6);
    let first = env.backup(&[&src], None).await;
    assert_eq!(first.files_new, 6);
    assert_eq!(
        generations(&env).len(),
        1,
        "one generation per recovery point"
    );

    let again = env.backup(&[&src], None).await;
    assert_eq!((again.files_unchanged, again.bytes_read), (6, 0));
    assert_eq!(
        generations(&env).len(),
        1,
        "the parent's generation is pruned"
    );

    rewrite_keeping_size_and_mtime(&src.join("d1/f3.bin"));
    let third = env.backup(&[&src], None).await;
    assert_eq!((third.files_unchanged, third.files_changed), (5, 1));
    assert_eq!(third.bytes_read, 3000);
    let rp = third.recovery_point.unwrap();
    env.assert_restores(&rp, &src, &snapshot(&src)).await;
}

#[tokio::test]
async fn without_the_cache_every_file_is_read_and_the_result_is_the_same() {
    let env = support::env().await;
    let src = env.dir("src");
    populate(&src, 4);
    env.backup(&[&src], None).await;
    fs::remove_dir_all(env.work.path().join("cache/files")).unwrap();
    let again = env.backup(&[&src], None).await;
    assert_eq!((again.files_unchanged, again.files_changed), (0, 4));
    assert_eq!(again.bytes_read, 4 * 3000);
    // Same content, same trees below the source: nothing new is stored for it. Only the
    // folders above it may get new trees, as their mtimes move with whatever else runs in
    // the temp dir (other tests create folders in /tmp meanwhile).
    let above = src.ancestors().count() as u64 - 1;
    assert!(
        again.blobs_new <= above,
        "same content, same trees: nothing new is stored below the source ({} new blobs, {above} folders above it)",
        again.blobs_new
    );
    // And the generation it wrote serves the next run again.
    let third = env.backup(&[&src], None).await;
    assert_eq!(third.files_unchanged, 4);
}

#[tokio::test]
async fn a_generation_of_another_recovery_point_vouches_for_nothing() {
    let env = support::env().await;
    let src = env.dir("src");
    populate(&src, 4);
    let changed = src.join("d0/f2.bin");
    // Job a backs up the first content; job b, the same paths, backs up the second.
    let a1 = env.backup(&[&src], Some("a")).await;
    let a_gen = generations(&env);
    assert_eq!(a_gen.len(), 1);
    rewrite_keeping_size_and_mtime(&changed);
    let b1 = env.backup(&[&src], Some("b")).await;
    assert_eq!(
        b1.files_changed, 1,
        "b's parent is a's point: the change is seen"
    );
    let b_gen: Vec<_> = generations(&env)
        .into_iter()
        .filter(|p| !a_gen.contains(p))
        .collect();
    assert_eq!(b_gen.len(), 1, "each job keeps its newest generation");
    // Now give a's next run b's generation under a's name: it vouches for the file's current
    // inode and ctime, but for b's content lists, not those in a's trees.
    fs::copy(&b_gen[0], &a_gen[0]).unwrap();
    let a2 = env.backup(&[&src], Some("a")).await;
    assert_eq!(
        a2.parent, a1.recovery_point,
        "a's parent is its own last point"
    );
    // d1 is the same in both points, so b's block for it is also a's: those two files are
    // rightly reused. d0's trees differ, so its files are read.
    assert_eq!((a2.files_unchanged, a2.files_changed), (2, 2));
    let rp = a2.recovery_point.unwrap();
    env.assert_restores(&rp, &src, &snapshot(&src)).await;
}

#[tokio::test]
async fn a_damaged_cache_means_reading_not_failing() {
    let env = support::env().await;
    let src = env.dir("src");
    populate(&src, 4);
    env.backup(&[&src], None).await;
    let damages: [fn(&mut Vec<u8>); 3] = [
        |b| b.iter_mut().skip(8).step_by(7).for_each(|x| *x ^= 1),
        |b| b.truncate(b.len() / 2),
        |b| *b = vec![0xff; 1 << 16],
    ];
    for damage in damages {
        let g = generations(&env).pop().unwrap();
        let mut bytes = fs::read(&g).unwrap();
        damage(&mut bytes);
        fs::write(&g, bytes).unwrap();
        let again = env.backup(&[&src], None).await;
        assert_eq!((again.files_unchanged, again.files_changed), (0, 4));
        let healed = env.backup(&[&src], None).await;
        assert_eq!(
            healed.files_unchanged, 4,
            "the run after writes a sound generation"
        );
    }
}

#[tokio::test]
async fn identical_copies_of_a_directory_store_one_tree_blob() {
    let (one, two) = (support::env().await, support::env().await);
    let single = one.dir("src");
    populate(&single.join("x"), 4);
    let double = two.dir("src");
    populate(&double.join("x"), 4);
    populate(&double.join("y"), 4);
    // The copy has other inodes and ctimes; make its mtimes those of the original.
    for e in walkdir::WalkDir::new(double.join("y")) {
        let e = e.unwrap();
        let orig = double
            .join("x")
            .join(e.path().strip_prefix(double.join("y")).unwrap());
        let f = fs::File::open(e.path()).unwrap();
        f.set_modified(fs::metadata(&orig).unwrap().modified().unwrap())
            .unwrap();
    }
    let a = one.backup(&[&single], None).await;
    let b = two.backup(&[&double], None).await;
    // Same data blobs, same tree for x and for y (and its subfolders): the counts agree.
    assert_eq!(b.blobs_new, a.blobs_new);
    assert_eq!(b.dirs, a.dirs + 3, "y and its two subfolders were walked");
}
