//! Retention policy tables (restic's documented examples and the corner cases of each rule)
//! and a property test against an independent reference built on jiff's own calendar
//! formatting (`%Y-%m-%d`, ISO `%G-%V`, ...).

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use jiff::tz::TimeZone;
use proptest::prelude::*;
use rbackup_engine::crypto::BlobId;
use rbackup_engine::retention::{Rule, apply};
use rbackup_engine::{Id, KeepReason, RecoveryPoint, RetentionPolicy, Verdict};

fn point(n: u8, time: &str) -> (Id, RecoveryPoint) {
    let mut id = [0u8; 32];
    id[0] = n;
    (
        Id(id),
        RecoveryPoint {
            time: time.into(),
            hostname: "h".into(),
            paths: vec!["/data".into()],
            tree: BlobId([n; 32]),
            parent: None,
            job: None,
            files: 0,
            dirs: 0,
            bytes: 0,
            bytes_added: 0,
            sequence: 0,
            predecessors: Vec::new(),
        },
    )
}

fn points(times: &[&str]) -> Vec<(Id, RecoveryPoint)> {
    times
        .iter()
        .enumerate()
        .map(|(i, t)| point(i as u8, t))
        .collect()
}

/// The times kept, newest first, with their reasons as text.
fn kept(policy: RetentionPolicy, pts: &[(Id, RecoveryPoint)], tz: &TimeZone) -> Vec<String> {
    let by_id: BTreeMap<Id, &str> = pts.iter().map(|(id, rp)| (*id, rp.time.as_str())).collect();
    apply(&policy, pts, tz)
        .into_iter()
        .filter_map(|(id, v)| match v {
            Verdict::Keep { reasons } => {
                let r: Vec<String> = reasons.iter().map(ToString::to_string).collect();
                Some(format!("{} {}", by_id[&id], r.join("+")))
            }
            Verdict::Forget => None,
        })
        .collect()
}

fn utc() -> TimeZone {
    TimeZone::UTC
}

#[test]
fn restic_example_twelve_sundays_keep_daily_four() {
    // restic's forget documentation: one backup every Sunday for 12 weeks, --keep-daily 4.
    let sundays = [
        "2019-09-01T11:00:00Z",
        "2019-09-08T11:00:00Z",
        "2019-09-15T11:00:00Z",
        "2019-09-22T11:00:00Z",
        "2019-09-29T11:00:00Z",
        "2019-10-06T11:00:00Z",
        "2019-10-13T11:00:00Z",
        "2019-10-20T11:00:00Z",
        "2019-10-27T11:00:00Z",
        "2019-11-03T11:00:00Z",
        "2019-11-10T11:00:00Z",
        "2019-11-17T11:00:00Z",
    ];
    let policy = RetentionPolicy {
        keep_daily: Some(4),
        ..Default::default()
    };
    assert_eq!(
        kept(policy, &points(&sundays), &utc()),
        [
            "2019-11-17T11:00:00Z daily",
            "2019-11-10T11:00:00Z daily",
            "2019-11-03T11:00:00Z daily",
            "2019-10-27T11:00:00Z daily",
        ]
    );
}

#[test]
fn keep_last_keeps_the_newest_whatever_the_input_order() {
    let mut pts = points(&[
        "2024-01-03T00:00:00Z",
        "2024-01-01T00:00:00Z",
        "2024-01-05T00:00:00Z",
        "2024-01-02T00:00:00Z",
        "2024-01-04T00:00:00Z",
    ]);
    let policy = RetentionPolicy {
        keep_last: Some(2),
        ..Default::default()
    };
    let want = ["2024-01-05T00:00:00Z last", "2024-01-04T00:00:00Z last"];
    assert_eq!(kept(policy, &pts, &utc()), want);
    pts.reverse();
    assert_eq!(kept(policy, &pts, &utc()), want);
}

#[test]
fn daily_keeps_the_newest_point_of_each_day_with_points() {
    let pts = points(&[
        "2024-03-01T09:00:00Z",
        "2024-03-01T18:00:00Z",
        // no point on 2024-03-02: an empty day does not use up the count
        "2024-03-03T10:00:00Z",
        "2024-03-03T20:00:00Z",
        "2024-03-04T08:00:00Z",
    ]);
    let policy = RetentionPolicy {
        keep_daily: Some(3),
        ..Default::default()
    };
    assert_eq!(
        kept(policy, &pts, &utc()),
        [
            "2024-03-04T08:00:00Z daily",
            "2024-03-03T20:00:00Z daily",
            "2024-03-01T18:00:00Z daily",
        ]
    );
}

