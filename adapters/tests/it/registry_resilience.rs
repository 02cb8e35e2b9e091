//! How the registry client copes with trouble: a fault-injecting proxy in
//! front of the real anonymous registry (`VMR_TEST_REGISTRY`) fails chosen
//! requests with 503 or 429, before or after the registry saw them; and a
//! small token-auth stand-in counts token fetches to show tokens are cached
//! per scope until they expire.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::registry_support::*;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use vmr_adapters::registry::RegistryOptions;
use vmr_domain::image::{Digest, MANIFEST_MEDIA_TYPE};
use vmr_ports::{ManifestReference, RegistryError};

/// What the proxy does to the n-th request matching a method and a path part.
#[derive(Clone, Copy)]
enum Fault {
    /// 503 without forwarding: the registry never sees the request.
    Before,
    /// Forward, then answer 503: the registry did the work, the client
    /// does not know.
    After,
    /// 429 with `Retry-After: <seconds>`, without forwarding.
    Throttle(u64),
}

struct Rule {
    method: Method,
    path_part: &'static str,
    /// Which matching requests (1-based) get the fault.
    hits: Vec<usize>,
    fault: Fault,
}

struct Proxy {
    upstream: String,
    origin: Mutex<String>,
    rules: Vec<Rule>,
    seen: Mutex<Vec<(Method, String)>>,
    http: reqwest::Client,
}

impl Proxy {
    fn count(&self, method: &Method, path_part: &str) -> usize {
        let seen = self.seen.lock().expect("test proxy");
        seen.iter()
            .filter(|(m, p)| m == method && p.contains(path_part))
            .count()
    }
}

