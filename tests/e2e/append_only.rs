//! An append-only machine on a local vault whose folders are `chattr +a`, on a loop-mounted
//! ext4 (tmpfs has no such flag). `register --append-only` creates every folder the machine
//! writes into and prints the `chattr +a` command, which the test runs as the vault's owner
//! (root); the agent then runs through `setpriv` without CAP_LINUX_IMMUTABLE, so it cannot
//! lift the flag. Backups (one killed with SIGKILL, the next adopting its packs), restore and
//! `check --read-data` pass; forget and prune are refused by the agent (append-only config)
//! and, with that flag turned off by hand, by the file system; nothing is lost. Last, what
//! `+a` does not stop (the owner rewriting a file in place) and what does (an admin's
//! `chattr +i` sweep of the files).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rbackup_testenv::{LoopMount, sh};
use serde_json::Value;

use crate::harness::*;

const TEST: &str = "append_only::a_chattr_append_only_local_vault_survives_its_machine";
const KERNEL: &str = "run as root on a kernel with loop devices (not in a container that \
                      forbids mounts)";

/// Mounts a fresh ext4 at `at` (created, and left empty: no `lost+found`).
fn mount_ext4(image: &Path, at: &Path) -> Result<LoopMount, String> {
    let mounted = LoopMount::new(image, "256M", &["mkfs.ext4", "-q"], at)?;
    fs::remove_dir(at.join("lost+found")).map_err(|e| e.to_string())?;
    Ok(mounted)
}

/// `command` through `setpriv` with CAP_LINUX_IMMUTABLE out of the bounding set: root in
/// every other way, but unable to change `+a` / `+i`.
fn capless(command: Command) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--bounding-set", "-linux_immutable"]);
    c.arg(command.get_program()).args(command.get_args());
    c.env_clear();
    for (k, v) in command.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c
}

/// The agent, run without CAP_LINUX_IMMUTABLE.
fn agent(a: &Agent, args: &[&str]) -> Output {
    let mut c = a.cmd();
    c.args(args);
    capless(c).output().unwrap()
}

/// [`agent`] with `--json`, required to exit 0; its report.
fn agent_ok(a: &Agent, args: &[&str]) -> Value {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    let out = agent(a, &full);
    assert_eq!(code(&out), 0, "rbackup {args:?}:\n{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every file of the vault with its BLAKE3, staging folder left out.
fn vault_state(a: &Agent) -> BTreeMap<PathBuf, String> {
    let mut all = checksums(&a.vault_dir());
    all.retain(|p, _| !p.starts_with(".tmp-staging"));
    all
}

fn packs_bytes(machine: &Path) -> u64 {
    vault_files(&machine.join("packs"))
        .iter()
        .map(|f| fs::metadata(f).map_or(0, |m| m.len()))
        .sum()
}

fn write_source(src: &Path, mib: usize, seed: u64) {
    fs::create_dir_all(src).unwrap();
    let mut rng = Rng(seed);
    for i in 0..mib {
        fs::write(src.join(format!("r{seed}-{i:03}.bin")), rng.bytes(1 << 20)).unwrap();
    }
    fs::write(src.join("notes.txt"), rng.text(32 << 10)).unwrap();
}

/// A backup killed with SIGKILL once `min_bytes` more of packs are in the vault.
fn kill_backup_midway(a: &Agent, src: &Path, machine: &Path, min_bytes: u64) {
    let start = packs_bytes(machine);
    let mut c = a.cmd();
    c.args(["--json", "backup", src.to_str().unwrap()]);
    let mut child = capless(c)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while packs_bytes(machine) < start + min_bytes {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the backup ended ({st}) before it could be killed midway");
        }
        assert!(Instant::now() < deadline, "the backup uploaded nothing");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Names starting with `.tmp-` anywhere under `dir` (staging files left in place).
fn staging_junk(dir: &Path) -> Vec<PathBuf> {
    vault_files(dir)
        .into_iter()
        .filter(|f| {
            f.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".tmp-")
        })
        .collect()
}

/// Every folder beneath `root`, not `root` itself.
fn dirs_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                out.push(e.path());
                todo.push(e.path());
            }
        }
    }
    out
}

fn has_flag(path: &Path, flag: char) -> bool {
    let out = Command::new("lsattr").arg("-d").arg(path).output().unwrap();
    let attrs = String::from_utf8_lossy(&out.stdout);
    attrs.split_whitespace().next().unwrap_or("").contains(flag)
}

