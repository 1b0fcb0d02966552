//! Retention: which recovery points a policy keeps, with restic's meaning of every rule.
//!
//! [`apply`] is a pure function of the policy, the points and a time zone, so it can be tested
//! against tables and properties without a vault; [`Repository::forget`] is the thin part that
//! lists the points, groups them, applies the policy per group and soft-deletes what it
//! forgets (a tombstone per point, see `tombstone.rs`; prune reclaims the data after the
//! vault's soft-delete window).
//!
//! The rules (as restic's `forget`): points are taken newest first. `keep_last N` keeps the N
//! newest. `keep_hourly/daily/weekly/monthly/yearly N` keep the newest point of each of the N
//! most recent hours / local calendar days / ISO weeks / months / years *that have points*
//! (periods without a backup do not use up the count). If a rule still has count left when
//! the points run out, the oldest point is kept as well ("oldest daily"), which keeps the
//! longest history the policy allows. A point kept by any rule is kept. A point whose time
//! cannot be read is always kept: retention must never delete what it does not understand.

use std::collections::HashSet;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::id::Id;
use crate::repo::Repository;
use crate::snapshot::RecoveryPoint;
use crate::tombstone::Actor;

/// How many recovery points of each kind to keep. `None` and `Some(0)` both mean "no such
/// rule"; a policy with no rule at all is *empty*, and [`Repository::forget`] refuses it.
/// Unset rules are left out when serialized (job configs and reports list only the rules set).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetentionPolicy {
    /// Keep the N newest points.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    /// Keep the newest point of each of the N most recent hours that have points.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<u32>,
    /// ... of each of the N most recent local calendar days.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<u32>,
    /// ... of each of the N most recent ISO weeks (Monday to Sunday).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<u32>,
    /// ... of each of the N most recent months.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<u32>,
    /// ... of each of the N most recent years.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<u32>,
}

/// One rule of a policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rule {
    /// `keep_last`.
    Last,
    /// `keep_hourly`.
    Hourly,
    /// `keep_daily`.
    Daily,
    /// `keep_weekly`.
    Weekly,
    /// `keep_monthly`.
    Monthly,
    /// `keep_yearly`.
    Yearly,
}

/// Why a point is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum KeepReason {
    /// Selected by a rule. `oldest`: the rule had count left when the points ran out, so the
    /// oldest point was kept although its period already had a newer point.
    Rule {
        /// Which rule.
        rule: Rule,
        /// Kept as the oldest point (restic's "oldest daily snapshot").
        oldest: bool,
    },
    /// The policy is empty: everything is kept.
    EmptyPolicy,
    /// The point's time could not be read: never delete what we do not understand.
    UnreadableTime,
}

impl std::fmt::Display for KeepReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeepReason::Rule { rule, oldest } => {
                let name = match rule {
                    Rule::Last => "last",
                    Rule::Hourly => "hourly",
                    Rule::Daily => "daily",
                    Rule::Weekly => "weekly",
                    Rule::Monthly => "monthly",
                    Rule::Yearly => "yearly",
                };
                if *oldest {
                    write!(f, "oldest {name}")
                } else {
                    f.write_str(name)
                }
            }
            KeepReason::EmptyPolicy => f.write_str("empty policy"),
            KeepReason::UnreadableTime => f.write_str("unreadable time"),
        }
    }
}

/// What a policy decides for one point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "action")]
pub enum Verdict {
    /// Kept, for these reasons (at least one).
    Keep {
        /// Every rule that selected the point.
        reasons: Vec<KeepReason>,
    },
    /// Not kept by any rule.
    Forget,
}

impl Verdict {
    /// True for [`Verdict::Keep`].
    pub fn is_keep(&self) -> bool {
        matches!(self, Verdict::Keep { .. })
    }
}

impl RetentionPolicy {
    /// True when no rule keeps anything (forgetting with it would delete every point).
    pub fn is_empty(&self) -> bool {
        self.rules().iter().all(|(_, n)| *n == 0)
    }