async fn forward(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let method = request.method().clone();
    let path_and_query = request
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let fault = {
        let mut seen = proxy.seen.lock().expect("test proxy");
        seen.push((method.clone(), path_and_query.clone()));
        proxy.rules.iter().find_map(|rule| {
            if rule.method != method || !path_and_query.contains(rule.path_part) {
                return None;
            }
            let nth = seen
                .iter()
                .filter(|(m, p)| *m == rule.method && p.contains(rule.path_part))
                .count();
            rule.hits.contains(&nth).then_some(rule.fault)
        })
    };
    match fault {
        Some(Fault::Before) => {
            return (StatusCode::SERVICE_UNAVAILABLE, "injected").into_response();
        }
        Some(Fault::Throttle(seconds)) => {
            let mut response = (StatusCode::TOO_MANY_REQUESTS, "slow down").into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            return response;
        }
        _ => {}
    }
    let mut headers = request.headers().clone();
    headers.remove(header::HOST);
    let body = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .expect("test proxy");
    let upstream = proxy
        .http
        .request(method, format!("http://{}{path_and_query}", proxy.upstream))
        .headers(headers)
        .body(body)
        .send()
        .await
        .expect("test proxy");
    if matches!(fault, Some(Fault::After)) {
        return (StatusCode::SERVICE_UNAVAILABLE, "injected after forwarding").into_response();
    }
    let status = upstream.status();
    let mut headers = HeaderMap::new();
    let origin = proxy.origin.lock().expect("test proxy").clone();
    for (name, value) in upstream.headers() {
        if name == header::TRANSFER_ENCODING || name == header::CONNECTION {
            continue;
        }
        let value = if name == header::LOCATION {
            let rewritten = value
                .to_str()
                .expect("test proxy")
                .replace(&format!("http://{}", proxy.upstream), &origin);
            HeaderValue::from_str(&rewritten).expect("test proxy")
        } else {
            value.clone()
        };
        headers.append(name.clone(), value);
    }
    let body = upstream.bytes().await.expect("test proxy");
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Starts a proxy to the anonymous registry with `rules`; returns it and its address.
async fn proxy(upstream: &str, rules: Vec<Rule>) -> (Arc<Proxy>, SocketAddr) {
    init();
    let state = Arc::new(Proxy {
        upstream: upstream.to_owned(),
        origin: Mutex::new(String::new()),
        rules,
        seen: Mutex::new(Vec::new()),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("test proxy"),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("test proxy");
    let addr = listener.local_addr().expect("test proxy");
    *state.origin.lock().expect("test proxy") = format!("http://{addr}");
    let app = axum::Router::new()
        .fallback(forward)
        .with_state(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.expect("test proxy") });
    (state, addr)
}

fn chunked_options() -> RegistryOptions {
    RegistryOptions {
        monolithic_limit: 64 * 1024,
        chunk_size: 256 * 1024,
        streamed_put_limit: 512 * 1024,
        retry: quick_retry(),
    }
}

/// Fault `hits` (1-based) of the requests with `method` whose path holds `path_part`.
fn rule(method: Method, path_part: &'static str, hits: &[usize], fault: Fault) -> Rule {
    Rule {
        method,
        path_part,
        hits: hits.to_vec(),
        fault,
    }
}

/// The anonymous registry behind a proxy that applies `rules`, and a client
/// of the proxy with [`chunked_options`].
struct Faulty {
    /// The registry itself, past the proxy.
    registry: String,
    proxy: Arc<Proxy>,
    client: Arc<dyn vmr_ports::RegistryClient>,
}

/// `None` when the registry tests are skipped.
async fn behind_proxy(rules: Vec<Rule>) -> Option<Faulty> {
    let registry = service_env("VMR_TEST_REGISTRY")?;
    let (proxy, addr) = proxy(&registry, rules).await;
    let client = connect_with(chunked_options(), &addr.to_string(), None);
    Some(Faulty {
        registry,
        proxy,
        client,
    })
}

#[tokio::test]
async fn a_chunk_the_registry_never_saw_is_resent() {
    let rules = vec![rule(Method::PATCH, "/blobs/uploads/", &[2], Fault::Before)];
    let Some(Faulty {
        registry,
        proxy,
        client,
    }) = behind_proxy(rules).await
    else {
        return;
    };
    let repo = unique_repo("resend");
    let blob = noise(3 * 256 * 1024, 11);
    push_blob(client.as_ref(), &repo, &blob).await;
    // Three chunks, the second sent twice, and one status query in between.
    assert_eq!(proxy.count(&Method::PATCH, "/blobs/uploads/"), 4);
    assert_eq!(proxy.count(&Method::GET, "/blobs/uploads/"), 1);
    assert_registry_holds(&registry, &repo, &blob).await;
}

#[tokio::test]
async fn a_chunk_whose_answer_is_lost_fails_cleanly() {
    let rules = vec![rule(Method::PATCH, "/blobs/uploads/", &[2], Fault::After)];
    let Some(Faulty { client, .. }) = behind_proxy(rules).await else {
        return;
    };
    let repo = unique_repo("lostchunk");
    let blob = noise(3 * 256 * 1024, 12);
    let digest = Digest::of(&blob);
    // distribution 2.8 forgets a session's old URL once a chunk lands, so
    // the client cannot learn how far it got: the upload fails, visibly,
    // and nothing half-written appears.
    let err = client
        .upload_blob(&repo, &digest, blob.len() as u64, as_stream(&blob), None)
        .await
        .expect_err("the session is lost");
    assert!(
        matches!(&err, RegistryError::Unavailable { message, .. } if message.contains("push again")),
        "{err}"
    );
    assert_eq!(client.blob_exists(&repo, &digest).await.unwrap(), None);
}

#[tokio::test]
async fn a_completion_whose_answer_is_lost_is_checked_with_head() {
    let rules = vec![rule(Method::PUT, "digest=", &[1], Fault::After)];
    let Some(Faulty { proxy, client, .. }) = behind_proxy(rules).await else {
        return;
    };
    let repo = unique_repo("lostput");
    let blob = noise(10_000, 13);
    let digest = push_blob(client.as_ref(), &repo, &blob).await;
    assert_eq!(
        proxy.count(&Method::PUT, "digest="),
        1,
        "the PUT is not resent"
    );
    assert_eq!(
        client.blob_exists(&repo, &digest).await.unwrap(),
        Some(10_000)
    );
}

#[tokio::test]
async fn a_completion_the_registry_never_saw_is_resent() {
    let rules = vec![rule(Method::PUT, "digest=", &[1], Fault::Before)];
    let Some(Faulty {
        registry,
        proxy,
        client,
    }) = behind_proxy(rules).await
    else {
        return;
    };
    let repo = unique_repo("resendput");
    let blob = noise(10_000, 15);
    push_blob(client.as_ref(), &repo, &blob).await;
    assert_eq!(
        proxy.count(&Method::PUT, "digest="),
        2,
        "the PUT is resent once"
    );
    assert_eq!(
        proxy.count(&Method::HEAD, "/blobs/sha256:"),
        1,
        "after a HEAD"
    );
    assert_registry_holds(&registry, &repo, &blob).await;
}

/// Reads the blob back from the registry itself, past the proxy.
async fn assert_registry_holds(registry: &str, repo: &vmr_domain::image::Repository, blob: &[u8]) {
    let direct = connect(registry, None);
    let stream = direct
        .get_blob(repo, &Digest::of(blob), 0)
        .await
        .expect("the registry has the blob")
        .stream;
    assert_eq!(collect(stream).await, blob);
}

/// Pushes `blob` from a memory source through `client`; returns the source.
async fn push_from(
    client: &dyn vmr_ports::RegistryClient,
    repo: &vmr_domain::image::Repository,
    blob: &bytes::Bytes,
) -> Arc<MemorySource> {
    let source = MemorySource::new(blob);
    client
        .upload_blob_from(
            repo,
            &Digest::of(blob),
            blob.len() as u64,
            source.clone(),
            None,
        )
        .await
        .expect("streamed upload");
    source
}

#[tokio::test]
async fn a_streamed_put_the_registry_never_saw_is_resent_from_a_new_session() {
    let rules = vec![rule(Method::PUT, "digest=", &[1], Fault::Before)];
    let Some(Faulty {
        registry,
        proxy,
        client,
    }) = behind_proxy(rules).await
    else {
        return;
    };
    // 300 KiB: over the monolithic limit, under the streamed-PUT limit.
    let repo = unique_repo("streamput");
    let blob = noise(300 * 1024, 16);
    let source = push_from(client.as_ref(), &repo, &blob).await;
    assert_eq!(source.opened(), vec![0, 0], "the source is read again");
    assert_eq!(proxy.count(&Method::POST, "/blobs/uploads/"), 2);
    assert_eq!(proxy.count(&Method::PUT, "digest="), 2);
    assert_eq!(proxy.count(&Method::PATCH, "/blobs/uploads/"), 0);
    assert_registry_holds(&registry, &repo, &blob).await;
}

#[tokio::test]
async fn a_streamed_put_whose_answer_is_lost_is_checked_with_head() {
    let rules = vec![rule(Method::PUT, "digest=", &[1], Fault::After)];
    let Some(Faulty { proxy, client, .. }) = behind_proxy(rules).await else {
        return;
    };
    let repo = unique_repo("streamlost");
    let blob = noise(300 * 1024, 17);
    let source = push_from(client.as_ref(), &repo, &blob).await;
    assert_eq!(source.opened(), vec![0], "not sent again");
    assert_eq!(proxy.count(&Method::PUT, "digest="), 1);
    assert_eq!(
        client.blob_exists(&repo, &Digest::of(&blob)).await.unwrap(),
        Some(blob.len() as u64)
    );
}

#[tokio::test]
async fn a_streamed_patch_the_registry_never_saw_is_resent_from_where_it_stopped() {
    let rules = vec![rule(Method::PATCH, "/blobs/uploads/", &[1], Fault::Before)];
    let Some(Faulty {
        registry,
        proxy,
        client,
    }) = behind_proxy(rules).await
    else {
        return;
    };
    // 700 KiB: over the streamed-PUT limit, so one streamed PATCH.
    let repo = unique_repo("streampatch");
    let blob = noise(700 * 1024, 18);
    let source = push_from(client.as_ref(), &repo, &blob).await;
    // The registry stored nothing of the first PATCH: resent from 0, after
    // asking; one session throughout.
    assert_eq!(source.opened(), vec![0, 0]);
    assert_eq!(proxy.count(&Method::POST, "/blobs/uploads/"), 1);
    assert_eq!(proxy.count(&Method::PATCH, "/blobs/uploads/"), 2);
    assert_eq!(proxy.count(&Method::GET, "/blobs/uploads/"), 1);
    assert_eq!(proxy.count(&Method::PUT, "digest="), 1);
    assert_registry_holds(&registry, &repo, &blob).await;
}

#[tokio::test]
async fn transient_answers_are_retried_then_reported() {
    let rules = vec![
        rule(Method::GET, "/manifests/", &[1, 2], Fault::Before),
        rule(Method::GET, "/tags/list", &[1, 2, 3], Fault::Before),
    ];
    let Some(Faulty { proxy, client, .. }) = behind_proxy(rules).await else {
        return;
    };
    let repo = unique_repo("transient");
    let config = bytes::Bytes::from_static(b"{}");
    let disk = noise(1000, 14);
    push_blob(client.as_ref(), &repo, &config).await;
    push_blob(client.as_ref(), &repo, &disk).await;
    let manifest = manifest(
        (&Digest::of(&config), config.len()),
        (&Digest::of(&disk), disk.len()),
    );
    let tag = ManifestReference::Tag("v1".parse().unwrap());
    client
        .put_manifest(&repo, &tag, manifest.clone(), MANIFEST_MEDIA_TYPE)
        .await
        .unwrap();

    let got = client
        .get_manifest(&repo, &tag)
        .await
        .expect("third try works");
    assert_eq!(got.bytes, manifest);
    assert_eq!(proxy.count(&Method::GET, "/manifests/"), 3);

    let err = client
        .list_tags(&repo)
        .await
        .expect_err("three failures use up the tries");
    assert!(
        matches!(&err, RegistryError::Unavailable { message, .. } if message.contains("503")),
        "{err}"
    );
    assert_eq!(proxy.count(&Method::GET, "/tags/list"), 3);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let rules = vec![rule(Method::GET, "/v2/", &[1], Fault::Throttle(1))];
    let Some(Faulty { proxy, client, .. }) = behind_proxy(rules).await else {
        return;
    };
    let started = Instant::now();
    client.ping().await.expect("after the pause");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(proxy.count(&Method::GET, "/v2/"), 2);
}

// ---- token caching, against a stand-in registry that counts token fetches

struct TokenRegistry {
    origin: String,
    fetches: AtomicUsize,
    expires_in: u64,
}

async fn token_registry_answer(
    State(state): State<Arc<TokenRegistry>>,
    request: Request,
) -> Response {
    let path = request.uri().path().to_owned();
    if path == "/token" {
        let n = state.fetches.fetch_add(1, Ordering::SeqCst) + 1;
        let body =
            serde_json::json!({ "token": format!("good-{n}"), "expires_in": state.expires_in });
        return axum::Json(body).into_response();
    }
    let authorized = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer good-"));
    if !authorized {
        let challenge = format!(
            r#"Bearer realm="{}/token",service="stand-in""#,
            state.origin
        );
        let mut response = (StatusCode::UNAUTHORIZED, "{}").into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_str(&challenge).expect("token stand-in"),
        );
        return response;
    }
    if path == "/v2/" {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    }
    .into_response()
}

async fn token_registry(expires_in: u64) -> Arc<TokenRegistry> {
    init();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("token stand-in");
    let addr = listener.local_addr().expect("token stand-in");
    let state = Arc::new(TokenRegistry {
        origin: format!("http://{addr}"),
        fetches: AtomicUsize::new(0),
        expires_in,
    });
    let app = axum::Router::new()
        .fallback(token_registry_answer)
        .with_state(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.expect("token stand-in") });
    state
}

