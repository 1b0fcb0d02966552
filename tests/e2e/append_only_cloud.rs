//! Append-only machines on real cloud stores, through the binary as users run it: the vault is
//! created and the machine registered with the admin's credentials, then the machine runs with
//! credentials that may create and read but not delete (moto with IAM enforcement and the
//! documented machine policy; Azurite with an `rcl` container SAS). Backups, a `kill -9` and
//! the next backup, check and restore pass. A machine registered as usual may soft-delete
//! (tombstones are new objects) but has undelete and prune refused by the store, saying who
//! runs retention; one registered `--append-only` never asks the store to delete and has
//! forget and prune refused by its agent. Nothing is lost either way, and
//! the admin's credentials can do what the machine's cannot.

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rbackup_store::{Store, StoreOptions};
use serde_json::Value;

use crate::cloud::servers;
use crate::harness::*;
use servers::moto_iam::AwsKey;
use servers::sas::MACHINE_SAS_PERMISSIONS;
use servers::{AZURITE_ACCOUNT, AZURITE_KEY, Azurite, Moto};

type Env = Vec<(String, String)>;

/// One cloud vault and the two sets of credentials for it.
struct Cloud {
    url: String,
    admin_env: Env,
    machine_env: Env,
    /// Options for the test's own look at the vault, as the admin.
    admin_options: StoreOptions,
}

fn env(pairs: &[(&str, &str)]) -> Env {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn s3_env(moto: &Moto, key: &AwsKey) -> Env {
    env(&[
        ("AWS_ENDPOINT", &moto.endpoint()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", &key.id),
        ("AWS_SECRET_ACCESS_KEY", &key.secret),
    ])
}

/// How many objects the vault holds under `prefix` (listed with the admin's credentials).
fn count(cloud: &Cloud, prefix: &str) -> usize {
    let store: Arc<dyn Store> = rbackup_store::open(&cloud.url, &cloud.admin_options).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(store.list(prefix)).unwrap().len()
}

fn point_ids(a: &Agent) -> Vec<Value> {
    let (c, list) = a.json(&["recovery-points"]);
    assert_eq!(c, 0, "{list}");
    let mut ids: Vec<Value> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].clone())
        .collect();
    ids.sort_by_key(|id| id.to_string());
    ids
}

/// `check --read-data` passes and the latest recovery point restores to `src`.
fn check_and_restore(a: &Agent, src: &Path, target: &str) {
    let (c, chk) = a.json(&["check", "--read-data"]);
    assert_eq!(c, 0, "{chk}");
    let target = a.p(target);
    a.restore_latest(&target);
    assert_same_tree(src, &target);
}

