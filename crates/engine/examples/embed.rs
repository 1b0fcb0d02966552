//! Embedding the engine: create a vault in memory, register a machine, back up a folder,
//! restore it elsewhere and check that every byte came back.
//!
//! Run with `cargo run -p rbackup-engine --example embed`.

use std::error::Error;
use std::path::Path;
use std::time::Duration;

use rbackup_engine::crypto::{KdfParams, Passphrase};
use rbackup_engine::{
    BackupOptions, Rate, Registration, Repository, RestoreOptions, Schedule, Throttle, Unlock,
    Vault,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let work = tempfile::tempdir()?;
    let source = work.path().join("documents");
    std::fs::create_dir_all(source.join("letters"))?;
    std::fs::write(
        source.join("letters/hello.txt"),
        "Dear reader,\n".repeat(1000),
    )?;
    std::fs::write(source.join("notes.md"), "# Notes\n")?;

    // A vault: any URL rbackup understands; `memory://NAME` lives as long as the process.
    let url = "memory://embed-example";
    let store = rbackup_engine::store::open(url, &Default::default())?;
    let (vault, credentials) = Vault::create(store, url, Duration::from_secs(3600)).await?;

    // Register this machine; the passphrase wraps its master keys.
    let passphrase = Passphrase::generate();
    let (machine, _keys) = vault
        .register(
            &credentials,
            Registration {
                name: "example".into(),
                hostname: "example-host".into(),
                passphrase: &passphrase,
                kdf: KdfParams::default(),
                chunker: Default::default(),
            },
        )
        .await?;

    let cache = work.path().join("cache");
    let repo = Repository::open(
        &vault,
        &machine,
        Unlock::Passphrase(&passphrase),
        Some(&cache),
    )
    .await?;
    let mut opts = BackupOptions::new([&source]);
    opts.cache_dir = Some(cache.clone());
    // Uploads at 50 MiB/s during work hours (Monday to Friday, 09:00-17:00 local time), at full
    // speed otherwise; the throttle types come from the engine crate too.
    opts.throttle = Some(Throttle::new(Schedule {
        work_days: "mon-fri".parse()?,
        work_hours: "09:00-17:00".parse()?,
        work_rate: Rate::BytesPerSec(50 << 20),
        non_work_rate: Rate::Unlimited,
        tz: None,
    }));
    let report = repo.backup(opts).await?;
    println!(
        "backed up {} files ({} bytes) as recovery point {}",
        report.files_new,
        report.bytes_read,
        report.recovery_point.as_deref().unwrap_or("?")
    );

    let target = work.path().join("restored");
    let restored = repo
        .restore(RestoreOptions::new(
            "latest",
            &target,
            work.path().join("recovery"),
        ))
        .await?;
    println!("restored {} files", restored.files);
    let back = target.join(source.strip_prefix("/")?);
    for rel in ["letters/hello.txt", "notes.md"] {
        assert_eq!(
            std::fs::read(source.join(rel))?,
            std::fs::read(Path::new(&back).join(rel))?
        );
    }
    let check = repo.check(true).await?;
    println!(
        "check: {} errors, {} blobs verified",
        check.errors.len(),
        check.blobs_read
    );
    Ok(())
}