    /// `keep last 3, daily 7`-style description for messages.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .rules()
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| {
                format!(
                    "{} {n}",
                    KeepReason::Rule {
                        rule: *r,
                        oldest: false
                    }
                )
            })
            .collect();
        if parts.is_empty() {
            "empty policy".into()
        } else {
            format!("keep {}", parts.join(", "))
        }
    }

    fn rules(&self) -> [(Rule, u32); 6] {
        let n = |v: Option<u32>| v.unwrap_or(0);
        [
            (Rule::Last, n(self.keep_last)),
            (Rule::Hourly, n(self.keep_hourly)),
            (Rule::Daily, n(self.keep_daily)),
            (Rule::Weekly, n(self.keep_weekly)),
            (Rule::Monthly, n(self.keep_monthly)),
            (Rule::Yearly, n(self.keep_yearly)),
        ]
    }
}

/// The period a point falls into for `rule`, as a number that changes exactly when the period
/// does (`nr` is the point's position, which makes every point its own "last" period).
fn period(rule: Rule, time: Timestamp, tz: &TimeZone, nr: usize) -> i64 {
    let z = time.to_zoned(tz.clone());
    let (y, m, d, h) = (
        i64::from(z.year()),
        i64::from(z.month()),
        i64::from(z.day()),
        i64::from(z.hour()),
    );
    match rule {
        Rule::Last => nr as i64,
        Rule::Hourly => ((y * 100 + m) * 100 + d) * 100 + h,
        Rule::Daily => (y * 100 + m) * 100 + d,
        Rule::Weekly => {
            let w = z.date().iso_week_date();
            i64::from(w.year()) * 100 + i64::from(w.week())
        }
        Rule::Monthly => y * 100 + m,
        Rule::Yearly => y,
    }
}

/// Applies `policy` to `points` (any order), grouping periods in time zone `tz`. Returns every
/// point with its verdict, newest first (ties broken by id, highest first, so the result does
/// not depend on the input order).
pub fn apply(
    policy: &RetentionPolicy,
    points: &[(Id, RecoveryPoint)],
    tz: &TimeZone,
) -> Vec<(Id, Verdict)> {
    let mut readable: Vec<(Id, Timestamp)> = Vec::new();
    let mut out = Vec::with_capacity(points.len());
    for (id, rp) in points {
        match rp.time.parse::<Timestamp>() {
            Ok(t) => readable.push((*id, t)),
            Err(_) => out.push((
                *id,
                Verdict::Keep {
                    reasons: vec![KeepReason::UnreadableTime],
                },
            )),
        }
    }
    readable.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
    if policy.is_empty() {
        let keep = || Verdict::Keep {
            reasons: vec![KeepReason::EmptyPolicy],
        };
        out.extend(readable.iter().map(|(id, _)| (*id, keep())));
        return out;
    }
    // (rule, count left, last period kept)
    let mut buckets: Vec<(Rule, u32, Option<i64>)> = policy
        .rules()
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| (*r, *n, None))
        .collect();
    let last = readable.len().saturating_sub(1);
    for (nr, (id, time)) in readable.iter().enumerate() {
        let mut reasons = Vec::new();
        for (rule, left, last_period) in buckets.iter_mut() {
            if *left == 0 {
                continue;
            }
            let p = period(*rule, *time, tz, nr);
            if Some(p) != *last_period || nr == last {
                reasons.push(KeepReason::Rule {
                    rule: *rule,
                    oldest: Some(p) == *last_period,
                });
                *last_period = Some(p);
                *left -= 1;
            }
        }
        let verdict = if reasons.is_empty() {
            Verdict::Forget
        } else {
            Verdict::Keep { reasons }
        };
        out.push((*id, verdict));
    }
    out
}

/// The points a policy was applied to together: one job's, or (for points made without a
/// job) those of the same source paths, as restic groups by paths.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ForgetGroup {
    /// The job, if the group is a job's.
    pub job: Option<String>,
    /// The source paths (of the newest point of the group).
    pub paths: Vec<String>,
    /// Every point of the group, newest first.
    pub points: Vec<ForgetItem>,
}

