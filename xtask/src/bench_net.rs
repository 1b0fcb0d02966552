//! `cargo xtask bench --network`: rbackup and restic backing up to and restoring from S3
//! (moto) and Azure Blob (Azurite) across an emulated WAN link, measured side by side.
//!
//! The servers run in a network namespace behind the link of [`crate::netem`] (40 ms round
//! trip and 100 Mbit/s by default), so every request pays the latency and shares the cap as it
//! would against a cloud region. Per store, rbackup does a first backup (once per `--uploads`
//! value, each into a fresh vault), an unchanged re-run and restores (once per `--downloads`
//! value), each restore checked byte for byte against the corpus; restic does the same three
//! steps on S3 (it cannot talk to Azurite). Throughput is corpus bytes over wall time, as in
//! the main bench, so what a tool does not have to send counts in its favour.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bench::rbackup_tool;
use crate::bench_corpus::{Corpus, Manifest, prepare_corpus};
use crate::bench_net_report::{NetResults, Row, Step, print_table, to_json};
use crate::bench_net_servers::{BUCKET, Servers};
use crate::bench_peers::{Kind, Repo, Tool};
use crate::ci::{self, AptTool, CiOptions};
use crate::r#gen::GenOptions;
use crate::netem::{self, Link, LinkConfig};
use crate::util::{self, Measured, project_root, secs};

/// Corpus size of the network bench: its slowest step, a first backup at the default
/// 100 Mbit/s, then takes about half a minute, and the whole run a few minutes.
pub const DEFAULT_SIZE: u64 = 256_000_000;

/// The options only `--network` has (flattened into `cargo xtask bench`'s).
#[derive(Debug, clap::Args)]
pub struct NetArgs {
    /// Measure rbackup and restic over an emulated WAN link to moto (S3) and Azurite (Azure
    /// Blob) instead (needs root; default corpus 256MB; see xtask/src/netem.rs).
    #[arg(long)]
    pub network: bool,
    /// With --network: bandwidth cap of each direction, as tc writes it (100mbit, 1gbit).
    #[arg(long, default_value = "100mbit", value_parser = netem::parse_rate, requires = "network")]
    rate: u64,
    /// With --network: one-way delay of the link (the round trip is twice this).
    #[arg(long, default_value = "20ms", value_parser = netem::parse_delay, requires = "network")]
    delay: Duration,
    /// With --network: rbackup's first backup once per value, as `backup --uploads N`
    /// (comma-separated, e.g. 1,2,4,8).
    #[arg(long, value_delimiter = ',', requires = "network")]
    uploads: Vec<u32>,
    /// With --network: rbackup's restore once per value, as `restore --downloads N`.
    #[arg(long, value_delimiter = ',', requires = "network")]
    downloads: Vec<u32>,
}

/// The options shared with the main bench, as it resolved them.
#[derive(Debug)]
pub struct Common {
    /// Corpus size in bytes.
    pub size: u64,
    /// Generator seed.
    pub seed: u64,
    /// Work dir (default target/bench).
    pub work: Option<PathBuf>,
    /// Where to write the JSON (default WORK/bench-network.json).
    pub json: Option<PathBuf>,
    /// Measure rbackup only.
    pub skip_peers: bool,
    /// Measure restic only.
    pub skip_rbackup: bool,
    /// A prebuilt rbackup.
    pub rbackup_bin: Option<PathBuf>,
}

/// Where a vault or repository lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// moto.
    S3,
    /// Azurite.
    Azure,
}

impl Store {
    /// `s3` or `az`, as in the URL scheme.
    pub fn name(self) -> &'static str {
        match self {
            Store::S3 => "s3",
            Store::Azure => "az",
        }
    }

    fn env(self, servers: &Servers) -> Vec<(String, String)> {
        match self {
            Store::S3 => servers.s3_env(),
            Store::Azure => servers.az_env(),
        }
    }

    fn bytes(self, servers: &Servers, prefix: &str) -> Result<u64> {
        match self {
            Store::S3 => servers.s3_bytes(prefix),
            Store::Azure => servers.az_bytes(prefix),
        }
    }
}

