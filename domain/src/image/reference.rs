//! Repository names, tags and image references
//! (`[registry-host[:port]/]path[:tag][@sha256:<hex>]`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Digest;
use crate::validation::ValidationError;

const MAX_REPOSITORY_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A repository path such as `nixos-server/nixos-k3s-vm`: `/`-separated
/// segments of lowercase letters, digits, `.`, `_`, `-`, each starting and
/// ending with a letter or digit; at most 255 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Repository(String);

impl Repository {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a `String`, without copying it.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl FromStr for Repository {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: String| Err(ValidationError::new("repository", reason));
        if s.is_empty() {
            return bad("must not be empty".to_owned());
        }
        if s.len() > MAX_REPOSITORY_LEN {
            return bad(format!(
                "is {} characters long, at most {MAX_REPOSITORY_LEN} are allowed",
                s.len()
            ));
        }
        for segment in s.split('/') {
            if segment.is_empty() {
                return bad(format!("`{}` has an empty path segment", s.escape_debug()));
            }
            if let Some(c) = segment.chars().find(|c| {
                !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
            }) {
                return bad(format!(
                    "`{}` contains {c:?}; only lowercase letters, digits, `.`, `_`, `-` and `/` are allowed",
                    s.escape_debug()
                ));
            }
            let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
            if !alnum(segment.chars().next()) || !alnum(segment.chars().last()) {
                return bad(format!(
                    "segment `{segment}` of `{s}` must start and end with a letter or digit"
                ));
            }
        }
        Ok(Self(s.to_owned()))
    }
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn latest() -> Self {
        Self("latest".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The tag as a `String`, without copying it.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl FromStr for Tag {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: String| Err(ValidationError::new("tag", reason));
        let Some(first) = s.chars().next() else {
            return bad("must not be empty".to_owned());
        };
        if s.len() > MAX_TAG_LEN {
            return bad(format!(
                "is {} characters long, at most {MAX_TAG_LEN} are allowed",
                s.len()
            ));
        }
        if !(first.is_ascii_alphanumeric() || first == '_') {
            return bad(format!(
                "`{}` must start with a letter, digit or `_`",
                s.escape_debug()
            ));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return bad(format!(
                "`{}` contains {c:?}; only letters, digits, `.`, `_` and `-` are allowed",
                s.escape_debug()
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

/// An image reference: optional registry host, repository, optional tag and
/// optional digest. Without a registry, the current context's registry is
/// meant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    pub registry: Option<String>,
    pub repository: Repository,
    pub tag: Option<Tag>,
    pub digest: Option<Digest>,
}

impl Reference {
    /// A local reference `repository:tag`.
    pub fn new(repository: Repository, tag: Tag) -> Self {
        Self {
            registry: None,
            repository,
            tag: Some(tag),
            digest: None,
        }
    }

    /// The tag, `latest` when none is given.
    pub fn tag_or_latest(&self) -> Tag {
        self.tag.clone().unwrap_or_else(Tag::latest)
    }
}

fn check_registry_host(host: &str) -> Result<(), ValidationError> {
    let bad = |reason: String| Err(ValidationError::new("registry", reason));
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    if let Some(port) = port
        && (port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return bad(format!("`{}` has an invalid port", host.escape_debug()));
    }
    if name.is_empty() || name.len() > 253 {
        return bad(format!("`{}` is not a host name", host.escape_debug()));
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return bad(format!(
                "`{}` is not a valid host name",
                host.escape_debug()
            ));
        }
    }
    Ok(())
}

impl FromStr for Reference {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let in_ref = |e: ValidationError| {
            let reason = format!(
                "`{}` is not a valid image reference: {} {}",
                s.escape_debug(),
                e.field,
                e.reason
            );
            ValidationError::new("image reference", reason)
        };
        let (rest, digest) = match s.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest.parse::<Digest>().map_err(in_ref)?)),
            None => (s, None),
        };
        let (registry, path_and_tag) = match rest.split_once('/') {
            Some((first, remainder))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                check_registry_host(first).map_err(in_ref)?;
                (Some(first.to_owned()), remainder)
            }
            _ => (None, rest),
        };
        let (path, tag) = match path_and_tag.rsplit_once(':') {
            Some((path, tag)) => (path, Some(tag.parse::<Tag>().map_err(in_ref)?)),
            None => (path_and_tag, None),
        };
        let repository = path.parse::<Repository>().map_err(in_ref)?;
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(registry) = &self.registry {
            write!(f, "{registry}/")?;
        }
        write!(f, "{}", self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

macro_rules! serde_via_str {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = String::deserialize(deserializer)?;
                s.parse()
                    .map_err(|e: ValidationError| serde::de::Error::custom(e.reason))
            }
        }
    };
}

