//! Gating for tests that need something the machine may lack: root, a command such as
//! `faketime` or `mkfs.btrfs`, a loop or tmpfs mount, a file system feature, a server.
//!
//! A test asks with [`need_root`], [`need_command`] or the [`require!`] macro. When the need
//! is not met the test is *skipped*: it records `SKIP <test>: <what is missing> (<how to get
//! it>)` and returns. With `RBACKUP_REQUIRE_ALL=1` (which `cargo xtask ci` sets) a skip is a
//! failure instead: the test panics with the same text, so a CI run can never pass by skipping.
//! `RBACKUP_REQUIRE_SERVERS=1` is accepted as an older alias.
//!
//! A test that got what it needed holds the [`Ran`] guard from [`ran`]; when the test ends
//! without panicking the guard records `RAN <test> (<what it used>)`. Records go to stderr and,
//! when `RBACKUP_TEST_LOG` names a file, are appended to it, one line each — `cargo xtask ci`
//! prints that file as its summary of what ran.
//!
//! For the tests that gate on root, [`mount`] has the shared [`sh`] (run a command, fail with
//! its stderr) and [`LoopMount`] (a loop-mounted image or a tmpfs, unmounted on drop).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;

/// When `1`, every skip fails its test.
pub const REQUIRE_ALL: &str = "RBACKUP_REQUIRE_ALL";
/// Older name of [`REQUIRE_ALL`] (it used to cover only the cloud servers); same effect.
pub const REQUIRE_SERVERS: &str = "RBACKUP_REQUIRE_SERVERS";
/// A file to which `RAN` and `SKIP` records are appended.
pub const LOG: &str = "RBACKUP_TEST_LOG";

/// Whether skips are failures in this run.
pub fn required() -> bool {
    [REQUIRE_ALL, REQUIRE_SERVERS]
        .iter()
        .any(|var| std::env::var(var).is_ok_and(|v| v == "1"))
}

/// Skips `test` because `missing` is missing, or panics when [`required`]. `install` says how
/// to get it (a package to install, a privilege to run with).
pub fn skip(test: &str, missing: &str, install: &str) {
    match skip_outcome(required(), test, missing, install) {
        Ok(line) => record(&line),
        Err(message) => panic!("{message}"),
    }
}

/// The SKIP record to write, or (when skips are failures) the panic message.
fn skip_outcome(
    required: bool,
    test: &str,
    missing: &str,
    install: &str,
) -> Result<String, String> {
    if required {
        Err(format!(
            "{test} needs {missing}, and {REQUIRE_ALL}=1 forbids skipping: {install}"
        ))
    } else {
        Ok(format!("SKIP {test}: needs {missing} ({install})"))
    }
}

/// Skips `test` (see [`skip`]) unless `$result` is `Ok(v)`; evaluates to `v`. `$result` is a
/// `Result<T, E: Display>` whose error says what is missing.
#[macro_export]
macro_rules! require {
    ($test:expr, $result:expr, $install:expr) => {
        match $result {
            Ok(v) => v,
            Err(missing) => {
                $crate::skip($test, &missing.to_string(), $install);
                return;
            }
        }
    };
}

/// True when running as root; otherwise skips `test` (see [`skip`]) and returns false.
/// `why` says what root is needed for ("to mount a tmpfs").
#[must_use]
pub fn need_root(test: &str, why: &str) -> bool {
    if is_root() {
        return true;
    }
    skip(test, &format!("root {why}"), "run the tests as root");
    false
}

/// True when `command` is on `PATH`; otherwise skips `test` (see [`skip`]) and returns false.
/// `package` is the Debian package that provides it.
#[must_use]
pub fn need_command(test: &str, command: &str, package: &str) -> bool {
    if which(command).is_some() {
        return true;
    }
    skip(
        test,
        &format!("`{command}` on PATH"),
        &format!("apt-get install {package}"),
    );
    false
}

/// Whether the effective user is root.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The first executable `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Runs `test` of this test binary again as `nobody` through `setpriv`, for tests of
/// permission checks that root would bypass, and fails unless it passed there. Returns true
/// when it did so (the caller returns: the work was done in the child), false when not root
/// (the caller runs its body itself). Skips (see [`skip`]) as root without `setpriv`.
#[must_use]
pub fn rerun_as_nobody(test: &str) -> bool {
    if !is_root() {
        return false;
    }
    if !need_command(test, "setpriv", "util-linux") {
        return true;
    }
    let _ran = ran(test, "setpriv, as nobody");
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = std::process::Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(&exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env_remove(LOG)
        .output()
        .expect("run setpriv");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{test} as nobody ({}): {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

/// Records `RAN test (used)` when dropped outside a panic. Hold it for the whole test.
#[derive(Debug)]
#[must_use = "the record is written when the guard drops at the end of the test"]
pub struct Ran {
    line: String,
}

/// A guard that records that `test` ran, using `used` (e.g. "faketime", "Azurite", "root,
/// tmpfs"), if the test passes.
pub fn ran(test: &str, used: &str) -> Ran {
    Ran {
        line: format!("RAN {test} ({used})"),
    }
}

impl Drop for Ran {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            record(&self.line);
        }
    }
}

/// Writes one record to stderr (libtest captures the print macros of passing tests, but a
/// write to the stderr handle goes through) and appends it to the [`LOG`] file.
fn record(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
    let Some(path) = std::env::var_os(LOG) else {
        return;
    };
    // One write of a short line to an O_APPEND file: concurrent test processes do not
    // interleave within a line.
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot open {LOG}={}: {e}", PathBuf::from(&path).display()));
    file.write_all(format!("{line}\n").as_bytes())
        .unwrap_or_else(|e| panic!("cannot write {LOG}: {e}"));
}

/// One line per object beneath `root` (itself included), sorted: path, mode, owner, mtime and
/// the BLAKE3 of a file's content or a symlink's target. The attack tests compare a decoy
/// folder's listing before and after: any name, kind, mode, owner, time or byte that changed
/// shows up.
pub fn listing(root: &std::path::Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.expect("walk the listed folder");
        let m = e.path().symlink_metadata().expect("stat a listed object");
        let content = if m.is_file() {
            let bytes = std::fs::read(e.path()).expect("read a listed file");
            blake3::hash(&bytes).to_hex().to_string()
        } else if m.file_type().is_symlink() {
            let target = std::fs::read_link(e.path()).expect("read a listed symlink");
            target.display().to_string()
        } else {
            String::new()
        };
        out.push(format!(
            "{} {:o} {}:{} {}.{} {content}",
            e.path().strip_prefix(root).unwrap_or(e.path()).display(),
            m.mode(),
            m.uid(),
            m.gid(),
            m.mtime(),
            m.mtime_nsec(),
        ));
    }
    out
}

pub mod http;
pub mod mount;
#[cfg(feature = "mutate")]
pub mod mutate;

pub use mount::{LoopMount, sh};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skip_is_a_record_or_a_failure() {
        let line = skip_outcome(false, "t", "`faketime` on PATH", "apt-get install faketime");
        assert_eq!(
            line.unwrap(),
            "SKIP t: needs `faketime` on PATH (apt-get install faketime)"
        );
        let err = skip_outcome(true, "t", "root to mount", "run the tests as root").unwrap_err();
        assert!(
            err.contains("t needs root to mount") && err.contains(REQUIRE_ALL),
            "{err}"
        );
        assert!(err.ends_with("run the tests as root"), "{err}");
    }

    #[test]
    fn which_finds_sh_and_not_nonsense() {
        assert!(which("sh").is_some());
        assert!(which("no-such-command-rbackup-testenv").is_none());
    }
}
