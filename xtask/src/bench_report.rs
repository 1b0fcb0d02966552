//! The bench's table and JSON: figures per tool, and rbackup against the best peer.
//!
//! Each metric knows whether higher or lower is better, so "best peer" and the ratio
//! ours/best are computed the same way everywhere, and each metric's target (the `target`
//! column of [`METRICS`], listed in ARCHITECTURE.md under "Performance targets") is checked
//! against that ratio.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::bench_corpus::Corpus;
use crate::bench_peers::Kind;

/// Metric key -> value for one tool.
pub type Figures = BTreeMap<&'static str, f64>;

/// One row of the table.
#[derive(Debug)]
pub struct Metric {
    /// Key in [`Figures`] and in the JSON.
    pub key: &'static str,
    /// Row label.
    pub label: &'static str,
    /// Unit shown in the table.
    pub unit: &'static str,
    /// Whether a larger value is better (throughput, dedup) or worse (time, memory, size).
    pub higher_is_better: bool,
    /// Goal for ours/best, if there is one.
    pub target: Option<f64>,
}

const fn metric(
    key: &'static str,
    label: &'static str,
    unit: &'static str,
    higher_is_better: bool,
    target: Option<f64>,
) -> Metric {
    Metric {
        key,
        label,
        unit,
        higher_is_better,
        target,
    }
}

/// Table rows, in order.
pub const METRICS: &[Metric] = &[
    metric("backup_s", "first backup: time", "s", false, None),
    metric(
        "backup_mb_s",
        "first backup: throughput",
        "MB/s",
        true,
        Some(1.5),
    ),
    metric(
        "backup_rss_mib",
        "first backup: peak RSS",
        "MiB",
        false,
        Some(1.0),
    ),
    metric(
        "backup_repo_mb",
        "first backup: repo size",
        "MB",
        false,
        None,
    ),
    metric("rerun_s", "unchanged re-run: time", "s", false, Some(0.7)),
    metric("restore_s", "restore: time", "s", false, None),
    metric(
        "restore_mb_s",
        "restore: throughput",
        "MB/s",
        true,
        Some(1.2),
    ),
    metric(
        "restore_rss_mib",
        "restore: peak RSS",
        "MiB",
        false,
        Some(1.0),
    ),
    metric(
        "versions_s",
        "versions: total backup time",
        "s",
        false,
        None,
    ),
    metric(
        "versions_repo_mb",
        "versions: repo size",
        "MB",
        false,
        Some(0.8),
    ),
    metric("dedup_ratio", "versions: dedup ratio", "x", true, None),
    metric(
        "releases_s",
        "releases: total backup time",
        "s",
        false,
        None,
    ),
    metric(
        "releases_repo_mb",
        "releases: repo size",
        "MB",
        false,
        Some(0.8),
    ),
    metric(
        "releases_dedup_ratio",
        "releases: dedup ratio",
        "x",
        true,
        None,
    ),
    metric(
        "small_backup_s",
        "small files: first backup",
        "s",
        false,
        Some(0.5),
    ),
    metric(
        "small_backup_rss_mib",
        "small files: first peak RSS",
        "MiB",
        false,
        Some(0.5),
    ),
    metric(
        "small_rerun_s",
        "small files: re-run",
        "s",
        false,
        Some(0.5),
    ),
    metric(
        "small_rerun_rss_mib",
        "small files: re-run peak RSS",
        "MiB",
        false,
        Some(0.5),
    ),
    metric(
        "small_repo_mb",
        "small files: repo size",
        "MB",
        false,
        Some(0.9),
    ),
];

/// What happened to one tool.
#[derive(Debug)]
pub enum Outcome {
    /// The scenario completed.
    Ran {
        /// Its figures.
        figures: Figures,
        /// Runs that finished with warnings.
        warnings: Vec<String>,
        /// rbackup's JSON job reports (empty for peers).
        reports: Vec<Value>,
    },
    /// A step failed, or a restore differed from the source.
    Failed(String),
    /// Not installed here.
    Missing,
}

/// One tool's line in the results.
#[derive(Debug)]
pub struct ToolRun {
    /// Which tool.
    pub kind: Kind,
    /// Its version string.
    pub version: String,
    /// Its figures or why there are none.
    pub outcome: Outcome,
}

