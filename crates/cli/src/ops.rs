//! Backup, restore, check and listing.

use anyhow::{Result, anyhow};
use indicatif::HumanBytes;
use rbackup_engine::{BackupOptions, KeyFileState, RestoreOptions};
use serde_json::json;

use crate::config::AgentConfig;
use crate::history::{self, JobRecord};
use crate::setup::{open_configured, setup_default};
use crate::ui::Ctx;
use crate::{BackupArgs, EXIT_WARNINGS, RestoreArgs, ThrottleCmd};

pub async fn backup(ctx: &Ctx, args: BackupArgs) -> Result<u8> {
    if args.paths.is_empty() {
        return Err(crate::usage::UsageError(
            "nothing to back up: name one or more paths, e.g. `rbackup backup ~/Documents`".into(),
        )
        .into());
    }
    let cfg = match AgentConfig::load(&ctx.config_path)? {
        Some(c) => c,
        None => setup_default(ctx).await?,
    };
    let started = jiff::Timestamp::now();
    let (progress, bar) = ctx.progress("backup");
    let job = args.job.clone();
    let result = async {
        let (repo, cloud) = crate::tier::backup_repo(ctx, &cfg).await?;
        let mut opts = BackupOptions::new(args.paths);
        opts.excludes = args.exclude;
        opts.job = args.job;
        opts.links = args.links.unwrap_or(cfg.links);
        opts.uploads = args.uploads.map_or(0, |n| n as usize);
        opts.cache_dir = Some(cfg.cache_dir.clone());
        opts.progress = progress;
        opts.cancel = crate::interrupt::stop_on_signals(ctx);
        // Into the local tier, the disk is the limit: the throttle is for the copy.
        if cloud.is_none() {
            opts.throttle = crate::config::throttle(&cfg.throttle)?;
        }
        let report = repo.backup(opts).await?;
        if let Some(b) = &bar {
            b.finish_and_clear();
        }
        let tier = match cloud {
            Some(c) => Some(crate::tier::after_backup(ctx, &cfg, &repo, c).await),
            None => None,
        };
        Ok((report, tier))
    }
    .await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let (result, tier) = match result {
        Ok((r, t)) => (Ok(r), t),
        Err(e) => (Err(e), None),
    };
    let record_id = history::record(
        ctx,
        &cfg,
        &JobRecord::new(
            "backup",
            job,
            started,
            &result,
            |r: &rbackup_engine::BackupReport| r.has_warnings(),
        ),
    );
    let report = result?;
    // The freshness mark is the vault's: a point on the local tier only is not in it yet.
    if tier.as_ref().is_none_or(|t| t.copy.is_some()) {
        crate::freshness::after_backup(ctx, &cfg, &report);
    }
    notice_skips(ctx, "", &report, record_id.as_deref());
    let local_only = tier.as_ref().is_some_and(|t| t.copy.is_none());
    let mut doc = serde_json::to_value(&report)?;
    if let Some(t) = &tier {
        doc["local_tier"] = serde_json::to_value(t)?;
    }
    ctx.output(&doc, || backup_summary(&report))?;
    Ok(if report.has_warnings() || local_only {
        EXIT_WARNINGS
    } else {
        0
    })
}

/// At most this many files that could not be backed up are named on the terminal; the job
/// record has them all.
const FAILURES_SHOWN: usize = 20;

/// Tells the user, each line starting with `prefix`, what a backup left out: the warnings and
/// the files that should have been backed up and were not (the first [`FAILURES_SHOWN`]),
/// then the files left out by a file-type rule as one count per rule, pointing at the job
/// record `record_id` that lists them.
pub fn notice_skips(
    ctx: &Ctx,
    prefix: &str,
    r: &rbackup_engine::BackupReport,
    record_id: Option<&str>,
) {
    for w in &r.warnings {
        ctx.notice(&format!("{prefix}warning: {w}"));
    }
    let failures: Vec<_> = r.failures().collect();
    for s in failures.iter().take(FAILURES_SHOWN) {
        ctx.notice(&format!("{prefix}not backed up {}: {}", s.path, s.reason));
    }
    let see = match record_id {
        Some(id) => format!(" — see `rbackup jobs --skipped {id}`"),
        None => String::new(),
    };
    if failures.len() > FAILURES_SHOWN {
        ctx.notice(&format!(
            "{prefix}... and {} more not backed up{see}",
            failures.len() - FAILURES_SHOWN
        ));
    }
    let counts = r.rule_counts();
    if !counts.is_empty() {
        ctx.notice(&format!(
            "{prefix}skipped by rule: {}{see}",
            history::rule_words(&counts)
        ));
    }
}

