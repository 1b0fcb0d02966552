//! The local tier (`register --local-tier DIR`): a second vault on local disk, holding this
//! machine with the same keys, that takes each backup first at disk speed. Recovery points are
//! then copied to the cloud vault (the config's `vault`) with `Repository::copy_to`, which
//! dedups against the cloud, is throttled like any upload and resumes after an interruption.
//! Local recovery points older than the tier's `days` are removed from the local tier only once
//! the copy has proved the cloud holds them; the newest always stays.
//!
//! Backups stop when the cloud vault is read-only (as last seen) or has not been reached for
//! more than [`CLOUD_GRACE_DAYS`]; restores from either tier go on. What the agent last knew of
//! the cloud lives in [`crate::remembered`].

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use rbackup_engine::crypto::{KdfParams, Passphrase};
use rbackup_engine::store::StoreOptions;
use rbackup_engine::{Actor, CopyOptions, CopyReport, Id, PruneOptions, Repository, Vault};

use crate::config::{AgentConfig, LocalTier};
use crate::remembered::{self, CopyRecord, Remembered};
use crate::setup::{canonical_url, open_machine_in, open_with_config};
use crate::ui::Ctx;

/// Backups stop after this many days without reaching the cloud vault.
pub const CLOUD_GRACE_DAYS: f64 = 15.0;

/// Local recovery points older than this many days go once the cloud has them (the default of
/// `--local-days`).
pub const DEFAULT_LOCAL_DAYS: u32 = 5;

/// The cloud vault as a backup found it.
pub enum Cloud {
    /// Opened: the copy goes there.
    Reached(Box<Vault>),
    /// Not reached (why, in words); backups go on within the grace period.
    Unreached(String),
}

/// Opens the cloud vault as a probe: one retry and short timeouts, so an unreachable cloud
/// costs seconds, not the minutes of retries an upload is allowed.
pub async fn probe(cfg: &AgentConfig) -> rbackup_engine::Result<Vault> {
    let mut opts = StoreOptions::default();
    opts.proxy = cfg.proxy.clone();
    opts.retries = 1;
    opts.request_timeout = Duration::from_secs(20);
    opts.retry_timeout = Duration::from_secs(30);
    let store = rbackup_engine::store::open(&cfg.vault, &opts)?;
    Vault::open(store, &cfg.vault).await
}

/// Probes the cloud vault and remembers what it found (when it was reached, its state);
/// returns it with the record as it now stands.
pub async fn reach_cloud(ctx: &Ctx, cfg: &AgentConfig) -> (Cloud, Remembered) {
    match probe(cfg).await {
        Ok(vault) => {
            let mem = remembered::update(ctx, cfg, |m| {
                m.cloud_last_reached = Some(jiff::Timestamp::now().to_string());
                m.cloud_state = vault.state_record().cloned();
            });
            (Cloud::Reached(Box::new(vault)), mem)
        }
        Err(e) => {
            let why = crate::advice::render(&anyhow::Error::from(e));
            (Cloud::Unreached(why), remembered::load(ctx, cfg))
        }
    }
}

/// Whether a backup may run now, by what the agent knows of the cloud vault: refused when it
/// is read-only (as last seen: the engine's own refusal), or, with a local tier, when it has
/// not been reached for more than [`CLOUD_GRACE_DAYS`].
pub fn may_back_up(cfg: &AgentConfig, m: &Remembered) -> Result<()> {
    rbackup_engine::refuse_if_read_only(&cfg.vault, m.cloud_state.as_ref(), "take backups into")?;
    match m.days_since_reached() {
        Some(days) if cfg.local_tier.is_some() && days > CLOUD_GRACE_DAYS => bail!(
            "backups have stopped: the cloud vault {} has not been reached for {days:.0} days \
             (since {}; backups stop after {CLOUD_GRACE_DAYS:.0}). Restores from the local tier \
             and from the cloud still work. Check the network, proxy and credentials, then run \
             `rbackup status`: backups start again once the cloud vault is reached",
            cfg.vault,
            m.cloud_last_reached
                .as_deref()
                .map_or_else(|| "-".into(), crate::ui::local_rfc3339),
        ),
        _ => Ok(()),
    }
}

