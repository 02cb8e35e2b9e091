//! HTTP plumbing shared by the registry and auth-server clients: which base
//! URLs are acceptable (plain http only for loopback hosts or an insecure
//! context), how the reqwest client is built (rustls with the ring provider,
//! timeouts, no automatic decompression), and the bounded back-off for
//! 429/5xx answers and dropped connections.

use std::net::IpAddr;
use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{StatusCode, Url};

use super::trust::TrustedRoots;

/// Why a base URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("`{url}` is not usable: {reason}")]
    Invalid { url: String, reason: String },
    #[error("plain http:// to {host} needs a loopback host or an insecure context")]
    InsecureRefused { host: String },
}

/// Building the HTTP client failed (no TLS backend, bad settings).
#[derive(Debug, thiserror::Error)]
#[error("building the HTTP client failed: {0}")]
pub struct ClientBuildError(#[source] reqwest::Error);

/// A validated base URL: http(s), a host, no credentials, no query; the
/// path never ends in `/` so `"{base}/v2/"` style joins stay right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    url: Url,
    /// `host[:port]`, for messages.
    display: String,
}

impl Endpoint {
    /// Parses `raw` (`https://host[:port][/prefix]`, `http://...`, or a bare
    /// `host[:port]` meaning https, or http for a loopback host).
    pub fn parse(raw: &str, insecure: bool) -> Result<Self, EndpointError> {
        let invalid = |reason: &str| EndpointError::Invalid {
            url: raw.to_owned(),
            reason: reason.to_owned(),
        };
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(invalid("the URL is empty"));
        }
        let with_scheme = if trimmed.contains("://") {
            trimmed.to_owned()
        } else {
            let host = trimmed.split('/').next().unwrap_or_default();
            let scheme = if host_is_loopback(strip_port(host)) {
                "http"
            } else {
                "https"
            };
            format!("{scheme}://{trimmed}")
        };
        let mut url = Url::parse(&with_scheme).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("only http:// and https:// are supported"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                "credentials do not belong in the URL; use vmr login",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("a query or fragment is not allowed"));
        }
        let Some(host) = url.host_str().map(str::to_owned) else {
            return Err(invalid("the URL has no host"));
        };
        if url.scheme() == "http" && !insecure && !host_is_loopback(&host) {
            return Err(EndpointError::InsecureRefused { host });
        }
        let path = url.path().trim_end_matches('/').to_owned();
        url.set_path(&path);
        let display = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host,
        };
        Ok(Self { url, display })
    }

    /// `host[:port]`.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// The base URL with `path` (which starts with `/`) appended.
    pub fn join(&self, path: &str) -> Url {
        let mut url = self.url.clone();
        let joined = format!("{}{path}", self.url.path().trim_end_matches('/'));
        url.set_path(&joined);
        url
    }

    /// Whether `url` is on this endpoint's origin (scheme, host and port):
    /// only then does it get the user's credentials.
    pub fn same_origin(&self, url: &Url) -> bool {
        url.scheme() == self.url.scheme()
            && url.host_str() == self.url.host_str()
            && url.port_or_known_default() == self.url.port_or_known_default()
    }
}

/// Whether a URL may be fetched under the http-only-for-loopback rule (used
/// for token realms the registry names).
pub fn url_allowed(url: &Url, insecure: bool) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => insecure || url.host_str().is_some_and(host_is_loopback),
        _ => false,
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split(']').next().map_or(host, |h| &host[..=h.len()]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// `localhost`, `*.localhost`, 127.0.0.0/8 and ::1.
pub fn host_is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return ip.is_loopback();
    }
    let lower = bare.to_ascii_lowercase();
    lower == "localhost" || lower.ends_with(".localhost")
}

