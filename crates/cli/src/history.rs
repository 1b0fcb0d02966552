//! Job history: one JSON record per backup, restore, scheduled run or critical operation
//! (shortening the soft-delete window, purging soft-deleted points at once: who did it, from
//! which host, what), kept in the agent's state dir (`$XDG_STATE_HOME/rbackup/<machine>/jobs/`),
//! listed by `rbackup jobs`.
//!
//! One file per record, written atomically, so concurrent runs never interleave and a crash
//! never leaves half a record.

use std::path::PathBuf;

use anyhow::{Context, Result};
use indicatif::HumanBytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{AgentConfig, state_dir, write_atomic};
use crate::ui::Ctx;

/// One finished (or failed) job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    /// backup, restore, run.
    pub kind: String,
    /// Configured job name, if any.
    pub job: Option<String>,
    /// ok, warnings, failed.
    pub status: String,
    /// RFC 3339.
    pub started: String,
    /// RFC 3339.
    pub finished: String,
    /// Wall time.
    pub duration_s: f64,
    /// The error, for failed jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The engine's report (counts, bytes, skipped files with reasons), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<Value>,
    /// For a critical operation: who ran it (user, host, and the machine or "admin host").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<rbackup_engine::Actor>,
    /// For a critical operation: what it did, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub what: Option<String>,
}

impl JobRecord {
    /// A record for a job that started at `started` and ended with `outcome`.
    pub fn new<T: Serialize>(
        kind: &str,
        job: Option<String>,
        started: jiff::Timestamp,
        outcome: &Result<T, anyhow::Error>,
        has_warnings: impl FnOnce(&T) -> bool,
    ) -> JobRecord {
        let finished = jiff::Timestamp::now();
        let (status, error, report) = match outcome {
            Ok(r) => (
                if has_warnings(r) { "warnings" } else { "ok" },
                None,
                serde_json::to_value(r).ok(),
            ),
            Err(e) => ("failed", Some(crate::advice::render(e)), None),
        };
        JobRecord {
            kind: kind.into(),
            job,
            status: status.into(),
            started: started.to_string(),
            finished: finished.to_string(),
            duration_s: (finished - started)
                .total(jiff::Unit::Second)
                .unwrap_or(0.0),
            error,
            report,
            by: None,
            what: None,
        }
    }

    /// Marks the record as a critical operation run by this process as `machine`, doing
    /// `what`.
    pub fn critical(mut self, machine: &str, what: String) -> JobRecord {
        self.by = Some(rbackup_engine::Actor::current(Some(machine)));
        self.what = Some(what);
        self
    }
}

fn jobs_dir(cfg: &AgentConfig) -> Result<PathBuf> {
    Ok(state_dir(&cfg.machine_id)?.join("jobs"))
}

/// Saves a record; failing to save history must not fail the job itself.
pub fn record(ctx: &Ctx, cfg: &AgentConfig, rec: &JobRecord) {
    let name = format!(
        "{}-{}-{}.json",
        rec.started.replace(':', ""),
        rec.kind,
        std::process::id()
    );
    let result = jobs_dir(cfg).and_then(|dir| {
        let path = dir.join(name);
        let bytes = serde_json::to_vec_pretty(rec)?;
        write_atomic(&path, &bytes, 0o600)
            .with_context(|| format!("cannot save the job record {}", path.display()))
    });
    if let Err(e) = result {
        ctx.notice(&format!("warning: {e:#}"));
    }
}

/// Records, oldest first.
pub fn load(cfg: &AgentConfig) -> Vec<JobRecord> {
    let mut files: Vec<PathBuf> = jobs_dir(cfg)
        .and_then(|dir| Ok(std::fs::read_dir(dir)?))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .iter()
        .filter_map(|p| serde_json::from_slice(&std::fs::read(p).ok()?).ok())
        .collect()
}

pub fn list(ctx: &Ctx, last: usize) -> Result<u8> {
    let cfg = AgentConfig::load(&ctx.config_path)?.ok_or_else(|| {
        anyhow::anyhow!(
            "no agent config at {}: nothing has run yet",
            ctx.config_path.display()
        )
    })?;
    let all = load(&cfg);
    let shown = &all[all.len().saturating_sub(last)..];
    ctx.output(&shown, || {
        let mut out = String::new();
        for r in shown {
            let rep = r.report.as_ref();
            let num = |k: &str| {
                rep.and_then(|v| v.get(k))
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
            };
            let counts = if r.kind == "restore" {
                format!(
                    "restored {} files, {} ({} overwritten, {} kept, {} deleted)",
                    num("files"),
                    HumanBytes(num("bytes")),
                    num("files_overwritten"),
                    num("files_kept"),
                    num("files_deleted"),
                )
            } else {
                format!(
                    "files {} new / {} changed / {} unchanged, {} read, {} added",
                    num("files_new"),
                    num("files_changed"),
                    num("files_unchanged"),
                    HumanBytes(num("bytes_read")),
                    HumanBytes(num("bytes_added")),
                )
            };
            out += &format!(
                "{}  {:<8} {:<9} {:<12} {:>6.1}s  {counts}\n",
                r.started,
                r.kind,
                r.status,
                r.job.as_deref().unwrap_or("-"),
                r.duration_s,
            );
            if let (Some(by), Some(what)) = (&r.by, &r.what) {
                out += &format!("    critical operation by {by}: {what}\n");
            }
            if let Some(e) = &r.error {
                out += &format!("    error: {e}\n");
            }
            for s in rep
                .and_then(|v| v.get("skipped"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                out += &format!(
                    "    skipped {}: {}\n",
                    s["path"].as_str().unwrap_or("?"),
                    s["reason"].as_str().unwrap_or("?")
                );
            }
            for s in rep
                .and_then(|v| v.get("failed"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                out += &format!(
                    "    not restored {}: {}\n",
                    s["path"].as_str().unwrap_or("?"),
                    s["reason"].as_str().unwrap_or("?")
                );
            }
        }
        out += &format!("{} job record(s)", shown.len());
        out
    })?;
    Ok(0)
}
