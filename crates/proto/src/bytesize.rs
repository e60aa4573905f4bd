//! Byte sizes written like `10GB` (protocol.md §8.1 `network_usage_limit`, services.md §1.3).
//!
//! Units are binary (`1KB` = 1024 bytes) as in the datasize library the original uses. Output
//! is the largest unit that divides the value exactly, always with a `B` suffix (`10GB`,
//! `1536B`, `0B`). Input is an unsigned integer, optional spaces, and a unit matched without
//! regard to case (`k`, `KB`, `kilobyte`, ...); `Kb`-style spellings are refused because they
//! read as bits. Metering and enforcement of limits live in the relay crate.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ByteSize(pub u64);

/// Why a byte size text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ByteSizeError {
    /// The text does not start with a decimal number.
    #[error("byte size {0:?} must start with a decimal number")]
    NoNumber(String),
    /// The unit is not one of B, KB, MB, GB, TB, PB, EB (or their long forms).
    #[error("byte size {text:?} has unknown unit {unit:?}")]
    UnknownUnit {
        /// The whole text.
        text: String,
        /// The unit part.
        unit: String,
    },
    /// A unit like `Gb` that reads as bits.
    #[error("byte size {0:?} uses a bit unit; write bytes, e.g. GB")]
    Bits(String),
    /// The value does not fit in 64 bits.
    #[error("byte size {0:?} is too large")]
    Overflow(String),
}

const UNITS: [(&str, u64); 7] = [
    ("EB", 1 << 60),
    ("PB", 1 << 50),
    ("TB", 1 << 40),
    ("GB", 1 << 30),
    ("MB", 1 << 20),
    ("KB", 1 << 10),
    ("B", 1),
];

impl ByteSize {
    /// `n` kibibytes (the original calls them KB).
    pub const fn kb(n: u64) -> Self {
        Self(n << 10)
    }
    /// `n` mebibytes.
    pub const fn mb(n: u64) -> Self {
        Self(n << 20)
    }
    /// `n` gibibytes.
    pub const fn gb(n: u64) -> Self {
        Self(n << 30)
    }
    /// `n` tebibytes.
    pub const fn tb(n: u64) -> Self {
        Self(n << 40)
    }

    /// The number of bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

fn unit_factor(unit: &str) -> Option<u64> {
    let f = match unit.to_ascii_lowercase().as_str() {
        "" | "b" | "byte" | "bytes" => 1,
        "k" | "kb" | "kilo" | "kilobyte" | "kilobytes" => 1 << 10,
        "m" | "mb" | "mega" | "megabyte" | "megabytes" => 1 << 20,
        "g" | "gb" | "giga" | "gigabyte" | "gigabytes" => 1 << 30,
        "t" | "tb" | "tera" | "terabyte" | "terabytes" => 1 << 40,
        "p" | "pb" | "peta" | "petabyte" | "petabytes" => 1 << 50,
        "e" | "eb" | "exa" | "exabyte" | "exabytes" => 1 << 60,
        _ => return None,
    };
    Some(f)
}

impl FromStr for ByteSize {
    type Err = ByteSizeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(ByteSizeError::NoNumber(text.to_string()));
        }
        let (num, unit) = text.split_at(digits);
        let num: u64 = num
            .parse()
            .map_err(|_| ByteSizeError::Overflow(text.to_string()))?;
        let unit = unit.trim();
        if matches!(unit, "Kb" | "Mb" | "Gb" | "Tb" | "Pb" | "Eb") {
            return Err(ByteSizeError::Bits(text.to_string()));
        }
        let factor = unit_factor(unit).ok_or_else(|| ByteSizeError::UnknownUnit {
            text: text.to_string(),
            unit: unit.to_string(),
        })?;
        num.checked_mul(factor)
            .map(ByteSize)
            .ok_or_else(|| ByteSizeError::Overflow(text.to_string()))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0B");
        }
        for (name, size) in UNITS {
            if self.0 % size == 0 {
                return write!(f, "{}{name}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let s = String::deserialize(de)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_largest_exact_unit() {
        assert_eq!(ByteSize::gb(10).to_string(), "10GB");
        assert_eq!(ByteSize(1536).to_string(), "1536B");
        assert_eq!(ByteSize(0).to_string(), "0B");
        assert_eq!(ByteSize::kb(2048).to_string(), "2MB");
        assert_eq!(ByteSize(u64::MAX).to_string(), format!("{}B", u64::MAX));
    }

    #[test]
    fn parses_units() {
        assert_eq!("10GB".parse(), Ok(ByteSize(10 << 30)));
        assert_eq!("10 gb".parse(), Ok(ByteSize(10 << 30)));
        assert_eq!("2TB".parse(), Ok(ByteSize::tb(2)));
        assert_eq!("500".parse(), Ok(ByteSize(500)));
        assert_eq!("1k".parse(), Ok(ByteSize(1024)));
        assert!(matches!(
            "10Gb".parse::<ByteSize>(),
            Err(ByteSizeError::Bits(_))
        ));
        assert!(matches!(
            "GB".parse::<ByteSize>(),
            Err(ByteSizeError::NoNumber(_))
        ));
        assert!(matches!(
            "1.5GB".parse::<ByteSize>(),
            Err(ByteSizeError::UnknownUnit { .. })
        ));
        assert!(matches!(
            "16EB".parse::<ByteSize>(),
            Err(ByteSizeError::Overflow(_))
        ));
        assert!(matches!(
            "-1GB".parse::<ByteSize>(),
            Err(ByteSizeError::NoNumber(_))
        ));
    }
}
