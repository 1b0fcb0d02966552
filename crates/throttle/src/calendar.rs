//! [`WorkDays`] and [`WorkHours`]: the calendar half of a schedule, with their text forms.

use std::fmt;
use std::str::FromStr;

use jiff::civil::Weekday;
use serde::{Deserialize, Serialize};

use crate::ThrottleError;

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const FULL_NAMES: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// A set of week days, Monday to Sunday.
///
/// Text form: `daily`, `none`, `weekdays` (= `mon-fri`), `weekends` (= `sat,sun`), or a
/// comma-separated list of days (`mon`, `tue`, … or full names) and ranges (`mon-fri`; a range
/// may wrap, `fri-mon`). Case-insensitive. `Display` writes the canonical form (`daily`,
/// `mon-fri`, `mon-wed,fri`, `sat,sun`), which parses back to the same set.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WorkDays(u8);

impl WorkDays {
    /// Every day of the week.
    pub const DAILY: WorkDays = WorkDays(0x7f);
    /// Monday to Friday.
    pub const WEEKDAYS: WorkDays = WorkDays(0x1f);
    /// No day at all: the non-work rate always applies.
    pub const NONE: WorkDays = WorkDays(0);

    /// Whether `day` is a work day.
    pub fn contains(&self, day: Weekday) -> bool {
        self.0 & (1 << day.to_monday_zero_offset()) != 0
    }

    /// The set with `day` added.
    pub fn with(self, day: Weekday) -> WorkDays {
        WorkDays(self.0 | (1 << day.to_monday_zero_offset()))
    }

    /// Whether no day is a work day.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }
}

impl Default for WorkDays {
    fn default() -> WorkDays {
        WorkDays::WEEKDAYS
    }
}

fn day_index(name: &str) -> Option<u8> {
    let pos = DAY_NAMES.iter().position(|&d| d == name);
    let pos = pos.or_else(|| FULL_NAMES.iter().position(|&d| d == name))?;
    u8::try_from(pos).ok()
}

impl FromStr for WorkDays {
    type Err = ThrottleError;

    fn from_str(input: &str) -> Result<WorkDays, ThrottleError> {
        let err = |reason: String| ThrottleError::InvalidWorkDays {
            input: input.to_owned(),
            reason,
        };
        let lower = input.trim().to_ascii_lowercase();
        match lower.as_str() {
            "daily" | "everyday" | "all" => return Ok(WorkDays::DAILY),
            "none" => return Ok(WorkDays::NONE),
            "weekdays" => return Ok(WorkDays::WEEKDAYS),
            "weekends" => return Ok(WorkDays(0x60)),
            "" => return Err(err("it is empty".to_owned())),
            _ => {}
        }
        let mut bits = 0u8;
        for item in lower.split(',').map(str::trim) {
            let unknown = |name: &str| err(format!("unknown day {name:?}"));
            let (first, last) = match item.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (item, item),
            };
            let first = day_index(first).ok_or_else(|| unknown(first))?;
            let last = day_index(last).ok_or_else(|| unknown(last))?;
            let mut day = first;
            loop {
                bits |= 1 << day;
                if day == last {
                    break;
                }
                day = (day + 1) % 7;
            }
        }
        Ok(WorkDays(bits))
    }
}

impl fmt::Display for WorkDays {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 & 0x7f {
            0 => return f.write_str("none"),
            0x7f => return f.write_str("daily"),
            _ => {}
        }
        let mut parts = Vec::new();
        let mut day = 0;
        while day < 7 {
            if self.0 & (1 << day) == 0 {
                day += 1;
                continue;
            }
            let start = day;
            while day + 1 < 7 && self.0 & (1 << (day + 1)) != 0 {
                day += 1;
            }
            match day - start {
                0 => parts.push(DAY_NAMES[start].to_owned()),
                1 => parts.push(format!("{},{}", DAY_NAMES[start], DAY_NAMES[day])),
                _ => parts.push(format!("{}-{}", DAY_NAMES[start], DAY_NAMES[day])),
            }
            day += 1;
        }
        f.write_str(&parts.join(","))
    }
}

impl TryFrom<String> for WorkDays {
    type Error = ThrottleError;
    fn try_from(s: String) -> Result<WorkDays, ThrottleError> {
        s.parse()
    }
}

