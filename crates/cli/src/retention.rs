//! Retention: `rbackup forget` and `rbackup prune`.
//!
//! `forget` without `--keep-*` uses the job policies from the agent config (one job's with
//! `--job`, else every job that has one, each on its own recovery points). `prune` deletes in
//! two phases (see the engine's `prune` module): what a run decides is deleted by a later run
//! once no backup that might still use it is running, or by this run with `--wait`.
//! `forget` soft-deletes (see the engine's `tombstone` module): `recovery-points --deleted`
//! lists what it deleted, `undelete` brings a point back, and `prune` reclaims a point's data
//! after the vault's soft-delete window, or at once with `--purge-deleted-now` and the PIN.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow, bail};
use clap::Args;
use indicatif::HumanBytes;
use rbackup_engine::retention::ForgetGroup;
use rbackup_engine::{
    Actor, ForgetReport, PruneOptions, PruneReport, Repository, RetentionPolicy, Verdict,
};
use serde_json::json;

use crate::config::{AgentConfig, JobConfig};
use crate::history::JobRecord;
use crate::keys::MachineArgs;
use crate::setup::open_configured;
use crate::ui::{Ctx, local_rfc3339, parse_duration};

/// The `--keep-*` options, shared by `rbackup forget` and `rbackup job add`.
#[derive(Args, Debug, Clone, Default)]
pub struct KeepArgs {
    /// Keep the N newest recovery points.
    #[arg(long, value_name = "N", value_parser = keep_count())]
    pub keep_last: Option<u32>,
    /// Keep the newest point of each of the last N hours that have points.
    #[arg(long, value_name = "N", value_parser = keep_count())]
    pub keep_hourly: Option<u32>,
    /// ... of each of the last N days (local time).
    #[arg(long, value_name = "N", value_parser = keep_count())]
    pub keep_daily: Option<u32>,
    /// ... of each of the last N ISO weeks.
    #[arg(long, value_name = "N", value_parser = keep_count())]
    pub keep_weekly: Option<u32>,
    /// ... of each of the last N months.
    #[arg(long, value_name = "N", value_parser = keep_count())]
    pub keep_monthly: Option<u32>,
    /// ... of each of the last N years.
    #[arg(long, value_name = "N", value_parser = keep_count())]
    pub keep_yearly: Option<u32>,
}

/// A count of at least 1: 0 would mean "no such rule", which leaving the option out says.
fn keep_count() -> clap::builder::RangedI64ValueParser<u32> {
    clap::value_parser!(u32).range(1..)
}

impl KeepArgs {
    /// The policy the options give; empty when none was given.
    pub fn policy(&self) -> RetentionPolicy {
        RetentionPolicy {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
        }
    }
}

#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Only this job's recovery points (with no --keep-*, under the job's own policy).
    #[arg(long)]
    pub job: Option<String>,
    #[command(flatten)]
    pub keep: KeepArgs,
    /// Prune afterwards.
    #[arg(long)]
    pub prune: bool,
    /// Only show what would be forgotten (and pruned).
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub target: MachineArgs,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Only show what would be done.
    #[arg(long)]
    pub dry_run: bool,
    /// Wait until this run's decisions may be carried out (running backups have ended and the
    /// grace period has passed), and delete before exiting.
    #[arg(long)]
    pub wait: bool,
    /// How long a decision waits before its packs may be deleted, e.g. 15m, 1h.
    #[arg(long, value_name = "DURATION", value_parser = crate::usage::duration)]
    pub grace: Option<String>,
    /// Repack a partly used pack when more than this fraction of it is unused (0 to 1).
    #[arg(long, value_name = "FRACTION", default_value_t = 0.3)]
    pub repack_threshold: f64,
    /// Purge every soft-deleted recovery point now, before its window ends (a critical
    /// operation: needs the vault's security PIN).
    #[arg(long)]
    pub purge_deleted_now: bool,
    #[command(flatten)]
    pub pin: crate::setup::PinArgs,
    #[command(flatten)]
    pub target: MachineArgs,
}

