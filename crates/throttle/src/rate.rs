//! [`Rate`]: a byte rate per second, or no limit, with its human-readable text form.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ThrottleError;

/// A transfer rate in bytes per second, or no limit at all.
///
/// The text form is `unlimited`, a plain number of bytes per second (`1000`), or a number with a
/// unit (`512KiB`, `4MiB`, `1GiB`, `100KB`, `2MB`); units are case-insensitive, may be followed
/// by `/s`, and may carry a decimal fraction (`1.5MiB`). Serialised as that text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Rate {
    /// No limit: requests pass without waiting and without touching the limiter.
    Unlimited,
    /// At most this many bytes per second. `BytesPerSec(0)` is treated as 1 byte per second
    /// (parsing rejects 0, since a zero rate would stall the backup forever).
    BytesPerSec(u64),
}

const UNITS: [(&str, u64); 9] = [
    ("tib", 1 << 40),
    ("gib", 1 << 30),
    ("mib", 1 << 20),
    ("kib", 1 << 10),
    ("tb", 1_000_000_000_000),
    ("gb", 1_000_000_000),
    ("mb", 1_000_000),
    ("kb", 1_000),
    ("b", 1),
];

/// Units tried by `Display`, largest first, binary before decimal so `4MiB` stays `4MiB`.
const DISPLAY_UNITS: [(&str, u64); 8] = [
    ("TiB", 1 << 40),
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("TB", 1_000_000_000_000),
    ("GB", 1_000_000_000),
    ("MB", 1_000_000),
    ("KB", 1_000),
];

impl Rate {
    /// The limit in bytes per second, or `None` when unlimited.
    pub fn bytes_per_sec(self) -> Option<u64> {
        match self {
            Rate::Unlimited => None,
            Rate::BytesPerSec(n) => Some(n.max(1)),
        }
    }

    /// Whether this rate imposes no limit.
    pub fn is_unlimited(self) -> bool {
        self == Rate::Unlimited
    }
}

impl FromStr for Rate {
    type Err = ThrottleError;

    fn from_str(input: &str) -> Result<Rate, ThrottleError> {
        let err = |reason: &str| ThrottleError::InvalidRate {
            input: input.to_owned(),
            reason: reason.to_owned(),
        };
        let lower = input.trim().to_ascii_lowercase();
        if lower == "unlimited" {
            return Ok(Rate::Unlimited);
        }
        let text = lower.strip_suffix("/s").unwrap_or(&lower).trim_end();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = (&text[..split], text[split..].trim_start());
        if number.is_empty() {
            return Err(err("it does not start with a number"));
        }
        let multiplier = if unit.is_empty() {
            1
        } else {
            UNITS
                .iter()
                .find(|(name, _)| *name == unit)
                .map(|&(_, m)| m)
                .ok_or_else(|| err(&format!("unknown unit {unit:?}")))?
        };
        let bytes =
            scale(number, multiplier).ok_or_else(|| err("the number is malformed or too large"))?;
        if bytes == 0 {
            return Err(err(
                "a rate must be positive (use `unlimited` for no limit)",
            ));
        }
        Ok(Rate::BytesPerSec(bytes))
    }
}

/// `number × multiplier` rounded to whole bytes, computed exactly in integers.
fn scale(number: &str, multiplier: u64) -> Option<u64> {
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && frac.is_empty() || frac.contains('.') || frac.len() > 9 {
        return None;
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let frac_value: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    let frac_scale = 10u128.pow(u32::try_from(frac.len()).ok()?);
    let m = u128::from(multiplier);
    let total = whole.checked_mul(m)? + (frac_value * m + frac_scale / 2) / frac_scale;
    u64::try_from(total).ok()
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = match *self {
            Rate::Unlimited => return f.write_str("unlimited"),
            Rate::BytesPerSec(n) => n.max(1),
        };
        match DISPLAY_UNITS.iter().find(|&&(_, m)| bytes % m == 0) {
            Some(&(name, m)) => write!(f, "{}{name}", bytes / m),
            None => write!(f, "{bytes}"),
        }
    }
}

