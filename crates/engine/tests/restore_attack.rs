//! Restore touches nothing outside its target: a directory of the target replaced by a
//! symlink, a symlink, FIFO or directory planted where a file lands, and a recovery point
//! whose names climb out or are absolute. Each test compares a checksum listing of a decoy
//! folder next to the target before and after, checks that the report names each entry that
//! was not restored with its reason (what makes the agent exit as for damage), and that the
//! rest was restored byte-exact.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rbackup_engine::tree::{Node, NodeKind, Tree};
use rbackup_engine::{RestoreOptions, RestoreReport};
use rbackup_testenv::listing;

mod support;

/// A folder holding the decoy (content no restore may change) and the restore target.
struct Box {
    root: PathBuf,
    decoy: PathBuf,
    target: PathBuf,
    before: Vec<String>,
}

impl Box {
    fn new(env: &support::Env) -> Box {
        let root = env.dir("box");
        let decoy = root.join("decoy");
        support::write(&decoy, "passwd", b"root:x:0:0\n");
        support::write(&decoy, "sub/shadow", b"secret\n");
        let target = root.join("target");
        let before = listing(&decoy);
        Box {
            root,
            decoy,
            target,
            before,
        }
    }

    /// Nothing in the decoy changed (names, kinds, modes, owners, times, content), and
    /// nothing new appeared next to it.
    fn assert_untouched(&self) {
        assert_eq!(listing(&self.decoy), self.before, "the decoy changed");
        let mut next_to: Vec<_> = fs::read_dir(&self.root)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        next_to.sort();
        assert_eq!(
            next_to,
            ["decoy", "target"],
            "something appeared beside the target"
        );
    }

    /// Where `source` (an absolute path) is restored.
    fn at(&self, source: &Path) -> PathBuf {
        self.target.join(source.strip_prefix("/").unwrap())
    }
}

async fn restore(env: &support::Env, rp: &str, target: &Path) -> RestoreReport {
    let recovery = env.work.path().join("recovery");
    env.repo
        .restore(RestoreOptions::new(rp, target, &recovery))
        .await
        .unwrap()
}

