//! `key export` and `key repair`, and opening another machine's repository from an admin or
//! recovery host (`--machine ID` with its passphrase, or with a recovery key file), shared by
//! every command that takes `--machine`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Subcommand;
use rbackup_engine::crypto::{KdfParams, KeyFile};
use rbackup_engine::{KeyFileState, Repository, Unlock};
use serde_json::json;

use crate::config::{AgentConfig, write_new};
use crate::secret::{self, Ask};
use crate::setup::{open_configured, open_vault};
use crate::ui::Ctx;

/// What a user does about a damaged key file in the vault.
pub const REPAIR: &str = "run `rbackup key repair --passphrase-file FILE` on the machine (it \
                          rewrites the vault's key files from the local key file)";

#[derive(Subcommand, Debug)]
pub enum KeyCmd {
    /// Write a passphrase-protected recovery key file (and its printable form, FILE.txt), to
    /// keep away from the vault.
    Export {
        /// Where to write the recovery key file (FILE.txt gets its printable form).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// File holding the passphrase that will protect the recovery key file (at least 16
        /// characters; default: asked twice on the terminal).
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// Rewrite the vault's key files from the local key file when any is damaged, missing its
    /// copy or of the old format.
    Repair {
        /// File holding the machine's passphrase (checked against an intact key file if one is
        /// left; default: RBACKUP_PASSPHRASE_FILE/_COMMAND, or asked on the terminal).
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
}

pub async fn key(ctx: &Ctx, cmd: KeyCmd) -> Result<u8> {
    match cmd {
        KeyCmd::Export {
            out,
            passphrase_file,
        } => export(ctx, &out, passphrase_file.as_deref()).await,
        KeyCmd::Repair { passphrase_file } => repair(ctx, passphrase_file.as_deref()).await,
    }
}

async fn export(ctx: &Ctx, out: &Path, passphrase_file: Option<&Path>) -> Result<u8> {
    let (pass, source) = secret::obtain_new(passphrase_file, "--passphrase-file")?;
    let (cfg, repo) = open_configured(ctx).await?;
    let file = repo.export_key_file(&pass, KdfParams::default())?;
    let printed = file.to_printable()?;
    let mut txt = out.as_os_str().to_owned();
    txt.push(".txt");
    let txt = PathBuf::from(txt);
    write_new(out, &file.to_json(), 0o600)?;
    write_new(&txt, printed.as_bytes(), 0o600)?;
    ctx.notice(&format!(
        "Wrote the recovery key of machine {} to {} and its printable form to {}. Keep them \
         away from the vault and this machine; with the passphrase that protects them ({}) \
         they open the machine's backups: `rbackup restore ... --machine {} --key-file {}`.",
        cfg.machine_id,
        out.display(),
        txt.display(),
        source.describe(),
        cfg.machine_id,
        out.display()
    ));
    ctx.output(
        &json!({"machine_id": cfg.machine_id, "key_file": out, "printable": txt}),
        String::new,
    )?;
    Ok(0)
}

async fn repair(ctx: &Ctx, passphrase_file: Option<&Path>) -> Result<u8> {
    let (pass, _) = secret::obtain(passphrase_file, Ask::Existing, "--passphrase-file")?;
    let (cfg, repo) = open_configured(ctx).await?;
    let report = repo.repair_key_files(&pass, KdfParams::default()).await?;
    for i in &report.issues {
        ctx.notice(&format!(
            "was {}: {} ({})",
            state(i.state),
            i.path,
            i.detail
        ));
    }
    if report.written.is_some() && !report.passphrase_verified {
        ctx.notice(
            "note: no intact key file was left to check the passphrase against; the key files \
             now open with the one given",
        );
    }
    ctx.output(&report, || match &report.written {
        Some(w) => format!(
            "Rewrote the key files of machine {} ({w} and its copy); removed {} old object(s).",
            cfg.machine_id,
            report.removed.len()
        ),
        None => format!(
            "The key files of machine {} are intact; nothing to repair.",
            cfg.machine_id
        ),
    })?;
    Ok(0)
}

pub fn state(s: KeyFileState) -> &'static str {
    match s {
        KeyFileState::Damaged => "damaged",
        KeyFileState::Missing => "missing",
        KeyFileState::NoIntegrityRecord => "without integrity record",
        _ => "not as written",
    }
}

/// A recovery key file as `key export` writes it: the JSON file or its printable form.
pub fn load_key_file(path: &Path) -> Result<KeyFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the key file {}", path.display()))?;
    let parsed = if text.trim_start().starts_with('{') {
        KeyFile::parse(text.as_bytes())
    } else {
        KeyFile::parse_printable(&text)
    };
    parsed.with_context(|| format!("key file {}", path.display()))
}

/// `--machine ID --passphrase-file FILE [--key-file FILE]`: another machine of the vault, for
/// `restore` (recovery to an alternate server), `forget` and `prune` (an admin host).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct MachineArgs {
    /// Another machine of the vault (recovery to an alternate server; retention from an
    /// admin host with delete-capable store credentials).
    #[arg(long, value_name = "ID")]
    pub machine: Option<String>,
    /// With --machine: a file holding that machine's passphrase (with --key-file, the key
    /// file's; default: RBACKUP_PASSPHRASE_FILE/_COMMAND, or asked on the terminal).
    #[arg(long, value_name = "FILE", requires = "machine")]
    pub passphrase_file: Option<PathBuf>,
    /// With --machine: unlock with this recovery key file (from `rbackup key export`, JSON or
    /// printed) instead of the vault's key files.
    #[arg(long, value_name = "FILE", requires = "machine")]
    pub key_file: Option<PathBuf>,
}

impl MachineArgs {
    /// The other machine's repository, or `None` when no `--machine` was given.
    pub async fn open_other(&self, ctx: &Ctx, cfg: &AgentConfig) -> Result<Option<Repository>> {
        let Some(machine) = &self.machine else {
            return Ok(None);
        };
        let pass = self.passphrase_file.as_deref();
        let key_file = self.key_file.as_deref();
        Ok(Some(open_machine(ctx, cfg, machine, pass, key_file).await?))
    }
}

/// Another machine's repository (recovery to an alternate server, an admin host): unlocked
/// with its passphrase through the vault's key files, or through a recovery key file and the
/// passphrase that protects it. Key files skipped on the way are named as warnings.
pub async fn open_machine(
    ctx: &Ctx,
    cfg: &AgentConfig,
    machine: &str,
    passphrase_file: Option<&Path>,
    key_file: Option<&Path>,
) -> Result<Repository> {
    let (pass, _) = secret::obtain(passphrase_file, Ask::Existing, "--passphrase-file")?;
    // An append-only machine's credentials are append-only for every machine it opens.
    let vault = open_vault(&cfg.vault, cfg.proxy.as_deref())
        .await?
        .with_append_only(cfg.append_only);
    let cache = Some(cfg.cache_dir.as_path());
    let repo = match key_file {
        Some(path) => {
            let file = load_key_file(path)?;
            Repository::open(&vault, machine, Unlock::KeyFile(&file, &pass), cache).await?
        }
        None => Repository::open(&vault, machine, Unlock::Passphrase(&pass), cache).await?,
    };
    for s in repo.skipped_key_files() {
        ctx.notice(&format!(
            "warning: key file {} is damaged ({}); another copy opened the machine; {REPAIR}",
            s.path, s.reason
        ));
    }
    Ok(repo)
}
