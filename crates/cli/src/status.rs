//! `rbackup status`: the vault's state, the last successful backup and copy, whether the cloud
//! vault can be reached (and since when it could not), the local tier, and whether backups are
//! stopped. Probes the vault (quickly: see `tier::probe`); everything else is local.

use anyhow::Result;
use serde_json::{Value, json};

use crate::config::AgentConfig;
use crate::remembered::CopyRecord;
use crate::tier::{self, Cloud};
use crate::ui::{Ctx, local_rfc3339};

pub async fn status(ctx: &Ctx) -> Result<u8> {
    let cfg = AgentConfig::load_required(&ctx.config_path)?;
    let (cloud, mem) = tier::reach_cloud(ctx, &cfg).await;
    let (reachable, error) = match &cloud {
        Cloud::Reached(_) => (true, None),
        Cloud::Unreached(e) => (false, Some(e.clone())),
    };
    // Not reached now: the state the vault was last seen in; never seen: unknown.
    let state = mem.cloud_state.as_ref();
    let seen = reachable || mem.cloud_last_reached.is_some();
    let vault_state = state.map_or(if seen { "active" } else { "unknown" }, |r| {
        r.state.as_str()
    });
    let stopped = tier::may_back_up(&cfg, &mem)
        .err()
        .map(|e| crate::advice::render(&e));
    let last_backup = last_backup(&cfg);
    let local = local_tier(&cfg).await;
    let doc = json!({
        "machine_id": cfg.machine_id,
        "vault": cfg.vault,
        "vault_state": vault_state,
        "vault_state_set_by": state.map(|r| &r.set_by),
        "vault_state_set_at": state.map(|r| &r.set_at),
        "cloud": {
            "reachable": reachable,
            "error": error,
            "last_reached": mem.cloud_last_reached,
            "days_since_reached": mem.days_since_reached(),
        },
        "backups_stopped": stopped.is_some(),
        "backups_stopped_reason": &stopped,
        "last_backup": last_backup,
        "last_copy": mem.last_successful_copy,
        "last_copy_attempt": mem.last_copy,
        "local_tier": local,
    });
    ctx.output(&doc, || human(&doc, &mem.last_copy))?;
    Ok(if stopped.is_some() {
        crate::EXIT_WARNINGS
    } else {
        0
    })
}

/// The newest backup (or scheduled run) that ended ok or with warnings, from the job history.
fn last_backup(cfg: &AgentConfig) -> Value {
    let records = crate::history::load(cfg);
    let ok = |r: &&crate::history::JobRecord| {
        matches!(r.kind.as_str(), "backup" | "run")
            && matches!(r.status.as_str(), "ok" | "warnings")
    };
    match records
        .iter()
        .filter(ok)
        .max_by(|a, b| a.finished.cmp(&b.finished))
    {
        None => Value::Null,
        Some(r) => json!({
            "time": r.finished,
            "status": r.status,
            "job": r.job,
            "recovery_point": r.report.as_ref().and_then(|v| v.get("recovery_point")).cloned(),
            "record_id": r.id,
        }),
    }
}

/// The local tier: its vault, days, and the recovery points it holds now.
async fn local_tier(cfg: &AgentConfig) -> Value {
    let Some(t) = &cfg.local_tier else {
        return Value::Null;
    };
    let points = async {
        let repo = tier::open_tier(cfg, t).await?;
        anyhow::Ok(repo.recovery_point_listing().await?.live)
    }
    .await;
    match points {
        Ok(points) => json!({
            "vault": t.vault,
            "days": t.days,
            "recovery_points": points.iter().map(|(id, _)| id.to_hex()).collect::<Vec<_>>(),
            "newest": points.iter().map(|(_, rp)| &rp.time).max(),
        }),
        Err(e) => json!({"vault": t.vault, "days": t.days, "error": crate::advice::render(&e)}),
    }
}

fn human(doc: &Value, attempt: &Option<CopyRecord>) -> String {
    let s = |v: &Value| v.as_str().map(str::to_string);
    let when = |v: &Value| s(v).map_or_else(|| "never".into(), |t| local_rfc3339(&t));
    let mut out = format!("vault       {}", doc["vault"].as_str().unwrap_or("-"));
    out += &format!(
        "\nstate       {}",
        doc["vault_state"].as_str().unwrap_or("-")
    );
    if let Some(by) = s(&doc["vault_state_set_by"]) {
        out += &format!(" (set by {by} at {})", when(&doc["vault_state_set_at"]));
    }
    let cloud = &doc["cloud"];
    out += &match cloud["reachable"].as_bool() {
        Some(true) => "\nreachable   yes".to_string(),
        _ => format!(
            "\nreachable   NO: {} (last reached {})",
            cloud["error"].as_str().unwrap_or("-"),
            when(&cloud["last_reached"])
        ),
    };
    let lb = &doc["last_backup"];
    out += &format!(
        "\nlast backup {}{}",
        when(&lb["time"]),
        s(&lb["recovery_point"]).map_or_else(String::new, |id| format!(
            " (recovery point {})",
            id.get(..8).unwrap_or(&id)
        ))
    );
    let lc = &doc["last_copy"];
    out += &format!("\nlast copy   {}", when(&lc["time"]));
    if let Some(to) = s(&lc["to"]) {
        out += &format!(" to {to}");
    }
    if let Some(a) = attempt.as_ref().filter(|a| a.status != "ok") {
        out += &format!(
            "\n            the copy at {} failed: {}",
            local_rfc3339(&a.time),
            a.error.as_deref().unwrap_or("-")
        );
    }
    let lt = &doc["local_tier"];
    if !lt.is_null() {
        out += &format!(
            "\nlocal tier  {} ({} recovery points; older than {} days go once in the cloud)",
            lt["vault"].as_str().unwrap_or("-"),
            lt["recovery_points"].as_array().map_or(0, Vec::len),
            lt["days"]
        );
        if let Some(e) = s(&lt["error"]) {
            out += &format!("\n            cannot be opened: {e}");
        }
    }
    if let Some(why) = s(&doc["backups_stopped_reason"]) {
        out += &format!("\nBACKUPS ARE STOPPED: {why}");
    }
    out
}