/// Where a backup goes: the local tier when the machine has one (after probing the cloud:
/// see [`may_back_up`]), else the vault itself.
pub async fn backup_repo(ctx: &Ctx, cfg: &AgentConfig) -> Result<(Repository, Option<Cloud>)> {
    let Some(tier) = &cfg.local_tier else {
        return Ok((open_with_config(cfg).await?, None));
    };
    let (cloud, mem) = reach_cloud(ctx, cfg).await;
    may_back_up(cfg, &mem)?;
    if let Cloud::Unreached(e) = &cloud {
        ctx.notice(&format!(
            "warning: the cloud vault {} cannot be reached ({e}); backing up to the local tier \
             only (backups stop after {CLOUD_GRACE_DAYS:.0} days without the cloud)",
            cfg.vault
        ));
    }
    Ok((open_tier(cfg, tier).await?, Some(cloud)))
}

/// The machine in its local tier, unlocked with the local key file.
pub async fn open_tier(cfg: &AgentConfig, tier: &LocalTier) -> Result<Repository> {
    let store = rbackup_engine::store::open(&tier.vault, &StoreOptions::default())?;
    let vault = Vault::open(store, &tier.vault)
        .await
        .with_context(|| format!("the local tier {} cannot be opened", tier.vault))?;
    open_machine_in(&vault, cfg).await
}

/// What happened after a backup into the local tier.
#[derive(Debug, Default, serde::Serialize)]
pub struct TierOutcome {
    /// The copy to the cloud vault, when it ran to the end.
    pub copy: Option<CopyReport>,
    /// Why the recovery point is on the local tier only, when it is.
    pub copy_error: Option<String>,
    /// Local recovery points removed because the cloud holds them and they are old.
    pub pruned_local: Vec<String>,
}

/// After a backup into the local tier: copies what the cloud lacks, then prunes the local tier.
pub async fn after_backup(
    ctx: &Ctx,
    cfg: &AgentConfig,
    local: &Repository,
    cloud: Cloud,
) -> TierOutcome {
    let mut out = TierOutcome::default();
    match cloud {
        Cloud::Unreached(e) => {
            let err = anyhow!("the cloud vault could not be reached: {e}");
            let rec = CopyRecord::new(local.vault_url(), &cfg.vault, &Err(err));
            out.copy_error = rec.error.clone();
            remembered::record_copy(ctx, cfg, rec);
        }
        Cloud::Reached(vault) => match copy_to_cloud(ctx, cfg, local, &vault, Vec::new()).await {
            Ok(r) => out.copy = Some(r),
            Err(e) => out.copy_error = Some(crate::advice::render(&e)),
        },
    }
    if let Some(e) = &out.copy_error {
        ctx.notice(&format!(
            "warning: the recovery point is on the local tier only: {e}. It is copied to the \
             cloud vault with the next backup, or now with `rbackup copy`"
        ));
    }
    if let Some(copy) = &out.copy {
        out.pruned_local = after_copy(ctx, cfg, local, copy).await;
    }
    out
}

/// After a copy from the local tier to the cloud: prunes the local tier (see [`prune_local`]),
/// saying what it removed; a failure is a warning (the backup and the copy stand).
pub async fn after_copy(
    ctx: &Ctx,
    cfg: &AgentConfig,
    local: &Repository,
    copy: &CopyReport,
) -> Vec<String> {
    let Some(tier) = &cfg.local_tier else {
        return Vec::new();
    };
    match prune_local(cfg, tier, local, copy).await {
        Ok(gone) => {
            if !gone.is_empty() {
                ctx.notice(&format!(
                    "removed {} recovery point(s) older than {} days from the local tier (the \
                     cloud vault has them)",
                    gone.len(),
                    tier.days
                ));
            }
            gone
        }
        Err(e) => {
            ctx.notice(&format!(
                "warning: could not prune the local tier {}: {}",
                tier.vault,
                crate::advice::render(&e)
            ));
            Vec::new()
        }
    }
}

