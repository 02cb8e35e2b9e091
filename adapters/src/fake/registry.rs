//! An in-memory OCI registry behind the [`RegistryConnector`] port, one
//! store per registry host: a blob is visible in a repository only after its
//! upload (with the right size and digest) or a mount; a manifest put needs
//! every blob it names in that repository; tags point at manifests. With a
//! [`FakeAuth`], every call needs a credential it accepts, and pushing needs
//! push rights, as with a token-auth registry.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use vmr_domain::image::{Digest, Repository, Tag};
use vmr_ports::{
    BlobDownload, ByteStream, Credential, ManifestReference, RegistryClient, RegistryConnector,
    RegistryError, RegistryTarget, RemoteManifest, StoreError, UploadProgress,
};

use super::auth::FakeAuth;
use crate::registry::http::{Endpoint, EndpointError};

/// Bytes per item of a download stream.
const DOWNLOAD_CHUNK: usize = 64 * 1024;

#[derive(Default)]
struct Repo {
    blobs: HashSet<Digest>,
    manifests: HashMap<Digest, (Bytes, String)>,
    tags: BTreeMap<Tag, Digest>,
}

#[derive(Default)]
struct Host {
    blobs: HashMap<Digest, Bytes>,
    repos: HashMap<Repository, Repo>,
    uploads: usize,
    down: bool,
}

/// The fake registries; clones share state.
#[derive(Clone, Default)]
pub struct FakeRegistry {
    hosts: Arc<Mutex<HashMap<String, Host>>>,
    auth: Option<FakeAuth>,
}

impl FakeRegistry {
    /// Anonymous registries: every call is allowed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registries that check every call's credential against `auth`.
    pub fn with_auth(auth: FakeAuth) -> Self {
        Self {
            hosts: Arc::default(),
            auth: Some(auth),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Host>> {
        self.hosts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes a host (`127.0.0.1:5000`) refuse connections, or accept again.
    pub fn set_unavailable(&self, host: &str, down: bool) {
        self.lock().entry(host.to_owned()).or_default().down = down;
    }

    /// Blob uploads a host has completed (mounts not counted).
    pub fn uploads(&self, host: &str) -> usize {
        self.lock().get(host).map_or(0, |h| h.uploads)
    }

    /// A blob's bytes, if the host holds it in any repository.
    pub fn blob(&self, host: &str, digest: &Digest) -> Option<Bytes> {
        self.lock().get(host)?.blobs.get(digest).cloned()
    }

    /// The tags of a repository.
    pub fn tags(&self, host: &str, repository: &Repository) -> Vec<Tag> {
        self.lock()
            .get(host)
            .and_then(|h| h.repos.get(repository))
            .map(|r| r.tags.keys().cloned().collect())
            .unwrap_or_default()
    }
}

impl RegistryConnector for FakeRegistry {
    fn connect(&self, target: &RegistryTarget) -> Result<Arc<dyn RegistryClient>, RegistryError> {
        let endpoint = Endpoint::parse(&target.base_url, target.insecure).map_err(|e| match e {
            EndpointError::Invalid { url, reason } => RegistryError::InvalidTarget { url, reason },
            EndpointError::InsecureRefused { host } => RegistryError::InsecureRefused { host },
        })?;
        Ok(Arc::new(FakeRegistryClient {
            registry: self.clone(),
            host: endpoint.display().to_owned(),
            credential: target.credential.clone(),
        }))
    }
}

/// What a call needs. Every fake user may pull; pushing is a right.
enum Need<'a> {
    Nothing,
    Pull,
    Push(&'a Repository),
}

/// One fake registry host, as one user.
pub struct FakeRegistryClient {
    registry: FakeRegistry,
    host: String,
    credential: Option<Credential>,
}

impl FakeRegistryClient {
    /// The host's state, after the availability and permission checks.
    fn enter(
        &self,
        need: &Need<'_>,
    ) -> Result<MutexGuard<'_, HashMap<String, Host>>, RegistryError> {
        let mut hosts = self.registry.lock();
        if hosts.entry(self.host.clone()).or_default().down {
            return Err(RegistryError::Unavailable {
                registry: self.host.clone(),
                message: "cannot connect: connection refused".to_owned(),
            });
        }
        if let Some(auth) = &self.registry.auth {
            if auth.is_down() {
                return Err(RegistryError::Unavailable {
                    registry: self.host.clone(),
                    message: "token server: cannot connect: connection refused".to_owned(),
                });
            }
            let Some(credential) = &self.credential else {
                return Err(RegistryError::Unauthorized {
                    registry: self.host.clone(),
                    message: "UNAUTHORIZED: authentication required; no credential was given: log in first".to_owned(),
                });
            };
            let (_, access) =
                auth.authenticate(credential)
                    .map_err(|message| RegistryError::Unauthorized {
                        registry: self.host.clone(),
                        message,
                    })?;
            if let Need::Push(repository) = need
                && !access.can_push()
            {
                return Err(RegistryError::Denied {
                    registry: self.host.clone(),
                    message: format!(
                        "the credential does not allow pushing to {} (the registry said: UNAUTHORIZED: authentication required)",
                        repository.as_str()
                    ),
                });
            }
        }
        Ok(hosts)
    }

    fn host<'g>(&self, hosts: &'g mut MutexGuard<'_, HashMap<String, Host>>) -> &'g mut Host {
        hosts.entry(self.host.clone()).or_default()
    }

    fn not_found(&self, what: String, code: &str) -> RegistryError {
        RegistryError::NotFound {
            registry: self.host.clone(),
            what,
            message: code.to_owned(),
        }
    }

    fn rejected(&self, message: String) -> RegistryError {
        RegistryError::Rejected {
            registry: self.host.clone(),
            message,
        }
    }
}

/// Every digest a manifest or index names: config, layers, sub-manifests.
fn referenced_digests(manifest: &[u8]) -> Result<Vec<Digest>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(manifest).map_err(|e| format!("MANIFEST_INVALID: {e}"))?;
    let mut digests = Vec::new();
    let config = value.get("config").into_iter();
    let lists = ["layers", "manifests", "blobs"]
        .iter()
        .filter_map(|key| value.get(*key)?.as_array())
        .flatten();
    for descriptor in config.chain(lists) {
        let digest = descriptor
            .get("digest")
            .and_then(|d| d.as_str())
            .ok_or_else(|| "MANIFEST_INVALID: a descriptor has no digest".to_owned())?;
        digests.push(
            digest
                .parse()
                .map_err(|e| format!("MANIFEST_INVALID: {e}"))?,
        );
    }
    Ok(digests)
}

#[async_trait]
impl RegistryClient for FakeRegistryClient {
    async fn ping(&self) -> Result<(), RegistryError> {
        self.enter(&Need::Nothing).map(drop)
    }

