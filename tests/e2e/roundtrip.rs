//! Backups that must come back exactly, and the incremental and dedup behaviour around them.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::harness::*;

#[test]
fn generated_tree_round_trips_exactly() {
    let a = Agent::registered();
    let src = a.p("src");
    make_tree(&src, 7, 250, 150_000);
    fs::write(src.join("big.bin"), Rng(99).bytes(6 << 20)).unwrap();
    let rep = a.backup(&src);
    assert_eq!(rep["files_new"].as_u64().unwrap(), 252);
    assert!(rep["recovery_point"].as_str().unwrap().len() == 64);
    let target = a.p("restored");
    let r = a.restore_latest(&target);
    assert_eq!(r["files"].as_u64().unwrap(), 252);
    assert_same_tree(&src, &target);
    let (c, chk) = a.json(&["check", "--read-data"]);
    assert_eq!(c, 0, "{chk}");
    assert!(chk["blobs_read"].as_u64().unwrap() > 252);
}

#[test]
fn unchanged_rerun_reads_nothing_and_adds_almost_nothing() {
    let a = Agent::registered();
    let src = a.p("src");
    make_tree(&src, 11, 120, 100_000);
    fs::write(src.join("top.txt"), b"original").unwrap();
    let first = a.backup(&src);
    let second = a.backup(&src);
    assert_eq!(second["bytes_read"], 0, "{second}");
    assert_eq!(second["files_new"], 0);
    assert_eq!(second["files_changed"], 0);
    assert_eq!(second["files_unchanged"], first["files_new"]);
    assert!(second["bytes_added"].as_u64().unwrap() < 4096, "{second}");
    assert_eq!(second["parent"], first["recovery_point"]);
    // Touch one file: exactly that one is read again.
    let f = src.join("top.txt");
    fs::write(&f, b"changed content").unwrap();
    let third = a.backup(&src);
    assert_eq!(third["files_changed"], 1, "{third}");
    assert_eq!(third["bytes_read"], 15);
}

/// Versions of one tree backed up as one evolving folder: each recovery point restores exactly
/// that version, and later versions cost only what changed.
#[test]
fn evolving_folder_versions_restore_exactly_and_dedup() {
    let a = Agent::registered();
    let src = a.p("src");
    make_tree(&src, 3, 150, 60_000);
    let big = Rng(5).bytes(8 << 20);
    fs::write(src.join("big.bin"), &big).unwrap();
    let mut points = Vec::new();
    for v in 0..4u64 {
        if v > 0 {
            evolve(&src, v);
        }
        let keep = a.p(&format!("ref{v}"));
        assert!(
            std::process::Command::new("cp")
                .args(["-a"])
                .arg(&src)
                .arg(&keep)
                .status()
                .unwrap()
                .success()
        );
        let rep = a.backup(&src);
        if v > 0 {
            // One insertion in the 8 MiB file and small edits: far less than the tree's size.
            let added = rep["bytes_added"].as_u64().unwrap();
            assert!(added < 3 << 20, "version {v} added {added} bytes: {rep}");
        }
        points.push((rep["recovery_point"].as_str().unwrap().to_string(), keep));
    }
    for (i, (rp, keep)) in points.iter().enumerate() {
        let target = a.p(&format!("out{i}"));
        let (c, r) = a.json(&["restore", &rp[..12], "--target", target.to_str().unwrap()]);
        assert_eq!(c, 0, "{r}");
        // The reference copy lives elsewhere; compare by content of the restored source path.
        let restored = target.join(src.strip_prefix("/").unwrap());
        assert_eq!(
            snapshot_of(keep),
            snapshot_of(&restored),
            "version {i} differs"
        );
    }
}

fn evolve(src: &std::path::Path, v: u64) {
    let mut r = Rng(1000 + v);
    let big = src.join("big.bin");
    let mut data = fs::read(&big).unwrap();
    let at = r.below(data.len() as u64) as usize;
    data.splice(at..at, r.bytes(1000));
    fs::write(&big, data).unwrap();
    fs::write(src.join(format!("new{v}.txt")), r.text(20_000)).unwrap();
    let victim = src.join(format!("f{}.txt", 2 * v));
    if victim.exists() {
        fs::remove_file(victim).unwrap();
    }
    let from = src.join(format!("f{}.bin", 2 * v + 11));
    if from.exists() {
        fs::rename(&from, src.join(format!("renamed{v}.bin"))).unwrap();
    }
}

#[test]
fn no_plaintext_or_names_in_the_vault() {
    let a = Agent::registered();
    let src = a.p("src");
    fs::create_dir_all(&src).unwrap();
    let marker = b"RBACKUP-PLAINTEXT-MARKER-0123456789";
    fs::write(src.join("secret-plans-name.txt"), marker.repeat(5000)).unwrap();
    fs::write(src.join("small.txt"), marker).unwrap();
    a.backup(&src);
    for f in vault_files(&a.vault_dir()) {
        let bytes = fs::read(&f).unwrap();
        for needle in [&marker[..], b"secret-plans-name", b"RBACKUP-PLAINTEXT"] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} contains {:?}",
                f.display(),
                String::from_utf8_lossy(needle)
            );
        }
    }
}

