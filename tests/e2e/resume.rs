//! Interrupted backups: killed with SIGKILL at several points (stopped by watching the vault,
//! not by any hook in the binary), or stopped with SIGINT. The next backup adds at most 10% of
//! what the interrupted one had uploaded beyond what was still missing, `check --read-data`
//! passes with no unreferenced pack, and nothing waits for the dead run's lease.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

/// A registered agent whose uploads are throttled to `rate` (in and out of work hours), so a
/// backup runs long enough to be interrupted where the test wants.
fn throttled(rate: &str) -> Agent {
    let a = Agent::bare();
    let creds = a.create_vault();
    a.register_with(&creds, &["--work-rate", rate, "--non-work-rate", rate]);
    a
}

/// `mib` MiB of incompressible files (1 MiB each) and a little text.
fn source(a: &Agent, mib: usize, seed: u64) -> PathBuf {
    let src = a.p("src");
    fs::create_dir_all(&src).unwrap();
    let mut rng = Rng(seed);
    for i in 0..mib {
        fs::write(src.join(format!("r{i:03}.bin")), rng.bytes(1 << 20)).unwrap();
    }
    fs::write(src.join("notes.txt"), rng.text(64 << 10)).unwrap();
    src
}

/// What the vault holds for the agent's machine right now.
struct Seen {
    pack_bytes: u64,
    index_files: usize,
    points: usize,
    leases: usize,
}

/// Published objects under `dir` (staging `.tmp-*` files are not objects yet).
fn objects(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out; // not made yet
    };
    for e in entries.flatten() {
        let (path, Ok(meta)) = (e.path(), e.metadata()) else {
            continue; // published or removed meanwhile
        };
        if meta.is_dir() {
            out.extend(objects(&path));
        } else if !e.file_name().to_string_lossy().starts_with('.') {
            out.push((path, meta.len()));
        }
    }
    out
}

/// Leases (not lease objects: each refresh of one is a new object `<lease>-<seq>`).
fn lease_chains(dir: &Path) -> usize {
    let names = objects(dir).into_iter().map(|(p, _)| {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        name.split('-').next().unwrap().to_string()
    });
    names.collect::<std::collections::HashSet<_>>().len()
}

fn seen(a: &Agent) -> Seen {
    let m = a.vault_dir().join("machines").join(a.machine_id());
    Seen {
        pack_bytes: objects(&m.join("packs")).iter().map(|(_, s)| s).sum(),
        index_files: objects(&m.join("index")).len(),
        points: objects(&m.join("snapshots")).len(),
        leases: lease_chains(&m.join("locks")),
    }
}

