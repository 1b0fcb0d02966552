//! The due rules under chosen clocks and time zones.

use jiff::{SignedDuration, Timestamp, ToSpan, Zoned};

use super::*;

fn sched(at: &[&str], days: &str) -> Schedule {
    let at: Vec<String> = at.iter().map(|s| s.to_string()).collect();
    Schedule::parse(&at, days).unwrap()
}

/// A zoned time: `2026-03-02T09:00` in Europe/Berlin unless the text names its own zone.
fn z(s: &str) -> Zoned {
    if s.contains('[') {
        s.parse().unwrap()
    } else {
        format!("{s}[Europe/Berlin]").parse().unwrap()
    }
}

fn ts(s: &str) -> Timestamp {
    z(s).timestamp()
}

#[test]
fn parses_times_and_days() {
    let s = sched(&["18:00,09:00", "9:00", "07:05"], "Sun,wed");
    assert_eq!(s.times(), ["07:05", "09:00", "18:00"]);
    assert_eq!(s.days(), "wed,sun");
    assert_eq!(sched(&["00:00"], "mon-fri").days(), "mon-fri");
    assert_eq!(sched(&["23:59"], "daily").days(), "daily");
    for bad in [
        "24:00", "9", "09:60", "09:5", "ab:cd", "", "-1:00", "123:00",
    ] {
        let at = vec![bad.to_string()];
        assert!(Schedule::parse(&at, "daily").is_err(), "{bad:?} accepted");
    }
    let at = vec!["09:00".to_string()];
    for bad in ["none", "", "funday", "mon-xyz"] {
        assert!(Schedule::parse(&at, bad).is_err(), "days {bad:?} accepted");
    }
    assert!(Schedule::parse(&[], "daily").is_err());
}

#[test]
fn daily_at_nine() {
    let s = sched(&["09:00"], "daily");
    // 2026-03-02 is a Monday.
    assert_eq!(
        s.latest_slot(&z("2026-03-02T08:59")),
        Some(z("2026-03-01T09:00"))
    );
    assert_eq!(
        s.latest_slot(&z("2026-03-02T09:00")),
        Some(z("2026-03-02T09:00"))
    );
    assert_eq!(
        s.next_slot(&z("2026-03-02T09:00")),
        Some(z("2026-03-03T09:00"))
    );
    let last = Some(ts("2026-03-01T09:00:05"));
    assert!(!s.is_due(last, None, &z("2026-03-02T08:59:59")));
    assert!(s.is_due(last, None, &z("2026-03-02T09:00")));
    assert!(s.is_due(last, None, &z("2026-03-02T23:00")));
    // Having run at 09:00:30, it is not due again until tomorrow.
    let last = Some(ts("2026-03-02T09:00:30"));
    assert!(!s.is_due(last, None, &z("2026-03-02T09:01")));
    assert!(!s.is_due(last, None, &z("2026-03-03T08:59")));
    assert!(s.is_due(last, None, &z("2026-03-03T09:00")));
}

#[test]
fn several_times_a_day() {
    let s = sched(&["09:00", "13:00", "18:30"], "daily");
    let now = z("2026-03-02T14:00");
    assert_eq!(s.latest_slot(&now), Some(z("2026-03-02T13:00")));
    assert_eq!(s.next_slot(&now), Some(z("2026-03-02T18:30")));
    assert_eq!(
        s.latest_slot(&z("2026-03-02T08:00")),
        Some(z("2026-03-01T18:30"))
    );
    let after_nine = Some(ts("2026-03-02T09:10"));
    assert!(!s.is_due(after_nine, None, &z("2026-03-02T12:59")));
    assert!(s.is_due(after_nine, None, &z("2026-03-02T13:00:01")));
    // A run that started before 13:00 and is still the last success leaves 13:00 due.
    assert!(s.is_due(Some(ts("2026-03-02T12:59:59")), None, &now));
}

