//! LocalStore specifics: staging files, error mapping, crash safety, on-disk layout.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rbackup_store::{Bytes, LocalStore, PutMode, Store, StoreError};

fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                pending.push(entry.path());
            } else {
                out.push(entry.path());
            }
        }
    }
    out
}

fn staging_files(dir: &Path) -> Vec<PathBuf> {
    all_files(dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".tmp-")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_are_plain_files_at_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path()).unwrap();
    store
        .put(
            "machines/ab12/packs/3f/3f0a",
            Bytes::from_static(b"pack"),
            PutMode::Create,
        )
        .await
        .unwrap();
    let on_disk = std::fs::read(dir.path().join("machines/ab12/packs/3f/3f0a")).unwrap();
    assert_eq!(on_disk, b"pack");
    assert_eq!(store.describe(), format!("file://{}", dir.path().display()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_staging_files_left_and_strays_never_listed() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path()).unwrap();
    let local = dir.path().join("local-pack");
    std::fs::write(&local, vec![7u8; 100_000]).unwrap();
    store
        .put("a/one", Bytes::from(vec![1; 10]), PutMode::Create)
        .await
        .unwrap();
    store
        .put("a/one", Bytes::from(vec![2; 20]), PutMode::Overwrite)
        .await
        .unwrap();
    let refused = store
        .put("a/one", Bytes::from(vec![3; 30]), PutMode::Create)
        .await;
    assert!(refused.unwrap_err().is_already_exists());
    store
        .put_file("a/b/two", &local, PutMode::Create)
        .await
        .unwrap();
    let refused = store.put_file("a/b/two", &local, PutMode::Create).await;
    assert!(refused.unwrap_err().is_already_exists());
    store
        .put_file("a/b/two", &local, PutMode::Overwrite)
        .await
        .unwrap();
    assert_eq!(staging_files(dir.path()), Vec::<PathBuf>::new());

    // Staging files left by a crashed writer stay invisible.
    std::fs::write(dir.path().join("a/.tmp-0123456789abcdef"), b"partial").unwrap();
    std::fs::write(dir.path().join(".tmp-feedface"), b"partial").unwrap();
    let mut keys: Vec<String> = store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.path)
        .collect();
    keys.sort();
    assert_eq!(keys, ["a/b/two", "a/one", "local-pack"]);
    let under_a = store.list("a").await.unwrap();
    assert_eq!(under_a.len(), 2, "{under_a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_create_leaves_the_original_file_itself_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path()).unwrap();
    let original = Bytes::from(vec![0xAB; 200_000]);
    store
        .put("locks/l1", original.clone(), PutMode::Create)
        .await
        .unwrap();
    let file = dir.path().join("locks/l1");
    let before = std::fs::metadata(&file).unwrap();

    // A crash in the middle of an earlier put left a partial staging file beside it.
    std::fs::write(dir.path().join("locks/.tmp-00000000deadbeef"), b"half").unwrap();

    let err = store
        .put("locks/l1", Bytes::from(vec![0xCD; 10]), PutMode::Create)
        .await;
    assert!(matches!(err, Err(StoreError::AlreadyExists { ref path }) if path == "locks/l1"));
    let after = std::fs::metadata(&file).unwrap();
    assert_eq!(
        after.ino(),
        before.ino(),
        "the original inode must not be replaced"
    );
    assert_eq!(after.nlink(), 1, "no extra links to the object remain");
    assert_eq!(std::fs::read(&file).unwrap(), original);
    assert_eq!(store.get("locks/l1").await.unwrap(), original);
    // Only the simulated stray remains; the refused put cleaned up its own.
    assert_eq!(staging_files(dir.path()).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_where_a_directory_is_expected_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path()).unwrap();
    store
        .put("a", Bytes::from_static(b"leaf"), PutMode::Create)
        .await
        .unwrap();
    for mode in [PutMode::Create, PutMode::Overwrite] {
        let err = store
            .put("a/b/c", Bytes::from_static(b"x"), mode)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("not a directory"), "{err}");
    }
    assert_eq!(store.get("a").await.unwrap(), &b"leaf"[..]);
    assert!(store.get("a/b/c").await.unwrap_err().is_not_found());
    // The other way round: a key naming a directory of objects.
    store
        .put("d/e", Bytes::from_static(b"x"), PutMode::Create)
        .await
        .unwrap();
    for mode in [PutMode::Create, PutMode::Overwrite] {
        let err = store
            .put("d", Bytes::from_static(b"y"), mode)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Io { .. }), "{mode:?}: {err:?}");
    }
    assert_eq!(store.get("d/e").await.unwrap(), &b"x"[..]);
    assert_eq!(staging_files(dir.path()), Vec::<PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_directory_gives_permission_denied() {
    // Root ignores permission bits, so as root the test runs itself again as nobody.
    if rbackup_testenv::rerun_as_nobody("read_only_directory_gives_permission_denied") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path()).unwrap();
    store
        .put("ro/existing", Bytes::from_static(b"x"), PutMode::Create)
        .await
        .unwrap();
    let ro = dir.path().join("ro");
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    let probe = ro.join("probe");
    if std::fs::write(&probe, b"").is_ok() {
        // Not root, yet something (CAP_DAC_OVERRIDE) ignores permission bits.
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
        rbackup_testenv::skip(
            "read_only_directory_gives_permission_denied",
            "a user whose writes respect directory permissions",
            "run the tests without CAP_DAC_OVERRIDE",
        );
        return;
    }
    let err = store
        .put("ro/new", Bytes::from_static(b"x"), PutMode::Create)
        .await
        .unwrap_err();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(
        matches!(err, StoreError::PermissionDenied { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("permissions of the vault folder"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_vault_lists_empty_and_reads_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path().join("not/yet")).unwrap();
    assert!(store.list("").await.unwrap().is_empty());
    assert!(store.get("config").await.unwrap_err().is_not_found());
    assert!(
        !dir.path().join("not").exists(),
        "reads must not create the vault"
    );
}

#[test]
fn relative_root_is_refused() {
    let err = LocalStore::new("relative/vault").unwrap_err();
    assert!(matches!(err, StoreError::InvalidUrl { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_file_of_missing_source_names_the_local_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path().join("v")).unwrap();
    let missing = dir.path().join("no-such-pack");
    let err = store
        .put_file("p", &missing, PutMode::Create)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Io { ref path, .. } if path.contains("no-such-pack")),
        "{err:?}"
    );
    assert!(!store.exists("p").await.unwrap());
}
