//! [`Throttle`]: the shared byte-rate limiter that follows a [`Schedule`].

use std::fmt;
use std::future::Future;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::clock::{Clock, GovernorClock, SystemClock};
use crate::{Rate, Schedule, ThrottleError};

type Limiter = RateLimiter<NotKeyed, InMemoryState, GovernorClock, NoOpMiddleware<Nanos>>;

/// Re-read the wall clock at least this often, so that a wall-clock step (NTP, suspend, a
/// manual change) moves the schedule within a minute.
const RECHECK: Duration = Duration::from_secs(60);

/// `unlimited_until` value meaning "the schedule never throttles".
const ALWAYS: u64 = u64::MAX;

/// A byte-rate limiter following a work-hours [`Schedule`], shared by concurrent uploaders.
///
/// Cloning is cheap and every clone shares the same budget. See the crate documentation for
/// the accuracy contract and why it holds.
#[derive(Clone)]
pub struct Throttle {
    inner: Arc<Inner>,
}

struct Inner {
    clock: Arc<dyn Clock>,
    /// Monotonic nanoseconds before which the current rate is known to be unlimited, so that
    /// unlimited periods cost one atomic load; [`ALWAYS`] when the schedule never throttles.
    unlimited_until: AtomicU64,
    state: Mutex<State>,
    waits: Mutex<WaitLog>,
}

struct State {
    schedule: Schedule,
    rate: Rate,
    /// Monotonic time at which to re-read the schedule (its next boundary, or [`RECHECK`]).
    next_check: Duration,
    /// `None` while the rate is unlimited.
    bucket: Option<Bucket>,
}

/// One governor limiter for one rate, with the bytes it has paid for but not handed out.
struct Bucket {
    limiter: Limiter,
    cell: u64,
    piece_cells: NonZeroU32,
    credit: u64,
}

/// Wall time during which at least one caller was waiting, so that parallel uploaders waiting
/// together count once in the job report.
#[derive(Default)]
struct WaitLog {
    waiters: u32,
    since: Duration,
    total: Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stays consistent at every await-free step, so a panic elsewhere while
    // holding the lock leaves nothing half-updated worth refusing to read.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn nanos_u64(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX - 1)
}

impl Bucket {
    /// A drained limiter for `bytes_per_sec`: cells of ~1 KiB, a burst of 1/10 s.
    fn new(bytes_per_sec: u64, clock: &Arc<dyn Clock>) -> Bucket {
        let rate = bytes_per_sec.max(1);
        // Keep a cell ≥ 10 µs (nanosecond rounding ≤ 0.005%) and ≤ 1/20 s (credit bound).
        let cell = 1024u64.clamp(rate.div_ceil(100_000), (rate / 20).max(1));
        let period = (u128::from(cell) * 1_000_000_000 + u128::from(rate / 2)) / u128::from(rate);
        let period = Duration::from_nanos(u64::try_from(period).unwrap_or(u64::MAX).max(1));
        let burst = u32::try_from(rate / 10 / cell).unwrap_or(u32::MAX);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(burst);
        let limiter = RateLimiter::direct_with_clock(quota, GovernorClock(Arc::clone(clock)));
        // A fresh GCRA starts with a full bucket; starting empty is what keeps a rate change
        // (or the end of an unlimited period) from bursting.
        let _ = limiter.check_n(burst);
        let piece = NonZeroU32::new(burst.get() / 4).unwrap_or(NonZeroU32::MIN);
        Bucket {
            limiter,
            cell,
            piece_cells: piece,
            credit: 0,
        }
    }

    /// Hands out as much of `remaining` as the limiter allows now, reporting each grant; returns
    /// how long to wait before trying again, or `None` once everything is handed out.
    fn take(
        &mut self,
        now: Duration,
        remaining: &mut u64,
        granted: &mut dyn FnMut(u64),
    ) -> Option<Duration> {
        loop {
            let from_credit = self.credit.min(*remaining);
            if from_credit > 0 {
                self.credit -= from_credit;
                *remaining -= from_credit;
                granted(from_credit);
            }
            if *remaining == 0 {
                return None;
            }
            let want = u32::try_from(remaining.div_ceil(self.cell)).unwrap_or(u32::MAX);
            let cells =
                NonZeroU32::new(want.min(self.piece_cells.get())).unwrap_or(NonZeroU32::MIN);
            match self.limiter.check_n(cells) {
                Ok(Ok(())) => self.credit += u64::from(cells.get()) * self.cell,
                Ok(Err(not_until)) => {
                    let wait = not_until.wait_time_from(Nanos::from(now));
                    return Some(wait.max(Duration::from_nanos(1)));
                }
                // Cannot happen: pieces never exceed the burst. Shrink and retry if it does.
                Err(_) => self.piece_cells = NonZeroU32::MIN,
            }
        }
    }
}

