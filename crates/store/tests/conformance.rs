//! The conformance suite against every backend this crate offers.

use std::sync::Arc;

use rbackup_store::{LocalStore, ObjectStoreBackend, StoreOptions, conformance, open};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    // A root that does not exist yet: the first put must create it.
    let store = LocalStore::new(dir.path().join("vault")).unwrap();
    conformance::run_all(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_store_via_open_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let store = open(&url, &StoreOptions::default()).unwrap();
    conformance::run_all(store.as_ref()).await;
    // A second run over the leftovers of the first must pass too (it cleans up after itself).
    conformance::run_all(store.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_memory_store_conforms() {
    let store = open("memory://", &StoreOptions::default()).unwrap();
    conformance::run_all(store.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixed_memory_backend_conforms() {
    let inner = Arc::new(object_store::memory::InMemory::new());
    let store = ObjectStoreBackend::new(inner.clone(), "tenant/vault").unwrap();
    conformance::run_all(&store).await;
    // A neighbour outside the prefix is invisible to the backend and untouched by it.
    use object_store::ObjectStoreExt;
    let outside = object_store::path::Path::from("tenant/other");
    inner.put(&outside, "x".into()).await.unwrap();
    let listed = rbackup_store::Store::list(&store, "").await.unwrap();
    assert!(listed.is_empty(), "{listed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_store_local_file_system_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let fs = object_store::local::LocalFileSystem::new_with_prefix(dir.path())
        .unwrap()
        .with_fsync(true);
    let store = ObjectStoreBackend::new(Arc::new(fs), "").unwrap();
    conformance::run_all(&store).await;
}