/// Runs the network bench; fails if a step failed or a restore differed from its source.
pub fn run(net: &NetArgs, common: Common) -> Result<()> {
    if !rbackup_testenv::is_root() {
        bail!("--network needs root: it creates TUN devices and a network namespace");
    }
    let root = project_root();
    let work = common
        .work
        .clone()
        .unwrap_or_else(|| root.join("target/bench"));
    let work = std::path::absolute(&work).context("resolving the work dir")?;
    let base = work.join("net");
    if base.exists() {
        fs::remove_dir_all(&base).with_context(|| format!("clearing {}", base.display()))?;
    }
    fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    ensure_tools(&common)?;
    let (rbackup, restic) = find_tools(net, &common, &root)?;
    let opts = GenOptions {
        seed: common.seed,
        size: common.size,
        versions: 1,
    };
    let corpus = prepare_corpus(&work, opts)?;

    let cfg = LinkConfig::bench(net.delay, net.rate);
    let link = Link::start(cfg.clone()).context("building the emulated link")?;
    eprintln!(
        "link {} <-> {} (namespace {}): {}",
        cfg.host_addr(),
        cfg.server_addr(),
        cfg.netns,
        cfg.describe()
    );
    let servers = Servers::start(&link, &base.join("servers"))?;
    let mut results = NetResults::default();
    let ctx = Ctx {
        corpus: &corpus,
        base: &base,
        servers: &servers,
        net,
    };
    if let Some(tool) = &rbackup {
        for store in [Store::S3, Store::Azure] {
            ctx.guarded(tool, store, &mut results, Ctx::rbackup_store);
        }
    }
    if let Some(tool) = &restic {
        ctx.guarded(tool, Store::S3, &mut results, Ctx::restic_s3);
    }
    results.packets = link.counts();
    drop(servers);
    drop(link);

    print_table(&results, &corpus, &cfg);
    let json_path = common
        .json
        .unwrap_or_else(|| work.join("bench-network.json"));
    let json = serde_json::to_string_pretty(&to_json(&results, &corpus, &cfg))?;
    fs::write(&json_path, json + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    eprintln!("results written to {}", json_path.display());
    if !results.failures.is_empty() {
        let names: Vec<&str> = results.failures.iter().map(|f| f.0.as_str()).collect();
        bail!("network bench failed for: {}", names.join(", "));
    }
    Ok(())
}

/// What the network bench needs beyond the main bench's GNU time: `ip`, restic, and the two
/// servers (installed the way `cargo xtask ci` installs them for the tests).
fn ensure_tools(common: &Common) -> Result<()> {
    let mut apt = vec![
        AptTool {
            package: "time",
            command: "time",
        },
        AptTool {
            package: "iproute2",
            command: "ip",
        },
    ];
    if !common.skip_peers {
        apt.push(AptTool {
            package: "restic",
            command: "restic",
        });
    }
    let opts = CiOptions::default();
    ci::ensure_apt(&apt, opts)?;
    ci::ensure_pip("moto[server]", "moto", opts)?;
    ci::ensure_npm_global("azurite@3.35.0", "azurite-blob", opts)
}

fn find_tools(net: &NetArgs, common: &Common, root: &Path) -> Result<(Option<Tool>, Option<Tool>)> {
    let rbackup = if common.skip_rbackup {
        None
    } else {
        let tool = rbackup_tool(root, common.rbackup_bin.as_deref())?;
        if !net.uploads.is_empty() {
            require_option(&tool, "backup", "--uploads")?;
        }
        if !net.downloads.is_empty() {
            require_option(&tool, "restore", "--downloads")?;
        }
        Some(tool)
    };
    let restic = if common.skip_peers {
        None
    } else {
        Some(Tool::find(Kind::Restic).context("restic is not on PATH after installing it")?)
    };
    Ok((rbackup, restic))
}

/// Fails, before anything is measured, when this rbackup does not know `command option`.
fn require_option(tool: &Tool, command: &str, option: &str) -> Result<()> {
    let help = util::capture(Command::new(&tool.bin).args([command, "--help"]))?;
    if !help
        .split(|c: char| c.is_whitespace() || c == ',')
        .any(|w| w == option)
    {
        bail!(
            "`{} {command} --help` does not list {option}: this rbackup binary cannot take \
             `{command} {option} N`; build one that has the option (--rbackup-bin) or leave \
             {option} out",
            tool.bin.display()
        );
    }
    Ok(())
}

/// What every measured sequence needs.
struct Ctx<'a> {
    corpus: &'a Corpus,
    base: &'a Path,
    servers: &'a Servers,
    net: &'a NetArgs,
}

