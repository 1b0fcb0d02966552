//! The binary against real cloud servers, configured the way users do it: environment
//! variables (`AWS_*`, `AZURE_STORAGE_*`) and a vault URL.

// Also used by append_only_cloud.rs (a file may be a module only once).
#[path = "../../crates/store/tests/servers/mod.rs"]
pub mod servers;

use std::fs;

use crate::harness::*;
use servers::{AZURITE_ACCOUNT, AZURITE_KEY, Azurite, Moto};

/// The environment a user sets for an S3 vault on moto at `endpoint` (any credentials do).
pub fn moto_env(endpoint: &str) -> Vec<(String, String)> {
    vec![
        ("AWS_ENDPOINT".into(), endpoint.into()),
        ("AWS_ALLOW_HTTP".into(), "true".into()),
        ("AWS_REGION".into(), "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID".into(), "rbackup-test".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "rbackup-test-secret".into()),
    ]
}

fn flow(a: &Agent, url: &str) {
    let creds = a.p("c.json");
    a.ok(&[
        "vault",
        "create",
        url,
        "--credentials-out",
        creds.to_str().unwrap(),
    ]);
    a.ok(&[
        "register",
        "--vault-credentials",
        creds.to_str().unwrap(),
        "--passphrase-file",
        a.pass_file().to_str().unwrap(),
    ]);
    let src = a.p("src");
    make_tree(&src, 91, 40, 200_000);
    a.backup(&src);
    let again = a.backup(&src);
    assert_eq!(again["bytes_read"], 0);
    let (c, chk) = a.json(&["check", "--read-data"]);
    assert_eq!(c, 0, "{chk}");
    let target = a.p("out");
    a.restore_latest(&target);
    assert_same_tree(&src, &target);
    assert!(fs::read_to_string(a.config()).unwrap().contains(url));
}

#[test]
fn cli_on_moto_s3_from_environment() {
    let Some(moto) = Moto::start("cli_on_moto_s3_from_environment") else {
        return;
    };
    moto.create_bucket("cli-vault");
    let mut a = Agent::bare();
    a.env = moto_env(&moto.endpoint());
    flow(&a, "s3://cli-vault/site-a");
    // A bucket that does not exist is named, with what to do.
    let out = a.run(&[
        "vault",
        "create",
        "s3://no-such-bucket/x",
        "--credentials-out",
        a.p("x.json").to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("no-such-bucket") && e.contains("does not exist"),
        "{e}"
    );
}

#[test]
fn cli_on_azurite_from_environment() {
    let Some(az) = Azurite::start("cli_on_azurite_from_environment") else {
        return;
    };
    az.create_container("cli-vault");
    let mut a = Agent::bare();
    a.env = vec![
        ("AZURE_STORAGE_ACCOUNT_NAME".into(), AZURITE_ACCOUNT.into()),
        ("AZURE_STORAGE_ACCOUNT_KEY".into(), AZURITE_KEY.into()),
        ("AZURE_STORAGE_ENDPOINT".into(), az.endpoint()),
        ("AZURE_ALLOW_HTTP".into(), "true".into()),
    ];
    flow(&a, "az://cli-vault/site-b");
}