/// The agent config and the repository a `forget` or `prune` works on, and, for another
/// machine, its id.
async fn open_target(
    ctx: &Ctx,
    m: &MachineArgs,
) -> Result<(AgentConfig, Repository, Option<String>)> {
    let Some(machine) = &m.machine else {
        let (cfg, repo) = open_configured(ctx).await?;
        return Ok((cfg, repo, None));
    };
    let cfg = AgentConfig::load_required(&ctx.config_path)?;
    let repo = m.open_other(ctx, &cfg).await?;
    let repo = repo.ok_or_else(|| anyhow!("--machine {machine} needs --passphrase-file FILE"))?;
    Ok((cfg, repo, Some(machine.clone())))
}

/// The policies this machine's jobs ask for, as published for an admin host.
fn job_policies(cfg: &AgentConfig) -> BTreeMap<String, RetentionPolicy> {
    cfg.jobs
        .iter()
        .filter(|j| j.has_retention())
        .map(|j| (j.name.clone(), j.retention))
        .collect()
}

/// Publishes the jobs' policies in the vault, for an admin host that runs retention for this
/// machine (written only when they changed). A failure is a warning: the backup is done.
pub async fn publish_policies(ctx: &Ctx, cfg: &AgentConfig, repo: &Repository) {
    if let Err(e) = repo.publish_policies(&job_policies(cfg)).await {
        ctx.notice(&format!(
            "warning: cannot publish the jobs' retention policies for an admin host: {}",
            crate::advice::render(&e.into())
        ));
    }
}

/// What `rbackup run` calls (from `jobrun.rs`'s `apply_retention`) after a job's run: forget
/// with the job's policy, then prune (which carries out earlier decisions and decides anew;
/// deletion itself waits for a later run).
pub async fn apply_job_policy(
    ctx: &Ctx,
    cfg: &AgentConfig,
    repo: &Repository,
    job: &JobConfig,
) -> Result<()> {
    if !job.has_retention() {
        return Ok(());
    }
    let report = repo.forget(&job.retention, Some(&job.name), false).await?;
    crate::freshness::after_forget(ctx, cfg, std::slice::from_ref(&report));
    if report.forgotten > 0 {
        repo.prune(PruneOptions::default()).await?;
    }
    Ok(())
}

/// The (job, policy) pairs a `forget` applies: the `--keep-*` options, else the jobs'
/// policies (`jobs`: this machine's config, or what another machine published).
fn plan(
    jobs: &BTreeMap<String, RetentionPolicy>,
    args: &ForgetArgs,
) -> Result<Vec<(Option<String>, RetentionPolicy)>> {
    let policy = args.keep.policy();
    if !policy.is_empty() {
        return Ok(vec![(args.job.clone(), policy)]);
    }
    let other = args.target.machine.is_some();
    if let Some(name) = &args.job {
        let policy = jobs.get(name).copied().ok_or_else(|| match other {
            true => anyhow!("the machine published no retention policy for a job {name:?}: give --keep-* options to forget its recovery points anyway"),
            false => anyhow!("job {name:?} has no retention policy: give --keep-* options, or add the job again with `rbackup job add {name} ... --keep-daily N`"),
        })?;
        return Ok(vec![(Some(name.clone()), policy)]);
    }
    if jobs.is_empty() {
        bail!(
            "no retention policy given: use --keep-last/--keep-hourly/--keep-daily/--keep-weekly/--keep-monthly/--keep-yearly N, or --job NAME for a job that has a policy"
        );
    }
    Ok(jobs
        .iter()
        .map(|(name, p)| (Some(name.clone()), *p))
        .collect())
}

/// The jobs' policies `forget` falls back on: this machine's own, or those another machine
/// published (said where they came from, since the admin host's config does not have them).
async fn policies_for(
    ctx: &Ctx,
    cfg: &AgentConfig,
    repo: &Repository,
    other: Option<&str>,
    job: Option<&str>,
) -> Result<BTreeMap<String, RetentionPolicy>> {
    let Some(machine) = other else {
        if let Some(name) = job
            && !cfg.jobs.iter().any(|j| j.name == name)
        {
            bail!(
                "there is no job {name:?} in the agent config (see `rbackup job list`); give --keep-* options to forget its recovery points anyway"
            );
        }
        return Ok(job_policies(cfg));
    };
    match repo.published_policies().await? {
        Some((_, p)) => {
            ctx.notice(&format!(
                "using the retention policies machine {machine} published from {} at {}",
                p.hostname, p.written
            ));
            Ok(p.jobs)
        }
        None => Ok(BTreeMap::new()),
    }
}

