//! Shared by the registry adapter tests: where the test registries are (from
//! `scripts/test-services.sh env`), unique repository names, test blobs and
//! manifests, and client construction.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use vmr_adapters::registry::{OciRegistryConnector, RegistryOptions, RetryPolicy};
use vmr_domain::image::{Digest, Repository};
use vmr_ports::{
    BlobSource, ByteStream, Credential, RegistryByteStream, RegistryClient, RegistryConnector,
    RegistryTarget, StoreError,
};

pub use vmr_tests::registry::service_env;

/// Installs the TLS provider the binaries install.
pub fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A repository name no other test run uses.
pub fn unique_repo(test: &str) -> Repository {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("vmr-adapters/{test}-{nanos:x}-{}", std::process::id())
        .parse()
        .expect("valid repository name")
}

/// `len` bytes of deterministic noise (xorshift), different per `seed`.
pub fn noise(len: usize, seed: u64) -> Bytes {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// A blob as a store stream, cut in uneven pieces like a real reader.
pub fn as_stream(bytes: &Bytes) -> ByteStream {
    let pieces: Vec<_> = (0..bytes.len())
        .step_by(100_003)
        .map(|at| Ok(bytes.slice(at..(at + 100_003).min(bytes.len()))))
        .collect();
    futures::stream::iter(pieces).boxed()
}

/// A blob in memory as a re-openable upload source; remembers the offsets
/// it was opened at. With `fail_at_end`, its stream fails after the last
/// byte, as a verifying read of a corrupt blob does.
pub struct MemorySource {
    pub bytes: Bytes,
    pub fail_at_end: bool,
    pub opened: std::sync::Mutex<Vec<u64>>,
}

impl MemorySource {
    pub fn new(bytes: &Bytes) -> Arc<Self> {
        Arc::new(Self {
            bytes: bytes.clone(),
            fail_at_end: false,
            opened: std::sync::Mutex::new(Vec::new()),
        })
    }

    pub fn opened(&self) -> Vec<u64> {
        self.opened.lock().expect("test source").clone()
    }
}

#[async_trait::async_trait]
impl BlobSource for MemorySource {
    async fn open(&self, offset: u64) -> Result<ByteStream, StoreError> {
        self.opened.lock().expect("test source").push(offset);
        let rest = self.bytes.slice(usize::try_from(offset).expect("offset")..);
        let stream = as_stream(&rest);
        if !self.fail_at_end {
            return Ok(stream);
        }
        let digest = Digest::of(&self.bytes);
        let failure = StoreError::Corrupt {
            actual: digest.clone(),
            digest,
        };
        Ok(stream
            .chain(futures::stream::once(async { Err(failure) }))
            .boxed())
    }
}

/// Collects a download.
pub async fn collect(mut stream: RegistryByteStream) -> Bytes {
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.expect("download chunk"));
    }
    Bytes::from(out)
}

/// A vmr image manifest naming `config` and `disk` blobs.
pub fn manifest(config: (&Digest, usize), disk: (&Digest, usize)) -> Bytes {
    let json = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.vmregistry.vm.v1",
        "config": {
            "mediaType": "application/vnd.vmregistry.vm.config.v1+json",
            "digest": config.0.to_string(),
            "size": config.1,
        },
        "layers": [{
            "mediaType": "application/vnd.vmregistry.disk.v1.qcow2",
            "digest": disk.0.to_string(),
            "size": disk.1,
            "annotations": {"org.opencontainers.image.title": "disk.qcow2"},
        }],
    });
    Bytes::from(serde_json::to_vec(&json).expect("json"))
}

/// Fast retries, so tests of failures stay quick.
pub fn quick_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        first_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(100),
        max_retry_after: Duration::from_secs(2),
    }
}

pub fn connector(options: RegistryOptions) -> OciRegistryConnector {
    init();
    OciRegistryConnector::new(options).expect("registry connector")
}

pub fn connect(base_url: &str, credential: Option<Credential>) -> Arc<dyn RegistryClient> {
    connect_with(RegistryOptions::default(), base_url, credential)
}

pub fn connect_with(
    options: RegistryOptions,
    base_url: &str,
    credential: Option<Credential>,
) -> Arc<dyn RegistryClient> {
    connector(options)
        .connect(&RegistryTarget {
            base_url: base_url.to_owned(),
            insecure: false,
            credential,
        })
        .expect("connect")
}

pub fn basic(username: &str, password: &str) -> Option<Credential> {
    Some(Credential::Basic {
        username: username.to_owned(),
        password: password.to_owned(),
    })
}

/// Uploads `bytes` to `repository`; returns its digest.
pub async fn push_blob(
    client: &dyn RegistryClient,
    repository: &Repository,
    bytes: &Bytes,
) -> Digest {
    let digest = Digest::of(bytes);
    client
        .upload_blob(
            repository,
            &digest,
            bytes.len() as u64,
            as_stream(bytes),
            None,
        )
        .await
        .expect("upload");
    digest
}