    async fn blob_exists(
        &self,
        repository: &Repository,
        digest: &Digest,
    ) -> Result<Option<u64>, RegistryError> {
        let mut hosts = self.enter(&Need::Pull)?;
        let host = self.host(&mut hosts);
        let known = host
            .repos
            .get(repository)
            .is_some_and(|r| r.blobs.contains(digest));
        Ok(known.then(|| host.blobs.get(digest).map_or(0, |b| b.len() as u64)))
    }

    async fn mount_blob(
        &self,
        repository: &Repository,
        digest: &Digest,
        from: &Repository,
    ) -> Result<bool, RegistryError> {
        let mut hosts = self.enter(&Need::Push(repository))?;
        let host = self.host(&mut hosts);
        if !host
            .repos
            .get(from)
            .is_some_and(|r| r.blobs.contains(digest))
        {
            return Ok(false);
        }
        host.repos
            .entry(repository.clone())
            .or_default()
            .blobs
            .insert(digest.clone());
        Ok(true)
    }

    async fn upload_blob(
        &self,
        repository: &Repository,
        digest: &Digest,
        size: u64,
        mut data: ByteStream,
        progress: Option<UploadProgress>,
    ) -> Result<(), RegistryError> {
        drop(self.enter(&Need::Push(repository))?);
        let mut received = Vec::new();
        while let Some(chunk) = data.next().await {
            let chunk = chunk.map_err(|source| RegistryError::Source {
                digest: digest.clone(),
                source,
            })?;
            received.extend_from_slice(&chunk);
            if received.len() as u64 > size {
                break;
            }
            if let Some(progress) = &progress {
                progress(received.len() as u64);
            }
        }
        if received.len() as u64 != size {
            return Err(RegistryError::Source {
                digest: digest.clone(),
                source: StoreError::SizeMismatch {
                    expected: size,
                    actual: received.len() as u64,
                },
            });
        }
        if Digest::of(&received) != *digest {
            return Err(self.rejected(format!(
                "upload of blob {digest} to {}: DIGEST_INVALID: provided digest did not match uploaded content",
                repository.as_str()
            )));
        }
        let mut hosts = self.enter(&Need::Push(repository))?;
        let host = self.host(&mut hosts);
        host.blobs.insert(digest.clone(), Bytes::from(received));
        host.repos
            .entry(repository.clone())
            .or_default()
            .blobs
            .insert(digest.clone());
        host.uploads += 1;
        Ok(())
    }

