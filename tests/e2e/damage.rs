//! Damage, interruption and wrong secrets: found, named, and nothing else lost.

use std::fs;
use std::time::{Duration, Instant};

use crate::harness::*;

#[test]
fn wrong_passphrase_is_refused_and_the_right_one_restores_elsewhere() {
    let a = Agent::registered();
    let src = a.p("src");
    make_tree(&src, 41, 30, 30_000);
    a.backup(&src);
    let b = second_agent(&a);
    let id = a.machine_id();
    let wrong = b.p("wrong.txt");
    fs::write(&wrong, "this is not the passphrase at all").unwrap();
    let target = b.p("out");
    let t = target.to_str().unwrap();
    let out = b.run(&[
        "restore",
        "latest",
        "--target",
        t,
        "--machine",
        &id,
        "--passphrase-file",
        wrong.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains(&format!("does not open machine {id}")), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    assert!(!target.exists() || fs::read_dir(&target).unwrap().next().is_none());
    let (c, r) = b.json(&[
        "restore",
        "latest",
        "--target",
        t,
        "--machine",
        &id,
        "--passphrase-file",
        a.pass_file().to_str().unwrap(),
    ]);
    assert_eq!(c, 0, "{r}");
    assert_same_tree(&src, &target);
}

#[test]
fn short_passphrase_is_refused_with_the_minimum() {
    let a = Agent::bare();
    a.ok(&[
        "vault",
        "create",
        &a.vault_url(),
        "--credentials-out",
        a.p("c.json").to_str().unwrap(),
    ]);
    fs::write(a.p("short.txt"), "fifteen chars!!").unwrap();
    let out = a.run(&[
        "register",
        "--vault-credentials",
        a.p("c.json").to_str().unwrap(),
        "--passphrase-file",
        a.p("short.txt").to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("16"), "the error names the minimum: {e}");
    assert!(!a.config().exists(), "nothing registered");
}

/// The largest pack holds file data (tree packs are tiny).
fn largest_pack(a: &Agent) -> std::path::PathBuf {
    vault_files(&a.vault_dir())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/packs/"))
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap()
}

#[test]
fn flipped_byte_is_found_by_check_and_restore_names_the_files() {
    let a = Agent::registered();
    let src = a.p("src");
    make_tree(&src, 51, 40, 20_000);
    fs::write(src.join("victim.bin"), Rng(3).bytes(3 << 20)).unwrap();
    a.backup(&src);
    let (c, _) = a.json(&["check", "--read-data"]);
    assert_eq!(c, 0);
    let pack = largest_pack(&a);
    let mut bytes = fs::read(&pack).unwrap();
    bytes[100] ^= 0x01;
    fs::write(&pack, bytes).unwrap();

    // Structure alone cannot see it; reading the data does.
    let (c, _) = a.json(&["check"]);
    assert_eq!(c, 0, "a flipped data byte does not change the structure");
    let out = a.run(&["check", "--read-data"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("damaged") && e.contains("cannot be restored intact"),
        "{e}"
    );

    let target = a.p("out");
    let (c, r) = a.json(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(c, 1, "{r}");
    let failed: Vec<String> = r["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    assert!(!failed.is_empty(), "{r}");
    // Everything else came back exactly; the damaged files are absent, not half-written.
    let root = target.join(src.strip_prefix("/").unwrap());
    let want = snapshot_of(&src);
    let got = snapshot_of(&root);
    for (rel, v) in &want {
        let abs = src.join(rel).display().to_string();
        if failed.contains(&abs) {
            assert!(!got.contains_key(rel), "{abs} was damaged but written");
        } else {
            assert_eq!(Some(v), got.get(rel), "{abs}");
        }
    }
    assert_recovery_dir_empty(&a);
}

fn assert_recovery_dir_empty(a: &Agent) {
    let rec = a.p("home/.cache/rbackup/recovery");
    let left: Vec<_> = walkdir(&rec);
    assert!(left.is_empty(), "recovery folder not empty: {left:?}");
}

fn walkdir(p: &std::path::Path) -> Vec<std::path::PathBuf> {
    if !p.exists() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for e in fs::read_dir(p).unwrap() {
        let e = e.unwrap().path();
        out.extend(walkdir(&e));
        out.push(e);
    }
    out
}

#[test]
fn kill_9_mid_backup_leaves_a_consistent_vault() {
    let a = Agent::registered();
    let src = a.p("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..12 {
        fs::write(src.join(format!("r{i}.bin")), Rng(100 + i).bytes(16 << 20)).unwrap();
    }
    let mut child = a
        .cmd()
        .args(["-q", "backup", src.to_str().unwrap()])
        .spawn()
        .unwrap();
    let packs = a.vault_dir().join("machines");
    let started = Instant::now();
    // Wait until some packs are in the vault, then kill without warning.
    loop {
        let n = vault_files(&packs)
            .iter()
            .filter(|p| p.to_string_lossy().contains("/packs/"))
            .count();
        if n >= 2 {
            break;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("backup finished before it could be killed ({st}); make the source bigger");
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no pack appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    let st = child.wait().unwrap();
    assert!(!st.success(), "the backup was killed");
    let (c, rps) = a.json(&["recovery-points"]);
    assert_eq!(c, 0);
    assert_eq!(
        rps.as_array().unwrap().len(),
        0,
        "no recovery point from a killed run"
    );
    let (c, chk) = a.json(&["check", "--read-data"]);
    assert_eq!(c, 0, "check after kill -9: {chk}");
    let rep = a.backup(&src);
    assert_eq!(rep["files_new"], 12);
    let (c, chk) = a.json(&["check", "--read-data"]);
    assert_eq!(c, 0, "{chk}");
    let target = a.p("out");
    a.restore_latest(&target);
    assert_same_tree(&src, &target);
    let staging = a.p("home/.cache/rbackup/staging");
    assert!(
        walkdir(&staging).is_empty(),
        "staging left behind: {:?}",
        walkdir(&staging)
    );
}