/// Rewrites the first byte of `file` in place (no new name, no unlink), without the capability.
fn rewrite_in_place(file: &Path) -> Output {
    let script = format!(
        "printf X | dd of='{}' bs=1 count=1 conv=notrunc status=none",
        file.display()
    );
    let mut c = Command::new("sh");
    c.args(["-c", &script]);
    capless(c).output().unwrap()
}

#[test]
fn a_chattr_append_only_local_vault_survives_its_machine() {
    if !rbackup_testenv::need_root(TEST, "to loop-mount ext4 and set chattr flags") {
        return;
    }
    for (cmd, pkg) in [
        ("mkfs.ext4", "e2fsprogs"),
        ("chattr", "e2fsprogs"),
        ("lsattr", "e2fsprogs"),
        ("setpriv", "util-linux"),
    ] {
        if !rbackup_testenv::need_command(TEST, cmd, pkg) {
            return;
        }
    }
    let a = Agent::bare();
    let image = a.p("ext4.img");
    let _mount = rbackup_testenv::require!(TEST, mount_ext4(&image, &a.vault_dir()), KERNEL);
    let _ran = rbackup_testenv::ran(TEST, "root, loop-mounted ext4, chattr +a, setpriv");

    // The vault's owner creates the vault; the machine registers append-only, throttled so
    // that a backup can be killed midway.
    let creds = a.create_vault();
    let (c, reg) = a.json(&[
        "register",
        "--vault-credentials",
        creds.to_str().unwrap(),
        "--passphrase-file",
        a.pass_file().to_str().unwrap(),
        "--append-only",
        "--work-rate",
        "8MiB",
        "--non-work-rate",
        "8MiB",
    ]);
    assert_eq!(c, 0, "{reg}");
    assert_eq!(reg["append_only"], true);
    let machine = a.vault_dir().join("machines").join(a.machine_id());
    for dir in [
        "packs/00",
        "packs/ff",
        "index",
        "snapshots",
        "locks",
        "keys",
        "prune",
    ] {
        assert!(
            machine.join(dir).is_dir(),
            "{dir} was created at registration"
        );
    }
    let chattr = reg["chattr"]
        .as_str()
        .expect("the chattr command")
        .to_string();
    assert!(chattr.starts_with("chattr +a "), "{chattr}");
    sh("sh", &["-c", &chattr]).unwrap();
    assert!(has_flag(&machine.join("packs/a7"), 'a'));
    assert!(has_flag(&machine.join("locks"), 'a'));
    assert!(!has_flag(&a.vault_dir().join(".tmp-staging"), 'a'));
    // Without the capability the agent cannot lift the flag.
    let mut lift = Command::new("chattr");
    lift.arg("-a").arg(machine.join("packs"));
    assert!(!capless(lift).output().unwrap().status.success());

    // Backups, one killed midway, and the next adopting what it uploaded.
    let src = a.p("src");
    write_source(&src, 2, 1);
    agent_ok(&a, &["backup", src.to_str().unwrap()]);
    write_source(&src, 24, 2);
    kill_backup_midway(&a, &src, &machine, 8 << 20);
    let next = agent_ok(&a, &["backup", src.to_str().unwrap()]);
    assert!(next["packs_adopted"].as_u64().unwrap() > 0, "{next}");
    assert!(
        staging_junk(&machine).is_empty(),
        "no staging file left in the append-only folders: {:?}",
        staging_junk(&machine)
    );
    let target = a.p("restored");
    agent_ok(
        &a,
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    assert_same_tree(&src, &target);
    let chk = agent_ok(&a, &["check", "--read-data"]);
    assert_eq!(chk["unreferenced_packs"], 0, "{chk}");

    // Forget and prune: refused by the agent itself, with the advice; nothing changed.
    let before = vault_state(&a);
    for args in [&["forget", "--keep-last", "1"][..], &["prune"][..]] {
        let out = agent(&a, args);
        assert_eq!(code(&out), 1, "{args:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("is append-only"), "{args:?}: {err}");
        assert!(
            err.contains(&format!("--machine {}", a.machine_id())),
            "{args:?}: {err}"
        );
    }
    assert_eq!(vault_state(&a), before, "refused before touching the vault");

    // A scheduled job with a retention policy: the backup runs, the retention step is skipped
    // (the admin's), and that is no failure.
    let src_arg = src.to_str().unwrap();
    a.ok(&[
        "job",
        "add",
        "docs",
        "--path",
        src_arg,
        "--at",
        "03:00",
        "--keep-last",
        "1",
    ]);
    let mut c = a.cmd();
    c.args(["--json", "run", "docs"]);
    let out = capless(c).output().unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["jobs"][0]["retention_skipped"], true, "{run}");
    assert!(run["jobs"][0].get("retention_error").is_none(), "{run}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("retention skipped"), "{err}");
    let after_run = vault_state(&a);
    for (path, sum) in &before {
        assert_eq!(after_run.get(path), Some(sum), "{} kept", path.display());
    }
    let before = after_run;

    // Everything the machine wrote went into folders that were made first, so every one is
    // append-only (a folder made later inside one would not be).
    for dir in dirs_under(&machine) {
        assert!(has_flag(&dir, 'a'), "{} is not append-only", dir.display());
    }

    // The config flag turned off by hand. Forget only soft-deletes (create-only tombstones),
    // which the folders allow; every deletion is refused by the file system: prune's, and
    // undelete's (it removes a tombstone). Nothing that was in the vault changes.
    let cfg = fs::read_to_string(a.config()).unwrap();
    assert!(cfg.contains("append_only = true"), "{cfg}");
    fs::write(
        a.config(),
        cfg.replace("append_only = true", "append_only = false"),
    )
    .unwrap();
    let points = |a: &Agent| agent_ok(a, &["recovery-points"]);
    let points_before = points(&a);
    let all = points_before.as_array().unwrap().len();
    assert!(all > 1, "{points_before}");
    agent_ok(&a, &["forget", "--keep-last", "1"]);
    // One kept per group: the job's points and the ad-hoc backups' (by their paths).
    let kept = points(&a).as_array().unwrap().len();
    assert!(kept < all, "{kept} of {all}");
    let deleted = agent_ok(&a, &["recovery-points", "--deleted"]);
    let deleted = deleted.as_array().unwrap();
    assert_eq!(deleted.len(), all - kept, "{deleted:?}");
    let gone = deleted[0]["id"].as_str().unwrap().to_string();
    for (args, dir) in [
        (vec!["undelete", gone.as_str()], "deleted/"),
        (vec!["prune"], "locks/"),
    ] {
        let out = agent(&a, &args);
        assert_eq!(code(&out), 1, "{args:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("does not allow deletes"), "{args:?}: {err}");
        assert!(err.contains(dir), "{args:?} names the object: {err}");
    }
    let after = vault_state(&a);
    for (path, sum) in &before {
        assert_eq!(
            after.get(path),
            Some(sum),
            "{} kept unchanged",
            path.display()
        );
    }
    for dir in dirs_under(&machine) {
        assert!(has_flag(&dir, 'a'), "{} is not append-only", dir.display());
    }
    // A soft-deleted point still restores by its id.
    let old_target = a.p("restored-deleted");
    agent_ok(
        &a,
        &["restore", &gone, "--target", old_target.to_str().unwrap()],
    );
    fs::remove_dir_all(&target).unwrap();
    agent_ok(
        &a,
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    assert_same_tree(&src, &target);

    // What +a does not stop: the files' owner rewriting one in place (check would find it).
    let pack = vault_files(&machine.join("packs")).remove(0);
    let original = fs::read(&pack).unwrap();
    assert!(
        rewrite_in_place(&pack).status.success(),
        "+a folders allow it"
    );
    assert_ne!(fs::read(&pack).unwrap(), original);
    fs::write(&pack, &original).unwrap();
    // The admin's sweep, `chattr +i` on every file of the machine, stops that too, and the
    // machine still backs up (new files in the +a folders).
    sh(
        "sh",
        &[
            "-c",
            &format!(
                "find '{}' -type f -exec chattr +i {{}} +",
                machine.display()
            ),
        ],
    )
    .unwrap();
    let out = rewrite_in_place(&pack);
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(fs::read(&pack).unwrap(), original);
    write_source(&src, 1, 3);
    agent_ok(&a, &["backup", src.to_str().unwrap()]);
    let chk = agent_ok(&a, &["check", "--read-data"]);
    assert_eq!(chk["unreferenced_packs"], 0, "{chk}");
    // Unmounting needs no flag lifted; the image goes with the agent's folder.
}
