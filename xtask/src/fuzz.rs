//! `cargo xtask fuzz`: runs the libFuzzer targets in `fuzz/` for a bounded time each.
//!
//! Each corpus is seeded with valid objects from `rbackup_engine::fuzz_support::seeds` (and
//! `fuzz/seeds/<target>/` for the agent's own parsers), so the
//! fuzzer starts inside the formats rather than at random bytes. cargo-fuzz needs nightly-only
//! flags (sanitizers); `RUSTC_BOOTSTRAP=1` lets the one stable toolchain this project builds
//! with accept them. Targets are built with debug assertions, so an arithmetic overflow is a
//! finding too. A finding stops the run with the input's path: fix the code, then keep the
//! input under `fuzz/regressions/<target>/`, which `crates/engine/tests/parsers.rs` replays.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::util::{self, project_root};

/// Options of `cargo xtask fuzz`.
#[derive(Debug, clap::Args)]
pub struct FuzzArgs {
    /// Targets to run (default: all of them).
    targets: Vec<String>,
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    secs: u64,
}

/// One target's run, as the summary prints it.
#[derive(Debug)]
struct Outcome {
    target: String,
    secs: f64,
    execs: u64,
    corpus: usize,
}

/// The targets outside the engine (parsers of the agent itself), seeded from `fuzz/seeds/`.
const AGENT_TARGETS: &[&str] = &["agent_config"];

pub fn run(args: FuzzArgs) -> Result<()> {
    let known: Vec<&str> = rbackup_engine::fuzz_support::TARGETS
        .iter()
        .chain(AGENT_TARGETS)
        .copied()
        .collect();
    let targets: Vec<String> = if args.targets.is_empty() {
        known.iter().map(|t| t.to_string()).collect()
    } else {
        args.targets.clone()
    };
    if let Some(t) = targets.iter().find(|t| !known.contains(&t.as_str())) {
        bail!("no fuzz target {t}; the targets are {}", known.join(", "));
    }
    ensure_cargo_fuzz()?;
    let fuzz_dir = project_root().join("fuzz");
    let mut cmd = cargo_fuzz(&fuzz_dir);
    cmd.args(["build", "--debug-assertions"]);
    util::run(&mut cmd).context("building the fuzz targets")?;
    let mut outcomes = Vec::new();
    for target in &targets {
        outcomes.push(fuzz_one(&fuzz_dir, target, args.secs)?);
    }
    println!(
        "{:<22} {:>8} {:>12} {:>10} {:>8}",
        "target", "seconds", "executions", "per second", "corpus"
    );
    for o in &outcomes {
        let rate = o.execs as f64 / o.secs.max(0.001);
        println!(
            "{:<22} {:>8.0} {:>12} {:>10.0} {:>8}",
            o.target, o.secs, o.execs, rate, o.corpus
        );
    }
    println!("no findings");
    Ok(())
}

fn ensure_cargo_fuzz() -> Result<()> {
    if util::succeeds(Command::new("cargo").args(["fuzz", "--version"])) {
        return Ok(());
    }
    eprintln!("installing cargo-fuzz (once)");
    util::run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
}

fn cargo_fuzz(fuzz_dir: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg("fuzz")
        .current_dir(fuzz_dir.parent().unwrap_or(fuzz_dir));
    cmd.env("RUSTC_BOOTSTRAP", "1");
    cmd
}

fn fuzz_one(fuzz_dir: &Path, target: &str, secs: u64) -> Result<Outcome> {
    let corpus = fuzz_dir.join("corpus").join(target);
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    for (i, seed) in seeds(fuzz_dir, target)?.iter().enumerate() {
        let path = corpus.join(format!("seed-{i}"));
        std::fs::write(&path, seed).with_context(|| format!("writing {}", path.display()))?;
    }
    let log = fuzz_dir.join("artifacts").join(format!("{target}.log"));
    std::fs::create_dir_all(log.parent().unwrap_or(fuzz_dir))?;
    let mut cmd = cargo_fuzz(fuzz_dir);
    cmd.args(["run", "--debug-assertions", target])
        .arg(&corpus)
        .arg("--")
        .arg(format!("-max_total_time={secs}"))
        // One input may take this long before it counts as a hang.
        .arg("-timeout=10")
        // Every length is bounded; a blob's recorded plain length (at most 512 MiB) is the
        // largest single allocation an input can ask for.
        .arg("-rss_limit_mb=2048")
        .arg("-malloc_limit_mb=1024")
        .arg("-print_final_stats=1")
        .stderr(std::fs::File::create(&log)?);
    eprintln!("fuzzing {target} for {secs} s (log: {})", log.display());
    let started = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("running {}", util::show(&cmd)))?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    if !status.success() {
        let finding = text
            .lines()
            .filter(|l| l.contains("Test unit written to") || l.starts_with("SUMMARY"))
            .collect::<Vec<_>>()
            .join("\n");
        bail!(
            "fuzz target {target} found a problem ({status}); see {}\n{finding}",
            log.display()
        );
    }
    Ok(Outcome {
        target: target.into(),
        secs: started.elapsed().as_secs_f64(),
        execs: final_stat(&text, "stat::number_of_executed_units:").unwrap_or(0),
        corpus: std::fs::read_dir(&corpus)?.count(),
    })
}

/// The engine's seeds for its targets, and the files under `fuzz/seeds/<target>/`.
fn seeds(fuzz_dir: &Path, target: &str) -> Result<Vec<Vec<u8>>> {
    let mut seeds = rbackup_engine::fuzz_support::seeds(target);
    let dir = fuzz_dir.join("seeds").join(target);
    if dir.is_dir() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            seeds
                .push(std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?);
        }
    }
    Ok(seeds)
}

/// A number from libFuzzer's `-print_final_stats` lines (`stat::name: 123`).
fn final_stat(log: &str, name: &str) -> Option<u64> {
    log.lines()
        .rev()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::final_stat;

    #[test]
    fn reads_libfuzzers_final_stats() {
        let log =
            "#1000 DONE cov: 10\nstat::number_of_executed_units: 123456\nstat::peak_rss_mb: 80\n";
        assert_eq!(
            final_stat(log, "stat::number_of_executed_units:"),
            Some(123456)
        );
        assert_eq!(final_stat(log, "stat::peak_rss_mb:"), Some(80));
        assert_eq!(final_stat(log, "stat::missing:"), None);
    }
}
