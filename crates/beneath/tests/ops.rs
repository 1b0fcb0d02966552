//! Each operation does what it says, on the object beneath the base and on nothing else.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

use common::{Fixture, is_root, rel};
use rbackup_beneath::{
    Access, Dir, Error, FileKind, RelPath, Replace, Resolve, metadata, set_mode, set_owner,
    set_times,
};
use rustix::fd::AsFd;

fn mode_of(path: &std::path::Path) -> u32 {
    path.symlink_metadata().unwrap().permissions().mode() & 0o7777
}

both_modes! {
    fn create_dir_all_makes_what_is_missing(resolve: Resolve) {
        let fx = Fixture::new();
        let dir = fx.dir(resolve);
        fs::create_dir(fx.base.join("a")).unwrap();
        let made = dir.create_dir_all(&rel("a/b/c"), 0o700).unwrap();
        assert_eq!(made.label(), fx.base.join("a/b/c"));
        assert_eq!(mode_of(&fx.base.join("a/b/c")), 0o700);
        // Again: it exists now, and is opened, not refused.
        dir.create_dir_all(&rel("a/b/c"), 0o700).unwrap();
        made.create_file(&rel("f")).unwrap();
        assert!(fx.base.join("a/b/c/f").is_file());
        assert!(dir.open_dir(&RelPath::new()).is_ok());
        match dir.open_dir(&rel("a/missing/x")) {
            Err(Error::NotFound { at, .. }) => assert_eq!(at, fx.base.join("a/missing")),
            other => panic!("{other:?}"),
        }
        // Only the last component missing: made beneath the strictly resolved parent.
        dir.create_dir_all(&rel("a/b/d"), 0o700).unwrap();
        assert!(fx.base.join("a/b/d").is_dir());
        // A symlink or a file as that last component is reported, not followed or replaced.
        symlink(fx.base.join("a"), fx.base.join("a/b/ln")).unwrap();
        symlink(fx.base.join("nowhere"), fx.base.join("a/b/dangling")).unwrap();
        for name in ["a/b/ln", "a/b/dangling"] {
            assert!(matches!(dir.create_dir_all(&rel(name), 0o700), Err(Error::Symlink { .. })),
                "{name}");
        }
        assert!(!fx.base.join("nowhere").exists());
        fs::write(fx.base.join("a/b/file"), b"x").unwrap();
        assert!(matches!(dir.create_dir_all(&rel("a/b/file"), 0o700),
            Err(Error::NotADirectory { found: FileKind::File, .. })));
        assert!(matches!(dir.create_dir(&rel("a/b"), 0o700), Err(Error::Exists { .. })));
        dir.create_dir(&rel("a/fresh"), 0o700).unwrap();
        assert_eq!(mode_of(&fx.base.join("a/fresh")), 0o700);
    }

    fn files_are_created_exclusively_and_private(resolve: Resolve) {
        let fx = Fixture::new();
        let dir = fx.dir(resolve);
        dir.create_dir_all(&rel("d"), 0o755).unwrap();
        let mut f = dir.create_file(&rel("d/f")).unwrap();
        f.write_all(b"hello").unwrap();
        assert_eq!(mode_of(&fx.base.join("d/f")), 0o600);
        assert!(matches!(dir.create_file(&rel("d/f")), Err(Error::Exists { .. })));
        let mut s = String::new();
        dir.open_file(&rel("d/f"), Access::Read).unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
        let mut w = dir.open_file(&rel("d/f"), Access::Write).unwrap();
        w.write_all(b"J").unwrap();
        assert_eq!(fs::read(fx.base.join("d/f")).unwrap(), b"Jello");
        // The open file blocks as a file should: O_NONBLOCK was only for the open.
        let fl = rustix::fs::fcntl_getfl(&w).unwrap();
        assert!(!fl.contains(rustix::fs::OFlags::NONBLOCK));
        assert!(matches!(dir.open_file(&rel("d"), Access::Read),
            Err(Error::NotAFile { found: FileKind::Dir, .. })));
        assert!(matches!(dir.open_file(&rel("d/none"), Access::Read), Err(Error::NotFound { .. })));
    }

    fn own_files_open_with_their_metadata_and_refuse_what_is_not_a_file(resolve: Resolve) {
        let fx = Fixture::new();
        let dir = fx.dir(resolve);
        dir.create_dir_all(&rel("d/sub"), 0o700).unwrap();
        dir.create_file(&rel("d/f")).unwrap().write_all(b"hello").unwrap();
        let (mut f, meta) = dir.open_own_file(&rel("d/f"), Access::ReadWrite).unwrap();
        assert_eq!((meta.kind, meta.size, meta.mode & 0o7777), (FileKind::File, 5, 0o600));
        f.write_all(b"J").unwrap();
        assert_eq!(fs::read(fx.base.join("d/f")).unwrap(), b"Jello");
        symlink(fx.base.join("d/f"), fx.base.join("d/link")).unwrap();
        assert!(matches!(dir.open_own_file(&rel("d/link"), Access::Read),
            Err(Error::NotAFile { found: FileKind::Symlink, .. })));
        assert!(matches!(dir.open_own_file(&rel("d/sub"), Access::Read),
            Err(Error::NotAFile { found: FileKind::Dir, .. })));
        assert!(matches!(dir.open_own_file(&rel("d/none"), Access::Read),
            Err(Error::NotFound { .. })));
        // The parent path is still resolved strictly: a symlinked directory is refused.
        symlink(fx.base.join("d"), fx.base.join("dl")).unwrap();
        assert!(matches!(dir.open_own_file(&rel("dl/f"), Access::Read),
            Err(Error::Symlink { .. })));
    }

    fn tmpfile_appears_only_when_published(resolve: Resolve) {
        let fx = Fixture::new();
        let dir = fx.dir(resolve);
        let stage = dir.create_dir_all(&rel("stage"), 0o700).unwrap();
        let tmp = dir.create_tmpfile(&rel("stage")).unwrap();
        tmp.file().write_all(b"content").unwrap();
        assert_eq!(fs::read_dir(fx.base.join("stage")).unwrap().count(), 0);
        set_mode(tmp.file(), 0o640).unwrap();
        let f = tmp.publish(&stage, &rel("done")).unwrap();
        assert_eq!(metadata(&f).unwrap().nlink, 1);
        assert_eq!(fs::read(fx.base.join("stage/done")).unwrap(), b"content");
        assert_eq!(mode_of(&fx.base.join("stage/done")), 0o640);
        drop(dir.create_tmpfile(&rel("stage")).unwrap());
        assert_eq!(fs::read_dir(fx.base.join("stage")).unwrap().count(), 1);
    }

    fn rename_never_replaces_when_asked(resolve: Resolve) {
        let fx = Fixture::new();
        let dir = fx.dir(resolve);
        let other = dir.create_dir_all(&rel("other"), 0o755).unwrap();
        fs::write(fx.base.join("src"), "new").unwrap();
        fs::write(fx.base.join("other/dst"), "old").unwrap();
        assert!(matches!(dir.rename(&rel("src"), &other, &rel("dst"), Replace::Never),
            Err(Error::Exists { .. })));
        assert_eq!(fs::read_to_string(fx.base.join("other/dst")).unwrap(), "old");
        dir.rename(&rel("src"), &other, &rel("moved"), Replace::Never).unwrap();
        assert_eq!(fs::read_to_string(fx.base.join("other/moved")).unwrap(), "new");
        assert!(matches!(dir.rename(&rel("src"), &other, &rel("x"), Replace::Never),
            Err(Error::NotFound { .. })));
    }

    fn rename_replaces_a_symlink_itself_never_its_target(resolve: Resolve) {
        let fx = Fixture::new();
        let dir = fx.dir(resolve);
        fs::write(fx.base.join("src"), "restored").unwrap();
        symlink(fx.decoy.join("passwd"), fx.base.join("dst")).unwrap();
        dir.rename(&rel("src"), &dir, &rel("dst"), Replace::NonDirectory).unwrap();
        let m = fx.base.join("dst").symlink_metadata().unwrap();
        assert!(m.is_file(), "the link was replaced by the file");
        assert_eq!(fs::read_to_string(fx.base.join("dst")).unwrap(), "restored");
        fx.assert_decoy_unchanged();
        // A plain file is replaced too; a directory is refused and left alone.
        fs::write(fx.base.join("src2"), "again").unwrap();
        dir.rename(&rel("src2"), &dir, &rel("dst"), Replace::NonDirectory).unwrap();
        assert_eq!(fs::read_to_string(fx.base.join("dst")).unwrap(), "again");
        fs::create_dir(fx.base.join("dirdst")).unwrap();
        assert!(matches!(
            dir.rename(&rel("dst"), &dir, &rel("dirdst"), Replace::NonDirectory),
            Err(Error::WouldReplaceDirectory { .. })
        ));
        assert!(fx.base.join("dirdst").is_dir() && fx.base.join("dst").is_file());
        fs::create_dir(fx.base.join("dirsrc")).unwrap();
        assert!(matches!(
            dir.rename(&rel("dirsrc"), &dir, &rel("dst"), Replace::NonDirectory),
            Err(Error::SourceIsDirectory { .. })
        ));
    }

    fn remove_and_stat_do_not_follow(resolve: Resolve) {
        let fx = Fixture::new();
        let dir = fx.dir(resolve);
        symlink(fx.decoy.join("passwd"), fx.base.join("link")).unwrap();
        fs::create_dir(fx.base.join("empty")).unwrap();
        assert_eq!(dir.stat(&rel("link")).unwrap().kind, FileKind::Symlink);
        assert_eq!(dir.stat(&rel("empty")).unwrap().kind, FileKind::Dir);
        assert_eq!(dir.stat(&RelPath::new()).unwrap().kind, FileKind::Dir);
        dir.remove_file(&rel("link")).unwrap();
        assert!(fx.base.join("link").symlink_metadata().is_err());
        assert!(dir.remove_file(&rel("empty")).is_err());
        dir.remove_dir(&rel("empty")).unwrap();
        assert!(matches!(dir.stat(&rel("empty")), Err(Error::NotFound { .. })));
        fx.assert_decoy_unchanged();
    }

    fn metadata_lands_on_the_opened_object_only(resolve: Resolve) {
        let fx = Fixture::new();
        let dir = fx.dir(resolve);
        let f = dir.create_file(&rel("f")).unwrap();
        let sub = dir.create_dir_all(&rel("sub"), 0o700).unwrap();
        // After the open, the names are swapped for symlinks to the decoy: the fds still
        // reach the objects opened, and the decoy is not touched.
        fs::rename(fx.base.join("f"), fx.base.join("f.moved")).unwrap();
        fs::rename(fx.base.join("sub"), fx.base.join("sub.moved")).unwrap();
        symlink(fx.decoy.join("passwd"), fx.base.join("f")).unwrap();
        symlink(&fx.decoy, fx.base.join("sub")).unwrap();
        let owner = if is_root() { Some(1234) } else { None };
        for (fd, path, mode) in [
            (f.as_fd(), fx.base.join("f.moved"), 0o4751),
            (sub.as_fd(), fx.base.join("sub.moved"), 0o1750),
        ] {
            set_owner(fd, owner, owner).unwrap();
            set_mode(fd, mode).unwrap();
            set_times(fd, Some(1_000_000_000), Some(1_600_000_000_123_456_789)).unwrap();
            let m = path.symlink_metadata().unwrap();
            assert_eq!(m.permissions().mode() & 0o7777, mode, "{}", path.display());
            assert_eq!((m.mtime(), m.mtime_nsec()), (1_600_000_000, 123_456_789));
            assert_eq!(m.atime(), 1);
            if let Some(id) = owner {
                assert_eq!((m.uid(), m.gid()), (id, id));
            }
            assert_eq!(metadata(fd).unwrap().mtime_ns, 1_600_000_000_123_456_789);
        }
        // `None` leaves a time as it is; `u32::MAX` is not taken to mean "leave the owner".
        set_times(&f, None, Some(5_000_000_000)).unwrap();
        assert_eq!(fx.base.join("f.moved").metadata().unwrap().atime(), 1);
        assert!(set_owner(&f, Some(u32::MAX), None).is_err());
        fx.assert_decoy_unchanged();
    }

    fn errors_name_the_path_and_the_component(resolve: Resolve) {
        let fx = Fixture::new();
        symlink(&fx.decoy, fx.base.join("a")).unwrap();
        let dir = fx.dir(resolve);
        let err = dir.create_dir_all(&rel("a/b/c"), 0o755).unwrap_err();
        assert_eq!(err.path(), fx.base.join("a/b/c"));
        let text = err.to_string();
        assert!(text.contains(&format!("{} is a symbolic link", fx.base.join("a").display())), "{text}");
    }

    fn symlinks_and_hard_links_are_made_in_the_held_parent_and_never_followed(resolve: Resolve) {
        let fx = Fixture::new();
        let dir = fx.dir(resolve);
        dir.create_dir_all(&rel("d"), 0o755).unwrap();
        // The target is stored as given, even one pointing outside.
        dir.symlink(fx.decoy.join("passwd").as_os_str(), &rel("d/out")).unwrap();
        assert_eq!(fs::read_link(fx.base.join("d/out")).unwrap(), fx.decoy.join("passwd"));
        assert!(matches!(dir.symlink("x".as_ref(), &rel("d/out")), Err(Error::Exists { .. })));
        // Its times (and owner, as root) are the link's own; the decoy it points at keeps its.
        let owner = is_root().then_some((1234, 5678));
        dir.set_symlink_meta(&rel("d/out"), owner, 1_600_000_000_000_000_007).unwrap();
        let m = fx.base.join("d/out").symlink_metadata().unwrap();
        assert_eq!((m.mtime(), m.mtime_nsec()), (1_600_000_000, 7));
        if is_root() {
            assert_eq!((m.uid(), m.gid()), (1234, 5678));
        }
        assert!(dir.set_symlink_meta(&rel("d/out"), Some((u32::MAX, 0)), 0).is_err());
        // A parent that is a symlink is refused, for the link and for its metadata.
        symlink(&fx.decoy, fx.base.join("via")).unwrap();
        assert!(matches!(dir.symlink("x".as_ref(), &rel("via/new")), Err(Error::Symlink { .. })));
        assert!(matches!(dir.set_symlink_meta(&rel("via/passwd"), None, 0), Err(Error::Symlink { .. })));
        // A hard link to a file; to a symlink it links the symlink itself, not its target.
        fs::write(fx.base.join("d/f"), b"content").unwrap();
        let other = dir.open_dir(&rel("d")).unwrap();
        dir.hard_link(&rel("d/f"), &other, &rel("g")).unwrap();
        let ino = |p: &str| fx.base.join(p).symlink_metadata().unwrap().ino();
        assert_eq!(ino("d/f"), ino("d/g"));
        dir.hard_link(&rel("d/out"), &dir, &rel("out2")).unwrap();
        assert!(fx.base.join("out2").symlink_metadata().unwrap().is_symlink());
        assert_eq!(ino("d/out"), ino("out2"));
        assert!(matches!(dir.hard_link(&rel("d/f"), &dir, &rel("out2")), Err(Error::Exists { .. })));
        assert!(matches!(dir.hard_link(&rel("d/none"), &dir, &rel("n")), Err(Error::NotFound { .. })));
        assert!(matches!(dir.hard_link(&rel("via/passwd"), &dir, &rel("n")), Err(Error::Symlink { .. })));
        fx.assert_decoy_unchanged();
    }
}

#[test]
fn auto_mode_resolves_like_the_forced_ones() {
    let fx = Fixture::new();
    let dir = Dir::open(&fx.base).unwrap();
    assert_eq!(dir.resolve(), Resolve::Auto);
    symlink(&fx.decoy, fx.base.join("a")).unwrap();
    dir.create_dir_all(&rel("x/y"), 0o755).unwrap();
    assert!(matches!(
        dir.open_dir(&rel("a/sub")),
        Err(Error::Symlink { .. })
    ));
    assert_eq!(dir.open_dir(&rel("x/y")).unwrap().resolve(), Resolve::Auto);
    fx.assert_decoy_unchanged();
}