/// One recovery point and what happened to it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ForgetItem {
    /// Recovery point id (hex).
    pub id: String,
    /// Its time (RFC 3339, UTC).
    pub time: String,
    /// Kept or forgotten (with reasons when kept).
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// The result of [`Repository::forget`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ForgetReport {
    /// The policy applied.
    pub policy: RetentionPolicy,
    /// The job the run was restricted to.
    pub job: Option<String>,
    /// Nothing was deleted (only shown).
    pub dry_run: bool,
    /// Points kept.
    pub kept: u64,
    /// Points forgotten (deleted unless `dry_run`).
    pub forgotten: u64,
    /// Per group, every point with its verdict.
    pub groups: Vec<ForgetGroup>,
}

impl Repository {
    /// Applies `policy` (in the time zone of the vault's clock, normally the system's; see
    /// [`Vault::with_clock`](crate::Vault::with_clock)) to this machine's recovery points that
    /// are not deleted, per job (points without a job are grouped by source paths), optionally
    /// only to `job`'s, and soft-deletes the points it does not keep: each gets a tombstone
    /// naming this process as the machine itself ([`Actor::current`]) and the policy as the
    /// reason (see `tombstone.rs`). Their data stays until [`Repository::prune`] runs after the
    /// vault's soft-delete window. An empty policy is refused: it would delete everything.
    pub async fn forget(
        &self,
        policy: &RetentionPolicy,
        job: Option<&str>,
        dry_run: bool,
    ) -> Result<ForgetReport> {
        let actor = Actor::current(Some(&self.machine));
        self.forget_as(policy, job, dry_run, &actor).await
    }

    /// [`Repository::forget`], recording `actor` as who deleted (an admin host passes an
    /// actor without a machine).
    pub async fn forget_as(
        &self,
        policy: &RetentionPolicy,
        job: Option<&str>,
        dry_run: bool,
        actor: &Actor,
    ) -> Result<ForgetReport> {
        let tz = self.clock.now_zoned().time_zone().clone();
        if policy.is_empty() {
            return Err(EngineError::EmptyRetentionPolicy);
        }
        if !dry_run {
            self.refuse_if_append_only("forget recovery points")?;
        }
        let all = self.recovery_points().await?;
        let mut report = ForgetReport {
            policy: *policy,
            job: job.map(str::to_string),
            dry_run,
            kept: 0,
            forgotten: 0,
            groups: Vec::new(),
        };
        let mut doomed = HashSet::new();
        for (key, points) in group(&all, job) {
            let by_id: std::collections::HashMap<Id, &RecoveryPoint> =
                points.iter().map(|(id, rp)| (*id, rp)).collect();
            let mut items = Vec::new();
            for (id, verdict) in apply(policy, &points, &tz) {
                if verdict.is_keep() {
                    report.kept += 1;
                } else {
                    report.forgotten += 1;
                    doomed.insert(id);
                }
                let time = by_id.get(&id).map(|rp| rp.time.clone()).unwrap_or_default();
                items.push(ForgetItem {
                    id: id.to_hex(),
                    time,
                    verdict,
                });
            }
            let paths = points.last().map(|(_, rp)| rp.paths.clone());
            report.groups.push(ForgetGroup {
                job: key.job,
                paths: paths.unwrap_or_default(),
                points: items,
            });
        }
        if !dry_run {
            let points: Vec<_> = all
                .into_iter()
                .filter(|(id, _)| doomed.contains(id))
                .collect();
            self.soft_delete(&points, &policy.describe(), actor).await?;
        }
        Ok(report)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct GroupKey {
    job: Option<String>,
    paths: Vec<String>,
}

/// Points by job; points without a job by their paths. Only `job`'s when given.
fn group(
    all: &[(Id, RecoveryPoint)],
    job: Option<&str>,
) -> std::collections::BTreeMap<GroupKey, Vec<(Id, RecoveryPoint)>> {
    let mut groups: std::collections::BTreeMap<GroupKey, Vec<(Id, RecoveryPoint)>> =
        Default::default();
    for (id, rp) in all {
        if job.is_some() && rp.job.as_deref() != job {
            continue;
        }
        let key = match &rp.job {
            Some(j) => GroupKey {
                job: Some(j.clone()),
                paths: Vec::new(),
            },
            None => GroupKey {
                job: None,
                paths: rp.paths.clone(),
            },
        };
        groups.entry(key).or_default().push((*id, rp.clone()));
    }
    groups
}
