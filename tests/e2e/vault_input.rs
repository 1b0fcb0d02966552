//! The vault is untrusted input, through the binary: a vault.json whose vault id would lead
//! the cache folder out of the cache dir is refused with a clear message and exit code 1,
//! and nothing outside the allowed folders changes.

use std::fs;

use crate::harness::*;

#[test]
fn a_hostile_vault_id_is_refused_and_nothing_outside_the_cache_changes() {
    let a = Agent::registered();
    let src = a.p("src");
    make_tree(&src, 17, 10, 10_000);
    a.backup(&src);

    // "../../x" from the cache's meta folder is home/.cache/x: plant a decoy there.
    let dot_cache = a.p("home/.cache");
    fs::create_dir_all(dot_cache.join("x")).unwrap();
    fs::write(dot_cache.join("x/keep.txt"), b"not the cache's").unwrap();
    let vault_json = a.vault_dir().join("vault.json");
    let mut meta: serde_json::Value =
        serde_json::from_slice(&fs::read(&vault_json).unwrap()).unwrap();
    meta["vault_id"] = "../../x".into();
    fs::write(&vault_json, serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
    let before = checksums(&dot_cache);
    let src_before = checksums(&src);

    let out = a.run(&["backup", src.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("vault.json") && err.contains("vault id") && err.contains("../../x"),
        "{err}"
    );
    assert_eq!(
        checksums(&dot_cache),
        before,
        "the cache's parent folder changed"
    );
    assert_eq!(checksums(&src), src_before);
    assert!(!dot_cache.join("x").join(a.machine_id()).exists());
}
