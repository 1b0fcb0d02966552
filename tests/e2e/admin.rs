//! Retention from an admin host: two machines publish their jobs' policies as they run; an
//! admin host that holds neither machine's config runs `forget` and `prune` for each with
//! `--machine ID` and that machine's passphrase or exported recovery key file, under the
//! policy the machine published.

use std::fs;
use std::path::Path;

use crate::harness::*;

/// An append-only machine registered with `vault_of`'s vault under its own passphrase, with
/// one job that has a retention policy (which its own runs therefore skip).
fn machine(vault_of: &Agent, passphrase: &str, job: &str, keep_last: &str) -> Agent {
    let m = Agent::bare();
    fs::write(m.pass_file(), passphrase).unwrap();
    let creds = m.p("creds.json");
    let url = vault_of.vault_url();
    vault_of.ok(&[
        "vault",
        "credentials",
        &url,
        "--out",
        creds.to_str().unwrap(),
    ]);
    m.register_with(&creds, &["--append-only"]);
    let src = m.p(job);
    make_tree(&src, keep_last.len() as u64 + 7, 20, 40_000);
    let s = src.to_str().unwrap();
    m.ok(&[
        "job",
        "add",
        job,
        "--path",
        s,
        "--at",
        "03:00",
        "--keep-last",
        keep_last,
    ]);
    m
}

fn run_changed(m: &Agent, job: &str, round: u8) {
    fs::write(m.p(job).join(format!("round-{round}")), vec![round; 30_000]).unwrap();
    m.ok(&["run", job]);
}

fn point_ids(a: &Agent, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["recovery-points"];
    args.extend_from_slice(extra);
    let (code, doc) = a.json(&args);
    assert_eq!(code, 0, "{doc}");
    let list = doc
        .as_array()
        .cloned()
        .or_else(|| doc["recovery_points"].as_array().cloned());
    list.unwrap_or_default()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect()
}

fn pass_arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn an_admin_host_applies_each_machines_published_policy_with_its_passphrase_or_key_file() {
    // The admin host: its own vault, its own passphrase, no job of the machines.
    let admin = Agent::registered();
    let a = machine(&admin, "machine a passphrase, long enough", "docs", "1");
    let b = machine(&admin, "machine b passphrase, long enough", "photos", "2");
    for round in 0..3 {
        run_changed(&a, "docs", round);
        run_changed(&b, "photos", round);
    }
    // The machines skip retention themselves: every point is still there.
    let before_a = point_ids(&a, &[]);
    let before_b = point_ids(&b, &[]);
    assert_eq!((before_a.len(), before_b.len()), (3, 3));
    let (a_id, b_id) = (a.machine_id(), b.machine_id());
    let a_pass = a.pass_file();
    let out = admin.run(&[
        "forget",
        "--machine",
        &a_id,
        "--passphrase-file",
        pass_arg(&a_pass),
        "--dry-run",
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let shown = text(&out);
    assert!(shown.contains("published"), "{shown}");
    assert!(shown.contains("job docs"), "{shown}");
    assert_eq!(point_ids(&a, &[]), before_a, "a dry run changes nothing");

    // B exports a recovery key file; the admin host uses it instead of the vault's key files.
    let key = b.p("b-recovery.key");
    let key_pass = b.p("key-pass");
    fs::write(&key_pass, "recovery key passphrase, long").unwrap();
    b.ok(&[
        "key",
        "export",
        "--out",
        key.to_str().unwrap(),
        "--passphrase-file",
        pass_arg(&key_pass),
    ]);

    let (code_a, doc_a) = admin.json(&[
        "forget",
        "--machine",
        &a_id,
        "--passphrase-file",
        pass_arg(&a_pass),
    ]);
    assert_eq!(code_a, 0, "{doc_a}");
    let (code_b, doc_b) = admin.json(&[
        "forget",
        "--machine",
        &b_id,
        "--key-file",
        key.to_str().unwrap(),
        "--passphrase-file",
        pass_arg(&key_pass),
    ]);
    assert_eq!(code_b, 0, "{doc_b}");
    assert_eq!(doc_a["forget"][0]["job"], "docs", "{doc_a}");
    assert_eq!(doc_b["forget"][0]["job"], "photos", "{doc_b}");
    assert_eq!(point_ids(&a, &[]).len(), 1, "machine a keeps its last 1");
    assert_eq!(point_ids(&b, &[]).len(), 2, "machine b keeps its last 2");
    // The newest of each survived, and restores on the machine itself.
    assert_eq!(point_ids(&a, &[]).last(), before_a.last());
    assert_eq!(point_ids(&b, &[])[..], before_b[1..]);
    let target = a.p("restored");
    a.restore_latest(&target);

    // Prune for a machine from the admin host works too, and leaves the machine whole.
    let out = admin.run(&[
        "prune",
        "--machine",
        &a_id,
        "--passphrase-file",
        pass_arg(&a_pass),
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    a.ok(&["check", "--read-data"]);

    // The wrong passphrase, a machine that never published, an unknown job: clear refusals.
    let wrong = admin.run(&[
        "forget",
        "--machine",
        &a_id,
        "--passphrase-file",
        pass_arg(&b.pass_file()),
    ]);
    assert_eq!(code(&wrong), 1, "{}", text(&wrong));
    let own = admin.machine_id();
    let none = admin.run(&[
        "forget",
        "--machine",
        &own,
        "--passphrase-file",
        pass_arg(&admin.pass_file()),
    ]);
    assert_eq!(code(&none), 1, "{}", text(&none));
    assert!(
        text(&none).contains("no retention policy given"),
        "{}",
        text(&none)
    );
    let job = admin.run(&[
        "forget",
        "--machine",
        &a_id,
        "--passphrase-file",
        pass_arg(&a_pass),
        "--job",
        "photos",
    ]);
    assert_eq!(code(&job), 1, "{}", text(&job));
    assert!(
        text(&job).contains("published no retention policy"),
        "{}",
        text(&job)
    );
    // --passphrase-file or --key-file without --machine is a usage error.
    let usage = admin.run(&["forget", "--key-file", key.to_str().unwrap()]);
    assert_eq!(code(&usage), 2, "{}", text(&usage));
}
