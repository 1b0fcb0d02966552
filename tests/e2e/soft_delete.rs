//! Soft delete and the security PIN through the binary: forget hides a point, `--deleted`
//! lists it with its `purge_after`, restore by id and undelete work in the window, prune keeps
//! its data until the window has passed and then reclaims it; shortening the window and
//! purging at once need a valid PIN, and the job history records who did them.
//!
//! Later days are reached with `faketime` (libfaketime, relative offsets such as `+15d`); where
//! it is not installed the tests are skipped (see rbackup_testenv), or fail under
//! `RBACKUP_REQUIRE_ALL=1`.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::harness::*;

/// The agent's command run `offset` from now (`+15d`, `+6m`) under faketime.
fn later(a: &Agent, offset: &str) -> Command {
    under_faketime(a.cmd(), &["-f", offset])
}

fn run_later(a: &Agent, offset: &str, args: &[&str]) -> Output {
    later(a, offset).args(args).output().unwrap()
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", text(out)))
}

fn ids(v: &Value) -> Vec<String> {
    let list = v.as_array().unwrap_or_else(|| panic!("{v}"));
    list.iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect()
}

fn ts(v: &Value) -> jiff::Timestamp {
    v.as_str().unwrap_or_else(|| panic!("{v}")).parse().unwrap()
}

fn dir_bytes(dir: &Path) -> u64 {
    vault_files(dir)
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum()
}

/// Two backups: the first holds 2 MiB the second does not. Returns their ids and the
/// checksums of the source as the first saw it.
fn two_points(
    a: &Agent,
) -> (
    String,
    String,
    std::collections::BTreeMap<std::path::PathBuf, String>,
) {
    let src = a.p("src");
    make_tree(&src, 7, 8, 3_000);
    let mut r = Rng(99);
    fs::write(src.join("old.bin"), r.bytes(2 << 20)).unwrap();
    let first = checksums(&src);
    let old = a.backup(&src)["recovery_point"]
        .as_str()
        .unwrap()
        .to_string();
    fs::remove_file(src.join("old.bin")).unwrap();
    fs::write(src.join("new.txt"), b"second").unwrap();
    let new = a.backup(&src)["recovery_point"]
        .as_str()
        .unwrap()
        .to_string();
    (old, new, first)
}

fn restore_id(a: &Agent, offset: Option<&str>, id: &str, target: &Path) -> Output {
    let args = ["restore", id, "--target", target.to_str().unwrap()];
    match offset {
        Some(o) => run_later(a, o, &args),
        None => a.run(&args),
    }
}