#[test]
fn count_left_over_keeps_the_oldest_point_too() {
    // Two days with points but keep-daily 5: restic also keeps the oldest ("oldest daily").
    let pts = points(&[
        "2024-03-01T09:00:00Z",
        "2024-03-01T18:00:00Z",
        "2024-03-02T10:00:00Z",
    ]);
    let policy = RetentionPolicy {
        keep_daily: Some(5),
        ..Default::default()
    };
    assert_eq!(
        kept(policy, &pts, &utc()),
        [
            "2024-03-02T10:00:00Z daily",
            "2024-03-01T18:00:00Z daily",
            "2024-03-01T09:00:00Z oldest daily",
        ]
    );
}

#[test]
fn weeks_are_iso_weeks_across_the_new_year() {
    // 2024-12-29 is a Sunday in ISO week 2024-W52; 2024-12-30 (Monday) and 2025-01-05
    // (Sunday) are both in 2025-W01.
    let pts = points(&[
        "2024-12-29T12:00:00Z",
        "2024-12-30T12:00:00Z",
        "2025-01-05T12:00:00Z",
    ]);
    let policy = RetentionPolicy {
        keep_weekly: Some(2),
        ..Default::default()
    };
    assert_eq!(
        kept(policy, &pts, &utc()),
        ["2025-01-05T12:00:00Z weekly", "2024-12-29T12:00:00Z weekly"]
    );
}

#[test]
fn monthly_and_yearly_combine_with_or() {
    let pts = points(&[
        "2023-06-10T12:00:00Z",
        "2023-12-31T12:00:00Z",
        "2024-01-15T12:00:00Z",
        "2024-01-20T12:00:00Z",
        "2024-02-01T12:00:00Z",
    ]);
    let policy = RetentionPolicy {
        keep_monthly: Some(2),
        keep_yearly: Some(2),
        ..Default::default()
    };
    assert_eq!(
        kept(policy, &pts, &utc()),
        [
            "2024-02-01T12:00:00Z monthly+yearly",
            "2024-01-20T12:00:00Z monthly",
            "2023-12-31T12:00:00Z yearly",
        ]
    );
}

#[test]
fn hourly_and_last_reasons_are_all_listed() {
    let pts = points(&[
        "2024-05-01T10:05:00Z",
        "2024-05-01T10:55:00Z",
        "2024-05-01T11:10:00Z",
    ]);
    let policy = RetentionPolicy {
        keep_last: Some(1),
        keep_hourly: Some(2),
        ..Default::default()
    };
    assert_eq!(
        kept(policy, &pts, &utc()),
        [
            "2024-05-01T11:10:00Z last+hourly",
            "2024-05-01T10:55:00Z hourly",
        ]
    );
}

#[test]
fn days_are_local_calendar_days() {
    // 23:30 UTC on the 1st is 01:30 on the 2nd in UTC+2.
    let pts = points(&[
        "2024-03-01T10:00:00Z",
        "2024-03-01T23:30:00Z",
        "2024-03-02T00:30:00Z",
    ]);
    let policy = RetentionPolicy {
        keep_daily: Some(2),
        ..Default::default()
    };
    assert_eq!(
        kept(policy, &pts, &utc()),
        ["2024-03-02T00:30:00Z daily", "2024-03-01T23:30:00Z daily"]
    );
    let plus_two = TimeZone::posix("EET-2").unwrap();
    assert_eq!(
        kept(policy, &pts, &plus_two),
        ["2024-03-02T00:30:00Z daily", "2024-03-01T10:00:00Z daily"]
    );
}

#[test]
fn an_empty_policy_keeps_everything() {
    let pts = points(&["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"]);
    let zero = RetentionPolicy {
        keep_daily: Some(0),
        ..Default::default()
    };
    for policy in [RetentionPolicy::default(), zero] {
        assert!(policy.is_empty());
        let out = apply(&policy, &pts, &utc());
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|(_, v)| *v
            == Verdict::Keep {
                reasons: vec![KeepReason::EmptyPolicy]
            }));
    }
}

