//! Wireleap duration strings (protocol.md §17).
//!
//! Input is first rewritten the way the original does it (scanning bytes: a digit run followed
//! by `d` becomes `<digits×24>h`; a digit run followed by any other byte keeps that one byte;
//! any byte not right after a digit run is dropped; a trailing digit run is dropped), then
//! parsed as a Go duration. The rewrite has odd effects we reproduce on purpose so that both
//! sides read the same value: `1ms` is one *minute*, `-5m` is five minutes, `0` and `10` fail,
//! `1.5d` is 1h7m12s. Output is Go's duration text (`5m0s`, `24h0m0s`).
//!
//! Unlike the original, [`Duration`]'s `Deserialize` refuses a bad value with an error naming
//! it (use it for our own configs). Wire objects from Go peers that silently ignored bad
//! values (contract `/info`) use [`lenient`].

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A signed span of time in nanoseconds (Go's `time.Duration`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Duration(pub i64);

/// Why a duration text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// Nothing parsable after the rewrite (e.g. `""`, `0`, `10`, `d`) or an out-of-range value.
    #[error("invalid duration {input:?} (read as {rewritten:?}); write e.g. \"90s\", \"5m\", \"1h30m\", \"2d\"")]
    Invalid {
        /// The text as given.
        input: String,
        /// The text after the day/unit rewrite.
        rewritten: String,
    },
    /// A number without unit after the rewrite.
    #[error("invalid duration {input:?}: missing unit (read as {rewritten:?})")]
    MissingUnit {
        /// The text as given.
        input: String,
        /// The text after the rewrite.
        rewritten: String,
    },
    /// A unit other than h, m, s (after the rewrite, which keeps one unit character).
    #[error("invalid duration {input:?}: unknown unit {unit:?} (use d, h, m or s)")]
    UnknownUnit {
        /// The text as given.
        input: String,
        /// The unit found.
        unit: String,
    },
}

const NANOS_PER_SEC: u64 = 1_000_000_000;
const NANOS_PER_HOUR: i64 = 3_600_000_000_000;
const NANOS_PER_DAY: i64 = 24 * NANOS_PER_HOUR;

impl Duration {
    /// Zero.
    pub const ZERO: Duration = Duration(0);

    /// `n` seconds.
    pub const fn from_secs(n: i64) -> Self {
        Self(n.saturating_mul(NANOS_PER_SEC as i64))
    }

    /// `n` minutes.
    pub const fn from_mins(n: i64) -> Self {
        Self::from_secs(n.saturating_mul(60))
    }

    /// `n` hours.
    pub const fn from_hours(n: i64) -> Self {
        Self::from_secs(n.saturating_mul(3600))
    }

    /// Nanoseconds.
    pub const fn as_nanos(self) -> i64 {
        self.0
    }

    /// Whole seconds (truncated toward zero).
    pub const fn as_secs(self) -> i64 {
        self.0 / NANOS_PER_SEC as i64
    }

    /// Whether this is zero (omitted by `omitempty`, "disabled" in configs).
    pub const fn is_zero(&self) -> bool {
        self.0 == 0
    }

    /// The length as a std duration; negative values become zero.
    pub fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_nanos(u64::try_from(self.0).unwrap_or(0))
    }

    /// Parses with the original's rewrite rules.
    pub fn parse(input: &str) -> Result<Self, DurationError> {
        let rewritten = rewrite(input.as_bytes()).ok_or_else(|| DurationError::Invalid {
            input: input.to_string(),
            rewritten: String::new(),
        })?;
        parse_go(&rewritten).map(Duration).map_err(|e| {
            let rewritten = String::from_utf8_lossy(&rewritten).into_owned();
            match e {
                GoError::Invalid => DurationError::Invalid {
                    input: input.to_string(),
                    rewritten,
                },
                GoError::MissingUnit => DurationError::MissingUnit {
                    input: input.to_string(),
                    rewritten,
                },
                GoError::UnknownUnit(u) => DurationError::UnknownUnit {
                    input: input.to_string(),
                    unit: String::from_utf8_lossy(&u).into_owned(),
                },
            }
        })
    }

    /// The original's human form: whole days as `Nd`, then the Go text of the rest
    /// (`1d12h0m0s`, `2d`); spans under a day in plain Go text. Used for display only.
    pub fn to_days_string(self) -> String {
        let days = self.0 / NANOS_PER_DAY;
        if days == 0 {
            return self.to_string();
        }
        let rest = Duration(self.0 % NANOS_PER_DAY);
        if rest.is_zero() {
            format!("{days}d")
        } else {
            format!("{days}d{}", Duration(rest.0.abs()))
        }
    }
}

