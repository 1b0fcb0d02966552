//! Freshness: a recovery point deleted from the vault and a vault put back to an older copy are
//! reported by `check` (non-zero exit) and `recovery-points` (a warning); `forget` by this
//! machine is not reported; an index naming a deleted pack is reported and the next backup
//! writes the data again.

use std::fs;
use std::path::{Path, PathBuf};

use crate::harness::*;

fn snapshots_dir(a: &Agent) -> PathBuf {
    a.vault_dir()
        .join("machines")
        .join(a.machine_id())
        .join("snapshots")
}

/// Backs up `src` after changing a file in it; returns the new recovery point's id.
fn backup_changed(a: &Agent, src: &Path, n: u64) -> String {
    fs::write(src.join("changing.txt"), format!("version {n}")).unwrap();
    a.backup(src)["recovery_point"]
        .as_str()
        .unwrap()
        .to_string()
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn a_deleted_recovery_point_fails_check_naming_it_but_forget_does_not() {
    let a = Agent::registered();
    let src = a.p("src");
    make_tree(&src, 71, 10, 5_000);
    let ids: Vec<String> = (0..3).map(|n| backup_changed(&a, &src, n)).collect();
    a.ok(&["check"]);

    fs::remove_file(snapshots_dir(&a).join(&ids[1])).unwrap();
    let out = a.run(&["check"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("recovery point {} disappeared", ids[1])),
        "{err}"
    );
    let (c, list) = a.json(&["recovery-points"]);
    assert_eq!(c, 0, "{list}");
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");

    // This machine's own forget is not a deletion by someone else.
    let b = Agent::registered();
    let src = b.p("src");
    make_tree(&src, 72, 10, 5_000);
    for n in 0..3 {
        backup_changed(&b, &src, n);
    }
    b.ok(&["forget", "--keep-last", "1"]);
    let out = b.run(&["check"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(!text(&out).contains("disappeared"), "{}", text(&out));
}

#[test]
fn a_vault_put_back_to_an_older_copy_is_reported_by_check_and_recovery_points() {
    let a = Agent::registered();
    let src = a.p("src");
    make_tree(&src, 73, 10, 5_000);
    let first = backup_changed(&a, &src, 0);
    let saved = a.p("saved-snapshots");
    copy_dir(&snapshots_dir(&a), &saved);
    let second = backup_changed(&a, &src, 1);

    // The replay: the snapshots folder as it was after the first backup.
    fs::remove_dir_all(snapshots_dir(&a)).unwrap();
    copy_dir(&saved, &snapshots_dir(&a));

    let out = a.run(&["check"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rolled back"), "{err}");
    assert!(
        err.contains(&second) && err.contains(&first),
        "names the newest written ({second}) and the vault's ({first}): {err}"
    );

    let out = a.run(&["--json", "recovery-points"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning:") && err.contains("rolled back"),
        "{err}"
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["id"], first.as_str(), "{list}");
    assert_eq!(list[0]["sequence"], 1, "{list}");
    // Seeing the old vault does not lower the mark: the next check still reports it.
    assert_eq!(code(&a.run(&["check"])), 1);
}

#[test]
fn an_index_naming_a_deleted_pack_is_reported_and_the_next_backup_writes_the_data_again() {
    let a = Agent::registered();
    let src = a.p("src");
    make_tree(&src, 74, 20, 200_000);
    a.backup(&src);
    let pack = vault_files(&a.vault_dir())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/packs/"))
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    fs::remove_file(&pack).unwrap();
    let name = pack.file_name().unwrap().to_string_lossy().to_string();

    let out = a.run(&["check"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&name) && err.contains("missing"), "{err}");

    let report = a.backup(&src);
    assert_eq!(report["packs_missing"], 1, "{report}");
    assert!(report["packs"].as_u64().unwrap() >= 1, "{report}");
    let target = a.p("out");
    a.restore_latest(&target);
    assert_same_tree(&src, &target);
}
