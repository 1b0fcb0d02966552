//! Backup, restore and `check --read-data` on real cloud-storage servers: Azurite (Azure Blob)
//! and moto (S3), started on 127.0.0.1 by the harness shared with rbackup-store's tests.

#[path = "../../store/tests/servers/mod.rs"]
mod servers;
mod support;

use std::path::Path;

use rbackup_engine::crypto::Passphrase;
use rbackup_engine::store::StoreOptions;
use rbackup_engine::{BackupOptions, Repository, RestoreOptions, Unlock, Vault};
use servers::{Azurite, Moto};

fn make_source(root: &Path) {
    std::fs::create_dir_all(root.join("docs")).unwrap();
    let mut x = 0x1234_5678_9abc_def1u64;
    let noise: Vec<u8> = (0..(20 << 20))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(root.join("noise.bin"), noise).unwrap();
    for i in 0..50 {
        std::fs::write(
            root.join(format!("docs/{i}.txt")),
            format!("line {i}\n").repeat(500),
        )
        .unwrap();
    }
}

async fn round_trip(url: &str, options: StoreOptions) {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    make_source(&src);
    let store = rbackup_engine::store::open(url, &options).unwrap();
    let pass = Passphrase::new("cloud round trip passphrase").unwrap();
    let (vault, machine, _) = support::register(store, url, &pass).await;
    let cache = work.path().join("cache");
    let repo = Repository::open(&vault, &machine, Unlock::Passphrase(&pass), Some(&cache))
        .await
        .unwrap();
    let mut o = BackupOptions::new([&src]);
    o.cache_dir = Some(cache.clone());
    let rep = repo.backup(o.clone()).await.unwrap();
    assert_eq!(rep.files_new, 51);
    let again = repo.backup(o).await.unwrap();
    assert_eq!(again.files_unchanged, 51);

    // Another process on another machine: open the vault afresh, unlock with the passphrase.
    let store = rbackup_engine::store::open(url, &options).unwrap();
    let vault = Vault::open(store, url).await.unwrap();
    let repo = Repository::open(&vault, &machine, Unlock::Passphrase(&pass), None)
        .await
        .unwrap();
    let check = repo.check(true).await.unwrap();
    assert!(check.ok(), "{:?}", check.errors);
    assert!(check.blobs_read >= 52);
    let target = work.path().join("out");
    let r = repo
        .restore(RestoreOptions::new(
            "latest",
            &target,
            work.path().join("recovery"),
        ))
        .await
        .unwrap();
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    let back = target.join(src.strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::read(src.join("noise.bin")).unwrap(),
        std::fs::read(back.join("noise.bin")).unwrap()
    );
    for i in 0..50 {
        let rel = format!("docs/{i}.txt");
        assert_eq!(
            std::fs::read(src.join(&rel)).unwrap(),
            std::fs::read(back.join(&rel)).unwrap()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_restore_check_on_azurite() {
    let Some(az) = Azurite::start("backup_restore_check_on_azurite") else {
        return;
    };
    az.create_container("vault");
    // A small multipart threshold so that packs take the multipart path too.
    let options = az.options().with_multipart_threshold(4 << 20);
    round_trip("az://vault/office", options).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_restore_check_on_moto_s3() {
    let Some(moto) = Moto::start("backup_restore_check_on_moto_s3") else {
        return;
    };
    moto.create_bucket("vault");
    let options = moto.options().with_multipart_threshold(4 << 20);
    round_trip("s3://vault/office", options).await;
}
