//! [`Schedule`]: which rate applies at a given wall-clock time.

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Zoned};
use serde::{Deserialize, Serialize};

use crate::{Rate, ThrottleError};

pub use crate::calendar::{WorkDays, WorkHours};

/// When to throttle and how hard: a work rate during work hours on work days, a non-work rate
/// otherwise.
///
/// The default is work days `mon-fri`, work hours `09:00-18:00`, and both rates unlimited.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Schedule {
    /// The days on which work hours apply (an overnight shift belongs to its starting day).
    pub work_days: WorkDays,
    /// The work hours, in the schedule's local time.
    pub work_hours: WorkHours,
    /// The rate during work hours on work days.
    pub work_rate: Rate,
    /// The rate at all other times.
    pub non_work_rate: Rate,
    /// The IANA time zone the work hours are in (`Europe/Paris`). `None` means the time zone of
    /// the clock, which for the real clock is the system's local time. A name that the time-zone
    /// database does not know is treated as `None`; [`Schedule::validate`] reports it.
    pub tz: Option<String>,
}

impl Default for Schedule {
    fn default() -> Schedule {
        Schedule {
            work_days: WorkDays::default(),
            work_hours: WorkHours::default(),
            work_rate: Rate::Unlimited,
            non_work_rate: Rate::Unlimited,
            tz: None,
        }
    }
}

/// How far ahead to look for a boundary: a week, plus a day on each side for overnight hours.
const SEARCH_DAYS: i64 = 9;

impl Schedule {
    /// Checks what parsing could not: that the time zone, if any, exists.
    pub fn validate(&self) -> Result<(), ThrottleError> {
        self.time_zone().map(|_| ())
    }

    /// The schedule's time zone, or `None` when it follows the clock's.
    pub fn time_zone(&self) -> Result<Option<TimeZone>, ThrottleError> {
        match &self.tz {
            None => Ok(None),
            Some(name) => {
                TimeZone::get(name)
                    .map(Some)
                    .map_err(|source| ThrottleError::UnknownTimeZone {
                        name: name.clone(),
                        source,
                    })
            }
        }
    }

    /// `t` seen in the schedule's time zone.
    fn localize(&self, t: &Zoned) -> Zoned {
        match self.time_zone() {
            Ok(Some(tz)) => t.with_time_zone(tz),
            _ => t.clone(),
        }
    }

    /// Whether `t` falls in work hours on a work day.
    pub fn is_work_time(&self, t: &Zoned) -> bool {
        self.is_work_local(&self.localize(t))
    }

    fn is_work_local(&self, local: &Zoned) -> bool {
        let (days, hours) = (&self.work_days, &self.work_hours);
        let time = local.time();
        let second = i32::from(time.hour()) * 3600
            + i32::from(time.minute()) * 60
            + i32::from(time.second());
        let start = i32::try_from(hours.start_minute() * 60).unwrap_or(i32::MAX);
        let end = i32::try_from(hours.end_minute() * 60).unwrap_or(i32::MAX);
        let today = days.contains(local.weekday());
        if hours.is_overnight() {
            // The early-morning part belongs to the shift that started the day before.
            (today && second >= start)
                || (second < end && days.contains(local.weekday().previous()))
        } else {
            today && start <= second && second < end
        }
    }

    /// The rate that applies at `t`.
    pub fn rate_at(&self, t: Zoned) -> Rate {
        if self.is_work_time(&t) {
            self.work_rate
        } else {
            self.non_work_rate
        }
    }

    /// The next instant after `t` at which the rate may change (the next work-hours boundary,
    /// where work time starts or ends), for re-arming. When work time never starts or ends
    /// (work days `none`, or `daily` with `00:00-24:00`), returns `t` plus one day.
    pub fn next_change_after(&self, t: &Zoned) -> Zoned {
        let local = self.localize(t);
        let now_work = self.is_work_local(&local);
        let mut candidates = self.boundaries_near(&local);
        candidates.sort();
        candidates
            .into_iter()
            .find(|c| c.timestamp() > t.timestamp() && self.is_work_local(c) != now_work)
            .unwrap_or_else(|| local.saturating_add(SignedDuration::from_hours(24)))
    }

    /// Every start and end of work hours from the day before `local` to a week after it.
    fn boundaries_near(&self, local: &Zoned) -> Vec<Zoned> {
        let tz = local.time_zone().clone();
        let mut out = Vec::with_capacity(2 * SEARCH_DAYS as usize);
        let minutes = [self.work_hours.start_minute(), self.work_hours.end_minute()];
        for offset in -1..SEARCH_DAYS - 1 {
            let Ok(day) = local.date().checked_add(jiff::Span::new().days(offset)) else {
                continue;
            };
            for minute in minutes {
                // `24:00` is the next day's midnight; the arithmetic handles it.
                let at = day
                    .to_datetime(jiff::civil::Time::midnight())
                    .checked_add(SignedDuration::from_mins(i64::from(minute)));
                // A boundary inside a DST gap lands just after the gap ("compatible").
                if let Some(zoned) = at.ok().and_then(|dt| dt.to_zoned(tz.clone()).ok()) {
                    out.push(zoned);
                }
            }
        }
        out
    }

