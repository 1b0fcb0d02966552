//! Attacks through the binary: a shared recovery folder pre-created by another user is
//! refused before anything is written, with a message naming the folder and why; a directory
//! of the restore target replaced by a symlink to a folder outside it is reported and not
//! followed. Nothing outside the allowed folders changes.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::harness::*;

/// Giving a folder to another user needs root; without it the test skips (or fails under
/// `RBACKUP_REQUIRE_ALL`), through the one gate all tests share.
fn root_or_skip(test: &str) -> bool {
    rbackup_testenv::need_root(test, "to give a folder to another user")
}

#[test]
fn a_shared_recovery_folder_pre_created_by_another_user_is_refused() {
    if !root_or_skip("a_shared_recovery_folder_pre_created_by_another_user_is_refused") {
        return;
    }
    let a = Agent::registered();
    let src = a.p("src");
    make_tree(&src, 7, 20, 20_000);
    a.backup(&src);

    // Another user's world-writable folder, with their own files in it (the decoy).
    let shared = a.p("shared");
    fs::create_dir_all(shared.join("theirs")).unwrap();
    fs::write(shared.join("theirs/notes.txt"), b"their notes").unwrap();
    fs::write(
        shared.join("rbackup-restore"),
        b"a trap where our staging folder goes",
    )
    .unwrap();
    let st = std::process::Command::new("chown")
        .args(["-R", "65534:65534", shared.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
    let before = checksums(&shared);

    let target = a.p("target");
    let out = a.restore_latest_via(&target, &shared);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(shared.to_str().unwrap())
            && err.contains("recovery folder")
            && err.contains("another user")
            && err.contains("uid 65534"),
        "{err}"
    );
    assert_eq!(checksums(&shared), before, "the shared folder changed");
    assert_eq!(
        fs::read_dir(&shared).unwrap().count(),
        2,
        "something was added"
    );
    assert!(!target.exists(), "nothing written to the target");
}

#[test]
fn a_symlinked_directory_in_the_target_is_reported_and_not_followed() {
    let a = Agent::registered();
    let src = a.p("src");
    make_tree(&src.join("inner"), 9, 12, 20_000);
    fs::write(src.join("top.txt"), b"restored beside the link").unwrap();
    a.backup(&src);

    // The decoy stands for /etc: the target's `inner` points there.
    let decoy = a.p("decoy");
    fs::create_dir_all(decoy.join("sub")).unwrap();
    fs::write(decoy.join("passwd"), b"root:x:0:0").unwrap();
    fs::write(decoy.join("sub/shadow"), b"secret").unwrap();
    let before = checksums(&decoy);
    let target = a.p("target");
    let here = target.join(src.strip_prefix("/").unwrap());
    fs::create_dir_all(&here).unwrap();
    std::os::unix::fs::symlink(&decoy, here.join("inner")).unwrap();

    let out = a.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "exit as for damage: {}", text(&out));
    let link = here.join("inner").display().to_string();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{link} is a symbolic link; not followed")),
        "{err}"
    );
    assert_eq!(checksums(&decoy), before, "the decoy changed");
    assert_eq!(fs::read_link(here.join("inner")).unwrap(), decoy);
    assert_eq!(
        fs::read(here.join("top.txt")).unwrap(),
        b"restored beside the link"
    );
}
