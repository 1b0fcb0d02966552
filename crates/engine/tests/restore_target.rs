//! A restore into a target that already holds things: `delete` stays beneath the restored
//! paths and never goes through a symlink; a cancelled restore writes nothing and says so.

mod support;

use std::fs;
use std::path::{Path, PathBuf};

use rbackup_engine::{Cancel, RestoreOptions, RestoreReport, StopCause};
use rbackup_testenv::listing;

/// Where `source` (an absolute path) lands in `target`.
fn at(target: &Path, source: &Path) -> PathBuf {
    target.join(source.strip_prefix("/").unwrap())
}

async fn restore(
    env: &support::Env,
    target: &Path,
    edit: impl FnOnce(&mut RestoreOptions),
) -> RestoreReport {
    let mut opts = RestoreOptions::new("latest", target, env.work.path().join("recovery"));
    edit(&mut opts);
    env.repo.restore(opts).await.unwrap()
}

/// `src` with `a/x`, `a/sub/y` and `b/z`, backed up and restored into `target`.
async fn restored(env: &support::Env) -> (PathBuf, PathBuf) {
    let src = env.dir("src");
    support::write(&src, "a/x", b"x");
    support::write(&src, "a/sub/y", b"y");
    support::write(&src, "b/z", b"z");
    env.backup(&[&src], None).await;
    let target = env.dir("target");
    restore(env, &target, |_| {}).await;
    (src, target)
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_of_a_selected_path_leaves_its_siblings_extras_alone() {
    let env = support::env().await;
    let (src, target) = restored(&env).await;
    let here = at(&target, &src);
    support::write(&here, "a/extra", b"gone");
    support::write(&here, "a/sub/deeper/extra", b"gone too");
    support::write(&here, "b/extra", b"not beneath the selected path");
    let r = restore(&env, &target, |o| {
        o.paths = vec![src.join("a")];
        o.delete = true;
    })
    .await;
    assert_eq!(
        (r.files_deleted, r.dirs_deleted, r.bytes_deleted),
        (2, 1, 12)
    );
    assert!(!here.join("a/extra").exists() && !here.join("a/sub/deeper").exists());
    assert_eq!(
        fs::read(here.join("b/extra")).unwrap(),
        b"not beneath the selected path"
    );
    assert_eq!(fs::read(here.join("a/sub/y")).unwrap(), b"y");
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_never_goes_through_a_symlink_in_place_of_a_restored_folder() {
    let env = support::env().await;
    let (src, target) = restored(&env).await;
    let decoy = env.dir("decoy");
    support::write(&decoy, "precious", b"outside the target");
    let before = listing(&decoy);
    let here = at(&target, &src);
    fs::remove_dir_all(here.join("a")).unwrap();
    std::os::unix::fs::symlink(&decoy, here.join("a")).unwrap();
    let r = restore(&env, &target, |o| o.delete = true).await;
    assert_eq!(listing(&decoy), before, "nothing changed through the link");
    assert_eq!(
        fs::read_link(here.join("a")).unwrap(),
        decoy,
        "the link is left as it is"
    );
    assert_eq!((r.files_deleted, r.dirs_deleted), (0, 0), "{r:?}");
    assert!(
        r.failed
            .iter()
            .any(|f| f.path == src.join("a").display().to_string()),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_restore_writes_nothing_and_says_it_stopped() {
    let env = support::env().await;
    let src = env.dir("src");
    support::write(&src, "f", &support::noise(1 << 20, 3));
    env.backup(&[&src], None).await;
    let target = env.dir("target");
    let cancel = Cancel::default();
    cancel.cancel();
    let r = restore(&env, &target, |o| o.cancel = Some(cancel)).await;
    assert_eq!(r.stopped.map(|s| s.cause), Some(StopCause::Cancelled));
    assert_eq!((r.files, r.files_planned), (0, 1));
    assert!(!at(&target, &src).join("f").exists());
    let staged = env.work.path().join("recovery");
    assert!(
        fs::read_dir(&staged).map_or(true, |d| d.count() == 0),
        "staging removed"
    );
}