/// Starts a backup of `src` and kills it with SIGKILL once a new pack is in the vault.
fn kill_mid_backup(a: &Agent, cloud: &Cloud, src: &Path) {
    let packs = format!("machines/{}/packs/", a.machine_id());
    let before = count(cloud, &packs);
    let mut child = a
        .cmd()
        .args(["--json", "backup", src.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while count(cloud, &packs) == before {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the backup ended ({st}) before a pack was uploaded");
        }
        assert!(Instant::now() < deadline, "no pack appeared");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL
    let st = child.wait().unwrap();
    assert!(!st.success(), "the backup was killed mid-way");
}

/// The machine's `args` exits 1, saying the store refused a delete and who runs retention.
fn refused_by_the_store(a: &Agent, args: &[&str]) {
    let out = a.run(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(&out), 1, "rbackup {args:?}:\n{}", text(&out));
    assert!(err.contains("refused to delete"), "{err}");
    assert!(err.contains("append-only credentials"), "{err}");
    assert!(err.contains("admin host"), "{err}");
}

/// The machine's `args` exits 1: its agent is append-only and refuses before any store call.
fn refused_by_the_agent(a: &Agent, args: &[&str]) {
    let out = a.run(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(&out), 1, "rbackup {args:?}:\n{}", text(&out));
    assert!(err.contains("is append-only"), "{err}");
    assert!(err.contains("admin host"), "{err}");
    assert!(
        !err.contains("store refused"),
        "no delete was attempted: {err}"
    );
}

/// What stops the machine's own retention: the store alone (registered as usual, so the agent
/// tries and the credentials refuse), or the agent first (`register --append-only`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guard {
    Store,
    Agent,
}

fn append_only_flow(cloud: &Cloud, guard: Guard) {
    let mut a = Agent::bare();
    a.env = cloud.admin_env.clone();
    let creds = a.p("c.json");
    let creds_arg = creds.to_str().unwrap();
    a.ok(&[
        "vault",
        "create",
        &cloud.url,
        "--credentials-out",
        creds_arg,
    ]);
    // Throttled, so the kill below lands while the backup is still uploading.
    let mut register = vec!["--work-rate", "4MiB", "--non-work-rate", "4MiB"];
    if guard == Guard::Agent {
        register.push("--append-only");
    }
    a.register_with(&creds, &register);
    a.env = cloud.machine_env.clone();

    let src = a.p("src");
    make_tree(&src, 7, 30, 100_000);
    // Data only the first recovery point will hold, for prune to reclaim later.
    fs::write(src.join("gone.bin"), Rng(5).bytes(2 << 20)).unwrap();
    a.backup(&src);
    fs::remove_file(src.join("gone.bin")).unwrap();
    let big = src.join("big");
    fs::create_dir_all(&big).unwrap();
    let mut rng = Rng(11);
    for i in 0..16 {
        fs::write(big.join(format!("r{i:02}.bin")), rng.bytes(1 << 20)).unwrap();
    }
    kill_mid_backup(&a, cloud, &src);
    let out = a.run(&["backup", src.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    if guard == Guard::Agent {
        // An append-only agent never asks the store to delete (its leases end by new objects).
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("refused"), "{err}");
    }
    check_and_restore(&a, &src, "out");

    let points = point_ids(&a);
    assert_eq!(points.len(), 2);
    // `--wait` with a short grace: a prune carries out its own decision, deletes included.
    let prune_now = ["prune", "--wait", "--grace", "1s"];
    if guard == Guard::Agent {
        refused_by_the_agent(&a, &["forget", "--keep-last", "1"]);
        refused_by_the_agent(&a, &prune_now);
        assert_eq!(point_ids(&a), points);
        check_and_restore(&a, &src, "after-refusals");
        return;
    }
    // The machine's forget only soft-deletes (create-only tombstones): allowed, and undone
    // only by a delete, which the store refuses the machine and allows the admin.
    a.ok(&["forget", "--keep-last", "1"]);
    assert_eq!(point_ids(&a).len(), 1);
    let (c, deleted) = a.json(&["recovery-points", "--deleted"]);
    assert_eq!(c, 0, "{deleted}");
    let gone = deleted[0]["id"].as_str().unwrap().to_string();
    assert!(deleted[0]["purge_after"].is_string(), "{deleted}");
    refused_by_the_store(&a, &["undelete", &gone]);
    a.env = cloud.admin_env.clone();
    a.ok(&["undelete", &gone]);
    a.env = cloud.machine_env.clone();
    assert_eq!(point_ids(&a), points);
    // Soft-deleted again, and purged by the admin with the vault owner's PIN: the point's
    // object goes and its packs are doomed, to be deleted by a later prune.
    a.ok(&["forget", "--keep-last", "1"]);
    a.env = cloud.admin_env.clone();
    let (c, pin) = a.json(&["vault", "pin", &cloud.url]);
    assert_eq!(c, 0, "{pin}");
    let pin = pin["pin"].as_str().unwrap().to_string();
    a.ok(&["prune", "--purge-deleted-now", "--pin", &pin]);
    // The machine's prune would now delete those packs: the store refuses, nothing is lost.
    a.env = cloud.machine_env.clone();
    refused_by_the_store(&a, &prune_now);
    assert_eq!(point_ids(&a).len(), 1);
    check_and_restore(&a, &src, "after-refusals");
    // The admin's prune reclaims the data, and the machine backs up on.
    a.env = cloud.admin_env.clone();
    let report = a.ok(&prune_now);
    assert!(!report.contains("deleted 0 packs"), "{report}");
    a.env = cloud.machine_env.clone();
    fs::write(src.join("new.txt"), "after the prune").unwrap();
    a.backup(&src);
    check_and_restore(&a, &src, "after-prune");
}

fn moto_cloud(test: &str, bucket: &str) -> Option<(Moto, Cloud)> {
    let (moto, users) = Moto::start_with_users(test, bucket)?;
    let cloud = Cloud {
        url: format!("s3://{bucket}/site"),
        admin_env: s3_env(&moto, &users.admin),
        machine_env: s3_env(&moto, &users.machine),
        admin_options: moto.options_as(&users.admin),
    };
    Some((moto, cloud))
}

fn azurite_cloud(test: &str, container: &str) -> Option<(Azurite, Cloud)> {
    let az = Azurite::start(test)?;
    az.create_container(container);
    let endpoint = az.endpoint();
    let sas = az.container_sas(container, MACHINE_SAS_PERMISSIONS);
    let common = [
        ("AZURE_STORAGE_ACCOUNT_NAME", AZURITE_ACCOUNT),
        ("AZURE_STORAGE_ENDPOINT", endpoint.as_str()),
        ("AZURE_ALLOW_HTTP", "true"),
    ];
    let mut admin_env = env(&common);
    admin_env.extend(env(&[("AZURE_STORAGE_ACCOUNT_KEY", AZURITE_KEY)]));
    let mut machine_env = env(&common);
    machine_env.extend(env(&[("AZURE_STORAGE_SAS_KEY", &sas)]));
    let cloud = Cloud {
        url: format!("az://{container}/site"),
        admin_env,
        machine_env,
        admin_options: az.options(),
    };
    Some((az, cloud))
}

#[test]
fn append_only_machine_on_moto_s3_with_iam() {
    let test = "append_only_machine_on_moto_s3_with_iam";
    let Some((_moto, cloud)) = moto_cloud(test, "ao-vault") else {
        return;
    };
    append_only_flow(&cloud, Guard::Store);
}

#[test]
fn append_only_registered_machine_on_moto_s3_with_iam() {
    let test = "append_only_registered_machine_on_moto_s3_with_iam";
    let Some((_moto, cloud)) = moto_cloud(test, "ao-vault") else {
        return;
    };
    append_only_flow(&cloud, Guard::Agent);
}

#[test]
fn append_only_machine_on_azurite_with_sas() {
    let test = "append_only_machine_on_azurite_with_sas";
    let Some((_az, cloud)) = azurite_cloud(test, "ao-vault") else {
        return;
    };
    append_only_flow(&cloud, Guard::Store);
}

#[test]
fn append_only_registered_machine_on_azurite_with_sas() {
    let test = "append_only_registered_machine_on_azurite_with_sas";
    let Some((_az, cloud)) = azurite_cloud(test, "ao-vault") else {
        return;
    };
    append_only_flow(&cloud, Guard::Agent);
}
