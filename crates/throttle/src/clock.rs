//! Time sources: the real clock, two fake clocks for tests, and the bridge to governor's clock.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp, Zoned};
use tokio::sync::watch;

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

    /// The current wall-clock time as a point on the time line.
    fn now(&self) -> Timestamp {
        self.now_zoned().timestamp()
    }

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

    fn now(&self) -> Timestamp {
        Timestamp::now()
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

/// `start` moved on by `elapsed`, in `start`'s time zone.
fn wall_time(start: &Zoned, elapsed: Duration) -> Zoned {
    let elapsed = SignedDuration::try_from(elapsed).unwrap_or(SignedDuration::MAX);
    let ts = start
        .timestamp()
        .saturating_add(elapsed)
        .unwrap_or(Timestamp::MAX);
    ts.to_zoned(start.time_zone().clone())
}

impl Clock for FakeClock {
    fn now_instant(&self) -> Duration {
        self.elapsed()
    }

    fn now_zoned(&self) -> Zoned {
        wall_time(&self.start, self.elapsed())
    }

    fn sleep(&self, d: Duration) -> Sleep {
        self.advance(d);
        Box::pin(std::future::ready(()))
    }

    fn sleep_blocking(&self, d: Duration) {
        self.advance(d);
    }
}

/// A clock that moves only when [`ManualClock::advance`] is called; sleeping on it waits
/// until it has been advanced far enough.
///
/// Unlike [`FakeClock`], whose sleeps move time themselves, this one suits code with
/// background loops that sleep (a lease refreshed every few minutes): with `FakeClock` such a
/// loop would run the clock forward without end, while here it simply waits for the test to
/// move time. [`ManualClock::settled`] tells a test when every sleeper has reacted to a move,
/// so tests can interleave time and background work deterministically.
#[derive(Debug)]
pub struct ManualClock {
    start: Zoned,
    shared: Arc<ManualShared>,
}

#[derive(Debug)]
struct ManualShared {
    /// Time since `start`; sleeps wait on it.
    elapsed: watch::Sender<Duration>,
    /// Deadline (as elapsed time) of every sleep in progress, by ticket number.
    sleeps: Mutex<HashMap<u64, Duration>>,
    next_ticket: AtomicU64,
    /// Bumped whenever time moves or a sleep starts or ends, to wake [`ManualClock::settled`].
    changes: watch::Sender<u64>,
    /// Wakes blocking sleeps (with `blocking`) when time moves.
    moved: Condvar,
    blocking: Mutex<()>,
}

impl ManualShared {
    fn now(&self) -> Duration {
        *self.elapsed.borrow()
    }

    fn sleeps(&self) -> MutexGuard<'_, HashMap<u64, Duration>> {
        self.sleeps.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// A sleep in progress on a [`ManualClock`]; it stops counting when dropped.
struct Ticket {
    shared: Arc<ManualShared>,
    number: u64,
}

impl Ticket {
    fn new(shared: &Arc<ManualShared>, deadline: Duration) -> Ticket {
        let number = shared.next_ticket.fetch_add(1, Ordering::SeqCst);
        shared.sleeps().insert(number, deadline);
        shared.changed();
        Ticket {
            shared: shared.clone(),
            number,
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.shared.sleeps().remove(&self.number);
        self.shared.changed();
    }
}

impl ManualClock {
    /// A manual clock whose wall time starts at `start` (and keeps `start`'s time zone).
    pub fn new(start: Zoned) -> Arc<ManualClock> {
        Arc::new(ManualClock {
            start,
            shared: Arc::new(ManualShared {
                elapsed: watch::Sender::new(Duration::ZERO),
                sleeps: Mutex::new(HashMap::new()),
                next_ticket: AtomicU64::new(0),
                changes: watch::Sender::new(0),
                moved: Condvar::new(),
                blocking: Mutex::new(()),
            }),
        })
    }

    /// Moves the clock forward by `d`, waking every sleep that is then due.
    pub fn advance(&self, d: Duration) {
        self.shared
            .elapsed
            .send_modify(|e| *e = e.saturating_add(d));
        self.shared.changed();
        // Taking the lock orders this after any blocking sleeper's check of the time.
        let _guard = self
            .shared
            .blocking
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        self.shared.moved.notify_all();
    }

    /// How far the clock has moved since it was made.
    pub fn elapsed(&self) -> Duration {
        self.shared.now()
    }

    /// Sleeps in progress whose deadline is still ahead. A sleep that an
    /// [`advance`](ManualClock::advance) made due stops counting at once, and a sleep started
    /// afterwards counts again.
    pub fn sleepers(&self) -> usize {
        let now = self.shared.now();
        self.shared.sleeps().values().filter(|d| **d > now).count()
    }

    /// Waits until exactly `n` sleeps are waiting for a moment still ahead and none is due:
    /// after an `advance`, this is when every sleeper it woke has done its work and gone back
    /// to sleep (or ended), given that `n` of them are expected to be sleeping.
    pub async fn settled(&self, n: usize) {
        let mut changes = self.shared.changes.subscribe();
        let settled = |_: &u64| {
            let now = self.shared.now();
            let sleeps = self.shared.sleeps();
            sleeps.len() == n && sleeps.values().all(|d| *d > now)
        };
        // The sender lives in `self`, so this cannot fail.
        let _ = changes.wait_for(settled).await;
    }
}

impl Clock for ManualClock {
    fn now_instant(&self) -> Duration {
        self.elapsed()
    }

    fn now_zoned(&self) -> Zoned {
        wall_time(&self.start, self.elapsed())
    }

    fn sleep(&self, d: Duration) -> Sleep {
        let deadline = self.shared.now().saturating_add(d);
        let ticket = Ticket::new(&self.shared, deadline);
        let mut elapsed = self.shared.elapsed.subscribe();
        Box::pin(async move {
            let _ticket = ticket;
            // The sender lives as long as the ticket's `shared`, so this cannot fail.
            let _ = elapsed.wait_for(|e| *e >= deadline).await;
        })
    }

    fn sleep_blocking(&self, d: Duration) {
        let deadline = self.shared.now().saturating_add(d);
        let _ticket = Ticket::new(&self.shared, deadline);
        let mut guard = self
            .shared
            .blocking
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        while self.shared.now() < deadline {
            guard = self
                .shared
                .moved
                .wait(guard)
                .unwrap_or_else(|p| p.into_inner());
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn start() -> Zoned {
        "2030-03-04T05:06:07+01:00[Europe/Paris]"
            .parse()
            .expect("valid zoned time")
    }

    #[test]
    fn manual_wall_time_moves_only_when_advanced_and_keeps_its_zone() {
        let c = ManualClock::new(start());
        assert_eq!(c.now_zoned(), start());
        assert_eq!(c.now(), start().timestamp());
        c.advance(Duration::from_secs(90));
        assert_eq!(c.now(), start().timestamp() + SignedDuration::from_secs(90));
        assert_eq!(c.now_zoned().time_zone(), start().time_zone());
        assert_eq!(c.now_instant(), Duration::from_secs(90));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_manual_sleep_waits_until_the_clock_has_moved_far_enough() {
        let c = ManualClock::new(start());
        let sleep = c.sleep(Duration::from_secs(10));
        let task = tokio::spawn(sleep);
        c.settled(1).await;
        c.advance(Duration::from_secs(9));
        c.settled(1).await;
        assert_eq!(c.sleepers(), 1);
        assert!(!task.is_finished(), "9 s of 10 passed");
        c.advance(Duration::from_secs(1));
        task.await.expect("sleep task");
        c.settled(0).await;
        assert_eq!(c.sleepers(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sleeping_loop_runs_once_per_move_and_never_on_its_own() {
        let c = ManualClock::new(start());
        let runs = Arc::new(AtomicUsize::new(0));
        let task = {
            let (c, runs) = (c.clone(), runs.clone());
            tokio::spawn(async move {
                loop {
                    c.sleep(Duration::from_secs(60)).await;
                    runs.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        c.settled(1).await;
        for i in 1..=3 {
            c.advance(Duration::from_secs(60));
            c.settled(1).await;
            assert_eq!(runs.load(Ordering::SeqCst), i);
        }
        // One long move wakes it once, not once per minute it spans.
        c.advance(Duration::from_secs(3600));
        c.settled(1).await;
        assert_eq!(runs.load(Ordering::SeqCst), 4);
        assert_eq!(
            c.elapsed(),
            Duration::from_secs(3780),
            "the loop moved no time"
        );
        task.abort();
        let _ = task.await;
        c.settled(0).await;
    }

    #[test]
    fn a_blocking_manual_sleep_returns_once_advanced() {
        let c = ManualClock::new(start());
        let sleeper = {
            let c = c.clone();
            std::thread::spawn(move || c.sleep_blocking(Duration::from_secs(5)))
        };
        while c.sleepers() == 0 {
            std::thread::yield_now();
        }
        c.advance(Duration::from_secs(2));
        std::thread::sleep(Duration::from_millis(20));
        assert!(!sleeper.is_finished(), "2 s of 5 passed");
        c.advance(Duration::from_secs(3));
        sleeper.join().expect("sleeper thread");
        assert_eq!(c.sleepers(), 0);
    }
}
