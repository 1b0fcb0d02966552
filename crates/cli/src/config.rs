//! The agent config (TOML) and where the agent keeps its files.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use etcetera::BaseStrategy;
use etcetera::base_strategy::Xdg;
use rbackup_engine::{LinkMode, RetentionPolicy};
use serde::{Deserialize, Serialize};

use crate::schedule::Schedule;

/// The XDG base directories (etcetera's strategy): `$XDG_CONFIG_HOME`, `$XDG_DATA_HOME`,
/// `$XDG_CACHE_HOME` and `$XDG_STATE_HOME` when set to an absolute path, else `.config`,
/// `.local/share`, `.cache` and `.local/state` under the home directory (`$HOME`, else the
/// user's passwd entry).
fn xdg() -> Result<Xdg> {
    Xdg::new().map_err(|_| {
        anyhow!("cannot find the home directory for the agent's default folders: set HOME")
    })
}

pub fn default_config_path() -> Result<PathBuf> {
    Ok(xdg()?.config_dir().join("rbackup/config.toml"))
}

pub fn default_cache_dir() -> Result<PathBuf> {
    Ok(xdg()?.cache_dir().join("rbackup"))
}

pub fn default_recovery_dir() -> Result<PathBuf> {
    Ok(default_cache_dir()?.join("recovery"))
}

pub fn default_vault_dir() -> Result<PathBuf> {
    Ok(xdg()?.data_dir().join("rbackup/vault"))
}

/// `$XDG_STATE_HOME/rbackup/<machine-id>`: job state, locks and history.
pub fn state_dir(machine_id: &str) -> Result<PathBuf> {
    let state = xdg()?.state_dir().context("no XDG state folder")?;
    Ok(state.join("rbackup").join(machine_id))
}

/// Work-hours throttling settings, as text; `throttle()` below turns them into the schedule
/// that paces uploads (and restore reads when `restores` is set).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Throttle {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_days: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_hours: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_rate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub non_work_rate: Option<String>,
    /// Also limit reads from the vault during restores.
    #[serde(default)]
    pub restores: bool,
}

/// The agent config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentConfig {
    /// Vault URL.
    pub vault: String,
    /// This machine's id in the vault.
    pub machine_id: String,
    /// Its name.
    pub machine_name: String,
    /// Local file with the machine's master keys (mode 0600): lets scheduled runs work without
    /// the passphrase. Never stored in the vault.
    pub key_file: PathBuf,
    /// Staging and metadata cache.
    pub cache_dir: PathBuf,
    /// Where restores are staged.
    pub recovery_dir: PathBuf,
    /// HTTP(S) proxy for cloud vaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// `register --append-only`: this machine's store credentials cannot delete or overwrite,
    /// so it never tries (forget and prune are refused; retention runs from an admin host).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub append_only: bool,
    #[serde(default)]
    pub throttle: Throttle,
    /// What backups do with symlinks and hard links unless a job or `backup --links` says
    /// otherwise: `skip` (the MARS rule, the default) or `store`.
    #[serde(default, skip_serializing_if = "is_default_links")]
    pub links: LinkMode,
    /// Scheduled jobs (`rbackup job add`), run by `rbackup run [--due]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<JobConfig>,
    /// `register --local-tier`: a second vault on local disk that takes each backup first
    /// (see `tier.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_tier: Option<LocalTier>,
}

/// The local tier: a vault on local disk (or a NAS path) holding this machine with the same
/// keys, from which recovery points are copied to `vault`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LocalTier {
    /// Its URL (`file:///...`).
    pub vault: String,
    /// Recovery points older than this many days are removed from the local tier once they
    /// are in the cloud vault (the newest one always stays).
    pub days: u32,
}

