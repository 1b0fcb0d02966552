//! Cloud vaults against real servers started on 127.0.0.1: Azurite for `az://` and moto for
//! `s3://` (see tests/servers for installing them and for SKIP). `gs://` has no local server
//! here, so it is only tested without one: configuration, and errors that need no server.

mod servers;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use object_store::ObjectStoreExt;
use rbackup_store::{
    Bytes, CloudStore, PutMode, Store, StoreError, StoreOptions, VaultUrl, conformance,
};
use servers::proxy::CountingProxy;
use servers::{Azurite, Moto, free_port};

const BUCKET: &str = "vault-bucket";

fn open(url: &str, options: &StoreOptions) -> CloudStore {
    let url = VaultUrl::parse(url).unwrap();
    CloudStore::open(&url, options).unwrap_or_else(|e| panic!("open {url}: {e}"))
}

/// Options that give up at once: no retries, a short connect and request timeout.
fn impatient(options: StoreOptions) -> StoreOptions {
    options
        .with_retries(0, Duration::from_secs(1))
        .with_timeouts(Duration::from_millis(1500), Duration::from_millis(500))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azurite_vault_conforms() {
    let Some(azurite) = Azurite::start("azurite_vault_conforms") else {
        return;
    };
    azurite.create_container("vault");
    let store = open("az://vault/machines/one", &azurite.options());
    conformance::run_all(&store).await;
    // Every upload above 1 MiB in parts: put_file streams its file, Create checks first.
    let options = azurite.options().with_multipart_threshold(1024 * 1024);
    let parts = open("az://vault/multipart", &options);
    conformance::run_all(&parts).await;
    assert!(store.describe().contains(&azurite.endpoint()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_vault_conforms() {
    let Some(moto) = Moto::start("moto_vault_conforms") else {
        return;
    };
    moto.create_bucket(BUCKET);
    let store = open(&format!("s3://{BUCKET}/machines/one"), &moto.options());
    conformance::run_all(&store).await;
    let options = moto.options().with_multipart_threshold(1024 * 1024);
    let parts = open(&format!("s3://{BUCKET}"), &options);
    conformance::run_all(&parts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_puts_are_multipart_uploads_on_s3() {
    let Some(moto) = Moto::start("large_puts_are_multipart_uploads_on_s3") else {
        return;
    };
    moto.create_bucket(BUCKET);
    let store = open(&format!("s3://{BUCKET}/v"), &moto.options());
    let big = Bytes::from(vec![7u8; 20 * 1024 * 1024]);
    store
        .put("big", big.clone(), PutMode::Create)
        .await
        .unwrap();
    store
        .put("small", Bytes::from_static(b"x"), PutMode::Create)
        .await
        .unwrap();
    // S3 gives a multipart object the ETag "<md5 of part md5s>-<part count>".
    let inner = store.backend().inner();
    let etag = |key: &'static str| async move {
        let location = object_store::path::Path::from(format!("v/{key}"));
        let meta = inner.head(&location).await.unwrap();
        meta.e_tag.unwrap_or_default()
    };
    let (big_etag, small_etag) = (etag("big").await, etag("small").await);
    assert!(big_etag.ends_with("-3\""), "{big_etag}");
    assert!(!small_etag.contains('-'), "{small_etag}");
    assert_eq!(store.get("big").await.unwrap(), big);
    // A large Create on a taken key is refused (by the check before the upload).
    let again = store.put("big", big, PutMode::Create).await;
    assert!(
        matches!(again, Err(StoreError::AlreadyExists { .. })),
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_container_on_azurite_is_bucket_not_found() {
    let Some(azurite) = Azurite::start("missing_container_on_azurite_is_bucket_not_found") else {
        return;
    };
    let store = open("az://no-such-container/p", &azurite.options());
    for result in [
        store.list("").await.map(drop),
        store.head("k").await.map(drop),
        store.get("k").await.map(drop),
        store.delete("k").await,
        store.put("k", Bytes::new(), PutMode::Create).await,
    ] {
        match result {
            Err(StoreError::BucketNotFound {
                bucket, endpoint, ..
            }) => {
                assert_eq!(bucket, "no-such-container");
                assert_eq!(endpoint, azurite.endpoint());
            }
            other => panic!("expected BucketNotFound, got {other:?}"),
        }
    }
    let msg = store.list("").await.unwrap_err().to_string();
    assert!(
        msg.contains("does not exist") && msg.contains("create it"),
        "{msg}"
    );
    // Once the container exists, the same store works: a failed check is not remembered.
    azurite.create_container("no-such-container");
    store.put("k", Bytes::new(), PutMode::Create).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_bucket_on_moto_is_bucket_not_found() {
    let Some(moto) = Moto::start("missing_bucket_on_moto_is_bucket_not_found") else {
        return;
    };
    let store = open("s3://no-such-bucket/p", &moto.options());
    for result in [
        store.exists("k").await.map(drop),
        store.put("k", Bytes::new(), PutMode::Overwrite).await,
        store.delete("k").await,
    ] {
        assert!(
            matches!(result, Err(StoreError::BucketNotFound { .. })),
            "{result:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_on_azurite_is_auth_failed() {
    let Some(azurite) = Azurite::start("wrong_key_on_azurite_is_auth_failed") else {
        return;
    };
    azurite.create_container("vault");
    // A well-formed key that is not the account's.
    let wrong =
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==";
    let store = open("az://vault/p", &azurite.options_with_key(wrong));
    match store.list("").await {
        Err(StoreError::AuthFailed { hint, .. }) => {
            assert!(hint.contains("AZURE_STORAGE_ACCOUNT_KEY"), "{hint}")
        }
        other => panic!("expected AuthFailed, got {other:?}"),
    }
    let good = open("az://vault/p", &azurite.options());
    assert!(good.list("").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_access_key_on_moto_is_auth_failed() {
    let Some(moto) = Moto::start_enforcing_auth("unknown_access_key_on_moto_is_auth_failed") else {
        return;
    };
    let store = open(&format!("s3://{BUCKET}/p"), &moto.options());
    let err = store.get("k").await.unwrap_err();
    match &err {
        StoreError::AuthFailed { detail, hint, .. } => {
            assert!(detail.contains("InvalidAccessKeyId"), "{detail}");
            assert!(hint.contains("AWS_ACCESS_KEY_ID"), "{hint}");
        }
        other => panic!("expected AuthFailed, got {other:?}"),
    }
    assert!(err.to_string().contains("refused the credentials"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_port_is_unreachable_quickly() {
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let s3 = impatient(StoreOptions::default().with_env(false))
        .with_cloud_config("aws_endpoint", &endpoint)
        .with_cloud_config("aws_access_key_id", "k")
        .with_cloud_config("aws_secret_access_key", "s");
    let az = impatient(StoreOptions::default().with_env(false))
        .with_cloud_config("azure_storage_account_name", servers::AZURITE_ACCOUNT)
        .with_cloud_config("azure_storage_account_key", servers::AZURITE_KEY)
        .with_cloud_config("azure_storage_endpoint", &endpoint);
    let gs = impatient(StoreOptions::default().with_env(false))
        .with_cloud_config("google_base_url", &endpoint)
        .with_cloud_config("google_bearer_token", "token");
    for (url, options, hint) in [
        ("s3://bkt/p", s3, "AWS_ENDPOINT"),
        ("az://ctr/p", az, "AZURE_STORAGE_ENDPOINT"),
        ("gs://bkt/p", gs, "GOOGLE_BASE_URL"),
    ] {
        let started = Instant::now();
        let store = open(url, &options);
        match store.list("").await {
            Err(e @ StoreError::Unreachable { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(&endpoint) && msg.contains(hint), "{msg}");
                assert!(msg.contains("proxy"), "{msg}");
            }
            other => panic!("{url}: expected Unreachable, got {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{url}: too slow"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_server_times_out() {
    // Accepts connections, never answers.
    let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let options = impatient(StoreOptions::default().with_env(false))
        .with_cloud_config("aws_endpoint", &endpoint)
        .with_cloud_config("aws_access_key_id", "k")
        .with_cloud_config("aws_secret_access_key", "s");
    let started = Instant::now();
    let store = open("s3://bkt", &options);
    let result = store.head("k").await;
    assert!(
        matches!(result, Err(StoreError::TimedOut { .. })),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_go_through_the_proxy_with_its_credentials() {
    let Some(moto) = Moto::start("requests_go_through_the_proxy_with_its_credentials") else {
        return;
    };
    moto.create_bucket(BUCKET);
    let proxy = CountingProxy::start("agent", "s3cret:@/");
    // Reserved characters in the password are percent-encoded in the URL.
    let options = moto
        .options()
        .with_proxy(proxy.url("agent", "s3cret%3A%40%2F"));
    let store = open(&format!("s3://{BUCKET}/via-proxy"), &options);
    store
        .put("a", Bytes::from_static(b"hello"), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(store.get("a").await.unwrap(), &b"hello"[..]);
    assert_eq!(store.list("").await.unwrap().len(), 1);
    // The bucket check, put, get and list: all four through the proxy, all authenticated.
    assert!(proxy.forwarded() >= 4, "forwarded {}", proxy.forwarded());
    assert_eq!(proxy.refused(), 0, "{:?}", proxy.auth_seen());
    assert!(!store.describe().contains("s3cret"), "{}", store.describe());

    let wrong = moto.options().with_proxy(proxy.url("agent", "wrong"));
    let store = open(&format!("s3://{BUCKET}/via-proxy"), &impatient(wrong));
    match store.get("a").await {
        Err(StoreError::AuthFailed { hint, .. }) => assert!(hint.contains("proxy URL"), "{hint}"),
        other => panic!("expected AuthFailed from the proxy, got {other:?}"),
    }
    assert!(proxy.refused() >= 1);
}

#[test]
fn unknown_cloud_settings_are_refused() {
    let options = StoreOptions::default()
        .with_env(false)
        .with_cloud_config("aws_endpoitn", "http://127.0.0.1:1");
    let url = VaultUrl::parse("s3://bkt/p").unwrap();
    match CloudStore::open(&url, &options) {
        Err(StoreError::Config { reason, .. }) => {
            assert!(reason.contains("aws_endpoitn") && reason.contains("aws_endpoint"))
        }
        other => panic!("expected Config, got {other:?}"),
    }
}
