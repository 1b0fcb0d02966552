//! Restores into a target that already holds files, or that is small or full: `--overwrite`,
//! `--delete`, `--dry-run`, the up-front space check of a target on another file system, a
//! target that fills mid-way, the restore's job record and the case-collision warning.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::agent::tmpfs;
use crate::harness::*;

/// Where the restore of `src` lands in `target`.
fn restored(target: &Path, src: &Path) -> PathBuf {
    target.join(src.strip_prefix("/").unwrap())
}

/// `--json restore latest --target T --recovery-dir <agent>/rec` with `extra` options.
fn restore(a: &Agent, target: &Path, extra: &[&str]) -> (i32, Value) {
    let rec = a.p("rec");
    let mut args = vec!["restore", "latest", "--target", target.to_str().unwrap()];
    args.extend(["--recovery-dir", rec.to_str().unwrap()]);
    args.extend_from_slice(extra);
    a.json(&args)
}

/// Every path under `dir` whose name starts with `.rbackup-tmp`.
fn temp_files(dir: &Path) -> Vec<String> {
    rbackup_testenv::listing(dir)
        .into_iter()
        .filter(|line| {
            let path = line.split(' ').next().unwrap_or_default();
            path.rsplit('/')
                .next()
                .unwrap_or_default()
                .starts_with(".rbackup-tmp")
        })
        .collect()
}

/// A source of `files` files of `size` random bytes each, backed up.
fn backed_up(a: &Agent, files: usize, size: usize) -> PathBuf {
    let src = a.p("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..files {
        fs::write(src.join(format!("f{i:03}")), Rng(i as u64 + 1).bytes(size)).unwrap();
    }
    a.backup(&src);
    src
}

#[test]
fn a_small_target_on_another_file_system_is_refused_before_anything_is_written() {
    const T: &str = "a_small_target_on_another_file_system_is_refused_before_anything_is_written";
    let a = Agent::registered();
    backed_up(&a, 40, 200_000);
    let target = a.p("small");
    let Some(_t) = tmpfs(&target, "5m", T) else {
        return;
    };
    let _ran = rbackup_testenv::ran(T, "root, tmpfs");
    let rec = a.p("rec");
    let out = a.restore_latest_via(&target, &rec);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains(&format!("the restore target {}", target.display()))
            && e.contains("has 5.00 MiB free but this restore writes 7.")
            && e.contains("--target")
            && !e.contains("check"),
        "{e}"
    );
    assert_eq!(
        fs::read_dir(&target).unwrap().count(),
        0,
        "target untouched"
    );
    assert!(
        fs::read_dir(&rec).map_or(true, |d| d.count() == 0),
        "nothing staged left"
    );
}

#[test]
fn a_target_that_fills_mid_way_stops_with_one_error_and_no_temporary_files() {
    const T: &str = "a_target_that_fills_mid_way_stops_with_one_error_and_no_temporary_files";
    let a = Agent::registered();
    let src = backed_up(&a, 200, 20_000);
    // Room for the bytes (so the up-front check passes) but inodes for only a few files.
    let target = a.p("full");
    let Some(_t) = tmpfs(&target, "40m,nr_inodes=40", T) else {
        return;
    };
    let _ran = rbackup_testenv::ran(T, "root, tmpfs");
    let out = a.restore_latest_via(&target, &a.p("rec"));
    assert_eq!(code(&out), 1, "{}", text(&out));
    let e = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = e.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one error line: {e}");
    let want = format!(
        "restore stopped: no space left on device in {}",
        target.display()
    );
    assert!(lines[0].starts_with(&want), "{e}");
    assert!(lines[0].contains(" of 200 files, ") && lines[0].contains("choose another --target"));
    assert!(!e.contains("check"), "no vault check advised: {e}");
    assert_eq!(temp_files(&target), Vec::<String>::new());
    let written = fs::read_dir(restored(&target, &src)).unwrap().count();
    assert!(written > 0 && written < 200, "{written} files written");

    let (c, r) = restore(&a, &target, &[]);
    assert_eq!(c, 1, "{r}");
    assert_eq!(r["stopped"]["cause"], "no_space", "{r}");
    let failed = r["failed"].as_array().unwrap();
    assert!(
        !failed.is_empty() && failed.iter().all(|f| f["cause"] == "no_space"),
        "{r}"
    );
    assert!(
        r["files"].as_u64().unwrap() < 200 && r["files_planned"] == 200,
        "{r}"
    );
    assert_eq!(temp_files(&target), Vec::<String>::new());
}

/// A restored tree where `a` was changed in size, `b` in content only (same size and
/// mtime), `c` removed, `d` in mtime only, `e` in content and mtime (same size).
fn changed_target(a: &Agent) -> (PathBuf, PathBuf) {
    let src = a.p("src");
    fs::create_dir_all(&src).unwrap();
    for (name, seed) in [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5)] {
        fs::write(src.join(name), Rng(seed).bytes(5000)).unwrap();
        set_mtime(&src.join(name), 1_700_000_000, 5);
    }
    a.backup(&src);
    let target = a.p("out");
    restore(a, &target, &[]);
    let r = restored(&target, &src);
    fs::write(r.join("a"), b"local edit").unwrap();
    fs::write(r.join("b"), Rng(99).bytes(5000)).unwrap();
    set_mtime(&r.join("b"), 1_700_000_000, 5);
    fs::remove_file(r.join("c")).unwrap();
    set_mtime(&r.join("d"), 1_650_000_000, 0);
    fs::write(r.join("e"), Rng(98).bytes(5000)).unwrap();
    (src, target)
}