pub async fn forget(ctx: &Ctx, args: ForgetArgs) -> Result<u8> {
    let (cfg, repo, other) = open_target(ctx, &args.target).await?;
    let jobs = if args.keep.policy().is_empty() {
        policies_for(ctx, &cfg, &repo, other.as_deref(), args.job.as_deref()).await?
    } else {
        BTreeMap::new()
    };
    let mut reports = Vec::new();
    for (job, policy) in plan(&jobs, &args)? {
        // Tombstones record who deleted: another machine's points are deleted by this host.
        let actor = Actor::current(other.is_none().then(|| repo.machine_id()));
        let report = repo
            .forget_as(&policy, job.as_deref(), args.dry_run, &actor)
            .await;
        // Recorded as each run ends, so an error in a later one does not lose the record.
        // Another machine's points are in that machine's record, not this host's.
        if let Ok(r) = &report
            && other.is_none()
        {
            crate::freshness::after_forget(ctx, &cfg, std::slice::from_ref(r));
        }
        reports.push(report?);
    }
    let pruned = if args.prune {
        let mut opts = PruneOptions::default();
        opts.dry_run = args.dry_run;
        Some(repo.prune(opts).await?)
    } else {
        None
    };
    let doc = json!({ "forget": reports, "prune": pruned });
    ctx.output(&doc, || {
        let mut out: Vec<String> = reports.iter().map(forget_text).collect();
        if let Some(p) = &pruned {
            out.push(prune_text(p));
        }
        out.join("\n")
    })?;
    Ok(0)
}

pub async fn prune(ctx: &Ctx, args: PruneArgs) -> Result<u8> {
    if !(0.0..=1.0).contains(&args.repack_threshold) {
        bail!(
            "--repack-threshold must be between 0 and 1 (the unused fraction of a pack), not {}",
            args.repack_threshold
        );
    }
    let (cfg, repo, _) = open_target(ctx, &args.target).await?;
    let mut opts = PruneOptions::default();
    opts.dry_run = args.dry_run;
    opts.wait = args.wait;
    opts.repack_threshold = args.repack_threshold;
    if let Some(g) = &args.grace {
        opts.grace = parse_duration(g)?;
    }
    opts.purge_deleted_now = args.purge_deleted_now;
    opts.pin = args.pin.resolve()?;
    let started = jiff::Timestamp::now();
    let result = repo.prune(opts).await.map_err(anyhow::Error::from);
    if args.purge_deleted_now && !args.dry_run {
        let what = match &result {
            Ok(r) => format!(
                "purged {} soft-deleted recovery point(s) before their window ended",
                r.recovery_points_purged
            ),
            Err(_) => "purge of soft-deleted recovery points before their window ended".into(),
        };
        let rec = JobRecord::new("purge-deleted-now", None, started, &result, |_| false);
        crate::history::record(ctx, &cfg, &rec.critical(&cfg.machine_id, what));
    }
    let report = result?;
    for n in &report.notes {
        ctx.notice(&format!("note: {n}"));
    }
    ctx.output(&report, || prune_text(&report))?;
    Ok(0)
}

/// `recovery-points --deleted`: the soft-deleted points that can still be restored or
/// brought back, with the days left in their window.
pub async fn deleted_points(ctx: &Ctx) -> Result<u8> {
    let (_, repo) = open_configured(ctx).await?;
    let listing = repo.recovery_point_listing().await?;
    for w in &listing.unreadable_tombstones {
        ctx.notice(&format!("warning: {w}"));
    }
    let now = jiff::Timestamp::now();
    let shown: Vec<_> = listing.deleted.iter().filter(|d| !d.purged).collect();
    let doc: Vec<_> = shown
        .iter()
        .map(|d| {
            let mut v = serde_json::to_value(d).unwrap_or_default();
            v["days_left"] = json!(d.days_left(now));
            v
        })
        .collect();
    ctx.output(&doc, || {
        let mut out = format!(
            "{:<10} {:<19} {:<19} {:>9}  deleted by, why\n",
            "id", "time", "deleted at", "days left"
        );
        for d in &shown {
            out += &format!(
                "{:<10} {:<19} {:<19} {:>9}  {}, {}\n",
                d.id.get(..8).unwrap_or(&d.id),
                local_rfc3339(&d.time),
                local_rfc3339(&d.deleted_at),
                d.days_left(now),
                d.deleted_by,
                d.reason
            );
        }
        out += &format!(
            "{} soft-deleted recovery point(s); `rbackup undelete ID` brings one back, \
             `rbackup restore ID --target DIR` restores it",
            shown.len()
        );
        out
    })?;
    Ok(0)
}