#[tokio::test]
async fn tokens_are_cached_per_scope_until_they_expire() {
    let stand_in = token_registry(300).await;
    let client = connect(&stand_in.origin, basic("someone", "pw"));
    for _ in 0..3 {
        client.ping().await.expect("ping");
    }
    assert_eq!(
        stand_in.fetches.load(Ordering::SeqCst),
        1,
        "one token for /v2/"
    );
    let repo = unique_repo("cache");
    let digest = Digest::of(b"x");
    for _ in 0..3 {
        assert_eq!(client.blob_exists(&repo, &digest).await.unwrap(), None);
    }
    assert_eq!(
        stand_in.fetches.load(Ordering::SeqCst),
        2,
        "one more for the pull scope"
    );

    let short = token_registry(1).await;
    let client = connect(&short.origin, basic("someone", "pw"));
    client.ping().await.unwrap();
    client.ping().await.unwrap();
    assert_eq!(short.fetches.load(Ordering::SeqCst), 1);
    // The token's second passes on the clock the cache reads (tokio's),
    // at once instead of being waited out.
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(1)).await;
    tokio::time::resume();
    client.ping().await.unwrap();
    assert_eq!(
        short.fetches.load(Ordering::SeqCst),
        2,
        "an expired token is renewed"
    );
}
