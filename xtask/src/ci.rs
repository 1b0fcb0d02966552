//! `cargo xtask ci`: every check the project has, in one command, fail-fast.
//!
//! Steps are plain functions run by [`Ci::step`], which prints a header, times the step and
//! records it for the summary, so adding a step is one line in [`run`].

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::util::{self, project_root, secs, which};

/// A Debian package and the command that shows it is installed.
#[derive(Debug, Clone, Copy)]
pub struct AptTool {
    /// Package name for `apt-get install`.
    pub package: &'static str,
    /// A command the package provides.
    pub command: &'static str,
}

/// An npm package installed globally, e.g. `azurite@3.35.0` providing `azurite`.
#[derive(Debug, Clone, Copy)]
pub struct NpmTool {
    /// `name@version` for `npm install -g`.
    pub spec: &'static str,
    /// The binary it puts on `PATH`.
    pub bin: &'static str,
}

/// A PyPI package, e.g. `moto[server]` providing the module `moto`.
#[derive(Debug, Clone, Copy)]
pub struct PipTool {
    /// Requirement for `pip install`.
    pub spec: &'static str,
    /// Module whose import shows it is installed.
    pub module: &'static str,
}

/// What the tests need beyond the Rust toolchain: `faketime` moves the clock for the
/// scheduled-job tests, e2fsprogs (`e4crypt`) and btrfs-progs build the loop-mounted file
/// systems of the file-type rules, exfatprogs and exfat-fuse a case-insensitive one (FUSE) for
/// restore's case probe, fuse3 (`fusermount3`) a user's `rbackup mount`, iproute2 (`ip`) the
/// network namespace of xtask's link-emulator test, Azurite and moto are the real Azure Blob
/// and S3 servers.
const APT_TOOLS: &[AptTool] = &[
    AptTool {
        package: "faketime",
        command: "faketime",
    },
    AptTool {
        package: "e2fsprogs",
        command: "e4crypt",
    },
    AptTool {
        package: "btrfs-progs",
        command: "mkfs.btrfs",
    },
    AptTool {
        package: "util-linux",
        command: "setpriv",
    },
    AptTool {
        package: "exfatprogs",
        command: "mkfs.exfat",
    },
    AptTool {
        package: "exfat-fuse",
        command: "mount.exfat-fuse",
    },
    AptTool {
        package: "fuse3",
        command: "fusermount3",
    },
    AptTool {
        package: "iproute2",
        command: "ip",
    },
];
const NPM_TOOLS: &[NpmTool] = &[NpmTool {
    spec: "azurite@3.35.0",
    bin: "azurite-blob",
}];
const PIP_TOOLS: &[PipTool] = &[PipTool {
    spec: "moto[server]",
    module: "moto",
}];

/// Where the gated tests record `RAN` / `SKIP` (see rbackup-testenv), relative to the root.
const GATED_LOG: &str = "target/ci-gated-tests.log";

static APT_UPDATED: AtomicBool = AtomicBool::new(false);

/// Options of `cargo xtask ci`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CiOptions {
    /// Do not install anything; only report what is missing.
    pub no_install: bool,
}

/// Runs every step; on the first failure prints the summary and fails naming the step.
pub fn run(opts: CiOptions) -> Result<()> {
    std::env::set_current_dir(project_root()).context("cannot enter the project root")?;
    let mut ci = Ci::default();
    let nextest = util::succeeds(Command::new("cargo").args(["nextest", "--version"]));
    let gated = project_root().join(GATED_LOG);
    // A fresh log per run; a missing one is fine.
    let _ = std::fs::remove_file(&gated);
    let result = (|| {
        ci.step("ensure tools", || ensure_tools(opts))?;
        ci.step("rustfmt", || cargo(&["fmt", "--all", "--", "--check"]))?;
        ci.step("clippy", || {
            cargo(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])
        })?;
        if nextest {
            ci.step("tests (nextest)", || {
                cargo_tests(&["nextest", "run", "--workspace", "--no-tests=warn"])
            })?;
            ci.step("doc tests", || {
                cargo_tests(&["test", "--workspace", "--doc"])
            })
        } else {
            eprintln!(
                "cargo-nextest is not installed; using cargo test (which also runs doc tests)"
            );
            ci.step("tests (cargo test)", || {
                cargo_tests(&["test", "--workspace"])
            })
        }
    })();
    ci.summary();
    print_gated(&gated);
    result
}

