//! A hostile OCI registry: it serves one small, valid vmr image
//! (`vm/hostile:1`) except for the one thing its [`Hostility`] lies about —
//! a blob whose bytes do not hash to its digest, a 100 MB or endless
//! manifest, a blob longer than its descriptor says, absurd sizes or a
//! malformed digest in the manifest. It runs on a thread of its own (its own
//! runtime), so tests may block on the CLI while it answers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use vmr_domain::image::{Descriptor, Digest, DiskFormat, Manifest};
use vmr_domain::vmfile::VmFile;

/// The repository and tag the registry serves.
pub const REPOSITORY: &str = "vm/hostile";
pub const TAG: &str = "1";

/// The disk's size: small, so a pull that goes through is quick.
const DISK_BYTES: usize = 64 * 1024;
/// The size of the huge manifest.
pub const HUGE_MANIFEST_BYTES: u64 = 100 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

/// What the registry lies about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hostility {
    /// Nothing: a well-behaved registry (the control case).
    None,
    /// The disk blob's bytes (right length) hash to another digest.
    BlobDigestMismatch,
    /// The manifest is 100 MB of JSON whitespace, with its Content-Length.
    HugeManifest,
    /// The manifest is 100 MB, chunked: no Content-Length warns of it.
    HugeChunkedManifest,
    /// The manifest never ends.
    EndlessManifest,
    /// The disk blob's Content-Length and body are longer than the
    /// manifest's descriptor says.
    BlobLongerThanDescriptor,
    /// The disk layer's size is 2^63 - 1 bytes (a valid int64).
    AbsurdLayerSize,
    /// The disk layer's size does not fit OCI's int64.
    LayerSizeBeyondInt64,
    /// The config's size is 2^62 bytes.
    AbsurdConfigSize,
    /// The disk layer's digest is not `sha256:` and 64 hex digits.
    MalformedLayerDigest,
    /// The disk layer's digest names another algorithm.
    UnknownDigestAlgorithm,
    /// `Docker-Content-Digest` of the manifest is malformed.
    MalformedManifestDigestHeader,
}

struct Image {
    hostility: Hostility,
    /// The manifest as served (JSON text).
    manifest: Vec<u8>,
    config: Vec<u8>,
    config_digest: Digest,
    disk: Vec<u8>,
    disk_digest: Digest,
    requests: AtomicUsize,
}

/// A running hostile registry on a loopback port.
pub struct HostileRegistry {
    addr: SocketAddr,
    image: Arc<Image>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for HostileRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostileRegistry")
            .field("addr", &self.addr)
            .field("hostility", &self.image.hostility)
            .finish_non_exhaustive()
    }
}

impl HostileRegistry {
    /// Starts a registry lying about `hostility`.
    pub fn start(hostility: Hostility) -> Self {
        let image = Arc::new(build_image(hostility));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("local addr");
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let router = Router::new()
            .route("/v2/", get(|| async { axum::Json(serde_json::json!({})) }))
            .route("/v2/{*rest}", get(serve))
            .with_state(image.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let _ = axum::serve(listener, router)
                    .with_graceful_shutdown(async {
                        let _ = stop.await;
                    })
                    .await;
            });
        });
        Self {
            addr,
            image,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The reference of the image it serves.
    pub fn reference(&self) -> String {
        format!("{}/{REPOSITORY}:{TAG}", self.host())
    }

    /// The digest of the disk layer (the real one of the good bytes).
    pub fn disk_digest(&self) -> &Digest {
        &self.image.disk_digest
    }

    /// The digest of the config blob.
    pub fn config_digest(&self) -> &Digest {
        &self.image.config_digest
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.image.requests.load(Ordering::SeqCst)
    }
}

impl Drop for HostileRegistry {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        // An endless body keeps a connection open until its client goes;
        // the thread is not waited for.
        drop(self.thread.take());
    }
}

