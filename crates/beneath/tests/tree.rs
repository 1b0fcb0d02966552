//! Whole-tree operations: listing, removing and measuring a tree without following a symlink,
//! free space, and the case probe.

mod common;

use std::fs;
use std::os::unix::fs::symlink;

use common::{Fixture, rel};
use rbackup_beneath::{FileKind, Resolve, TreeCount};

/// `a/` holding a file, a nested folder and a symlink to the fixture's decoy folder.
fn tree(fx: &Fixture) {
    fs::create_dir_all(fx.base.join("a/b")).unwrap();
    fs::write(fx.base.join("a/one"), b"12345").unwrap();
    fs::write(fx.base.join("a/b/two"), b"123").unwrap();
    symlink(&fx.decoy, fx.base.join("a/b/link")).unwrap();
}

both_modes! {
    fn remove_tree_removes_links_themselves_and_counts(resolve: Resolve) {
        let fx = Fixture::new();
        tree(&fx);
        let dir = fx.dir(resolve);
        let want = TreeCount { files: 3, dirs: 2, bytes: 8 };
        assert_eq!(dir.measure_tree(&rel("a")).unwrap(), want);
        assert!(fx.base.join("a/b/two").exists(), "measuring changes nothing");
        assert_eq!(dir.remove_tree(&rel("a")).unwrap(), want);
        assert!(!fx.base.join("a").exists());
        fx.assert_decoy_unchanged();
    }
}

#[test]
fn a_symlink_given_as_the_tree_is_removed_as_a_link() {
    let fx = Fixture::new();
    tree(&fx);
    let dir = fx.dir(Resolve::Auto);
    let count = dir.remove_tree(&rel("a/b/link")).unwrap();
    assert_eq!(
        count,
        TreeCount {
            files: 1,
            dirs: 0,
            bytes: 0
        }
    );
    assert!(fx.base.join("a/b/two").exists());
    fx.assert_decoy_unchanged();
}

#[test]
fn entries_lists_names_and_kinds_without_dot_entries() {
    let fx = Fixture::new();
    tree(&fx);
    let b = fx.dir(Resolve::Auto).open_dir(&rel("a/b")).unwrap();
    let mut got: Vec<(String, FileKind)> = b
        .entries()
        .unwrap()
        .into_iter()
        .map(|(n, k)| (n.to_string(), k))
        .collect();
    got.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        got,
        [
            ("link".into(), FileKind::Symlink),
            ("two".into(), FileKind::File)
        ]
    );
}

#[test]
fn a_case_sensitive_directory_is_probed_as_such_and_the_probe_leaves_nothing() {
    let fx = Fixture::new();
    let dir = fx.dir(Resolve::Auto);
    // Empty: only a written probe can tell, and it is removed again.
    assert_eq!(dir.folds_case(false).unwrap(), None);
    assert_eq!(dir.folds_case(true).unwrap(), Some(false));
    assert_eq!(fs::read_dir(&fx.base).unwrap().count(), 0);
    // With an entry, it is looked up in the other case, even next to its twin.
    fs::write(fx.base.join("Readme"), b"").unwrap();
    assert_eq!(dir.folds_case(false).unwrap(), Some(false));
    fs::write(fx.base.join("rEADME"), b"").unwrap();
    assert_eq!(dir.folds_case(false).unwrap(), Some(false));
}

#[test]
fn free_space_is_that_of_the_file_system() {
    let fx = Fixture::new();
    let space = fx.dir(Resolve::Auto).space().unwrap();
    let st = rustix::fs::statvfs(&fx.base).unwrap();
    assert_eq!(space.block_size, st.f_frsize);
    // Other tests write meanwhile: the figures agree to within a few MiB.
    let free = st.f_bavail * st.f_frsize;
    assert!(
        space.free.abs_diff(free) < 64 << 20,
        "{} vs {free}",
        space.free
    );
}