    async fn get_blob(
        &self,
        repository: &Repository,
        digest: &Digest,
        offset: u64,
    ) -> Result<BlobDownload, RegistryError> {
        let mut hosts = self.enter(&Need::Pull)?;
        let host = self.host(&mut hosts);
        let what = format!("blob {digest} in {}", repository.as_str());
        let bytes = match host.repos.get(repository) {
            Some(repo) if repo.blobs.contains(digest) => {
                host.blobs.get(digest).cloned().unwrap_or_default()
            }
            _ => return Err(self.not_found(what, "BLOB_UNKNOWN: blob unknown to registry")),
        };
        let size = bytes.len() as u64;
        let start = usize::try_from(offset)
            .ok()
            .filter(|o| *o <= bytes.len())
            .ok_or_else(|| {
                self.rejected(format!(
                    "{what} has {size} bytes, cannot resume at {offset}"
                ))
            })?;
        let rest = bytes.slice(start..);
        let chunks: Vec<Result<Bytes, RegistryError>> = (0..rest.len())
            .step_by(DOWNLOAD_CHUNK)
            .map(|at| Ok(rest.slice(at..(at + DOWNLOAD_CHUNK).min(rest.len()))))
            .collect();
        Ok(BlobDownload {
            size,
            stream: futures::stream::iter(chunks).boxed(),
        })
    }

    async fn get_manifest(
        &self,
        repository: &Repository,
        reference: &ManifestReference,
    ) -> Result<RemoteManifest, RegistryError> {
        let mut hosts = self.enter(&Need::Pull)?;
        let host = self.host(&mut hosts);
        let what = format!("manifest {}:{reference}", repository.as_str());
        let repo = host.repos.get(repository).ok_or_else(|| {
            self.not_found(
                what.clone(),
                "NAME_UNKNOWN: repository name not known to registry",
            )
        })?;
        let digest = match reference {
            ManifestReference::Tag(tag) => repo.tags.get(tag).cloned(),
            ManifestReference::Digest(digest) => Some(digest.clone()),
        };
        let found = digest.and_then(|d| Some((d.clone(), repo.manifests.get(&d)?.clone())));
        let Some((digest, (bytes, media_type))) = found else {
            return Err(self.not_found(what, "MANIFEST_UNKNOWN: manifest unknown"));
        };
        Ok(RemoteManifest {
            bytes,
            media_type,
            digest,
        })
    }

    async fn put_manifest(
        &self,
        repository: &Repository,
        reference: &ManifestReference,
        manifest: Bytes,
        media_type: &str,
    ) -> Result<Digest, RegistryError> {
        let digest = Digest::of(&manifest);
        let what = format!("manifest {}:{reference}", repository.as_str());
        if let ManifestReference::Digest(asked) = reference
            && *asked != digest
        {
            return Err(RegistryError::DigestMismatch {
                registry: self.host.clone(),
                what,
                expected: asked.clone(),
                actual: digest,
            });
        }
        let referenced =
            referenced_digests(&manifest).map_err(|m| self.rejected(format!("{what}: {m}")))?;
        let mut hosts = self.enter(&Need::Push(repository))?;
        let host = self.host(&mut hosts);
        let repo = host.repos.entry(repository.clone()).or_default();
        if let Some(missing) = referenced
            .iter()
            .find(|d| !repo.blobs.contains(*d) && !repo.manifests.contains_key(*d))
        {
            return Err(self.rejected(format!(
                "{what}: MANIFEST_BLOB_UNKNOWN: blob unknown to registry ({missing})"
            )));
        }
        repo.manifests
            .insert(digest.clone(), (manifest, media_type.to_owned()));
        if let ManifestReference::Tag(tag) = reference {
            repo.tags.insert(tag.clone(), digest.clone());
        }
        Ok(digest)
    }

    async fn list_tags(&self, repository: &Repository) -> Result<Vec<Tag>, RegistryError> {
        let mut hosts = self.enter(&Need::Pull)?;
        let host = self.host(&mut hosts);
        match host.repos.get(repository) {
            Some(repo) => Ok(repo.tags.keys().cloned().collect()),
            None => Err(self.not_found(
                format!("repository {}", repository.as_str()),
                "NAME_UNKNOWN: repository name not known to registry",
            )),
        }
    }