impl ToolRun {
    /// A tool that could not be benchmarked.
    pub fn failed(kind: Kind, version: &str, why: String) -> Self {
        ToolRun {
            kind,
            version: version.to_string(),
            outcome: Outcome::Failed(why),
        }
    }

    /// A peer that is not installed.
    pub fn missing(kind: Kind) -> Self {
        ToolRun {
            kind,
            version: String::new(),
            outcome: Outcome::Missing,
        }
    }

    fn figures(&self) -> Option<&Figures> {
        match &self.outcome {
            Outcome::Ran { figures, .. } => Some(figures),
            _ => None,
        }
    }
}

/// rbackup against the best peer on one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The best peer's name.
    pub best_peer: &'static str,
    /// The best peer's value.
    pub best: f64,
    /// rbackup's value.
    pub ours: f64,
    /// ours / best.
    pub ratio: f64,
    /// Whether the metric's target is met (None when the metric has none).
    pub met: Option<bool>,
}

/// Compares rbackup with the best peer that has a value for `metric`.
pub fn compare(metric: &Metric, runs: &[ToolRun]) -> Option<Comparison> {
    let ours = runs
        .iter()
        .find(|r| r.kind == Kind::Rbackup)?
        .figures()?
        .get(metric.key)
        .copied()?;
    let peers = runs
        .iter()
        .filter(|r| r.kind != Kind::Rbackup)
        .filter_map(|r| Some((r.kind.name(), *r.figures()?.get(metric.key)?)));
    let (best_peer, best) = if metric.higher_is_better {
        peers.max_by(|a, b| a.1.total_cmp(&b.1))?
    } else {
        peers.min_by(|a, b| a.1.total_cmp(&b.1))?
    };
    let ratio = ours / best;
    let met = metric.target.map(|t| {
        if metric.higher_is_better {
            ratio >= t
        } else {
            ratio <= t
        }
    });
    Some(Comparison {
        best_peer,
        best,
        ours,
        ratio,
        met,
    })
}

fn target_text(m: &Metric) -> String {
    match m.target {
        Some(t) if m.higher_is_better => format!(">={t}"),
        Some(t) => format!("<={t}"),
        None => String::new(),
    }
}

