//! Append-only machines on real cloud stores, through the binary as users run it: the vault is
//! created and the machine registered with the admin's credentials, then the machine runs with
//! credentials that may create and read but not delete (moto with IAM enforcement and the
//! documented machine policy; Azurite with an `rcl` container SAS). Backups, a `kill -9` and
//! the next backup, check and restore pass; the machine's own forget and prune are refused by
//! the store and say who runs retention; nothing is lost; the admin's credentials can.

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

fn append_only_flow(cloud: &Cloud) {
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
    a.register_with(&creds, &["--work-rate", "4MiB", "--non-work-rate", "4MiB"]);
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
    a.backup(&src);
    check_and_restore(&a, &src, "out");

    // The machine's own retention is refused by the store; nothing is lost.
    let points = point_ids(&a);
    assert_eq!(points.len(), 2);
    refused_by_the_store(&a, &["forget", "--keep-last", "1"]);
    assert_eq!(point_ids(&a), points);
    // The admin forgets the first point; the machine's prune is refused in turn.
    a.env = cloud.admin_env.clone();
    a.ok(&["forget", "--keep-last", "1"]);
    a.env = cloud.machine_env.clone();
    // `--wait` with a short grace: this run carries out its own decision, deletes included.
    let prune_now = ["prune", "--wait", "--grace", "1s"];
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

#[test]
fn append_only_machine_on_moto_s3_with_iam() {
    let Some((moto, users)) =
        Moto::start_with_users("append_only_machine_on_moto_s3_with_iam", "ao-vault")
    else {
        return;
    };
    let cloud = Cloud {
        url: "s3://ao-vault/site".into(),
        admin_env: s3_env(&moto, &users.admin),
        machine_env: s3_env(&moto, &users.machine),
        admin_options: moto.options_as(&users.admin),
    };
    append_only_flow(&cloud);
}

#[test]
fn append_only_machine_on_azurite_with_sas() {
    let Some(az) = Azurite::start("append_only_machine_on_azurite_with_sas") else {
        return;
    };
    az.create_container("ao-vault");
    let endpoint = az.endpoint();
    let sas = az.container_sas("ao-vault", MACHINE_SAS_PERMISSIONS);
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
        url: "az://ao-vault/site".into(),
        admin_env,
        machine_env,
        admin_options: az.options(),
    };
    append_only_flow(&cloud);
}
