//! `sha256:<hex>` content digests, the names of blobs and manifests.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::validation::ValidationError;

/// A sha256 content digest. Only sha256 is supported; the hex is always 64
/// lowercase characters, so it is safe to use as a file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self::from_hasher(Sha256::new_with_prefix(bytes))
    }

    /// The digest from a finished sha256 output.
    pub fn from_sha256(output: [u8; 32]) -> Self {
        Self {
            hex: hex::encode(output),
        }
    }

    /// The digest of everything fed to `hasher`.
    pub fn from_hasher(hasher: Sha256) -> Self {
        Self::from_sha256(hasher.finalize().into())
    }

    /// The 64 lowercase hex characters, without the `sha256:` prefix.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// `sha256:<hex>`, as `to_string` gives it, built without the
    /// formatting machinery (listings make one per image).
    pub fn prefixed(&self) -> String {
        let mut out = String::with_capacity(7 + self.hex.len());
        out.push_str("sha256:");
        out.push_str(&self.hex);
        out
    }

    /// The algorithm name, always `sha256`.
    pub fn algorithm(&self) -> &'static str {
        "sha256"
    }

    /// Parses the bare 64-character hex form.
    pub fn from_hex(hex: &str) -> Result<Self, ValidationError> {
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ValidationError::new(
                "digest",
                format!(
                    "`{}` is not 64 lowercase hexadecimal characters",
                    hex.escape_debug()
                ),
            ));
        }
        Ok(Self {
            hex: hex.to_owned(),
        })
    }
}

impl FromStr for Digest {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some(("sha256", hex)) => Self::from_hex(hex),
            Some((algorithm, _)) => Err(ValidationError::new(
                "digest",
                format!(
                    "algorithm `{}` is not supported, only sha256",
                    algorithm.escape_debug()
                ),
            )),
            None => Err(ValidationError::new(
                "digest",
                format!("`{}` is not of the form sha256:<64 hex>", s.escape_debug()),
            )),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse()
            .map_err(|e: ValidationError| serde::de::Error::custom(e.reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digest_of_known_input() {
        assert_eq!(Digest::of(b"").hex(), EMPTY);
        assert_eq!(Digest::of(b"").to_string(), format!("sha256:{EMPTY}"));
        assert_eq!(Digest::of(b"").prefixed(), Digest::of(b"").to_string());
        let mut hasher = Sha256::new();
        hasher.update(b"ab");
        hasher.update(b"c");
        assert_eq!(Digest::from_hasher(hasher), Digest::of(b"abc"));
    }

    #[test]
    fn parse_round_trip() {
        let d: Digest = format!("sha256:{EMPTY}").parse().unwrap();
        assert_eq!(d.hex(), EMPTY);
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
    }

    #[test]
    fn parse_rejects_bad_digests() {
        for bad in [
            EMPTY.to_owned(),
            format!("sha512:{EMPTY}"),
            format!("sha256:{}", EMPTY.to_uppercase()),
            format!("sha256:{}", &EMPTY[1..]),
            format!("sha256:{EMPTY}0"),
            "sha256:../../etc/passwd".to_owned(),
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad}");
        }
    }

    #[test]
    fn serde_as_string() {
        let d = Digest::of(b"x");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{d}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"sha256:zz\"").is_err());
    }
}
