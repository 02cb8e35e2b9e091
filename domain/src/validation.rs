//! The one error every parse and validation in the domain returns: the field
//! at fault (a path such as `services.web.networks[1].staticIp`), the reason in
//! one sentence, and the YAML position when it is known. It also owns the
//! bounded YAML entry point that turns serde errors into such field paths, so
//! that every document format reports errors the same way.

mod depth;
mod locate;

use serde::de::DeserializeOwned;

pub use depth::MAX_FLOW_DEPTH;

/// Largest YAML document (VMFile, VMCompose, inline cloud-init) the domain parses.
pub const MAX_YAML_BYTES: usize = 1024 * 1024;

/// A field that failed validation, with the reason and, when known, where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}{}", position_suffix(*.line, *.column))]
pub struct ValidationError {
    /// Path of the offending field, e.g. `services.web.networks[1].staticIp`.
    pub field: String,
    /// What is wrong, in one sentence.
    pub reason: String,
    /// 1-based line in the YAML document, when known.
    pub line: Option<usize>,
    /// 1-based column in the YAML document, when known.
    pub column: Option<usize>,
}

fn position_suffix(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!(" (line {line}, column {column})"),
        (Some(line), None) => format!(" (line {line})"),
        _ => String::new(),
    }
}

impl ValidationError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
            line: None,
            column: None,
        }
    }

    /// Attaches a 1-based YAML position.
    #[must_use]
    pub fn at(mut self, line: usize, column: usize) -> Self {
        self.line = Some(line);
        self.column = Some(column);
        self
    }

    /// Replaces the field path (for a value parsed outside its document).
    #[must_use]
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = field.into();
        self
    }

    /// Puts `prefix` in front of the field path: `spec` + `resources.cpu`.
    #[must_use]
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = join_path(prefix, &self.field);
        self
    }
}

/// Joins two field paths, leaving index segments (`[1]`) unseparated.
pub fn join_path(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_owned()
    } else if field.is_empty() {
        prefix.to_owned()
    } else if field.starts_with('[') {
        format!("{prefix}{field}")
    } else {
        format!("{prefix}.{field}")
    }
}

/// Field name used for errors that concern the whole document.
pub const DOCUMENT_FIELD: &str = "document";

/// Parses a bounded YAML document into `T`, reporting the exact field path
/// and the position of the first error.
///
/// The raw types are expected to use `#[serde(deny_unknown_fields)]`, so an
/// unknown key is reported at its own path. serde_norway bounds nesting (128
/// levels) and alias expansion, which makes alias bombs an error, not a hang.
pub fn parse_yaml<T: DeserializeOwned>(text: &str) -> Result<T, ValidationError> {
    if text.len() > MAX_YAML_BYTES {
        return Err(ValidationError::new(
            DOCUMENT_FIELD,
            format!(
                "is {} bytes, larger than the limit of {MAX_YAML_BYTES} bytes",
                text.len()
            ),
        ));
    }
    if text.trim().is_empty() {
        return Err(ValidationError::new(DOCUMENT_FIELD, "is empty"));
    }
    check_flow_depth(DOCUMENT_FIELD, text)?;
    let deserializer = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        yaml_error(&path, &inner)
    })
}

/// Refuses a document nesting flow collections deeper than the parser
/// allows, before the parser spends quadratic time finding out.
pub fn check_flow_depth(field: &str, text: &str) -> Result<(), ValidationError> {
    if depth::flow_depth_exceeds(text, MAX_FLOW_DEPTH) {
        return Err(ValidationError::new(
            field,
            format!("nests `[` or `{{` deeper than {MAX_FLOW_DEPTH} levels"),
        ));
    }
    Ok(())
}

/// Converts a serde_norway error into a `ValidationError` at `path`.
fn yaml_error(path: &str, err: &serde_yaml::Error) -> ValidationError {
    let location = err.location();
    let mut message = err.to_string();
    // serde_norway appends " at line L column C" and may prefix its own path;
    // both are carried separately here.
    if let Some(at) = message.find(" at line ") {
        message.truncate(at);
    }
    if let Some((prefix, rest)) = message.split_once(": ")
        && !prefix.contains(' ')
        && !prefix.contains('`')
    {
        message = rest.to_owned();
    }
    let field = if path == "." || path.is_empty() {
        DOCUMENT_FIELD.to_owned()
    } else {
        path.to_owned()
    };
    let error = ValidationError::new(field, message);
    match location {
        Some(loc) => error.at(loc.line(), loc.column()),
        None => error,
    }
}

