//! How each benchmarked tool is driven: rbackup (through its command line, docs/cli.md) and the
//! peers restic, borg and rustic, each with its config, cache and keys kept inside the bench
//! work dir so that runs never touch (or benefit from) the user's own state.
//!
//! Settings chosen for the peers, and why:
//! - restic: defaults (repository v2, `--compression auto`, i.e. zstd at its default level).
//! - rustic: defaults (restic-compatible repository, zstd).
//! - borg: `--compression zstd,3`. Borg's default is lz4, which would make its repository
//!   larger and its backup faster than a zstd tool's for reasons unrelated to chunking or
//!   dedup; zstd,3 puts it on the same compressor and level as the others. Encryption is
//!   `repokey` when the CPU has SHA extensions (HMAC-SHA256 is then faster than BLAKE2b, as
//!   borg's own docs advise) and `repokey-blake2` otherwise.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util::{Measured, run_measured, which};

/// Password given to every tool; rbackup wants at least 16 characters.
const PASSWORD: &str = "bench-passphrase-not-secret-42";

/// The tools the bench knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Ours.
    Rbackup,
    /// restic (Debian `restic`).
    Restic,
    /// BorgBackup 1.x (Debian `borgbackup`).
    Borg,
    /// rustic (`cargo install rustic-rs --locked`).
    Rustic,
}

impl Kind {
    /// The peers, in table order.
    pub const PEERS: [Kind; 3] = [Kind::Restic, Kind::Borg, Kind::Rustic];

    /// Name used in tables, JSON and directory names.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Rbackup => "rbackup",
            Kind::Restic => "restic",
            Kind::Borg => "borg",
            Kind::Rustic => "rustic",
        }
    }

    /// How to install the tool when it is missing.
    pub fn install_hint(self) -> &'static str {
        match self {
            Kind::Rbackup => "cargo build --release -p rbackup",
            Kind::Restic => "apt-get install restic",
            Kind::Borg => "apt-get install borgbackup",
            Kind::Rustic => "cargo install rustic-rs --locked",
        }
    }
}

/// A tool found on this machine.
#[derive(Debug, Clone)]
pub struct Tool {
    /// Which tool.
    pub kind: Kind,
    /// Its executable.
    pub bin: PathBuf,
    /// First line of its version output.
    pub version: String,
}

impl Tool {
    /// The tool at `bin`, asking it for its version (best effort).
    pub fn new(kind: Kind, bin: PathBuf) -> Self {
        let arg = if kind == Kind::Restic {
            "version"
        } else {
            "--version"
        };
        let version = Command::new(&bin)
            .arg(arg)
            .output()
            .ok()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .unwrap_or_default();
        Tool { kind, bin, version }
    }

    /// The peer's executable on `PATH`, if installed.
    pub fn find(kind: Kind) -> Option<Self> {
        which(kind.name()).map(|bin| Tool::new(kind, bin))
    }
}

/// One repository of one tool, with everything it writes kept under `dir`.
#[derive(Debug)]
pub struct Repo {
    tool: Tool,
    dir: PathBuf,
    /// The repository (or vault) itself: what `size_on_disk` measures (for a remote one, a
    /// path that does not exist: its size comes from the store).
    pub data: PathBuf,
    /// What the tool is pointed at: restic's `-r`, rbackup's vault URL.
    location: String,
    /// Extra environment of every run (a remote store's endpoint and credentials).
    env: Vec<(String, String)>,
    logs: PathBuf,
    archives: Vec<String>,
    /// Runs that finished with exit code 3, and failed sanity checks of rbackup's reports.
    pub warnings: Vec<String>,
    /// rbackup's `--json` job reports, in run order.
    pub reports: Vec<serde_json::Value>,
}

impl Repo {
    /// Creates a fresh repository for `tool` in `dir` (which must not exist yet).
    pub fn init(tool: &Tool, dir: &Path) -> Result<Self> {
        let data = dir.join(if tool.kind == Kind::Rbackup {
            "vault"
        } else {
            "repo"
        });
        let location = match tool.kind {
            Kind::Rbackup => format!("file://{}", data.display()),
            _ => data.display().to_string(),
        };
        Self::create(tool, dir, data, location, Vec::new())
    }

