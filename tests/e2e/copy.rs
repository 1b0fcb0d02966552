//! `rbackup copy --to URL`: the machine's recovery points into another vault (here: from a
//! folder to moto S3, a migration), registering the machine there with its credentials first;
//! deduplicated on the second run; what it copied restores from there on another machine.

use crate::cloud::servers::Moto;
use crate::harness::*;

#[test]
fn copy_to_another_vault_registers_there_dedups_and_restores_from_it() {
    let Some(moto) = Moto::start("copy_to_another_vault_registers_there") else {
        return;
    };
    moto.create_bucket("copy-dest");
    let mut a = Agent::registered();
    a.env = crate::cloud::moto_env(&moto.endpoint());
    let src = a.p("src");
    make_tree(&src, 21, 25, 200_000);
    let p1 = a.backup(&src)["recovery_point"]
        .as_str()
        .unwrap()
        .to_string();
    make_tree(&src.join("more"), 22, 10, 100_000);
    let p2 = a.backup(&src)["recovery_point"]
        .as_str()
        .unwrap()
        .to_string();

    let dest = "s3://copy-dest/migrated";
    let creds = a.p("dest-creds.json");
    a.ok(&[
        "vault",
        "create",
        dest,
        "--credentials-out",
        creds.to_str().unwrap(),
    ]);
    // Not registered there, and no credentials given: it says what to pass.
    let out = a.run(&["copy", "--to", dest]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(text(&out).contains("--vault-credentials"), "{}", text(&out));
    // A wrong passphrase is refused before anything is written there.
    let wrong = a.p("wrong.txt");
    std::fs::write(&wrong, "not-the-passphrase-at-all").unwrap();
    let creds_s = creds.to_str().unwrap();
    let out = a.run(&[
        "copy",
        "--to",
        dest,
        "--vault-credentials",
        creds_s,
        "--passphrase-file",
        wrong.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(
        text(&out).contains("not this machine's passphrase"),
        "{}",
        text(&out)
    );

    // The first point only, then the rest: the second sends only what the first lacked.
    let pass = a.pass_file();
    let args = [
        "copy",
        "--to",
        dest,
        "--vault-credentials",
        creds_s,
        "--passphrase-file",
        pass.to_str().unwrap(),
        &p1[..10],
    ];
    let (c, r1) = a.json(&args);
    assert_eq!(c, 0, "{r1}");
    assert_eq!(r1["copied"][0], p1.as_str(), "{r1}");
    let (c, r2) = a.json(&["copy", "--to", dest]);
    assert_eq!(c, 0, "{r2}");
    assert_eq!(r2["copied"].as_array().unwrap().len(), 1, "{r2}");
    assert_eq!(r2["copied"][0], p2.as_str(), "{r2}");
    assert_eq!(r2["already_there"][0], p1.as_str(), "{r2}");
    assert!(
        r2["bytes_read"].as_u64().unwrap() < 10 * 100_000 + (256 << 10),
        "the second copy re-sent the first point's data: {r2}"
    );
    let (c, r3) = a.json(&["copy", "--to", dest]);
    assert_eq!((c, r3["copied"].as_array().unwrap().len()), (0, 0), "{r3}");
    let (_, st) = a.json(&["status"]);
    assert_eq!(st["last_copy"]["to"], dest, "{st}");

    // Another machine restores from the new vault with the passphrase alone.
    let mut b = Agent::bare();
    b.env = a.env.clone();
    let creds_b = b.p("b.json");
    a.ok(&[
        "vault",
        "credentials",
        dest,
        "--out",
        creds_b.to_str().unwrap(),
    ]);
    b.register_with(&creds_b, &[]);
    let target = b.p("t");
    let id = a.machine_id();
    b.ok(&[
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--machine",
        &id,
        "--passphrase-file",
        b.pass_file().to_str().unwrap(),
    ]);
    assert_same_tree(&src, &target);
}
