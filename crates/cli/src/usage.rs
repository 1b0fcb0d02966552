//! Usage errors (exit 2): a value that does not parse, or a command given too little to act
//! on. Option values are checked by clap value parsers, so a bad `--work-rate` is reported
//! like an unknown option, before anything is opened; the parsers return the text unchanged
//! and the commands parse it again where they use it, so the config keeps what was typed.

use std::fmt;

use rbackup_engine::throttle::{Rate, WorkDays, WorkHours};

/// A usage error raised after parsing (e.g. `backup` with nothing to back up): exit 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Whether `err` is (or wraps) a usage error.
pub fn is_usage(err: &anyhow::Error) -> bool {
    err.chain().any(|c| c.is::<UsageError>())
}

fn check<E: fmt::Display>(s: &str, parsed: Result<impl Sized, E>) -> Result<String, String> {
    parsed.map(|_| s.to_string()).map_err(|e| e.to_string())
}

/// `--valid-for`, `--grace`: `48h`, `30m`, `2d`, `1h 30m`, or a bare number of hours.
pub fn duration(s: &str) -> Result<String, String> {
    check(s, crate::ui::parse_duration(s))
}

/// `--work-rate`, `--non-work-rate`.
pub fn rate(s: &str) -> Result<String, String> {
    check(s, s.parse::<Rate>())
}

/// `--work-days`, `--days`.
pub fn days(s: &str) -> Result<String, String> {
    check(s, s.parse::<WorkDays>())
}

/// `--work-hours`.
pub fn hours(s: &str) -> Result<String, String> {
    check(s, s.parse::<WorkHours>())
}

/// One `--at` time, `HH:MM`.
pub fn time(s: &str) -> Result<String, String> {
    check(s, crate::schedule::parse_time(s))
}

/// A job's name (`job add NAME`).
pub fn job_name(s: &str) -> Result<String, String> {
    check(s, crate::config::check_job_name(s))
}