impl Ctx<'_> {
    /// Runs one tool's sequence on one store; a failure is recorded and the bench goes on.
    fn guarded(
        &self,
        tool: &Tool,
        store: Store,
        out: &mut NetResults,
        seq: impl FnOnce(&Self, &Tool, Store, &mut NetResults) -> Result<()>,
    ) {
        let name = format!("{} on {}", tool.kind.name(), store.name());
        eprintln!("\n==> {name} ({})", tool.version);
        out.versions.push((tool.kind, tool.version.clone()));
        let t = Instant::now();
        if let Err(e) = seq(self, tool, store, out) {
            eprintln!("{name} FAILED: {e:#}");
            out.failures.push((name.clone(), format!("{e:#}")));
        }
        eprintln!("<== {name} done in {}", secs(t.elapsed()));
    }

    fn rbackup_store(&self, tool: &Tool, store: Store, out: &mut NetResults) -> Result<()> {
        let uploads = knob_values(&self.net.uploads);
        let downloads = knob_values(&self.net.downloads);
        let mut last = None;
        for n in uploads {
            let tag = n.map_or("default".to_string(), |n| format!("uploads{n}"));
            let prefix = format!("rbackup-{}-{tag}", store.name());
            let url = format!("{}://{BUCKET}/{prefix}", store.name());
            let dir = self.base.join("runs").join(&prefix);
            let mut repo = Repo::init_at(tool, &dir, &url, store.env(self.servers))?;
            let knob = n.map(|n| n.to_string());
            let extra = flag("--uploads", knob.as_deref());
            let m = repo.backup_with(&self.corpus.mixed, &format!("backup-{tag}"), &extra)?;
            self.check_first_report(&mut repo);
            let vault = store.bytes(self.servers, &prefix)?;
            out.push(self.row(tool, store, Step::Backup, &extra, &m, Some(vault)));
            if let Some(old) = last.replace(repo) {
                out.take_warnings(old);
            }
        }
        let mut repo = last.context("no backup was made")?;
        let m = repo.backup(&self.corpus.mixed, "backup-rerun")?;
        out.push(self.row(tool, store, Step::Rerun, &[], &m, None));
        for n in downloads {
            let knob = n.map(|n| n.to_string());
            let extra = flag("--downloads", knob.as_deref());
            let tag = n.map_or("default".to_string(), |n| format!("downloads{n}"));
            let m = self.restore_verified(&mut repo, &format!("restore-{tag}"), &extra)?;
            out.push(self.row(tool, store, Step::Restore, &extra, &m, None));
        }
        out.take_warnings(repo);
        Ok(())
    }

    fn restic_s3(&self, tool: &Tool, store: Store, out: &mut NetResults) -> Result<()> {
        let prefix = "restic-s3";
        let location = format!("s3:{}/{BUCKET}/{prefix}", self.servers.s3_endpoint());
        let dir = self.base.join("runs").join(prefix);
        let mut repo = Repo::init_at(tool, &dir, &location, store.env(self.servers))?;
        let m = repo.backup(&self.corpus.mixed, "backup")?;
        let vault = store.bytes(self.servers, prefix)?;
        out.push(self.row(tool, store, Step::Backup, &[], &m, Some(vault)));
        let m = repo.backup(&self.corpus.mixed, "backup-rerun")?;
        out.push(self.row(tool, store, Step::Rerun, &[], &m, None));
        let m = self.restore_verified(&mut repo, "restore", &[])?;
        out.push(self.row(tool, store, Step::Restore, &[], &m, None));
        out.take_warnings(repo);
        Ok(())
    }

    /// A backup that exits 0 having stored nothing must not win the table.
    fn check_first_report(&self, repo: &mut Repo) {
        let files = self.corpus.manifest.files;
        let new = repo.reports.last().and_then(|r| r["files_new"].as_u64());
        if new != Some(files) {
            let note = format!("first backup: files_new {new:?}, source has {files} files");
            repo.warnings.push(note);
        }
    }

    fn row(
        &self,
        tool: &Tool,
        store: Store,
        step: Step,
        extra: &[&str],
        m: &Measured,
        vault: Option<u64>,
    ) -> Row {
        let mb = self.corpus.manifest.bytes as f64 / 1e6;
        let knob = (!extra.is_empty()).then(|| extra.join(" "));
        let row = Row {
            tool: tool.kind,
            store: store.name(),
            step,
            knob,
            secs: m.wall.as_secs_f64(),
            mb_s: mb / m.wall.as_secs_f64(),
            rss_mib: m.max_rss_kib as f64 / 1024.0,
            vault_mb: vault.map(|b| b as f64 / 1e6),
        };
        eprintln!(
            "  {:<34} {:>9}  {:>7.1} MB/s  peak RSS {:>7.1} MiB",
            row.label(),
            secs(m.wall),
            row.mb_s,
            row.rss_mib
        );
        row
    }

    /// Restores the latest snapshot into a fresh folder, fails unless it is identical to the
    /// corpus, and removes it.
    fn restore_verified(&self, repo: &mut Repo, label: &str, extra: &[&str]) -> Result<Measured> {
        let target = self.base.join("restore");
        if target.exists() {
            fs::remove_dir_all(&target).context("clearing the restore target")?;
        }
        fs::create_dir_all(&target).context("creating the restore target")?;
        let m = repo.restore_with(&target, label, extra)?;
        let restored = repo.restored_root(&target, &self.corpus.mixed);
        let diffs = self.corpus.manifest.diff(&Manifest::of(&restored)?);
        if !diffs.is_empty() {
            bail!(
                "{label} into {} differs from the source:\n  {}",
                restored.display(),
                diffs.join("\n  ")
            );
        }
        fs::remove_dir_all(&target).context("removing the verified restore")?;
        Ok(m)
    }
}

/// The values a knob takes: each given one, or once with rbackup's default.
fn knob_values(list: &[u32]) -> Vec<Option<u32>> {
    if list.is_empty() {
        vec![None]
    } else {
        list.iter().copied().map(Some).collect()
    }
}

fn flag<'a>(name: &'a str, value: Option<&'a str>) -> Vec<&'a str> {
    value.map_or_else(Vec::new, |v| vec![name, v])
}
