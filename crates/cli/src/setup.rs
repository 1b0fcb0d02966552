//! Vault creation, registration, passphrases, and opening the configured repository.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use rbackup_engine::crypto::{KdfParams, MasterKeys, Passphrase};
use rbackup_engine::store::{StoreOptions, VaultUrl};
use rbackup_engine::{Registration, Repository, Unlock, Vault, VaultCredentials};
use serde::{Deserialize, Serialize};
use serde_json::json;
use zeroize::Zeroizing;

use crate::config::{self, AgentConfig, Throttle, write_atomic, write_new};
use crate::secret::{self, Ask, Source};
use crate::ui::{Ctx, local_rfc3339, parse_duration};
use crate::{PassphraseCmd, RegisterArgs, VaultCmd};

const LOST_PASSPHRASE: &str = "Keep a copy of it somewhere safe, away from this machine: it is needed to recover your data on another machine, and a lost passphrase means lost backups (nobody, including rbackup, can recover it).";

/// Canonical URL (a plain path becomes file:///abs).
pub fn canonical_url(url: &str) -> Result<String> {
    Ok(VaultUrl::parse(url)?.to_url_string())
}

/// Refuses to create a vault where other files already are: a typo in the path would
/// otherwise mix backups into someone's folder (or bucket). A vault already there is left to
/// `Vault::create`, which says so.
pub(crate) async fn refuse_occupied(url: &str) -> Result<()> {
    let store = rbackup_engine::store::open(url, &StoreOptions::default())?;
    if store.exists("vault.json").await? {
        return Ok(());
    }
    let found = match VaultUrl::parse(url)? {
        VaultUrl::Local(dir) => match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .flatten()
                .map(|e| e.file_name())
                .next()
                .map(|n| dir.join(n).display().to_string()),
            Err(_) => None, // missing: it will be made
        },
        _ => store.list("").await?.into_iter().next().map(|o| o.path),
    };
    if let Some(example) = found {
        bail!(
            "{url} is not empty and holds no vault (it has {example}, for one): create the vault in a new or empty folder or bucket, or pass --force to create it there anyway"
        );
    }
    Ok(())
}

pub async fn open_vault(url: &str, proxy: Option<&str>) -> Result<Vault> {
    let mut opts = StoreOptions::default();
    opts.proxy = proxy.map(str::to_string);
    let store = rbackup_engine::store::open(url, &opts)?;
    Ok(Vault::open(store, url).await?)
}

pub async fn vault(ctx: &Ctx, cmd: VaultCmd) -> Result<u8> {
    match cmd {
        VaultCmd::Create {
            url,
            credentials_out,
            valid_for,
            force,
            name,
        } => {
            let url = canonical_url(&url)?;
            if let Some(n) = &name {
                rbackup_engine::check_vault_name(n)?;
            }
            if !force {
                refuse_occupied(&url).await?;
            }
            if matches!(VaultUrl::parse(&url)?, VaultUrl::Memory(_)) {
                ctx.notice("warning: a memory:// vault lives only inside this process: nothing of it persists after the command ends");
            }
            let store = rbackup_engine::store::open(&url, &StoreOptions::default())?;
            let clock = std::sync::Arc::new(rbackup_engine::SystemClock::new());
            let valid_for = parse_duration(&valid_for)?;
            let (vault, creds) =
                Vault::create_named(store, &url, name.as_deref(), valid_for, clock).await?;
            write_credentials(&credentials_out, &creds)?;
            ctx.output(
                &json!({"vault": url, "vault_id": vault.id(), "name": vault.name(), "credentials": credentials_out, "expires_at": creds.expires_at}),
                || format!("Created vault {url}\nCredentials written to {} (valid until {}); use them with `rbackup register --vault-credentials {}`.", credentials_out.display(), local_rfc3339(&creds.expires_at), credentials_out.display()),
            )?;
        }
        VaultCmd::Credentials {
            url,
            out,
            valid_for,
        } => {
            let url = canonical_url(&url)?;
            let mut vault = open_vault(&url, None).await?;
            let creds = vault.issue_credentials(parse_duration(&valid_for)?).await?;
            write_credentials(&out, &creds)?;
            ctx.output(
                &json!({"vault": url, "credentials": out, "generation": creds.generation, "expires_at": creds.expires_at}),
                || format!("New credentials written to {} (valid until {}); every older credentials file for this vault is now invalid.", out.display(), local_rfc3339(&creds.expires_at)),
            )?;
        }
        VaultCmd::Pin { url, valid_for } => {
            let url = canonical_url(&url)?;
            let mut vault = open_vault(&url, None).await?;
            let (pin, expires) = vault.issue_pin(parse_duration(&valid_for)?).await?;
            ctx.output(
                &json!({"vault": url, "pin": pin, "expires_at": expires}),
                || format!("Security PIN: {pin}\nValid until {}, for one critical operation (shortening the soft-delete window, purging deleted recovery points at once); it is shown only now, and any older PIN no longer works.", local_rfc3339(&expires)),
            )?;
        }
        VaultCmd::Machines {
            url,
            passphrase_file,
        } => return crate::browse::vault_machines(ctx, &url, passphrase_file.as_deref()).await,
        VaultCmd::SetState { url, state } => return set_state(ctx, &url, state).await,
        VaultCmd::SetSoftDelete { url, days, pin } => {
            return set_soft_delete(ctx, &url, days, &pin).await;
        }
    }
    Ok(0)
}