/// One scheduled job. Times and days stay in their text form here and are parsed where they
/// are used (`crate::schedule`), so that a typo in one job never stops the agent from loading
/// its config for a restore.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobConfig {
    /// Unique name: letters, digits, `.`, `_`, `-`.
    pub name: String,
    /// Absolute paths to back up.
    pub paths: Vec<PathBuf>,
    /// Exclude patterns, as for `rbackup backup --exclude`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excludes: Vec<String>,
    /// Local times of day, `HH:MM`.
    pub at: Vec<String>,
    /// `daily`, `mon-fri`, `sun,wed`, ... (the syntax of the throttle's work days).
    #[serde(default = "default_days")]
    pub days: String,
    /// `skip` or `store` for symlinks and hard links; unset, the agent's `links` applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<LinkMode>,
    /// When the job was added: its first run is at the first scheduled time after this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<jiff::Timestamp>,
    /// Retention applied after each run of the job (and by `rbackup forget --job NAME`): the
    /// `keep_*` keys sit in the job's own table, as they always have.
    #[serde(flatten)]
    pub retention: RetentionPolicy,
}

fn is_default_links(l: &LinkMode) -> bool {
    *l == LinkMode::default()
}

/// Parses `--links skip|store` (clap's value parser for the engine's [`LinkMode`]).
pub fn parse_links(s: &str) -> Result<LinkMode> {
    match s {
        "skip" => Ok(LinkMode::Skip),
        "store" => Ok(LinkMode::Store),
        _ => bail!(
            "expected `skip` (the default: symlinks and hard links are not backed up) or `store` (backed up and restored as links)"
        ),
    }
}

fn default_days() -> String {
    "daily".into()
}

impl JobConfig {
    /// Whether the job has a retention policy (a `keep_*` rule above 0).
    pub fn has_retention(&self) -> bool {
        !self.retention.is_empty()
    }

    /// The job's schedule; the error names the job and how to fix it.
    pub fn schedule(&self) -> Result<Schedule> {
        Schedule::parse(&self.at, &self.days).with_context(|| {
            format!(
                "job {} has a bad schedule in the config: fix its `at`/`days`, or remove and add it again",
                self.name
            )
        })
    }
}

/// Job names become file names in the state dir: keep them to a safe alphabet.
pub fn check_job_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        bail!(
            "bad job name {name:?}: use up to 64 letters, digits, '.', '_' and '-', not starting with '.' or '-'"
        );
    }
    Ok(())
}

impl AgentConfig {
    /// The config at `path`, which must exist (jobs, forget and the like need one).
    pub fn load_required(path: &Path) -> Result<AgentConfig> {
        Self::load(path)?.ok_or_else(|| {
            anyhow!(
                "no agent config at {}: register with `rbackup register --vault-credentials FILE ...`, or run `rbackup backup PATH` once to set up a local vault, then add jobs",
                path.display()
            )
        })
    }

    /// The configured job names, for error messages.
    pub fn job_names(&self) -> String {
        if self.jobs.is_empty() {
            return "none yet".into();
        }
        self.jobs
            .iter()
            .map(|j| j.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn load(path: &Path) -> Result<Option<AgentConfig>> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read config {}", path.display()));
            }
        };
        let cfg = Self::parse(&text)
            .with_context(|| format!("config {} is not valid: fix or remove it", path.display()))?;
        Ok(Some(cfg))
    }

    /// The config in `text`, as `load` reads it. Schedules and the throttle are checked
    /// where they are used, so that one typo never stops every command.
    pub fn parse(text: &str) -> Result<AgentConfig> {
        Ok(toml::from_str(text)?)
    }

    /// Written to a temp file and renamed, so a crash never leaves half a config.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = toml::to_string_pretty(self)?;
        write_atomic(path, text.as_bytes(), 0o600)
    }
}

/// Writes `bytes` to `path` atomically with `mode`: a temporary file in the same directory,
/// fsynced, renamed over `path`, then the directory fsynced so the rename survives a crash.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".rbackup-")
        .permissions(fs::Permissions::from_mode(mode))
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))?;
    Ok(())
}

/// Creates `path` with `mode`, refusing to overwrite (a passphrase file must never be lost).
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut f = match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!(
                "{} already exists: choose another file (rbackup never overwrites a saved passphrase or key)",
                path.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
    };
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// The configured throttle, or `None` when both rates are unlimited (nothing to pace).
pub fn throttle(t: &Throttle) -> Result<Option<rbackup_engine::throttle::Throttle>> {
    let schedule = throttle_schedule(t)?;
    Ok((!schedule.is_unlimited()).then(|| rbackup_engine::throttle::Throttle::new(schedule)))
}