/// Records each step's outcome for the summary.
#[derive(Debug, Default)]
struct Ci {
    done: Vec<(String, Duration, bool)>,
    start: Option<Instant>,
}

impl Ci {
    fn step(&mut self, name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
        self.start.get_or_insert_with(Instant::now);
        eprintln!("\n==> [{}] {name}", self.done.len() + 1);
        let t = Instant::now();
        let result = f();
        let took = t.elapsed();
        self.done.push((name.to_string(), took, result.is_ok()));
        match result {
            Ok(()) => {
                eprintln!("<== {name}: ok in {}", secs(took));
                Ok(())
            }
            Err(e) => {
                eprintln!("<== {name}: FAILED after {}", secs(took));
                Err(e.context(format!("ci step `{name}` failed")))
            }
        }
    }

    fn summary(&self) {
        eprintln!("\nci summary:");
        for (name, took, ok) in &self.done {
            let mark = if *ok { "ok" } else { "FAILED" };
            eprintln!("  {name:<22} {mark:<7} {:>10}", secs(*took));
        }
        if let Some(start) = self.start {
            eprintln!("  {:<22} {:<7} {:>10}", "total", "", secs(start.elapsed()));
        }
    }
}

fn cargo(args: &[&str]) -> Result<()> {
    util::run(Command::new("cargo").args(args))
}

/// Runs tests with every gated test required (a missing tool fails it) and recording what
/// it ran to [`GATED_LOG`].
fn cargo_tests(args: &[&str]) -> Result<()> {
    util::run(
        Command::new("cargo")
            .args(args)
            .env(rbackup_testenv::REQUIRE_ALL, "1")
            .env(rbackup_testenv::LOG, project_root().join(GATED_LOG)),
    )
}

/// Prints what the gated tests recorded: which ran and with what (sorted, one line each).
fn print_gated(log: &std::path::Path) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines = gated_lines(&text);
    let ran = lines.iter().filter(|l| l.starts_with("RAN ")).count();
    eprintln!(
        "\ngated tests: {ran} ran, {} skipped (from {})",
        lines.len() - ran,
        log.display()
    );
    for line in lines {
        eprintln!("  {line}");
    }
}

/// The records of `text`, sorted, each once (a retried test records twice).
fn gated_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    lines.sort_unstable();
    lines.dedup();
    lines
}

fn ensure_tools(opts: CiOptions) -> Result<()> {
    for component in ["rustfmt", "clippy"] {
        let sub = if component == "rustfmt" {
            "fmt"
        } else {
            "clippy"
        };
        if !util::succeeds(Command::new("cargo").args([sub, "--version"])) {
            require_install(opts, component)?;
            util::run(Command::new("rustup").args(["component", "add", component]))?;
        }
    }
    ensure_apt(APT_TOOLS, opts)?;
    ensure_fuse_for_users(opts)?;
    for tool in NPM_TOOLS {
        ensure_npm_global(tool.spec, tool.bin, opts)?;
    }
    for tool in PIP_TOOLS {
        ensure_pip(tool.spec, tool.module, opts)?;
    }
    eprintln!("all tools present");
    Ok(())
}

/// `/dev/fuse` open to every user, as udev's default rule (`KERNEL=="fuse", MODE="0666"`)
/// leaves it on a Debian system: a container's devtmpfs without udev has it 0600, and then
/// only root can mount FUSE (`fusermount3` opens the device as the user), which the e2e test of
/// a user's `rbackup mount` needs.
fn ensure_fuse_for_users(opts: CiOptions) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dev = std::path::Path::new("/dev/fuse");
    let Ok(meta) = std::fs::metadata(dev) else {
        // The mount tests fail and say so.
        return Ok(());
    };
    if meta.permissions().mode() & 0o666 == 0o666 {
        return Ok(());
    }
    require_install(opts, "/dev/fuse open to users (mode 0666)")?;
    eprintln!("chmod 0666 /dev/fuse (udev's default, missing in this container)");
    std::fs::set_permissions(dev, std::fs::Permissions::from_mode(0o666))
        .context("cannot chmod 0666 /dev/fuse: run as root, or do it by hand")
}