/// `vault set-state`: records who set it as `user@host`.
async fn set_state(ctx: &Ctx, url: &str, state: rbackup_engine::VaultState) -> Result<u8> {
    let url = canonical_url(url)?;
    let mut vault = open_vault(&url, None).await?;
    let actor = rbackup_engine::Actor::current(None);
    let by = format!("{}@{}", actor.user, actor.hostname);
    let old = vault.set_state(state, &by).await?;
    let rec = vault.state_record().cloned();
    let was = old.map_or("active", |r| r.state.as_str());
    ctx.output(
        &json!({"vault": url, "state": state.as_str(), "previous": was, "set_by": rec.as_ref().map(|r| &r.set_by), "set_at": rec.as_ref().map(|r| &r.set_at)}),
        || match state {
            rbackup_engine::VaultState::ReadOnly => format!("Vault {url} is now read-only (was {was}): backups and copies into it are refused; restores, check and listings go on."),
            rbackup_engine::VaultState::Active => format!("Vault {url} is now active (was {was}): backups are taken again."),
        },
    )?;
    Ok(0)
}

/// The security PIN of a critical operation: `--pin`, else `--pin-file`, else `RBACKUP_PIN`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct PinArgs {
    /// The vault's security PIN (from `rbackup vault pin`); RBACKUP_PIN works too.
    #[arg(long, value_name = "PIN", conflicts_with = "pin_file")]
    pub pin: Option<String>,
    /// A file holding the security PIN.
    #[arg(long, value_name = "FILE")]
    pub pin_file: Option<PathBuf>,
}

impl PinArgs {
    /// The PIN given, if any.
    pub fn resolve(&self) -> Result<Option<String>> {
        if let Some(p) = &self.pin {
            return Ok(Some(p.trim().to_string()));
        }
        if let Some(f) = &self.pin_file {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read the PIN file {}", f.display()))?;
            return Ok(Some(text.trim().to_string()));
        }
        Ok(std::env::var("RBACKUP_PIN")
            .ok()
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty()))
    }
}

/// `vault set-soft-delete`: lengthening is free; shortening is a critical operation, recorded
/// in the job history of this host's machine when it has one.
async fn set_soft_delete(ctx: &Ctx, url: &str, days: u32, pin: &PinArgs) -> Result<u8> {
    let url = canonical_url(url)?;
    let mut vault = open_vault(&url, None).await?;
    let old = vault.soft_delete_days();
    let started = jiff::Timestamp::now();
    let result = vault
        .set_soft_delete_days(days, pin.resolve()?.as_deref())
        .await
        .map_err(anyhow::Error::from);
    let cfg = AgentConfig::load(&ctx.config_path).ok().flatten();
    if let Some(cfg) = cfg.filter(|_| days < old) {
        let what = format!("soft-delete window of {url} shortened from {old} to {days} days");
        let rec =
            crate::history::JobRecord::new("set-soft-delete", None, started, &result, |_| false);
        crate::history::record(ctx, &cfg, &rec.critical(&cfg.machine_id, what));
    }
    let old = result?;
    ctx.output(
        &json!({"vault": url, "soft_delete_days": days, "previous_days": old}),
        || format!("Soft-delete window of {url}: {days} days (was {old})."),
    )?;
    Ok(0)
}

fn write_credentials(path: &Path, creds: &VaultCredentials) -> Result<()> {
    write_atomic(path, creds.to_json().as_bytes(), 0o600)
}

