//! LocalStore specifics: staging files, error mapping, crash safety, on-disk layout.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rbackup_store::{Bytes, LocalStore, PutMode, Store, StoreError};
use rbackup_testenv::{LoopMount, sh};

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
async fn staging_files_of_killed_writers_are_removed_once_stale_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path()).unwrap();
    assert_eq!(store.remove_stale_staging(Duration::ZERO).await.unwrap(), 0);
    store
        .put("a/one", Bytes::from_static(b"1"), PutMode::Create)
        .await
        .unwrap();
    let staging = dir.path().join(rbackup_store::STAGING_DIR);
    let day = Duration::from_secs(24 * 3600);
    let write = |name: &str, age: Duration| {
        let path = staging.join(name);
        std::fs::write(&path, b"partial").unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::now() - age).unwrap();
        path
    };
    let old = write(".tmp-00000000000000aa", 2 * day);
    let fresh = write(".tmp-00000000000000bb", Duration::from_secs(60));
    let other = write("not-ours", 2 * day);
    assert_eq!(store.remove_stale_staging(day).await.unwrap(), 1);
    assert!(!old.exists() && fresh.exists() && other.exists());
    assert_eq!(&store.get("a/one").await.unwrap()[..], b"1");
    assert_eq!(store.remove_stale_staging(day).await.unwrap(), 0);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_are_staged_in_one_folder_at_the_root_and_folders_can_be_made_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path()).unwrap();
    let made = store
        .create_folders(&["m/packs/00".to_string(), "m/locks".to_string()])
        .unwrap();
    assert_eq!(
        made,
        [dir.path().join("m/packs/00"), dir.path().join("m/locks")]
    );
    assert!(made.iter().all(|d| d.is_dir()));
    let staging = dir.path().join(rbackup_store::STAGING_DIR);
    assert!(staging.is_dir());
    store
        .put("m/locks/l-1", Bytes::from_static(b"lease"), PutMode::Create)
        .await
        .unwrap();
    store
        .put(
            "m/locks/l-1",
            Bytes::from_static(b"again"),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    // The destination holds the object only; the staging folder is empty and not listed.
    let names: Vec<_> = std::fs::read_dir(dir.path().join("m/locks"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["l-1"]);
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
    let keys: Vec<String> = store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.path)
        .collect();
    assert_eq!(keys, ["m/locks/l-1"]);
}

const MOUNTS: &str = "run as root where loop and tmpfs mounts are allowed";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_on_another_file_system_is_staged_beside_it() {
    const TEST: &str = "a_destination_on_another_file_system_is_staged_beside_it";
    if !rbackup_testenv::need_root(TEST, "to mount a tmpfs inside the vault") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let inner = dir.path().join("a");
    std::fs::create_dir(&inner).unwrap();
    let mount = LoopMount::tmpfs(&inner, "4m");
    let _m = rbackup_testenv::require!(TEST, mount, MOUNTS);
    let _ran = rbackup_testenv::ran(TEST, "root, tmpfs");
    let store = LocalStore::new(dir.path()).unwrap();
    store
        .put("a/x", Bytes::from_static(b"one"), PutMode::Create)
        .await
        .unwrap();
    assert!(
        store
            .put("a/x", Bytes::from_static(b"two"), PutMode::Create)
            .await
            .unwrap_err()
            .is_already_exists()
    );
    store
        .put("a/x", Bytes::from_static(b"three"), PutMode::Overwrite)
        .await
        .unwrap();
    assert_eq!(&store.get("a/x").await.unwrap()[..], b"three");
    assert_eq!(staging_files(dir.path()), Vec::<PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_only_folders_take_creates_and_refuse_deletes_and_overwrites() {
    const TEST: &str = "append_only_folders_take_creates_and_refuse_deletes_and_overwrites";
    if !rbackup_testenv::need_root(TEST, "to loop-mount ext4 and set chattr +a")
        || !rbackup_testenv::need_command(TEST, "mkfs.ext4", "e2fsprogs")
        || !rbackup_testenv::need_command(TEST, "chattr", "e2fsprogs")
    {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("vault");
    let mount = LoopMount::new(
        &work.path().join("ext4.img"),
        "32M",
        &["mkfs.ext4", "-q"],
        &root,
    );
    let _m = rbackup_testenv::require!(TEST, mount, MOUNTS);
    let _ran = rbackup_testenv::ran(TEST, "root, loop-mounted ext4, chattr +a");
    let store = LocalStore::new(&root).unwrap();
    let folders = store
        .create_folders(&["m".to_string(), "m/locks".to_string()])
        .unwrap();
    let mut args = vec!["+a"];
    args.extend(folders.iter().map(|f| f.to_str().unwrap()));
    sh("chattr", &args).unwrap();

    store
        .put("m/locks/l-1", Bytes::from_static(b"first"), PutMode::Create)
        .await
        .unwrap();
    let local = work.path().join("local");
    std::fs::write(&local, b"from a file").unwrap();
    store
        .put_file("m/locks/l-2", &local, PutMode::Create)
        .await
        .unwrap();
    let overwrite = store
        .put(
            "m/locks/l-1",
            Bytes::from_static(b"second"),
            PutMode::Overwrite,
        )
        .await
        .unwrap_err();
    let delete = store.delete("m/locks/l-1").await.unwrap_err();
    for (err, what) in [(overwrite, "overwrites"), (delete, "deletes")] {
        // The same typed refusal as a cloud store's append-only credentials give.
        assert!(err.is_refused(), "{err:?}");
        assert!(
            err.to_string().contains(&root.display().to_string()),
            "{err}"
        );
        let text = err.to_string();
        assert!(text.contains(&format!("does not allow {what}")), "{text}");
        assert!(text.contains("m/locks/l-1"), "names the object: {text}");
    }
    assert_eq!(&store.get("m/locks/l-1").await.unwrap()[..], b"first");
    assert_eq!(
        staging_files(&root.join("m")),
        Vec::<PathBuf>::new(),
        "no staging file left in the append-only folders"
    );
    let mut keys: Vec<String> = store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.path)
        .collect();
    keys.sort();
    assert_eq!(keys, ["m/locks/l-1", "m/locks/l-2"]);
    args[0] = "-a";
    sh("chattr", &args).unwrap();
}