/// Fills in the YAML position of `err` from `yaml` when it has none: errors
/// found after parsing (a static address outside its subnet, a cycle) name a
/// field path, and this finds that field's line and column, or those of its
/// closest existing parent.
pub fn locate_in(err: ValidationError, yaml: &str) -> ValidationError {
    if err.line.is_some() {
        return err;
    }
    match locate(yaml, &err.field) {
        Some((line, column)) => err.at(line, column),
        None => err,
    }
}

/// The 1-based line and column of the node at `field` (a path such as
/// `services.web.networks[1].staticIp`) in `yaml`, or of its closest parent
/// that exists.
pub fn locate(yaml: &str, field: &str) -> Option<(usize, usize)> {
    // The search parses the document again: never one the parser refuses.
    if yaml.len() > MAX_YAML_BYTES || depth::flow_depth_exceeds(yaml, MAX_FLOW_DEPTH) {
        return None;
    }
    let path = locate::segments(field);
    (1..=path.len())
        .rev()
        .find_map(|n| locate::find(yaml, &path[..n]))
}

/// Checks a name against the common "simple name" rule used for VMs and
/// networks: `[A-Za-z0-9][A-Za-z0-9._-]{0,62}`.
pub fn check_simple_name(field: &str, value: &str) -> Result<(), ValidationError> {
    let bad = |reason: String| Err(ValidationError::new(field, reason));
    if value.is_empty() {
        return bad("must not be empty".to_owned());
    }
    if value.len() > 63 {
        return bad(format!(
            "`{value}` is {} characters long, at most 63 are allowed",
            value.len()
        ));
    }
    let first = value.as_bytes()[0];
    if !first.is_ascii_alphanumeric() {
        return bad(format!("`{value}` must start with a letter or digit"));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return bad(format!(
            "`{}` contains {c:?}; only letters, digits, `.`, `_` and `-` are allowed",
            value.escape_debug()
        ));
    }
    if value.contains("..") {
        return bad(format!("`{value}` must not contain `..`"));
    }
    Ok(())
}

/// The `apiVersion` values both document formats accept.
pub const API_VERSIONS: [&str; 2] = ["vmregistry.io/v1alpha1", "v1"];

/// Checks a document's `apiVersion` (required, one of [`API_VERSIONS`]).
pub fn check_api_version(value: Option<&str>) -> Result<String, ValidationError> {
    match value {
        None => Err(ValidationError::new("apiVersion", "is required")),
        Some(v) if API_VERSIONS.contains(&v) => Ok(v.to_owned()),
        Some(v) => Err(ValidationError::new(
            "apiVersion",
            format!(
                "`{}` is not supported; use vmregistry.io/v1alpha1 or v1",
                v.escape_debug()
            ),
        )),
    }
}

/// A YAML scalar (string, number or boolean) read as its text, for label
/// values and similar free-form strings where `version: 2` should not be an
/// error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScalarString(pub String);

impl<'de> serde::Deserialize<'de> for ScalarString {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;

        impl serde::de::Visitor<'_> for ScalarVisitor {
            type Value = ScalarString;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string, number or boolean")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ScalarString, E> {
                Ok(ScalarString(v.to_owned()))
            }

            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<ScalarString, E> {
                Ok(ScalarString(v.to_string()))
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ScalarString, E> {
                Ok(ScalarString(v.to_string()))
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ScalarString, E> {
                Ok(ScalarString(v.to_string()))
            }

            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<ScalarString, E> {
                Ok(ScalarString(v.to_string()))
            }
        }

        deserializer.deserialize_any(ScalarVisitor)
    }
}

/// A YAML mapping with string keys that refuses duplicate keys (a plain
/// `BTreeMap` would silently keep the last one).
pub(crate) struct UniqueMap<V>(pub std::collections::BTreeMap<String, V>);

impl<V> Default for UniqueMap<V> {
    fn default() -> Self {
        Self(std::collections::BTreeMap::new())
    }
}

