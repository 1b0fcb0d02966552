//! `rbackup copy`: recovery points from one vault of this machine to another — from the local
//! tier to the cloud vault (no `--to`), or from the machine's vault to any vault `--to` names,
//! registering the machine there first when given that vault's credentials. And the choice of
//! tier a restore reads from.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use indicatif::HumanBytes;
use rbackup_engine::{CopyReport, EngineError, Repository, Unlock};

use crate::config::AgentConfig;
use crate::remembered::{self, CopyRecord};
use crate::secret::{self, Ask};
use crate::setup::{canonical_url, open_vault, open_with_config, read_credentials};
use crate::tier::{self, Cloud};
use crate::ui::Ctx;

#[derive(clap::Args, Debug)]
pub struct CopyArgs {
    /// Recovery points to copy (ids, unique prefixes, or `latest`; default: every one the
    /// destination lacks).
    pub recovery_points: Vec<String>,
    /// The vault to copy into (file:///..., s3://, az://, gs://); default: from the local tier
    /// to the machine's vault.
    #[arg(long, value_name = "URL")]
    pub to: Option<String>,
    /// Credentials of the `--to` vault, to register this machine there (same id and keys)
    /// when it is not yet.
    #[arg(long, value_name = "FILE", requires = "to")]
    pub vault_credentials: Option<PathBuf>,
    /// This machine's passphrase, protecting its key file in the `--to` vault (default:
    /// RBACKUP_PASSPHRASE_FILE/_COMMAND, or asked on the terminal).
    #[arg(long, value_name = "FILE", requires = "vault_credentials")]
    pub passphrase_file: Option<PathBuf>,
}

pub async fn copy(ctx: &Ctx, args: CopyArgs) -> Result<u8> {
    let cfg = AgentConfig::load_required(&ctx.config_path)?;
    let report = match &args.to {
        None => {
            let Some(t) = &cfg.local_tier else {
                bail!(crate::usage::UsageError(
                    "this machine has no local tier: name the vault to copy into with --to URL"
                        .into()
                ));
            };
            let local = tier::open_tier(&cfg, t).await?;
            let vault = match tier::reach_cloud(ctx, &cfg).await.0 {
                Cloud::Reached(v) => v,
                Cloud::Unreached(e) => {
                    let err = anyhow!(
                        "the cloud vault {} cannot be reached: {e}; the recovery points stay on \
                         the local tier and are copied with the next backup",
                        cfg.vault
                    );
                    let rec = CopyRecord::new(&t.vault, &cfg.vault, &Err(err));
                    let msg = rec.error.clone().unwrap_or_default();
                    remembered::record_copy(ctx, &cfg, rec);
                    bail!(msg);
                }
            };
            let r = tier::copy_to_cloud(ctx, &cfg, &local, &vault, args.recovery_points).await?;
            tier::after_copy(ctx, &cfg, &local, &r).await;
            r
        }
        Some(url) => {
            let url = canonical_url(url)?;
            let from = open_with_config(&cfg).await?;
            let result = async {
                let dest = open_dest(ctx, &cfg, &from, &url, &args).await?;
                tier::copy(ctx, &cfg, &from, &dest, args.recovery_points).await
            }
            .await;
            remembered::record_copy(ctx, &cfg, CopyRecord::new(&cfg.vault, &url, &result));
            result?
        }
    };
    ctx.output(&report, || summary(&report))?;
    Ok(0)
}

/// The machine in the `--to` vault: opened with the local key file, or registered there first
/// (with `--vault-credentials`) when the vault does not have it.
async fn open_dest(
    ctx: &Ctx,
    cfg: &AgentConfig,
    from: &Repository,
    url: &str,
    args: &CopyArgs,
) -> Result<Repository> {
    if url == cfg.vault {
        bail!(crate::usage::UsageError(format!(
            "{url} is this machine's own vault: name another vault to copy into"
        )));
    }
    let vault = open_vault(url, cfg.proxy.as_deref()).await?;
    let open = || crate::setup::open_machine_in(&vault, cfg);
    match open().await {
        Err(e) if matches!(e.downcast_ref(), Some(EngineError::MachineNotFound { .. })) => {}
        other => return other,
    }
    let Some(creds_file) = &args.vault_credentials else {
        bail!(
            "machine {} is not registered with {url}: pass --vault-credentials FILE (from \
             `rbackup vault create` or `rbackup vault credentials` for that vault) to register \
             it there with the same keys",
            cfg.machine_id
        );
    };
    let creds = read_credentials(creds_file)?;
    if canonical_url(&creds.vault)? != url {
        bail!(
            "{} holds credentials for {}, not for {url}: pass that vault's own (its owner \
             issues them with `rbackup vault credentials {url} --out FILE`)",
            creds_file.display(),
            creds.vault
        );
    }
    let (passphrase, _) = secret::obtain(
        args.passphrase_file.as_deref(),
        Ask::Existing,
        "--passphrase-file",
    )?;
    // The key file written there must open with the passphrase this machine already has:
    // prove it on the machine's own vault before writing anything.
    let own = open_vault(&cfg.vault, cfg.proxy.as_deref()).await?;
    Repository::open(&own, &cfg.machine_id, Unlock::Passphrase(&passphrase), None)
        .await
        .context("that is not this machine's passphrase")?;
    vault
        .register_copy(
            &creds,
            from,
            &passphrase,
            rbackup_engine::crypto::KdfParams::default(),
        )
        .await?;
    ctx.notice(&format!(
        "Registered machine {} with {url} (same id and keys; its key file there opens with this \
         machine's passphrase).",
        cfg.machine_id
    ));
    open().await
}

fn summary(r: &CopyReport) -> String {
    format!(
        "copied {} recovery point(s) from {} to {} ({} already there): {} blobs, read {}, added {} in {:.1}s",
        r.copied.len(),
        r.from,
        r.to,
        r.already_there.len(),
        r.blobs_copied,
        HumanBytes(r.bytes_read),
        HumanBytes(r.bytes_added),
        r.duration_s
    )
}

/// Which tier a restore of `spec` reads: the local tier when the machine has one and the
/// recovery point is there and verified (`Repository::verify_recovery_point`), else the
/// machine's vault. Returns the repository and its name for the report.
pub async fn restore_source(
    ctx: &Ctx,
    cfg: &AgentConfig,
    spec: &str,
) -> Result<(Repository, &'static str)> {
    if let Some(t) = &cfg.local_tier {
        let local = async {
            let repo = tier::open_tier(cfg, t).await?;
            repo.verify_recovery_point(spec).await?;
            anyhow::Ok(repo)
        }
        .await;
        match local {
            Ok(repo) => return Ok((repo, "local tier")),
            Err(e) => {
                let not_there = matches!(
                    e.downcast_ref(),
                    Some(EngineError::RecoveryPointNotFound { .. } | EngineError::NoRecoveryPoints)
                );
                if !not_there {
                    ctx.notice(&format!(
                        "warning: the local tier {} cannot restore {spec}: {}; restoring from the cloud vault",
                        t.vault,
                        crate::advice::render(&e)
                    ));
                }
            }
        }
    }
    Ok((open_with_config(cfg).await?, "vault"))
}