#[test]
fn embedded_default_is_set_up_on_first_backup() {
    let a = Agent::bare();
    let src = a.p("src");
    make_tree(&src, 21, 20, 10_000);
    let out = a.run(&["--json", "backup", src.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let pass = a.p("home/.config/rbackup/passphrase.txt");
    assert!(
        stderr.contains(pass.to_str().unwrap()),
        "notice must say where the passphrase is: {stderr}"
    );
    assert!(
        stderr.contains("lost passphrase means lost backups"),
        "{stderr}"
    );
    assert_eq!(
        fs::metadata(&pass).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(a.p("home/.local/share/rbackup/vault/vault.json").exists());
    let target = a.p("out");
    a.restore_latest(&target);
    assert_same_tree(&src, &target);
}

#[test]
fn chosen_paths_restore_alone() {
    let a = Agent::registered();
    let src = a.p("src");
    make_tree(&src, 31, 60, 20_000);
    fs::create_dir_all(src.join("keep/inner")).unwrap();
    fs::write(src.join("keep/inner/x.txt"), b"x").unwrap();
    a.backup(&src);
    let target = a.p("out");
    let want = src.join("keep");
    let (c, r) = a.json(&[
        "restore",
        "latest",
        want.to_str().unwrap(),
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_eq!(c, 0, "{r}");
    assert_eq!(r["files"], 1);
    assert_same_tree(&want, &target);
    assert!(
        !target
            .join(src.strip_prefix("/").unwrap())
            .join("empty_file")
            .exists()
    );
    // A path that is not in the recovery point is a clear error; `latest` with a path no
    // backup's sources hold says so instead.
    let missing = src.join("no/such/path");
    let out = a.run(&[
        "restore",
        "latest",
        missing.to_str().unwrap(),
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1);
    let want = format!("{} is not in this recovery point", missing.display());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&want));
    let out = a.run(&[
        "restore",
        "latest",
        "/no/such/path",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no recovery point of this machine holds /no/such/path")
    );
}

#[test]
fn special_files_and_links_are_skipped_with_reasons() {
    let a = Agent::registered();
    let src = a.p("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("plain.txt"), b"plain").unwrap();
    fs::write(src.join("linked.txt"), b"two names").unwrap();
    fs::hard_link(src.join("linked.txt"), src.join("linked-too.txt")).unwrap();
    std::os::unix::fs::symlink("plain.txt", src.join("sym")).unwrap();
    assert!(
        std::process::Command::new("mkfifo")
            .arg(src.join("fifo"))
            .status()
            .unwrap()
            .success()
    );
    let (c, rep) = a.json(&["backup", src.to_str().unwrap()]);
    assert_eq!(c, 0, "skips by rule are not warnings: {rep}");
    assert!(
        rep["skipped"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["kind"] == "rule"),
        "{rep}"
    );
    let reasons: Vec<(String, String)> = rep["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["path"].as_str().unwrap().to_string(),
                s["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let reason = |name: &str| {
        reasons
            .iter()
            .find(|(p, _)| p.ends_with(name))
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| panic!("{name} not reported: {reasons:?}"))
    };
    assert!(reason("/linked.txt").contains("hard link"));
    assert!(reason("/linked-too.txt").contains("hard link"));
    assert!(reason("/sym").contains("symbolic link"));
    assert!(reason("/fifo").contains("special file"));
    assert_eq!(rep["files_new"], 1);
}

#[test]
fn unreadable_files_are_reported_and_the_rest_is_backed_up() {
    let a = Agent::unprivileged();
    let src = a.p("src");
    fs::create_dir_all(src.join("closed")).unwrap();
    fs::write(src.join("ok.txt"), b"readable").unwrap();
    fs::write(src.join("secret.txt"), b"not for you").unwrap();
    if let Some(uid) = a.uid {
        let chown =
            |p: &std::path::Path| std::os::unix::fs::chown(p, Some(uid), Some(uid)).unwrap();
        for p in [&src, &src.join("closed"), &src.join("ok.txt")] {
            chown(p);
        }
        // secret.txt stays root's.
    }
    fs::set_permissions(src.join("secret.txt"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::set_permissions(src.join("closed"), fs::Permissions::from_mode(0o000)).unwrap();
    const T: &str = "unreadable_files_are_reported_and_the_rest_is_backed_up";
    if a.uid.is_some() && !rbackup_testenv::need_command(T, "setpriv", "util-linux") {
        return;
    }
    let _ran = a.uid.map(|_| rbackup_testenv::ran(T, "setpriv, as nobody"));
    let (c, rep) = a.json(&["backup", src.to_str().unwrap()]);
    assert_eq!(c, 3, "{rep}");
    let skipped = rep["skipped"].to_string();
    assert!(
        skipped.contains("secret.txt") && skipped.contains("Permission denied"),
        "{skipped}"
    );
    assert!(
        skipped.contains("closed") && skipped.contains("cannot read directory"),
        "{skipped}"
    );
    assert_eq!(rep["files_new"], 1);
}

#[test]
fn missing_source_is_a_clear_error() {
    let a = Agent::registered();
    let out = a.run(&["backup", "/definitely/not/here"]);
    assert_eq!(code(&out), 1);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("/definitely/not/here") && e.contains("No such file"),
        "{e}"
    );
}
