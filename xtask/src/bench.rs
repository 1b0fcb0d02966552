//! `cargo xtask bench`: rbackup against restic, borg and rustic, same corpus, same run.
//!
//! Every tool goes through the same scenario on a warm page cache: first backup of `mixed/`,
//! an unchanged re-run, a restore that must be byte-identical to the source, the generator's
//! successive versions of a source tree backed up as one evolving folder, the same for real
//! releases of a public project (`bench_releases`), and a first backup and re-run of many
//! tiny files (`bench_small`). Comparing against
//! peers measured in the same run (rather than against remembered numbers) is what makes the
//! ratios meaningful on a shared 2-core machine whose speed varies from hour to hour.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bench_corpus::{Corpus, Manifest, prepare_corpus, sync_tree};
use crate::bench_net;
use crate::bench_peers::{Kind, Repo, Tool, size_on_disk};
use crate::bench_report::{Figures, Outcome, ToolRun, print_table, to_json};
use crate::ci::{self, AptTool, CiOptions};
use crate::r#gen::GenOptions;
use crate::util::{self, human_bytes, project_root, secs};

/// Options of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Size of the mixed corpus (default 850MB; 64MB with --quick).
    #[arg(long, value_parser = util::parse_size)]
    size: Option<u64>,
    /// Versions of the evolving source tree (default 5; 3 with --quick).
    #[arg(long, conflicts_with = "network")]
    versions: Option<u32>,
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Work dir for the corpus, repositories and restores (default target/bench).
    #[arg(long)]
    work: Option<PathBuf>,
    /// Where to write the results as JSON (default WORK/bench.json, with --network
    /// WORK/bench-network.json).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Measure rbackup only.
    #[arg(long)]
    skip_peers: bool,
    /// Measure the peers only (while rbackup cannot run yet).
    #[arg(long)]
    skip_rbackup: bool,
    /// Use this rbackup binary instead of building one with `cargo build --release`.
    #[arg(long)]
    rbackup_bin: Option<PathBuf>,
    /// Real releases to back up as versions of one tree, `NAME==V1,V2,...` from PyPI, or
    /// `none`.
    #[arg(long, default_value = crate::bench_releases::DEFAULT_SPEC)]
    releases: String,
    /// Number of tiny files to back up (default 1,000,000; 20,000 with --quick; 0: none).
    #[arg(long)]
    small_files: Option<u64>,
    /// A short run: --size 64MB --versions 3 --small-files 20000 unless given.
    #[arg(long)]
    quick: bool,
    #[command(flatten)]
    net: bench_net::NetArgs,
}