fn start_backup(a: &Agent, src: &Path) -> Child {
    a.cmd()
        .args(["--json", "backup", src.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Polls the vault until `when` holds, then sends `signal` to the backup; panics if the
/// backup ends first or nothing happens for two minutes.
fn signal_when(a: &Agent, child: &mut Child, signal: i32, when: impl Fn(&Seen) -> bool) -> Seen {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = seen(a);
        if when(&s) {
            send(child, signal);
            return s;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the backup ended ({st}) before the point the test waits for");
        }
        assert!(Instant::now() < deadline, "the point never came");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Sends `signal` to the child at once (no `kill` process to start: some of the moments the
/// tests aim at last only milliseconds).
fn send(child: &Child, signal: i32) {
    use rustix::process::{Pid, Signal, kill_process};
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    let sig = Signal::from_named_raw(signal).unwrap();
    kill_process(pid, sig).unwrap_or_else(|e| panic!("kill -{signal} {pid:?}: {e}"));
}

const SIGKILL: i32 = 9;
const SIGINT: i32 = 2;

/// The bytes of packs a clean backup of `src` adds, measured on a fresh vault.
fn clean_pack_bytes(src: &Path) -> u64 {
    let b = Agent::registered();
    b.backup(src);
    seen(&b).pack_bytes
}

/// After an interruption that left `kept` pack bytes: the next backup, the 10% rule against
/// a clean run's size, a clean `check --read-data`, and no lease left. Returns the report.
fn resume_and_verify(a: &Agent, src: &Path, kept: u64) -> Value {
    let next = a.backup(src);
    let added = next["bytes_added"].as_u64().unwrap();
    let clean = clean_pack_bytes(src);
    let missing = clean.saturating_sub(kept);
    eprintln!(
        "resume: kept {kept} bytes of {clean}; next run added {added} (missing {missing}), \
         adopted {} packs",
        next["packs_adopted"]
    );
    assert!(
        added <= missing + kept / 10,
        "the next run re-uploaded more than 10% of the {kept} bytes kept: added {added}, \
         missing {missing}: {next}"
    );
    let (c, chk) = a.json(&["check", "--read-data"]);
    assert_eq!(c, 0, "{chk}");
    assert_eq!(chk["unreferenced_packs"], 0, "{chk}");
    assert_eq!(seen(a).leases, 0, "no lease left behind");
    let target = a.p("restored");
    a.restore_latest(&target);
    assert_same_tree(src, &target);
    next
}

#[test]
fn killed_before_its_first_index_file_the_next_run_adopts_its_packs() {
    let a = throttled("8MiB");
    let src = source(&a, 40, 1);
    let mut child = start_backup(&a, &src);
    let at = signal_when(&a, &mut child, SIGKILL, |s| s.pack_bytes >= 16 << 20);
    child.wait().unwrap();
    let after = seen(&a);
    assert_eq!(
        (at.index_files, after.index_files, after.points),
        (0, 0, 0),
        "killed before any index file"
    );
    assert_eq!(after.leases, 1, "the killed run's lease is left behind");
    let next = resume_and_verify(&a, &src, after.pack_bytes);
    assert!(next["packs_adopted"].as_u64().unwrap() > 0, "{next}");
    assert!(
        next["bytes_adopted"].as_u64().unwrap() == after.pack_bytes,
        "{next}"
    );
}

#[test]
fn killed_between_index_writes_the_next_run_reuses_indexed_and_unindexed_packs() {
    // Packs of 1-2 MiB (the 5% staging budget shared by the stages), 64 to an index file:
    // the first index file comes after about 100 MiB.
    let a = throttled("32MiB");
    let src = source(&a, 160, 2);
    let mut child = start_backup(&a, &src);
    let first_index = std::cell::Cell::new(None);
    signal_when(&a, &mut child, SIGKILL, |s| {
        if s.index_files >= 1 && first_index.get().is_none() {
            first_index.set(Some(s.pack_bytes));
        }
        first_index
            .get()
            .is_some_and(|at| s.pack_bytes >= at + (6 << 20))
    });
    child.wait().unwrap();
    let after = seen(&a);
    assert_eq!(after.points, 0);
    assert!(after.index_files >= 1, "killed after an index file");
    let next = resume_and_verify(&a, &src, after.pack_bytes);
    assert!(
        next["packs_adopted"].as_u64().unwrap() > 0,
        "the packs after the last index file: {next}"
    );
}

#[test]
fn killed_while_writing_its_recovery_point_the_next_run_adds_almost_nothing() {
    // The last index file is written right before the recovery point; a run of fewer than 64
    // packs in less than a minute writes no other. Killing as soon as it appears stops the
    // run between that index file and the recovery point, or while the point is written; a
    // run that got its point published first is tried again.
    for attempt in 1..=5 {
        let a = Agent::registered();
        let src = source(&a, 24, 3 + attempt);
        let index = a
            .vault_dir()
            .join("machines")
            .join(a.machine_id())
            .join("index");
        let mut child = start_backup(&a, &src);
        // Watching only the index folder, without sleeping: the moment lasts a few fsyncs.
        let deadline = Instant::now() + Duration::from_secs(120);
        while objects(&index).is_empty() {
            if let Some(st) = child.try_wait().unwrap() {
                panic!("the backup ended ({st}) before its index file appeared");
            }
            assert!(Instant::now() < deadline, "no index file appeared");
            std::thread::yield_now();
        }
        send(&child, SIGKILL);
        child.wait().unwrap();
        let after = seen(&a);
        if after.points > 0 {
            eprintln!("attempt {attempt}: the recovery point was published before the kill");
            continue;
        }
        let next = resume_and_verify(&a, &src, after.pack_bytes);
        assert_eq!(next["packs_adopted"], 0, "everything was indexed: {next}");
        return;
    }
    panic!("the kill never landed before the recovery point in 5 attempts");
}

#[test]
fn a_killed_runs_lease_does_not_make_prune_wait() {
    let a = throttled("8MiB");
    let src = source(&a, 24, 9);
    let mut child = start_backup(&a, &src);
    signal_when(&a, &mut child, SIGKILL, |s| s.pack_bytes >= 4 << 20);
    child.wait().unwrap();
    assert_eq!(seen(&a).leases, 1);
    let started = Instant::now();
    let (c, p) = a.json(&["prune"]);
    assert_eq!(c, 0, "{p}");
    assert_eq!(
        p["waiting_for"].as_array().map(Vec::len),
        Some(0),
        "nothing waits for a dead process: {p}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(seen(&a).leases, 0, "the dead run's lease was released");
}

#[test]
fn ctrl_c_stops_cleanly_keeps_what_was_uploaded_and_exits_non_zero() {
    let a = throttled("4MiB");
    let src = source(&a, 40, 5);
    let mut child = start_backup(&a, &src);
    signal_when(&a, &mut child, SIGINT, |s| s.pack_bytes >= 8 << 20);
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "stopped promptly"
    );
    assert!(
        stderr.contains("stopping") && stderr.contains("backup stopped"),
        "{stderr}"
    );
    assert!(
        stderr.contains("kept") && stderr.contains("pack"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    let after = seen(&a);
    assert_eq!(
        (after.points, after.leases),
        (0, 0),
        "no point, lease released"
    );
    assert!(after.index_files >= 1, "what was uploaded is indexed");
    let staging = a.home().join(".cache/rbackup/staging");
    let left: Vec<_> = fs::read_dir(&staging)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "staging folder removed: {left:?}");
    // Nothing to adopt: the stopped run indexed every pack it uploaded.
    let next = resume_and_verify(&a, &src, after.pack_bytes);
    assert_eq!(next["packs_adopted"], 0, "{next}");
}