serde_via_str!(Repository);
serde_via_str!(Tag);
serde_via_str!(Reference);

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Reference {
        s.parse().unwrap()
    }

    #[test]
    fn repositories() {
        for ok in [
            "a",
            "myuser/my-vm",
            "nixos-server/nixos-k3s-vm",
            "a/b/c.d_e-f",
            "0x",
        ] {
            assert_eq!(ok.parse::<Repository>().unwrap().as_str(), ok);
        }
        let long = "a".repeat(256);
        for bad in [
            "", "A", "a//b", "/a", "a/", "-a", "a-", "a/.b", "a b", "a:b", &long,
        ] {
            let err = bad.parse::<Repository>().unwrap_err();
            assert_eq!(err.field, "repository", "{bad}");
        }
        assert!("a".repeat(255).parse::<Repository>().is_ok());
    }

    #[test]
    fn tags() {
        for ok in ["latest", "v1.2.3", "_x", "Ziti-1_2"] {
            assert!(ok.parse::<Tag>().is_ok(), "{ok}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", "a+b", &"a".repeat(129)] {
            assert!(bad.parse::<Tag>().is_err(), "{bad}");
        }
        assert!("a".repeat(128).parse::<Tag>().is_ok());
    }

    #[test]
    fn plain_references() {
        let x = r("nixos-server/nixos-k3s-vm:ziti");
        assert_eq!(x.registry, None);
        assert_eq!(x.repository.as_str(), "nixos-server/nixos-k3s-vm");
        assert_eq!(x.tag.as_ref().map(Tag::as_str), Some("ziti"));
        assert_eq!(x.digest, None);
        let y = r("my-vm");
        assert_eq!(y.tag, None);
        assert_eq!(y.tag_or_latest(), Tag::latest());
    }

    #[test]
    fn registry_hosts() {
        let x = r("registry.example.com:5000/ns/vm:1.0");
        assert_eq!(x.registry.as_deref(), Some("registry.example.com:5000"));
        assert_eq!(x.repository.as_str(), "ns/vm");
        assert_eq!(x.tag.unwrap().as_str(), "1.0");
        let y = r("localhost/vm");
        assert_eq!(y.registry.as_deref(), Some("localhost"));
        let z = r("localhost:5000/vm");
        assert_eq!(z.registry.as_deref(), Some("localhost:5000"));
        assert_eq!(z.repository.as_str(), "vm");
        let w = r("ghcr.io/org/vm");
        assert_eq!(w.registry.as_deref(), Some("ghcr.io"));
        // no `.`/`:`: a namespace, not a host
        let v = r("myuser/my-vm");
        assert_eq!(v.registry, None);
        assert_eq!(v.repository.as_str(), "myuser/my-vm");
        // a bare host:port without a path is a repository and a tag
        let u = r("localhost:5000");
        assert_eq!(u.registry, None);
        assert_eq!(u.tag.unwrap().as_str(), "5000");
    }

    #[test]
    fn digest_references() {
        let hex = "a".repeat(64);
        let x = r(&format!("reg.io/ns/vm:tag@sha256:{hex}"));
        assert_eq!(x.digest.as_ref().unwrap().hex(), hex);
        assert_eq!(x.tag.as_ref().unwrap().as_str(), "tag");
        let y = r(&format!("ns/vm@sha256:{hex}"));
        assert_eq!(y.tag, None);
        assert!(y.digest.is_some());
        assert!(
            format!("ns/vm@sha256:{}", "a".repeat(63))
                .parse::<Reference>()
                .is_err()
        );
        assert!("ns/vm@md5:abc".parse::<Reference>().is_err());
    }

    #[test]
    fn bad_references() {
        for bad in [
            "",
            "ns/VM",
            "ns/vm:",
            "ns/vm:-bad",
            "ns/vm:a/b",
            "reg.io:port/vm",
            "bad_host.io/vm",
            "reg.io/",
            "ns/vm:t:u",
            "../etc",
        ] {
            let err = bad.parse::<Reference>().unwrap_err();
            assert_eq!(err.field, "image reference", "{bad}");
        }
    }

    #[test]
    fn display_round_trips() {
        let hex = "b".repeat(64);
        for s in [
            "vm".to_owned(),
            "ns/vm:1".to_owned(),
            "localhost:5000/ns/vm:latest".to_owned(),
            format!("reg.io/vm@sha256:{hex}"),
            format!("reg.io/vm:t@sha256:{hex}"),
        ] {
            assert_eq!(r(&s).to_string(), s);
        }
        let json = serde_json::to_string(&r("ns/vm:1")).unwrap();
        assert_eq!(json, "\"ns/vm:1\"");
    }
}
