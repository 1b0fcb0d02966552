//! Output: JSON or human text, progress bars on a terminal only, logging.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use rbackup_engine::Progress;
use serde::Serialize;

use crate::Cli;
use crate::config::default_config_path;

/// What every command needs to know about how it was called.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub json: bool,
    pub quiet: bool,
    pub config_path: PathBuf,
}

impl Ctx {
    pub fn new(cli: &Cli) -> anyhow::Result<Ctx> {
        Ok(Ctx {
            json: cli.json,
            quiet: cli.quiet,
            config_path: cli.config.clone().map_or_else(default_config_path, Ok)?,
        })
    }

    /// With --json, the value on stdout; otherwise the human text on stdout.
    pub fn output<T: Serialize>(
        &self,
        value: &T,
        human: impl FnOnce() -> String,
    ) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else {
            let text = human();
            if !text.is_empty() {
                println!("{text}");
            }
        }
        Ok(())
    }

    /// Notices for people: always on stderr, so stdout stays machine-readable.
    pub fn notice(&self, text: &str) {
        eprintln!("{text}");
    }

    /// A progress receiver: bars on a terminal unless quiet or JSON, else nothing.
    pub fn progress(&self, verb: &str) -> (Arc<dyn Progress>, Option<ProgressBar>) {
        if self.quiet || self.json || !std::io::stderr().is_terminal() {
            return (Arc::new(rbackup_engine::NoProgress), None);
        }
        let bar = ProgressBar::new(0);
        let style = ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(verb.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        (
            Arc::new(Bar {
                bar: bar.clone(),
                files: Default::default(),
                total_files: Default::default(),
            }),
            Some(bar),
        )
    }
}

/// The bar's message is `done/total files`, set on every file: setting it only stores the text,
/// and the bar redraws at its own tick (200 ms), so the count is exact without costing a
/// redraw per file.
struct Bar {
    bar: ProgressBar,
    files: AtomicU64,
    total_files: AtomicU64,
}

impl Bar {
    fn show_files(&self, done: u64) {
        let total = self.total_files.load(Ordering::Relaxed);
        self.bar.set_message(format!("{done}/{total} files"));
    }
}

impl Progress for Bar {
    fn total(&self, files: u64, bytes: u64) {
        self.bar.set_length(bytes);
        self.total_files.store(files, Ordering::Relaxed);
        self.show_files(self.files.load(Ordering::Relaxed));
    }
    fn bytes(&self, n: u64) {
        self.bar.inc(n);
    }
    fn file(&self, _path: &Path) {}
    fn file_done(&self) {
        self.show_files(self.files.fetch_add(1, Ordering::Relaxed) + 1);
    }
}

pub fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        _ => "debug",
    };
    // fuser (`mount`) warns of every FUSE operation left to the kernel's default and of an
    // unmount it finds already done: noise for a user, shown from -vv on.
    let fuser = if verbose >= 2 { "" } else { ",fuser=error" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RBACKUP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{level}{fuser}")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}

/// Parses `48h`, `30m`, `2d`, `90s`, `1h 30m` (humantime's syntax). A bare number is hours, as
/// the command line has always documented for `--valid-for` and `--grace`.
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let hours: u64 = s
            .parse()
            .map_err(|_| anyhow::anyhow!("bad duration {s:?}: the number is too large"))?;
        return hours
            .checked_mul(3600)
            .map(Duration::from_secs)
            .ok_or_else(|| anyhow::anyhow!("bad duration {s:?}: the number is too large"));
    }
    humantime::parse_duration(s)
        .map_err(|e| anyhow::anyhow!("bad duration {s:?} ({e}): use e.g. 48h, 30m, 2d, 1h 30m"))
}