/// Runs the bench and fails if any tool failed or a restore differed from its source.
pub fn run(args: BenchArgs) -> Result<()> {
    if args.net.network {
        let default = if args.quick {
            64_000_000
        } else {
            bench_net::DEFAULT_SIZE
        };
        let common = bench_net::Common {
            size: args.size.unwrap_or(default),
            seed: args.seed,
            work: args.work.clone(),
            json: args.json.clone(),
            skip_peers: args.skip_peers,
            skip_rbackup: args.skip_rbackup,
            rbackup_bin: args.rbackup_bin.clone(),
        };
        return bench_net::run(&args.net, common);
    }
    let root = project_root();
    let work = args
        .work
        .clone()
        .unwrap_or_else(|| root.join("target/bench"));
    let work = absolute(&work)?;
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    // Peak memory is measured with GNU time (see util::run_measured).
    let time = AptTool {
        package: "time",
        command: "time",
    };
    ci::ensure_apt(&[time], CiOptions::default())?;

    let (tools, mut runs) = find_tools(&args, &root);
    let mut corpus = prepare_corpus(&work, args.gen_options())?;
    if args.releases != "none" {
        corpus.releases = Some(crate::bench_releases::prepare(&work, &args.releases)?);
    }
    let small = args
        .small_files
        .unwrap_or(if args.quick { 20_000 } else { 1_000_000 });
    if small > 0 {
        corpus.small = Some(crate::bench_small::prepare(&work, small, args.seed)?);
    }
    for tool in &tools {
        runs.push(bench_one(tool, &corpus, &work));
    }
    runs.sort_by_key(|r| r.kind as u8);

    print_table(&runs, &corpus);
    let json_path = args.json.unwrap_or_else(|| work.join("bench.json"));
    let json = serde_json::to_string_pretty(&to_json(&runs, &corpus))?;
    fs::write(&json_path, json + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    eprintln!("results written to {}", json_path.display());

    let failed: Vec<&str> = runs
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
        .map(|r| r.kind.name())
        .collect();
    if !failed.is_empty() {
        bail!("bench failed for: {}", failed.join(", "));
    }
    Ok(())
}

impl BenchArgs {
    fn gen_options(&self) -> GenOptions {
        let (size, versions) = if self.quick {
            (64_000_000, 3)
        } else {
            (850_000_000, 5)
        };
        GenOptions {
            seed: self.seed,
            size: self.size.unwrap_or(size),
            versions: self.versions.unwrap_or(versions).max(1),
        }
    }
}

/// The tools to measure, and results already known for those that cannot be (missing peers,
/// an rbackup that does not build).
fn find_tools(args: &BenchArgs, root: &Path) -> (Vec<Tool>, Vec<ToolRun>) {
    let (mut tools, mut runs) = (Vec::new(), Vec::new());
    if !args.skip_rbackup {
        match rbackup_tool(root, args.rbackup_bin.as_deref()) {
            Ok(tool) => tools.push(tool),
            Err(e) => runs.push(ToolRun::failed(Kind::Rbackup, "", format!("{e:#}"))),
        }
    }
    if !args.skip_peers {
        for kind in Kind::PEERS {
            match Tool::find(kind) {
                Some(tool) => tools.push(tool),
                None => runs.push(ToolRun::missing(kind)),
            }
        }
    }
    (tools, runs)
}

fn bench_one(tool: &Tool, corpus: &Corpus, work: &Path) -> ToolRun {
    let name = tool.kind.name();
    eprintln!("\n==> {name} ({})", tool.version);
    let t = Instant::now();
    let outcome = bench_tool(tool, corpus, work).unwrap_or_else(|e| {
        eprintln!("{name} FAILED: {e:#}");
        Outcome::Failed(format!("{e:#}"))
    });
    eprintln!("<== {name} done in {}", secs(t.elapsed()));
    ToolRun {
        kind: tool.kind,
        version: tool.version.clone(),
        outcome,
    }
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))
}

/// Builds rbackup in release mode (unless a binary is given) and checks that it runs.
pub(crate) fn rbackup_tool(root: &Path, given: Option<&Path>) -> Result<Tool> {
    let bin = match given {
        Some(b) => absolute(b)?,
        None => {
            eprintln!("building rbackup (release)");
            util::run(
                Command::new("cargo")
                    .args(["build", "--release", "-p", "rbackup"])
                    .current_dir(root),
            )
            .context("could not build rbackup; use --skip-rbackup to bench the peers only")?;
            target_dir(root)?.join("release/rbackup")
        }
    };
    if !util::succeeds(Command::new(&bin).arg("--help")) {
        bail!(
            "`{} --help` does not run; is the binary complete?",
            bin.display()
        );
    }
    Ok(Tool::new(Kind::Rbackup, bin))
}

fn target_dir(root: &Path) -> Result<PathBuf> {
    let text = util::capture(
        Command::new("cargo")
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .current_dir(root),
    )?;
    let meta: serde_json::Value = serde_json::from_str(&text).context("parsing cargo metadata")?;
    meta["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata has no target_directory")
}