    /// Creates a fresh repository for rbackup or restic at a remote `location` (rbackup's
    /// vault URL, restic's `-r`) reached with the environment `env`, keeping the tool's own
    /// config, cache and logs in `dir` (which must not exist yet).
    pub fn init_at(
        tool: &Tool,
        dir: &Path,
        location: &str,
        env: Vec<(String, String)>,
    ) -> Result<Self> {
        if !matches!(tool.kind, Kind::Rbackup | Kind::Restic) {
            bail!("remote repositories are set up for rbackup and restic only");
        }
        let data = dir.join("not-local");
        Self::create(tool, dir, data, location.to_string(), env)
    }

    fn create(
        tool: &Tool,
        dir: &Path,
        data: PathBuf,
        location: String,
        env: Vec<(String, String)>,
    ) -> Result<Self> {
        let logs = dir.join("logs");
        for sub in [
            "xdg/config",
            "xdg/data",
            "xdg/cache",
            "logs",
            "cache",
            "recovery",
        ] {
            fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut repo = Repo {
            tool: tool.clone(),
            dir: dir.to_path_buf(),
            data,
            location,
            env,
            logs,
            archives: Vec::new(),
            warnings: Vec::new(),
            reports: Vec::new(),
        };
        let data = repo.location.clone();
        match tool.kind {
            Kind::Rbackup => repo.init_rbackup()?,
            Kind::Restic | Kind::Rustic => {
                repo.exec("init", &["-r", &data, "init"], None)?;
            }
            Kind::Borg => {
                let mode = borg_encryption();
                repo.exec("init", &["init", "-e", mode, &data], None)?;
            }
        }
        Ok(repo)
    }

    fn init_rbackup(&mut self) -> Result<()> {
        let cred = self.dir.join("vault.credentials").display().to_string();
        let pass = self.dir.join("passphrase");
        fs::write(&pass, PASSWORD).context("writing the bench passphrase file")?;
        let url = self.location.clone();
        self.exec(
            "vault-create",
            &["vault", "create", &url, "--credentials-out", &cred],
            None,
        )?;
        let (cache, recov) = (self.dir.join("cache"), self.dir.join("recovery"));
        let pass = pass.display().to_string();
        let (cache, recov) = (cache.display().to_string(), recov.display().to_string());
        let args = [
            "register",
            "--vault-credentials",
            &cred,
            "--passphrase-file",
            &pass,
            "--cache-dir",
            &cache,
            "--recovery-dir",
            &recov,
        ];
        self.exec("register", &args, None)?;
        Ok(())
    }

    /// Which tool this repository belongs to.
    pub fn tool_kind(&self) -> Kind {
        self.tool.kind
    }

    /// Backs up `src` (an absolute path) as a new snapshot.
    pub fn backup(&mut self, src: &Path, label: &str) -> Result<Measured> {
        self.backup_with(src, label, &[])
    }

    /// Like [`Repo::backup`], with `extra` options for rbackup's `backup` (ignored for peers).
    pub fn backup_with(&mut self, src: &Path, label: &str, extra: &[&str]) -> Result<Measured> {
        let src = src.display().to_string();
        let data = self.location.clone();
        let m = match self.tool.kind {
            Kind::Rbackup => {
                let mut args = vec!["--json", "backup", &src];
                args.extend_from_slice(extra);
                self.exec(label, &args, None)?
            }
            Kind::Restic | Kind::Rustic => {
                self.exec(label, &["-r", &data, "backup", &src], None)?
            }
            Kind::Borg => {
                let name = format!("run-{}", self.archives.len() + 1);
                let archive = format!("{data}::{name}");
                let args = ["create", "--compression", "zstd,3", &archive, &src];
                let m = self.exec(label, &args, None)?;
                self.archives.push(name);
                m
            }
        };
        if self.tool.kind == Kind::Rbackup {
            let text = fs::read_to_string(&m.stdout).unwrap_or_default();
            let report: serde_json::Value = serde_json::from_str(&text).with_context(|| {
                format!("rbackup --json backup printed no JSON job report on stdout: {text:?}")
            })?;
            self.reports.push(report);
        }
        Ok(m)
    }

    /// rbackup only: the number of recovery points `--json recovery-points` lists, so the
    /// bench notices backups that exit 0 without recording anything.
    pub fn recovery_points(&mut self) -> Result<usize> {
        let m = self.exec("recovery-points", &["--json", "recovery-points"], None)?;
        let text = fs::read_to_string(&m.stdout).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("rbackup --json recovery-points printed no JSON: {text:?}"))?;
        let list = v.as_array().or_else(|| v["recovery_points"].as_array());
        list.map(Vec::len)
            .with_context(|| format!("rbackup --json recovery-points: expected a list, got {v}"))
    }

