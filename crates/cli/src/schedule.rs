//! When a scheduled job is due: pure functions of the job's times, its last successful run and
//! the current (local) time, so that every rule can be tested under any clock and time zone.
//!
//! The rule: a job is due when its latest scheduled time (the most recent slot at or before
//! now) is later than both its last successful run and the moment it was added. Comparing
//! against the *latest* slot only is what makes a missed run catch up once, not once per missed
//! slot: after a week switched off, one run covers all seven missed slots.
//!
//! Slots are local civil times. On a day when the clocks go forward, a time inside the gap
//! (02:30 in Europe/Berlin on the last Sunday of March) happens at the same distance after the
//! gap (03:30); on a day when they go back, a time inside the fold (02:30 on the last Sunday of
//! October) is its first occurrence only, so the job runs once that day, not twice. This is
//! jiff's "compatible" disambiguation, the one RFC 5545 (iCalendar) and cron-like tools use.

use anyhow::{Result, bail};
use jiff::civil::{Date, Time};
use jiff::{Timestamp, Zoned};
use rbackup_engine::throttle::WorkDays;

/// A job's schedule: local times of day on a set of week days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    times: Vec<Time>,
    days: WorkDays,
}

/// Parses `HH:MM` (00:00 to 23:59; a one-digit hour is accepted).
pub fn parse_time(s: &str) -> Result<Time> {
    let bad =
        || anyhow::anyhow!("bad time {s:?}: use HH:MM in 24-hour local time, e.g. 09:00 or 21:30");
    let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: i8 = h.parse().map_err(|_| bad())?;
    let m: i8 = m.parse().map_err(|_| bad())?;
    Time::new(h, m, 0, 0).map_err(|_| bad())
}

/// The canonical text of a time of day, `HH:MM`.
pub fn format_time(t: Time) -> String {
    format!("{:02}:{:02}", t.hour(), t.minute())
}

impl Schedule {
    /// A schedule from the config's text: `at` entries are `HH:MM` (each may hold several,
    /// comma-separated), `days` is `daily`, `mon-fri`, `sun,wed`, ...
    pub fn parse(at: &[String], days: &str) -> Result<Schedule> {
        let mut times = Vec::new();
        for item in at.iter().flat_map(|a| a.split(',')) {
            times.push(parse_time(item)?);
        }
        if times.is_empty() {
            bail!("a job needs at least one time: give --at HH:MM[,HH:MM...]");
        }
        times.sort();
        times.dedup();
        let days: WorkDays = days
            .parse()
            .map_err(|e| anyhow::anyhow!("{e} (for --days use daily, mon-fri, sun,wed, ...)"))?;
        if days.is_empty() {
            bail!("a job needs at least one day: use --days daily, mon-fri, sun,wed, ...");
        }
        Ok(Schedule { times, days })
    }

    /// The times of day, sorted, as `HH:MM`.
    pub fn times(&self) -> Vec<String> {
        self.times.iter().map(|&t| format_time(t)).collect()
    }

    /// The days in canonical form (`daily`, `mon-fri`, `wed,sun`).
    pub fn days(&self) -> String {
        self.days.to_string()
    }

    /// The minutes past the hour at which some slot starts (for the timer units).
    pub fn minutes(&self) -> impl Iterator<Item = i8> + '_ {
        self.times.iter().map(|t| t.minute())
    }

    /// The slots of one civil day, as instants in `now`'s time zone.
    fn slots_on(&self, date: Date, now: &Zoned) -> Vec<Zoned> {
        if !self.days.contains(date.weekday()) {
            return Vec::new();
        }
        let tz = now.time_zone();
        self.times
            .iter()
            .filter_map(|&t| tz.to_ambiguous_zoned(date.to_datetime(t)).compatible().ok())
            .collect()
    }

    /// The most recent scheduled time at or before `now`, in `now`'s time zone.
    ///
    /// Looks back eight days, enough to meet every week day once whatever `days` allows.
    pub fn latest_slot(&self, now: &Zoned) -> Option<Zoned> {
        let mut date = now.date();
        for _ in 0..=8 {
            let best = self
                .slots_on(date, now)
                .into_iter()
                .filter(|s| s.timestamp() <= now.timestamp())
                .max_by_key(Zoned::timestamp);
            if best.is_some() {
                return best;
            }
            date = date.yesterday().ok()?;
        }
        None
    }

    /// The first scheduled time after `now`, in `now`'s time zone.
    pub fn next_slot(&self, now: &Zoned) -> Option<Zoned> {
        let mut date = now.date();
        for _ in 0..=8 {
            let best = self
                .slots_on(date, now)
                .into_iter()
                .filter(|s| s.timestamp() > now.timestamp())
                .min_by_key(Zoned::timestamp);
            if best.is_some() {
                return best;
            }
            date = date.tomorrow().ok()?;
        }
        None
    }

    /// Whether a job with this schedule is due at `now`: its latest slot is later than its last
    /// successful run and than the moment it was added (so a job added at 10:00 with
    /// `--at 09:00` first runs tomorrow at 09:00, not at once).
    pub fn is_due(
        &self,
        last_success: Option<Timestamp>,
        created: Option<Timestamp>,
        now: &Zoned,
    ) -> bool {
        let Some(slot) = self.latest_slot(now) else {
            return false;
        };
        let slot = slot.timestamp();
        last_success.is_none_or(|t| slot > t) && created.is_none_or(|t| slot > t)
    }
}

/// A time for people: `Mon 2026-03-02 09:00 CET`, in local time.
pub fn local(z: &Zoned) -> String {
    z.strftime("%a %Y-%m-%d %H:%M %Z").to_string()
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
