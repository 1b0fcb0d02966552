//! Output: JSON or human text, progress bars on a terminal only, logging.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
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
            }),
            Some(bar),
        )
    }
}

struct Bar {
    bar: ProgressBar,
    files: std::sync::atomic::AtomicU64,
}

impl Progress for Bar {
    fn total(&self, files: u64, bytes: u64) {
        self.bar.set_length(bytes);
        self.bar.set_message(format!("0/{files} files"));
    }
    fn bytes(&self, n: u64) {
        self.bar.inc(n);
    }
    fn file(&self, _path: &Path) {}
    fn file_done(&self) {
        let n = self
            .files
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if n.is_multiple_of(64) {
            self.bar.set_message(format!("{n} files"));
        }
    }
}

pub fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RBACKUP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
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

#[cfg(test)]
mod tests {
    use super::*;

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
