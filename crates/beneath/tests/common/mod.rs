//! Shared fixtures: a base directory, an outside decoy whose content must never change, a
//! listing to compare it by, and a way to run a closure as an unprivileged user.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rbackup_beneath::{Dir, RelPath, Resolve};

/// Defines `mod NAME { fn openat2(); fn walk(); }`: every case runs with both resolution
/// methods, so the fallback is tested as fully as the kernel path.
#[macro_export]
macro_rules! both_modes {
    ($(fn $name:ident($r:ident: Resolve) $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            fn run($r: rbackup_beneath::Resolve) $body
            #[test]
            fn openat2() {
                run(rbackup_beneath::Resolve::Openat2)
            }
            #[test]
            fn walk() {
                run(rbackup_beneath::Resolve::Walk)
            }
        }
    )*};
}

pub struct Fixture {
    _tmp: tempfile::TempDir,
    /// The directory the `Dir` is opened on.
    pub base: PathBuf,
    /// A directory outside `base`, with content, that no operation may change.
    pub decoy: PathBuf,
    before: Vec<String>,
}

impl Fixture {
    pub fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("base");
        let decoy = tmp.path().join("decoy");
        fs::create_dir(&base).unwrap();
        fs::create_dir_all(decoy.join("sub")).unwrap();
        fs::write(decoy.join("passwd"), "root:x:0:0\n").unwrap();
        fs::write(decoy.join("sub/shadow"), "secret\n").unwrap();
        fs::set_permissions(decoy.join("passwd"), fs::Permissions::from_mode(0o644)).unwrap();
        let before = listing(&decoy);
        Fixture {
            _tmp: tmp,
            base,
            decoy,
            before,
        }
    }

    pub fn dir(&self, resolve: Resolve) -> Dir {
        Dir::open_with(&self.base, resolve).unwrap()
    }

    /// Fails if anything in the decoy changed: a name, a kind, a mode, an owner, a time or a
    /// byte of content.
    pub fn assert_decoy_unchanged(&self) {
        assert_eq!(listing(&self.decoy), self.before, "the decoy changed");
    }
}

pub use rbackup_testenv::listing;

pub fn rel(s: &str) -> RelPath {
    RelPath::parse(s).unwrap()
}

pub const NOBODY: u32 = 65534;

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Runs `f` as an unprivileged user: as root, on a thread whose effective ids are nobody's
/// (Linux credentials are per thread, and dropping euid 0 drops the capabilities); as any
/// other user, directly. `dir` is handed to nobody first so it can write there.
pub fn as_unprivileged<T: Send>(dir: &Path, f: impl FnOnce() -> T + Send) -> T {
    if !is_root() {
        return f();
    }
    std::os::unix::fs::chown(dir, Some(NOBODY), Some(NOBODY)).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            use rustix::process::{Gid, Uid};
            rustix::thread::set_thread_res_gid(None, Gid::from_raw(NOBODY), None).unwrap();
            rustix::thread::set_thread_res_uid(None, Uid::from_raw(NOBODY), None).unwrap();
            assert!(!rustix::process::geteuid().is_root());
            f()
        })
        .join()
        .unwrap()
    })
}

/// Runs `f` on a thread and fails the test if it has not returned within five seconds, so a
/// blocking open of a FIFO fails the test instead of hanging it.
pub fn within_seconds<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(5))
        .expect("the operation blocked")
}