impl From<WorkDays> for String {
    fn from(days: WorkDays) -> String {
        days.to_string()
    }
}

/// The daily work hours, `start` inclusive to `end` exclusive, in local time.
///
/// Text form `HH:MM-HH:MM` (`09:00-18:00`). `end` may be `24:00`, and may be before `start` for
/// hours that run past midnight (`22:00-06:00`); such a shift belongs to the day on which it
/// starts, so with work days `mon-fri` the shift from Friday 22:00 to Saturday 06:00 is work
/// time and the one from Sunday 22:00 to Monday 06:00 is not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WorkHours {
    start: (u8, u8),
    end: (u8, u8),
}

impl WorkHours {
    /// Work hours from `start` to `end`, each `(hour, minute)`; `end` may be `(24, 0)`.
    pub fn new(start: (u8, u8), end: (u8, u8)) -> Result<WorkHours, ThrottleError> {
        let hours = WorkHours { start, end };
        let err = |reason: &str| ThrottleError::InvalidWorkHours {
            input: format!("{}:{:02}-{}:{:02}", start.0, start.1, end.0, end.1),
            reason: reason.to_owned(),
        };
        if start.0 > 23 || start.1 > 59 {
            return Err(err("the start must be between 00:00 and 23:59"));
        }
        if end.1 > 59 || end.0 > 24 || (end.0 == 24 && end.1 != 0) {
            return Err(err("the end must be between 00:00 and 24:00"));
        }
        if hours.start_minute() == hours.end_minute() {
            return Err(err(
                "start and end are the same time; use work days `none` for no work hours, or \
                 `00:00-24:00` for all day",
            ));
        }
        Ok(hours)
    }

    /// The start, as `(hour, minute)`.
    pub fn start(&self) -> (u8, u8) {
        self.start
    }

    /// The end, as `(hour, minute)`; `(24, 0)` is the end of the day.
    pub fn end(&self) -> (u8, u8) {
        self.end
    }

    /// Whether the hours run past midnight (`end` before `start`).
    pub fn is_overnight(&self) -> bool {
        self.end_minute() < self.start_minute()
    }

    pub(crate) fn start_minute(&self) -> u32 {
        u32::from(self.start.0) * 60 + u32::from(self.start.1)
    }

    pub(crate) fn end_minute(&self) -> u32 {
        u32::from(self.end.0) * 60 + u32::from(self.end.1)
    }
}

impl Default for WorkHours {
    fn default() -> WorkHours {
        WorkHours {
            start: (9, 0),
            end: (18, 0),
        }
    }
}

fn parse_clock(text: &str) -> Option<(u8, u8)> {
    let (h, m) = text.trim().split_once(':')?;
    let digits = |s: &str| !s.is_empty() && s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(h) || !digits(m) || m.len() != 2 {
        return None;
    }
    Some((h.parse().ok()?, m.parse().ok()?))
}

impl FromStr for WorkHours {
    type Err = ThrottleError;

    fn from_str(input: &str) -> Result<WorkHours, ThrottleError> {
        let err = |reason: &str| ThrottleError::InvalidWorkHours {
            input: input.to_owned(),
            reason: reason.to_owned(),
        };
        let (start, end) = input
            .split_once('-')
            .ok_or_else(|| err("there is no `-` between start and end"))?;
        let start = parse_clock(start).ok_or_else(|| err("the start is not a time HH:MM"))?;
        let end = parse_clock(end).ok_or_else(|| err("the end is not a time HH:MM"))?;
        WorkHours::new(start, end).map_err(|e| match e {
            ThrottleError::InvalidWorkHours { reason, .. } => err(&reason),
            other => other,
        })
    }
}

impl fmt::Display for WorkHours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (s, e) = (self.start, self.end);
        write!(f, "{:02}:{:02}-{:02}:{:02}", s.0, s.1, e.0, e.1)
    }
}

impl TryFrom<String> for WorkHours {
    type Error = ThrottleError;
    fn try_from(s: String) -> Result<WorkHours, ThrottleError> {
        s.parse()
    }
}

