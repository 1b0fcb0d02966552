//! Byte-rate limiting with a work-hours schedule, for rbackup's uploads and restore reads.
//!
//! A [`Throttle`] is shared by every task that writes to the vault. Each caller asks for the
//! bytes it is about to send with [`Throttle::acquire`] (or reads through a
//! [`ThrottledReader`]); the throttle makes it wait so that the bytes handed out follow the rate
//! of the current [`Schedule`]: a work rate during work hours on work days, a non-work rate
//! otherwise, either of which may be [`Rate::Unlimited`]. The crate knows nothing of stores.
//!
//! # The key design choice: KiB cells and a burst of a tenth of a second
//!
//! The limiter is [`governor`]'s GCRA, which counts *cells* in a `u32` and spaces them
//! `replenish_1_per` nanoseconds apart. The obvious mapping, one cell per byte, breaks at the
//! rates backups run at: at 100 MiB/s a byte is worth 9.5 ns, so the integer nanosecond period
//! rounds to 9 or 10 ns, an error of about 5% (and at 1 GiB/s a byte is worth less than one
//! nanosecond, which governor clamps to 1 ns: a silent 7% loss). Coarser cells fix the
//! precision; the only cost is that requests are no longer whole numbers of cells.
//!
//! So a cell is 1 KiB (widened at very high rates so that a cell stays ≥ 10 µs, and narrowed at
//! very low rates so that one cell is ≤ 1/20 s of traffic), and its period is computed from the
//! rate with [`governor::Quota::with_period`]. The period is then ≥ 10 µs, so nanosecond rounding
//! costs ≤ 0.005%. Requests that are not whole cells are paid in whole cells and the remainder is
//! kept as *credit* for the next request, so nothing is lost or given away over time.
//!
//! The second half of the choice is the burst. A GCRA with a burst of `B` cells lets through at
//! most `B + w/T` cells in any window of length `w`, so a burst of 1/10 s of the rate bounds every
//! 1 s window to 1.1× the rate plus at most one cell of credit (≤ 1/20 s): ≤ 1.15×, inside the
//! promised 1.25×, and from the very first second. A larger burst would absorb more timer
//! lateness but break that bound; a smaller one would turn every late tokio wake-up into lost
//! throughput. Large requests are split into pieces of a quarter of the burst so that a wake-up
//! up to 3/40 s late still finds the bucket able to pay and the long-run average stays exact.
//!
//! When the rate changes (a work-hours boundary, or [`Throttle::set_schedule`]) a new limiter is
//! built and *drained* before use: a fresh GCRA would hand out a full burst, and one built
//! after a stretch of unlimited traffic would let that traffic be followed by a burst. Starting
//! empty costs at most 1/10 s of the new rate, twice a day.
//!
//! Unlimited periods never touch the limiter: a request costs one atomic load when the schedule
//! is unlimited throughout, plus one clock read when it has limited periods too.
//!
//! # Accuracy contract
//!
//! While demand exceeds the limit, every 5 s window averages within 5% of the limit, and no 1 s
//! window exceeds 1.25× the limit (from the first second on, since the limiter starts empty).
//! The fake-clock tests measure ≤ 1% and ≤ 1.10× at rates from 1 KB/s to 1.5 GiB/s, bursts
//! after idle periods included. A window that spans a rate change is held to the same bounds
//! against the integral of the limit, give or take the piece in flight on either side of the
//! change (≤ 1/20 s of the higher rate).
//!
//! These hold for the bytes *handed out* by `acquire`; a caller that sends one huge buffer after
//! a single `acquire` still puts it on the wire at once, so callers that want wire-level
//! smoothness write in pieces of at most [`Throttle::piece_size`] (as [`ThrottledReader`]
//! does), for example by streaming a request body in such chunks. rbackup's uploads do: the
//! store's `put_file_throttled` streams each cloud request body in such pieces, paying for each
//! before it goes to the socket, and copies into a local vault through a [`ThrottledReader`].

mod calendar;
mod clock;
mod limiter;
mod rate;
mod reader;
mod schedule;

#[cfg(test)]
mod tests;

pub use clock::{Clock, FakeClock, ManualClock, Sleep, SystemClock};
pub use limiter::Throttle;
pub use rate::Rate;
pub use reader::ThrottledReader;
pub use schedule::{Schedule, WorkDays, WorkHours};

/// What went wrong when parsing or validating throttle settings.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ThrottleError {
    /// A rate string was not understood.
    #[error(
        "invalid rate {input:?}: {reason}; write `unlimited`, a number of bytes per second \
         (`1000`), or a number with a unit: KiB, MiB, GiB, TiB (powers of 1024) or KB, MB, GB, \
         TB (powers of 1000), e.g. `512KiB` or `2MB`"
    )]
    InvalidRate {
        /// The text that was given.
        input: String,
        /// What was wrong with it.
        reason: String,
    },
    /// A work-days string was not understood.
    #[error(
        "invalid work days {input:?}: {reason}; write `daily`, `none`, `weekdays`, `weekends`, \
         or a comma-separated list of days and ranges such as `mon-fri` or `mon-wed,fri`"
    )]
    InvalidWorkDays {
        /// The text that was given.
        input: String,
        /// What was wrong with it.
        reason: String,
    },
    /// A work-hours string was not understood.
    #[error(
        "invalid work hours {input:?}: {reason}; write `HH:MM-HH:MM` in local time, e.g. \
         `09:00-18:00`, or `22:00-06:00` for hours that run past midnight"
    )]
    InvalidWorkHours {
        /// The text that was given.
        input: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The schedule names a time zone that the system time-zone database does not know.
    #[error(
        "unknown time zone {name:?}: use an IANA name such as `Europe/Paris`, or leave it unset \
         for the system's local time"
    )]
    UnknownTimeZone {
        /// The name that was given.
        name: String,
        /// The lookup error from jiff.
        #[source]
        source: jiff::Error,
    },
}
