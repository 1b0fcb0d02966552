//! `rbackup run [JOB...] [--due]`: runs configured jobs, one at a time, each under its own lock
//! (see `jobstate.rs` for the state and the lock).

use anyhow::{Result, bail};
use clap::Args;
use jiff::{Timestamp, Zoned};
use rbackup_engine::{BackupOptions, BackupReport};
use serde::Serialize;

use crate::config::{AgentConfig, JobConfig};
use crate::history::{self, JobRecord};
use crate::jobstate::{JobState, load_state, save_state, try_lock};
use crate::ui::Ctx;

/// `rbackup run`.
#[derive(Args, Debug)]
#[command(after_help = "\
A job is due when its latest scheduled time (local time) is later than both its last successful
run and the moment it was added; after days switched off it is caught up once, not once per
missed time. A failed run leaves it due, so the next timer tick retries it.

Exit status: 0 all ran (or nothing was due), 1 a job failed, 3 a job finished with warnings.
A job that is already running (another rbackup holds its lock) is not started twice: with --due
that is normal for a timer and exits 0; for a job run on request it counts as a failure (1).")]
pub struct RunArgs {
    /// Jobs to run (default: all configured jobs).
    pub jobs: Vec<String>,
    /// Run only the jobs whose latest scheduled time has passed since their last successful
    /// run (what a timer calls).
    #[arg(long)]
    pub due: bool,
}

/// How one job's turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Status {
    Ok,
    Warnings,
    Failed,
    NotDue,
    AlreadyRunning,
}

/// One job's turn, as printed with --json.
#[derive(Debug, Serialize)]
struct JobRun {
    job: String,
    status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<BackupReport>,
    /// With a local tier: the copy to the vault and the local pruning after the backup.
    #[serde(skip_serializing_if = "Option::is_none")]
    local_tier: Option<crate::tier::TierOutcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Pid of the process that holds the job, for `already_running`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retention_error: Option<String>,
    /// The job has a policy, but this machine is append-only (retention is the admin's).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    retention_skipped: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_run: Option<Zoned>,
    /// The id of the run's job record (`rbackup jobs --skipped ID`).
    #[serde(skip_serializing_if = "Option::is_none")]
    record_id: Option<String>,
}

impl JobRun {
    fn new(job: &str, status: Status) -> JobRun {
        JobRun {
            job: job.into(),
            status,
            report: None,
            local_tier: None,
            error: None,
            pid: None,
            retention_error: None,
            retention_skipped: false,
            next_run: None,
            record_id: None,
        }
    }
}

pub async fn run(ctx: &Ctx, args: RunArgs) -> Result<u8> {
    let cfg = AgentConfig::load_required(&ctx.config_path)?;
    for name in &args.jobs {
        if !cfg.jobs.iter().any(|j| &j.name == name) {
            bail!(
                "no job named {name:?}: configured jobs are {}; add one with `rbackup job add`",
                cfg.job_names()
            );
        }
    }
    let selected: Vec<&JobConfig> = cfg
        .jobs
        .iter()
        .filter(|j| args.jobs.is_empty() || args.jobs.contains(&j.name))
        .collect();
    if selected.is_empty() && !args.due {
        ctx.notice("no jobs are configured: add one with `rbackup job add`");
    }
    let mut runs = Vec::new();
    for job in selected {
        let r = run_one(ctx, &cfg, job, args.due).await;
        print_human(ctx, &r, args.due);
        runs.push(r);
    }
    if ctx.json {
        ctx.output(&serde_json::json!({ "jobs": runs }), String::new)?;
    }
    let failed = |r: &JobRun| {
        r.status == Status::Failed
            || r.retention_error.is_some()
            || (r.status == Status::AlreadyRunning && !args.due)
    };
    Ok(if runs.iter().any(failed) {
        1
    } else if runs.iter().any(|r| r.status == Status::Warnings) {
        crate::EXIT_WARNINGS
    } else {
        0
    })
}

/// Whether the job is due now; with `due` false every job is.
fn due_now(cfg: &AgentConfig, job: &JobConfig, due: bool) -> Result<(bool, Option<Zoned>)> {
    if !due {
        return Ok((true, None));
    }
    let schedule = job.schedule()?;
    let now = Zoned::now();
    let last = load_state(cfg, &job.name).last_success;
    let next = schedule.next_slot(&now);
    Ok((schedule.is_due(last, job.created, &now), next))
}