/// Applies the original's rewrite. `None` if a day count does not fit in 64 bits.
fn rewrite(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len() + 4);
    let mut i = 0;
    while i < input.len() {
        if !input[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < input.len() && input[i].is_ascii_digit() {
            i += 1;
        }
        let Some(&unit) = input.get(i) else {
            break;
        };
        let digits = &input[start..i];
        if unit == b'd' {
            let days: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
            out.extend_from_slice(days.checked_mul(24)?.to_string().as_bytes());
            out.push(b'h');
        } else {
            out.extend_from_slice(digits);
            out.push(unit);
        }
        i += 1;
    }
    Some(out)
}

enum GoError {
    Invalid,
    MissingUnit,
    UnknownUnit(Vec<u8>),
}

const LIMIT: u64 = 1 << 63;

fn unit_nanos(unit: &[u8]) -> Option<u64> {
    Some(match unit {
        b"ns" => 1,
        b"us" | b"\xc2\xb5s" | b"\xce\xbcs" => 1_000,
        b"ms" => 1_000_000,
        b"s" => NANOS_PER_SEC,
        b"m" => 60 * NANOS_PER_SEC,
        b"h" => 3600 * NANOS_PER_SEC,
        _ => return None,
    })
}

/// Go's `time.ParseDuration`, on bytes.
fn parse_go(s: &[u8]) -> Result<i64, GoError> {
    let mut s = s;
    let mut neg = false;
    if let Some((&c, rest)) = s.split_first() {
        if c == b'-' || c == b'+' {
            neg = c == b'-';
            s = rest;
        }
    }
    if s == b"0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(GoError::Invalid);
    }
    let mut total: u64 = 0;
    while !s.is_empty() {
        if !(s[0] == b'.' || s[0].is_ascii_digit()) {
            return Err(GoError::Invalid);
        }
        // Integer part.
        let mut v: u64 = 0;
        let mut n = 0;
        while n < s.len() && s[n].is_ascii_digit() {
            if v > LIMIT / 10 {
                return Err(GoError::Invalid);
            }
            v = v * 10 + u64::from(s[n] - b'0');
            if v > LIMIT {
                return Err(GoError::Invalid);
            }
            n += 1;
        }
        let pre = n > 0;
        s = &s[n..];
        // Fraction part: digits past 63 bits of precision are read and ignored.
        let mut f: u64 = 0;
        let mut scale: f64 = 1.0;
        let mut post = false;
        if s.first() == Some(&b'.') {
            s = &s[1..];
            let mut n = 0;
            let mut overflow = false;
            while n < s.len() && s[n].is_ascii_digit() {
                if !overflow {
                    if f > (LIMIT - 1) / 10 {
                        overflow = true;
                    } else {
                        let y = f * 10 + u64::from(s[n] - b'0');
                        if y > LIMIT {
                            overflow = true;
                        } else {
                            f = y;
                            scale *= 10.0;
                        }
                    }
                }
                n += 1;
            }
            post = n > 0;
            s = &s[n..];
        }
        if !pre && !post {
            return Err(GoError::Invalid);
        }
        let ulen = s
            .iter()
            .position(|&c| c == b'.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        if ulen == 0 {
            return Err(GoError::MissingUnit);
        }
        let (unit, rest) = s.split_at(ulen);
        s = rest;
        let unit = unit_nanos(unit).ok_or_else(|| GoError::UnknownUnit(unit.to_vec()))?;
        if v > LIMIT / unit {
            return Err(GoError::Invalid);
        }
        v *= unit;
        if f > 0 {
            // Go computes the fraction in float64; doing the same keeps results bit-identical.
            v += (f as f64 * (unit as f64 / scale)) as u64;
            if v > LIMIT {
                return Err(GoError::Invalid);
            }
        }
        total += v;
        if total > LIMIT {
            return Err(GoError::Invalid);
        }
    }
    if neg {
        return Ok((total as i64).wrapping_neg());
    }
    if total > LIMIT - 1 {
        return Err(GoError::Invalid);
    }
    Ok(total as i64)
}