#[test]
fn a_point_with_an_unreadable_time_is_kept() {
    let pts = points(&["not a time", "2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"]);
    let policy = RetentionPolicy {
        keep_last: Some(1),
        ..Default::default()
    };
    assert_eq!(
        kept(policy, &pts, &utc()),
        ["not a time unreadable time", "2024-01-02T00:00:00Z last"]
    );
}

// ---- property test against an independent reference ----

/// The reference: for each rule, group by the calendar label jiff prints, keep the newest
/// point of the newest N groups, plus the oldest point when fewer than N groups exist.
fn reference(
    policy: &RetentionPolicy,
    pts: &[(Id, Timestamp)],
    tz: &TimeZone,
) -> BTreeMap<Id, BTreeSet<String>> {
    let mut sorted = pts.to_vec();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
    let rules = [
        (Rule::Last, policy.keep_last, ""),
        (Rule::Hourly, policy.keep_hourly, "%Y-%m-%d %H"),
        (Rule::Daily, policy.keep_daily, "%Y-%m-%d"),
        (Rule::Weekly, policy.keep_weekly, "%G-W%V"),
        (Rule::Monthly, policy.keep_monthly, "%Y-%m"),
        (Rule::Yearly, policy.keep_yearly, "%Y"),
    ];
    let mut out: BTreeMap<Id, BTreeSet<String>> = BTreeMap::new();
    for (rule, n, fmt) in rules {
        let n = n.unwrap_or(0) as usize;
        if n == 0 {
            continue;
        }
        let label = |i: usize, t: &Timestamp| {
            if fmt.is_empty() {
                i.to_string()
            } else {
                t.to_zoned(tz.clone()).strftime(fmt).to_string()
            }
        };
        let mut groups: Vec<(String, Id)> = Vec::new();
        for (i, (id, t)) in sorted.iter().enumerate() {
            let l = label(i, t);
            if !groups.iter().any(|(g, _)| *g == l) {
                groups.push((l, *id));
            }
        }
        let name = KeepReason::Rule {
            rule,
            oldest: false,
        }
        .to_string();
        for (_, id) in groups.iter().take(n) {
            out.entry(*id).or_default().insert(name.clone());
        }
        if groups.len() < n
            && let Some((oldest, _)) = sorted.last()
        {
            let reasons = out.entry(*oldest).or_default();
            if !reasons.contains(&name) {
                reasons.insert(format!("oldest {name}"));
            }
        }
    }
    out
}

fn policy_strategy() -> impl Strategy<Value = RetentionPolicy> {
    let n = || prop::option::of(0u32..6);
    (n(), n(), n(), n(), n(), n()).prop_map(|(l, h, d, w, m, y)| RetentionPolicy {
        keep_last: l,
        keep_hourly: h,
        keep_daily: d,
        keep_weekly: w,
        keep_monthly: m,
        keep_yearly: y,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn apply_matches_the_reference(
        policy in policy_strategy(),
        // Up to 40 points within about three years, some very close together.
        secs in prop::collection::vec(1_600_000_000i64..1_700_000_000, 1..40),
        tz_pick in 0usize..3,
    ) {
        let tz = [
            TimeZone::UTC,
            TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap(),
            TimeZone::posix("NZST-12NZDT,M9.5.0,M4.1.0/3").unwrap(),
        ][tz_pick].clone();
        let stamps: Vec<(Id, Timestamp)> = secs
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut id = [0u8; 32];
                id[..8].copy_from_slice(&(i as u64).to_be_bytes());
                (Id(id), Timestamp::from_second(*s).unwrap())
            })
            .collect();
        let pts: Vec<(Id, RecoveryPoint)> = stamps
            .iter()
            .map(|(id, t)| {
                let (_, mut rp) = point(0, &t.to_string());
                rp.tree = BlobId(id.0);
                (*id, rp)
            })
            .collect();
        let got = apply(&policy, &pts, &tz);
        prop_assert_eq!(got.len(), pts.len());
        if policy.is_empty() {
            prop_assert!(got.iter().all(|(_, v)| v.is_keep()));
            return Ok(());
        }
        let got: BTreeMap<Id, BTreeSet<String>> = got
            .into_iter()
            .filter_map(|(id, v)| match v {
                Verdict::Keep { reasons } => {
                    Some((id, reasons.iter().map(ToString::to_string).collect()))
                }
                Verdict::Forget => None,
            })
            .collect();
        prop_assert_eq!(got, reference(&policy, &stamps, &tz));
    }
}
