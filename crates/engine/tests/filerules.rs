//! The MARS file-type rules on real file systems: fscrypt-encrypted files on a loop-mounted
//! ext4, compressed files on a loop-mounted btrfs, sparse files, mount points inside a source.
//!
//! Loop mounts need root and the tools (`mkfs.ext4`, `e4crypt`, `mkfs.btrfs`); where the
//! machine cannot, a test prints `SKIP <name>: <reason>` and passes, and prints `RAN <name>`
//! when it ran, so CI output shows which ran (`cargo xtask ci` runs this file with
//! `--nocapture`).

use std::fs::{self, File};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

mod support;

use rbackup_engine::classify::{Decision, FileClass, attrs_of, classify};
use rbackup_engine::{BackupOptions, BackupReport, Repository, RestoreOptions};

fn is_root() -> bool {
    rustix_uid() == 0
}

fn rustix_uid() -> u32 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2)?.parse().ok())
        })
        .unwrap_or(u32::MAX)
}

fn sh(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A loop-mounted file system, unmounted on drop.
struct Mount {
    _dir: tempfile::TempDir,
    at: PathBuf,
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}

fn loop_mount(mkfs: &str, mkfs_args: &[&str], size: &str) -> Result<Mount, String> {
    if !is_root() {
        return Err("needs root for loop mounts".into());
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let img = dir.path().join("fs.img");
    let at = dir.path().join("mnt");
    fs::create_dir(&at).map_err(|e| e.to_string())?;
    sh("truncate", &["-s", size, img.to_str().unwrap()])?;
    let mut args: Vec<&str> = mkfs_args.to_vec();
    args.push(img.to_str().unwrap());
    sh(mkfs, &args)?;
    sh(
        "mount",
        &["-o", "loop", img.to_str().unwrap(), at.to_str().unwrap()],
    )?;
    Ok(Mount { _dir: dir, at })
}

/// ext4 with fscrypt, and a directory whose files are encrypted.
fn encrypted_dir() -> Result<(Mount, PathBuf), String> {
    let m = loop_mount("mkfs.ext4", &["-q", "-O", "encrypt"], "64M")?;
    let dir = m.at.join("enc");
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
    let m = loop_mount("mkfs.btrfs", &["-q"], "256M")?;
    let dir = m.at.join("c");
    fs::create_dir(&dir).map_err(|e| e.to_string())?;
    sh("chattr", &["+c", dir.to_str().unwrap()])?;
    Ok((m, dir))
}

macro_rules! or_skip {
    ($name:expr, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(reason) => {
                println!("SKIP {}: {}", $name, reason);
                return;
            }
        }
    };
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
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    let file = src.join("sparse.img");
    make_sparse(&file);
    let a = attrs_of(&file).unwrap();
    if !a.sparse {
        println!(
            "SKIP sparse_files: the file system of {} does not report holes",
            work.path().display()
        );
        return;
    }
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
    println!("RAN sparse_files_store_only_data_and_restore_holes");
}

#[tokio::test]
async fn fscrypt_files_are_read_in_full_every_run() {
    let (_m, dir) = or_skip!("fscrypt_files", encrypted_dir());
    let secret = dir.join("secret.txt");
    fs::write(&secret, "top secret ".repeat(10_000)).unwrap();
    let sparse = dir.join("sparse.img");
    make_sparse(&sparse);
    let a = attrs_of(&secret).unwrap();
    if !a.encrypted {
        println!("SKIP fscrypt_files: statx does not report STATX_ATTR_ENCRYPTED here");
        return;
    }
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
    println!("RAN fscrypt_files_are_read_in_full_every_run");
}

#[tokio::test]
async fn btrfs_compressed_files_are_incremental_and_compressed_sparse_is_sparse() {
    let (_m, dir) = or_skip!("btrfs_compressed", btrfs_compressed_dir());
    let text = dir.join("notes.txt");
    fs::write(&text, "compress me please ".repeat(50_000)).unwrap();
    let sparse = dir.join("sparse.img");
    make_sparse(&sparse);
    let a = attrs_of(&text).unwrap();
    if !a.compressed {
        println!("SKIP btrfs_compressed: statx does not report STATX_ATTR_COMPRESSED here");
        return;
    }
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
    println!("RAN btrfs_compressed_files_are_incremental_and_compressed_sparse_is_sparse");
}

#[tokio::test]
async fn mount_points_inside_a_source_are_skipped_but_a_named_root_is_not() {
    if !is_root() {
        println!("SKIP mount_points: needs root to mount a tmpfs");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let inner = src.join("mnt");
    fs::create_dir_all(&inner).unwrap();
    fs::write(src.join("a.txt"), b"a").unwrap();
    or_skip!(
        "mount_points",
        sh(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                "size=4m",
                "none",
                inner.to_str().unwrap()
            ]
        )
    );
    let _guard = Mount {
        _dir: tempfile::tempdir().unwrap(),
        at: inner.clone(),
    };
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
    println!("RAN mount_points_inside_a_source_are_skipped_but_a_named_root_is_not");
}
