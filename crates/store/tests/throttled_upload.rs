//! Throttled uploads measured on the wire: packs go to moto through the counting proxy, which
//! logs each chunk of request body as it arrives, and the log is cut into 1-second windows.
//!
//! The bound is the throttle crate's accuracy contract: no 1 s window above 1.25× the rate
//! (after the first second) and an average within 5%. A second test uploads the same packs
//! the way the engine once did (the whole pack acquired, then sent at line speed) and checks
//! that the same measurement sees the burst, so the first test cannot pass by measuring
//! nothing.

mod servers;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rbackup_store::{CloudStore, PutMode, Store, VaultUrl};
use rbackup_throttle::{Rate, Schedule, Throttle};
use servers::Moto;
use servers::proxy::CountingProxy;

const BUCKET: &str = "paced";
const MIB: usize = 1024 * 1024;
/// The set rate. The packs below take ~4 s at it.
const RATE: usize = 3 * MIB;
/// One pack sent in a single request and one in parts (above the 4 MiB threshold set below:
/// an 8 MiB part and a 1 MiB one), each larger than one second's worth of the rate.
const PACKS: [usize; 2] = [3 * MIB + 1234, 9 * MIB + 4321];

/// How the packs are paced.
#[derive(Debug, Clone, Copy)]
enum Pacing {
    /// `put_file_throttled`: the bytes are paced as they are sent.
    OnTheWire,
    /// The whole pack acquired from the throttle, then `put_file` at line speed.
    PerPack,
}

/// Uploads [`PACKS`] concurrently (as the engine's two uploaders do) through a proxy and
/// returns the proxy's log of body chunks. `None` when moto is not installed.
async fn upload_through_proxy(test: &str, pacing: Pacing) -> Option<Vec<(Instant, usize)>> {
    let moto = Moto::start(test)?;
    moto.create_bucket(BUCKET);
    let proxy = CountingProxy::start("agent", "pw");
    let options = moto
        .options()
        .with_proxy(proxy.url("agent", "pw"))
        .with_multipart_threshold(4 * MIB as u64);
    let url = VaultUrl::parse(&format!("s3://{BUCKET}/vault")).unwrap();
    let store = CloudStore::open(&url, &options).unwrap();
    // The bucket check before any paced traffic, so that it is not part of the measurement.
    store.list("").await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let files: Vec<(String, PathBuf)> = PACKS
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let path = dir.path().join(format!("pack{i}"));
            let data: Vec<u8> = (0..size).map(|b| (b * 31 + i) as u8).collect();
            std::fs::write(&path, data).unwrap();
            (format!("packs/{i}"), path)
        })
        .collect();
    let rate = Rate::BytesPerSec(RATE as u64);
    let throttle = Throttle::new(Schedule {
        work_rate: rate,
        non_work_rate: rate,
        ..Schedule::default()
    });
    let uploads = files
        .iter()
        .map(|(key, path)| upload(&store, key, path, &throttle, pacing));
    futures::future::try_join_all(uploads).await.unwrap();
    for ((key, _), size) in files.iter().zip(PACKS) {
        assert_eq!(store.head(key).await.unwrap().size, size as u64, "{key}");
    }
    Some(proxy.uploaded())
}

async fn upload(
    store: &CloudStore,
    key: &str,
    path: &Path,
    throttle: &Throttle,
    pacing: Pacing,
) -> Result<(), rbackup_store::StoreError> {
    match pacing {
        Pacing::OnTheWire => {
            store
                .put_file_throttled(key, path, PutMode::Create, throttle)
                .await
        }
        Pacing::PerPack => {
            let size = std::fs::metadata(path).unwrap().len();
            throttle.acquire(size).await;
            store.put_file(key, path, PutMode::Create).await
        }
    }
}

/// What the 1 s windows of a log show, as multiples of [`RATE`].
#[derive(Debug)]
struct Windows {
    /// The fullest 1 s window that starts at least 1 s after the first byte.
    max: f64,
    /// All bytes over the time from the first to the last.
    average: f64,
    count: usize,
}

/// Slides a 1 s window in 50 ms steps from 1 s after the first byte to the last byte.
fn windows(log: &[(Instant, usize)]) -> Windows {
    let (first, last) = (log[0].0, log[log.len() - 1].0);
    let total: usize = log.iter().map(|&(_, n)| n).sum();
    let span = last - first;
    let second = Duration::from_secs(1);
    assert!(span > 2 * second, "the upload took only {span:?}");
    let mut starts: Vec<Instant> = (0..)
        .map(|i| first + second + Duration::from_millis(50 * i))
        .take_while(|&s| s + second <= last)
        .collect();
    starts.push(last - second);
    // Closed windows, so that the one ending at the last chunk includes it.
    let in_window = |s: Instant| -> usize {
        log.iter()
            .filter(|&&(at, _)| at >= s && at <= s + second)
            .map(|&(_, n)| n)
            .sum()
    };
    let max = starts.iter().map(|&s| in_window(s)).max().unwrap_or(0);
    Windows {
        max: max as f64 / RATE as f64,
        average: total as f64 / span.as_secs_f64() / RATE as f64,
        count: starts.len(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_uploads_are_paced_on_the_wire() {
    let test = "throttled_uploads_are_paced_on_the_wire";
    let Some(log) = upload_through_proxy(test, Pacing::OnTheWire).await else {
        return;
    };
    let total: usize = log.iter().map(|&(_, n)| n).sum();
    assert!(total >= PACKS.iter().sum(), "the proxy saw {total} bytes");
    let w = windows(&log);
    eprintln!(
        "paced on the wire, {} windows at {} MiB/s: {w:?}",
        w.count,
        RATE / MIB
    );
    assert!(w.max <= 1.25, "a 1 s window carried {:.2}× the rate", w.max);
    assert!(
        (w.average - 1.0).abs() <= 0.05,
        "the upload averaged {:.3}× the rate",
        w.average
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_pack_pacing_bursts_past_the_bound() {
    let test = "per_pack_pacing_bursts_past_the_bound";
    let Some(log) = upload_through_proxy(test, Pacing::PerPack).await else {
        return;
    };
    let w = windows(&log);
    eprintln!(
        "paced per pack, {} windows at {} MiB/s: {w:?}",
        w.count,
        RATE / MIB
    );
    assert!(
        w.max > 1.25,
        "per-pack pacing stayed within {:.2}× the rate: the measurement cannot see bursts",
        w.max
    );
}