/// The throttle schedule from the config; a bad value names the setting and what is accepted.
pub fn throttle_schedule(t: &Throttle) -> Result<rbackup_engine::throttle::Schedule> {
    let mut s = rbackup_engine::throttle::Schedule::default();
    if let Some(v) = &t.work_days {
        s.work_days = v.parse().with_context(|| "throttle work_days")?;
    }
    if let Some(v) = &t.work_hours {
        s.work_hours = v.parse().with_context(|| "throttle work_hours")?;
    }
    if let Some(v) = &t.work_rate {
        s.work_rate = v.parse().with_context(|| "throttle work_rate")?;
    }
    if let Some(v) = &t.non_work_rate {
        s.non_work_rate = v.parse().with_context(|| "throttle non_work_rate")?;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_retention_keys_parse_from_old_and_new_configs() {
        // Written before keep_hourly existed: the keys sit in the job table.
        let old = r#"
            name = "docs"
            paths = ["/src"]
            at = ["09:00"]
            keep_last = 5
            keep_daily = 7
        "#;
        let job: JobConfig = toml::from_str(old).unwrap();
        let want = RetentionPolicy {
            keep_last: Some(5),
            keep_daily: Some(7),
            ..Default::default()
        };
        assert_eq!(job.retention, want);
        assert!(job.has_retention());
        let mut hourly = job.clone();
        hourly.retention.keep_hourly = Some(24);
        let text = toml::to_string(&hourly).unwrap();
        assert!(text.contains("keep_hourly = 24"), "{text}");
        assert!(
            !text.contains("keep_weekly"),
            "unset rules are left out: {text}"
        );
        assert_eq!(toml::from_str::<JobConfig>(&text).unwrap(), hourly);
        let none: JobConfig =
            toml::from_str("name = \"x\"\npaths = [\"/s\"]\nat = [\"09:00\"]").unwrap();
        assert!(!none.has_retention());
    }

    #[test]
    fn append_only_defaults_to_off_and_is_written_only_when_on() {
        let base = r#"
            vault = "file:///v"
            machine_id = "0123456789abcdef"
            machine_name = "m"
            key_file = "/k"
            cache_dir = "/c"
            recovery_dir = "/r"
        "#;
        let old: AgentConfig = toml::from_str(base).unwrap();
        assert!(
            !old.append_only,
            "configs from before the flag load as not append-only"
        );
        assert!(!toml::to_string(&old).unwrap().contains("append_only"));
        let on = AgentConfig {
            append_only: true,
            ..old
        };
        let text = toml::to_string(&on).unwrap();
        assert!(text.contains("append_only = true"), "{text}");
        assert!(toml::from_str::<AgentConfig>(&text).unwrap().append_only);
    }

    #[test]
    fn links_default_to_skip_and_a_job_may_override_the_agent() {
        let base = r#"
            vault = "file:///v"
            machine_id = "0123456789abcdef"
            machine_name = "m"
            key_file = "/k"
            cache_dir = "/c"
            recovery_dir = "/r"
        "#;
        let old: AgentConfig = toml::from_str(base).unwrap();
        assert_eq!(old.links, LinkMode::Skip);
        assert!(!toml::to_string(&old).unwrap().contains("links"));
        let text = format!(
            "links = \"store\"\n{base}\n[[jobs]]\nname = \"j\"\npaths = [\"/s\"]\nat = [\"09:00\"]\nlinks = \"skip\"\n"
        );
        let cfg: AgentConfig = toml::from_str(&text).unwrap();
        assert_eq!(cfg.links, LinkMode::Store);
        assert_eq!(cfg.jobs[0].links, Some(LinkMode::Skip));
        let again: AgentConfig = toml::from_str(&toml::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(
            (again.links, again.jobs[0].links),
            (LinkMode::Store, Some(LinkMode::Skip))
        );
        assert!(toml::from_str::<AgentConfig>(&format!("links = \"follow\"\n{base}")).is_err());
        assert_eq!(parse_links("store").unwrap(), LinkMode::Store);
        assert!(parse_links("follow").is_err());
    }

    #[test]
    fn job_names() {
        for good in ["docs", "Home-2", "a.b_c", "x"] {
            assert!(check_job_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".hidden", "-x", "a/b", "a b", "ä", &"x".repeat(65)] {
            assert!(check_job_name(bad).is_err(), "{bad:?}");
        }
    }
}
