//! Scheduled jobs: `rbackup job add|list|remove` and `rbackup schedule`. Running them
//! (`rbackup run [--due]`) is in `jobrun.rs`, the due rules in `schedule.rs`, what is kept per
//! job between runs (state, lock) in `jobstate.rs`.
//!
//! The agent keeps no daemon: a systemd timer or a cron line calls `rbackup run --due` every
//! quarter of an hour (and at each job's own minutes), and that decides from the config and the
//! per-job state what to run. A timer that missed its ticks (machine off, suspended) simply
//! finds the job due at its next tick.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{ArgGroup, Args, Subcommand};
use serde_json::json;

use crate::config::{AgentConfig, JobConfig, check_job_name};
use crate::jobstate;
use crate::retention::KeepArgs;
use crate::schedule::{Schedule, local};
use crate::ui::Ctx;

#[derive(Subcommand, Debug)]
pub enum JobCmd {
    /// Add a scheduled job. Its first run is at its first scheduled time after now; use
    /// `rbackup run NAME` to run it at once.
    Add(AddArgs),
    /// List jobs with their last successful and next scheduled run.
    List,
    /// Remove a job (its recovery points stay).
    Remove {
        /// The job's name (as `rbackup job list` shows it).
        name: String,
    },
}

/// `rbackup job add`.
#[derive(Args, Debug)]
pub struct AddArgs {
    /// Job name: letters, digits, '.', '_' and '-'.
    #[arg(value_parser = crate::usage::job_name)]
    pub name: String,
    /// A file or folder to back up (repeat for several).
    #[arg(long = "path", required = true)]
    pub paths: Vec<PathBuf>,
    /// Leave out matching files (as for `rbackup backup --exclude`).
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Local times of day, HH:MM[,HH:MM...].
    #[arg(long, value_name = "HH:MM", required = true, value_delimiter = ',', value_parser = crate::usage::time)]
    pub at: Vec<String>,
    /// Days: daily, mon-fri, weekends, sun,wed, ...
    #[arg(long, value_name = "DAYS", default_value = "daily", value_parser = crate::usage::days)]
    pub days: String,
    /// Symlinks and hard links: `skip` or `store` (default: the agent's `links` setting,
    /// itself `skip` unless set).
    #[arg(long, value_name = "skip|store", value_parser = crate::config::parse_links)]
    pub links: Option<rbackup_engine::LinkMode>,
    /// Retention after each run, on the job's own recovery points (then prune).
    #[command(flatten)]
    pub keep: KeepArgs,
}

/// `rbackup schedule`.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("kind").required(true).args(["systemd", "cron"])))]
pub struct ScheduleArgs {
    /// Print a systemd service and timer unit.
    #[arg(long)]
    pub systemd: bool,
    /// Print a crontab line.
    #[arg(long)]
    pub cron: bool,
}

pub fn job(ctx: &Ctx, cmd: JobCmd) -> Result<u8> {
    match cmd {
        JobCmd::Add(args) => add(ctx, args),
        JobCmd::List => list(ctx),
        JobCmd::Remove { name } => remove(ctx, &name),
    }
}

fn add(ctx: &Ctx, args: AddArgs) -> Result<u8> {
    check_job_name(&args.name)?;
    let schedule = Schedule::parse(&args.at, &args.days)?;
    let mut cfg = AgentConfig::load_required(&ctx.config_path)?;
    if cfg.jobs.iter().any(|j| j.name == args.name) {
        bail!(
            "job {} already exists: remove it first with `rbackup job remove {}`, or choose another name",
            args.name,
            args.name
        );
    }
    let mut paths = Vec::new();
    for p in &args.paths {
        // The timer runs in another working directory: store what the user meant now.
        let abs = std::path::absolute(p)
            .with_context(|| format!("cannot make {} absolute", p.display()))?;
        if !abs.exists() {
            ctx.notice(&format!(
                "warning: {} does not exist now; runs will report it until it does",
                abs.display()
            ));
        }
        paths.push(abs);
    }
    let job = JobConfig {
        name: args.name,
        paths,
        excludes: args.exclude,
        at: schedule.times(),
        days: schedule.days(),
        links: args.links,
        created: Some(jiff::Timestamp::now()),
        retention: args.keep.policy(),
    };
    cfg.jobs.push(job.clone());
    cfg.save(&ctx.config_path)?;
    let next = schedule.next_slot(&jiff::Zoned::now());
    ctx.output(&job_json(&cfg, &job), || {
        format!(
            "Added job {}: {} at {} (local time); first run {}.\nA timer must call `rbackup run --due`: see `rbackup schedule --systemd` or `--cron`.",
            job.name,
            job.days,
            job.at.join(","),
            next.as_ref().map_or("never".into(), local)
        )
    })?;
    Ok(0)
}

