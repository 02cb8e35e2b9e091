//! The files a compose file names (`userDataFile`, `metaDataFile`,
//! `networkConfigFile`): which ones the client must read and send, and the
//! lexical check that a path stays inside the compose file's directory.

use super::raw::RawCompose;
use crate::validation::{ValidationError, parse_yaml};

/// A file named by a compose file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReference {
    /// Where it is named, e.g. `services.web.cloudInit.userDataFile`.
    pub field: String,
    /// The path as written, relative to the compose file's directory (or
    /// absolute); the key of [`super::ComposeInput::files`].
    pub path: String,
}

/// The files `yaml` names, sorted by field, so that the client can read them
/// before asking for a plan. Fails only when the YAML itself does not parse.
pub fn referenced_files(yaml: &str) -> Result<Vec<FileReference>, ValidationError> {
    let raw: RawCompose = parse_yaml(yaml)?;
    let mut out = Vec::new();
    for (key, service) in raw.services.map(|s| s.0).unwrap_or_default() {
        let Some(ci) = service.cloud_init else {
            continue;
        };
        for (name, path) in [
            ("userDataFile", ci.user_data_file),
            ("metaDataFile", ci.meta_data_file),
            ("networkConfigFile", ci.network_config_file),
        ] {
            if let Some(path) = path {
                out.push(FileReference {
                    field: format!("services.{key}.cloudInit.{name}"),
                    path,
                });
            }
        }
    }
    Ok(out)
}

/// Whether `path` (relative to the compose file's directory) stays inside
/// that directory, judged on the text alone: not absolute, and no `..` that
/// climbs above the start. Symlinks are the client's to resolve.
pub fn path_stays_inside(path: &str) -> bool {
    if path.is_empty() || path.starts_with('/') || path.starts_with('\\') || path.contains('\0') {
        return false;
    }
    let mut depth: usize = 0;
    for part in path.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            _ => depth += 1,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_named_files() {
        let yaml = "apiVersion: v1
services:
  b:
    image: x
    cloudInit: {userDataFile: ./b.yaml, networkConfigFile: net/b.yaml}
  a:
    image: x
    cloudInit: {metaDataFile: ../meta.yaml}
  c: {image: x}
";
        let files = referenced_files(yaml).unwrap();
        let pairs: Vec<(&str, &str)> = files
            .iter()
            .map(|f| (f.field.as_str(), f.path.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("services.a.cloudInit.metaDataFile", "../meta.yaml"),
                ("services.b.cloudInit.userDataFile", "./b.yaml"),
                ("services.b.cloudInit.networkConfigFile", "net/b.yaml"),
            ]
        );
        assert!(referenced_files("services: [").is_err());
    }

    #[test]
    fn paths_inside_the_directory() {
        for ok in [
            "a.yaml",
            "./a.yaml",
            "dir/a.yaml",
            "dir/../a.yaml",
            "a/./b/../c",
        ] {
            assert!(path_stays_inside(ok), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../a",
            "dir/../../a",
            "./..",
            "a/../../b",
            "\\x",
            "a\0",
        ] {
            assert!(!path_stays_inside(bad), "{bad:?}");
        }
    }
}
