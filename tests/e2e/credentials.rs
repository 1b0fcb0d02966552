//! Vault credentials as MARS documents them: expiry, newest only, corrupted, unreadable.

use std::fs;

use crate::harness::*;

fn register_with(a: &Agent, creds: &std::path::Path) -> std::process::Output {
    a.run(&[
        "register",
        "--vault-credentials",
        creds.to_str().unwrap(),
        "--passphrase-file",
        a.pass_file().to_str().unwrap(),
    ])
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn expired_credentials_are_refused() {
    let a = Agent::bare();
    let creds = a.p("c.json");
    a.ok(&[
        "vault",
        "create",
        &a.vault_url(),
        "--credentials-out",
        creds.to_str().unwrap(),
        "--valid-for",
        "0s",
    ]);
    let out = register_with(&a, &creds);
    assert_eq!(code(&out), 1);
    let e = stderr(&out);
    assert!(
        e.contains("Vault credentials file provided has expired"),
        "{e}"
    );
    assert!(
        e.contains("rbackup vault credentials"),
        "says how to get new ones: {e}"
    );
}

#[test]
fn only_the_newest_credentials_are_valid() {
    let a = Agent::bare();
    let (old, new) = (a.p("old.json"), a.p("new.json"));
    a.ok(&[
        "vault",
        "create",
        &a.vault_url(),
        "--credentials-out",
        old.to_str().unwrap(),
    ]);
    a.ok(&[
        "vault",
        "credentials",
        &a.vault_url(),
        "--out",
        new.to_str().unwrap(),
    ]);
    let out = register_with(&a, &old);
    assert_eq!(code(&out), 1);
    let e = stderr(&out);
    assert!(
        e.contains("Invalid vault credentials provided") && e.contains("newest"),
        "{e}"
    );
    let out = register_with(&a, &new);
    assert_eq!(code(&out), 0, "{}", text(&out));
    // Registering again says so and changes nothing.
    let before = fs::read(a.config()).unwrap();
    let out = register_with(&a, &new);
    assert_eq!(code(&out), 0);
    assert!(
        stderr(&out).contains("already registered"),
        "{}",
        text(&out)
    );
    assert_eq!(before, fs::read(a.config()).unwrap());
}

#[test]
fn corrupted_or_forged_credentials_are_invalid() {
    let a = Agent::bare();
    let creds = a.p("c.json");
    a.ok(&[
        "vault",
        "create",
        &a.vault_url(),
        "--credentials-out",
        creds.to_str().unwrap(),
    ]);
    let good = fs::read_to_string(&creds).unwrap();
    fs::write(&creds, &good[..good.len() / 2]).unwrap();
    let e = stderr(&register_with(&a, &creds));
    assert!(e.contains("Invalid vault credentials provided"), "{e}");
    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    v["secret"] = serde_json::Value::String("00".repeat(32));
    fs::write(&creds, v.to_string()).unwrap();
    let e = stderr(&register_with(&a, &creds));
    assert!(e.contains("Invalid vault credentials provided"), "{e}");
    // Extending the expiry in the file does not help: the vault's record decides.
    assert!(!a.config().exists());
}

#[test]
fn unreadable_credentials_file_names_path_and_error() {
    let a = Agent::bare();
    let missing = a.p("nowhere/creds.json");
    let out = register_with(&a, &missing);
    assert_eq!(code(&out), 1);
    let e = stderr(&out);
    assert!(
        e.contains(missing.to_str().unwrap()) && e.contains("No such file"),
        "{e}"
    );
    assert!(e.contains("Copy the file to a local folder"), "{e}");
}
