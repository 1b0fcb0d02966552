//! Scratch space is private: staging folders are 0700, staged packs 0600; a recovery or cache
//! folder another user could change is refused before anything is written in it; an embedder
//! that names no cache dir stages in a private per-run temp folder.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rbackup_engine::{EngineError, FolderRisk, RestoreOptions, ScratchFolder};

mod support;

/// Giving a folder to another user needs root; without it the test skips (or fails under
/// `RBACKUP_REQUIRE_ALL`), through the one gate all tests share.
fn root_or_skip(test: &str) -> bool {
    rbackup_testenv::need_root(test, "to give a folder to another user")
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// A backed-up source and its recovery point.
async fn backed_up(env: &support::Env) -> String {
    let src = env.dir("src");
    support::write(&src, "a.txt", &support::noise(300 << 10, 1));
    let rep = env.backup(&[&src], None).await;
    rep.recovery_point.unwrap()
}

fn restore_into(env: &support::Env, rp: &str, recovery: &Path) -> RestoreOptions {
    RestoreOptions::new(rp, env.work.path().join("restored"), recovery)
}

/// The scratch folders of this process under `base` and what they hold, seen mid-backup.
fn staging_modes(base: &Path) -> Vec<(PathBuf, u32)> {
    let me = format!("{}-", std::process::id());
    let mut seen = Vec::new();
    for run in entries(base) {
        if !run.file_name().unwrap().to_str().unwrap().starts_with(&me) {
            continue;
        }
        seen.push((run.clone(), mode(&run)));
        for f in entries(&run) {
            if f.extension().is_some_and(|e| e == "pack") {
                seen.push((f.clone(), mode(&f)));
            }
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn staging_folders_are_0700_and_staged_packs_0600() {
    let env = support::env().await;
    let src = env.dir("src");
    // Several files of several packs: the last files are opened while packs are staged.
    for i in 0..6 {
        support::write(&src, &format!("f{i}"), &support::noise(700 << 10, i));
    }
    let cache = env.work.path().join("cache");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut opts = env.options(&[&src], None);
    opts.before_open = Some(Arc::new({
        let (seen, base) = (seen.clone(), cache.join("staging"));
        move |_: &Path| {
            let mut seen = seen.lock().unwrap();
            seen.push((base.clone(), mode(&base)));
            seen.extend(staging_modes(&base));
        }
    }));
    env.repo.backup(opts).await.unwrap();
    let seen = seen.lock().unwrap();
    let runs = seen
        .iter()
        .filter(|(p, _)| p.parent() == Some(&cache.join("staging")));
    assert!(
        runs.count() >= 2,
        "no per-run staging folder seen: {seen:?}"
    );
    assert!(
        seen.iter().any(|(p, _)| p.extension().is_some()),
        "no staged pack seen"
    );
    for (path, m) in seen.iter() {
        let want = if path.extension().is_some() {
            0o600
        } else {
            0o700
        };
        assert_eq!(*m, want, "{}: mode {m:04o}", path.display());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_cache_dir_packs_are_staged_in_a_private_temp_folder() {
    let env = support::env().await;
    let src = env.dir("src");
    for i in 0..4 {
        support::write(&src, &format!("f{i}"), &support::noise(700 << 10, i));
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut opts = env.options(&[&src], None);
    opts.cache_dir = None;
    opts.before_open = Some(Arc::new({
        let seen = seen.clone();
        move |_: &Path| {
            for private in entries(&std::env::temp_dir()) {
                let name = private.file_name().unwrap().to_string_lossy().into_owned();
                let staging = private.join("staging");
                if name.starts_with("rbackup-") && staging.is_dir() {
                    let runs = staging_modes(&staging);
                    if !runs.is_empty() {
                        seen.lock()
                            .unwrap()
                            .push((private.clone(), mode(&private), runs));
                    }
                }
            }
        }
    }));
    env.repo.backup(opts).await.unwrap();
    let seen = seen.lock().unwrap();
    let (private, private_mode, runs) = seen.first().expect("no private temp folder seen");
    assert!(
        seen.iter().all(|(p, ..)| p == private),
        "one folder per run"
    );
    assert_eq!(*private_mode, 0o700, "{}", private.display());
    for (path, m) in runs {
        let want = if path.extension().is_some() {
            0o600
        } else {
            0o700
        };
        assert_eq!(*m, want, "{}", path.display());
    }
    assert!(!private.exists(), "{} left behind", private.display());
}

fn assert_refused(e: EngineError, folder: &Path, want: FolderRisk) {
    let text = e.to_string();
    match e {
        EngineError::UnsafeFolder {
            path, role, risk, ..
        } => {
            assert_eq!(path, folder, "{text}");
            assert_eq!(role, ScratchFolder::Recovery, "{text}");
            assert_eq!(risk, want, "{text}");
        }
        other => panic!("not refused as unsafe: {other}"),
    }
    assert!(text.contains(&folder.display().to_string()), "{text}");
    assert!(
        !text.contains("rbackup ") && !text.contains("--"),
        "cli advice: {text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recovery_folder_owned_by_another_user_is_refused() {
    if !root_or_skip("a_recovery_folder_owned_by_another_user_is_refused") {
        return;
    }
    let env = support::env().await;
    let rp = backed_up(&env).await;
    let shared = env.dir("shared");
    rustix::fs::chown(&shared, Some(rustix::fs::Uid::from_raw(65534)), None).unwrap();
    let e = env
        .repo
        .restore(restore_into(&env, &rp, &shared))
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("uid 65534") && text.contains("another user"),
        "{text}"
    );
    assert_refused(e, &shared, FolderRisk::OwnedByOther { us: 0 });
    assert!(entries(&shared).is_empty(), "something was written in it");
    assert!(!env.work.path().join("restored").exists());

    // Our own folder with a staging subfolder planted by another user: refused as well.
    let ours = env.dir("ours");
    let planted = ours.join("rbackup-restore");
    std::fs::create_dir(&planted).unwrap();
    rustix::fs::chown(&planted, Some(rustix::fs::Uid::from_raw(65534)), None).unwrap();
    let e = env
        .repo
        .restore(restore_into(&env, &rp, &ours))
        .await
        .unwrap_err();
    assert_refused(e, &planted, FolderRisk::OwnedByOther { us: 0 });
    assert!(entries(&planted).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_world_writable_recovery_folder_is_refused_unless_sticky() {
    let env = support::env().await;
    let rp = backed_up(&env).await;
    let open = env.dir("open");
    set_mode(&open, 0o777);
    let e = env
        .repo
        .restore(restore_into(&env, &rp, &open))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("sticky"), "{e}");
    assert_refused(e, &open, FolderRisk::WritableByOthers);
    assert!(entries(&open).is_empty());

    set_mode(&open, 0o770);
    let e = env
        .repo
        .restore(restore_into(&env, &rp, &open))
        .await
        .unwrap_err();
    assert_refused(e, &open, FolderRisk::WritableByOthers);

    // Sticky, like /tmp: allowed, and our scratch folder inside it is private.
    set_mode(&open, 0o1777);
    let rep = env
        .repo
        .restore(restore_into(&env, &rp, &open))
        .await
        .unwrap();
    assert_eq!(rep.files, 1);
    assert_eq!(mode(&open), 0o1777, "the caller's folder is left as it was");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cache_dir_owned_by_another_user_is_refused() {
    if !root_or_skip("a_cache_dir_owned_by_another_user_is_refused") {
        return;
    }
    let env = support::env().await;
    let src = env.dir("src");
    support::write(&src, "a.txt", b"a");
    let foreign = env.dir("foreign-cache");
    rustix::fs::chown(&foreign, Some(rustix::fs::Uid::from_raw(65534)), None).unwrap();
    let mut opts = env.options(&[&src], None);
    opts.cache_dir = Some(foreign.clone());
    let e = env.repo.backup(opts).await.unwrap_err();
    match &e {
        EngineError::UnsafeFolder { path, role, .. } => {
            assert_eq!((path, *role), (&foreign, ScratchFolder::Cache), "{e}")
        }
        other => panic!("not refused: {other}"),
    }
    assert!(entries(&foreign).is_empty());
    assert!(env.repo.recovery_points().await.unwrap().is_empty());
}
