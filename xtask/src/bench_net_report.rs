//! The network bench's table and JSON: one row per measured step, each rbackup row with its
//! ratio to restic's same step over the same link (restic on S3, the only store it reaches).

use serde_json::{Value, json};

use crate::bench_corpus::Corpus;
use crate::bench_peers::{Kind, Repo};
use crate::netem::LinkConfig;

/// Goal for rbackup's throughput over restic's, first backup and restore (rbackup issue 12).
pub const TARGET: f64 = 2.0;

/// Why restic has no Azure rows.
pub const RESTIC_AZURE: &str = "restic's azure backend (0.14 in Debian 12) only reaches \
     https://ACCOUNT.blob.core.windows.net, with no endpoint setting, so it cannot use Azurite";

/// A measured step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// First backup into an empty vault.
    Backup,
    /// The same source again, unchanged.
    Rerun,
    /// Restore of the latest snapshot, verified.
    Restore,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Backup => "first backup",
            Step::Rerun => "unchanged re-run",
            Step::Restore => "restore",
        }
    }

    fn target(self) -> Option<f64> {
        (self != Step::Rerun).then_some(TARGET)
    }
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    /// rbackup or restic.
    pub tool: Kind,
    /// `s3` or `az`.
    pub store: &'static str,
    /// Which step.
    pub step: Step,
    /// The concurrency option passed, e.g. `--uploads 4`.
    pub knob: Option<String>,
    /// Wall time.
    pub secs: f64,
    /// Corpus bytes over wall time, MB/s.
    pub mb_s: f64,
    /// Peak RSS, MiB.
    pub rss_mib: f64,
    /// Bytes stored in the bucket after the step, MB (first backups only).
    pub vault_mb: Option<f64>,
}

impl Row {
    /// `first backup --uploads 4`.
    pub fn label(&self) -> String {
        match &self.knob {
            Some(k) => format!("{} {k}", self.step.name()),
            None => self.step.name().to_string(),
        }
    }
}

/// Everything the run measured or failed at.
#[derive(Debug, Default)]
pub struct NetResults {
    /// Measured steps, in run order.
    pub rows: Vec<Row>,
    /// (what, error) for every sequence that failed.
    pub failures: Vec<(String, String)>,
    /// Runs that finished with warnings, and failed sanity checks.
    pub warnings: Vec<String>,
    /// Version of each tool run.
    pub versions: Vec<(Kind, String)>,
    /// Packets (forwarded, dropped) host to servers and back.
    pub packets: [(u64, u64); 2],
}

impl NetResults {
    /// Adds a row.
    pub fn push(&mut self, row: Row) {
        self.rows.push(row);
    }

    /// Keeps the warnings of a repository that is done with.
    pub fn take_warnings(&mut self, repo: Repo) {
        let name = repo.tool_kind().name();
        self.warnings
            .extend(repo.warnings.into_iter().map(|w| format!("{name}: {w}")));
    }
}

/// `row`'s throughput over restic's for the same step on S3, when both exist.
pub fn ratio(row: &Row, rows: &[Row]) -> Option<f64> {
    if row.tool == Kind::Restic {
        return None;
    }
    rows.iter()
        .find(|r| r.tool == Kind::Restic && r.step == row.step && r.knob.is_none())
        .map(|restic| row.mb_s / restic.mb_s)
}

fn mark(row: &Row, ratio: Option<f64>) -> &'static str {
    match (row.step.target(), ratio) {
        (Some(t), Some(r)) if r >= t => "ok",
        (Some(_), Some(_)) => "MISS",
        _ => "",
    }
}

