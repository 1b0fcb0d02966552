//! Key files, the one thing needed on the worst day: a flip in any object under a machine is
//! found by `check --read-data`; a damaged key file is bypassed through its copy and repaired;
//! damage is never reported as a wrong passphrase; an exported recovery key opens the machine
//! with no key file left in the vault.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::harness::*;

fn flip(path: &Path, at: usize) {
    let mut b = fs::read(path).unwrap();
    b[at] ^= 0x01;
    fs::write(path, b).unwrap();
}

fn machine_dir(a: &Agent) -> PathBuf {
    a.vault_dir().join("machines").join(a.machine_id())
}

/// The key file of the machine and its copy.
fn key_pair(a: &Agent) -> (PathBuf, PathBuf) {
    let mut files: Vec<PathBuf> = fs::read_dir(machine_dir(a).join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    (files[0].clone(), files[1].clone())
}

/// An offset inside the wrapped keys' hex: without a checksum, damage there would be
/// indistinguishable from a wrong passphrase.
fn inside_wrapped(path: &Path) -> usize {
    let text = fs::read_to_string(path).unwrap();
    text.find("\"wrapped\"").unwrap() + 20
}

fn objects_in(dir: &Path) -> Vec<PathBuf> {
    let mut v = vault_files(dir);
    v.sort_by_key(|p| fs::metadata(p).unwrap().len());
    v
}

fn restore_as(b: &Agent, id: &str, target: &Path, extra: &[&str]) -> std::process::Output {
    let t = target.to_str().unwrap();
    let mut args = vec!["restore", "latest", "--target", t, "--machine", id];
    args.extend_from_slice(extra);
    b.run(&args)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_flipped_byte_in_each_kind_of_object_is_found_by_check_read_data() {
    let a = Agent::registered();
    let src = a.p("src");
    make_tree(&src, 61, 30, 20_000);
    fs::write(src.join("big.bin"), Rng(9).bytes(2 << 20)).unwrap();
    a.backup(&src);
    let (c, r) = a.json(&["check", "--read-data"]);
    assert_eq!(c, 0, "{r}");
    let m = machine_dir(&a);
    let packs = objects_in(&m.join("packs"));
    let (key, copy) = key_pair(&a);
    let victims: Vec<(&str, PathBuf)> = vec![
        // Tree packs are tiny next to the data pack of a 2 MiB file.
        ("data pack", packs.last().unwrap().clone()),
        ("tree pack", packs[0].clone()),
        ("index file", objects_in(&m.join("index"))[0].clone()),
        (
            "recovery point",
            objects_in(&m.join("snapshots"))[0].clone(),
        ),
        ("key file", key),
        ("key file copy", copy),
        ("machine.json", m.join("machine.json")),
        ("config", m.join("config")),
    ];
    for (kind, path) in &victims {
        let size = fs::metadata(path).unwrap().len() as usize;
        for at in [size / 2, size - 1] {
            flip(path, at);
            let out = a.run(&["check", "--read-data"]);
            let e = stderr(&out);
            flip(path, at); // undo before any assertion can stop the loop
            assert_eq!(code(&out), 1, "{kind} byte {at}: {}", text(&out));
            let name = path.file_name().unwrap().to_str().unwrap();
            // Recovery points are named by their short id; a key file's copy by its full name.
            let named = if name.len() == 64 { &name[..8] } else { name };
            assert!(
                e.contains(named),
                "{kind} byte {at}: {name} not named in {e}"
            );
            assert!(!e.contains("passphrase does not open"), "{kind}: {e}");
        }
    }
    let (c, r) = a.json(&["check", "--read-data"]);
    assert_eq!(c, 0, "every flip undone: {r}");
}

#[test]
fn a_damaged_key_file_is_bypassed_through_its_copy_and_repaired() {
    let a = Agent::registered();
    let src = a.p("src");
    make_tree(&src, 62, 10, 10_000);
    a.backup(&src);
    let b = second_agent(&a);
    let (key, _) = key_pair(&a);
    flip(&key, inside_wrapped(&key));

    let target = b.p("out");
    let pass = a.pass_file();
    let out = restore_as(
        &b,
        &a.machine_id(),
        &target,
        &["--passphrase-file", pass.to_str().unwrap()],
    );
    assert_eq!(code(&out), 0, "{}", text(&out));
    let e = stderr(&out);
    let name = key.file_name().unwrap().to_str().unwrap();
    assert!(e.contains("damaged") && e.contains(name), "{e}");
    assert!(e.contains("rbackup key repair"), "{e}");
    assert!(!e.contains("passphrase does not open"), "{e}");
    assert_same_tree(&src, &target);

    // The machine itself finds it without the passphrase, and repairs it with it.
    let out = a.run(&["check"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let e = stderr(&out);
    assert!(e.contains(name) && e.contains("rbackup key repair"), "{e}");
    let (c, r) = a.json(&["key", "repair", "--passphrase-file", pass.to_str().unwrap()]);
    assert_eq!(c, 0, "{r}");
    assert_eq!(r["removed"].as_array().unwrap().len(), 2, "{r}");
    let (c, r) = a.json(&["check", "--read-data"]);
    assert_eq!(c, 0, "{r}");
    let (new_key, _) = key_pair(&a);
    assert_ne!(new_key, key);
}

#[test]
fn both_copies_damaged_says_damaged_not_wrong_passphrase() {
    let a = Agent::registered();
    let src = a.p("src");
    make_tree(&src, 63, 5, 5_000);
    a.backup(&src);
    let b = second_agent(&a);
    let (key, copy) = key_pair(&a);
    flip(&key, inside_wrapped(&key));
    flip(&copy, inside_wrapped(&copy));
    let target = b.p("out");
    let pass = a.pass_file();
    let out = restore_as(
        &b,
        &a.machine_id(),
        &target,
        &["--passphrase-file", pass.to_str().unwrap()],
    );
    assert_eq!(code(&out), 1, "{}", text(&out));
    let e = stderr(&out);
    assert!(e.contains("damaged") && e.contains("--key-file"), "{e}");
    assert!(!e.contains("passphrase does not open"), "{e}");
}

#[test]
fn an_exported_key_opens_the_machine_with_no_key_file_left_in_the_vault() {
    let a = Agent::registered();
    let src = a.p("src");
    make_tree(&src, 64, 10, 10_000);
    a.backup(&src);
    let export_pass = a.p("export-pass.txt");
    fs::write(&export_pass, "a different passphrase for the export").unwrap();
    let out_file = a.p("recovery/machine.key");
    let (c, r) = a.json(&[
        "key",
        "export",
        "--out",
        out_file.to_str().unwrap(),
        "--passphrase-file",
        export_pass.to_str().unwrap(),
    ]);
    assert_eq!(c, 0, "{r}");
    let printed = a.p("recovery/machine.key.txt");
    for f in [&out_file, &printed] {
        let mode = fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }
    assert!(fs::read_to_string(&printed).unwrap().contains("01: "));

    let b = second_agent(&a);
    let keys_dir = machine_dir(&a).join("keys");
    for e in fs::read_dir(&keys_dir).unwrap() {
        fs::remove_file(e.unwrap().path()).unwrap();
    }
    let id = a.machine_id();
    let ep = export_pass.to_str().unwrap();
    // The machine's own passphrase no longer finds a key file in the vault.
    let pass = a.pass_file();
    let out = restore_as(
        &b,
        &id,
        &b.p("none"),
        &["--passphrase-file", pass.to_str().unwrap()],
    );
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(stderr(&out).contains("--key-file"), "{}", text(&out));
    // Either form of the export, with its passphrase, restores everything.
    for (n, f) in [&out_file, &printed].into_iter().enumerate() {
        let target = b.p(&format!("out{n}"));
        let kf = f.to_str().unwrap();
        let out = restore_as(
            &b,
            &id,
            &target,
            &["--key-file", kf, "--passphrase-file", ep],
        );
        assert_eq!(code(&out), 0, "{}", text(&out));
        assert_same_tree(&src, &target);
    }
    // The wrong passphrase for the export is called that.
    let kf = out_file.to_str().unwrap();
    let out = restore_as(
        &b,
        &id,
        &b.p("x"),
        &[
            "--key-file",
            kf,
            "--passphrase-file",
            pass.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(stderr(&out).contains("does not open"), "{}", text(&out));
}

/// A vault from before key-file copies: one version-1 key file (no binding, MAC, checksum or
/// copy). It still opens; check notes the missing integrity record without failing; repair
/// adds it.
#[test]
fn an_old_format_key_file_is_noted_by_check_and_upgraded_by_repair() {
    let a = Agent::registered();
    let src = a.p("src");
    make_tree(&src, 65, 5, 5_000);
    a.backup(&src);
    let (key, copy) = key_pair(&a);
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&key).unwrap()).unwrap();
    let obj = v.as_object_mut().unwrap();
    for field in ["bound_to", "mac", "checksum"] {
        obj.remove(field).unwrap();
    }
    obj.insert("version".into(), 1.into());
    fs::remove_file(&key).unwrap();
    fs::remove_file(&copy).unwrap();
    let legacy = key.with_file_name("cd".repeat(32));
    fs::write(&legacy, serde_json::to_vec_pretty(&v).unwrap()).unwrap();

    let out = a.run(&["check", "--read-data"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let e = stderr(&out);
    assert!(
        e.contains("has no integrity record") && e.contains("rbackup key repair"),
        "{e}"
    );
    let pass = a.pass_file();
    let (c, r) = a.json(&["key", "repair", "--passphrase-file", pass.to_str().unwrap()]);
    assert_eq!(c, 0, "{r}");
    assert_eq!(r["passphrase_verified"], true, "{r}");
    let out = a.run(&["check"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(!stderr(&out).contains("integrity record"), "{}", text(&out));
    assert!(!legacy.exists());
    key_pair(&a);
}