/// A time for people: local time to the second (`2026-12-01 18:20:05`).
pub fn local_time(ts: jiff::Timestamp) -> String {
    ts.to_zoned(jiff::tz::TimeZone::system())
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// A time for programs: UTC, RFC 3339, always nine fractional digits.
pub fn utc_time(ts: jiff::Timestamp) -> String {
    let ns = ts.as_nanosecond();
    let nanos = ns.rem_euclid(1_000_000_000);
    let secs = ts.as_second() - i64::from(ts.subsec_nanosecond() < 0);
    let whole = jiff::Timestamp::from_second(secs).unwrap_or(ts);
    format!("{}.{nanos:09}Z", whole.strftime("%Y-%m-%dT%H:%M:%S"))
}

/// Nanoseconds since the epoch (a file's modification time) as a timestamp; out of range
/// (only a crafted tree) clamps to the nearest end.
pub fn from_ns(ns: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_nanosecond(i128::from(ns)).unwrap_or(if ns < 0 {
        jiff::Timestamp::MIN
    } else {
        jiff::Timestamp::MAX
    })
}

/// A recorded time (RFC 3339, UTC: a recovery point's, the job history's, an expiry) as
/// people read it, in local time to the second (`2026-12-01 19:27:23`); a text that does not
/// parse is shown as recorded, cut to 40 characters.
pub fn local_rfc3339(recorded: &str) -> String {
    recorded
        .parse()
        .map_or_else(|_| recorded.chars().take(40).collect(), local_time)
}

/// A recovery point's recorded time as [`utc_time`], or as recorded if it does not parse.
pub fn utc_rfc3339(recorded: &str) -> String {
    recorded
        .parse()
        .map_or_else(|_| recorded.to_string(), utc_time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_counter_moves_on_every_file_in_one_format() {
        let bar = Bar {
            bar: ProgressBar::hidden(),
            files: AtomicU64::new(0),
            total_files: AtomicU64::new(0),
        };
        bar.total(150, 1 << 20);
        assert_eq!(bar.bar.message(), "0/150 files");
        for n in 1..=70 {
            bar.file_done();
            assert_eq!(bar.bar.message(), format!("{n}/150 files"));
        }
    }

    #[test]
    fn times_are_shown_in_local_time_to_the_second() {
        // Under TZ=UTC (the tests' default here) local time is UTC; the zone itself is jiff's.
        let t = "2026-12-01T18:27:23.119262584Z";
        let shown = local_rfc3339(t);
        assert_eq!(shown.len(), "2026-12-01 18:27:23".len(), "{shown}");
        let zone = jiff::tz::TimeZone::system();
        let want = t.parse::<jiff::Timestamp>().unwrap().to_zoned(zone);
        assert_eq!(shown, want.strftime("%Y-%m-%d %H:%M:%S").to_string());
        assert!(!shown.contains('.') && !shown.ends_with('Z'), "{shown}");
        assert_eq!(local_rfc3339("not a time"), "not a time");
    }

    #[test]
    fn times_for_programs_keep_nanoseconds_in_utc() {
        assert_eq!(
            utc_time(from_ns(1_700_000_000_123_456_789)),
            "2023-11-14T22:13:20.123456789Z"
        );
        assert_eq!(
            utc_time(from_ns(1_700_000_000_000_000_000)),
            "2023-11-14T22:13:20.000000000Z"
        );
        assert_eq!(utc_time(from_ns(-1)), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(
            utc_rfc3339("2023-11-14T22:13:20.5Z"),
            "2023-11-14T22:13:20.500000000Z"
        );
        assert_eq!(utc_rfc3339("not a time"), "not a time");
        // Local time is to the second, whatever the zone.
        let local = local_time(from_ns(1_700_000_000_999_000_000));
        assert_eq!(local.len(), "2023-11-14 22:13:20".len());
        assert!(local.ends_with(":20"), "{local}");
    }

    #[test]
    fn durations_with_units_and_bare_hours() {
        let h = |n: u64| Duration::from_secs(n * 3600);
        assert_eq!(parse_duration("48h").unwrap(), h(48));
        assert_eq!(parse_duration("48").unwrap(), h(48));
        assert_eq!(parse_duration(" 2d ").unwrap(), h(48));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        for bad in ["", "h", "48 parsecs", "-1h", "99999999999999999999"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