impl<'de, V: serde::Deserialize<'de>> serde::Deserialize<'de> for UniqueMap<V> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(std::marker::PhantomData<V>);

        impl<'de, V: serde::Deserialize<'de>> serde::de::Visitor<'de> for MapVisitor<V> {
            type Value = UniqueMap<V>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a mapping")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<UniqueMap<V>, A::Error> {
                let mut out = std::collections::BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value = map.next_value()?;
                    if out.contains_key(&key) {
                        return Err(serde::de::Error::custom(format!("duplicate key `{key}`")));
                    }
                    out.insert(key, value);
                }
                Ok(UniqueMap(out))
            }
        }

        deserializer.deserialize_map(MapVisitor(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Outer {
        #[allow(dead_code)]
        items: Vec<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Inner {
        #[allow(dead_code)]
        static_ip: Option<String>,
    }

    #[test]
    fn display_with_and_without_position() {
        let e = ValidationError::new("spec.diskImage", "is required");
        assert_eq!(e.to_string(), "spec.diskImage: is required");
        assert_eq!(
            e.at(3, 5).to_string(),
            "spec.diskImage: is required (line 3, column 5)"
        );
    }

    #[test]
    fn unknown_key_reports_path_and_line() {
        let err = parse_yaml::<Outer>("items:\n  - staticIp: a\n  - staticIP: b\n").unwrap_err();
        assert_eq!(err.field, "items[1].staticIP");
        assert!(err.reason.starts_with("unknown field `staticIP`"), "{err}");
        assert_eq!(err.line, Some(3));
        assert_eq!(err.column, Some(5));
    }

    #[test]
    fn wrong_type_reports_path() {
        let err = parse_yaml::<Outer>("items:\n  - staticIp: [1]\n").unwrap_err();
        assert_eq!(err.field, "items[0].staticIp");
        assert_eq!(err.line, Some(2));
    }

    #[test]
    fn syntax_error_has_position() {
        let err = parse_yaml::<Outer>("items: [\n  - :").unwrap_err();
        assert!(err.line.is_some(), "{err}");
        let err = parse_yaml::<Outer>("items: x: y").unwrap_err();
        assert_eq!(err.line, Some(1), "{err}");
    }

    #[test]
    fn oversized_and_empty_documents_are_refused() {
        let big = "#".repeat(MAX_YAML_BYTES + 1);
        assert!(
            parse_yaml::<Outer>(&big)
                .unwrap_err()
                .reason
                .contains("limit")
        );
        assert_eq!(parse_yaml::<Outer>("  \n").unwrap_err().reason, "is empty");
    }

    #[test]
    fn alias_bomb_and_deep_nesting_are_errors() {
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..9 {
            let prev = if i == 0 {
                "a".to_owned()
            } else {
                format!("b{}", i - 1)
            };
            bomb.push_str(&format!(
                "b{i}: &b{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
        }
        assert!(parse_yaml::<serde_yaml::Value>(&bomb).is_err());
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse_yaml::<serde_yaml::Value>(&deep).is_err());
    }

    #[test]
    fn locate_finds_fields_in_block_and_flow_style() {
        let yaml = "a:\n  list:\n    - x: 1\n    - {x: 2, y: [3, 4]}\n  b: c\n";
        assert_eq!(locate(yaml, "a.list[1].x"), Some((4, 11)));
        assert_eq!(locate(yaml, "a.list[0].x"), Some((3, 10)));
        assert_eq!(locate(yaml, "a.list[1].y[1]"), Some((4, 21)));
        assert_eq!(locate(yaml, "a.b"), Some((5, 6)));
        // a missing field falls back to its closest parent
        assert_eq!(locate(yaml, "a.list[0].missing"), Some((3, 7)));
        assert_eq!(locate(yaml, "nope"), None);
        assert_eq!(locate("x: [", "a"), None);
        let err = locate_in(ValidationError::new("a.b", "bad"), yaml);
        assert_eq!((err.line, err.column), (Some(5), Some(6)));
    }

    #[test]
    fn api_versions() {
        assert!(check_api_version(Some("v1")).is_ok());
        assert!(check_api_version(Some("vmregistry.io/v1alpha1")).is_ok());
        assert_eq!(check_api_version(None).unwrap_err().field, "apiVersion");
        assert!(check_api_version(Some("v2")).is_err());
    }

    #[test]
    fn simple_names() {
        assert!(check_simple_name("name", "web-1.a_b").is_ok());
        for bad in [
            "",
            "-a",
            "a/b",
            "a..b",
            "a b",
            "a<b",
            "a\0b",
            &"a".repeat(64),
        ] {
            assert!(check_simple_name("name", bad).is_err(), "{bad:?}");
        }
    }
}