    fn describe(&self) -> String {
        self.host.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::super::auth::FakeAccess;
    use super::*;

    fn repo(name: &str) -> Repository {
        name.parse().unwrap()
    }

    fn stream(bytes: &'static [u8]) -> ByteStream {
        futures::stream::iter(vec![Ok(Bytes::from_static(bytes))]).boxed()
    }

    fn client(registry: &FakeRegistry, credential: Option<Credential>) -> Arc<dyn RegistryClient> {
        registry
            .connect(&RegistryTarget {
                base_url: "127.0.0.1:5000".to_owned(),
                insecure: false,
                credential,
            })
            .unwrap()
    }

    fn manifest_for(blob: &Digest) -> Bytes {
        Bytes::from(format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{blob}","size":5,"mediaType":"x"}},"layers":[]}}"#
        ))
    }

    #[tokio::test]
    async fn blobs_then_manifest_then_tags() {
        let registry = FakeRegistry::new();
        let c = client(&registry, None);
        let (a, b) = (repo("team/a"), repo("team/b"));
        let blob = Digest::of(b"hello");
        assert_eq!(c.blob_exists(&a, &blob).await.unwrap(), None);
        let manifest = manifest_for(&blob);
        let tag: Tag = "v1".parse().unwrap();
        let put = c
            .put_manifest(
                &a,
                &ManifestReference::Tag(tag.clone()),
                manifest.clone(),
                "m",
            )
            .await;
        assert!(
            matches!(put, Err(RegistryError::Rejected { .. })),
            "{put:?}"
        );

        c.upload_blob(&a, &blob, 5, stream(b"hello"), None)
            .await
            .unwrap();
        assert_eq!(c.blob_exists(&a, &blob).await.unwrap(), Some(5));
        assert_eq!(c.blob_exists(&b, &blob).await.unwrap(), None);
        assert!(c.mount_blob(&b, &blob, &a).await.unwrap());
        assert_eq!(registry.uploads("127.0.0.1:5000"), 1);

        let digest = c
            .put_manifest(
                &a,
                &ManifestReference::Tag(tag.clone()),
                manifest.clone(),
                "m",
            )
            .await
            .unwrap();
        let got = c
            .get_manifest(&a, &ManifestReference::Digest(digest.clone()))
            .await
            .unwrap();
        assert_eq!((got.bytes, got.digest), (manifest, digest));
        assert_eq!(c.list_tags(&a).await.unwrap(), vec![tag]);

        let mut part = c.get_blob(&a, &blob, 2).await.unwrap();
        assert_eq!(part.size, 5);
        assert_eq!(part.stream.next().await.unwrap().unwrap(), &b"llo"[..]);
    }

    #[tokio::test]
    async fn uploads_are_checked() {
        let registry = FakeRegistry::new();
        let c = client(&registry, None);
        let a = repo("a");
        let wrong = Digest::of(b"other");
        assert!(matches!(
            c.upload_blob(&a, &wrong, 5, stream(b"hello"), None).await,
            Err(RegistryError::Rejected { .. })
        ));
        assert!(matches!(
            c.upload_blob(&a, &Digest::of(b"hello"), 4, stream(b"hello"), None)
                .await,
            Err(RegistryError::Source { .. })
        ));
        assert_eq!(c.blob_exists(&a, &wrong).await.unwrap(), None);
    }

    #[tokio::test]
    async fn auth_rules() {
        let auth = FakeAuth::new()
            .with_user("reader", "readerpass", FakeAccess::Pull)
            .with_user("writer", "writerpass", FakeAccess::PullPush);
        let registry = FakeRegistry::with_auth(auth);
        let basic = |u: &str, p: &str| {
            Some(Credential::Basic {
                username: u.to_owned(),
                password: p.to_owned(),
            })
        };
        let a = repo("a");
        let blob = Digest::of(b"hello");
        assert!(matches!(
            client(&registry, None).ping().await,
            Err(RegistryError::Unauthorized { .. })
        ));
        assert!(matches!(
            client(&registry, basic("writer", "nope")).ping().await,
            Err(RegistryError::Unauthorized { .. })
        ));
        let reader = client(&registry, basic("reader", "readerpass"));
        assert!(matches!(
            reader
                .upload_blob(&a, &blob, 5, stream(b"hello"), None)
                .await,
            Err(RegistryError::Denied { .. })
        ));
        let writer = client(&registry, basic("writer", "writerpass"));
        writer
            .upload_blob(&a, &blob, 5, stream(b"hello"), None)
            .await
            .unwrap();
        assert_eq!(reader.blob_exists(&a, &blob).await.unwrap(), Some(5));

        registry.set_unavailable("127.0.0.1:5000", true);
        assert!(matches!(
            writer.ping().await,
            Err(RegistryError::Unavailable { .. })
        ));
    }
}