/// The report's failures as (path, reason).
fn failures(r: &RestoreReport) -> Vec<(String, String)> {
    r.failed
        .iter()
        .map(|s| (s.path.clone(), s.reason.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_symlinked_directory_in_the_target_is_reported_not_followed() {
    let env = support::env().await;
    let src = env.dir("src");
    support::write(&src, "a/x.txt", b"x in a");
    support::write(&src, "a/sub/y.txt", b"y in a/sub");
    support::write(&src, "b/z.txt", b"z in b");
    let rp = env.backup(&[&src], None).await.recovery_point.unwrap();
    let bx = Box::new(&env);
    let here = bx.at(&src);
    fs::create_dir_all(&here).unwrap();
    std::os::unix::fs::symlink(&bx.decoy, here.join("a")).unwrap();

    let report = restore(&env, &rp, &bx.target).await;

    bx.assert_untouched();
    assert_eq!(
        fs::read_link(here.join("a")).unwrap(),
        bx.decoy,
        "the link was replaced"
    );
    assert_eq!(fs::read(here.join("b/z.txt")).unwrap(), b"z in b");
    let failed = failures(&report);
    let shown = |rel: &str| src.join(rel).display().to_string();
    let paths: Vec<&str> = failed.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            shown("a"),
            shown("a/sub"),
            shown("a/sub/y.txt"),
            shown("a/x.txt")
        ],
        "{failed:#?}"
    );
    let link = here.join("a").display().to_string();
    for (path, reason) in &failed {
        assert!(
            reason.contains(&format!("{link} is a symbolic link; not followed")),
            "{path}: {reason}"
        );
    }
    assert_eq!(report.files, 1, "{report:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn objects_planted_where_files_land_are_replaced_or_reported_never_followed() {
    let env = support::env().await;
    let src = env.dir("src");
    for name in ["link", "fifo", "dir", "plain"] {
        support::write(&src, name, format!("content of {name}").as_bytes());
    }
    let rp = env.backup(&[&src], None).await.recovery_point.unwrap();
    let bx = Box::new(&env);
    let here = bx.at(&src);
    fs::create_dir_all(&here).unwrap();
    std::os::unix::fs::symlink(bx.decoy.join("passwd"), here.join("link")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        here.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    support::write(&here, "dir/inside", b"the operator's");

    let report = restore(&env, &rp, &bx.target).await;

    bx.assert_untouched();
    // A link or FIFO at the destination is replaced itself: the restored file takes its name.
    for name in ["link", "fifo", "plain"] {
        let m = fs::symlink_metadata(here.join(name)).unwrap();
        assert!(m.is_file() && !m.file_type().is_fifo(), "{name}: {m:?}");
        let want = format!("content of {name}");
        assert_eq!(
            fs::read(here.join(name)).unwrap(),
            want.as_bytes(),
            "{name}"
        );
    }
    // A directory is reported and left as it was.
    assert_eq!(
        fs::read(here.join("dir/inside")).unwrap(),
        b"the operator's"
    );
    let failed = failures(&report);
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(failed[0].0, src.join("dir").display().to_string());
    assert!(
        failed[0].1.contains("is a directory; not replaced"),
        "{}",
        failed[0].1
    );
    assert_eq!(report.files, 3);
}

fn node(name: &[u8], kind: NodeKind, content: Vec<rbackup_engine::crypto::BlobId>) -> Node {
    let size = if content.is_empty() {
        0
    } else {
        GOOD.len() as u64
    };
    Node {
        name: name.to_vec().into(),
        kind,
        mode: if kind == NodeKind::Dir {
            0o40755
        } else {
            0o100644
        },
        uid: 0,
        gid: 0,
        mtime_ns: 1_700_000_000_000_000_000,
        legacy_ctime_ns: None,
        legacy_ino: None,
        size,
        content,
        segments: Vec::new(),
        subtree: None,
        class: None,
        target: None,
        link_group: None,
    }
}

const GOOD: &[u8] = b"restored as it should be";

#[tokio::test(flavor = "multi_thread")]
async fn names_that_climb_out_or_are_absolute_are_refused_and_the_rest_restored() {
    let env = support::env().await;
    let bx = Box::new(&env);
    let data = env.repo.master_keys().blob_id(GOOD);
    let file = |name: &[u8]| node(name, NodeKind::File, vec![data]);
    // d/ holds a `..` file and a good one; the root holds every other kind of bad name.
    let inner = Tree {
        nodes: vec![file(b".."), file(b"fine")],
    };
    let mut d = node(b"d", NodeKind::Dir, Vec::new());
    d.subtree = Some(env.repo.crafted_tree_id(&inner));
    let mut dotdir = node(b"..", NodeKind::Dir, Vec::new());
    dotdir.subtree = d.subtree;
    let root = Tree {
        nodes: vec![
            file(b"."),
            file(b"../escaped"),
            file(b"/abs"),
            file(b""),
            file(b"nul\0name"),
            dotdir,
            d,
            file(b"ok.txt"),
        ],
    };
    let root_id = env.repo.crafted_tree_id(&root);
    let rp = env
        .repo
        .store_crafted_recovery_point(&[GOOD], &[inner, root], root_id)
        .await
        .unwrap();

    let report = restore(&env, &rp.to_hex(), &bx.target).await;

    bx.assert_untouched();
    assert_eq!(fs::read(bx.target.join("ok.txt")).unwrap(), GOOD);
    assert_eq!(fs::read(bx.target.join("d/fine")).unwrap(), GOOD);
    let mut names: Vec<_> = fs::read_dir(&bx.target)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["d", "ok.txt"]);
    let failed = failures(&report);
    let want = [
        ("/\"\"", "the name is empty"),
        ("/\"..\"", "the name is `..`"),
        ("/\"../escaped\"", "the name contains `/`"),
        ("/\".\"", "the name is `.`"),
        ("/\"/abs\"", "the name contains `/`"),
        ("/\"nul\\0name\"", "the name contains a NUL byte"),
        ("/d/\"..\"", "the name is `..`"),
    ];
    let mut want: Vec<(String, String)> = want
        .iter()
        .map(|(p, why)| (p.to_string(), format!("refused name: {why}")))
        .collect();
    want.sort();
    assert_eq!(failed, want);
    assert_eq!((report.files, report.dirs), (2, 1), "{report:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tree_nested_deeper_than_the_bound_is_refused_below_it() {
    let env = support::env().await;
    let bx = Box::new(&env);
    let data = env.repo.master_keys().blob_id(GOOD);
    // 600 nested `n` directories, a file at the bottom; built from the bottom up.
    let mut trees = vec![Tree {
        nodes: vec![node(b"deep.txt", NodeKind::File, vec![data])],
    }];
    for _ in 0..600 {
        let mut dir = node(b"n", NodeKind::Dir, Vec::new());
        dir.subtree = Some(env.repo.crafted_tree_id(trees.last().unwrap()));
        trees.push(Tree { nodes: vec![dir] });
    }
    trees
        .last_mut()
        .unwrap()
        .nodes
        .push(node(b"top.txt", NodeKind::File, vec![data]));
    let root_id = env.repo.crafted_tree_id(trees.last().unwrap());
    let rp = env
        .repo
        .store_crafted_recovery_point(&[GOOD], &trees, root_id)
        .await
        .unwrap();

    let report = restore(&env, &rp.to_hex(), &bx.target).await;

    bx.assert_untouched();
    assert_eq!(fs::read(bx.target.join("top.txt")).unwrap(), GOOD);
    let failed = failures(&report);
    assert_eq!(failed.len(), 1, "{failed:#?}");
    // The root is level 1: the 512th tree's `n` entry is the one refused.
    let want = format!("/{}\"n\"", "n/".repeat(511));
    assert_eq!(failed[0].0, want);
    assert_eq!(failed[0].1, "refused: nested deeper than 512 levels");
    assert_eq!((report.files, report.dirs), (1, 511), "{report:?}");
}

/// Identical directories share one tree blob, so a crafted recovery point can make its walk
/// exponential: 48 levels, each listing the level below twice, is 2^48 entries from 97 tree
/// entries in all. The walk is bounded by the counts the recovery point records, so the
/// restore ends at once with the recovery point named as damaged, and writes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_tree_that_shares_its_subtrees_exponentially_is_refused_not_walked() {
    let env = support::env().await;
    let bx = Box::new(&env);
    let data = env.repo.master_keys().blob_id(GOOD);
    let mut trees = vec![Tree {
        nodes: vec![node(b"leaf.txt", NodeKind::File, vec![data])],
    }];
    for _ in 0..48 {
        let below = env.repo.crafted_tree_id(trees.last().unwrap());
        let twice = [&b"a"[..], b"b"].map(|name| {
            let mut dir = node(name, NodeKind::Dir, Vec::new());
            dir.subtree = Some(below);
            dir
        });
        trees.push(Tree {
            nodes: twice.to_vec(),
        });
    }
    let root_id = env.repo.crafted_tree_id(trees.last().unwrap());
    let rp = env
        .repo
        .store_crafted_recovery_point(&[GOOD], &trees, root_id)
        .await
        .unwrap();

    fs::create_dir_all(&bx.target).unwrap();
    let started = std::time::Instant::now();
    let err = env
        .repo
        .restore(RestoreOptions::new(
            &rp.to_hex(),
            &bx.target,
            env.work.path().join("recovery"),
        ))
        .await
        .unwrap_err();

    assert!(
        started.elapsed().as_secs() < 60,
        "took {:?}",
        started.elapsed()
    );
    match &err {
        rbackup_engine::EngineError::Corrupt { reason, .. } => assert!(
            matches!(
                reason,
                rbackup_engine::CorruptReason::TreeLargerThanRecorded { .. }
            ),
            "{err}"
        ),
        other => panic!("expected a damaged recovery point, got {other}"),
    }
    bx.assert_untouched();
    assert_eq!(
        fs::read_dir(&bx.target).unwrap().count(),
        0,
        "the target was written"
    );
}

/// Staged on another file system (tmpfs), files are copied into their directory and renamed
/// over what is planted there: the planted symlink is replaced, not followed, and no
/// temporary file is left behind.
#[tokio::test(flavor = "multi_thread")]
async fn across_file_systems_a_planted_symlink_is_replaced_not_followed() {
    let shm = Path::new("/dev/shm");
    let env = support::env().await;
    let dev = |p: &Path| fs::metadata(p).unwrap().dev();
    if !shm.is_dir() || dev(shm) == dev(env.work.path()) {
        assert!(
            std::env::var_os("RBACKUP_REQUIRE_ALL").is_none(),
            "needs /dev/shm on another file system than the temp dir"
        );
        println!("SKIP: /dev/shm is not another file system here");
        return;
    }
    let src = env.dir("src");
    support::write(&src, "f.txt", b"copied across");
    let rp = env.backup(&[&src], None).await.recovery_point.unwrap();
    let bx = Box::new(&env);
    let here = bx.at(&src);
    fs::create_dir_all(&here).unwrap();
    std::os::unix::fs::symlink(bx.decoy.join("passwd"), here.join("f.txt")).unwrap();
    let recovery = tempfile::tempdir_in(shm).unwrap();

    let report = env
        .repo
        .restore(RestoreOptions::new(&rp, &bx.target, recovery.path()))
        .await
        .unwrap();

    bx.assert_untouched();
    assert!(report.failed.is_empty(), "{report:?}");
    let m = fs::symlink_metadata(here.join("f.txt")).unwrap();
    assert!(m.is_file(), "{m:?}");
    assert_eq!(fs::read(here.join("f.txt")).unwrap(), b"copied across");
    let names: Vec<_> = fs::read_dir(&here)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["f.txt"], "a temporary file was left behind");
}