pub(crate) fn read_credentials(path: &Path) -> Result<VaultCredentials> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        anyhow!(
            "cannot read the vault credentials file {}: {e}. Copy the file to a local folder (not a network share or removable disk) and try again",
            path.display()
        )
    })?;
    Ok(VaultCredentials::from_json(&text)?)
}

/// The machine's master keys in a local file readable only by its owner.
#[derive(Serialize, Deserialize)]
struct LocalKeyFile {
    machine_id: String,
    vault_id: String,
    keys: String,
}

fn key_file_path(config_path: &Path, machine: &str) -> PathBuf {
    config_path
        .parent()
        .unwrap_or(Path::new("."))
        .join("keys")
        .join(format!("{machine}.key"))
}

fn save_local_keys(path: &Path, machine: &str, vault_id: &str, keys: &MasterKeys) -> Result<()> {
    let body = LocalKeyFile {
        machine_id: machine.into(),
        vault_id: vault_id.into(),
        keys: hex::encode(keys.to_secret_bytes().as_slice()),
    };
    let text = Zeroizing::new(serde_json::to_string(&body)?);
    write_atomic(path, text.as_bytes(), 0o600)
}

pub fn load_local_keys(path: &Path) -> Result<MasterKeys> {
    let text = Zeroizing::new(std::fs::read_to_string(path).with_context(|| {
        format!("cannot read the machine key file {} (it lets scheduled runs work without the passphrase): restore it from your backup of the config dir, or re-register", path.display())
    })?);
    let body: LocalKeyFile = serde_json::from_str(&text)
        .with_context(|| format!("key file {} is damaged", path.display()))?;
    let bytes = Zeroizing::new(
        hex::decode(&body.keys)
            .with_context(|| format!("key file {} is damaged", path.display()))?,
    );
    Ok(MasterKeys::from_secret_bytes(&bytes)?)
}

pub async fn register(ctx: &Ctx, args: RegisterArgs) -> Result<u8> {
    let creds = read_credentials(&args.vault_credentials)?;
    let throttle = Throttle {
        work_days: args.work_days,
        work_hours: args.work_hours,
        work_rate: args.work_rate,
        non_work_rate: args.non_work_rate,
        restores: false,
    };
    config::throttle_schedule(&throttle)?;
    if let Some(dir) = &args.local_tier {
        refuse_occupied(&canonical_url(&dir.display().to_string())?)
            .await
            .context("the local tier must be a new or empty folder")?;
    }
    if let Some(existing) = AgentConfig::load(&ctx.config_path)? {
        if existing.vault == creds.vault {
            ctx.notice(&format!(
                "This machine is already registered with {} as machine {}; nothing was changed.",
                existing.vault, existing.machine_id
            ));
            ctx.output(&json!({"machine_id": existing.machine_id, "vault": existing.vault, "already_registered": true}), String::new)?;
            return Ok(0);
        }
        bail!(
            "this agent ({}) is already registered with vault {}: use another --config to register with {}",
            ctx.config_path.display(),
            existing.vault,
            creds.vault
        );
    }
    let (passphrase, source, generated) = match (&args.passphrase_file, &args.save_passphrase_to) {
        (Some(f), _) => {
            let (p, src) = secret::obtain(Some(f), Ask::New, "--passphrase-file")?;
            (p, src, false)
        }
        (None, Some(out)) => {
            let p = Passphrase::generate();
            write_new(out, p.as_str().as_bytes(), 0o600)?;
            (p, Source::File(out.clone()), true)
        }
        (None, None) => {
            let (p, src) = secret::obtain(None, Ask::New, "--passphrase-file").context(
                "or let one be made with --generate-passphrase --save-passphrase-to FILE",
            )?;
            (p, src, false)
        }
    };
    let mut cfg = do_register(
        ctx,
        &creds,
        &passphrase,
        args.machine_name,
        args.cache_dir,
        args.recovery_dir,
        args.proxy,
        throttle,
        args.append_only,
    )
    .await?;
    if let Some(dir) = &args.local_tier {
        let tier = crate::tier::create(&cfg, dir, args.local_days, &passphrase)
            .await
            .with_context(|| format!("machine {} is registered with {} and backs up there directly: its local tier {} could not be made", cfg.machine_id, cfg.vault, dir.display()))?;
        ctx.notice(&format!(
            "Local tier: {} takes each backup first; recovery points are copied to {} after each backup and kept locally for {} days once copied.",
            tier.vault, cfg.vault, tier.days
        ));
        cfg.local_tier = Some(tier);
        cfg.save(&ctx.config_path)?;
        crate::remembered::update(ctx, &cfg, |m| {
            m.cloud_last_reached = Some(jiff::Timestamp::now().to_string());
        });
    }
    let where_saved = match &source {
        Source::File(p) if generated => format!(
            "The generated passphrase was saved to {} (mode 0600).",
            p.display()
        ),
        other => format!("The passphrase is {}.", other.describe()),
    };
    ctx.notice(&format!(
        "Registered machine {} ({}) with vault {}.\n{where_saved}\n{LOST_PASSPHRASE}",
        cfg.machine_id, cfg.machine_name, cfg.vault
    ));
    let chattr = if cfg.append_only {
        append_only_setup(ctx, &cfg)?
    } else {
        None
    };
    ctx.output(&json!({"machine_id": cfg.machine_id, "machine_name": cfg.machine_name, "vault": cfg.vault, "passphrase_file": match &source { Source::File(p) => Some(p), _ => None }, "config": ctx.config_path, "append_only": cfg.append_only, "chattr": chattr, "local_tier": cfg.local_tier.as_ref().map(|t| &t.vault)}), String::new)?;
    Ok(0)
}