/// The whole scenario for one tool.
fn bench_tool(tool: &Tool, corpus: &Corpus, work: &Path) -> Result<Outcome> {
    let base = work.join("runs").join(tool.kind.name());
    if base.exists() {
        fs::remove_dir_all(&base).with_context(|| format!("clearing {}", base.display()))?;
    }
    let mut fig = Figures::new();
    let mb = corpus.manifest.bytes as f64 / 1e6;
    let mut repo = Repo::init(tool, &base.join("main"))?;

    let m = repo.backup(&corpus.mixed, "backup-first")?;
    step("first backup", m.wall, m.max_rss_kib);
    fig.insert("backup_s", m.wall.as_secs_f64());
    fig.insert("backup_mb_s", mb / m.wall.as_secs_f64());
    fig.insert("backup_rss_mib", m.max_rss_kib as f64 / 1024.0);
    fig.insert("backup_repo_mb", size_on_disk(&repo.data)? as f64 / 1e6);

    let m = repo.backup(&corpus.mixed, "backup-rerun")?;
    step("unchanged re-run", m.wall, m.max_rss_kib);
    fig.insert("rerun_s", m.wall.as_secs_f64());
    if tool.kind == Kind::Rbackup {
        check_rbackup_reports(&mut repo, corpus.manifest.files)?;
    }

    restore_and_verify(&mut repo, corpus, &base.join("restore"), &mut fig)?;
    let mut warnings = std::mem::take(&mut repo.warnings);
    let mut reports = std::mem::take(&mut repo.reports);

    let mut versions = Versions {
        tool,
        evolving: work.join("evolving/src"),
        warnings: &mut warnings,
        reports: &mut reports,
    };
    let (secs_total, repo_bytes) = versions.run(&corpus.versions, &base.join("versions"), "v")?;
    let source: u64 = corpus.version_bytes.iter().sum();
    fig.insert("versions_s", secs_total);
    fig.insert("versions_repo_mb", repo_bytes as f64 / 1e6);
    fig.insert("dedup_ratio", source as f64 / repo_bytes.max(1) as f64);
    if let Some(rel) = &corpus.releases {
        let trees: Vec<PathBuf> = rel.versions.iter().map(|v| v.1.clone()).collect();
        let (secs_total, repo_bytes) = versions.run(&trees, &base.join("releases"), "release")?;
        fig.insert("releases_s", secs_total);
        fig.insert("releases_repo_mb", repo_bytes as f64 / 1e6);
        let ratio = rel.total_bytes() as f64 / repo_bytes.max(1) as f64;
        fig.insert("releases_dedup_ratio", ratio);
    }
    if let Some(small) = &corpus.small {
        bench_small_files(tool, small, &base.join("small"), &mut fig, &mut warnings)?;
    }
    Ok(Outcome::Ran {
        figures: fig,
        warnings,
        reports,
    })
}

/// Restores the latest snapshot of `mixed/` into `target`, times it, and fails unless the
/// restored tree is identical to the source.
fn restore_and_verify(
    repo: &mut Repo,
    corpus: &Corpus,
    target: &Path,
    fig: &mut Figures,
) -> Result<()> {
    fs::create_dir_all(target).context("creating the restore target")?;
    let m = repo.restore(target, "restore")?;
    step("restore", m.wall, m.max_rss_kib);
    let mb = corpus.manifest.bytes as f64 / 1e6;
    fig.insert("restore_s", m.wall.as_secs_f64());
    fig.insert("restore_mb_s", mb / m.wall.as_secs_f64());
    fig.insert("restore_rss_mib", m.max_rss_kib as f64 / 1024.0);
    let restored = repo.restored_root(target, &corpus.mixed);
    let t = Instant::now();
    let got = Manifest::of(&restored)?;
    let diffs = corpus.manifest.diff(&got);
    if !diffs.is_empty() {
        bail!(
            "restore into {} differs from the source:\n  {}",
            restored.display(),
            diffs.join("\n  ")
        );
    }
    eprintln!(
        "  restore verified: {} files identical (checked in {})",
        got.files,
        secs(t.elapsed())
    );
    fs::remove_dir_all(target).context("removing the verified restore")
}

