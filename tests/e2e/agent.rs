//! The MARS agent's behaviours: local space rules, limits, passphrase change, job history.

use std::fs;

use crate::harness::*;

/// A tmpfs of `size` at `at`, unmounted on drop; `None` when we cannot mount one (the test is
/// then skipped, or fails under `RBACKUP_REQUIRE_ALL=1`).
pub(crate) fn tmpfs(
    at: &std::path::Path,
    size: &str,
    test: &str,
) -> Option<rbackup_testenv::LoopMount> {
    if !rbackup_testenv::need_root(test, "to mount a small tmpfs") {
        return None;
    }
    match rbackup_testenv::LoopMount::tmpfs(at, size) {
        Ok(m) => Some(m),
        Err(why) => {
            rbackup_testenv::skip(
                test,
                &format!("a tmpfs mount ({why})"),
                "run as root where mounts are allowed (not a restricted container)",
            );
            None
        }
    }
}

fn packs_in(a: &Agent) -> usize {
    vault_files(&a.vault_dir())
        .iter()
        .filter(|p| p.to_string_lossy().contains("/packs/"))
        .count()
}

#[test]
fn cache_dir_without_five_percent_free_is_refused_before_upload() {
    let a = Agent::bare();
    let creds = a.create_vault();
    let cache = a.p("smallcache");
    let Some(_t) = tmpfs(
        &cache,
        "1m",
        "cache_dir_without_five_percent_free_is_refused_before_upload",
    ) else {
        return;
    };
    let _ran = rbackup_testenv::ran(
        "cache_dir_without_five_percent_free_is_refused_before_upload",
        "root, tmpfs",
    );
    a.register_with(&creds, &["--cache-dir", cache.to_str().unwrap()]);
    let src = a.p("src");
    fs::create_dir_all(&src).unwrap();
    // 100 MiB of source (mostly a hole) needs 5 MiB of cache; the tmpfs has 1 MiB.
    let f = fs::File::create(src.join("big.img")).unwrap();
    f.set_len(100 << 20).unwrap();
    let out = a.run(&["backup", src.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains(cache.to_str().unwrap()) && e.contains("5%") && e.contains("needs 5.00 MiB"),
        "{e}"
    );
    assert_eq!(packs_in(&a), 0, "nothing uploaded");
}

#[test]
fn staged_packs_stay_within_the_cache_budget() {
    let a = Agent::registered();
    let src = a.p("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..4 {
        fs::write(src.join(format!("r{i}.bin")), Rng(7 + i).bytes(12 << 20)).unwrap();
    }
    let rep = a.backup(&src);
    let budget = rep["source_bytes"].as_u64().unwrap() * 5 / 100;
    let high = rep["cache_high_water"].as_u64().unwrap();
    assert!(
        high > 0 && high <= budget,
        "high-water {high} > budget {budget}"
    );
}

#[test]
fn recovery_folder_without_room_is_refused_and_nothing_is_written() {
    let a = Agent::registered();
    let src = a.p("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("r.bin"), Rng(1).bytes(6 << 20)).unwrap();
    a.backup(&src);
    let rec = a.p("smallrec");
    let Some(_t) = tmpfs(
        &rec,
        "2m",
        "recovery_folder_without_room_is_refused_and_nothing_is_written",
    ) else {
        return;
    };
    let _ran = rbackup_testenv::ran(
        "recovery_folder_without_room_is_refused_and_nothing_is_written",
        "root, tmpfs",
    );
    let target = a.p("out");
    let out = a.restore_latest_via(&target, &rec);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("recovery folder")
            && e.contains(rec.to_str().unwrap())
            && e.contains("--recovery-dir"),
        "{e}"
    );
    assert!(!target.exists(), "nothing written to the target");
    assert_eq!(
        fs::read_dir(&rec).unwrap().count(),
        0,
        "recovery folder left empty"
    );
}

#[test]
fn recovery_dir_override_is_used_and_left_empty() {
    let a = Agent::registered();
    let src = a.p("src");
    make_tree(&src, 61, 20, 10_000);
    a.backup(&src);
    let rec = a.p("myrecovery");
    fs::create_dir_all(&rec).unwrap();
    // A leftover of a killed restore (a dead pid) is cleaned up.
    fs::create_dir_all(rec.join("rbackup-restore/999999999-dead/home")).unwrap();
    let target = a.p("out");
    let (c, r) = a.json(&[
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--recovery-dir",
        rec.to_str().unwrap(),
    ]);
    assert_eq!(c, 0, "{r}");
    assert_same_tree(&src, &target);
    assert_eq!(
        fs::read_dir(&rec).unwrap().count(),
        0,
        "recovery dir not empty"
    );
}

#[test]
fn sources_over_54400_gb_are_refused_before_upload() {
    const T: &str = "sources_over_54400_gb_are_refused_before_upload";
    let a = Agent::registered();
    let src = a.p("src");
    fs::create_dir_all(&src).unwrap();
    // Sparse files: 4 x 15 TiB = 66 TB apparent size, no space used.
    for i in 0..4 {
        let f = fs::File::create(src.join(format!("huge{i}.img"))).unwrap();
        if f.set_len(15 << 40).is_err() {
            rbackup_testenv::skip(
                T,
                "a file system that holds 15 TiB sparse files",
                "set TMPDIR to ext4, btrfs, xfs or tmpfs",
            );
            return;
        }
    }
    let _ran = rbackup_testenv::ran(T, "15 TiB sparse files in TMPDIR");
    let out = a.run(&["backup", src.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("54,400 GB"), "{e}");
    assert_eq!(packs_in(&a), 0);
}

#[test]
fn passphrase_change_replaces_the_old_one() {
    let a = Agent::registered();
    let src = a.p("src");
    make_tree(&src, 71, 10, 5_000);
    a.backup(&src);
    let new = a.p("new.txt");
    fs::write(&new, "a brand new passphrase, long enough\n").unwrap();
    a.ok(&[
        "passphrase",
        "change",
        "--new-passphrase-file",
        new.to_str().unwrap(),
    ]);
    let mut keys: Vec<_> = vault_files(&a.vault_dir())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/keys/"))
        .collect();
    keys.sort();
    // One key file and its second copy.
    assert_eq!(
        keys.len(),
        2,
        "exactly one key file (and its copy) after the change: {keys:?}"
    );
    assert_eq!(keys[1].as_os_str(), &*format!("{}.copy", keys[0].display()));
    let id = a.machine_id();
    let target = a.p("out");
    let t = target.to_str().unwrap();
    let old = a.run(&[
        "restore",
        "latest",
        "--target",
        t,
        "--machine",
        &id,
        "--passphrase-file",
        a.pass_file().to_str().unwrap(),
    ]);
    assert_eq!(
        code(&old),
        1,
        "old passphrase must no longer open the machine"
    );
    let (c, r) = a.json(&[
        "restore",
        "latest",
        "--target",
        t,
        "--machine",
        &id,
        "--passphrase-file",
        new.to_str().unwrap(),
    ]);
    assert_eq!(c, 0, "{r}");
    assert_same_tree(&src, &target);
    // Scheduled runs keep working without any passphrase (local key file).
    a.backup(&src);
}

#[test]
fn generated_passphrase_is_saved_0600_and_never_overwritten() {
    let a = Agent::bare();
    a.ok(&[
        "vault",
        "create",
        &a.vault_url(),
        "--credentials-out",
        a.p("c.json").to_str().unwrap(),
    ]);
    let saved = a.p("saved-pass.txt");
    fs::write(&saved, "precious").unwrap();
    let out = a.run(&[
        "register",
        "--vault-credentials",
        a.p("c.json").to_str().unwrap(),
        "--generate-passphrase",
        "--save-passphrase-to",
        saved.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1, "must refuse to overwrite");
    assert_eq!(fs::read_to_string(&saved).unwrap(), "precious");
    let fresh = a.p("fresh-pass.txt");
    let out = a.run(&[
        "--json",
        "register",
        "--vault-credentials",
        a.p("c.json").to_str().unwrap(),
        "--generate-passphrase",
        "--save-passphrase-to",
        fresh.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&fresh).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(fs::read_to_string(&fresh).unwrap().len() >= 16);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["machine_id"].as_str().is_some() && v["vault"].as_str().is_some(),
        "{v}"
    );
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains(fresh.to_str().unwrap()) && e.contains("lost passphrase means lost backups"),
        "{e}"
    );
}

#[test]
fn job_history_lists_backups_and_restores_with_skips() {
    let a = Agent::registered();
    let src = a.p("src");
    make_tree(&src, 81, 10, 5_000);
    std::os::unix::fs::symlink("nowhere", src.join("link")).unwrap();
    let (c, _) = a.json(&["backup", src.to_str().unwrap()]);
    assert_eq!(c, 0, "a symlink skipped by rule is no warning");
    let bad = a.run(&["backup", "/no/such/dir"]);
    assert_eq!(code(&bad), 1);
    a.restore_latest(&a.p("out"));
    let (c, jobs) = a.json(&["jobs"]);
    assert_eq!(c, 0);
    let jobs = jobs.as_array().unwrap();
    assert_eq!(jobs.len(), 3, "{jobs:?}");
    assert_eq!(jobs[0]["kind"], "backup");
    assert_eq!(jobs[0]["status"], "ok");
    assert!(
        jobs[0]["report"]["skipped"]
            .to_string()
            .contains("symbolic link")
    );
    assert_eq!(jobs[1]["status"], "failed");
    assert!(jobs[1]["error"].as_str().unwrap().contains("/no/such/dir"));
    assert_eq!(jobs[2]["kind"], "restore");
    assert_eq!(jobs[2]["status"], "ok");
    let human = a.ok(&["jobs"]);
    assert!(
        human.contains("skipped by rule: 1 symbolic link"),
        "{human}"
    );
}

#[test]
fn uploads_follow_the_throttle_and_the_report_says_how_long_they_waited() {
    let a = Agent::bare();
    let creds = a.create_vault();
    // The same rate in and out of work hours, so the test does not depend on the clock.
    a.register_with(&creds, &["--work-rate", "4MiB", "--non-work-rate", "4MiB"]);
    let (c, t) = a.json(&["throttle", "show"]);
    assert_eq!(c, 0);
    assert_eq!(t["rate_now"], "4MiB", "{t}");
    let src = a.p("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("r.bin"), Rng(5).bytes(12 << 20)).unwrap();
    let rep = a.backup(&src);
    let added = rep["bytes_added"].as_u64().unwrap() as f64;
    let secs = rep["duration_s"].as_f64().unwrap();
    let rate = added / secs / (4.0 * 1048576.0);
    // 12 MiB at 4 MiB/s: about 3 s; never much faster than the limit.
    assert!(rate < 1.25, "uploaded at {rate:.2}x the limit: {rep}");
    // The uploads waited on the throttle (unthrottled, the wait is 0). How much of the ~3 s is
    // waiting depends on how long reading and sealing took on a loaded machine (1.0 s has been
    // seen as 0.99 s), so only a clear part of it is required.
    assert!(rep["throttle_wait_s"].as_f64().unwrap() > 0.5, "{rep}");
    // Changed later with `throttle set`; bad values are usage errors that say what is accepted.
    a.ok(&[
        "throttle",
        "set",
        "--work-rate",
        "unlimited",
        "--non-work-rate",
        "unlimited",
    ]);
    let out = a.run(&["throttle", "set", "--work-rate", "fast"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(text(&out).contains("unlimited"), "{}", text(&out));
    fs::write(src.join("r2.bin"), Rng(6).bytes(12 << 20)).unwrap();
    let rep = a.backup(&src);
    assert_eq!(rep["throttle_wait_s"].as_f64().unwrap(), 0.0, "{rep}");
}
