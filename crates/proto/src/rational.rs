//! Exact rational amounts written as JSON strings (protocol.md §12, §19).
//!
//! Output: plain digits for an integer (`"1000"`), otherwise `"num/den"` in lowest terms
//! (`"5/2"`). Input: `"5"`, `"-5/2"`, `"2.5"`, `"1e3"`, `"1.5E-2"`. A JSON number is refused
//! (the original refuses it too). Go's base prefixes (`0x..`, octal `0..` in fractions) are not
//! accepted: a fraction part with a leading zero is refused rather than read differently.

use num_bigint::BigInt;
use num_rational::BigRational;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// An exact rational number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rational(pub BigRational);

/// Why a rational text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RationalError {
    /// Not a fraction, integer or decimal number.
    #[error(
        "cannot read {0:?} as a rational number (expected e.g. \"5\", \"5/2\", \"2.5\", \"1e3\")"
    )]
    Syntax(String),
    /// `a/0`.
    #[error("rational {0:?} has a zero denominator")]
    ZeroDenominator(String),
    /// An exponent so large it would take unbounded memory.
    #[error("rational {0:?} has an exponent beyond ±{MAX_EXPONENT}")]
    ExponentTooLarge(String),
}

/// Largest decimal exponent accepted; bounds the size of the resulting integers.
pub const MAX_EXPONENT: i64 = 1000;

impl Rational {
    /// The integer `n`.
    pub fn from_integer(n: i64) -> Self {
        Self(BigRational::from_integer(n.into()))
    }

    /// `num/den`; `None` if `den` is zero.
    pub fn new(num: i64, den: i64) -> Option<Self> {
        (den != 0).then(|| Self(BigRational::new(num.into(), den.into())))
    }

    /// Whether the value is an integer.
    pub fn is_integer(&self) -> bool {
        self.0.is_integer()
    }

    /// The largest integer ≤ the value, if it fits in an `i64`.
    pub fn floor_i64(&self) -> Option<i64> {
        i64::try_from(self.0.floor().to_integer()).ok()
    }
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn parse_decimal(text: &str) -> Result<BigRational, RationalError> {
    let syntax = || RationalError::Syntax(text.to_string());
    let (neg, body) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let (int_part, frac_part) = match mantissa.split_once('.') {
        Some((a, b)) => (a, b),
        None => (mantissa, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(syntax());
    }
    if !(int_part.is_empty() || digits(int_part)) || !(frac_part.is_empty() || digits(frac_part)) {
        return Err(syntax());
    }
    let mut exp10: i64 = match exp {
        None => 0,
        Some(e) => {
            let unsigned = e.strip_prefix(['+', '-']).unwrap_or(e);
            if !digits(unsigned) {
                return Err(syntax());
            }
            e.parse::<i64>()
                .ok()
                .filter(|v| v.abs() <= MAX_EXPONENT)
                .ok_or_else(|| RationalError::ExponentTooLarge(text.to_string()))?
        }
    };
    let all_digits = format!("{int_part}{frac_part}");
    let mut n: BigInt = all_digits.parse().map_err(|_| syntax())?;
    exp10 -= i64::try_from(frac_part.len()).map_err(|_| syntax())?;
    if exp10.abs() > MAX_EXPONENT + 64 {
        return Err(RationalError::ExponentTooLarge(text.to_string()));
    }
    if neg {
        n = -n;
    }
    let pow = BigInt::from(10u8).pow(exp10.unsigned_abs() as u32);
    Ok(if exp10 >= 0 {
        BigRational::from_integer(n * pow)
    } else {
        BigRational::new(n, pow)
    })
}

impl FromStr for Rational {
    type Err = RationalError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let syntax = || RationalError::Syntax(text.to_string());
        // Amounts are short; a bound keeps big-integer parsing cheap on hostile input.
        if text.len() > 4096 {
            return Err(syntax());
        }
        if let Some((a, b)) = text.split_once('/') {
            let unsigned_a = a.strip_prefix(['+', '-']).unwrap_or(a);
            let plain = |s: &str| digits(s) && (s.len() == 1 || !s.starts_with('0'));
            if !plain(unsigned_a) || !plain(b) {
                return Err(syntax());
            }
            let num: BigInt = a.parse().map_err(|_| syntax())?;
            let den: BigInt = b.parse().map_err(|_| syntax())?;
            if den == BigInt::from(0u8) {
                return Err(RationalError::ZeroDenominator(text.to_string()));
            }
            return Ok(Self(BigRational::new(num, den)));
        }
        parse_decimal(text).map(Self)
    }
}

impl fmt::Display for Rational {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_integer() {
            write!(f, "{}", self.0.numer())
        } else {
            write!(f, "{}/{}", self.0.numer(), self.0.denom())
        }
    }
}

impl Serialize for Rational {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rational {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let s = String::deserialize(de)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> String {
        s.parse::<Rational>()
            .map(|r| r.to_string())
            .unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn forms() {
        assert_eq!(r("1000"), "1000");
        assert_eq!(r("1000/1"), "1000");
        assert_eq!(r("10/4"), "5/2");
        assert_eq!(r("2.5"), "5/2");
        assert_eq!(r("1e3"), "1000");
        assert_eq!(r("1.5E-2"), "3/200");
        assert_eq!(r("-0.5"), "-1/2");
        assert_eq!(r(".5"), "1/2");
        assert_eq!(r("5."), "5");
        assert_eq!(r("-3/6"), "-1/2");
        for bad in [
            "ten", "", "1/0", "1/-2", "1/ 2", "1e", "e3", ".", "--1", "1e99999", "010/1", "0x10",
        ] {
            assert!(bad.parse::<Rational>().is_err(), "{bad}");
        }
        assert_eq!(
            "1999/2"
                .parse::<Rational>()
                .ok()
                .and_then(|r| r.floor_i64()),
            Some(999)
        );
        assert_eq!(
            "-1/2".parse::<Rational>().ok().and_then(|r| r.floor_i64()),
            Some(-1)
        );
    }
}