/// Builds a reqwest client. Installs rustls' ring provider as the process
/// default if nothing is installed yet, so a library user cannot hit
/// reqwest's no-provider panic. `insecure` skips certificate verification;
/// otherwise the system's roots and `roots` are trusted.
pub fn build_client(
    insecure: bool,
    roots: &TrustedRoots,
) -> Result<reqwest::Client, ClientBuildError> {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing the race to another installer is fine: some provider is set.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let mut builder = reqwest::Client::builder();
    if !insecure && !roots.is_empty() {
        builder = builder.tls_certs_merge(roots.certificates());
    }
    builder
        .user_agent(concat!("vmr/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        // Per read, not per request: a multi-GiB blob may take long, a stall may not.
        .read_timeout(Duration::from_secs(120))
        .danger_accept_invalid_certs(insecure)
        .build()
        .map_err(ClientBuildError)
}

/// How often and how patiently a request is retried after a 429, a 5xx or
/// a dropped connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
    pub attempts: u32,
    /// Delay before the first retry; it doubles up to `max_delay`.
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// A `Retry-After` up to this long is honoured; a longer one gives up.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    /// 5 tries: waits of 200 ms, 400 ms, 800 ms, 1.6 s.
    fn default() -> Self {
        Self {
            attempts: 5,
            first_delay: Duration::from_millis(200),
            max_delay: Duration::from_millis(1600),
            max_retry_after: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        Self {
            attempts: 1,
            ..Self::default()
        }
    }

    /// The wait before retry number `retry` (1-based), or `None` when the
    /// tries are used up or the server asked for a longer pause than we wait.
    pub fn delay(&self, retry: u32, headers: Option<&HeaderMap>) -> Option<Duration> {
        if retry >= self.attempts {
            return None;
        }
        if let Some(after) = headers.and_then(retry_after) {
            return (after <= self.max_retry_after).then_some(after);
        }
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        Some(self.first_delay.saturating_mul(factor).min(self.max_delay))
    }
}

/// `Retry-After` in its seconds form (the HTTP-date form is treated as absent).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Sends the request `build` makes, again after a transient failure
/// (`policy`), and returns the last answer, whatever its status, or the last
/// transport error.
pub async fn send_retrying<F>(
    policy: &RetryPolicy,
    mut build: F,
) -> Result<reqwest::Response, reqwest::Error>
where
    F: FnMut() -> reqwest::RequestBuilder,
{
    let mut retry = 0;
    loop {
        retry += 1;
        match build().send().await {
            Ok(response) if is_transient_status(response.status()) => {
                match policy.delay(retry, Some(response.headers())) {
                    Some(delay) => {
                        tracing::debug!(status = %response.status(), ?delay, "transient answer, retrying");
                        tokio::time::sleep(delay).await;
                    }
                    None => return Ok(response),
                }
            }
            Ok(response) => return Ok(response),
            Err(error) if is_transient_error(&error) => match policy.delay(retry, None) {
                Some(delay) => {
                    tracing::debug!(error = %describe_error(&error), ?delay, "transport error, retrying");
                    tokio::time::sleep(delay).await;
                }
                None => return Err(error),
            },
            Err(error) => return Err(error),
        }
    }
}

/// Why [`read_limited`] gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitedReadError {
    /// The body (or its announced Content-Length) is larger than the limit;
    /// nothing past the limit was read.
    TooLarge { limit: usize },
    /// The body broke off.
    Broken(String),
}

impl std::fmt::Display for LimitedReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge { limit } => write!(f, "the answer is larger than {limit} bytes"),
            Self::Broken(message) => f.write_str(message),
        }
    }
}

/// Reads a whole body, refusing one larger than `limit`: at once when its
/// Content-Length says so, else as soon as more than `limit` bytes came (a
/// chunked body may be endless). Never holds more than `limit` bytes.
pub async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, LimitedReadError> {
    if response
        .content_length()
        .is_some_and(|announced| announced > limit as u64)
    {
        return Err(LimitedReadError::TooLarge { limit });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| LimitedReadError::Broken(describe_error(&e)))?
    {
        if body.len() + chunk.len() > limit {
            return Err(LimitedReadError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// [`read_limited`] with its error as text.
pub async fn read_bounded(response: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    read_limited(response, limit)
        .await
        .map_err(|e| e.to_string())
}

/// Statuses worth another try.
pub fn is_transient_status(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || matches!(
            status,
            StatusCode::INTERNAL_SERVER_ERROR
                | StatusCode::BAD_GATEWAY
                | StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT
        )
}

/// Transport failures worth another try (refused or dropped connections,
/// timeouts), as opposed to a malformed request.
pub fn is_transient_error(error: &reqwest::Error) -> bool {
    // A refused certificate stays refused: trying again only delays the answer.
    !is_certificate_error(error)
        && (error.is_connect() || error.is_timeout() || error.is_request() || error.is_body())
}

/// Whether the TLS handshake failed on the server's certificate (unknown
/// issuer, wrong host name, expired...), rather than on the connection.
pub fn is_certificate_error(error: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if matches!(
            rustls_error(cause),
            Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented)
        ) {
            return true;
        }
        source = cause.source();
    }
    false
}

/// The rustls error in `cause`, unwrapping the io::Errors it reaches
/// reqwest in (nested twice; their source() skips the wrapped error).
fn rustls_error<'a>(mut cause: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    loop {
        if let Some(tls) = cause.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        let inner = cause.downcast_ref::<std::io::Error>()?.get_ref()?;
        cause = inner;
    }
}