#[test]
fn overwrite_always_replaces_every_existing_file() {
    let a = Agent::registered();
    let (src, target) = changed_target(&a);
    let (c, r) = restore(&a, &target, &["--overwrite", "always"]);
    assert_eq!(c, 0, "{r}");
    assert_eq!(
        (r["files"].as_u64(), r["files_overwritten"].as_u64()),
        (Some(5), Some(4))
    );
    assert_eq!(r["files_kept"], 0);
    assert_same_tree(&src, &target);
}

#[test]
fn overwrite_never_keeps_what_is_there_and_restores_what_is_missing() {
    let a = Agent::registered();
    let (src, target) = changed_target(&a);
    let (c, r) = restore(&a, &target, &["--overwrite", "never"]);
    assert_eq!(c, 0, "{r}");
    assert_eq!(
        (r["files"].as_u64(), r["files_kept"].as_u64()),
        (Some(1), Some(4))
    );
    let out = restored(&target, &src);
    assert_eq!(fs::read(out.join("a")).unwrap(), b"local edit");
    assert_eq!(
        fs::read(out.join("c")).unwrap(),
        fs::read(src.join("c")).unwrap()
    );
}

#[test]
fn overwrite_if_changed_replaces_files_whose_content_differs() {
    let a = Agent::registered();
    let (src, target) = changed_target(&a);
    let (c, r) = restore(&a, &target, &["--overwrite", "if-changed"]);
    assert_eq!(c, 0, "{r}");
    // Written: a (size differs), c (missing), e (read and found different). Kept: b (same
    // size and mtime, not read) and d (read and found the same; its mtime is set back).
    assert_eq!(r["files"], 3, "{r}");
    assert_eq!(
        (r["files_overwritten"].as_u64(), r["files_kept"].as_u64()),
        (Some(2), Some(2))
    );
    let out = restored(&target, &src);
    assert_eq!(
        fs::read(out.join("a")).unwrap(),
        fs::read(src.join("a")).unwrap()
    );
    assert_eq!(
        fs::read(out.join("b")).unwrap(),
        Rng(99).bytes(5000),
        "kept by the heuristic"
    );
    for name in ["d", "e"] {
        assert_eq!(
            fs::read(out.join(name)).unwrap(),
            fs::read(src.join(name)).unwrap()
        );
        let mtime = fs::metadata(out.join(name)).unwrap().modified().unwrap();
        let want = std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 5);
        assert_eq!(mtime, want, "{name}'s mtime");
    }
}

