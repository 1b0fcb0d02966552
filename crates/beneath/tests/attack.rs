//! What a local user may have planted in the target, and what a recovery point's names may
//! hold: nothing is followed, nothing outside the base changes, and the obstacle is named.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;

use common::{Fixture, as_unprivileged, rel, within_seconds};
use rbackup_beneath::{Access, Error, FileKind, Name, NameError, RelPath, RelPathError};
use rustix::fs::{CWD, FileType, Mode};

fn mkfifo(path: &std::path::Path) {
    rustix::fs::mknodat(CWD, path, FileType::Fifo, Mode::from_raw_mode(0o666), 0).unwrap();
}

both_modes! {
    fn directory_replaced_by_symlink_to_outside(resolve: Resolve) {
        let fx = Fixture::new();
        fs::create_dir(fx.base.join("real")).unwrap();
        symlink(&fx.decoy, fx.base.join("a")).unwrap();
        symlink(&fx.decoy, fx.base.join("real/b")).unwrap();
        let dir = fx.dir(resolve);
        for (path, at) in [("a", "a"), ("a/sub", "a"), ("a/new/deeper", "a"), ("real/b/c", "real/b")] {
            match dir.create_dir_all(&rel(path), 0o755) {
                Err(Error::Symlink { at: found, .. }) => assert_eq!(found, fx.base.join(at), "{path}"),
                other => panic!("{path}: {other:?}"),
            }
            assert!(matches!(dir.open_dir(&rel(path)), Err(Error::Symlink { .. })), "{path}");
            let file = format!("{path}/f");
            assert!(matches!(dir.create_file(&rel(&file)), Err(Error::Symlink { .. })), "{file}");
            assert!(matches!(dir.create_tmpfile(&rel(path)), Err(Error::Symlink { .. })), "{path}");
        }
        // Through the link, the decoy's own files are not reachable either.
        for path in ["a/passwd", "a/sub/shadow"] {
            assert!(matches!(dir.open_file(&rel(path), Access::Write), Err(Error::Symlink { .. })));
            assert!(matches!(dir.remove_file(&rel(path)), Err(Error::Symlink { .. })));
            assert!(matches!(dir.stat(&rel(path)), Err(Error::Symlink { .. })));
        }
        fx.assert_decoy_unchanged();
        assert!(fx.base.join("a").symlink_metadata().unwrap().file_type().is_symlink());
    }

    fn symlink_inside_the_base_is_refused_too(resolve: Resolve) {
        let fx = Fixture::new();
        fs::create_dir(fx.base.join("real")).unwrap();
        symlink("real", fx.base.join("alias")).unwrap();
        let dir = fx.dir(resolve);
        assert!(matches!(dir.create_dir_all(&rel("alias/x"), 0o755), Err(Error::Symlink { .. })));
        assert!(!fx.base.join("real/x").exists());
    }

    fn non_directory_in_the_way(resolve: Resolve) {
        let fx = Fixture::new();
        fs::write(fx.base.join("file"), "keep").unwrap();
        mkfifo(&fx.base.join("fifo"));
        let dir = fx.dir(resolve);
        for (name, kind) in [("file", FileKind::File), ("fifo", FileKind::Fifo)] {
            let path = format!("{name}/x/y");
            match within_seconds({
                let dir = dir.try_clone().unwrap();
                move || dir.create_dir_all(&rel(&path), 0o755)
            }) {
                Err(Error::NotADirectory { at, found, .. }) => {
                    assert_eq!((at, found), (fx.base.join(name), kind));
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        assert_eq!(fs::read_to_string(fx.base.join("file")).unwrap(), "keep");
    }

    fn symlink_planted_where_a_file_lands(resolve: Resolve) {
        let fx = Fixture::new();
        symlink(fx.decoy.join("passwd"), fx.base.join("existing")).unwrap();
        symlink(fx.decoy.join("new-file"), fx.base.join("dangling")).unwrap();
        let dir = fx.dir(resolve);
        for name in ["existing", "dangling"] {
            assert!(matches!(dir.create_file(&rel(name)), Err(Error::Exists { .. })), "{name}");
            match dir.open_file(&rel(name), Access::Write) {
                Err(Error::NotAFile { found: FileKind::Symlink, .. }) => {}
                other => panic!("{name}: {other:?}"),
            }
            let tmp = dir.create_tmpfile(&RelPath::new()).unwrap();
            assert!(matches!(tmp.publish(&dir, &rel(name)), Err(Error::Exists { .. })));
        }
        fx.assert_decoy_unchanged();
        assert!(!fx.decoy.join("new-file").exists());
        assert_eq!(fs::read_link(fx.base.join("existing")).unwrap(), fx.decoy.join("passwd"));
    }

    fn fifo_planted_where_a_file_lands(resolve: Resolve) {
        let fx = Fixture::new();
        mkfifo(&fx.base.join("pipe"));
        let dir = fx.dir(resolve);
        let results = within_seconds(move || {
            let create = dir.create_file(&rel("pipe")).map(drop);
            let opens: Vec<_> = [Access::Read, Access::Write, Access::ReadWrite]
                .into_iter()
                .map(|a| dir.open_file(&rel("pipe"), a).map(drop))
                .collect();
            (create, opens)
        });
        assert!(matches!(results.0, Err(Error::Exists { .. })), "{:?}", results.0);
        for r in results.1 {
            assert!(matches!(r, Err(Error::NotAFile { found: FileKind::Fifo, .. })), "{r:?}");
        }
    }

    fn unprivileged_user_gets_the_same_refusals(resolve: Resolve) {
        let fx = Fixture::new();
        symlink(&fx.decoy, fx.base.join("a")).unwrap();
        symlink(fx.decoy.join("passwd"), fx.base.join("f")).unwrap();
        let base = fx.base.clone();
        as_unprivileged(&fx.base, || {
            let dir = rbackup_beneath::Dir::open_with(&base, resolve).unwrap();
            assert!(matches!(dir.create_dir_all(&rel("a/x"), 0o700), Err(Error::Symlink { .. })));
            assert!(matches!(dir.create_file(&rel("f")), Err(Error::Exists { .. })));
            // The unnamed-file path needs the /proc fallback of publish without
            // CAP_DAC_READ_SEARCH; it must still land in the base.
            let tmp = dir.create_tmpfile(&RelPath::new()).unwrap();
            std::io::Write::write_all(&mut tmp.file(), b"data").unwrap();
            tmp.publish(&dir, &rel("published")).unwrap();
        });
        assert_eq!(fs::read(fx.base.join("published")).unwrap(), b"data");
        fx.assert_decoy_unchanged();
    }
}

#[test]
fn hostile_names_from_a_recovery_point_are_refused() {
    let long = [b'n'; 256];
    let cases: [(&[u8], NameError); 7] = [
        (b"", NameError::Empty),
        (b".", NameError::Dot),
        (b"..", NameError::DotDot),
        (b"../../etc", NameError::Slash),
        (b"/etc/passwd", NameError::Slash),
        (b"a\0/etc", NameError::Slash),
        (&long, NameError::TooLong(256)),
    ];
    for (name, why) in cases {
        assert_eq!(Name::new(OsStr::from_bytes(name)), Err(why), "{name:?}");
    }
    assert_eq!(Name::new(OsStr::from_bytes(b"x\0")), Err(NameError::Nul));
    assert_eq!(RelPath::parse("/etc/passwd"), Err(RelPathError::Absolute));
    for path in ["a/../../etc", "..", "a/./b", "a//b", "a\0b/c"] {
        assert!(
            matches!(RelPath::parse(path), Err(RelPathError::Component { .. })),
            "{path}"
        );
    }
}