fn build_image(hostility: Hostility) -> Image {
    let vmfile = VmFile::parse(
        "apiVersion: vmregistry.io/v1alpha1\nmetadata:\n  name: vm/hostile\nspec:\n  diskImage: disk.raw\n  diskFormat: raw\n  resources:\n    cpu: 1\n    memory: 256MiB\n",
    )
    .expect("the hostile registry's VMFile is valid");
    let disk: Vec<u8> = (0..DISK_BYTES).map(|i| (i % 251) as u8).collect();
    let disk_digest = Digest::of(&disk);
    let config = vmfile.image_config(disk.len() as u64);
    let config_bytes = config.to_json_bytes();
    let config_digest = Digest::of(&config_bytes);
    let manifest = Manifest::for_image(
        &config,
        &config_bytes,
        Descriptor::disk(
            DiskFormat::Raw,
            disk_digest.clone(),
            disk.len() as u64,
            "disk.raw",
        ),
        "2026-01-01T00:00:00Z",
    );
    let mut value: serde_json::Value =
        serde_json::from_slice(&manifest.to_json_bytes()).expect("manifest JSON");
    match hostility {
        Hostility::AbsurdLayerSize => value["layers"][0]["size"] = i64::MAX.into(),
        Hostility::LayerSizeBeyondInt64 => value["layers"][0]["size"] = u64::MAX.into(),
        Hostility::AbsurdConfigSize => value["config"]["size"] = (1_u64 << 62).into(),
        Hostility::MalformedLayerDigest => {
            value["layers"][0]["digest"] = "sha256:../../../../etc/passwd".into();
        }
        Hostility::UnknownDigestAlgorithm => {
            value["layers"][0]["digest"] = format!("md5:{}", &disk_digest.hex()[..32]).into();
        }
        _ => {}
    }
    Image {
        hostility,
        manifest: serde_json::to_vec(&value).expect("manifest JSON"),
        config: config_bytes,
        config_digest,
        disk,
        disk_digest,
        requests: AtomicUsize::new(0),
    }
}

async fn serve(State(image): State<Arc<Image>>, Path(rest): Path<String>) -> Response {
    image.requests.fetch_add(1, Ordering::SeqCst);
    let Some((repository, _)) = rest
        .split_once("/manifests/")
        .or_else(|| rest.split_once("/blobs/"))
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if repository != REPOSITORY {
        return StatusCode::NOT_FOUND.into_response();
    }
    if let Some((_, reference)) = rest.split_once("/manifests/") {
        return manifest(&image, reference);
    }
    match rest.split_once("/blobs/") {
        Some((_, digest)) => blob(&image, digest),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn manifest(image: &Image, reference: &str) -> Response {
    let digest = Digest::of(&image.manifest);
    if reference != TAG && reference != digest.to_string() {
        return StatusCode::NOT_FOUND.into_response();
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.oci.image.manifest.v1+json"),
    );
    let digest_header = match image.hostility {
        Hostility::MalformedManifestDigestHeader => "sha256:not-a-digest".to_owned(),
        _ => digest.to_string(),
    };
    headers.insert(
        "docker-content-digest",
        HeaderValue::from_str(&digest_header).expect("header value"),
    );
    match image.hostility {
        Hostility::HugeManifest => {
            // `{` then whitespace: valid JSON so far, and never complete.
            headers.insert(
                header::CONTENT_LENGTH,
                HeaderValue::from(HUGE_MANIFEST_BYTES),
            );
            (
                headers,
                Body::from_stream(filler(Some(HUGE_MANIFEST_BYTES / CHUNK as u64))),
            )
                .into_response()
        }
        Hostility::HugeChunkedManifest => (
            headers,
            Body::from_stream(filler(Some(HUGE_MANIFEST_BYTES / CHUNK as u64))),
        )
            .into_response(),
        Hostility::EndlessManifest => (headers, Body::from_stream(filler(None))).into_response(),
        _ => (headers, image.manifest.clone()).into_response(),
    }
}

/// `{` followed by spaces, `chunks` chunks of [`CHUNK`] bytes (or without end).
fn filler(
    chunks: Option<u64>,
) -> impl tonic::codegen::tokio_stream::Stream<Item = Result<Bytes, Infallible>> + use<> {
    let spaces = Bytes::from(vec![b' '; CHUNK]);
    let mut opening = vec![b' '; CHUNK];
    opening[0] = b'{';
    let rest = std::iter::repeat(spaces);
    let chunks: Box<dyn Iterator<Item = Bytes> + Send> = match chunks {
        Some(n) => Box::new(std::iter::once(Bytes::from(opening)).chain(rest.take(n as usize - 1))),
        None => Box::new(std::iter::once(Bytes::from(opening)).chain(rest)),
    };
    tonic::codegen::tokio_stream::iter(chunks.map(Ok))
}

fn blob(image: &Image, digest: &str) -> Response {
    if digest == image.config_digest.to_string() {
        return (StatusCode::OK, image.config.clone()).into_response();
    }
    if digest != image.disk_digest.to_string() {
        return (
            StatusCode::NOT_FOUND,
            r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}"#,
        )
            .into_response();
    }
    let mut body = image.disk.clone();
    match image.hostility {
        // Same length, other bytes.
        Hostility::BlobDigestMismatch => body[DISK_BYTES / 2] ^= 0xff,
        Hostility::BlobLongerThanDescriptor => body.extend_from_slice(&[0_u8; 4096]),
        _ => {}
    }
    (StatusCode::OK, body).into_response()
}