fn value_text(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Prints the results table, the tools that did not run, and warnings.
pub fn print_table(runs: &[ToolRun], corpus: &Corpus) {
    let shown: Vec<&ToolRun> = runs.iter().filter(|r| r.figures().is_some()).collect();
    eprintln!(
        "\nbench: mixed {} files / {:.1} MB, {} versions / {:.1} MB total (seed {})",
        corpus.manifest.files,
        corpus.manifest.bytes as f64 / 1e6,
        corpus.versions.len(),
        corpus.version_bytes.iter().sum::<u64>() as f64 / 1e6,
        corpus.opts.seed,
    );
    if let Some(r) = &corpus.releases {
        let files = r.sizes.last().map_or(0, |s| s.0);
        eprintln!(
            "releases: {} {} ({} versions, {files} files in the last, {:.1} MB total)",
            r.project,
            r.versions
                .iter()
                .map(|v| v.0.as_str())
                .collect::<Vec<_>>()
                .join(","),
            r.versions.len(),
            r.total_bytes() as f64 / 1e6
        );
    }
    if let Some(s) = &corpus.small {
        eprintln!(
            "small files: {} files, {:.1} MB",
            s.files,
            s.bytes as f64 / 1e6
        );
    }
    let mut header = format!("{:<30} {:<5}", "metric", "unit");
    for r in &shown {
        header += &format!(" {:>9}", r.kind.name());
    }
    header += &format!(
        " {:>10} {:>9} {:>7} {:>5}",
        "best peer", "ours/best", "target", ""
    );
    println!("{header}");
    println!("{}", "-".repeat(header.len()));
    for m in METRICS {
        let mut line = format!("{:<30} {:<5}", m.label, m.unit);
        for r in &shown {
            let v = r.figures().and_then(|f| f.get(m.key));
            line += &format!(" {:>9}", v.map_or("-".to_string(), |v| value_text(*v)));
        }
        match compare(m, runs) {
            Some(c) => {
                let mark = match c.met {
                    Some(true) => "ok",
                    Some(false) => "MISS",
                    None => "",
                };
                line += &format!(
                    " {:>10} {:>9.2} {:>7} {:>5}",
                    c.best_peer,
                    c.ratio,
                    target_text(m),
                    mark
                );
            }
            None => line += &format!(" {:>10} {:>9} {:>7}", "-", "-", target_text(m)),
        }
        println!("{line}");
    }
    for r in runs {
        match &r.outcome {
            Outcome::Missing => println!(
                "{}: not installed (install: {})",
                r.kind.name(),
                r.kind.install_hint()
            ),
            Outcome::Failed(msg) => println!("{}: FAILED: {msg}", r.kind.name()),
            Outcome::Ran { warnings, .. } => {
                for w in warnings {
                    println!("{}: warning: {w}", r.kind.name());
                }
            }
        }
    }
}

/// The results as one JSON document.
pub fn to_json(runs: &[ToolRun], corpus: &Corpus) -> Value {
    let tools: Vec<Value> = runs
        .iter()
        .map(|r| {
            let mut v = json!({ "name": r.kind.name(), "version": r.version });
            match &r.outcome {
                Outcome::Ran {
                    figures,
                    warnings,
                    reports,
                } => {
                    v["status"] = json!("ok");
                    v["figures"] = json!(figures);
                    v["warnings"] = json!(warnings);
                    if !reports.is_empty() {
                        v["reports"] = json!(reports);
                    }
                }
                Outcome::Failed(msg) => {
                    v["status"] = json!("failed");
                    v["error"] = json!(msg);
                }
                Outcome::Missing => {
                    v["status"] = json!("not installed");
                    v["install"] = json!(r.kind.install_hint());
                }
            }
            v
        })
        .collect();
    let comparisons: Vec<Value> = METRICS
        .iter()
        .filter_map(|m| {
            let c = compare(m, runs)?;
            Some(json!({
                "metric": m.key, "unit": m.unit, "higher_is_better": m.higher_is_better,
                "ours": c.ours, "best_peer": c.best_peer, "best": c.best, "ratio": c.ratio,
                "target": m.target, "met": c.met,
            }))
        })
        .collect();
    json!({
        "corpus": {
            "seed": corpus.opts.seed,
            "size": corpus.opts.size,
            "versions": corpus.opts.versions,
            "mixed_files": corpus.manifest.files,
            "mixed_bytes": corpus.manifest.bytes,
            "version_bytes": corpus.version_bytes,
            "releases": corpus.releases.as_ref().map(|r| json!({
                "project": r.project,
                "versions": r.versions.iter().map(|v| v.0.clone()).collect::<Vec<_>>(),
                "files_bytes": r.sizes,
            })),
            "small_files": corpus.small.as_ref().map(|s| json!({"files": s.files, "bytes": s.bytes})),
        },
        "machine": { "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()) },
        "tools": tools,
        "comparisons": comparisons,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ran(kind: Kind, pairs: &[(&'static str, f64)]) -> ToolRun {
        ToolRun {
            kind,
            version: String::new(),
            outcome: Outcome::Ran {
                figures: pairs.iter().copied().collect(),
                warnings: vec![],
                reports: vec![],
            },
        }
    }

    #[test]
    fn compares_with_the_best_peer_in_the_right_direction() {
        let runs = [
            ran(Kind::Rbackup, &[("backup_mb_s", 300.0), ("rerun_s", 1.0)]),
            ran(Kind::Restic, &[("backup_mb_s", 100.0), ("rerun_s", 2.0)]),
            ran(Kind::Borg, &[("backup_mb_s", 150.0), ("rerun_s", 4.0)]),
            ToolRun::missing(Kind::Rustic),
        ];
        let tput = METRICS.iter().find(|m| m.key == "backup_mb_s").unwrap();
        let c = compare(tput, &runs).unwrap();
        assert_eq!(
            (c.best_peer, c.best, c.ratio, c.met),
            ("borg", 150.0, 2.0, Some(true))
        );
        let rerun = METRICS.iter().find(|m| m.key == "rerun_s").unwrap();
        let c = compare(rerun, &runs).unwrap();
        assert_eq!((c.best_peer, c.ratio, c.met), ("restic", 0.5, Some(true)));
        let restore = METRICS.iter().find(|m| m.key == "restore_s").unwrap();
        assert_eq!(compare(restore, &runs), None);
    }

    #[test]
    fn no_comparison_without_rbackup() {
        let runs = [ran(Kind::Restic, &[("rerun_s", 2.0)])];
        assert!(METRICS.iter().all(|m| compare(m, &runs).is_none()));
    }
}