/// Sanity checks on rbackup's own account of the two backups of `mixed/`: a tool that
/// "backs up" quickly by skipping work must not win the table.
fn check_rbackup_reports(repo: &mut Repo, files: u64) -> Result<()> {
    let points = repo.recovery_points()?;
    if points != 2 {
        repo.warnings.push(format!(
            "expected 2 recovery points after two backups, listed {points}"
        ));
    }
    let field = |i: usize, k: &str| repo.reports.get(i).and_then(|r| r[k].as_u64());
    let mut notes = Vec::new();
    if field(0, "files_new") != Some(files) {
        notes.push(format!(
            "first backup: files_new {:?}, source has {files} files",
            field(0, "files_new")
        ));
    }
    if field(1, "files_unchanged") != Some(files) {
        notes.push(format!(
            "unchanged re-run: files_unchanged {:?} (files_new {:?}, files_changed {:?}), source has {files}",
            field(1, "files_unchanged"),
            field(1, "files_new"),
            field(1, "files_changed")
        ));
    }
    repo.warnings.extend(notes);
    Ok(())
}

fn step(what: &str, wall: Duration, rss_kib: u64) {
    eprintln!(
        "  {what:<18} {:>9}  peak RSS {:>7.1} MiB",
        secs(wall),
        rss_kib as f64 / 1024.0
    );
}

/// Backs up successive versions of a tree synced one after the other into one folder.
struct Versions<'a> {
    tool: &'a Tool,
    evolving: PathBuf,
    warnings: &'a mut Vec<String>,
    reports: &'a mut Vec<serde_json::Value>,
}

impl Versions<'_> {
    /// Backs up `versions` in order into a new repository in `dir`; returns the total backup
    /// time and the final repository size.
    fn run(&mut self, versions: &[PathBuf], dir: &Path, label: &str) -> Result<(f64, u64)> {
        if self.evolving.exists() {
            fs::remove_dir_all(&self.evolving).context("clearing the evolving folder")?;
        }
        fs::create_dir_all(&self.evolving).context("creating the evolving folder")?;
        let mut repo = Repo::init(self.tool, dir)?;
        let mut total = 0.0;
        for (i, version) in versions.iter().enumerate() {
            sync_tree(version, &self.evolving)?;
            let m = repo.backup(&self.evolving, &format!("backup-{label}{}", i + 1))?;
            step(&format!("{label} {}", i + 1), m.wall, m.max_rss_kib);
            total += m.wall.as_secs_f64();
        }
        let size = size_on_disk(&repo.data)?;
        eprintln!("  {label}s repo {:>9}", human_bytes(size));
        self.warnings.append(&mut repo.warnings);
        self.reports.append(&mut repo.reports);
        Ok((total, size))
    }
}

/// First backup and unchanged re-run of the small files, with rbackup's reports checked.
fn bench_small_files(
    tool: &Tool,
    small: &crate::bench_small::SmallFiles,
    dir: &Path,
    fig: &mut Figures,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let mut repo = Repo::init(tool, dir)?;
    let m = repo.backup(&small.root, "small-first")?;
    step("small files first", m.wall, m.max_rss_kib);
    fig.insert("small_backup_s", m.wall.as_secs_f64());
    fig.insert("small_backup_rss_mib", m.max_rss_kib as f64 / 1024.0);
    let m = repo.backup(&small.root, "small-rerun")?;
    step("small files re-run", m.wall, m.max_rss_kib);
    fig.insert("small_rerun_s", m.wall.as_secs_f64());
    fig.insert("small_rerun_rss_mib", m.max_rss_kib as f64 / 1024.0);
    fig.insert("small_repo_mb", size_on_disk(&repo.data)? as f64 / 1e6);
    if tool.kind == Kind::Rbackup {
        check_rbackup_reports(&mut repo, small.files)?;
    }
    warnings.append(&mut repo.warnings);
    Ok(())
}