    /// Whether both rates are unlimited, so the schedule never throttles.
    pub fn is_unlimited(&self) -> bool {
        self.work_rate.is_unlimited() && self.non_work_rate.is_unlimited()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Zoned {
        // Fixed offset, so the test needs no time-zone database and has no DST.
        format!("{text}+00:00[UTC]").parse().unwrap()
    }

    fn schedule(days: &str, hours: &str) -> Schedule {
        Schedule {
            work_days: days.parse().unwrap(),
            work_hours: hours.parse().unwrap(),
            work_rate: Rate::BytesPerSec(1000),
            non_work_rate: Rate::Unlimited,
            tz: None,
        }
    }

    #[test]
    fn rate_at_follows_days_and_hours() {
        let s = schedule("mon-fri", "09:00-18:00");
        let work = Rate::BytesPerSec(1000);
        // 2024-06-07 is a Friday.
        let table = [
            ("2024-06-07T08:59:59", Rate::Unlimited),
            ("2024-06-07T09:00:00", work),
            ("2024-06-07T17:59:59", work),
            ("2024-06-07T18:00:00", Rate::Unlimited),
            ("2024-06-08T12:00:00", Rate::Unlimited),
            ("2024-06-09T12:00:00", Rate::Unlimited),
            ("2024-06-10T12:00:00", work),
        ];
        for (t, want) in table {
            assert_eq!(s.rate_at(at(t)), want, "{t}");
        }
    }

    #[test]
    fn overnight_shift_belongs_to_its_starting_day() {
        let s = schedule("mon-fri", "22:00-06:00");
        let work = Rate::BytesPerSec(1000);
        let table = [
            ("2024-06-07T21:59:59", Rate::Unlimited), // Friday evening
            ("2024-06-07T22:00:00", work),
            ("2024-06-08T05:59:59", work), // Saturday morning: Friday's shift
            ("2024-06-08T06:00:00", Rate::Unlimited),
            ("2024-06-08T22:00:00", Rate::Unlimited), // Saturday night: no shift
            ("2024-06-09T23:00:00", Rate::Unlimited), // Sunday night: no shift
            ("2024-06-10T03:00:00", Rate::Unlimited), // Monday morning: Sunday's shift
            ("2024-06-10T22:30:00", work),
            ("2024-06-11T03:00:00", work),
        ];
        for (t, want) in table {
            assert_eq!(s.rate_at(at(t)), want, "{t}");
        }
    }

    #[test]
    fn next_change_skips_the_weekend() {
        let s = schedule("mon-fri", "09:00-18:00");
        let table = [
            ("2024-06-07T10:00:00", "2024-06-07T18:00:00"),
            ("2024-06-07T18:00:00", "2024-06-10T09:00:00"),
            ("2024-06-08T00:00:00", "2024-06-10T09:00:00"),
            ("2024-06-10T08:00:00", "2024-06-10T09:00:00"),
        ];
        for (t, want) in table {
            assert_eq!(
                s.next_change_after(&at(t)).timestamp(),
                at(want).timestamp(),
                "{t}"
            );
        }
        let s = schedule("mon-fri", "22:00-06:00");
        let table = [
            ("2024-06-07T12:00:00", "2024-06-07T22:00:00"),
            ("2024-06-07T23:00:00", "2024-06-08T06:00:00"),
            ("2024-06-08T06:00:00", "2024-06-10T22:00:00"),
        ];
        for (t, want) in table {
            assert_eq!(
                s.next_change_after(&at(t)).timestamp(),
                at(want).timestamp(),
                "{t}"
            );
        }
    }

    #[test]
    fn next_change_without_boundaries_is_a_day_later() {
        for s in [
            schedule("none", "09:00-18:00"),
            schedule("daily", "00:00-24:00"),
        ] {
            let t = at("2024-06-07T10:00:00");
            let next = s.next_change_after(&t);
            assert_eq!(next.duration_since(&t), SignedDuration::from_hours(24));
        }
    }

    #[test]
    fn schedule_time_zone_shifts_the_hours() {
        let mut s = schedule("mon-fri", "09:00-18:00");
        s.tz = Some("America/New_York".to_owned());
        s.validate().unwrap();
        // 14:00 UTC is 10:00 in New York (EDT) in June: work time there, not at 08:30 UTC.
        assert_eq!(
            s.rate_at(at("2024-06-07T14:00:00")),
            Rate::BytesPerSec(1000)
        );
        assert_eq!(s.rate_at(at("2024-06-07T08:30:00")), Rate::Unlimited);
        // 18:00 in New York is 22:00 UTC.
        let next = s.next_change_after(&at("2024-06-07T14:00:00"));
        assert_eq!(next.timestamp(), at("2024-06-07T22:00:00").timestamp());
        s.tz = Some("Mars/Olympus_Mons".to_owned());
        let err = s.validate().unwrap_err();
        assert!(
            matches!(err, ThrottleError::UnknownTimeZone { .. }),
            "{err}"
        );
    }

    #[test]
    fn dst_day_boundaries_are_real_instants() {
        let mut s = schedule("daily", "01:00-03:00");
        s.tz = Some("Europe/Berlin".to_owned());
        // 2024-03-31: clocks jump 02:00 -> 03:00 in Berlin, so the window is 1 h long (00:00 to
        // 01:00 UTC).
        let before: Zoned = "2024-03-30T23:30:00+00:00[UTC]".parse().unwrap();
        let start = s.next_change_after(&before);
        let end = s.next_change_after(&start);
        assert_eq!(end.duration_since(&start), SignedDuration::from_hours(1));
    }

    #[test]
    fn default_is_weekday_office_hours_unlimited() {
        let s = Schedule::default();
        assert_eq!(s.work_days.to_string(), "mon-fri");
        assert_eq!(s.work_hours.to_string(), "09:00-18:00");
        assert!(s.is_unlimited());
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Schedule>(&json).unwrap(), s);
    }
}
