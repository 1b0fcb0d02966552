//! The local tier (`register --local-tier`): backups land on local disk first and are copied to
//! the cloud vault (moto S3, Azurite); restores read the local tier when it holds the point,
//! else the cloud; the local tier is pruned only after the copy; an interrupted copy resumes;
//! backups stop after 15 days without the cloud (faketime); vault states and `status`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cloud::moto_env;
use crate::cloud::servers::{AZURITE_ACCOUNT, AZURITE_KEY, Azurite, Moto, free_port};
use crate::harness::*;

/// An agent registered with the cloud vault `url` and a local tier in `tier/`.
fn tiered(env: Vec<(String, String)>, url: &str, extra: &[&str]) -> Agent {
    let mut a = Agent::bare();
    a.env = env;
    let creds = a.p("c.json");
    a.ok(&[
        "vault",
        "create",
        url,
        "--credentials-out",
        creds.to_str().unwrap(),
    ]);
    let tier = a.p("tier");
    let mut args = vec!["--local-tier", tier.to_str().unwrap()];
    args.extend_from_slice(extra);
    a.register_with(&creds, &args);
    a
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

fn restore(a: &Agent, spec: &str, target: &Path) -> (i32, Value, String) {
    let out = a.run(&[
        "--json",
        "restore",
        spec,
        "--target",
        target.to_str().unwrap(),
    ]);
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    (code(&out), v, text(&out))
}

fn cloud_points(a: &Agent) -> Vec<String> {
    let (c, v) = a.json(&["recovery-points"]);
    assert_eq!(c, 0, "{v}");
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect()
}

/// Backup into the tier, copied to the cloud at once; restores from each tier, byte-exact.
fn flow(a: &Agent) {
    let one = a.p("one");
    make_tree(&one, 5, 30, 300_000);
    let b1 = a.backup(&one);
    let p1 = b1["recovery_point"].as_str().unwrap().to_string();
    let copy = &b1["local_tier"]["copy"];
    assert_eq!(ids(&copy["copied"]), vec![p1.clone()], "{b1}");
    assert!(copy["bytes_added"].as_u64().unwrap() > 0);
    assert_eq!(cloud_points(a), vec![p1.clone()]);

    // The second backup copies only what the cloud lacks: the unchanged tree costs nothing.
    let two = a.p("two");
    make_tree(&two, 6, 20, 200_000);
    let b2 = a
        .json(&["backup", one.to_str().unwrap(), two.to_str().unwrap()])
        .1;
    let p2 = b2["recovery_point"].as_str().unwrap().to_string();
    let copy2 = &b2["local_tier"]["copy"];
    assert_eq!(ids(&copy2["copied"]), vec![p2.clone()], "{b2}");
    assert!(
        copy2["bytes_read"].as_u64().unwrap() < 20 * 200_000 + (1 << 20),
        "the copy re-sent the first tree: {copy2}"
    );
    // --local-days 0: the first point is in the cloud and older than 0 days: gone locally.
    assert_eq!(
        ids(&b2["local_tier"]["pruned_local"]),
        vec![p1.clone()],
        "{b2}"
    );
    let (_, st) = a.json(&["status"]);
    assert_eq!(
        ids(&st["local_tier"]["recovery_points"]),
        vec![p2.clone()],
        "{st}"
    );
    assert_eq!(st["vault_state"], "active", "{st}");
    assert_eq!(st["last_backup"]["recovery_point"], p2.as_str(), "{st}");
    assert_eq!(st["last_copy"]["status"], "ok", "{st}");
    assert_eq!(ids(&st["last_copy"]["copied"]), vec![p2.clone()], "{st}");
    assert_eq!(st["cloud"]["reachable"], true, "{st}");

    // The newest point is on the local tier; the first only in the cloud.
    let t2 = a.p("t2");
    let (c, r, out) = restore(a, "latest", &t2);
    assert_eq!(c, 0, "{out}");
    assert_eq!(r["source"], "local tier", "{r}");
    assert_same_tree(&two, &t2);
    assert_same_tree(&one, &t2);
    let t1 = a.p("t1");
    let (c, r, out) = restore(a, &p1[..12], &t1);
    assert_eq!(c, 0, "{out}");
    assert_eq!(r["source"], "vault", "{r}");
    assert_same_tree(&one, &t1);
}

#[test]
fn local_tier_copied_to_moto_s3_and_restored_from_each_tier() {
    let Some(moto) = Moto::start("local_tier_copied_to_moto_s3_and_restored_from_each_tier") else {
        return;
    };
    moto.create_bucket("tier-s3");
    let a = tiered(
        moto_env(&moto.endpoint()),
        "s3://tier-s3/site",
        &["--local-days", "0"],
    );
    flow(&a);
}

#[test]
fn local_tier_copied_to_azurite_and_restored_from_each_tier() {
    let Some(az) = Azurite::start("local_tier_copied_to_azurite_and_restored_from_each_tier")
    else {
        return;
    };
    az.create_container("tier-az");
    let env = vec![
        ("AZURE_STORAGE_ACCOUNT_NAME".into(), AZURITE_ACCOUNT.into()),
        ("AZURE_STORAGE_ACCOUNT_KEY".into(), AZURITE_KEY.into()),
        ("AZURE_STORAGE_ENDPOINT".into(), az.endpoint()),
        ("AZURE_ALLOW_HTTP".into(), "true".into()),
    ];
    let a = tiered(env, "az://tier-az/site", &["--local-days", "0"]);
    flow(&a);
}

/// The agent's command with the cloud endpoint pointed at a port nobody listens on.
fn offline(a: &Agent, dead: &str) -> Command {
    let mut c = a.cmd();
    c.env("AWS_ENDPOINT", dead);
    c
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", text(out)))
}

#[test]
fn the_local_tier_is_pruned_only_after_the_copy_and_restores_survive_a_damaged_tier() {
    let Some(moto) = Moto::start("the_local_tier_is_pruned_only_after_the_copy") else {
        return;
    };
    moto.create_bucket("tier-prune");
    let a = tiered(
        moto_env(&moto.endpoint()),
        "s3://tier-prune/x",
        &["--local-days", "0"],
    );
    let dead = format!("http://127.0.0.1:{}", free_port());
    let src = a.p("src");
    let mut points = Vec::new();
    for round in 0..2 {
        make_tree(&src, 40 + round, 10, 100_000);
        let out = offline(&a, &dead)
            .args(["--json", "backup", src.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(
            code(&out),
            3,
            "a point on the local tier only is a warning: {}",
            text(&out)
        );
        let v = json_of(&out);
        assert!(
            v["local_tier"]["copy_error"]
                .as_str()
                .unwrap()
                .contains("reached"),
            "{v}"
        );
        assert!(text(&out).contains("local tier only"), "{}", text(&out));
        assert_eq!(ids(&v["local_tier"]["pruned_local"]), Vec::<String>::new());
        points.push(v["recovery_point"].as_str().unwrap().to_string());
    }
    let out = offline(&a, &dead)
        .args(["--json", "status"])
        .output()
        .unwrap();
    let st = json_of(&out);
    assert_eq!(st["cloud"]["reachable"], false, "{st}");
    assert_eq!(st["backups_stopped"], false, "{st}");
    assert_eq!(ids(&st["local_tier"]["recovery_points"]), points, "{st}");
    assert_eq!(st["last_copy_attempt"]["status"], "failed", "{st}");
    // Nothing reached the cloud, and nothing left the local tier.
    assert_eq!(cloud_points(&a), Vec::<String>::new());

    // Reached again: both wait in the cloud, then the older go from the local tier.
    make_tree(&src, 50, 10, 100_000);
    let v = a.backup(&src);
    let p3 = v["recovery_point"].as_str().unwrap().to_string();
    let mut all = points.clone();
    all.push(p3.clone());
    assert_eq!(ids(&v["local_tier"]["copy"]["copied"]), all, "{v}");
    assert_eq!(ids(&v["local_tier"]["pruned_local"]), points, "{v}");
    let mut in_cloud = cloud_points(&a);
    in_cloud.sort();
    let mut want = all.clone();
    want.sort();
    assert_eq!(in_cloud, want);
    let (c, chk) = a.json(&["check", "--read-data"]);
    assert_eq!(c, 0, "{chk}");

    // The local tier's packs lost (a disk fault): the restore notices and reads the cloud.
    let packs = a
        .p("tier")
        .join("machines")
        .join(a.machine_id())
        .join("packs");
    let victims = walk_files(&packs);
    assert!(!victims.is_empty(), "packs in the tier");
    for v in victims {
        fs::remove_file(&v).unwrap();
    }
    let target = a.p("t");
    let (c, r, out) = restore(&a, "latest", &target);
    assert_eq!(c, 0, "{out}");
    assert_eq!(r["source"], "vault", "{r}");
    assert!(out.contains("cannot restore"), "{out}");
    assert_same_tree(&src, &target);
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn an_interrupted_copy_resumes_where_it_stopped() {
    // The "cloud" is a local vault here, so the test can watch its packs arrive; uploads to it
    // are throttled so the copy runs long enough to be stopped in the middle.
    let mut a = Agent::bare();
    a.env = Vec::new();
    let creds = a.create_vault();
    let tier = a.p("tier");
    a.register_with(
        &creds,
        &[
            "--local-tier",
            tier.to_str().unwrap(),
            "--work-rate",
            "12MiB",
            "--non-work-rate",
            "12MiB",
        ],
    );
    let src = a.p("src");
    fs::create_dir_all(&src).unwrap();
    let mut rng = Rng(77);
    // Packs are 32 MiB: enough for two, and a third begun.
    for i in 0..72 {
        fs::write(src.join(format!("r{i:02}.bin")), rng.bytes(1 << 20)).unwrap();
    }
    let mut child = a
        .cmd()
        .args(["--json", "backup", src.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let packs = a
        .vault_dir()
        .join("machines")
        .join(a.machine_id())
        .join("packs");
    let deadline = Instant::now() + Duration::from_secs(120);
    while walk_files(&packs)
        .iter()
        .filter(|p| !name_of(p).starts_with('.'))
        .count()
        < 1
    {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the copy ended before it was stopped"
        );
        assert!(Instant::now() < deadline, "no pack reached the vault");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Killed, not asked to stop: the packs it uploaded are in no index yet.
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(cloud_points(&a).is_empty());
    let listed = a.run(&["recovery-points"]);
    assert!(
        text(&listed).contains("1 recovery point(s) are on the local tier only"),
        "{}",
        text(&listed)
    );
    let (_, st) = a.json(&["status"]);
    assert_eq!(
        st["local_tier"]["recovery_points"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "{st}"
    );

    let (c, r) = a.json(&["copy"]);
    assert_eq!(c, 0, "{r}");
    assert_eq!(ids(&r["copied"]), ids(&st["local_tier"]["recovery_points"]));
    assert!(
        r["packs_adopted"].as_u64().unwrap() >= 1,
        "the killed copy's packs were not reused: {r}"
    );
    assert!(
        r["bytes_read"].as_u64().unwrap() <= 44 << 20,
        "the resumed copy read again what had reached the vault: {r}"
    );
    let stored: u64 = walk_files(&packs)
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert!(
        stored < (72 << 20) * 11 / 10,
        "{stored} bytes of packs for 72 MiB: uploads were repeated"
    );
    let (c, chk) = a.json(&["check", "--read-data"]);
    assert_eq!(c, 0, "{chk}");
    let (_, st) = a.json(&["status"]);
    assert_eq!(st["last_copy"]["status"], "ok", "{st}");
}

fn name_of(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn a_read_only_vault_refuses_backups_and_keeps_restoring() {
    let a = Agent::registered();
    let src = a.p("src");
    make_tree(&src, 9, 10, 50_000);
    a.backup(&src);
    let url = a.vault_url();
    let (c, v) = a.json(&["vault", "set-state", &url, "read-only"]);
    assert_eq!(c, 0, "{v}");
    assert_eq!(v["state"], "read-only");
    let by = v["set_by"].as_str().unwrap().to_string();
    assert!(by.contains('@'), "{v}");

    let out = a.run(&["backup", src.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let e = text(&out);
    assert!(
        e.contains("read-only") && e.contains(&by),
        "the refusal names the state and who: {e}"
    );
    a.ok(&[
        "job",
        "add",
        "daily",
        "--path",
        src.to_str().unwrap(),
        "--at",
        "03:00",
    ]);
    let (c, run) = a.json(&["run", "daily"]);
    assert_eq!(c, 1, "{run}");
    assert!(
        run["jobs"][0]["error"]
            .as_str()
            .unwrap()
            .contains("read-only"),
        "{run}"
    );

    let target = a.p("t");
    a.restore_latest(&target);
    assert_same_tree(&src, &target);
    a.ok(&["check"]);
    a.ok(&["recovery-points"]);
    a.ok(&["ls", "latest", src.to_str().unwrap()]);
    let (c, st) = a.json(&["status"]);
    assert_eq!(c, 3, "{st}");
    assert_eq!(st["vault_state"], "read-only", "{st}");
    assert_eq!(st["vault_state_set_by"], by.as_str(), "{st}");
    assert_eq!(st["backups_stopped"], true, "{st}");

    let (c, v) = a.json(&["vault", "set-state", &url, "active"]);
    assert_eq!((c, v["previous"].as_str()), (0, Some("read-only")), "{v}");
    a.backup(&src);
    let (c, st) = a.json(&["status"]);
    assert_eq!((c, st["vault_state"].as_str()), (0, Some("active")), "{st}");
}

#[test]
fn vault_names_follow_the_recovery_services_rules() {
    let a = Agent::bare();
    let out = a.run(&[
        "vault",
        "create",
        &a.vault_url(),
        "--credentials-out",
        a.p("c").to_str().unwrap(),
        "--name",
        "9lives",
    ]);
    assert_eq!(code(&out), 1);
    assert!(
        text(&out).contains("start with a letter, and contain only letters, numbers and hyphens"),
        "{}",
        text(&out)
    );
    assert!(!a.vault_dir().join("vault.json").exists());
    let (c, v) = a.json(&[
        "vault",
        "create",
        &a.vault_url(),
        "--credentials-out",
        a.p("c").to_str().unwrap(),
        "--name",
        "Office-Vault-2",
    ]);
    assert_eq!(c, 0, "{v}");
    assert_eq!(v["name"], "Office-Vault-2");
}

#[test]
fn fifteen_days_without_the_cloud_stop_backups_and_restores_go_on() {
    let Some(_ran) = faketime("fifteen_days_without_the_cloud_stop_backups") else {
        return;
    };
    let Some(moto) = Moto::start("fifteen_days_without_the_cloud_stop_backups") else {
        return;
    };
    moto.create_bucket("tier-days");
    let a = tiered(moto_env(&moto.endpoint()), "s3://tier-days/x", &[]);
    let dead = format!("http://127.0.0.1:{}", free_port());
    let src = a.p("src");
    make_tree(&src, 3, 10, 80_000);
    a.backup(&src);

    // Ten days on, no cloud: the backup goes to the local tier, with a warning.
    let out = under_faketime(offline(&a, &dead), &["-f", "+10d"])
        .args(["--json", "backup", src.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert!(text(&out).contains("cannot be reached"), "{}", text(&out));

    // Sixteen days on: backups stop, saying so; status says so; restores go on.
    let out = under_faketime(offline(&a, &dead), &["-f", "+16d"])
        .args(["backup", src.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", text(&out));
    let e = text(&out);
    assert!(
        e.contains("backups have stopped") && e.contains("Restores from the local tier"),
        "{e}"
    );
    let out = under_faketime(offline(&a, &dead), &["-f", "+16d"])
        .args(["--json", "status"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 3, "{}", text(&out));
    let st = json_of(&out);
    assert_eq!(st["backups_stopped"], true, "{st}");
    assert!(
        st["cloud"]["days_since_reached"].as_f64().unwrap() > 15.0,
        "{st}"
    );
    assert!(
        st["last_backup"].is_object() && st["last_copy"].is_object(),
        "{st}"
    );
    let target = a.p("t");
    let out = under_faketime(offline(&a, &dead), &["-f", "+16d"])
        .args([
            "--json",
            "restore",
            "latest",
            "--target",
            target.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(json_of(&out)["source"], "local tier");
    assert_same_tree(&src, &target);

    // The cloud back: backups start again, and what waited is copied.
    let out = under_faketime(a.cmd(), &["-f", "+16d"])
        .args(["--json", "backup", src.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(ids(&json_of(&out)["local_tier"]["copy"]["copied"]).len(), 2);
}

#[test]
fn a_read_only_cloud_vault_stops_tier_backups() {
    let mut a = Agent::bare();
    a.env = Vec::new();
    let creds = a.create_vault();
    let tier = a.p("tier");
    a.register_with(&creds, &["--local-tier", tier.to_str().unwrap()]);
    let src = a.p("src");
    make_tree(&src, 12, 5, 20_000);
    a.backup(&src);
    a.ok(&["vault", "set-state", &a.vault_url(), "read-only"]);
    let out = a.run(&["backup", src.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(text(&out).contains("read-only"), "{}", text(&out));
    let target = a.p("t");
    let r = a.restore_latest(&target);
    assert_eq!(r["source"], "local tier", "{r}");
}

#[test]
fn a_scheduled_run_backs_up_into_the_tier_and_copies() {
    let a = Agent::bare();
    let creds = a.create_vault();
    let tier = a.p("tier");
    a.register_with(&creds, &["--local-tier", tier.to_str().unwrap()]);
    let src = a.p("src");
    make_tree(&src, 14, 8, 30_000);
    let s = src.to_str().unwrap();
    a.ok(&[
        "job",
        "add",
        "home",
        "--path",
        s,
        "--at",
        "03:00",
        "--keep-last",
        "3",
    ]);
    let (c, run) = a.json(&["run", "home"]);
    assert_eq!(c, 0, "{run}");
    let job = &run["jobs"][0];
    assert_eq!(job["status"], "ok", "{run}");
    let id = job["report"]["recovery_point"].as_str().unwrap();
    assert_eq!(
        ids(&job["local_tier"]["copy"]["copied"]),
        vec![id.to_string()],
        "{run}"
    );
    assert_eq!(cloud_points(&a), vec![id.to_string()]);
    let (_, st) = a.json(&["status"]);
    assert_eq!(st["last_backup"]["recovery_point"], id, "{st}");
    assert_eq!(st["last_backup"]["job"], "home", "{st}");
    // The job's policy is published in the vault, where an admin host finds it.
    let admin = second_agent(&a);
    let pass = a.pass_file();
    let id = a.machine_id();
    let out = admin.run(&[
        "forget",
        "--machine",
        &id,
        "--passphrase-file",
        pass.to_str().unwrap(),
        "--dry-run",
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        text(&out).contains("published") && text(&out).contains("job home"),
        "{}",
        text(&out)
    );
}