/// Prints the table, failures and warnings.
pub fn print_table(res: &NetResults, corpus: &Corpus, link: &LinkConfig) {
    eprintln!(
        "\nnetwork bench: mixed {} files / {:.1} MB (seed {}); link {} (user-space emulator, \
         xtask/src/netem.rs)",
        corpus.manifest.files,
        corpus.manifest.bytes as f64 / 1e6,
        corpus.opts.seed,
        link.describe()
    );
    let header = format!(
        "{:<8} {:<5} {:<28} {:>8} {:>7} {:>8} {:>6} {:>4} {:>9} {:>8}",
        "tool", "store", "step", "time s", "MB/s", "x restic", "target", "", "RSS MiB", "vault MB"
    );
    println!("{header}");
    println!("{}", "-".repeat(header.len()));
    for row in &res.rows {
        let r = ratio(row, &res.rows);
        let target = row
            .step
            .target()
            .map_or(String::new(), |t| format!(">={t}"));
        println!(
            "{:<8} {:<5} {:<28} {:>8.2} {:>7.2} {:>8} {:>6} {:>4} {:>9.1} {:>8}",
            row.tool.name(),
            row.store,
            row.label(),
            row.secs,
            row.mb_s,
            r.map_or("-".to_string(), |r| format!("{r:.2}")),
            if r.is_some() { target } else { String::new() },
            mark(row, r),
            row.rss_mib,
            row.vault_mb.map_or("-".to_string(), |v| format!("{v:.1}")),
        );
    }
    if res.versions.iter().any(|(k, _)| *k == Kind::Restic) {
        println!("{:<8} {:<5} not run: {RESTIC_AZURE}", "restic", "az");
    }
    let [(up, up_drop), (down, down_drop)] = res.packets;
    println!(
        "link packets: {up} to the servers ({up_drop} dropped at the queue), {down} back \
         ({down_drop} dropped)"
    );
    for (what, e) in &res.failures {
        println!("{what}: FAILED: {e}");
    }
    for w in &res.warnings {
        println!("warning: {w}");
    }
}

/// The results as one JSON document.
pub fn to_json(res: &NetResults, corpus: &Corpus, link: &LinkConfig) -> Value {
    let rows: Vec<Value> = res
        .rows
        .iter()
        .map(|row| {
            let r = ratio(row, &res.rows);
            json!({
                "tool": row.tool.name(), "store": row.store, "step": row.step.name(),
                "knob": row.knob, "seconds": row.secs, "mb_s": row.mb_s,
                "ratio_to_restic": r, "target": r.and(row.step.target()),
                "met": r.and(row.step.target()).map(|_| mark(row, r) == "ok"),
                "peak_rss_mib": row.rss_mib, "vault_mb": row.vault_mb,
            })
        })
        .collect();
    let versions: Vec<Value> = res
        .versions
        .iter()
        .map(|(k, v)| json!({ "name": k.name(), "version": v }))
        .collect();
    let failures: Vec<Value> = res
        .failures
        .iter()
        .map(|(what, e)| json!({ "what": what, "error": e }))
        .collect();
    json!({
        "corpus": {
            "seed": corpus.opts.seed,
            "size": corpus.opts.size,
            "mixed_files": corpus.manifest.files,
            "mixed_bytes": corpus.manifest.bytes,
        },
        "link": {
            "emulator": "user-space TUN forwarder (xtask/src/netem.rs)",
            "one_way_delay_ms": link.delay.as_secs_f64() * 1e3,
            "rate_bit_s": link.rate_bits,
            "queue_bytes": link.queue(),
            "packets_to_servers": res.packets[0].0,
            "dropped_to_servers": res.packets[0].1,
            "packets_back": res.packets[1].0,
            "dropped_back": res.packets[1].1,
        },
        "machine": { "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()) },
        "tools": versions,
        "rows": rows,
        "restic_azure": RESTIC_AZURE,
        "failures": failures,
        "warnings": res.warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(tool: Kind, store: &'static str, step: Step, knob: Option<&str>, mb_s: f64) -> Row {
        Row {
            tool,
            store,
            step,
            knob: knob.map(str::to_string),
            secs: 256.0 / mb_s,
            mb_s,
            rss_mib: 100.0,
            vault_mb: None,
        }
    }

    #[test]
    fn rbackup_rows_compare_with_restics_same_step() {
        let rows = [
            row(Kind::Rbackup, "s3", Step::Backup, None, 30.0),
            row(Kind::Rbackup, "s3", Step::Backup, Some("--uploads 8"), 10.0),
            row(Kind::Rbackup, "az", Step::Restore, None, 24.0),
            row(Kind::Rbackup, "s3", Step::Rerun, None, 500.0),
            row(Kind::Restic, "s3", Step::Backup, None, 12.0),
            row(Kind::Restic, "s3", Step::Restore, None, 8.0),
        ];
        let ratios: Vec<Option<f64>> = rows.iter().map(|r| ratio(r, &rows)).collect();
        assert_eq!(
            ratios,
            [Some(2.5), Some(10.0 / 12.0), Some(3.0), None, None, None]
        );
        let marks: Vec<&str> = rows.iter().zip(&ratios).map(|(r, x)| mark(r, *x)).collect();
        assert_eq!(marks, ["ok", "MISS", "ok", "", "", ""]);
        assert_eq!(rows[1].label(), "first backup --uploads 8");
    }
}