async fn run_one(ctx: &Ctx, cfg: &AgentConfig, job: &JobConfig, due: bool) -> JobRun {
    let failed = |e: anyhow::Error| {
        let mut r = JobRun::new(&job.name, Status::Failed);
        r.error = Some(crate::advice::render(&e));
        r
    };
    // None when the job should run now; otherwise what to report instead.
    let not_due = || match due_now(cfg, job, due) {
        Ok((true, _)) => None,
        Ok((false, next)) => {
            let mut r = JobRun::new(&job.name, Status::NotDue);
            r.next_run = next;
            Some(r)
        }
        Err(e) => Some(failed(e)),
    };
    if let Some(r) = not_due() {
        return r;
    }
    let _lock = match try_lock(cfg, &job.name) {
        Ok(Ok(lock)) => lock,
        Ok(Err(pid)) => {
            let mut r = JobRun::new(&job.name, Status::AlreadyRunning);
            r.pid = pid;
            return r;
        }
        Err(e) => return failed(e),
    };
    // Another invocation may have finished this job between our check and our lock.
    if let Some(r) = not_due() {
        return r;
    }
    let started = Timestamp::now();
    let (result, tier) = match backup(ctx, cfg, job).await {
        Ok((r, t)) => (Ok(r), t),
        Err(e) => (Err(e), None),
    };
    let record_id = history::record(
        ctx,
        cfg,
        &JobRecord::new("run", Some(job.name.clone()), started, &result, |r| {
            r.has_warnings()
        }),
    );
    let report = match result {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let local_only = tier.as_ref().is_some_and(|t| t.copy.is_none());
    let status = if report.has_warnings() || local_only {
        Status::Warnings
    } else {
        Status::Ok
    };
    let mut r = JobRun::new(&job.name, status);
    let state = JobState {
        last_success: Some(started),
    };
    if let Err(e) = save_state(cfg, &job.name, &state) {
        ctx.notice(&format!(
            "warning: job {}: cannot record its successful run ({e:#}); the next `run --due` will run it again",
            job.name
        ));
    }
    if job.has_retention() && cfg.append_only {
        // Not a failure: the policy is the admin host's to apply (it needs deletes).
        ctx.notice(&format!(
            "job {}: retention skipped: this machine is append-only; the admin host applies the job's policy (`rbackup forget --machine {}`)",
            job.name, cfg.machine_id
        ));
        r.retention_skipped = true;
    } else if job.has_retention() && local_only {
        // The policy is the vault's, and the vault was not reached or the copy failed: it
        // applies after the next run that reaches it.
        ctx.notice(&format!(
            "job {}: retention skipped: the vault was not reached; it is applied after the next run that copies to it",
            job.name
        ));
        r.retention_skipped = true;
    } else if job.has_retention()
        && let Err(e) = apply_retention(ctx, cfg, job).await
    {
        r.retention_error = Some(crate::advice::render(&e));
    }
    r.report = Some(report);
    r.local_tier = tier;
    r.record_id = record_id;
    r
}

async fn backup(
    ctx: &Ctx,
    cfg: &AgentConfig,
    job: &JobConfig,
) -> Result<(BackupReport, Option<crate::tier::TierOutcome>)> {
    let (progress, bar) = ctx.progress(&job.name);
    let result = async {
        let throttle = crate::config::throttle(&cfg.throttle)?;
        let (repo, cloud) = crate::tier::backup_repo(ctx, cfg).await?;
        let mut opts = BackupOptions::new(job.paths.clone());
        opts.excludes = job.excludes.clone();
        opts.job = Some(job.name.clone());
        opts.links = job.links.unwrap_or(cfg.links);
        opts.cache_dir = Some(cfg.cache_dir.clone());
        opts.progress = progress;
        opts.cancel = crate::interrupt::stop_on_signals(ctx);
        if cloud.is_none() {
            opts.throttle = throttle;
        }
        let report = repo.backup(opts).await?;
        let tier = match cloud {
            Some(c) => {
                let out = crate::tier::after_backup(ctx, cfg, &repo, c).await;
                // The policies are for the admin host, which works on the vault.
                if out.copy.is_some() {
                    match crate::setup::open_with_config(cfg).await {
                        Ok(vault) => crate::retention::publish_policies(ctx, cfg, &vault).await,
                        Err(e) => ctx.notice(&format!(
                            "warning: cannot publish the jobs' retention policies: {}",
                            crate::advice::render(&e)
                        )),
                    }
                }
                Some(out)
            }
            None => {
                crate::retention::publish_policies(ctx, cfg, &repo).await;
                None
            }
        };
        anyhow::Ok((report, tier))
    }
    .await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let (report, tier) = result?;
    // The freshness mark is the vault's: a point on the local tier only is not in it yet.
    if tier.as_ref().is_none_or(|t| t.copy.is_some()) {
        crate::freshness::after_backup(ctx, cfg, &report);
    }
    Ok((report, tier))
}

/// Retention after a scheduled run: the job's `keep_*` policy on the job's own recovery points
/// (then prune). Called after every run that ended ok or with warnings, when the job has a
/// policy; an error is reported as the job's `retention_error` and makes `run` exit 1, but does
/// not undo the run.
async fn apply_retention(ctx: &Ctx, cfg: &AgentConfig, job: &JobConfig) -> Result<()> {
    let repo = crate::setup::open_with_config(cfg).await?;
    crate::retention::apply_job_policy(ctx, cfg, &repo, job).await
}

fn print_human(ctx: &Ctx, r: &JobRun, due: bool) {
    let name = &r.job;
    if let Some(rep) = &r.report {
        crate::ops::notice_skips(ctx, &format!("job {name}: "), rep, r.record_id.as_deref());
    }
    if let Some(e) = &r.retention_error {
        ctx.notice(&format!("job {name}: retention failed: {e}"));
    }
    match r.status {
        Status::Failed => ctx.notice(&format!(
            "job {name} FAILED: {}",
            r.error.as_deref().unwrap_or("?")
        )),
        Status::AlreadyRunning if !(due && ctx.quiet) => ctx.notice(&format!(
            "job {name} is already running (pid {}); not starting it twice",
            r.pid.map_or("unknown".into(), |p| p.to_string())
        )),
        _ => {}
    }
    if ctx.json || ctx.quiet {
        return;
    }
    match (r.status, &r.report) {
        (Status::NotDue, _) => println!(
            "job {name}: not due; next run {}",
            r.next_run
                .as_ref()
                .map_or("never".into(), crate::schedule::local)
        ),
        (Status::Ok | Status::Warnings, Some(rep)) => {
            println!("job {name}: {}", crate::ops::backup_summary(rep))
        }
        _ => {}
    }
}