/// Copies recovery points (`points`; empty: every one the cloud lacks) from the local tier to
/// the cloud vault, and records the outcome for `status`.
pub async fn copy_to_cloud(
    ctx: &Ctx,
    cfg: &AgentConfig,
    local: &Repository,
    cloud: &Vault,
    points: Vec<String>,
) -> Result<CopyReport> {
    let result = async {
        let cloud = cloud.clone().with_append_only(cfg.append_only);
        let dest = open_machine_in(&cloud, cfg).await?;
        copy(ctx, cfg, local, &dest, points).await
    }
    .await;
    remembered::record_copy(
        ctx,
        cfg,
        CopyRecord::new(local.vault_url(), &cfg.vault, &result),
    );
    result
}

/// `local.copy_to(dest)` with the agent's throttle, cache folder, signals and progress.
pub async fn copy(
    ctx: &Ctx,
    cfg: &AgentConfig,
    from: &Repository,
    dest: &Repository,
    points: Vec<String>,
) -> Result<CopyReport> {
    let (progress, bar) = ctx.progress("copy");
    let mut opts = CopyOptions::default();
    opts.recovery_points = points;
    opts.cache_dir = Some(cfg.cache_dir.clone());
    opts.throttle = crate::config::throttle(&cfg.throttle)?;
    opts.cancel = crate::interrupt::stop_on_signals(ctx);
    opts.progress = progress;
    let result = from.copy_to(dest, opts).await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(result?)
}

/// Removes from the local tier the recovery points older than the tier's days that `copy`
/// proved to be in the cloud (copied, or already there), never the newest; then prunes their
/// data. Returns the ids removed.
async fn prune_local(
    cfg: &AgentConfig,
    tier: &LocalTier,
    local: &Repository,
    copy: &CopyReport,
) -> Result<Vec<String>> {
    let in_cloud: HashSet<&str> = copy
        .copied
        .iter()
        .chain(&copy.already_there)
        .map(String::as_str)
        .collect();
    let live = local.recovery_point_listing().await?.live;
    let newest = live
        .iter()
        .max_by(|a, b| a.1.time.cmp(&b.1.time))
        .map(|p| p.0);
    let cutoff =
        jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * i64::from(tier.days));
    let old = |t: &str| t.parse::<jiff::Timestamp>().is_ok_and(|t| t < cutoff);
    let doomed: Vec<(Id, _)> = live
        .into_iter()
        .filter(|(id, rp)| Some(*id) != newest && old(&rp.time))
        .filter(|(id, _)| in_cloud.contains(id.to_hex().as_str()))
        .collect();
    if doomed.is_empty() {
        return Ok(Vec::new());
    }
    let reason = format!(
        "local tier: older than {} days and in the cloud vault {}",
        tier.days, cfg.vault
    );
    local
        .soft_delete(&doomed, &reason, &Actor::current(Some(&cfg.machine_id)))
        .await?;
    // The tier's soft-delete window is 0 days (set when it was made): the prune purges them.
    let mut opts = PruneOptions::default();
    opts.grace = Duration::ZERO;
    local.prune(opts).await?;
    Ok(doomed.iter().map(|(id, _)| id.to_hex()).collect())
}

/// `register --local-tier DIR`: creates the tier's vault in `dir` (new or empty), with a
/// soft-delete window of 0 days (the cloud keeps what it removes), and registers the machine
/// there with the same keys, its key file wrapped under `passphrase`.
pub async fn create(
    cfg: &AgentConfig,
    dir: &Path,
    days: u32,
    passphrase: &Passphrase,
) -> Result<LocalTier> {
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let url = canonical_url(&dir.display().to_string())?;
    crate::setup::refuse_occupied(&url)
        .await
        .context("the local tier must be a new or empty folder")?;
    let store = rbackup_engine::store::open(&url, &StoreOptions::default())?;
    let (mut vault, creds) = Vault::create(store, &url, Duration::from_secs(600)).await?;
    let (pin, _) = vault.issue_pin(Duration::from_secs(300)).await?;
    vault.set_soft_delete_days(0, Some(&pin)).await?;
    let cloud = open_with_config(cfg).await?;
    vault
        .register_copy(&creds, &cloud, passphrase, KdfParams::default())
        .await?;
    Ok(LocalTier { vault: url, days })
}
