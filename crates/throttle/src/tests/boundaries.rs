//! Rate changes at work-hours boundaries, driven through a fake zoned clock.
//! 2024-06-07 is a Friday.

use std::time::Duration;

use super::{KIB, MIB, Sim, assert_within_contract, fake, slack};
use crate::{Rate, Schedule};

const GIB: u64 = 1024 * MIB;

fn schedule(days: &str, hours: &str, work: Rate, non_work: Rate) -> Schedule {
    Schedule {
        work_days: days.parse().unwrap(),
        work_hours: hours.parse().unwrap(),
        work_rate: work,
        non_work_rate: non_work,
        tz: None,
    }
}

/// Sends for `seconds` from `start` and checks every window against a rate that switches from
/// `before` to `after` at `boundary_ms`.
async fn crossing(
    name: &str,
    sched: Schedule,
    start: &str,
    seconds: u64,
    boundary_ms: usize,
    (before, after): (Option<u64>, Option<u64>),
) {
    let (clock, throttle) = fake(start, sched);
    let rate = |r: Option<u64>| r.map_or(Rate::Unlimited, Rate::BytesPerSec);
    assert_eq!(throttle.current_rate(), rate(before), "{name}: before");
    let trace = Sim {
        throttle: &throttle,
        clock: &clock,
        seconds,
        max_request: MIB,
        link: Some(GIB),
        idle: None,
        between: &mut |_| {},
        seed: boundary_ms as u64,
    }
    .run()
    .await;
    assert_eq!(throttle.current_rate(), rate(after), "{name}: after");
    let limit = |ms: usize| if ms < boundary_ms { before } else { after };
    let first = if before.is_some() { 1000 } else { boundary_ms };
    let higher = before.unwrap_or(0).max(after.unwrap_or(0));
    let acc = trace.accuracy(first, &limit);
    assert_within_contract(name, &acc, slack(higher));
    if before != after && before.is_some() {
        assert!(acc.straddling > 1000, "{name}: {acc:?}");
    }
    if before.is_none() {
        let unlimited_phase: u64 = trace.bins[..boundary_ms].iter().sum();
        assert!(
            unlimited_phase > GIB,
            "{name}: unlimited phase sent {unlimited_phase}"
        );
        // The limiter starts drained: not even the 1/10 s burst right at the boundary.
        let first_second: u64 = trace.bins[boundary_ms..boundary_ms + 1000].iter().sum();
        let limit = after.unwrap_or(u64::MAX) as f64;
        assert!(
            first_second as f64 <= 1.02 * limit,
            "{name}: first second {first_second}"
        );
    }
}

#[tokio::test]
async fn friday_1800_raises_the_rate() {
    let sched = schedule(
        "mon-fri",
        "09:00-18:00",
        Rate::BytesPerSec(64 * KIB),
        Rate::BytesPerSec(MIB),
    );
    let some = (Some(64 * KIB), Some(MIB));
    crossing(
        "fri 18:00 up",
        sched,
        "2024-06-07T17:59:30",
        60,
        30_000,
        some,
    )
    .await;
}

#[tokio::test]
async fn friday_1800_lowers_the_rate_for_the_weekend() {
    let sched = schedule(
        "mon-fri",
        "09:00-18:00",
        Rate::BytesPerSec(MIB),
        Rate::BytesPerSec(64 * KIB),
    );
    let some = (Some(MIB), Some(64 * KIB));
    crossing(
        "fri 18:00 down",
        sched.clone(),
        "2024-06-07T17:59:50",
        40,
        10_000,
        some,
    )
    .await;
    // A fresh throttle, jumped through the weekend.
    let (clock, throttle) = fake("2024-06-07T17:59:50", sched);
    let checks = [
        (Duration::from_secs(20), Rate::BytesPerSec(64 * KIB)), // Friday 18:00:10
        (Duration::from_secs(18 * 3600), Rate::BytesPerSec(64 * KIB)), // Saturday noon
        (Duration::from_secs(31 * 3600), Rate::BytesPerSec(64 * KIB)), // Sunday 00:59:50
        (Duration::from_secs(63 * 3600), Rate::BytesPerSec(64 * KIB)), // Monday 08:59:50
        (Duration::from_secs(63 * 3600 + 59), Rate::BytesPerSec(MIB)), // Monday 09:00:49
    ];
    let mut elapsed = Duration::ZERO;
    for (at, want) in checks {
        clock.advance(at - elapsed);
        elapsed = at;
        assert_eq!(throttle.current_rate(), want, "at +{at:?}");
    }
}

#[tokio::test]
async fn monday_0900_ends_an_unlimited_weekend_without_a_burst() {
    let sched = schedule(
        "mon-fri",
        "09:00-18:00",
        Rate::BytesPerSec(64 * KIB),
        Rate::Unlimited,
    );
    let rates = (None, Some(64 * KIB));
    // 2024-06-10 is a Monday.
    crossing(
        "mon 09:00 unlimited->64KiB",
        sched,
        "2024-06-10T08:59:58",
        30,
        2_000,
        rates,
    )
    .await;
}

#[tokio::test]
async fn overnight_hours_switch_at_2200_and_0600() {
    let sched = schedule(
        "mon-fri",
        "22:00-06:00",
        Rate::BytesPerSec(64 * KIB),
        Rate::BytesPerSec(MIB),
    );
    let into = (Some(MIB), Some(64 * KIB));
    crossing(
        "fri 22:00 into shift",
        sched.clone(),
        "2024-06-07T21:59:50",
        30,
        10_000,
        into,
    )
    .await;
    let out = (Some(64 * KIB), Some(MIB));
    crossing(
        "sat 06:00 out of shift",
        sched.clone(),
        "2024-06-08T05:59:50",
        30,
        10_000,
        out,
    )
    .await;
    // Saturday 22:00 starts no shift: the rate stays at the non-work rate.
    let none = (Some(MIB), Some(MIB));
    crossing(
        "sat 22:00 no shift",
        sched,
        "2024-06-08T21:59:50",
        20,
        10_000,
        none,
    )
    .await;
}

#[tokio::test]
async fn a_waiting_request_speeds_up_at_the_boundary() {
    // 10 KiB at 100 B/s would take 100 s; the rate becomes unlimited after 1 s.
    let sched = schedule(
        "mon-fri",
        "09:00-18:00",
        Rate::BytesPerSec(100),
        Rate::Unlimited,
    );
    let (clock, throttle) = fake("2024-06-07T17:59:59", sched);
    throttle.acquire(10 * KIB).await;
    let secs = clock.elapsed().as_secs_f64();
    assert!((1.0..1.1).contains(&secs), "finished after {secs} s");
    let waited = throttle.total_wait().as_secs_f64();
    assert!(
        (waited - secs).abs() < 1e-6,
        "waited {waited} s of {secs} s"
    );
}
