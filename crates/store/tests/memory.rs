//! memory:// stores: one store per name within a process, a fresh one for the empty name.

use rbackup_store::{Bytes, PutMode, StoreOptions, open};

#[tokio::test]
async fn same_name_is_same_store_within_the_process() {
    let opts = StoreOptions::default();
    let first = open("memory://shared-within-process", &opts).unwrap();
    let second = open("memory://shared-within-process", &opts).unwrap();
    let other = open("memory://some-other-name", &opts).unwrap();
    first
        .put("config", Bytes::from_static(b"vault v1"), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(second.get("config").await.unwrap(), &b"vault v1"[..]);
    assert!(!other.exists("config").await.unwrap());
    // Create through the second handle sees the first handle's object.
    let err = second
        .put("config", Bytes::from_static(b"v2"), PutMode::Create)
        .await
        .unwrap_err();
    assert!(err.is_already_exists(), "{err:?}");
    assert_eq!(first.describe(), "memory://shared-within-process");
}

#[tokio::test]
async fn empty_name_gives_a_fresh_private_store_each_time() {
    let opts = StoreOptions::default();
    let a = open("memory://", &opts).unwrap();
    let b = open("memory://", &opts).unwrap();
    a.put("k", Bytes::from_static(b"x"), PutMode::Create)
        .await
        .unwrap();
    assert!(a.exists("k").await.unwrap());
    assert!(!b.exists("k").await.unwrap());
    assert_eq!(a.describe(), "memory://");
}

#[test]
fn named_store_survives_runtimes() {
    // The registry is process-wide, not tied to a tokio runtime: a vault written in one
    // runtime can be reopened in another, as an embedding program might do.
    let rt = || tokio::runtime::Runtime::new().unwrap();
    rt().block_on(async {
        let s = open("memory://across-runtimes", &StoreOptions::default()).unwrap();
        s.put("a/b", Bytes::from_static(b"1"), PutMode::Overwrite)
            .await
            .unwrap();
    });
    rt().block_on(async {
        let s = open("memory://across-runtimes", &StoreOptions::default()).unwrap();
        let listed = s.list("a").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].path, "a/b");
    });
}
