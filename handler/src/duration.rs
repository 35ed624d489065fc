//! Durations as people write them (`30s`, `250ms`, `1m30s`, `1.5s`), for the configuration
//! file, cfgstring options and fault rules.
//!
//! Parsing is the `humantime` crate's: a number (decimals allowed) and a unit, `ns`, `us`,
//! `ms`, `s`, `m`, `h` (and humantime's longer spellings, `sec`, `min`, `hours`, `days`,
//! ...), possibly chained, with or without blanks between the parts. This module adds what
//! the daemon needs on top: a bare number is refused with a message asking for the unit (so
//! a value is never read in the wrong unit), and [`format_duration`] writes a duration back
//! in the one largest exact unit, the way the parser reads it. The syntax is documented in
//! `docs/config.md`.

use std::time::Duration;

/// Why a duration string is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad duration {text:?}: {reason}")]
pub struct DurationError {
    /// The text.
    pub text: String,
    /// What is wrong.
    pub reason: &'static str,
}

/// Parse a duration: a number (decimals allowed) followed by a unit, possibly chained
/// (`1m30s`, `1.5s`, `250ms`, `0s`). Blanks around it are ignored. A bare number is
/// refused: the unit is required.
///
/// # Errors
/// [`DurationError`] naming the text and the reason.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    use humantime::DurationError as E;
    humantime::parse_duration(text).map_err(|e| DurationError {
        text: text.to_string(),
        reason: match e {
            E::Empty => "empty; expected a number and a unit, e.g. 30s",
            E::UnknownUnit { unit, .. } if unit.is_empty() => {
                "missing unit; write e.g. 30s, 250ms or 2m"
            }
            E::UnknownUnit { .. } => "unknown unit; expected ns, us, ms, s, m or h",
            E::NumberExpected(_) => {
                "expected a number before the unit (negative durations are not allowed)"
            }
            E::InvalidCharacter(_) => "malformed number or unexpected character",
            E::NumberOverflow => "too large, or finer than a nanosecond",
        },
    })
}

/// Format a duration the way [`parse_duration`] reads it, in the largest unit that is exact:
/// `2m`, `90s`, `250ms`, `0s`. A duration of more than 2^64 ns (some 584 years) that is not
/// a whole number of seconds is written as whole seconds and the rest (`2282562828256s251us`):
/// the parser counts a number in a unit below the second in 64-bit nanoseconds.
#[must_use]
pub fn format_duration(d: Duration) -> String {
    let n = d.as_nanos();
    if n == 0 {
        return "0s".into();
    }
    for (unit, scale) in [
        ("h", 3_600_000_000_000u128),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
    ] {
        if n % scale == 0 {
            return format!("{}{unit}", n / scale);
        }
    }
    if n > u128::from(u64::MAX) {
        return format!(
            "{}s{}",
            d.as_secs(),
            below_a_second(u128::from(d.subsec_nanos()))
        );
    }
    below_a_second(n)
}

/// `n` nanoseconds (not a whole number of seconds) in the largest exact unit below the second.
fn below_a_second(n: u128) -> String {
    for (unit, scale) in [("ms", 1_000_000u128), ("us", 1_000)] {
        if n % scale == 0 {
            return format!("{}{unit}", n / scale);
        }
    }
    format!("{n}ns")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_refuse_the_rest() {
        let ok = [
            ("30s", Duration::from_secs(30)),
            ("250ms", Duration::from_millis(250)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("1m30s", Duration::from_secs(90)),
            ("1m 30s", Duration::from_secs(90)),
            ("1.5s", Duration::from_millis(1500)),
            ("0s", Duration::ZERO),
            ("10us", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            (" 3s ", Duration::from_secs(3)),
            ("5sec", Duration::from_secs(5)),
            ("2min", Duration::from_secs(120)),
        ];
        for (t, d) in ok {
            assert_eq!(parse_duration(t), Ok(d), "{t}");
        }
        for (t, why) in [
            ("", "empty"),
            ("   ", "empty"),
            ("30", "missing unit"),
            ("s", "expected a number"),
            ("-1s", "expected a number"),
            ("5x", "unknown unit"),
            ("1.2.3s", "malformed"),
            (".5s", "expected a number"),
            ("99999999999999999999999999999999999999999h", "too large"),
            ("0.0000000001s", "finer than a nanosecond"),
        ] {
            let e = parse_duration(t).expect_err(t);
            assert!(e.to_string().contains(why), "{t:?}: {e}");
        }
        for d in [
            Duration::ZERO,
            Duration::from_secs(90),
            Duration::from_secs(7200),
            Duration::from_millis(1500),
            Duration::from_nanos(1_000_001),
            // Found by the config fuzz target: `251us2282562828256s` was written back as
            // microseconds the parser cannot count.
            Duration::new(2_282_562_828_256, 251_000),
            Duration::new(u64::MAX, 1),
            Duration::new(u64::MAX / 1_000_000_000, 999_999_999),
            Duration::new(18_446_744_073, 709_551_616),
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(
            format_duration(Duration::new(2_282_562_828_256, 251_000)),
            "2282562828256s251us"
        );
        assert_eq!(
            parse_duration("251us2282562828256s"),
            Ok(Duration::new(2_282_562_828_256, 251_000))
        );
    }
}