fn job_json(cfg: &AgentConfig, job: &JobConfig) -> serde_json::Value {
    let mut v = serde_json::to_value(job).unwrap_or_default();
    let state = jobstate::load_state(cfg, &job.name);
    let now = jiff::Zoned::now();
    let next = job.schedule().ok().and_then(|s| s.next_slot(&now));
    if let Some(obj) = v.as_object_mut() {
        obj.insert("last_success".into(), json!(state.last_success));
        obj.insert("next_run".into(), json!(next.map(|n| n.to_string())));
    }
    v
}

/// `last_success` and `next_run` of [`job_json`] for people.
fn human_times(v: &serde_json::Value) -> (String, String) {
    let tz = jiff::tz::TimeZone::system();
    let last = v["last_success"]
        .as_str()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map_or("never".into(), |t| local(&t.to_zoned(tz)));
    let next = v["next_run"]
        .as_str()
        .and_then(|t| t.parse::<jiff::Zoned>().ok())
        .map_or("never".into(), |z| local(&z));
    (last, next)
}

fn list(ctx: &Ctx) -> Result<u8> {
    let cfg = AgentConfig::load_required(&ctx.config_path)?;
    let all: Vec<_> = cfg.jobs.iter().map(|j| job_json(&cfg, j)).collect();
    ctx.output(&all, || {
        let mut out = String::new();
        for (job, v) in cfg.jobs.iter().zip(&all) {
            let (last, next) = human_times(v);
            out += &format!(
                "{}: {} at {}; last success {last}; next run {next}\n    paths: {}\n",
                job.name,
                job.days,
                job.at.join(","),
                job.paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" "),
            );
            if !job.excludes.is_empty() {
                out += &format!("    excludes: {}\n", job.excludes.join(" "));
            }
            if let Some(links) = job.links {
                out += &format!("    links: {}\n", crate::ops::links_word(links));
            }
            if job.has_retention() {
                out += &format!("    {}\n", job.retention.describe());
            }
        }
        out += &format!("{} job(s)", cfg.jobs.len());
        out
    })?;
    Ok(0)
}

fn remove(ctx: &Ctx, name: &str) -> Result<u8> {
    let mut cfg = AgentConfig::load_required(&ctx.config_path)?;
    let before = cfg.jobs.len();
    cfg.jobs.retain(|j| j.name != name);
    if cfg.jobs.len() == before {
        bail!(
            "no job named {name:?}: `rbackup job list` shows the configured jobs ({})",
            cfg.job_names()
        );
    }
    cfg.save(&ctx.config_path)?;
    jobstate::forget_state(&cfg, name);
    ctx.output(&json!({"removed": name}), || {
        format!("Removed job {name}; its recovery points stay in the vault.")
    })?;
    Ok(0)
}

/// The minutes past the hour at which the timer fires: every quarter, plus each job's own
/// (so that a job at 09:07 starts at 09:07, not at 09:15).
fn timer_minutes(cfg: Option<&AgentConfig>) -> BTreeSet<i8> {
    let mut minutes: BTreeSet<i8> = [0, 15, 30, 45].into();
    for job in cfg.iter().flat_map(|c| &c.jobs) {
        if let Ok(s) = job.schedule() {
            minutes.extend(s.minutes());
        }
    }
    minutes
}

