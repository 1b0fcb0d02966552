//! Symlinks and hard links: skipped by rule by default (counted apart from failures, which
//! alone make a run end with warnings), or stored as links (`LinkMode::Store`) and restored as
//! such beneath the target, never followed, also from a crafted recovery point.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rbackup_engine::tree::{MAX_SYMLINK_TARGET, Node, NodeKind, Tree};
use rbackup_engine::{BackupReport, LinkMode, RestoreOptions, RestoreReport, SkipKind, SkipRule};

mod support;

fn fifo(path: &Path) {
    let mode = rustix::fs::Mode::from_raw_mode(0o644);
    rustix::fs::mknodat(rustix::fs::CWD, path, rustix::fs::FileType::Fifo, mode, 0).unwrap();
}

async fn backup(env: &support::Env, src: &Path, links: LinkMode) -> BackupReport {
    let mut o = env.options(&[src], None);
    o.links = links;
    env.repo.backup(o).await.unwrap()
}

async fn restore(env: &support::Env, rp: &str, target: &Path) -> RestoreReport {
    let recovery = env.work.path().join("recovery");
    env.repo
        .restore(RestoreOptions::new(rp, target, &recovery))
        .await
        .unwrap()
}

fn at(target: &Path, source: &Path) -> PathBuf {
    target.join(source.strip_prefix("/").unwrap())
}

/// A folder with two files, three symlinks, a file with two links and a FIFO.
fn linked_source(env: &support::Env) -> PathBuf {
    let src = env.dir("src");
    support::write(&src, "plain.txt", b"plain");
    support::write(&src, "sub/deep.txt", b"deep");
    symlink("plain.txt", src.join("rel-link")).unwrap();
    symlink("/nonexistent/dangling", src.join("sub/dangling")).unwrap();
    // Linux names and targets are bytes, not UTF-8.
    let odd = std::ffi::OsStr::from_bytes(b"caf\xe9/\xff");
    symlink(odd, src.join("odd-link")).unwrap();
    support::write(&src, "hard-a", b"one inode, two names");
    fs::hard_link(src.join("hard-a"), src.join("sub/hard-b")).unwrap();
    fifo(&src.join("pipe"));
    src
}