fn require_install(opts: CiOptions, what: &str) -> Result<()> {
    if opts.no_install {
        bail!("{what} is missing and --no-install was given; install it and re-run");
    }
    Ok(())
}

/// Installs the Debian packages whose command is missing (`apt-get update` once, then
/// `apt-get install -y`). Needs root; otherwise fails with the command to run.
pub fn ensure_apt(tools: &[AptTool], opts: CiOptions) -> Result<()> {
    let missing: Vec<&str> = tools
        .iter()
        .filter(|t| which(t.command).is_none())
        .map(|t| t.package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    require_install(opts, &list)?;
    if !is_root() {
        bail!("missing Debian packages: {list}; run `sudo apt-get install -y {list}` and re-run");
    }
    // Package lists only need refreshing once per run, however many helpers ask for packages.
    if !APT_UPDATED.swap(true, Ordering::SeqCst) {
        util::run(Command::new("apt-get").arg("update"))?;
    }
    util::run(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn is_root() -> bool {
    util::capture(Command::new("id").arg("-u")).is_ok_and(|uid| uid.trim() == "0")
}

/// Installs `spec` (`name@version`) with `npm install -g` unless `bin` is already on `PATH`.
pub fn ensure_npm_global(spec: &str, bin: &str, opts: CiOptions) -> Result<()> {
    if which(bin).is_some() {
        return Ok(());
    }
    require_install(opts, spec)?;
    if which("npm").is_none() {
        bail!("`{bin}` is missing and so is npm; install Node.js (Debian: apt-get install npm)");
    }
    util::run(Command::new("npm").args(["install", "-g", spec]))?;
    if which(bin).is_none() {
        bail!("installed {spec} but `{bin}` is still not on PATH; check `npm prefix -g`");
    }
    Ok(())
}

/// Installs `spec` with pip unless `import module` already works in `python3`.
pub fn ensure_pip(spec: &str, module: &str, opts: CiOptions) -> Result<()> {
    let importable =
        || util::succeeds(Command::new("python3").args(["-c", &format!("import {module}")]));
    if importable() {
        return Ok(());
    }
    require_install(opts, spec)?;
    let pip = || {
        let mut c = Command::new("python3");
        c.args(["-m", "pip", "install", "--quiet", spec]);
        c
    };
    // Debian's system Python refuses pip installs (PEP 668) unless told otherwise; a CI box
    // is disposable, so retry with the override rather than set up a virtualenv.
    if util::run(&mut pip()).is_err() {
        util::run(pip().arg("--break-system-packages"))?;
    }
    if !importable() {
        bail!("installed {spec} but `import {module}` still fails in python3");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn present_tools_need_no_install() {
        let opts = CiOptions { no_install: true };
        ensure_apt(
            &[AptTool {
                package: "coreutils",
                command: "ls",
            }],
            opts,
        )
        .unwrap();
        ensure_npm_global("nonexistent@1.0.0", "sh", opts).unwrap();
        ensure_pip("nonexistent", "json", opts).unwrap();
    }

    #[test]
    fn missing_tools_are_reported_when_install_is_forbidden() {
        let opts = CiOptions { no_install: true };
        let apt = AptTool {
            package: "no-such-pkg",
            command: "no-such-command-xtask",
        };
        let err = ensure_apt(&[apt], opts).unwrap_err().to_string();
        assert!(err.contains("no-such-pkg"), "{err}");
        let err = ensure_pip("nope-pkg", "no_such_module_xtask", opts)
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope-pkg"), "{err}");
        assert!(ensure_npm_global("x@1", "no-such-bin-xtask", opts).is_err());
    }

    #[test]
    fn gated_records_are_sorted_once_each() {
        let text = "RAN b (moto)\nSKIP a: needs root\nRAN b (moto)\n\n";
        assert_eq!(gated_lines(text), ["RAN b (moto)", "SKIP a: needs root"]);
    }

    #[test]
    fn failing_step_is_named_and_stops() {
        let mut ci = Ci::default();
        ci.step("first", || Ok(())).unwrap();
        let err = ci.step("second", || bail!("boom")).unwrap_err();
        assert!(format!("{err:#}").contains("ci step `second` failed: boom"));
        assert_eq!(ci.done.len(), 2);
        assert!(ci.done[0].2 && !ci.done[1].2);
    }
}