#[test]
fn forget_undelete_restore_and_prune_after_the_window() {
    let Some(_ran) = faketime("forget_undelete_restore_and_prune_after_the_window") else {
        return;
    };
    let a = Agent::registered();
    let (old, new, first) = two_points(&a);
    a.ok(&["forget", "--keep-last", "1"]);

    let (c, live) = a.json(&["recovery-points"]);
    assert_eq!((c, ids(&live)), (0, vec![new.clone()]));
    let (c, deleted) = a.json(&["recovery-points", "--deleted"]);
    assert_eq!((c, ids(&deleted)), (0, vec![old.clone()]), "{deleted}");
    let d = &deleted[0];
    let window = ts(&d["purge_after"]).duration_since(ts(&d["deleted_at"]));
    assert_eq!(window.as_secs(), 14 * 86_400, "{d}");
    assert_eq!(d["days_left"], 14, "{d}");
    assert_eq!(d["reason"], "keep last 1");
    assert_eq!(
        d["deleted_by"]["machine"].as_str(),
        Some(a.machine_id().as_str())
    );
    assert!(
        d["deleted_by"]["hostname"]
            .as_str()
            .is_some_and(|h| !h.is_empty()),
        "{d}"
    );
    assert!(d["time"].is_string() && d["paths"].is_array(), "{d}");
    let human = a.ok(&["recovery-points", "--deleted"]);
    assert!(human.contains(&old[..8]) && human.contains("14"), "{human}");

    // Restore by id (a prefix) works and says it is soft-deleted; `latest` is the other one.
    let t1 = a.p("t1");
    let out = restore_id(&a, None, &old[..10], &t1);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("soft-deleted")
            && stderr.contains(&d["purge_after"].as_str().unwrap()[..10]),
        "{stderr}"
    );
    let src = a.p("src");
    assert_eq!(checksums(&t1.join(src.strip_prefix("/").unwrap())), first);
    let latest = a.restore_latest(&a.p("t2"));
    assert_eq!(latest["recovery_point"], new.as_str());

    let undone = a.ok(&["undelete", &old[..8]]);
    assert!(undone.contains(&old[..8]), "{undone}");
    let (_, live) = a.json(&["recovery-points"]);
    assert_eq!(ids(&live), [old.clone(), new.clone()]);
    let (_, deleted) = a.json(&["recovery-points", "--deleted"]);
    assert_eq!(ids(&deleted), Vec::<String>::new());

    // Forget again; prune now keeps its data, the point still restores.
    a.ok(&["forget", "--keep-last", "1"]);
    let before = dir_bytes(&a.vault_dir());
    // Twice, with no grace: a second run carries out what the first decided.
    let (c, p) = a.json(&["prune", "--grace", "0s"]);
    assert_eq!(c, 0, "{p}");
    assert_eq!(
        (
            p["recovery_points_purged"].as_u64(),
            p["soft_deleted_kept"].as_u64()
        ),
        (Some(0), Some(1)),
        "{p}"
    );
    assert_eq!(p["packs_doomed"], 0, "{p}");
    let (c, p) = a.json(&["prune", "--grace", "0s"]);
    assert_eq!((c, &p["packs_deleted"]), (0, &Value::from(0)), "{p}");
    let out = restore_id(&a, None, &old, &a.p("t3"));
    assert_eq!(code(&out), 0, "{}", text(&out));

    // 15 days later the window has passed: prune reclaims it.
    let out = run_later(&a, "+15d", &["--json", "prune", "--grace", "0s"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let p = json_of(&out);
    assert_eq!(p["recovery_points_purged"], 1, "{p}");
    assert!(p["packs_doomed"].as_u64() > Some(0), "{p}");
    let out = run_later(&a, "+15d", &["--json", "prune", "--grace", "0s"]);
    let p = json_of(&out);
    assert!(p["packs_deleted"].as_u64() > Some(0), "{p}");
    let after = dir_bytes(&a.vault_dir());
    assert!(
        after + (1 << 20) < before,
        "vault {before} -> {after} bytes"
    );

    let out = restore_id(&a, Some("+15d"), &old, &a.p("t4"));
    assert_eq!(code(&out), 1, "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("purged") && err.contains("gone for good"),
        "{err}"
    );
    assert!(!a.p("t4").join("src").exists());
    let out = run_later(&a, "+15d", &["undelete", &old]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("gone for good"),
        "{}",
        text(&out)
    );

    // The purged point is accounted for: listing warns of nothing, check passes.
    let out = run_later(&a, "+15d", &["recovery-points"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("warning"),
        "{}",
        text(&out)
    );
    let out = run_later(&a, "+15d", &["check"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
}

fn refused_with(out: &Output, words: &[&str]) {
    assert_eq!(code(out), 1, "{}", text(out));
    let err = String::from_utf8_lossy(&out.stderr);
    for w in words {
        assert!(err.contains(w), "{w:?} not in:\n{err}");
    }
}

fn issue_pin(a: &Agent) -> String {
    let (c, v) = a.json(&["vault", "pin", &a.vault_url()]);
    assert_eq!(c, 0, "{v}");
    let pin = v["pin"].as_str().unwrap().to_string();
    assert!(
        pin.len() == 8 && pin.bytes().all(|b| b.is_ascii_digit()),
        "{pin}"
    );
    let vault_json = fs::read_to_string(a.vault_dir().join("vault.json")).unwrap();
    assert!(!vault_json.contains(&pin), "stored hashed: {vault_json}");
    pin
}

#[test]
fn critical_operations_need_a_valid_pin_and_are_recorded() {
    let Some(_ran) = faketime("critical_operations_need_a_valid_pin_and_are_recorded") else {
        return;
    };
    let a = Agent::registered();
    let (old, _new, _) = two_points(&a);
    a.ok(&["forget", "--keep-last", "1"]);
    let url = a.vault_url();
    let advice = "ask the vault owner for a new PIN: `rbackup vault pin URL`";

    // Lengthening needs no PIN; shortening and purging at once do.
    a.ok(&["vault", "set-soft-delete", &url, "--days", "30"]);
    refused_with(
        &a.run(&["vault", "set-soft-delete", &url, "--days", "7"]),
        &["--pin", "rbackup vault pin URL"],
    );
    refused_with(&a.run(&["prune", "--purge-deleted-now"]), &["PIN", "--pin"]);

    let pin = issue_pin(&a);
    let wrong = if pin == "12345678" {
        "87654321"
    } else {
        "12345678"
    };
    refused_with(
        &a.run(&[
            "vault",
            "set-soft-delete",
            &url,
            "--days",
            "7",
            "--pin",
            wrong,
        ]),
        &["not the PIN", advice],
    );
    refused_with(
        &run_later(
            &a,
            "+6m",
            &[
                "vault",
                "set-soft-delete",
                &url,
                "--days",
                "7",
                "--pin",
                &pin,
            ],
        ),
        &["expired", advice],
    );
    refused_with(
        &run_later(&a, "+6m", &["prune", "--purge-deleted-now", "--pin", &pin]),
        &["expired", advice],
    );

    // The right PIN, through the environment: the window is 7 days from now on, and the PIN
    // is used up.
    let pin = issue_pin(&a);
    let out = a
        .cmd()
        .env("RBACKUP_PIN", &pin)
        .args(["vault", "set-soft-delete", &url, "--days", "7"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let (_, deleted) = a.json(&["recovery-points", "--deleted"]);
    let d = &deleted[0];
    let window = ts(&d["purge_after"]).duration_since(ts(&d["deleted_at"]));
    assert_eq!(window.as_secs(), 7 * 86_400, "{d}");
    refused_with(
        &a.run(&[
            "vault",
            "set-soft-delete",
            &url,
            "--days",
            "3",
            "--pin",
            &pin,
        ]),
        &["no PIN in force"],
    );

    // Purge at once with a PIN from a file.
    let pin_file = a.p("pin.txt");
    fs::write(&pin_file, format!("{}\n", issue_pin(&a))).unwrap();
    let (c, p) = a.json(&[
        "prune",
        "--purge-deleted-now",
        "--pin-file",
        pin_file.to_str().unwrap(),
        "--grace",
        "0s",
    ]);
    assert_eq!(c, 0, "{p}");
    assert_eq!(p["recovery_points_purged"], 1, "{p}");
    let (c, p) = a.json(&["prune", "--grace", "0s"]);
    assert!(c == 0 && p["packs_deleted"].as_u64() > Some(0), "{p}");
    let out = a.run(&["restore", &old, "--target", a.p("t").to_str().unwrap()]);
    refused_with(&out, &["gone for good"]);

    // The history has who did what, the refused attempts too.
    let (c, jobs) = a.json(&["jobs"]);
    assert_eq!(c, 0, "{jobs}");
    let critical: Vec<&Value> = jobs
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["by"].is_object())
        .collect();
    let kinds: Vec<(&str, &str)> = critical
        .iter()
        .map(|j| (j["kind"].as_str().unwrap(), j["status"].as_str().unwrap()))
        .collect();
    assert!(kinds.contains(&("set-soft-delete", "ok")), "{kinds:?}");
    assert!(kinds.contains(&("set-soft-delete", "failed")), "{kinds:?}");
    assert!(kinds.contains(&("purge-deleted-now", "ok")), "{kinds:?}");
    for j in &critical {
        assert!(
            j["by"]["hostname"].as_str().is_some_and(|h| !h.is_empty()),
            "{j}"
        );
        assert!(
            j["by"]["user"].as_str().is_some_and(|u| !u.is_empty()),
            "{j}"
        );
        assert!(j["what"].as_str().is_some_and(|w| !w.is_empty()), "{j}");
        assert!(j["started"].is_string(), "{j}");
    }
    let ok_set = critical
        .iter()
        .find(|j| j["kind"] == "set-soft-delete" && j["status"] == "ok")
        .unwrap();
    assert!(
        ok_set["what"]
            .as_str()
            .unwrap()
            .contains("from 30 to 7 days"),
        "{ok_set}"
    );
    let human = a.ok(&["jobs"]);
    assert!(human.contains("critical operation by"), "{human}");
}
