//! What the agent last knew of its vaults, kept in `$XDG_STATE_HOME/rbackup/<machine>/status.json`
//! for `rbackup status` and for the local tier's rule that backups stop after 15 days without
//! the cloud: when the cloud vault was last reached, the state it was in, and the last copy.
//!
//! Local on purpose, like the freshness mark: the day the cloud cannot be reached is the day
//! this is needed. Written atomically; a missing or damaged file is an empty record (the
//! damage is reported), never a reason to stop.

use std::path::PathBuf;

use anyhow::Result;
use rbackup_engine::{CopyReport, StateRecord};
use serde::{Deserialize, Serialize};

use crate::config::{AgentConfig, state_dir, write_atomic};
use crate::ui::Ctx;

/// The record.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Remembered {
    /// When the cloud vault (the config's `vault`) was last opened (RFC 3339).
    #[serde(default)]
    pub cloud_last_reached: Option<String>,
    /// Its state then (`None`: never set, i.e. active).
    #[serde(default)]
    pub cloud_state: Option<StateRecord>,
    /// The last copy between vaults, successful or not.
    #[serde(default)]
    pub last_copy: Option<CopyRecord>,
    /// The last copy that succeeded.
    #[serde(default)]
    pub last_successful_copy: Option<CopyRecord>,
}

impl Remembered {
    /// Days since the cloud vault was last reached, if it ever was.
    pub fn days_since_reached(&self) -> Option<f64> {
        let at: jiff::Timestamp = self.cloud_last_reached.as_deref()?.parse().ok()?;
        let secs = jiff::Timestamp::now().duration_since(at).as_secs_f64();
        Some((secs / 86_400.0).max(0.0))
    }
}

/// One copy between vaults.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CopyRecord {
    /// When it ended (RFC 3339).
    pub time: String,
    /// The source vault's URL.
    pub from: String,
    /// The destination vault's URL.
    pub to: String,
    /// `ok` or `failed`.
    pub status: String,
    /// Recovery points it copied (hex ids).
    #[serde(default)]
    pub copied: Vec<String>,
    /// Bytes it wrote into the destination.
    #[serde(default)]
    pub bytes_added: u64,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl CopyRecord {
    /// The record of a copy from `from` to `to` that ended with `outcome`.
    pub fn new(from: &str, to: &str, outcome: &Result<CopyReport>) -> CopyRecord {
        let (status, copied, bytes_added, error) = match outcome {
            Ok(r) => ("ok", r.copied.clone(), r.bytes_added, None),
            Err(e) => ("failed", Vec::new(), 0, Some(crate::advice::render(e))),
        };
        CopyRecord {
            time: jiff::Timestamp::now().to_string(),
            from: from.into(),
            to: to.into(),
            status: status.into(),
            copied,
            bytes_added,
            error,
        }
    }
}

fn path(cfg: &AgentConfig) -> Result<PathBuf> {
    Ok(state_dir(&cfg.machine_id)?.join("status.json"))
}

/// The stored record, or an empty one.
pub fn load(ctx: &Ctx, cfg: &AgentConfig) -> Remembered {
    let Ok(path) = path(cfg) else {
        return Remembered::default();
    };
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            ctx.notice(&format!(
                "warning: {} is damaged ({e}); it is written anew",
                path.display()
            ));
            Remembered::default()
        }),
        Err(_) => Remembered::default(),
    }
}

/// Loads, changes and stores the record, and returns it; a failure to store is reported, not
/// fatal.
pub fn update(ctx: &Ctx, cfg: &AgentConfig, change: impl FnOnce(&mut Remembered)) -> Remembered {
    let mut m = load(ctx, cfg);
    change(&mut m);
    let result = path(cfg).and_then(|p| write_atomic(&p, &serde_json::to_vec_pretty(&m)?, 0o600));
    if let Err(e) = result {
        ctx.notice(&format!("warning: cannot store the agent's status: {e:#}"));
    }
    m
}

/// Records a copy's outcome.
pub fn record_copy(ctx: &Ctx, cfg: &AgentConfig, rec: CopyRecord) {
    update(ctx, cfg, |m| {
        if rec.status == "ok" {
            m.last_successful_copy = Some(rec.clone());
        }
        m.last_copy = Some(rec);
    });
}