#[tokio::test(flavor = "multi_thread")]
async fn rule_skips_are_counted_per_rule_and_are_not_warnings() {
    let env = support::env().await;
    let src = linked_source(&env);
    let rep = backup(&env, &src, LinkMode::Skip).await;
    assert_eq!(
        rep.rule_counts(),
        [
            (SkipRule::Symlink, 3),
            (SkipRule::HardLink, 2),
            (SkipRule::Special, 1)
        ],
        "{:?}",
        rep.skipped
    );
    assert!(rep.skipped.iter().all(|s| s.kind == SkipKind::Rule));
    assert_eq!(rep.failures().count(), 0);
    assert!(
        !rep.has_warnings(),
        "skips by rule are policy: {:?}",
        rep.skipped
    );
    assert_eq!(rep.files_new, 2);
    let json = serde_json::to_value(&rep).unwrap();
    let link = &json["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"] == src.join("rel-link").display().to_string())
        .unwrap();
    assert_eq!(link["kind"], "rule");
    assert_eq!(link["rule"], "symlink");
    assert!(link["reason"].as_str().unwrap().contains("symbolic link"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_that_vanishes_is_a_failure_beside_the_rule_skips() {
    let env = support::env().await;
    let src = linked_source(&env);
    support::write(&src, "goes-away", b"soon gone");
    let mut o = env.options(&[&src], None);
    let gone = src.join("goes-away");
    o.before_open = Some(Arc::new(move |p: &Path| {
        if p == gone {
            fs::remove_file(p).unwrap();
        }
    }));
    let rep = env.repo.backup(o).await.unwrap();
    let failures: Vec<_> = rep.failures().collect();
    assert_eq!(failures.len(), 1, "{:?}", rep.skipped);
    assert_eq!(failures[0].kind, SkipKind::Error);
    assert!(failures[0].reason.contains("vanished"), "{failures:?}");
    assert!(rep.has_warnings());
    assert_eq!(
        rep.skipped.len(),
        7,
        "the list still holds every skipped file"
    );
}

#[test]
fn records_from_before_the_split_still_tell_rules_from_failures() {
    let old = serde_json::json!({"path": "/a/l", "reason": SkipRule::Symlink.reason()});
    let s: rbackup_engine::Skipped = serde_json::from_value(old).unwrap();
    assert_eq!(s.skip_rule(), Some(SkipRule::Symlink));
    let old = serde_json::json!({"path": "/a/f", "reason": "cannot read: Permission denied"});
    let s: rbackup_engine::Skipped = serde_json::from_value(old).unwrap();
    assert_eq!((s.kind, s.skip_rule()), (SkipKind::Error, None));
}

#[tokio::test(flavor = "multi_thread")]
async fn stored_links_restore_as_symlinks_and_shared_inodes() {
    let env = support::env().await;
    let src = linked_source(&env);
    let rep = backup(&env, &src, LinkMode::Store).await;
    assert_eq!(rep.rule_counts(), [(SkipRule::Special, 1)]);
    assert!(!rep.has_warnings(), "{:?}", rep.skipped);
    assert_eq!((rep.symlinks, rep.hard_links), (3, 1));
    assert_eq!(
        rep.files_new, 3,
        "plain, deep and the first link of the pair"
    );

    let target = env.dir("target");
    let r = restore(&env, rep.recovery_point.as_deref().unwrap(), &target).await;
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert_eq!((r.symlinks, r.hard_links), (3, 1));
    let back = at(&target, &src);
    for link in ["rel-link", "sub/dangling", "odd-link"] {
        let restored = back.join(link);
        assert!(restored.symlink_metadata().unwrap().is_symlink(), "{link}");
        assert_eq!(
            fs::read_link(&restored).unwrap(),
            fs::read_link(src.join(link)).unwrap(),
            "{link}"
        );
    }
    assert_eq!(fs::read(back.join("rel-link")).unwrap(), b"plain");
    let (a, b) = (back.join("hard-a"), back.join("sub/hard-b"));
    assert_eq!(
        a.metadata().unwrap().ino(),
        b.metadata().unwrap().ino(),
        "one inode"
    );
    assert_eq!(a.metadata().unwrap().nlink(), 2);
    assert_eq!(fs::read(&b).unwrap(), b"one inode, two names");
    assert!(!back.join("pipe").exists(), "special files stay skipped");
    let leftovers: Vec<_> = fs::read_dir(&back)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".rbackup-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Restoring only `sub`: the other link of the pair is outside the selection, so
    // `hard-b` comes back as a file of its own.
    let part = env.dir("part");
    let mut o = RestoreOptions::new("latest", &part, env.work.path().join("recovery"));
    o.paths = vec![src.join("sub")];
    let r = env.repo.restore(o).await.unwrap();
    assert!(r.failed.is_empty() && r.warnings.is_empty(), "{r:?}");
    assert_eq!((r.files, r.hard_links, r.symlinks), (2, 0, 1));
    let b = at(&part, &src).join("sub/hard-b");
    assert_eq!(fs::read(&b).unwrap(), b"one inode, two names");
    assert_eq!(b.metadata().unwrap().nlink(), 1);
    assert!(!at(&part, &src).join("hard-a").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_incremental_backup_sees_a_changed_link_target_and_new_links() {
    let env = support::env().await;
    let src = linked_source(&env);
    backup(&env, &src, LinkMode::Store).await;
    fs::remove_file(src.join("rel-link")).unwrap();
    symlink("sub/deep.txt", src.join("rel-link")).unwrap();
    fs::hard_link(src.join("plain.txt"), src.join("plain-too")).unwrap();
    let rep = backup(&env, &src, LinkMode::Store).await;
    assert!(rep.parent.is_some());
    assert_eq!((rep.symlinks, rep.hard_links), (3, 2));

    let target = env.dir("target");
    let r = restore(&env, "latest", &target).await;
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    let back = at(&target, &src);
    assert_eq!(
        fs::read_link(back.join("rel-link")).unwrap(),
        Path::new("sub/deep.txt")
    );
    assert_eq!(
        back.join("plain.txt").metadata().unwrap().ino(),
        back.join("plain-too").metadata().unwrap().ino()
    );
    assert_eq!(fs::read(back.join("plain-too")).unwrap(), b"plain");
}

/// A node as a crafted tree holds it.
fn node(name: &[u8], kind: NodeKind) -> Node {
    Node {
        name: name.to_vec().into(),
        kind,
        mode: match kind {
            NodeKind::Dir => 0o40755,
            NodeKind::File => 0o100644,
            NodeKind::Symlink => 0o120777,
        },
        uid: 0,
        gid: 0,
        mtime_ns: 1_700_000_000_000_000_000,
        legacy_ctime_ns: None,
        legacy_ino: None,
        size: 0,
        content: Vec::new(),
        segments: Vec::new(),
        subtree: None,
        class: None,
        target: None,
        link_group: None,
    }
}

fn link(name: &[u8], target: &[u8]) -> Node {
    let mut n = node(name, NodeKind::Symlink);
    n.target = Some(target.to_vec().into());
    n
}

fn file(env: &support::Env, name: &[u8], data: &[u8], group: Option<u64>) -> Node {
    let mut n = node(name, NodeKind::File);
    n.content = vec![env.repo.master_keys().blob_id(data)];
    n.size = data.len() as u64;
    n.link_group = group;
    n
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crafted_symlink_never_steers_a_later_write_outside_the_target() {
    let env = support::env().await;
    let outside = env.dir("outside");
    let before: Vec<_> = fs::read_dir(&outside).unwrap().collect();
    assert!(before.is_empty());
    // `a -> outside` and then a directory `a` holding `x`: whichever is made first, `x` must
    // not land in `outside`.
    let inner = Tree {
        nodes: vec![file(&env, b"x", b"hostile", None)],
    };
    let mut dir = node(b"a", NodeKind::Dir);
    dir.subtree = Some(env.repo.crafted_tree_id(&inner));
    let root = Tree {
        nodes: vec![link(b"a", outside.as_os_str().as_bytes()), dir],
    };
    let root_id = env.repo.crafted_tree_id(&root);
    let rp = env
        .repo
        .store_crafted_recovery_point(&[b"hostile"], &[inner, root], root_id)
        .await
        .unwrap();
    let target = env.dir("target");
    let r = restore(&env, &rp.to_hex(), &target).await;
    assert!(
        fs::read_dir(&outside).unwrap().next().is_none(),
        "written outside"
    );
    assert_eq!(fs::read(target.join("a/x")).unwrap(), b"hostile");
    assert!(
        r.failed
            .iter()
            .any(|f| f.path == "/a" && f.reason.contains("is a directory; not replaced")),
        "{:?}",
        r.failed
    );

    // A second restore into the same target, now with the link in place first: the file
    // meant for `b/x` is refused at the link, not written through it.
    let inner = Tree {
        nodes: vec![file(&env, b"x", b"hostile", None)],
    };
    let mut dir = node(b"b", NodeKind::Dir);
    dir.subtree = Some(env.repo.crafted_tree_id(&inner));
    let first = Tree {
        nodes: vec![link(b"b", outside.as_os_str().as_bytes())],
    };
    let second = Tree { nodes: vec![dir] };
    let (first_id, second_id) = (
        env.repo.crafted_tree_id(&first),
        env.repo.crafted_tree_id(&second),
    );
    let rp1 = env
        .repo
        .store_crafted_recovery_point(&[], &[first], first_id)
        .await
        .unwrap();
    let rp2 = env
        .repo
        .store_crafted_recovery_point(&[b"hostile"], &[inner, second], second_id)
        .await
        .unwrap();
    let r1 = restore(&env, &rp1.to_hex(), &target).await;
    assert!(r1.failed.is_empty(), "{:?}", r1.failed);
    assert!(target.join("b").symlink_metadata().unwrap().is_symlink());
    let r2 = restore(&env, &rp2.to_hex(), &target).await;
    assert!(
        fs::read_dir(&outside).unwrap().next().is_none(),
        "written through the link"
    );
    assert!(
        r2.failed
            .iter()
            .any(|f| f.reason.contains("is a symbolic link; not followed")),
        "{:?}",
        r2.failed
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn crafted_link_groups_and_targets_are_refused_or_restored_as_copies() {
    let env = support::env().await;
    let root = Tree {
        nodes: vec![
            file(&env, b"f1", b"first", Some(7)),
            // Same group, other content: not a link of f1, whatever the number says.
            file(&env, b"f2", b"second", Some(7)),
            // Same group and content: linked.
            file(&env, b"f3", b"first", Some(7)),
            // A group on a symlink is no hard link: it stays a symlink.
            {
                let mut l = link(b"l", b"f1");
                l.link_group = Some(7);
                l
            },
            link(b"long", &vec![b'a'; MAX_SYMLINK_TARGET + 1]),
            link(b"nul", b"a\0b"),
        ],
    };
    let root_id = env.repo.crafted_tree_id(&root);
    let rp = env
        .repo
        .store_crafted_recovery_point(&[b"first", b"second"], &[root], root_id)
        .await
        .unwrap();
    let target = env.dir("target");
    let r = restore(&env, &rp.to_hex(), &target).await;
    let ino = |n: &str| target.join(n).metadata().unwrap().ino();
    assert_eq!(fs::read(target.join("f2")).unwrap(), b"second");
    assert_ne!(ino("f1"), ino("f2"));
    assert_eq!(ino("f1"), ino("f3"));
    assert_eq!(fs::read_link(target.join("l")).unwrap(), Path::new("f1"));
    assert_eq!((r.symlinks, r.hard_links, r.files), (1, 1, 3));
    let refused: Vec<&str> = r.failed.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(refused, ["/\"long\"", "/\"nul\""], "{:?}", r.failed);
    assert!(
        r.failed
            .iter()
            .all(|f| f.reason.contains("symbolic link target"))
    );
    assert!(!target.join("long").exists() && !target.join("nul").exists());
}
