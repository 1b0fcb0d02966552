//! The one real-time test: the fake clock proves the arithmetic, this proves the wiring
//! (tokio timers, threads, concurrent callers) on a real clock.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use super::{KIB, MIB, flat};
use crate::{Rate, Throttle};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clock_average_within_five_percent() {
    let rate = 2 * MIB;
    let throttle = Throttle::new(flat(Rate::BytesPerSec(rate)));
    let start = Instant::now();
    let stop = start + Duration::from_millis(2600);
    let log = Arc::new(Mutex::new(Vec::<(Duration, u64)>::new()));

    let mut tasks = Vec::new();
    for seed in 0..2u64 {
        let (throttle, log) = (throttle.clone(), Arc::clone(&log));
        tasks.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(seed);
            while Instant::now() < stop {
                let n = rng.random_range(1..=16 * KIB);
                throttle.acquire(n).await;
                log.lock().unwrap().push((start.elapsed(), n));
            }
        }));
    }
    let (t2, l2) = (throttle.clone(), Arc::clone(&log));
    let blocking = std::thread::spawn(move || {
        let mut rng = SmallRng::seed_from_u64(99);
        while Instant::now() < stop {
            let n = rng.random_range(1..=16 * KIB);
            t2.acquire_blocking(n);
            l2.lock().unwrap().push((start.elapsed(), n));
        }
    });
    for task in tasks {
        task.await.unwrap();
    }
    blocking.join().unwrap();

    // Measure between the first completion after 0.5 s and the last one before 2.5 s, so
    // the start (and each caller's last partial request) does not count.
    let log = log.lock().unwrap();
    let window: Vec<_> = log
        .iter()
        .filter(|(t, _)| (Duration::from_millis(500)..=Duration::from_millis(2500)).contains(t))
        .collect();
    let (first, last) = (window.first().unwrap().0, window.last().unwrap().0);
    let bytes: u64 = window.iter().skip(1).map(|&&(_, n)| n).sum();
    let achieved = bytes as f64 / (last - first).as_secs_f64();
    let deviation = achieved / rate as f64 - 1.0;
    eprintln!(
        "real clock: {achieved:.0} B/s against {rate} B/s ({:+.2}%), waited {:?}",
        deviation * 100.0,
        throttle.total_wait()
    );
    assert!(
        deviation.abs() <= 0.05,
        "achieved {achieved:.0} B/s, {:+.2}%",
        deviation * 100.0
    );
    // Three callers waited in parallel, but the report counts wall time once.
    let waited = throttle.total_wait();
    assert!(waited > Duration::from_secs(2), "waited {waited:?}");
    assert!(waited <= start.elapsed(), "waited {waited:?}");
}
