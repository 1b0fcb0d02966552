//! Job history: one JSON record per backup, restore, scheduled run or critical operation
//! (shortening the soft-delete window, purging soft-deleted points at once: who did it, from
//! which host, what), kept in the agent's state dir (`$XDG_STATE_HOME/rbackup/<machine>/jobs/`),
//! listed by `rbackup jobs`.
//!
//! One file per record, written atomically, so concurrent runs never interleave and a crash
//! never leaves half a record.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use indicatif::HumanBytes;
use rbackup_engine::Skipped;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{AgentConfig, state_dir, write_atomic};
use crate::ui::Ctx;

/// One finished (or failed) job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    /// Short random id, shown by `rbackup jobs` and taken by `rbackup jobs --skipped`.
    /// Records written before ids existed get their file's name as id when loaded.
    #[serde(default)]
    pub id: String,
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
            id: rbackup_engine::Id::random().short(),
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

/// Saves a record; failing to save history must not fail the job itself. Returns the
/// record's id when it was saved (what `rbackup jobs --skipped` takes).
pub fn record(ctx: &Ctx, cfg: &AgentConfig, rec: &JobRecord) -> Option<String> {
    let name = format!(
        "{}-{}-{}.json",
        rec.started.replace(':', ""),
        rec.kind,
        rec.id
    );
    let result = jobs_dir(cfg).and_then(|dir| {
        let path = dir.join(name);
        let bytes = serde_json::to_vec_pretty(rec)?;
        write_atomic(&path, &bytes, 0o600)
            .with_context(|| format!("cannot save the job record {}", path.display()))
    });
    match result {
        Ok(()) => Some(rec.id.clone()),
        Err(e) => {
            ctx.notice(&format!("warning: {e:#}"));
            None
        }
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
        .filter_map(|p| parse_record(p, &std::fs::read(p).ok()?))
        .collect()
}

/// The record in the file `path` holding `bytes`; one from before ids existed gets the file's
/// name as its id.
fn parse_record(path: &std::path::Path, bytes: &[u8]) -> Option<JobRecord> {
    let mut rec: JobRecord = serde_json::from_slice(bytes).ok()?;
    if rec.id.is_empty() {
        rec.id = path.file_stem()?.to_string_lossy().into_owned();
    }
    Some(rec)
}

/// The files a record's report lists as skipped (backups) or not restored (restores).
fn skipped_of(r: &JobRecord) -> Vec<Skipped> {
    let list = |key| {
        r.report
            .as_ref()
            .and_then(|v| v.get(key))
            .and_then(|v| Vec::<Skipped>::deserialize(v).ok())
            .unwrap_or_default()
    };
    [list("skipped"), list("failed")].concat()
}

/// The lines under a record in `rbackup jobs`: skips by rule as one count per rule, other
/// skips and failed restores as one count, each pointing at `--skipped`.
fn skip_lines(r: &JobRecord) -> String {
    let skipped = skipped_of(r);
    let mut out = String::new();
    let see = format!("see `rbackup jobs --skipped {}`", r.id);
    let counts = rbackup_engine::rule_counts(&skipped);
    if !counts.is_empty() {
        out += &format!("    skipped by rule: {} — {see}\n", rule_words(&counts));
    }
    let failed = skipped.iter().filter(|s| s.skip_rule().is_none()).count();
    if failed > 0 {
        let what = if r.kind == "restore" {
            "not restored"
        } else {
            "not backed up"
        };
        out += &format!("    {what}: {failed} file(s) — {see}\n");
    }
    out
}

/// "103 symbolic links, 2 hard links".
pub fn rule_words(counts: &[(rbackup_engine::SkipRule, u64)]) -> String {
    counts
        .iter()
        .map(|(rule, n)| rule.count(*n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `rbackup jobs --skipped ID`: every skipped or failed file of one record.
pub fn list_skipped(ctx: &Ctx, id: &str) -> Result<u8> {
    if id.is_empty() {
        bail!("give a job record's id (or the start of it): `rbackup jobs` lists them");
    }
    let cfg = AgentConfig::load_required(&ctx.config_path)?;
    let all = load(&cfg);
    let found: Vec<&JobRecord> = all.iter().filter(|r| r.id.starts_with(id)).collect();
    let rec = match found[..] {
        [one] => one,
        [] => bail!("no job record has the id {id:?}: `rbackup jobs` lists them"),
        _ => bail!(
            "the id {id:?} is the start of {} job records' ids: give more of it",
            found.len()
        ),
    };
    let skipped = skipped_of(rec);
    ctx.output(&skipped, || {
        let mut out = String::new();
        for s in &skipped {
            let how = match s.skip_rule() {
                Some(_) => "skipped by rule",
                None if rec.kind == "restore" => "not restored",
                None => "not backed up",
            };
            out += &format!("{how}: {}: {}\n", s.path, s.reason);
        }
        out += &format!(
            "{} file(s) in job {} ({} {})",
            skipped.len(),
            rec.id,
            rec.kind,
            crate::ui::local_rfc3339(&rec.started)
        );
        out
    })?;
    Ok(0)
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
                "{:<8} {}  {:<8} {:<9} {:<12} {:>6.1}s  {counts}\n",
                r.id,
                crate::ui::local_rfc3339(&r.started),
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
            out += &skip_lines(r);
        }
        out += &format!("{} job record(s)", shown.len());
        out
    })?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_from_before_ids_and_skip_kinds_loads_and_is_counted_per_rule() {
        let old = serde_json::json!({
            "kind": "backup", "job": null, "status": "warnings",
            "started": "2026-01-01T00:00:00Z", "finished": "2026-01-01T00:00:01Z",
            "duration_s": 1.0,
            "report": {"skipped": [
                {"path": "/s/l1", "reason": rbackup_engine::SkipRule::Symlink.reason()},
                {"path": "/s/l2", "reason": rbackup_engine::SkipRule::Symlink.reason()},
                {"path": "/s/secret", "reason": "cannot read: Permission denied (os error 13)"}
            ]}
        });
        let path = std::path::Path::new("/x/2026-01-01T000000Z-backup-123.json");
        let rec = parse_record(path, old.to_string().as_bytes()).unwrap();
        assert_eq!(rec.id, "2026-01-01T000000Z-backup-123");
        let lines = skip_lines(&rec);
        assert!(
            lines.contains("skipped by rule: 2 symbolic links — see `rbackup jobs --skipped 2026-01-01T000000Z-backup-123`"),
            "{lines}"
        );
        assert!(lines.contains("not backed up: 1 file(s)"), "{lines}");
        assert!(!lines.contains("/s/l1"), "{lines}");
    }
}