/// `undelete`: removes a soft-deleted point's tombstone.
pub async fn undelete(ctx: &Ctx, spec: &str) -> Result<u8> {
    let (_, repo) = open_configured(ctx).await?;
    let id = repo.undelete(spec).await?;
    ctx.output(&json!({"undeleted": id.to_hex()}), || {
        format!(
            "recovery point {} is back: `rbackup recovery-points` lists it again",
            id.short()
        )
    })?;
    Ok(0)
}

fn forget_text(r: &ForgetReport) -> String {
    let mut out = format!(
        "{}policy: {}{}\n",
        if r.dry_run { "(dry run) " } else { "" },
        r.policy.describe(),
        r.job
            .as_deref()
            .map(|j| format!(" (job {j})"))
            .unwrap_or_default()
    );
    for g in &r.groups {
        out += &group_text(g);
    }
    out += &format!(
        "{} kept, {} {}",
        r.kept,
        r.forgotten,
        if r.dry_run {
            "would be forgotten"
        } else {
            "forgotten (soft-deleted: `rbackup recovery-points --deleted` lists them, \
             `rbackup undelete ID` brings one back until a prune after the window reclaims it)"
        }
    );
    out
}

fn group_text(g: &ForgetGroup) -> String {
    let mut out = match &g.job {
        Some(j) => format!("job {j}:\n"),
        None => format!("paths {}:\n", g.paths.join(" ")),
    };
    for p in &g.points {
        let short = p.id.get(..8).unwrap_or(&p.id);
        out += &match &p.verdict {
            Verdict::Keep { reasons } => {
                let why: Vec<String> = reasons.iter().map(ToString::to_string).collect();
                format!(
                    "  keep    {short}  {}  {}\n",
                    local_rfc3339(&p.time),
                    why.join(", ")
                )
            }
            Verdict::Forget => format!("  forget  {short}  {}\n", local_rfc3339(&p.time)),
        };
    }
    out
}

fn prune_text(r: &PruneReport) -> String {
    let mut out = format!(
        "{}prune: {} recovery points reference {} blobs\n",
        if r.dry_run { "(dry run) " } else { "" },
        r.recovery_points,
        r.referenced_blobs
    );
    out += &format!(
        "soft-deleted: {} purged, {} kept in their window{}\n",
        r.recovery_points_purged,
        r.soft_deleted_kept,
        r.next_purge_after
            .as_deref()
            .map(|t| format!(" (the first may go after {})", local_rfc3339(t)))
            .unwrap_or_default()
    );
    out += &format!(
        "deleted {} packs and {} orphaned packs, freed {}; {} packs kept because new recovery points use them\n",
        r.packs_deleted,
        r.orphans_deleted,
        HumanBytes(r.bytes_freed),
        r.packs_kept_in_use
    );
    out += &format!(
        "decided: {} packs to delete ({} repacked: {} blobs copied, {} written), {} orphaned packs found, {} partly used packs kept\n",
        r.packs_doomed,
        r.packs_repacked,
        r.blobs_repacked,
        HumanBytes(r.bytes_repacked),
        r.orphans_found,
        r.partly_used_kept
    );
    if r.candidates_pending > 0 {
        out += &format!(
            "pending: {} packs ({}) will be deleted by a later prune",
            r.candidates_pending,
            HumanBytes(r.bytes_pending)
        );
        if let Some(t) = &r.deletable_after {
            out += &format!(", not before {t}");
        }
        if !r.waiting_for.is_empty() {
            out += &format!(", after: {}", r.waiting_for.join("; "));
        }
        out += " (or run `rbackup prune --wait`)";
    } else {
        out += "nothing pending";
    }
    out
}