/// `skip` or `store`, as `--links` takes it.
pub fn links_word(l: rbackup_engine::LinkMode) -> &'static str {
    match l {
        rbackup_engine::LinkMode::Skip => "skip",
        rbackup_engine::LinkMode::Store => "store",
    }
}

/// ", 3 symlinks, 1 hard link" for `--links store` runs; empty when there were none.
fn links_words(symlinks: u64, hard_links: u64) -> String {
    if symlinks + hard_links == 0 {
        return String::new();
    }
    let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    format!(
        ", {}, {}",
        plural(symlinks, "symlink", "symlinks"),
        plural(hard_links, "hard link", "hard links")
    )
}

/// The human summary of a backup, shared by `backup` and `run`.
pub fn backup_summary(r: &rbackup_engine::BackupReport) -> String {
    let links = links_words(r.symlinks, r.hard_links);
    let by_rule: u64 = r.rule_counts().iter().map(|(_, n)| n).sum();
    format!(
        "recovery point {}; files {} new, {} changed, {} unchanged{links}, {} skipped by rule, {} not backed up; read {}, added {} in {:.1}s",
        r.recovery_point.as_deref().unwrap_or("-"),
        r.files_new,
        r.files_changed,
        r.files_unchanged,
        by_rule,
        r.failures().count(),
        HumanBytes(r.bytes_read),
        HumanBytes(r.bytes_added),
        r.duration_s
    )
}

pub async fn recovery_points(ctx: &Ctx, paths: &[std::path::PathBuf]) -> Result<u8> {
    let (cfg, repo) = open_configured(ctx).await?;
    let listing = repo.recovery_point_listing().await?;
    for w in &listing.unreadable_tombstones {
        ctx.notice(&format!("warning: {w}"));
    }
    let rps = &listing.live;
    // Freshness findings are warnings here (the list is still what the vault holds); `check`
    // fails on them. Soft-deleted and purged points are gone on purpose.
    let mut mark = crate::freshness::load(ctx, &cfg);
    let accounted = listing.accounted();
    for f in rbackup_engine::assess_accounting(rps, &accounted, Some(&mark)) {
        ctx.notice(&format!("warning: {f}"));
    }
    mark.observe(rps);
    crate::freshness::save(ctx, &cfg, &mark);
    if let Some(t) = &cfg.local_tier {
        local_only_notice(ctx, &cfg, t, rps).await;
    }
    // `--path` narrows what is shown; the freshness checks above saw every point.
    let paths: Vec<_> = paths
        .iter()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
        .collect();
    let held: Vec<_> = rps
        .iter()
        .filter(|(_, rp)| paths.iter().all(|p| rp.holds(p)))
        .cloned()
        .collect();
    let rps = &held;
    let list: Vec<_> = rps
        .iter()
        .map(|(id, rp)| {
            json!({"id": id.to_hex(), "time": rp.time, "paths": rp.paths, "files": rp.files,
                   "dirs": rp.dirs, "size": rp.bytes, "bytes_added": rp.bytes_added, "job": rp.job,
                   "hostname": rp.hostname, "sequence": rp.sequence,
                   "predecessors": rp.predecessors})
        })
        .collect();
    ctx.output(&list, || {
        let mut out = format!(
            "{:<10} {:<19}  {:>10} {:>8}  paths\n",
            "id", "time", "size", "files"
        );
        for (id, rp) in rps {
            out += &format!(
                "{:<10} {:<19}  {:>10} {:>8}  {}\n",
                id.short(),
                crate::ui::local_rfc3339(&rp.time),
                HumanBytes(rp.bytes),
                rp.files,
                rp.paths.join(" ")
            );
        }
        out += &format!("{} recovery point(s)", rps.len());
        out
    })?;
    Ok(0)
}