/// A restored tree with extras beneath the restored path (a file, a folder, a symlink to a
/// folder outside) and beside it.
fn target_with_extras(a: &Agent) -> (PathBuf, PathBuf, PathBuf) {
    let src = a.p("src");
    make_tree(&src, 5, 30, 3000);
    a.backup(&src);
    let target = a.p("out");
    restore(a, &target, &[]);
    let out = restored(&target, &src);
    fs::write(out.join("extra.txt"), b"not backed up").unwrap();
    fs::create_dir_all(out.join("newdir/deeper")).unwrap();
    fs::write(out.join("newdir/deeper/x"), b"x").unwrap();
    let outside = a.p("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("precious"), b"must stay").unwrap();
    symlink(&outside, out.join("link-out")).unwrap();
    fs::write(out.parent().unwrap().join("beside.txt"), b"not beneath").unwrap();
    (src, target, outside)
}

#[test]
fn delete_removes_extras_beneath_the_restored_paths_only_and_never_follows_a_symlink() {
    let a = Agent::registered();
    let (src, target, outside) = target_with_extras(&a);
    let (c, r) = restore(&a, &target, &["--delete"]);
    assert_eq!(c, 0, "{r}");
    // extra.txt, newdir/deeper/x and the link itself; newdir and newdir/deeper.
    assert_eq!(
        (r["files_deleted"].as_u64(), r["dirs_deleted"].as_u64()),
        (Some(3), Some(2))
    );
    assert_same_tree(&src, &target);
    assert_eq!(fs::read(outside.join("precious")).unwrap(), b"must stay");
    let beside = restored(&target, &src).parent().unwrap().join("beside.txt");
    assert!(beside.exists(), "outside the restored path: left alone");
}

#[test]
fn a_dry_run_changes_nothing_and_says_what_a_restore_would_do() {
    let a = Agent::registered();
    let (_src, target, outside) = target_with_extras(&a);
    let edited = restored(&target, &a.p("src")).join("empty_file");
    fs::write(&edited, b"now not empty").unwrap();
    let before = (
        rbackup_testenv::listing(&target),
        rbackup_testenv::listing(&outside),
    );
    let (c, r) = restore(
        &a,
        &target,
        &["--dry-run", "--delete", "--overwrite", "if-changed"],
    );
    assert_eq!(c, 0, "{r}");
    assert_eq!(
        (
            rbackup_testenv::listing(&target),
            rbackup_testenv::listing(&outside)
        ),
        before,
        "nothing changed"
    );
    let rec = a.p("rec");
    assert!(
        fs::read_dir(&rec).map_or(true, |d| d.count() == 0),
        "nothing staged"
    );
    assert_eq!(r["dry_run"], true);
    assert_eq!(
        (r["files"].as_u64(), r["files_overwritten"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(r["files_kept"], 30);
    assert_eq!(
        (r["files_deleted"].as_u64(), r["dirs_deleted"].as_u64()),
        (Some(3), Some(2))
    );
    let text = a.ok(&[
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--dry-run",
    ]);
    assert!(
        text.starts_with("dry run, nothing was changed: would write 31 files (31 over"),
        "{text}"
    );
}

#[test]
fn the_restore_job_record_shows_files_and_bytes_restored() {
    let a = Agent::registered();
    backed_up(&a, 3, 1000);
    restore(&a, &a.p("out"), &[]);
    let jobs = a.ok(&["jobs"]);
    let line = jobs
        .lines()
        .find(|l| l.contains(" restore "))
        .expect("a restore record");
    assert!(line.contains("restored 3 files, 2.93 KiB"), "{jobs}");
}

/// A source with two names that differ only in case.
fn case_source(a: &Agent) -> PathBuf {
    let src = a.p("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("Readme"), b"one").unwrap();
    fs::write(src.join("README"), b"two").unwrap();
    a.backup(&src);
    src
}

#[test]
fn no_case_warning_on_a_case_sensitive_target() {
    let a = Agent::registered();
    case_source(&a);
    let out = a.restore_latest_via(&a.p("out"), &a.p("rec"));
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("differ only in case"),
        "{}",
        text(&out)
    );
}

/// exFAT folds case (as NTFS, SMB shares and ext4's casefold directories do) and has a FUSE
/// driver in Debian, so the test needs no kernel support beyond FUSE and loop devices. FUSE
/// gives each looked-up name its own inode number, which is why the probe cannot compare them.
#[test]
fn the_case_warning_is_given_on_a_casefolding_target() {
    const T: &str = "the_case_warning_is_given_on_a_casefolding_target";
    if !rbackup_testenv::need_root(T, "to loop-mount an exFAT")
        || !rbackup_testenv::need_command(T, "mkfs.exfat", "exfatprogs")
        || !rbackup_testenv::need_command(T, "mount.exfat-fuse", "exfat-fuse")
    {
        return;
    }
    let a = Agent::registered();
    case_source(&a);
    let mnt = a.p("ci");
    let _m = rbackup_testenv::require!(
        T,
        rbackup_testenv::LoopMount::of_type(
            &a.p("ci.img"),
            "32M",
            &["mkfs.exfat"],
            &mnt,
            "exfat-fuse"
        ),
        "run as root where loop devices and /dev/fuse are available"
    );
    let _ran = rbackup_testenv::ran(T, "root, exFAT (FUSE) loop mount");
    let target = mnt.join("folded");
    let out = a.restore_latest_via(&target, &a.p("rec"));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("README and") || e.contains("Readme and"),
        "{}",
        text(&out)
    );
    assert!(e.contains("differ only in case"), "{}", text(&out));
}

#[test]
fn ctrl_c_stops_a_restore_cleanly_and_says_how_far_it_got() {
    let a = Agent::registered();
    backed_up(&a, 40, 200_000);
    // Paced restore reads (the same rate at any hour), so that the restore is still fetching
    // when interrupted.
    let rate = ["--work-rate", "1MiB", "--non-work-rate", "1MiB"];
    a.ok(&[&["throttle", "set"][..], &rate[..]].concat());
    let cfg = fs::read_to_string(a.config()).unwrap();
    fs::write(
        a.config(),
        cfg.replace("restores = false", "restores = true"),
    )
    .unwrap();
    let (target, rec) = (a.p("out"), a.p("rec"));
    let child = a
        .cmd()
        .args(["restore", "latest", "--target", target.to_str().unwrap()])
        .args(["--recovery-dir", rec.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let pid = child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 1, "{}", text(&out));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("stopping: finishing the file being placed"),
        "{e}"
    );
    assert!(
        e.contains("restore stopped on request (wrote 0 of 40 files"),
        "{e}"
    );
    assert!(e.contains("--overwrite if-changed"), "{e}");
    // A fetch that was stopped moves nothing: no regular file in the target.
    let files: Vec<String> = rbackup_testenv::listing(&target)
        .into_iter()
        .filter(|l| {
            l.split(' ')
                .nth(1)
                .is_some_and(|mode| mode.starts_with("100"))
        })
        .collect();
    assert_eq!(files, Vec::<String>::new());
    assert!(
        fs::read_dir(&rec).map_or(true, |d| d.count() == 0),
        "staging removed"
    );
}