/// `register --append-only`: says what it means, and on a local vault creates every folder the
/// machine writes into (a folder a put creates later inside an append-only one would not be
/// append-only) and returns the `chattr +a` command that makes them append-only, for the
/// vault's owner to run as root. The agent itself must then run without CAP_LINUX_IMMUTABLE
/// (not as root, or with that capability dropped), or it could undo it.
fn append_only_setup(ctx: &Ctx, cfg: &AgentConfig) -> Result<Option<String>> {
    ctx.notice(
        "This machine is append-only: it never deletes or overwrites in the vault, so `rbackup forget` and `rbackup prune` are refused here and scheduled jobs skip their retention step. Run retention for it from an admin host with delete-capable store access: `rbackup forget|prune --machine ID` with this machine's passphrase or key file.",
    );
    let VaultUrl::Local(root) = VaultUrl::parse(&cfg.vault)? else {
        ctx.notice("Give this machine store credentials that can create and read objects but cannot delete or overwrite them.");
        return Ok(None);
    };
    let store = rbackup_engine::store::LocalStore::new(root)?;
    let folders = store.create_folders(&rbackup_engine::machine_folders(&cfg.machine_id))?;
    let mut words = vec!["chattr".to_string(), "+a".to_string()];
    words.extend(folders.iter().map(|f| f.display().to_string()));
    let command = shlex::try_join(words.iter().map(String::as_str))
        .map_err(|e| anyhow!("cannot quote the vault's folder names for a shell: {e}"))?;
    ctx.notice(&format!(
        "Created the {} folders this machine writes into. As root, make them append-only (the agent must then not run with CAP_LINUX_IMMUTABLE, e.g. not as root):\n{command}",
        folders.len()
    ));
    Ok(Some(command))
}

#[allow(clippy::too_many_arguments)]
async fn do_register(
    ctx: &Ctx,
    creds: &VaultCredentials,
    passphrase: &Passphrase,
    name: Option<String>,
    cache_dir: Option<PathBuf>,
    recovery_dir: Option<PathBuf>,
    proxy: Option<String>,
    throttle: Throttle,
    append_only: bool,
) -> Result<AgentConfig> {
    let vault = open_vault(&creds.vault, proxy.as_deref()).await?;
    let hostname = hostname();
    let name = name.unwrap_or_else(|| hostname.clone());
    let (machine, keys) = vault
        .register(
            creds,
            Registration {
                name: name.clone(),
                hostname,
                passphrase,
                kdf: KdfParams::default(),
                chunker: Default::default(),
            },
        )
        .await?;
    // Every path in the config is absolute: a timer runs the agent from another directory
    // than the one it was registered in.
    let abs = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
    let key_file = abs(key_file_path(&ctx.config_path, &machine));
    save_local_keys(&key_file, &machine, vault.id(), &keys)?;
    let cfg = AgentConfig {
        vault: creds.vault.clone(),
        machine_id: machine,
        machine_name: name,
        key_file,
        cache_dir: abs(cache_dir.map_or_else(config::default_cache_dir, Ok)?),
        recovery_dir: abs(recovery_dir.map_or_else(config::default_recovery_dir, Ok)?),
        proxy,
        append_only,
        throttle,
        links: Default::default(),
        jobs: Vec::new(),
        local_tier: None,
    };
    cfg.save(&ctx.config_path)?;
    Ok(cfg)
}