    /// Restores the latest snapshot into the empty dir `target`.
    pub fn restore(&mut self, target: &Path, label: &str) -> Result<Measured> {
        self.restore_with(target, label, &[])
    }

    /// Like [`Repo::restore`], with `extra` options for rbackup's `restore` (ignored for
    /// peers).
    pub fn restore_with(&mut self, target: &Path, label: &str, extra: &[&str]) -> Result<Measured> {
        let t = target.display().to_string();
        let data = self.location.clone();
        match self.tool.kind {
            Kind::Rbackup => {
                let mut args = vec!["--json", "restore", "latest", "--target", &t];
                args.extend_from_slice(extra);
                self.exec(label, &args, None)
            }
            Kind::Restic => self.exec(
                label,
                &["-r", &data, "restore", "latest", "--target", &t],
                None,
            ),
            Kind::Rustic => self.exec(label, &["-r", &data, "restore", "latest", &t], None),
            Kind::Borg => {
                let Some(name) = self.archives.last() else {
                    bail!("borg: nothing to restore, no archive was created");
                };
                let archive = format!("{data}::{name}");
                self.exec(label, &["extract", &archive], Some(target))
            }
        }
    }

    /// Runs the tool with its isolated environment and fails (with its stderr) unless it
    /// succeeded; exit code 3 counts as success with warnings for rbackup and restic.
    fn exec(&mut self, label: &str, args: &[&str], cwd: Option<&Path>) -> Result<Measured> {
        let mut cmd = Command::new(&self.tool.bin);
        if self.tool.kind == Kind::Rbackup {
            cmd.arg("--config").arg(self.dir.join("config.toml"));
        }
        cmd.args(args);
        let xdg = self.dir.join("xdg");
        cmd.env("XDG_CONFIG_HOME", xdg.join("config"))
            .env("XDG_DATA_HOME", xdg.join("data"))
            .env("XDG_CACHE_HOME", xdg.join("cache"))
            .env("RESTIC_PASSWORD", PASSWORD)
            .env("RUSTIC_PASSWORD", PASSWORD)
            .env("BORG_PASSPHRASE", PASSWORD)
            .env("BORG_BASE_DIR", &xdg)
            .env("BORG_DISPLAY_PASSPHRASE", "no")
            .env_remove("RBACKUP_CONFIG")
            .env_remove("RESTIC_REPOSITORY")
            .env_remove("BORG_REPO")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        // Flush what earlier steps (and other tools) left dirty, so that their writeback
        // is not charged to this step: on this VM it made a restore look 3x slower.
        crate::util::succeeds(&mut Command::new("sync"));
        let m = run_measured(&cmd, &self.logs.join(label))?;
        let name = self.tool.kind.name();
        match m.code {
            Some(0) => Ok(m),
            Some(3) if matches!(self.tool.kind, Kind::Rbackup | Kind::Restic) => {
                self.warnings
                    .push(format!("{label}: finished with warnings (exit 3)"));
                Ok(m)
            }
            code => bail!(
                "{name} {label} failed (exit {}): `{}`\n{}",
                code.map_or("by signal".to_string(), |c| c.to_string()),
                crate::util::show(&cmd),
                m.stderr_tail()
            ),
        }
    }

    /// Where the tool put the backed-up dir `src` under the restore `target`.
    ///
    /// restic, borg and rbackup recreate the absolute path below the target (borg without the
    /// leading `/`); a tool that restores only the last component, or the snapshot's contents
    /// directly, is handled too. A wrong guess cannot pass: the verification compares every
    /// path and hash.
    pub fn restored_root(&self, target: &Path, src: &Path) -> PathBuf {
        let rel = src.strip_prefix("/").unwrap_or(src);
        let by_name = src.file_name().map(|name| target.join(name));
        [Some(target.join(rel)), by_name]
            .into_iter()
            .flatten()
            .find(|c| c.is_dir())
            .unwrap_or_else(|| target.to_path_buf())
    }
}

fn borg_encryption() -> &'static str {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    if cpuinfo.split_whitespace().any(|flag| flag == "sha_ni") {
        "repokey"
    } else {
        "repokey-blake2"
    }
}

/// Disk usage of a tree in bytes, counted like `du` (allocated blocks).
pub fn size_on_disk(root: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in walkdir::WalkDir::new(root) {
        let entry = entry.with_context(|| format!("walking {}", root.display()))?;
        let meta = entry
            .metadata()
            .with_context(|| format!("stat {}", entry.path().display()))?;
        total += meta.blocks() * 512;
    }
    Ok(total)
}