impl Inner {
    /// Re-reads the schedule at the current wall time; swaps the limiter only if the rate moved.
    fn refresh(&self, st: &mut State, now: Duration) {
        let zoned = self.clock.now_zoned();
        let rate = st.schedule.rate_at(zoned.clone());
        let until_change = st.schedule.next_change_after(&zoned).duration_since(&zoned);
        let until_change = Duration::try_from(until_change).unwrap_or(Duration::ZERO);
        st.next_check = now + until_change.min(RECHECK);
        if rate != st.rate || (st.bucket.is_none() && !rate.is_unlimited()) {
            st.rate = rate;
            st.bucket = rate.bytes_per_sec().map(|r| Bucket::new(r, &self.clock));
        }
        let until = if st.schedule.is_unlimited() {
            ALWAYS
        } else if rate.is_unlimited() {
            nanos_u64(st.next_check)
        } else {
            0
        };
        self.unlimited_until.store(until, Ordering::SeqCst);
    }

    fn state(&self) -> MutexGuard<'_, State> {
        let mut st = lock(&self.state);
        let now = self.clock.now_instant();
        if now >= st.next_check {
            self.refresh(&mut st, now);
        }
        st
    }

    /// One attempt to hand out `remaining`; `Some(wait)` if the caller must sleep and retry.
    fn step(&self, remaining: &mut u64, granted: &mut dyn FnMut(u64)) -> Option<Duration> {
        let until = self.unlimited_until.load(Ordering::SeqCst);
        if until == ALWAYS || nanos_u64(self.clock.now_instant()) < until {
            granted(std::mem::take(remaining));
            return None;
        }
        let mut st = self.state();
        let now = self.clock.now_instant();
        let next_check = st.next_check;
        let Some(bucket) = st.bucket.as_mut() else {
            granted(std::mem::take(remaining));
            return None;
        };
        // Wake at the boundary rather than sleep through it on the old rate.
        let wait = bucket.take(now, remaining, granted)?;
        Some(wait.min(next_check.saturating_sub(now).max(Duration::from_nanos(1))))
    }

    fn begin_wait(&self) {
        let mut log = lock(&self.waits);
        if log.waiters == 0 {
            log.since = self.clock.now_instant();
        }
        log.waiters += 1;
    }

    fn end_wait(&self) {
        let mut log = lock(&self.waits);
        log.waiters = log.waiters.saturating_sub(1);
        if log.waiters == 0 {
            let since = log.since;
            log.total += self.clock.now_instant().saturating_sub(since);
        }
    }
}

/// Counts a sleep in the wait log, and stops counting even if the sleeping future is dropped.
struct WaitGuard<'a>(&'a Inner);

impl<'a> WaitGuard<'a> {
    fn new(inner: &'a Inner) -> WaitGuard<'a> {
        inner.begin_wait();
        WaitGuard(inner)
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.0.end_wait();
    }
}

impl Throttle {
    /// A throttle on the real clock (system local time unless the schedule names a zone).
    ///
    /// An unknown time-zone name falls back to local time; use [`Throttle::try_new`] or
    /// [`Schedule::validate`] to reject it instead.
    pub fn new(schedule: Schedule) -> Throttle {
        Throttle::with_clock(schedule, Arc::new(SystemClock::new()))
    }

    /// Like [`Throttle::new`], but fails if the schedule's time zone is unknown.
    pub fn try_new(schedule: Schedule) -> Result<Throttle, ThrottleError> {
        schedule.validate()?;
        Ok(Throttle::new(schedule))
    }

