//! Project automation in plain Rust, run as `cargo xtask <command>` (the alias lives in
//! `.cargo/config.toml`).
//!
//! Like rust-analyzer's xtask, everything that would otherwise be shell scripts is a Rust
//! program here, so it runs the same on every machine with only cargo installed, is checked
//! by the compiler and clippy, and has tests. `.ci/run` is the only shell left, and it only
//! calls `cargo xtask ci`.

mod bench;
mod bench_corpus;
mod bench_net;
mod bench_net_report;
mod bench_net_servers;
mod bench_peers;
mod bench_releases;
mod bench_report;
mod bench_small;
mod ci;
mod fuzz;
mod r#gen;
mod netem;
mod netem_forward;
mod util;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "rbackup project automation"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run every check CI runs: rustfmt, clippy, tests, doc tests (installs missing tools).
    Ci {
        /// Do not install missing tools; fail and say what is missing.
        #[arg(long)]
        no_install: bool,
    },
    /// Generate the deterministic benchmark corpus.
    GenTestdata {
        /// Output directory (created; must not already contain `mixed/` or `versions/`).
        #[arg(long)]
        out: PathBuf,
        /// Seed of the generator; the same seed gives byte-identical output.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Size of `mixed/`: bytes or human units (850MB, 64MiB, 1.5GB).
        #[arg(long, default_value = "850MB", value_parser = util::parse_size)]
        size: u64,
        /// Number of versions under `versions/`.
        #[arg(long, default_value_t = 5)]
        versions: u32,
    },
    /// Benchmark rbackup against restic, borg and rustic on the same corpus (with --network:
    /// against restic over an emulated WAN link to S3 and Azure servers).
    Bench(bench::BenchArgs),
    /// Run the libFuzzer targets in fuzz/ for a bounded time each (installs cargo-fuzz).
    Fuzz(fuzz::FuzzArgs),
}

fn main() -> ExitCode {
    // Printed by hand rather than returned from main: anyhow's Debug output would add a
    // backtrace whenever RUST_BACKTRACE is set, burying the one line that says what failed.
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Ci { no_install } => ci::run(ci::CiOptions { no_install }),
        Cmd::GenTestdata {
            out,
            seed,
            size,
            versions,
        } => {
            let opts = r#gen::GenOptions {
                seed,
                size,
                versions,
            };
            eprintln!(
                "generating corpus in {} (seed {seed}, size {size} B)",
                out.display()
            );
            let parts = r#gen::generate(&out, &opts)?;
            r#gen::print_summary(&parts);
            Ok(())
        }
        Cmd::Bench(args) => bench::run(args),
        Cmd::Fuzz(args) => fuzz::run(args),
    }
}