/// With a local tier, `recovery-points` lists the vault; the points still waiting on the local
/// tier for their copy are named on stderr.
async fn local_only_notice(
    ctx: &Ctx,
    cfg: &AgentConfig,
    tier: &crate::config::LocalTier,
    in_vault: &[(rbackup_engine::Id, rbackup_engine::RecoveryPoint)],
) {
    let local = async {
        let repo = crate::tier::open_tier(cfg, tier).await?;
        anyhow::Ok(repo.recovery_point_listing().await?.live)
    }
    .await;
    match local {
        Ok(points) => {
            let waiting: Vec<String> = points
                .iter()
                .filter(|(id, _)| !in_vault.iter().any(|(v, _)| v == id))
                .map(|(id, rp)| format!("{} ({})", id.short(), crate::ui::local_rfc3339(&rp.time)))
                .collect();
            if !waiting.is_empty() {
                ctx.notice(&format!(
                    "note: {} recovery point(s) are on the local tier only, not yet copied to the vault: {}; `rbackup copy` copies them",
                    waiting.len(),
                    waiting.join(", ")
                ));
            }
        }
        Err(e) => ctx.notice(&format!(
            "warning: the local tier {} cannot be read: {}",
            tier.vault,
            crate::advice::render(&e)
        )),
    }
}

pub async fn restore(ctx: &Ctx, args: RestoreArgs) -> Result<u8> {
    let cfg = AgentConfig::load(&ctx.config_path)?.ok_or_else(|| {
        anyhow!("no agent config at {}: register this machine with the vault first (`rbackup register`), then restore with --machine ID --passphrase-file FILE", ctx.config_path.display())
    })?;
    let started = jiff::Timestamp::now();
    let (progress, bar) = ctx.progress("restore");
    let recovery_dir = args
        .recovery_dir
        .clone()
        .unwrap_or_else(|| cfg.recovery_dir.clone());
    let mut source_of: Option<(&str, String)> = None;
    let result = async {
        let (repo, source) = match args.other.open_other(ctx, &cfg).await? {
            Some(repo) => (repo, "vault"),
            None => crate::copy::restore_source(ctx, &cfg, &args.recovery_point).await?,
        };
        if cfg.local_tier.is_some() {
            ctx.notice(&format!(
                "restoring from the {source} ({})",
                repo.vault_url()
            ));
        }
        source_of = Some((source, repo.vault_url().to_string()));
        let mut opts = RestoreOptions::new(&args.recovery_point, &args.target, &recovery_dir);
        opts.paths = args
            .paths
            .iter()
            .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
            .collect();
        opts.progress = progress;
        opts.overwrite = args.overwrite.into();
        opts.delete = args.delete;
        opts.dry_run = args.dry_run;
        opts.downloads = args.downloads.map_or(0, |n| n as usize);
        opts.cancel = Some(crate::interrupt::stop_restore_on_signals(ctx));
        if cfg.throttle.restores {
            opts.throttle = crate::config::throttle(&cfg.throttle)?;
        }
        Ok(repo.restore(opts).await?)
    }
    .await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let incomplete =
        |r: &rbackup_engine::RestoreReport| !r.failed.is_empty() || r.stopped.is_some();
    if !args.dry_run {
        history::record(
            ctx,
            &cfg,
            &JobRecord::new("restore", None, started, &result, incomplete),
        );
    }
    let report = result?;
    if let Some(d) = &report.soft_deleted {
        ctx.notice(&format!(
            "note: recovery point {} is soft-deleted (deleted {} by {}); it can be restored or \
             brought back with `rbackup undelete` until {}",
            d.id.get(..8).unwrap_or(&d.id),
            crate::ui::local_rfc3339(&d.deleted_at),
            d.deleted_by,
            crate::ui::local_rfc3339(&d.purge_after)
        ));
    }
    for w in &report.warnings {
        ctx.notice(&format!("warning: {w}"));
    }
    let problems = crate::advice::restore_problems(&report, &recovery_dir);
    for line in &problems {
        ctx.notice(line);
    }
    let mut doc = serde_json::to_value(&report)?;
    if let Some((source, url)) = source_of {
        doc["source"] = source.into();
        doc["source_vault"] = url.into();
    }
    ctx.output(&doc, || restore_summary(&report, &args.target))?;
    Ok(if incomplete(&report) { 1 } else { 0 })
}

/// The human summary of a restore (or of what a dry run would do).
fn restore_summary(r: &rbackup_engine::RestoreReport, target: &std::path::Path) -> String {
    let mut out = if r.dry_run {
        format!(
            "dry run, nothing was changed: would write {} files ({} over existing ones), {} \
             dirs, {} from recovery point {} into {}",
            r.files,
            r.files_overwritten,
            r.dirs,
            HumanBytes(r.bytes),
            &r.recovery_point[..8],
            target.display()
        )
    } else {
        format!(
            "restored {} files ({} over existing ones{}), {} dirs, {} from recovery point {} \
             into {} in {:.1}s",
            r.files,
            r.files_overwritten,
            links_words(r.symlinks, r.hard_links),
            r.dirs,
            HumanBytes(r.bytes),
            &r.recovery_point[..8],
            target.display(),
            r.duration_s
        )
    };
    let would = if r.dry_run { "would keep" } else { "kept" };
    if r.files_kept > 0 {
        out += &format!(
            "; {would} {} files already there ({})",
            r.files_kept,
            HumanBytes(r.bytes_kept)
        );
    }
    if r.files_deleted + r.dirs_deleted > 0 {
        out += &format!(
            "; {} {} files and {} dirs ({}) the recovery point does not have",
            if r.dry_run { "would delete" } else { "deleted" },
            r.files_deleted,
            r.dirs_deleted,
            HumanBytes(r.bytes_deleted)
        );
    }
    out
}

