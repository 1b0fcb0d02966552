//! Small helpers shared by the commands: where the project is, running programs, sizes.

use std::env;
use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The workspace root: xtask lives one level below it, so this works from any cwd.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Finds `name` on `PATH`, as `which` would.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Renders a command the way a user would type it, for logs and error messages.
pub fn show(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(quote));
    parts.join(" ")
}

/// `arg` as a POSIX shell would need it (for display: an argument shlex cannot quote, one with
/// a NUL byte, is shown as it is).
fn quote(arg: &OsStr) -> String {
    let s = arg.to_string_lossy();
    shlex::try_quote(&s).map_or_else(|_| s.to_string(), |q| q.into_owned())
}

/// Runs a command with inherited stdio and fails, naming the command, unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {}", show(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{}`", show(cmd)))?;
    if !status.success() {
        bail!("`{}` failed with {status}", show(cmd));
    }
    Ok(())
}

/// Runs a command quietly and reports whether it exited 0 (false if it could not start).
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Runs a command and returns its stdout as text; fails with its stderr if it does not exit 0.
pub fn capture(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{}`", show(cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed with {}:\n{}",
            show(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What one measured child process did.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Wall-clock time from spawn to reaping.
    pub wall: Duration,
    /// Peak resident set of the command (as GNU time's `%M`), in KiB.
    pub max_rss_kib: u64,
    /// Exit code, or `None` if killed by a signal.
    pub code: Option<i32>,
    /// Where its stdout went.
    pub stdout: PathBuf,
    /// Where its stderr went.
    pub stderr: PathBuf,
}

impl Measured {
    /// The last lines of the child's stderr, for error messages.
    pub fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// GNU time, which the bench uses to measure each child's peak RSS.
pub const GNU_TIME: &str = "/usr/bin/time";

/// Runs `cmd` under GNU time with stdout and stderr sent to `<log>.out` / `<log>.err`, and
/// measures its wall time and peak RSS.
///
/// Why not `wait4` on our own child: `std::process::Command` spawns with `vfork`, and Linux
/// charges the parent's high-water RSS to the child's `ru_maxrss` when the child execs, so
/// every tool would appear to use at least what xtask once used (hundreds of MB after
/// generating a corpus). GNU time `fork`s from a 1 MB process and reports its child only.
/// Output goes to files rather than pipes so that a failed run can be inspected afterwards.
pub fn run_measured(cmd: &Command, log: &Path) -> Result<Measured> {
    let stdout = log.with_extension("out");
    let stderr = log.with_extension("err");
    let rss = log.with_extension("rss");
    let mut wrapped = Command::new(GNU_TIME);
    wrapped
        .args(["-f", "%M", "-o"])
        .arg(&rss)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => wrapped.env(key, v),
            None => wrapped.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped
        .stdin(Stdio::null())
        .stdout(File::create(&stdout).with_context(|| format!("creating {}", stdout.display()))?)
        .stderr(File::create(&stderr).with_context(|| format!("creating {}", stderr.display()))?);
    let start = Instant::now();
    let status = wrapped
        .status()
        .with_context(|| format!("could not start `{}`", show(&wrapped)))?;
    let wall = start.elapsed();
    // GNU time writes "Command exited with non-zero status N" (or "terminated by signal")
    // before the format line, so the figure is the last line.
    let report = std::fs::read_to_string(&rss).unwrap_or_default();
    let max_rss_kib = report
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .with_context(|| {
            format!(
                "{GNU_TIME} wrote no peak RSS for `{}`: {report:?}",
                show(cmd)
            )
        })?;
    let code = if report.contains("terminated by signal") {
        None
    } else {
        status.code()
    };
    Ok(Measured {
        wall,
        max_rss_kib,
        code,
        stdout,
        stderr,
    })
}

/// Parses a size such as `850MB`, `1.5G`, `64MiB`, `2 kib` or `4096` (bytes): k, M, G, T are
/// decimal, KiB, MiB, GiB, TiB binary, case-insensitive (bytesize's syntax).
pub fn parse_size(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|e| format!("`{text}` is not a size ({e}); write e.g. 850MB, 64MiB or 1048576"))
}

/// Formats a byte count for people, in decimal units: `849.7 MB`.
pub fn human_bytes(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).display().si().to_string()
}

/// Formats a duration as seconds with millisecond precision.
pub fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_size_units() {
        assert_eq!(parse_size("850MB"), Ok(850_000_000));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1.5G"), Ok(1_500_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("2 kib"), Ok(2048));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("12 parsecs").is_err());
    }

    #[test]
    fn human_bytes_in_decimal_units() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(849_700_000), "849.7 MB");
        assert_eq!(human_bytes(1_500_000_000), "1.5 GB");
    }

    #[test]
    fn measured_child_reports_exit_code_and_its_own_rss() {
        let dir = tempfile::tempdir().unwrap();
        // `tail -c` keeps the last 64 MiB in memory: that must show up as the child's peak.
        let script = "head -c 67108864 /dev/zero | tail -c 67108864 > /dev/null; exit 7";
        let m = run_measured(
            Command::new("sh").args(["-c", script]),
            &dir.path().join("big"),
        )
        .unwrap();
        assert_eq!(m.code, Some(7));
        assert!(m.max_rss_kib > 48 * 1024, "rss {} KiB", m.max_rss_kib);

        // Memory the parent holds (xtask after generating a corpus) must not be charged to
        // the child, as it would be with vfork + wait4.
        let held = vec![1u8; 200 << 20];
        std::hint::black_box(&held);
        let m = run_measured(&Command::new("true"), &dir.path().join("small")).unwrap();
        assert_eq!(m.code, Some(0));
        assert!(m.max_rss_kib < 20 * 1024, "rss {} KiB", m.max_rss_kib);
        drop(held);
    }

    #[test]
    fn quoting_is_shell_safe() {
        let args = ["plain", "two words", "it's", "$HOME `x`"];
        let mut cmd = Command::new("printf");
        cmd.arg("[%s]").args(args);
        // The echoed line, run by a real shell, must give back exactly the arguments.
        let out = Command::new("sh")
            .args(["-c", &show(&cmd)])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "[plain][two words][it's][$HOME `x`]"
        );
    }
}