/// A transport error as one sentence, with its causes (reqwest's own
/// message alone is often just "error sending request").
pub fn describe_error(error: &reqwest::Error) -> String {
    let mut text = if is_certificate_error(error) {
        "its TLS certificate is refused (trust its CA with vmrd --registry-ca-file or the \
         system store, or use a context created with --insecure)"
            .to_owned()
    } else if error.is_connect() {
        "cannot connect".to_owned()
    } else if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_body() || error.is_decode() {
        "the response body broke off".to_owned()
    } else {
        "the request failed".to_owned()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_hosts_get_a_scheme() {
        let local = Endpoint::parse("127.0.0.1:5000", false).unwrap();
        assert_eq!(local.join("/v2/").as_str(), "http://127.0.0.1:5000/v2/");
        assert_eq!(local.display(), "127.0.0.1:5000");
        let remote = Endpoint::parse("registry.example.com", false).unwrap();
        assert_eq!(
            remote.join("/v2/").as_str(),
            "https://registry.example.com/v2/"
        );
        let v6 = Endpoint::parse("[::1]:5000", false).unwrap();
        assert_eq!(v6.join("/v2/").scheme(), "http");
    }

    #[test]
    fn http_only_for_loopback_unless_insecure() {
        for ok in [
            "http://localhost:5000",
            "http://127.0.0.2",
            "http://[::1]:80",
            "https://x.io",
        ] {
            Endpoint::parse(ok, false).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        assert_eq!(
            Endpoint::parse("http://registry.example.com", false),
            Err(EndpointError::InsecureRefused {
                host: "registry.example.com".to_owned()
            })
        );
        Endpoint::parse("http://registry.example.com", true).unwrap();
    }

    #[test]
    fn rejects_bad_urls() {
        for bad in [
            "",
            "ftp://x",
            "https://u:p@x.io",
            "https://x.io/?a=b",
            "http://",
        ] {
            assert!(
                matches!(
                    Endpoint::parse(bad, true),
                    Err(EndpointError::Invalid { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn prefix_paths_are_kept() {
        let e = Endpoint::parse("https://x.io/mirror/", false).unwrap();
        assert_eq!(
            e.join("/v2/a/tags/list").as_str(),
            "https://x.io/mirror/v2/a/tags/list"
        );
    }

    #[test]
    fn origins() {
        let e = Endpoint::parse("https://x.io", false).unwrap();
        assert!(e.same_origin(&Url::parse("https://x.io:443/v2/").unwrap()));
        assert!(!e.same_origin(&Url::parse("https://s3.x.io/blob").unwrap()));
        assert!(!e.same_origin(&Url::parse("http://x.io/v2/").unwrap()));
    }

    #[test]
    fn backoff_doubles_and_stops() {
        let p = RetryPolicy::default();
        let delays: Vec<_> = (1..6).map(|r| p.delay(r, None)).collect();
        assert_eq!(
            delays,
            vec![
                Some(Duration::from_millis(200)),
                Some(Duration::from_millis(400)),
                Some(Duration::from_millis(800)),
                Some(Duration::from_millis(1600)),
                None
            ]
        );
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(p.delay(1, Some(&h)), Some(Duration::from_secs(2)));
        h.insert(RETRY_AFTER, "3600".parse().unwrap());
        assert_eq!(p.delay(1, Some(&h)), None);
    }
}