#[test]
fn weekdays_skip_the_weekend() {
    let s = sched(&["09:00"], "mon-fri");
    let friday_run = Some(ts("2026-03-06T09:02"));
    for now in [
        "2026-03-06T10:00",
        "2026-03-07T10:00",
        "2026-03-08T23:59",
        "2026-03-09T08:59",
    ] {
        assert_eq!(s.latest_slot(&z(now)), Some(z("2026-03-06T09:00")), "{now}");
        assert!(!s.is_due(friday_run, None, &z(now)), "due at {now}");
    }
    assert!(s.is_due(friday_run, None, &z("2026-03-09T09:00")));
    assert_eq!(
        s.next_slot(&z("2026-03-06T10:00")),
        Some(z("2026-03-09T09:00"))
    );
}

#[test]
fn sparse_days_look_back_a_whole_week() {
    let s = sched(&["21:00"], "wed");
    // Wednesday 2026-03-04 20:59: the last slot is a week earlier.
    assert_eq!(
        s.latest_slot(&z("2026-03-04T20:59")),
        Some(z("2026-02-25T21:00"))
    );
    assert_eq!(
        s.next_slot(&z("2026-03-04T21:00")),
        Some(z("2026-03-11T21:00"))
    );
}

#[test]
fn a_missed_week_is_caught_up_once() {
    let s = sched(&["09:00", "17:00"], "daily");
    let last = ts("2026-03-02T09:01");
    let now = z("2026-03-10T12:00");
    assert!(s.is_due(Some(last), None, &now));
    // The catch-up run at 12:00 covers every missed slot: not due again until 17:00.
    let caught_up = Some(now.timestamp());
    assert!(!s.is_due(caught_up, None, &z("2026-03-10T12:15")));
    assert!(!s.is_due(caught_up, None, &z("2026-03-10T16:59")));
    assert!(s.is_due(caught_up, None, &z("2026-03-10T17:00")));
}

#[test]
fn a_failed_run_stays_due() {
    let s = sched(&["09:00"], "daily");
    // Only successes count: with the last success yesterday, every check today finds it due.
    let last = Some(ts("2026-03-01T09:01"));
    for now in ["2026-03-02T09:00", "2026-03-02T09:15", "2026-03-02T20:00"] {
        assert!(s.is_due(last, None, &z(now)), "{now}");
    }
}

#[test]
fn a_new_job_waits_for_its_next_slot() {
    let s = sched(&["09:00"], "daily");
    let created = Some(ts("2026-03-02T10:00"));
    assert!(!s.is_due(None, created, &z("2026-03-02T10:00:01")));
    assert!(!s.is_due(None, created, &z("2026-03-03T08:59")));
    assert!(s.is_due(None, created, &z("2026-03-03T09:00")));
    // Added before today's slot: runs today.
    let created = Some(ts("2026-03-02T08:00"));
    assert!(!s.is_due(None, created, &z("2026-03-02T08:59")));
    assert!(s.is_due(None, created, &z("2026-03-02T09:00")));
    // A job written into the config by hand (no creation time) runs at once.
    assert!(s.is_due(None, None, &z("2026-03-02T08:00")));
    // A clock set back before the last success does not make the job due.
    let last = Some(ts("2026-03-05T09:00"));
    assert!(!s.is_due(last, None, &z("2026-03-03T10:00")));
}

#[test]
fn spring_forward_gap_runs_an_hour_later() {
    // Europe/Berlin, 2026-03-29: 02:00 CET becomes 03:00 CEST; 02:30 does not exist.
    let s = sched(&["02:30"], "daily");
    assert_eq!(
        s.latest_slot(&z("2026-03-29T03:15+02:00[Europe/Berlin]")),
        Some(z("2026-03-28T02:30"))
    );
    let slot = s
        .latest_slot(&z("2026-03-29T03:31+02:00[Europe/Berlin]"))
        .unwrap();
    assert_eq!(slot.timestamp(), ts("2026-03-29T01:30:00Z[UTC]"));
    assert_eq!(
        s.next_slot(&z("2026-03-28T12:00")).unwrap().timestamp(),
        slot.timestamp()
    );
    // The day after, 02:30 is back, in summer time.
    assert_eq!(
        s.next_slot(&slot).unwrap().timestamp(),
        ts("2026-03-30T00:30:00Z[UTC]")
    );
}

