//! The MARS file-type rules on real file systems: fscrypt-encrypted files on a loop-mounted
//! ext4, compressed files on a loop-mounted btrfs, sparse files, mount points inside a source.
//!
//! Loop mounts need root and the tools (`mkfs.ext4`, `e4crypt`, `mkfs.btrfs`); where the
//! machine cannot, a test is gated by `rbackup_testenv`: it records `SKIP` and passes, or fails
//! under `RBACKUP_REQUIRE_ALL=1` (as in CI). A test that ran records `RAN`.

use std::fs::{self, File};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

mod support;

use rbackup_engine::classify::{Decision, FileClass, attrs_of, classify};
use rbackup_engine::{BackupOptions, BackupReport, Repository, RestoreOptions};
use rbackup_testenv::{LoopMount, need_command, need_root, ran, require, sh};

/// What to do when a mount or a file-system feature the kernel should offer is refused.
const KERNEL: &str = "run as root on a kernel with loop devices, ext4 encryption, btrfs and \
                      tmpfs (not in a container that forbids mounts)";

/// A loop mount on an image in a temporary folder of its own. Fields drop in order: the file
/// system is unmounted before the folder holding its image is removed.
struct Mount {
    fs: LoopMount,
    _dir: tempfile::TempDir,
}

fn loop_mount(mkfs: &[&str], size: &str) -> Result<Mount, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let fs = LoopMount::new(
        &dir.path().join("fs.img"),
        size,
        mkfs,
        &dir.path().join("mnt"),
    )?;
    Ok(Mount { fs, _dir: dir })
}

/// ext4 with fscrypt, and a directory whose files are encrypted.
fn encrypted_dir() -> Result<(Mount, PathBuf), String> {
    let m = loop_mount(&["mkfs.ext4", "-q", "-O", "encrypt"], "64M")?;
    let dir = m.fs.at().join("enc");
    fs::create_dir(&dir).map_err(|e| e.to_string())?;
    let mut child = Command::new("e4crypt")
        .args(["add_key", "-S", "0x1234567812345678", dir.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("e4crypt: {e}"))?;
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"rbackup-test-fscrypt-passphrase\n")
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "e4crypt add_key: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok((m, dir))
}

fn btrfs_compressed_dir() -> Result<(Mount, PathBuf), String> {
    let m = loop_mount(&["mkfs.btrfs", "-q"], "256M")?;
    let dir = m.fs.at().join("c");
    fs::create_dir(&dir).map_err(|e| e.to_string())?;
    sh("chattr", &["+c", dir.to_str().unwrap()])?;
    Ok((m, dir))
}

/// A registered machine in a fresh vault (kept alive by the returned environment).
async fn repo() -> support::Env {
    support::env().await
}

async fn backup(repo: &Repository, path: &Path, cache: &Path) -> BackupReport {
    let mut o = BackupOptions::new([path]);
    o.cache_dir = Some(cache.to_path_buf());
    repo.backup(o).await.unwrap()
}

async fn restore(repo: &Repository, work: &Path) -> PathBuf {
    let target = work.join("restored");
    let r = repo
        .restore(RestoreOptions::new(
            "latest",
            &target,
            work.join("recovery"),
        ))
        .await
        .unwrap();
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    target
}

fn restored(target: &Path, original: &Path) -> PathBuf {
    target.join(original.strip_prefix("/").unwrap())
}

/// A file with data at 0 and at 40 MiB and holes elsewhere, 64 MiB long.
fn make_sparse(path: &Path) -> Vec<u8> {
    let f = File::create(path).unwrap();
    f.set_len(64 << 20).unwrap();
    let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    f.write_all_at(&data, 0).unwrap();
    f.write_all_at(&data, 40 << 20).unwrap();
    f.sync_all().unwrap();
    data
}

fn skip_reasons(r: &BackupReport) -> Vec<(String, String)> {
    r.skipped
        .iter()
        .map(|s| (s.path.clone(), s.reason.clone()))
        .collect()
}

#[tokio::test]
async fn sparse_files_store_only_data_and_restore_holes() {
    const T: &str = "sparse_files_store_only_data_and_restore_holes";
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    let file = src.join("sparse.img");
    make_sparse(&file);
    let a = attrs_of(&file).unwrap();
    if !a.sparse {
        let missing = format!(
            "a file system that reports holes at {}",
            work.path().display()
        );
        rbackup_testenv::skip(T, &missing, "set TMPDIR to ext4, btrfs, xfs or tmpfs");
        return;
    }
    let _ran = ran(T, "sparse file in TMPDIR");
    assert_eq!(classify(&a), Decision::File(FileClass::Sparse));
    let env = repo().await;
    let repo = &env.repo;
    let rep = backup(repo, &src, &work.path().join("cache")).await;
    assert_eq!(
        rep.bytes_read,
        2 << 20,
        "only the two data segments are read"
    );
    let again = backup(repo, &src, &work.path().join("cache")).await;
    assert_eq!(again.files_unchanged, 1, "sparse files are incremental");
    let target = restore(repo, work.path()).await;
    let back = restored(&target, &file);
    assert_eq!(fs::read(&file).unwrap(), fs::read(&back).unwrap());
    let m = fs::metadata(&back).unwrap();
    assert_eq!(m.len(), 64 << 20);
    assert!(
        m.blocks() * 512 < 8 << 20,
        "holes recreated: {} blocks",
        m.blocks()
    );
}

