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

#[test]
fn a_vault_is_not_created_among_other_files_unless_forced() {
    let a = Agent::bare();
    let dir = a.p("documents");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("thesis.odt"), b"years of work").unwrap();
    let url = format!("file://{}", dir.display());
    let creds = a.p("c.json");
    let c = creds.to_str().unwrap();
    let out = a.run(&["vault", "create", &url, "--credentials-out", c]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains("is not empty and holds no vault"), "{err}");
    assert!(
        err.contains("thesis.odt") && err.contains("--force"),
        "{err}"
    );
    assert!(!dir.join("vault.json").exists() && !creds.exists());
    // Forced, it is made there; the user's file is left alone.
    a.ok(&["vault", "create", &url, "--credentials-out", c, "--force"]);
    assert!(dir.join("vault.json").is_file());
    assert_eq!(fs::read(dir.join("thesis.odt")).unwrap(), b"years of work");
    // An empty or missing folder needs no --force.
    let fresh = a.p("fresh");
    let url = format!("file://{}", fresh.display());
    let c2 = a.p("c2.json");
    a.ok(&[
        "vault",
        "create",
        &url,
        "--credentials-out",
        c2.to_str().unwrap(),
    ]);
    // memory:// works, and says that nothing of it lasts.
    let c3 = a.p("c3.json");
    let out = a.run(&[
        "vault",
        "create",
        "memory://try",
        "--credentials-out",
        c3.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        stderr(&out).contains("nothing of it persists"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_config_registered_by_a_relative_path_works_from_any_directory() {
    let a = Agent::bare();
    let creds = a.create_vault();
    // Registered from the agent's folder with a relative --config...
    let out = a
        .cmd()
        .current_dir(a.dir.path())
        .args([
            "--config",
            "etc/agent.toml",
            "register",
            "--vault-credentials",
        ])
        .arg(&creds)
        .arg("--passphrase-file")
        .arg(a.pass_file())
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let config = a.p("etc/agent.toml");
    let text_cfg = fs::read_to_string(&config).unwrap();
    for line in text_cfg
        .lines()
        .filter(|l| l.ends_with("_file\"") || l.contains("_dir =") || l.starts_with("key_file"))
    {
        let path = line.split('"').nth(1).unwrap();
        assert!(path.starts_with('/'), "stored absolute: {line}");
    }
    // ...then run, as a timer would, from another directory.
    let src = a.p("src");
    make_tree(&src, 3, 5, 10_000);
    let out = a
        .cmd()
        .current_dir("/")
        .arg("--config")
        .arg(&config)
        .args(["backup", src.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
}

#[test]
fn a_vault_that_vanished_is_said_to_be_unmounted_or_moved_not_to_be_created_anew() {
    let a = Agent::registered();
    let src = a.p("src");
    make_tree(&src, 4, 3, 5_000);
    a.backup(&src);
    // The disk is unmounted, or the folder renamed.
    fs::rename(a.vault_dir(), a.p("vault-elsewhere")).unwrap();
    let out = a.run(&["backup", src.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains("holds no vault"), "{err}");
    assert!(err.contains("unmounted") && err.contains("moved"), "{err}");
    assert!(err.contains("does not bring old backups back"), "{err}");
}