#[test]
fn fall_back_fold_runs_once() {
    // Europe/Berlin, 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
    let s = sched(&["02:30"], "daily");
    let first = z("2026-10-25T02:30+02:00[Europe/Berlin]");
    let second = z("2026-10-25T02:30+01:00[Europe/Berlin]");
    assert_eq!(
        first.timestamp().duration_until(second.timestamp()),
        SignedDuration::from_hours(1)
    );
    assert_eq!(s.latest_slot(&first), Some(first.clone()));
    assert_eq!(s.latest_slot(&second), Some(first.clone()));
    let ran = Some(first.timestamp() + 1.minute());
    assert!(!s.is_due(ran, None, &second));
    assert!(!s.is_due(ran, None, &z("2026-10-25T02:45+01:00[Europe/Berlin]")));
    assert_eq!(
        s.next_slot(&first).unwrap().timestamp(),
        ts("2026-10-26T01:30:00Z[UTC]")
    );
}

#[test]
fn daily_slots_follow_local_time_across_dst() {
    // 09:00 in Berlin is 08:00 UTC before the change and 07:00 UTC after it.
    let s = sched(&["09:00"], "daily");
    let before = s.latest_slot(&z("2026-03-28T10:00")).unwrap();
    let after = s.latest_slot(&z("2026-03-29T10:00")).unwrap();
    assert_eq!(before.timestamp(), ts("2026-03-28T08:00:00Z[UTC]"));
    assert_eq!(after.timestamp(), ts("2026-03-29T07:00:00Z[UTC]"));
    assert_eq!(
        before.timestamp().duration_until(after.timestamp()),
        SignedDuration::from_hours(23)
    );
}

/// Every slot of the days around `start`, found by stepping through each minute and keeping
/// those whose local time is a scheduled time on an allowed day. Valid only for times that are
/// in no gap or fold.
fn brute_slots(s: &Schedule, start: &Zoned, minutes: i64) -> Vec<Timestamp> {
    let mut out = Vec::new();
    let mut t = start.clone();
    for _ in 0..minutes {
        let hm = format!("{:02}:{:02}", t.hour(), t.minute());
        if s.times().contains(&hm) && s.days.contains(t.weekday()) {
            out.push(t.timestamp());
        }
        t = t.checked_add(1.minute()).unwrap();
    }
    out
}

#[test]
fn latest_and_next_agree_with_a_minute_by_minute_scan() {
    for (at, days) in [
        (&["09:00", "13:30"][..], "mon-fri"),
        (&["00:00", "23:45"][..], "sat,sun,wed"),
        (&["12:00"][..], "tue"),
    ] {
        let s = sched(at, days);
        // Three weeks around the March DST change in Berlin, and the same in UTC.
        for zone in ["Europe/Berlin", "UTC"] {
            let start = z(&format!("2026-03-15T00:00[{zone}]"));
            let minutes = 21 * 24 * 60;
            let slots = brute_slots(&s, &start, minutes);
            assert!(slots.len() >= 3, "{at:?} {days}: {slots:?}");
            // Probe every 7 minutes from the second week on (so a latest slot always exists).
            let mut now = start.checked_add(8.days()).unwrap();
            let end = start.checked_add(13.days()).unwrap();
            while now < end {
                let t = now.timestamp();
                let latest = slots.iter().rev().find(|&&x| x <= t).copied();
                let next = slots.iter().find(|&&x| x > t).copied();
                assert_eq!(
                    s.latest_slot(&now).map(|z| z.timestamp()),
                    latest,
                    "latest at {now}"
                );
                assert_eq!(
                    s.next_slot(&now).map(|z| z.timestamp()),
                    next,
                    "next at {now}"
                );
                now = now.checked_add(7.minutes()).unwrap();
            }
        }
    }
}
