//! Append-only machine credentials on real cloud servers: what a machine's store credentials
//! may and may not do, measured. moto with IAM enforcement and the documented machine policy
//! (docs/append-only/s3-machine-policy.json) for S3; Azurite with a container SAS of `rcl`
//! for Azure. docs/append-only/README.md tabulates the results.

mod servers;

use rbackup_store::{
    Bytes, CloudStore, PutMode, RefusedOperation, Store, StoreError, StoreOptions, VaultUrl,
};
use servers::sas::MACHINE_SAS_PERMISSIONS;
use servers::{Azurite, Moto};

const BUCKET: &str = "vault-bucket";
const MIB: usize = 1024 * 1024;

fn open(url: &str, options: StoreOptions) -> CloudStore {
    let url = VaultUrl::parse(url).unwrap();
    // 1 MiB parts threshold: the 3 MiB objects below are multipart uploads.
    let options = options.with_multipart_threshold(MIB as u64);
    CloudStore::open(&url, &options).unwrap_or_else(|e| panic!("open {url}: {e}"))
}

/// A pattern that differs from byte to byte, so a wrong part order would show.
fn big(seed: u8) -> Bytes {
    Bytes::from(
        (0..3 * MIB)
            .map(|i| (i % 251) as u8 ^ seed)
            .collect::<Vec<u8>>(),
    )
}

/// What both stores let the machine do: create (small and multipart), read, read a range,
/// head, list; and a `Create` on a taken key is `AlreadyExists`, small or large.
async fn creates_and_reads(machine: &CloudStore) {
    machine
        .put("k", Bytes::from_static(b"one"), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(machine.get("k").await.unwrap(), &b"one"[..]);
    assert_eq!(
        machine.get_range("k", Some(1..3)).await.unwrap(),
        &b"ne"[..]
    );
    assert_eq!(machine.head("k").await.unwrap().size, 3);
    machine.put("big", big(0), PutMode::Create).await.unwrap();
    assert_eq!(machine.get("big").await.unwrap(), big(0));
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), big(1)).unwrap();
    machine
        .put_file("from-file", file.path(), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(machine.get("from-file").await.unwrap(), big(1));
    let mut keys: Vec<String> = machine
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.path)
        .collect();
    keys.sort();
    assert_eq!(keys, ["big", "from-file", "k"]);
    for (key, data) in [("k", Bytes::from_static(b"two")), ("big", big(2))] {
        let again = machine.put(key, data, PutMode::Create).await;
        assert!(
            matches!(&again, Err(StoreError::AlreadyExists { path }) if path == key),
            "{key}: {again:?}"
        );
    }
}

/// The delete of `key` is refused as such, naming the key, and says what the credentials are.
async fn delete_is_refused(machine: &CloudStore, key: &str) {
    let err = machine.delete(key).await.unwrap_err();
    match &err {
        StoreError::OperationRefused {
            path, operation, ..
        } => {
            assert_eq!(path, key);
            assert_eq!(*operation, RefusedOperation::Delete);
        }
        other => panic!("delete {key}: expected OperationRefused, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("refused to delete object {key:?}")),
        "{msg}"
    );
    assert!(msg.contains("append-only credentials"), "{msg}");
    assert!(msg.contains("delete-capable credentials"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_machine_policy_creates_and_reads_but_cannot_delete() {
    let Some((moto, users)) = Moto::start_with_users(
        "s3_machine_policy_creates_and_reads_but_cannot_delete",
        BUCKET,
    ) else {
        return;
    };
    let url = format!("s3://{BUCKET}/vault");
    let machine = open(&url, moto.options_as(&users.machine));
    let admin = open(&url, moto.options_as(&users.admin));
    creates_and_reads(&machine).await;
    // Both parts-uploads really went in parts (S3's ETag "<md5>-<parts>").
    let location = object_store::path::Path::from("vault/big");
    let meta = object_store::ObjectStoreExt::head(admin.backend().inner(), &location)
        .await
        .unwrap();
    assert!(meta.e_tag.unwrap_or_default().ends_with("-1\""));

    for key in ["k", "big", "never-written"] {
        delete_is_refused(&machine, key).await;
    }
    assert_eq!(admin.get("k").await.unwrap(), &b"one"[..]);
    assert_eq!(admin.get("big").await.unwrap(), big(0));

    // moto cannot refuse an overwrite (it evaluates no IAM conditions, so no create-only
    // condition on s3:PutObject): it goes through, as a new version. Versioning keeps the
    // old one, and the policy denies s3:DeleteObjectVersion, so nothing is lost.
    machine
        .put("k", Bytes::from_static(b"ransom"), PutMode::Overwrite)
        .await
        .unwrap();
    assert_eq!(
        moto.object_versions(BUCKET, "vault/k"),
        [b"ransom".to_vec(), b"one".to_vec()]
    );
    delete_is_refused(&machine, "k").await;

    // The admin may delete; an unknown key is still refused as bad credentials.
    admin.delete("big").await.unwrap();
    assert!(admin.get("big").await.unwrap_err().is_not_found());
    let stranger = moto.options_as(&servers::moto_iam::AwsKey {
        id: "AKIAUNKNOWN".into(),
        secret: "nope".into(),
    });
    let stranger = open(&url, stranger);
    assert!(matches!(
        stranger.list("").await,
        Err(StoreError::AuthFailed { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_rcl_sas_creates_and_reads_but_cannot_delete_or_overwrite() {
    let Some(azurite) =
        Azurite::start("azure_rcl_sas_creates_and_reads_but_cannot_delete_or_overwrite")
    else {
        return;
    };
    azurite.create_container("vault");
    let sas = azurite.container_sas("vault", MACHINE_SAS_PERMISSIONS);
    let machine = open("az://vault/v", azurite.options_with_sas(&sas));
    let admin = open("az://vault/v", azurite.options());
    creates_and_reads(&machine).await;

    for key in ["k", "big"] {
        delete_is_refused(&machine, key).await;
    }
    for (key, data) in [("k", Bytes::from_static(b"ransom")), ("big", big(3))] {
        match machine.put(key, data, PutMode::Overwrite).await {
            Err(e @ StoreError::OperationRefused { .. }) => {
                assert!(
                    matches!(&e, StoreError::OperationRefused { path, operation: RefusedOperation::Overwrite, .. } if path == key),
                    "{e:?}"
                );
                assert!(e.to_string().contains("refused to overwrite"), "{e}");
            }
            other => panic!("overwrite {key}: expected OperationRefused, got {other:?}"),
        }
    }
    assert_eq!(admin.get("k").await.unwrap(), &b"one"[..]);
    assert_eq!(admin.get("big").await.unwrap(), big(0));
    admin.delete("big").await.unwrap();
    assert!(admin.get("big").await.unwrap_err().is_not_found());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_sas_without_create_cannot_write_and_says_so() {
    let Some(azurite) = Azurite::start("azure_sas_without_create_cannot_write_and_says_so") else {
        return;
    };
    azurite.create_container("vault");
    let sas = azurite.container_sas("vault", "rl");
    let reader = open("az://vault/v", azurite.options_with_sas(&sas));
    // A refused Create on a free key is not AlreadyExists: these credentials may not write.
    for mode in [PutMode::Create, PutMode::Overwrite] {
        let put = reader.put("new", Bytes::from_static(b"x"), mode).await;
        assert!(matches!(put, Err(StoreError::AuthFailed { .. })), "{put:?}");
    }
    assert!(reader.list("").await.unwrap().is_empty());
}
