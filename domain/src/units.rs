//! Byte sizes as written in VMFiles and compose files (`4GiB`, `512MiB`,
//! `20G`, `1000000`): `K M G T` and `KiB MiB GiB TiB` are powers of 1024 (as
//! qemu-img reads them), `KB MB GB TB` powers of 1000, no unit means bytes.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::validation::ValidationError;

const KIB: u64 = 1024;
const MIB: u64 = KIB * 1024;
const GIB: u64 = MIB * 1024;
const TIB: u64 = GIB * 1024;

/// Units accepted after the number, with their multiplier.
const UNITS: &[(&str, u64)] = &[
    ("KiB", KIB),
    ("MiB", MIB),
    ("GiB", GIB),
    ("TiB", TIB),
    ("K", KIB),
    ("M", MIB),
    ("G", GIB),
    ("T", TIB),
    ("KB", 1000),
    ("MB", 1000 * 1000),
    ("GB", 1000 * 1000 * 1000),
    ("TB", 1000 * 1000 * 1000 * 1000),
];

const UNIT_LIST: &str = "KiB, MiB, GiB, TiB, K, M, G, T (powers of 1024), \
KB, MB, GB, TB (powers of 1000), or none for bytes";

/// A number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn bytes(self) -> u64 {
        self.0
    }

    pub const fn kib(n: u64) -> Self {
        Self(n * KIB)
    }

    pub const fn mib(n: u64) -> Self {
        Self(n * MIB)
    }

    pub const fn gib(n: u64) -> Self {
        Self(n * GIB)
    }
}

impl FromStr for ByteSize {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let digits_end = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(digits_end);
        if number.is_empty() {
            return Err(ValidationError::new(
                "size",
                format!("`{s}` is not a size: expected an integer and a unit ({UNIT_LIST})"),
            ));
        }
        let number: u64 = number
            .parse()
            .map_err(|_| ValidationError::new("size", format!("`{s}` is too large")))?;
        let unit = unit.trim_start();
        let multiplier = if unit.is_empty() {
            1
        } else {
            UNITS
                .iter()
                .find(|(name, _)| *name == unit)
                .map(|(_, m)| *m)
                .ok_or_else(|| {
                    ValidationError::new(
                        "size",
                        format!("`{s}` has an unknown unit `{unit}`; use {UNIT_LIST}"),
                    )
                })?
        };
        number
            .checked_mul(multiplier)
            .map(ByteSize)
            .ok_or_else(|| ValidationError::new("size", format!("`{s}` is too large")))
    }
}

impl fmt::Display for ByteSize {
    /// Exact: the binary or decimal unit that gives the smallest whole
    /// number (binary on a tie), else plain bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        if n == 0 {
            return f.write_str("0");
        }
        let largest = |units: &[(&'static str, u64)]| {
            units
                .iter()
                .find(|(_, m)| n.is_multiple_of(*m))
                .map(|(name, m)| (n / m, *name))
        };
        let binary = largest(&[("TiB", TIB), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB)]);
        let decimal = largest(&[
            ("TB", 1000u64.pow(4)),
            ("GB", 1000u64.pow(3)),
            ("MB", 1000u64.pow(2)),
            ("KB", 1000),
        ]);
        let best = match (binary, decimal) {
            (Some(b), Some(d)) => Some(if d.0 < b.0 { d } else { b }),
            (b, d) => b.or(d),
        };
        match best {
            Some((count, unit)) => write!(f, "{count}{unit}"),
            None => write!(f, "{n}"),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;

        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"4GiB\" or a number of bytes")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("a size cannot be negative ({v})")))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(|e: ValidationError| E::custom(e.reason))
            }
        }

        deserializer.deserialize_any(SizeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> u64 {
        s.parse::<ByteSize>().unwrap().bytes()
    }

    #[test]
    fn binary_and_decimal_units() {
        assert_eq!(parse("4GiB"), 4 * GIB);
        assert_eq!(parse("512MiB"), 512 * MIB);
        assert_eq!(parse("1KiB"), 1024);
        assert_eq!(parse("2TiB"), 2 * TIB);
        assert_eq!(parse("20G"), 20 * GIB);
        assert_eq!(parse("3M"), 3 * MIB);
        assert_eq!(parse("1K"), 1024);
        assert_eq!(parse("1T"), TIB);
        assert_eq!(parse("20GB"), 20_000_000_000);
        assert_eq!(parse("5MB"), 5_000_000);
        assert_eq!(parse("1KB"), 1000);
        assert_eq!(parse("1TB"), 1_000_000_000_000);
        assert_eq!(parse("1048576"), MIB);
        assert_eq!(parse(" 4 GiB "), 4 * GIB);
    }

    #[test]
    fn bad_sizes_list_the_units() {
        for bad in [
            "", "GiB", "4gib", "4 GiBs", "1.5GiB", "-1", "4Gi", "4B", "x",
        ] {
            let err = bad.parse::<ByteSize>().unwrap_err();
            assert_eq!(err.field, "size");
            assert!(
                err.reason.contains("KiB") || bad.is_empty() || bad == "x",
                "{bad}: {err}"
            );
        }
        let err = "4gib".parse::<ByteSize>().unwrap_err();
        assert!(err.reason.contains("unknown unit `gib`"), "{err}");
        assert!(err.reason.contains("KB, MB, GB, TB"), "{err}");
    }

    #[test]
    fn overflow_is_an_error() {
        assert!("99999999999TiB".parse::<ByteSize>().is_err());
        assert!("99999999999999999999999".parse::<ByteSize>().is_err());
    }

    #[test]
    fn display_is_exact() {
        assert_eq!(ByteSize(4 * GIB).to_string(), "4GiB");
        assert_eq!(ByteSize(1536 * MIB).to_string(), "1536MiB");
        assert_eq!(ByteSize(20_000_000_000).to_string(), "20GB");
        assert_eq!(ByteSize(1023).to_string(), "1023");
        assert_eq!(ByteSize(0).to_string(), "0");
        for n in [1, 1023, 1024, 5_000_000, 3 * TIB, 123_456_789] {
            assert_eq!(parse(&ByteSize(n).to_string()), n);
        }
    }

    #[test]
    fn serde_string_or_integer() {
        let v: ByteSize = serde_json::from_str("\"8GiB\"").unwrap();
        assert_eq!(v, ByteSize::gib(8));
        let v: ByteSize = serde_json::from_str("4096").unwrap();
        assert_eq!(v, ByteSize(4096));
        assert!(serde_json::from_str::<ByteSize>("-5").is_err());
        assert_eq!(
            serde_json::to_string(&ByteSize::mib(16)).unwrap(),
            "\"16MiB\""
        );
        let v: ByteSize = serde_yaml::from_str("4GiB").unwrap();
        assert_eq!(v, ByteSize::gib(4));
    }
}
