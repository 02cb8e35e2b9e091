//! The user's registry credentials, kept by the client (the daemon stores
//! none): `$XDG_CONFIG_HOME/vmr/credentials.json` (else
//! `~/.config/vmr/credentials.json`), one entry per context name. The file
//! is created with mode 0600 in a 0700 directory and replaced atomically, so
//! a token is never readable by others, not even for an instant. The file is
//! a few hundred bytes: plain blocking I/O is fine even from async code.

use std::collections::BTreeMap;
use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vmr_proto::v1 as pb;

#[derive(Debug, thiserror::Error)]
pub enum CredentialStoreError {
    #[error("cannot find your config directory: set XDG_CONFIG_HOME or HOME")]
    NoConfigDir,
    #[error("cannot read the credentials file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the credentials file {} is not valid JSON ({source}); remove it and log in again", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write the credentials file {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What `vmr login` got back and push/pull send with each call.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredCredential {
    /// `bearer` or `basic`.
    pub scheme: String,
    pub credential: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub registry_url: String,
    /// Unix seconds; absent when the server gave no lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

impl std::fmt::Debug for StoredCredential {
    // The credential itself stays out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCredential")
            .field("scheme", &self.scheme)
            .field("username", &self.username)
            .field("registry_url", &self.registry_url)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl StoredCredential {
    pub fn from_login(response: &pb::LoginResponse, now: jiff::Timestamp) -> Self {
        let expires_at = (response.expires_in_seconds > 0)
            .then(|| now.as_second().saturating_add(response.expires_in_seconds));
        Self {
            scheme: response.scheme.clone(),
            credential: response.credential.clone(),
            username: response.username.clone(),
            registry_url: response.registry_url.clone(),
            expires_at,
        }
    }

    /// The `x-vmr-registry-auth` metadata value: `<scheme> <credential>`.
    pub fn header_value(&self) -> String {
        format!("{} {}", self.scheme, self.credential)
    }

    pub fn is_expired(&self, now: jiff::Timestamp) -> bool {
        self.expires_at
            .is_some_and(|expires_at| now.as_second() >= expires_at)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CredentialFile {
    #[serde(default)]
    contexts: BTreeMap<String, StoredCredential>,
}

/// The credentials file.
#[derive(Debug, Clone)]
pub struct CredentialStore {
    path: PathBuf,
}

impl CredentialStore {
    /// The store under a given config directory (`<dir>/vmr/credentials.json`).
    pub fn in_config_dir(config_dir: &Path) -> Self {
        Self {
            path: config_dir.join("vmr").join("credentials.json"),
        }
    }

    /// The store under the user's config directory.
    pub fn default_location() -> Result<Self, CredentialStoreError> {
        dirs::config_dir()
            .map(|dir| Self::in_config_dir(&dir))
            .ok_or(CredentialStoreError::NoConfigDir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn get(&self, context: &str) -> Result<Option<StoredCredential>, CredentialStoreError> {
        Ok(self.load()?.contexts.remove(context))
    }

    pub fn put(
        &self,
        context: &str,
        credential: StoredCredential,
    ) -> Result<(), CredentialStoreError> {
        let mut file = self.load()?;
        file.contexts.insert(context.to_owned(), credential);
        self.save(&file)
    }

    /// Forgets the context's credential; false when there was none.
    pub fn remove(&self, context: &str) -> Result<bool, CredentialStoreError> {
        let mut file = self.load()?;
        if file.contexts.remove(context).is_none() {
            return Ok(false);
        }
        self.save(&file)?;
        Ok(true)
    }

    fn load(&self) -> Result<CredentialFile, CredentialStoreError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| CredentialStoreError::Parse {
                    path: self.path.clone(),
                    source,
                })
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(CredentialFile::default()),
            Err(source) => Err(CredentialStoreError::Read {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Writes a 0600 temporary file next to the target and renames it over
    /// the target: readers see the old or the new file, never a torn one,
    /// and the mode is right from the file's creation.
    fn save(&self, file: &CredentialFile) -> Result<(), CredentialStoreError> {
        let write_error = |source| CredentialStoreError::Write {
            path: self.path.clone(),
            source,
        };
        let dir = self.path.parent().unwrap_or_else(|| Path::new("."));
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(write_error)?;
        let temporary = dir.join(format!(".credentials.json.{}.tmp", std::process::id()));
        // A leftover of a crashed run that had the same pid.
        let _ = std::fs::remove_file(&temporary);
        let json = serde_json::to_vec_pretty(file)
            .map_err(std::io::Error::other)
            .map_err(write_error)?;
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)
            .and_then(|mut out| {
                out.write_all(&json)?;
                out.sync_all()
            })
            .and_then(|()| std::fs::rename(&temporary, &self.path));
        if let Err(err) = written {
            let _ = std::fs::remove_file(&temporary);
            return Err(write_error(err));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn credential(token: &str) -> StoredCredential {
        StoredCredential {
            scheme: "bearer".to_owned(),
            credential: token.to_owned(),
            username: "ana".to_owned(),
            registry_url: "https://registry.example".to_owned(),
            expires_at: Some(1_900_000_000),
        }
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn round_trip_per_context() {
        let home = tempfile::tempdir().expect("temp dir");
        let store = CredentialStore::in_config_dir(home.path());
        assert_eq!(store.get("default").expect("empty store"), None);

        store.put("default", credential("one")).expect("put");
        store.put("work", credential("two")).expect("put");
        assert_eq!(store.get("default").expect("get"), Some(credential("one")));
        assert_eq!(store.get("work").expect("get"), Some(credential("two")));

        // A new login replaces the old credential.
        store.put("work", credential("three")).expect("put");
        assert_eq!(store.get("work").expect("get"), Some(credential("three")));

        assert!(store.remove("work").expect("remove"));
        assert!(!store.remove("work").expect("second remove"));
        assert_eq!(store.get("work").expect("get"), None);
        assert_eq!(store.get("default").expect("get"), Some(credential("one")));
    }

    #[test]
    fn file_is_0600_in_a_0700_directory() {
        let home = tempfile::tempdir().expect("temp dir");
        let store = CredentialStore::in_config_dir(home.path());
        store.put("default", credential("secret")).expect("put");
        assert_eq!(store.path(), home.path().join("vmr/credentials.json"));
        assert_eq!(mode(store.path()), 0o600);
        assert_eq!(mode(&home.path().join("vmr")), 0o700);
        // Rewrites keep the mode and leave no temporary behind.
        store.put("other", credential("x")).expect("put");
        assert_eq!(mode(store.path()), 0o600);
        let entries = std::fs::read_dir(home.path().join("vmr"))
            .expect("read dir")
            .count();
        assert_eq!(entries, 1);
    }

    #[test]
    fn a_corrupt_file_is_reported_with_its_path() {
        let home = tempfile::tempdir().expect("temp dir");
        let store = CredentialStore::in_config_dir(home.path());
        std::fs::create_dir_all(home.path().join("vmr")).expect("mkdir");
        std::fs::write(store.path(), "{not json").expect("write");
        let err = store.get("default").expect_err("corrupt");
        assert!(err.to_string().contains("credentials.json"), "{err}");
    }

    #[test]
    fn expiry_comes_from_the_login_answer() {
        let now: jiff::Timestamp = "2025-01-01T00:00:00Z".parse().expect("timestamp");
        let response = pb::LoginResponse {
            scheme: "bearer".to_owned(),
            credential: "t".to_owned(),
            expires_in_seconds: 60,
            username: "ana".to_owned(),
            registry_url: String::new(),
        };
        let stored = StoredCredential::from_login(&response, now);
        assert_eq!(stored.header_value(), "bearer t");
        assert!(!stored.is_expired(now));
        let later: jiff::Timestamp = "2025-01-01T00:01:00Z".parse().expect("timestamp");
        assert!(stored.is_expired(later));
        let forever = StoredCredential::from_login(
            &pb::LoginResponse {
                expires_in_seconds: 0,
                ..response
            },
            now,
        );
        assert!(!forever.is_expired(later));
    }

    #[test]
    fn debug_output_hides_the_credential() {
        let text = format!("{:?}", credential("very-secret"));
        assert!(!text.contains("very-secret"), "{text}");
    }
}