fn join_minutes(minutes: &BTreeSet<i8>, width: usize) -> String {
    minutes
        .iter()
        .map(|m| format!("{m:0width$}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Environment that changes what `run --due` sees, carried into the timer's environment.
fn carried_env() -> Vec<(&'static str, String)> {
    ["TZ", "XDG_STATE_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME"]
        .into_iter()
        .filter_map(|k| Some((k, std::env::var(k).ok().filter(|v| !v.is_empty())?)))
        .collect()
}

fn quote_systemd(s: &str) -> String {
    if s.chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\\')
    {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        s.to_string()
    }
}

/// `s` quoted for a POSIX shell (cron runs its lines with `sh`).
fn quote_sh(s: &str) -> Result<String> {
    shlex::try_quote(s)
        .map(|q| q.into_owned())
        .map_err(|e| anyhow::anyhow!("cannot quote {s:?} for a crontab line: {e}"))
}

pub fn schedule(ctx: &Ctx, args: ScheduleArgs) -> Result<u8> {
    let exe = std::env::current_exe().context("cannot find the path of this rbackup binary")?;
    let config = std::path::absolute(&ctx.config_path).unwrap_or(ctx.config_path.clone());
    let cfg = AgentConfig::load(&ctx.config_path)?;
    if cfg.as_ref().is_none_or(|c| c.jobs.is_empty()) {
        ctx.notice("note: no jobs are configured yet; add them with `rbackup job add`.");
    }
    let minutes = timer_minutes(cfg.as_ref());
    let env = carried_env();
    let (exe, config) = (exe.display().to_string(), config.display().to_string());
    if args.systemd {
        let root = rustix::process::geteuid().is_root();
        let (dir, ctl) = if root {
            ("/etc/systemd/system", "systemctl")
        } else {
            ("~/.config/systemd/user", "systemctl --user")
        };
        let env_lines: String = env
            .iter()
            .map(|(k, v)| format!("Environment={}\n", quote_systemd(&format!("{k}={v}"))))
            .collect();
        let service = format!(
            "[Unit]\nDescription=rbackup: run the backup jobs that are due\nWants=network-online.target\nAfter=network-online.target\n\n[Service]\nType=oneshot\n{env_lines}ExecStart={} --config {} run --due\nNice=10\nIOSchedulingClass=idle\n",
            quote_systemd(&exe),
            quote_systemd(&config)
        );
        let timer = format!(
            "[Unit]\nDescription=rbackup: look for due backup jobs\n\n[Timer]\nOnCalendar=*-*-* *:{}:00\nAccuracySec=1s\nPersistent=true\n\n[Install]\nWantedBy=timers.target\n",
            join_minutes(&minutes, 2)
        );
        let install = format!(
            "{ctl} daemon-reload && {ctl} enable --now rbackup.timer{}",
            if root {
                String::new()
            } else {
                "\nloginctl enable-linger \"$USER\"   # so that it also runs while you are logged out"
                    .into()
            }
        );
        ctx.output(
            &json!({"service_file": format!("{dir}/rbackup.service"), "service": service,
                    "timer_file": format!("{dir}/rbackup.timer"), "timer": timer, "install": install}),
            || {
                format!(
                    "# Save as {dir}/rbackup.service:\n{service}\n# Save as {dir}/rbackup.timer:\n{timer}\n# Then enable the timer:\n#   {}\n# Re-run `rbackup schedule --systemd` after adding a job at a time that is not on a quarter hour.",
                    install.replace('\n', "\n#   ")
                )
            },
        )?;
    } else {
        let env_prefix: String = env
            .iter()
            .map(|(k, v)| Ok(format!("{k}={} ", quote_sh(v)?)))
            .collect::<Result<_>>()?;
        let line = format!(
            "{} * * * * {env_prefix}{} --config {} -q run --due",
            join_minutes(&minutes, 1),
            quote_sh(&exe)?,
            quote_sh(&config)?
        );
        ctx.output(&json!({"crontab": line}), || {
            format!(
                "# Add this line to your crontab (`crontab -e`); cron mails what it prints, and with -q\n# that is only errors. Re-run `rbackup schedule --cron` after adding a job at a time that\n# is not on a quarter hour.\n{line}"
            )
        })?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_and_systemd_quoting() {
        assert_eq!(quote_sh("/usr/bin/rbackup").unwrap(), "/usr/bin/rbackup");
        let quoted = quote_sh("/a b/it's").unwrap();
        assert_eq!(shlex::split(&quoted).unwrap(), ["/a b/it's"]);
        assert_eq!(quote_systemd("/a b/c"), "\"/a b/c\"");
        assert_eq!(quote_systemd("/a/c"), "/a/c");
    }

    #[test]
    fn timer_fires_on_quarters_and_job_minutes() {
        assert_eq!(join_minutes(&timer_minutes(None), 2), "00,15,30,45");
        // Parsed, as the agent reads it, so the test does not depend on every config field.
        let cfg: AgentConfig = toml::from_str(
            r#"
            vault = "file:///v"
            machine_id = "m"
            machine_name = "n"
            key_file = "/k"
            cache_dir = "/c"
            recovery_dir = "/r"
            [[jobs]]
            name = "j"
            paths = ["/src"]
            at = ["09:07", "21:15"]
            [[jobs]]
            name = "broken"
            paths = ["/src"]
            at = ["25:99"]
            "#,
        )
        .unwrap();
        assert_eq!(cfg.jobs[0].days, "daily");
        assert_eq!(
            join_minutes(&timer_minutes(Some(&cfg)), 2),
            "00,07,15,30,45"
        );
        assert_eq!(join_minutes(&timer_minutes(Some(&cfg)), 1), "0,7,15,30,45");
    }
}
