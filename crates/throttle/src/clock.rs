//! Time sources: the real clock, a fake clock for tests, and the bridge to governor's clock.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp, Zoned};

/// A future returned by [`Clock::sleep`].
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Where a [`Throttle`](crate::Throttle) gets the time and how it waits.
///
/// One clock drives both governor's monotonic clock and the schedule's wall clock, so a fake
/// clock in tests moves both together.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Monotonic time since the clock's origin (never goes backwards).
    fn now_instant(&self) -> Duration;

    /// The current wall-clock time, in the clock's time zone.
    fn now_zoned(&self) -> Zoned;

    /// Waits `d` asynchronously.
    fn sleep(&self, d: Duration) -> Sleep;

    /// Waits `d`, blocking the calling thread.
    fn sleep_blocking(&self, d: Duration);
}

/// The real clock: `std::time::Instant`, the system's local time zone, tokio's timer.
///
/// [`Clock::sleep`] needs a tokio runtime with the time driver enabled.
#[derive(Debug, Clone)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose origin is now.
    pub fn new() -> SystemClock {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> SystemClock {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now_instant(&self) -> Duration {
        self.origin.elapsed()
    }

    fn now_zoned(&self) -> Zoned {
        Zoned::now()
    }

    fn sleep(&self, d: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(d))
    }

    fn sleep_blocking(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// A clock that only moves when told to, or when something sleeps on it.
///
/// Sleeping advances the clock by the sleep's length and returns at once, so a single task
/// driving a [`Throttle`](crate::Throttle) sees exactly the waits the throttle asked for. With
/// several tasks sleeping concurrently the clock advances by the sum of their sleeps, so use it
/// for one driver at a time.
#[derive(Debug)]
pub struct FakeClock {
    start: Zoned,
    elapsed_nanos: AtomicU64,
}

impl FakeClock {
    /// A fake clock whose wall time starts at `start` (and keeps `start`'s time zone).
    pub fn new(start: Zoned) -> Arc<FakeClock> {
        Arc::new(FakeClock {
            start,
            elapsed_nanos: AtomicU64::new(0),
        })
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.elapsed_nanos.fetch_add(nanos, Ordering::SeqCst);
    }

    /// How far the clock has moved since it was made.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.elapsed_nanos.load(Ordering::SeqCst))
    }
}

impl Clock for FakeClock {
    fn now_instant(&self) -> Duration {
        self.elapsed()
    }

    fn now_zoned(&self) -> Zoned {
        let elapsed = SignedDuration::try_from(self.elapsed()).unwrap_or(SignedDuration::MAX);
        let ts = self
            .start
            .timestamp()
            .saturating_add(elapsed)
            .unwrap_or(Timestamp::MAX);
        ts.to_zoned(self.start.time_zone().clone())
    }

    fn sleep(&self, d: Duration) -> Sleep {
        self.advance(d);
        Box::pin(std::future::ready(()))
    }

    fn sleep_blocking(&self, d: Duration) {
        self.advance(d);
    }
}

/// Adapts a [`Clock`] to governor's clock trait, with governor's own `Nanos` as the instant.
#[derive(Clone, Debug)]
pub(crate) struct GovernorClock(pub(crate) Arc<dyn Clock>);

impl governor::clock::Clock for GovernorClock {
    type Instant = governor::nanos::Nanos;

    fn now(&self) -> Self::Instant {
        self.0.now_instant().into()
    }
}
