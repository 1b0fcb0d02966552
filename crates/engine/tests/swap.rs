//! The backup reads what it classified: an entry swapped between the walker's `statx` and its
//! open — for a symlink to a secret outside the source, for a FIFO, for another file, or a
//! directory for a symlink — is skipped as changed, never followed, never read, and never
//! hangs the run. The swap happens in the engine's `before_open` test hook, so it lands in
//! the window every time.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rbackup_engine::{BackupReport, RestoreOptions};

mod support;

const SECRET: &[u8] = b"root:$6$decoy-secret-hash-that-must-never-be-stored:19000:0:99999:7:::\n";

/// BLAKE3 of every file under `dir`, by relative path: the decoy folder's checksum listing.
fn checksums(dir: &Path) -> BTreeMap<PathBuf, String> {
    support::snapshot(dir)
        .into_iter()
        .map(|(p, bytes)| (p, blake3::hash(&bytes).to_hex().to_string()))
        .collect()
}

/// Replaces `path` by what `make` creates there, via a rename so the name is never missing.
fn swap(path: &Path, make: impl FnOnce(&Path)) {
    let tmp = path.with_extension("swap-tmp");
    make(&tmp);
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn entries_swapped_after_classification_are_skipped_not_followed() {
    let env = support::env().await;
    let decoy = env.dir("decoy");
    support::write(&decoy, "shadow", SECRET);
    support::write(&decoy, "dir/inside", SECRET);
    let before = checksums(&decoy);

    let src = env.dir("src");
    support::write(&src, "kept.txt", b"an ordinary file");
    for name in ["to-symlink", "to-fifo", "to-other"] {
        support::write(&src, name, b"harmless content");
    }
    support::write(&src, "dir-to-symlink/file", b"harmless content");

    // Each entry is swapped once, at the moment between its classification and its open.
    let done = Arc::new(Mutex::new(HashSet::new()));
    let hook = {
        let (decoy, done) = (decoy.clone(), done.clone());
        move |path: &Path| {
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            if !done.lock().unwrap().insert(name.clone()) {
                return;
            }
            match name.as_str() {
                "to-symlink" => swap(path, |t| {
                    std::os::unix::fs::symlink(decoy.join("shadow"), t).unwrap()
                }),
                "to-fifo" => swap(path, |t| {
                    let mode = rustix::fs::Mode::from_raw_mode(0o644);
                    rustix::fs::mknodat(rustix::fs::CWD, t, rustix::fs::FileType::Fifo, mode, 0)
                        .unwrap()
                }),
                // Another regular file: its content is the secret, its inode is not the one
                // classified.
                "to-other" => swap(path, |t| std::fs::write(t, SECRET).unwrap()),
                "dir-to-symlink" => {
                    std::fs::rename(path, path.with_extension("moved")).unwrap();
                    std::os::unix::fs::symlink(decoy.join("dir"), path).unwrap();
                }
                _ => {}
            }
        }
    };
    let mut opts = env.options(&[&src], None);
    opts.before_open = Some(Arc::new(hook));
    // A FIFO that is opened or read blocking would hang the run: a watchdog says so.
    let rep: BackupReport = tokio::time::timeout(Duration::from_secs(60), env.repo.backup(opts))
        .await
        .expect("the backup hung (blocked on the FIFO?)")
        .unwrap();

    let reason = |name: &str| {
        let path = src.join(name).display().to_string();
        let found = rep.skipped.iter().find(|s| s.path == path);
        found
            .map(|s| s.reason.clone())
            .unwrap_or_else(|| panic!("{name} is not reported as skipped: {:?}", rep.skipped))
    };
    let expect = [
        ("to-symlink", "is now a symbolic link"),
        ("to-fifo", "is now a FIFO"),
        ("to-other", "replaced by another file"),
        ("dir-to-symlink", "is now a symbolic link"),
    ];
    for (name, what) in expect {
        let r = reason(name);
        assert!(
            r.contains("changed during the backup") && r.contains(what),
            "{name}: {r}"
        );
    }
    assert_eq!(rep.skipped.len(), expect.len(), "{:?}", rep.skipped);
    assert!(rep.has_warnings(), "skips make the run end with warnings");
    assert_eq!(rep.files_new, 1, "only kept.txt was read");

    // The recovery point holds kept.txt and nothing of the decoy.
    let rp = rep.recovery_point.clone().unwrap();
    let target = env.work.path().join("restored");
    let recovery = env.work.path().join("recovery");
    env.repo
        .restore(RestoreOptions::new(&rp, &target, &recovery))
        .await
        .unwrap();
    let restored = support::snapshot(&target.join(src.strip_prefix("/").unwrap()));
    let names: Vec<_> = restored.keys().map(|p| p.display().to_string()).collect();
    assert_eq!(names, ["kept.txt"], "restored files");
    let all = support::snapshot(&target);
    assert!(
        all.values()
            .all(|c| !c.windows(16).any(|w| SECRET.starts_with(w)) && c.as_slice() != SECRET),
        "the decoy's content is in the recovery point"
    );
    assert_eq!(checksums(&decoy), before, "the decoy folder changed");
}
