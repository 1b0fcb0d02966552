//! A file that keeps changing while it is read is detected, re-read, and reported.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rbackup_engine::BackupOptions;

mod support;

#[tokio::test(flavor = "multi_thread")]
async fn a_file_written_during_the_backup_is_reported() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let busy = src.join("growing.log");
    std::fs::write(&busy, vec![b'x'; 8 << 20]).unwrap();
    std::fs::write(src.join("calm.txt"), b"calm").unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, busy) = (stop.clone(), busy.clone());
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new().append(true).open(busy).unwrap();
            while !stop.load(Ordering::Relaxed) {
                f.write_all(&[b'y'; 4096]).unwrap();
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(20));

    let env = support::env().await;
    let repo = &env.repo;
    let mut o = BackupOptions::new([&src]);
    o.cache_dir = Some(work.path().join("cache"));
    let rep = repo.backup(o).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();

    assert_eq!(rep.files_new, 2);
    assert!(
        rep.warnings
            .iter()
            .any(|w| w.contains("growing.log") && w.contains("changed while it was read")),
        "{:?}",
        rep.warnings
    );
    assert!(
        rep.has_warnings(),
        "a changing file makes the run finish with warnings"
    );
    // It was read more than once (re-read before giving up), so more than its size was read.
    assert!(
        rep.bytes_read > 2 * (8 << 20),
        "bytes_read {}",
        rep.bytes_read
    );
}