#[tokio::test]
async fn fscrypt_files_are_read_in_full_every_run() {
    const T: &str = "fscrypt_files_are_read_in_full_every_run";
    if !need_root(T, "for loop mounts") || !need_command(T, "e4crypt", "e2fsprogs") {
        return;
    }
    let (_m, dir) = require!(T, encrypted_dir(), KERNEL);
    let secret = dir.join("secret.txt");
    fs::write(&secret, "top secret ".repeat(10_000)).unwrap();
    let sparse = dir.join("sparse.img");
    make_sparse(&sparse);
    let a = attrs_of(&secret).unwrap();
    if !a.encrypted {
        rbackup_testenv::skip(T, "statx reporting STATX_ATTR_ENCRYPTED", KERNEL);
        return;
    }
    let _ran = ran(T, "root, loop-mounted ext4 with fscrypt");
    assert_eq!(classify(&a), Decision::File(FileClass::Encrypted));
    let work = tempfile::tempdir().unwrap();
    let env = repo().await;
    let repo = &env.repo;
    let first = backup(repo, &dir, &work.path().join("cache")).await;
    assert_eq!(first.files_new, 1);
    let reasons = skip_reasons(&first);
    assert!(
        reasons
            .iter()
            .any(|(p, r)| p.ends_with("sparse.img") && r.contains("encrypted and sparse")),
        "{reasons:?}"
    );
    let second = backup(repo, &dir, &work.path().join("cache")).await;
    assert_eq!(second.files_unchanged, 0, "never incremental");
    assert_eq!(second.files_changed, 1);
    assert_eq!(second.bytes_read, 110_000, "read in full again");
    let target = restore(repo, work.path()).await;
    assert_eq!(
        fs::read(&secret).unwrap(),
        fs::read(restored(&target, &secret)).unwrap()
    );
}

#[tokio::test]
async fn btrfs_compressed_files_are_incremental_and_compressed_sparse_is_sparse() {
    const T: &str = "btrfs_compressed_files_are_incremental_and_compressed_sparse_is_sparse";
    if !need_root(T, "for loop mounts") || !need_command(T, "mkfs.btrfs", "btrfs-progs") {
        return;
    }
    let (_m, dir) = require!(T, btrfs_compressed_dir(), KERNEL);
    let text = dir.join("notes.txt");
    fs::write(&text, "compress me please ".repeat(50_000)).unwrap();
    let sparse = dir.join("sparse.img");
    make_sparse(&sparse);
    let a = attrs_of(&text).unwrap();
    if !a.compressed {
        rbackup_testenv::skip(T, "statx reporting STATX_ATTR_COMPRESSED", KERNEL);
        return;
    }
    let _ran = ran(T, "root, loop-mounted btrfs with compression");
    assert_eq!(classify(&a), Decision::File(FileClass::Compressed));
    let s = attrs_of(&sparse).unwrap();
    assert!(s.compressed && s.sparse, "{s:?}");
    assert_eq!(
        classify(&s),
        Decision::File(FileClass::Sparse),
        "compressed + sparse is sparse"
    );
    let work = tempfile::tempdir().unwrap();
    let env = repo().await;
    let repo = &env.repo;
    let first = backup(repo, &dir, &work.path().join("cache")).await;
    assert_eq!(first.files_new, 2, "{:?}", first.skipped);
    assert_eq!(first.bytes_read, 950_000 + (2 << 20));
    let second = backup(repo, &dir, &work.path().join("cache")).await;
    assert_eq!(
        second.files_unchanged, 2,
        "compressed and sparse files are incremental"
    );
    assert_eq!(second.bytes_read, 0);
    let target = restore(repo, work.path()).await;
    assert_eq!(
        fs::read(&text).unwrap(),
        fs::read(restored(&target, &text)).unwrap()
    );
    assert_eq!(
        fs::read(&sparse).unwrap(),
        fs::read(restored(&target, &sparse)).unwrap()
    );
}

#[tokio::test]
async fn mount_points_inside_a_source_are_skipped_but_a_named_root_is_not() {
    const T: &str = "mount_points_inside_a_source_are_skipped_but_a_named_root_is_not";
    if !need_root(T, "to mount a tmpfs") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let inner = src.join("mnt");
    fs::create_dir_all(&inner).unwrap();
    fs::write(src.join("a.txt"), b"a").unwrap();
    let _mount = require!(T, LoopMount::tmpfs(&inner, "4m"), KERNEL);
    let _ran = ran(T, "root, tmpfs");
    fs::write(inner.join("b.txt"), b"b").unwrap();
    let env = repo().await;
    let repo = &env.repo;
    let rep = backup(repo, &src, &work.path().join("cache")).await;
    let reasons = skip_reasons(&rep);
    assert!(
        reasons
            .iter()
            .any(|(p, r)| p.ends_with("/mnt") && r.contains("mount point")),
        "{reasons:?}"
    );
    assert_eq!(rep.files_new, 1);
    // Named as a source itself, the mount is backed up.
    let rep = backup(repo, &inner, &work.path().join("cache")).await;
    assert_eq!(rep.files_new, 1, "{:?}", rep.skipped);
}