impl TryFrom<String> for Rate {
    type Error = ThrottleError;
    fn try_from(s: String) -> Result<Rate, ThrottleError> {
        s.parse()
    }
}

impl From<Rate> for String {
    fn from(rate: Rate) -> String {
        rate.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_accepted_forms() {
        let table: &[(&str, Rate)] = &[
            ("unlimited", Rate::Unlimited),
            ("UNLIMITED", Rate::Unlimited),
            (" unlimited ", Rate::Unlimited),
            ("1000", Rate::BytesPerSec(1000)),
            ("512KiB", Rate::BytesPerSec(512 * 1024)),
            ("512kib", Rate::BytesPerSec(512 * 1024)),
            ("4MiB", Rate::BytesPerSec(4 << 20)),
            ("4 MiB/s", Rate::BytesPerSec(4 << 20)),
            ("1GiB", Rate::BytesPerSec(1 << 30)),
            ("2TiB", Rate::BytesPerSec(2 << 40)),
            ("100KB", Rate::BytesPerSec(100_000)),
            ("100kb", Rate::BytesPerSec(100_000)),
            ("2MB", Rate::BytesPerSec(2_000_000)),
            ("3GB", Rate::BytesPerSec(3_000_000_000)),
            ("1.5MiB", Rate::BytesPerSec(1_572_864)),
            ("0.5KB", Rate::BytesPerSec(500)),
            ("64B", Rate::BytesPerSec(64)),
            ("1000/s", Rate::BytesPerSec(1000)),
        ];
        for (text, want) in table {
            assert_eq!(text.parse::<Rate>().unwrap(), *want, "parsing {text:?}");
        }
    }

    #[test]
    fn rejects_bad_forms_with_a_helpful_message() {
        for text in [
            "",
            "fast",
            "MiB",
            "0",
            "0KiB",
            "12XB",
            "1.2.3MiB",
            "-5KiB",
            "99999999TiB",
        ] {
            let err = text.parse::<Rate>().unwrap_err();
            assert!(matches!(err, ThrottleError::InvalidRate { .. }), "{text:?}");
            let msg = err.to_string();
            assert!(
                msg.contains("unlimited") && msg.contains("KiB"),
                "{text:?}: {msg}"
            );
        }
    }

    #[test]
    fn display_is_canonical_and_round_trips() {
        let table: &[(Rate, &str)] = &[
            (Rate::Unlimited, "unlimited"),
            (Rate::BytesPerSec(512 * 1024), "512KiB"),
            (Rate::BytesPerSec(4 << 20), "4MiB"),
            (Rate::BytesPerSec(1 << 30), "1GiB"),
            (Rate::BytesPerSec(100_000), "100KB"),
            (Rate::BytesPerSec(2_000_000), "2MB"),
            (Rate::BytesPerSec(1000), "1KB"),
            (Rate::BytesPerSec(1023), "1023"),
            (Rate::BytesPerSec(1_572_864), "1536KiB"),
        ];
        for (rate, want) in table {
            assert_eq!(rate.to_string(), *want);
            assert_eq!(want.parse::<Rate>().unwrap(), *rate);
        }
    }

    #[test]
    fn serde_uses_the_text_form() {
        let json = serde_json::to_string(&Rate::BytesPerSec(2 << 20)).unwrap();
        assert_eq!(json, "\"2MiB\"");
        assert_eq!(
            serde_json::from_str::<Rate>("\"unlimited\"").unwrap(),
            Rate::Unlimited
        );
        assert!(serde_json::from_str::<Rate>("\"lots\"").is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_rate_round_trips(n in 1u64..u64::MAX) {
            let rate = Rate::BytesPerSec(n);
            proptest::prop_assert_eq!(rate.to_string().parse::<Rate>().unwrap(), rate);
        }
    }
}