fn frac(out: &mut String, v: u64, prec: u32) -> u64 {
    let div = 10u64.pow(prec);
    let f = v % div;
    if f != 0 {
        let digits = format!("{:0width$}", f, width = prec as usize);
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    v / div
}

impl fmt::Display for Duration {
    /// Go's `Duration.String()`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let u = self.0.unsigned_abs();
        let sign = if self.0 < 0 { "-" } else { "" };
        if u == 0 {
            return f.write_str("0s");
        }
        if u < NANOS_PER_SEC {
            let (prec, unit) = match u {
                0..=999 => (0, "ns"),
                1_000..=999_999 => (3, "\u{b5}s"),
                _ => (6, "ms"),
            };
            let mut fr = String::new();
            let whole = frac(&mut fr, u, prec);
            return write!(f, "{sign}{whole}{fr}{unit}");
        }
        let mut fr = String::new();
        let secs = frac(&mut fr, u, 9);
        let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
        if h > 0 {
            write!(f, "{sign}{h}h{m}m{s}{fr}s")
        } else if m > 0 {
            write!(f, "{sign}{m}m{s}{fr}s")
        } else {
            write!(f, "{sign}{s}{fr}s")
        }
    }
}

impl FromStr for Duration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    /// Strict: a string that does not parse is an error naming it.
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let s = String::deserialize(de)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The original's JSON reading for wire objects from Go peers: a string that does not parse
/// yields zero (the original keeps the field's previous value, which is zero in a freshly
/// decoded object); `null` is zero; a non-string is an error. Use with
/// `#[serde(default, deserialize_with = "duration::lenient")]`.
pub fn lenient<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    Ok(Option::<String>::deserialize(de)?
        .and_then(|s| Duration::parse(&s).ok())
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_formatting() {
        for (ns, text) in [
            (0, "0s"),
            (1, "1ns"),
            (1_500, "1.5\u{b5}s"),
            (1_500_000, "1.5ms"),
            (1_500_000_000, "1.5s"),
            (90_000_000_000, "1m30s"),
            (-90_000_000_000, "-1m30s"),
            (3_600_000_000_001, "1h0m0.000000001s"),
            (i64::MIN, "-2562047h47m16.854775808s"),
            (i64::MAX, "2562047h47m16.854775807s"),
        ] {
            assert_eq!(Duration(ns).to_string(), text);
        }
    }

    #[test]
    fn go_parser_edges() {
        assert!(parse_go(b"-0").is_ok());
        assert_eq!(parse_go(b".5s").ok(), Some(500_000_000));
        assert_eq!(parse_go(b"1.5\xc2\xb5s").ok(), Some(1_500));
        assert!(parse_go(b"-9223372036854775808ns").is_ok());
        assert!(parse_go(b"9223372036854775808ns").is_err());
        assert!(matches!(parse_go(b"1."), Err(GoError::MissingUnit)));
        assert!(matches!(parse_go(b"."), Err(GoError::Invalid)));
        assert!(Duration::parse("99999999999999999999d").is_err());
    }
}