    /// A throttle on the given clock; tests pass a [`FakeClock`](crate::FakeClock).
    pub fn with_clock(schedule: Schedule, clock: Arc<dyn Clock>) -> Throttle {
        let inner = Inner {
            clock,
            unlimited_until: AtomicU64::new(0),
            state: Mutex::new(State {
                schedule,
                rate: Rate::Unlimited,
                next_check: Duration::ZERO,
                bucket: None,
            }),
            waits: Mutex::new(WaitLog::default()),
        };
        drop(inner.state());
        Throttle {
            inner: Arc::new(inner),
        }
    }

    /// A throttle that never waits.
    pub fn unlimited() -> Throttle {
        Throttle::new(Schedule::default())
    }

    /// Waits until `bytes` may be sent at the current rate.
    ///
    /// Large requests are handed out in pieces of about 1/40 s of the rate (at most 1/20 s), so
    /// they neither fail nor burst. Cancel-safe: dropping the future loses at most the pieces
    /// already paid for, and never lets anyone exceed the rate. Needs a tokio runtime when on
    /// the real clock.
    pub async fn acquire(&self, bytes: u64) {
        self.acquire_observed(bytes, &mut |_| {}).await;
    }

    /// [`Throttle::acquire`] as a `'static` future, for storing in a struct or spawning.
    pub fn acquire_owned(&self, bytes: u64) -> impl Future<Output = ()> + Send + 'static {
        let this = self.clone();
        async move { this.acquire(bytes).await }
    }

    /// `acquire`, reporting each piece as it is handed out (for the accuracy tests).
    pub(crate) async fn acquire_observed(&self, bytes: u64, granted: &mut (dyn FnMut(u64) + Send)) {
        let mut remaining = bytes;
        while let Some(wait) = self.inner.step(&mut remaining, granted) {
            let _counting = WaitGuard::new(&self.inner);
            self.inner.clock.sleep(wait).await;
        }
    }

    /// Blocking variant of [`Throttle::acquire`] for non-async threads (inside tokio, call it
    /// from `spawn_blocking`).
    pub fn acquire_blocking(&self, bytes: u64) {
        self.acquire_blocking_observed(bytes, &mut |_| {});
    }

    pub(crate) fn acquire_blocking_observed(&self, bytes: u64, granted: &mut dyn FnMut(u64)) {
        let mut remaining = bytes;
        while let Some(wait) = self.inner.step(&mut remaining, granted) {
            let _counting = WaitGuard::new(&self.inner);
            self.inner.clock.sleep_blocking(wait);
        }
    }

    /// Wall time during which at least one caller was waiting on this throttle (or any of its
    /// clones), for the job report. Parallel waiters count once.
    pub fn total_wait(&self) -> Duration {
        let log = lock(&self.inner.waits);
        let ongoing = if log.waiters > 0 {
            self.inner.clock.now_instant().saturating_sub(log.since)
        } else {
            Duration::ZERO
        };
        log.total + ongoing
    }

    /// Replaces the schedule. Takes effect at once; if the rate changes, the new limiter starts
    /// empty, so the change never bursts.
    pub fn set_schedule(&self, schedule: Schedule) {
        let mut st = lock(&self.inner.state);
        st.schedule = schedule;
        let now = self.inner.clock.now_instant();
        self.inner.refresh(&mut st, now);
    }

    /// The schedule in force.
    pub fn schedule(&self) -> Schedule {
        self.inner.state().schedule.clone()
    }

    /// The rate in force now.
    pub fn current_rate(&self) -> Rate {
        self.inner.state().rate
    }

    /// The largest write that is paced smoothly at the current rate (about 1/40 s of traffic,
    /// at most 1/20 s), or `u64::MAX` when unlimited. Writing in pieces of at most this size
    /// keeps the wire within the accuracy contract, not just the grants.
    pub fn piece_size(&self) -> u64 {
        match &self.inner.state().bucket {
            Some(b) => b.cell * u64::from(b.piece_cells.get()),
            None => u64::MAX,
        }
    }
}

impl fmt::Debug for Throttle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = lock(&self.inner.state);
        f.debug_struct("Throttle")
            .field("rate", &st.rate)
            .field("schedule", &st.schedule)
            .field("clock", &self.inner.clock)
            .finish_non_exhaustive()
    }
}