/// The kernel's node name (what `hostname` prints), or `localhost` when it has none.
fn hostname() -> String {
    let name = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .trim()
        .to_string();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

/// The configured repository, unlocked with the local key file.
pub async fn open_configured(ctx: &Ctx) -> Result<(AgentConfig, Repository)> {
    let cfg = AgentConfig::load(&ctx.config_path)?.ok_or_else(|| {
        anyhow!(
            "no agent config at {}: register with `rbackup register --vault-credentials FILE ...`, or run `rbackup backup PATH` once to set up a local vault",
            ctx.config_path.display()
        )
    })?;
    let repo = open_with_config(&cfg).await?;
    Ok((cfg, repo))
}

pub async fn open_with_config(cfg: &AgentConfig) -> Result<Repository> {
    let vault = open_vault(&cfg.vault, cfg.proxy.as_deref())
        .await?
        .with_append_only(cfg.append_only);
    open_machine_in(&vault, cfg).await
}

/// This machine in `vault` (its own, the local tier, or a copy's destination), unlocked with
/// the local key file, with the configured cache.
pub async fn open_machine_in(vault: &Vault, cfg: &AgentConfig) -> Result<Repository> {
    let keys = load_local_keys(&cfg.key_file)?;
    Ok(Repository::open(
        vault,
        &cfg.machine_id,
        Unlock::Keys(keys),
        Some(&cfg.cache_dir),
    )
    .await?)
}

/// The embedded default (docs/cli.md, "Embedded default"): a local vault, a generated
/// passphrase saved 0600.
pub async fn setup_default(ctx: &Ctx) -> Result<AgentConfig> {
    let vault_dir = config::default_vault_dir()?;
    let url = canonical_url(&vault_dir.display().to_string())?;
    let store = rbackup_engine::store::open(&url, &StoreOptions::default())?;
    let creds = match Vault::create(store.clone(), &url, Duration::from_secs(3600)).await {
        Ok((_, c)) => c,
        // The vault is ours and local: issuing fresh credentials is what its owner would do.
        Err(rbackup_engine::EngineError::VaultExists { .. }) => {
            Vault::open(store, &url)
                .await?
                .issue_credentials(Duration::from_secs(3600))
                .await?
        }
        Err(e) => return Err(e.into()),
    };
    let pass_file = ctx
        .config_path
        .parent()
        .unwrap_or(Path::new("."))
        .join("passphrase.txt");
    let passphrase = if pass_file.exists() {
        secret::read_file(&pass_file)?
    } else {
        let p = Passphrase::generate();
        write_new(&pass_file, p.as_str().as_bytes(), 0o600)?;
        p
    };
    let cfg = do_register(
        ctx,
        &creds,
        &passphrase,
        None,
        None,
        None,
        None,
        Throttle::default(),
        false,
    )
    .await?;
    ctx.notice(&format!(
        "No agent config found: set up a local vault at {} and registered this machine as {}.\nA generated passphrase was saved to {} (mode 0600). {LOST_PASSPHRASE}",
        vault_dir.display(),
        cfg.machine_id,
        pass_file.display()
    ));
    Ok(cfg)
}

pub async fn passphrase(ctx: &Ctx, cmd: PassphraseCmd) -> Result<u8> {
    match cmd {
        PassphraseCmd::Generate => {
            let p = Passphrase::generate();
            ctx.output(&json!({"passphrase": p.as_str()}), || {
                p.as_str().to_string()
            })?;
        }
        PassphraseCmd::Change {
            new_passphrase_file,
        } => {
            // The new passphrase only: the environment names the current one.
            let (new, source) =
                secret::obtain_new(new_passphrase_file.as_deref(), "--new-passphrase-file")?;
            let (cfg, repo) = open_configured(ctx).await?;
            repo.change_passphrase(&new, KdfParams::default()).await?;
            ctx.notice(&format!(
                "The passphrase of machine {} is now {}; the old one no longer opens it. {LOST_PASSPHRASE}",
                cfg.machine_id,
                source.describe()
            ));
            ctx.output(
                &json!({"machine_id": cfg.machine_id, "changed": true}),
                String::new,
            )?;
        }
    }
    Ok(0)
}
