//! The machine's freshness mark (see `rbackup_engine::Freshness`), kept in
//! `$XDG_STATE_HOME/rbackup/<machine>/freshness.json`: the newest recovery point this machine
//! wrote or saw, and the ones it forgot itself. `check` and `recovery-points` compare the vault
//! with it, so a vault that lost recovery points or was replaced by an older copy is noticed.
//!
//! Updated after each backup, `check`, `recovery-points` and `forget`. The file is local on
//! purpose: whoever can rewrite the vault cannot reach it. A missing file (a new install) is
//! an empty mark: a rollback cannot be seen yet, but a deleted recovery point can (nothing
//! was forgotten here). An unreadable one is reported and treated as missing, rather than
//! blocking backups.

use std::path::PathBuf;

use anyhow::Result;
use rbackup_engine::{BackupReport, ForgetReport, Freshness, Id};

use crate::config::{AgentConfig, state_dir, write_atomic};
use crate::ui::Ctx;

fn path(cfg: &AgentConfig) -> Result<PathBuf> {
    Ok(state_dir(&cfg.machine_id)?.join("freshness.json"))
}

/// The stored mark, or an empty one.
pub fn load(ctx: &Ctx, cfg: &AgentConfig) -> Freshness {
    read(ctx, cfg).unwrap_or_default()
}

fn read(ctx: &Ctx, cfg: &AgentConfig) -> Option<Freshness> {
    let path = path(cfg).ok()?;
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            ctx.notice(&format!("warning: cannot read {}: {e}", path.display()));
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(f) => Some(f),
        Err(e) => {
            let p = path.display();
            ctx.notice(&format!(
                "warning: {p} is damaged ({e}); rollback of the vault is not checked until the next backup"
            ));
            None
        }
    }
}

/// Stores the mark; a failure is reported, not fatal (the backup or check itself succeeded).
pub fn save(ctx: &Ctx, cfg: &AgentConfig, mark: &Freshness) {
    let result = path(cfg).and_then(|p| {
        let bytes = serde_json::to_vec_pretty(mark)?;
        write_atomic(&p, &bytes, 0o600)
    });
    if let Err(e) = result {
        ctx.notice(&format!("warning: cannot store the freshness mark: {e:#}"));
    }
}

/// After a backup: its recovery point is the newest this machine wrote.
pub fn after_backup(ctx: &Ctx, cfg: &AgentConfig, report: &BackupReport) {
    let Some(id) = report
        .recovery_point
        .as_deref()
        .and_then(|h| Id::from_hex(h).ok())
    else {
        return;
    };
    let mut mark = load(ctx, cfg);
    mark.wrote(id, report.sequence);
    save(ctx, cfg, &mark);
}

/// After a forget: the points it removed are not reported as deleted by someone else.
pub fn after_forget(ctx: &Ctx, cfg: &AgentConfig, reports: &[ForgetReport]) {
    let mut mark = load(ctx, cfg);
    for r in reports {
        mark.forgot_in(r);
    }
    save(ctx, cfg, &mark);
}