pub async fn check(ctx: &Ctx, read_data: bool) -> Result<u8> {
    let (cfg, repo) = open_configured(ctx).await?;
    let mut opts = rbackup_engine::CheckOptions::new(read_data);
    opts.freshness = Some(crate::freshness::load(ctx, &cfg));
    let report = repo.check_with(opts).await?;
    crate::freshness::save(ctx, &cfg, &report.freshness_mark);
    for e in &report.errors {
        ctx.notice(&format!("error: {e}"));
    }
    for f in &report.freshness {
        ctx.notice(&format!("error: {f}"));
    }
    let legacy = |i: &&rbackup_engine::KeyFileIssue| i.state == KeyFileState::NoIntegrityRecord;
    for i in report.key_files.iter().filter(legacy) {
        ctx.notice(&format!(
            "note: key file {} has no integrity record (it was written by an older rbackup, \
             without a copy); run `rbackup key repair --passphrase-file FILE` to add one",
            i.path
        ));
    }
    if report.key_files.iter().any(|i| !legacy(&i)) {
        ctx.notice(&format!(
            "a damaged or missing key file can lock this machine out on the day it is needed: \
             {}",
            crate::keys::REPAIR
        ));
    }
    if report.unreferenced_packs > 0 {
        ctx.notice(&format!(
            "note: {} pack(s) are not in any index (left by an interrupted backup): harmless; \
             `rbackup prune` removes them",
            report.unreferenced_packs
        ));
    }
    ctx.output(&report, || {
        format!(
            "{} recovery points{}, {} trees, {} packs, {} blobs{}: {}",
            report.recovery_points,
            if report.soft_deleted > 0 {
                format!(" ({} soft-deleted)", report.soft_deleted)
            } else {
                String::new()
            },
            report.trees,
            report.packs,
            report.blobs,
            if read_data {
                format!(", {} blobs read and verified", report.blobs_read)
            } else {
                String::new()
            },
            if report.ok() {
                "no errors".to_string()
            } else {
                format!("{} ERRORS", report.errors.len() + report.freshness.len())
            }
        )
    })?;
    Ok(if report.ok() { 0 } else { 1 })
}

pub fn throttle(ctx: &Ctx, cmd: ThrottleCmd) -> Result<u8> {
    let mut cfg = AgentConfig::load(&ctx.config_path)?.ok_or_else(|| {
        anyhow!(
            "no agent config at {}: register first",
            ctx.config_path.display()
        )
    })?;
    if let ThrottleCmd::Set {
        work_days,
        work_hours,
        work_rate,
        non_work_rate,
    } = cmd
    {
        let t = &mut cfg.throttle;
        let merge = |old: &mut Option<String>, new: Option<String>| {
            if new.is_some() {
                *old = new;
            }
        };
        merge(&mut t.work_days, work_days);
        merge(&mut t.work_hours, work_hours);
        merge(&mut t.work_rate, work_rate);
        merge(&mut t.non_work_rate, non_work_rate);
        crate::config::throttle_schedule(&cfg.throttle)?;
        cfg.save(&ctx.config_path)?;
    }
    let schedule = crate::config::throttle_schedule(&cfg.throttle)?;
    let now = schedule.rate_at(jiff::Zoned::now());
    ctx.output(
        &json!({"work_days": schedule.work_days.to_string(), "work_hours": schedule.work_hours.to_string(),
                "work_rate": schedule.work_rate.to_string(), "non_work_rate": schedule.non_work_rate.to_string(),
                "rate_now": now.to_string()}),
        || format!(
            "work days {}, work hours {} (local time)\nwork rate {}, non-work rate {}\nin force now: {}",
            schedule.work_days, schedule.work_hours, schedule.work_rate, schedule.non_work_rate, now
        ),
    )?;
    Ok(0)
}