impl From<WorkHours> for String {
    fn from(hours: WorkHours) -> String {
        hours.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Weekday::*;

    fn days(list: &[Weekday]) -> WorkDays {
        list.iter().fold(WorkDays::NONE, |acc, &d| acc.with(d))
    }

    #[test]
    fn work_days_parse_table() {
        let table: &[(&str, &[Weekday], &str)] = &[
            (
                "mon-fri",
                &[Monday, Tuesday, Wednesday, Thursday, Friday],
                "mon-fri",
            ),
            (
                "MON-FRI",
                &[Monday, Tuesday, Wednesday, Thursday, Friday],
                "mon-fri",
            ),
            (
                "weekdays",
                &[Monday, Tuesday, Wednesday, Thursday, Friday],
                "mon-fri",
            ),
            (
                "daily",
                &[
                    Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday,
                ],
                "daily",
            ),
            (
                "mon-sun",
                &[
                    Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday,
                ],
                "daily",
            ),
            ("sat,sun", &[Saturday, Sunday], "sat,sun"),
            ("weekends", &[Saturday, Sunday], "sat,sun"),
            (
                "mon-wed,fri",
                &[Monday, Tuesday, Wednesday, Friday],
                "mon-wed,fri",
            ),
            (
                "fri, mon-wed",
                &[Monday, Tuesday, Wednesday, Friday],
                "mon-wed,fri",
            ),
            (
                "fri-mon",
                &[Friday, Saturday, Sunday, Monday],
                "mon,fri-sun",
            ),
            ("tuesday,thursday", &[Tuesday, Thursday], "tue,thu"),
            ("wed", &[Wednesday], "wed"),
            ("none", &[], "none"),
        ];
        for (text, want, canonical) in table {
            let parsed: WorkDays = text.parse().unwrap();
            assert_eq!(parsed, days(want), "parsing {text:?}");
            assert_eq!(parsed.to_string(), *canonical, "display of {text:?}");
            assert_eq!(canonical.parse::<WorkDays>().unwrap(), parsed);
        }
    }

    #[test]
    fn work_days_reject_with_a_helpful_message() {
        for text in [
            "",
            "mon-",
            "funday",
            "mon-fri,xyz",
            "mon--fri",
            ",",
            "mon;tue",
        ] {
            let err = text.parse::<WorkDays>().unwrap_err();
            assert!(
                matches!(err, ThrottleError::InvalidWorkDays { .. }),
                "{text:?}"
            );
            assert!(err.to_string().contains("mon-fri"), "{text:?}: {err}");
        }
    }

    #[test]
    fn every_work_day_set_round_trips() {
        for bits in 0u8..0x80 {
            let set = WorkDays(bits);
            assert_eq!(set.to_string().parse::<WorkDays>().unwrap(), set, "{set}");
        }
    }

    #[test]
    fn work_hours_parse_table() {
        type Row = (&'static str, (u8, u8), (u8, u8), bool, &'static str);
        let table: &[Row] = &[
            ("09:00-18:00", (9, 0), (18, 0), false, "09:00-18:00"),
            ("9:30-17:45", (9, 30), (17, 45), false, "09:30-17:45"),
            (" 22:00 - 06:00 ", (22, 0), (6, 0), true, "22:00-06:00"),
            ("00:00-24:00", (0, 0), (24, 0), false, "00:00-24:00"),
            ("23:59-00:00", (23, 59), (0, 0), true, "23:59-00:00"),
        ];
        for (text, start, end, overnight, canonical) in table {
            let hours: WorkHours = text.parse().unwrap();
            assert_eq!((hours.start(), hours.end()), (*start, *end), "{text:?}");
            assert_eq!(hours.is_overnight(), *overnight, "{text:?}");
            assert_eq!(hours.to_string(), *canonical);
            assert_eq!(canonical.parse::<WorkHours>().unwrap(), hours);
        }
    }

    #[test]
    fn work_hours_reject_with_a_helpful_message() {
        let bad = [
            "",
            "09:00",
            "9-18",
            "09:00-18",
            "25:00-18:00",
            "09:60-18:00",
            "09:00-24:01",
            "09:00-09:00",
            "24:00-06:00",
            "0900-1800",
            "09:0-18:00",
            "a9:00-18:00",
        ];
        for text in bad {
            let err = text.parse::<WorkHours>().unwrap_err();
            assert!(
                matches!(err, ThrottleError::InvalidWorkHours { .. }),
                "{text:?}"
            );
            assert!(err.to_string().contains("09:00-18:00"), "{text:?}: {err}");
        }
    }
}
