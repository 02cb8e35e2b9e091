//! A test auth server speaking vmr's contract (PROTOCOLS.md): register,
//! login, logout, and the Docker token endpoint, whose RS256 JWTs carry the
//! signing certificate in `x5c` so a docker-registry configured with that
//! certificate as its `rootcertbundle` accepts them. Users have fixed rights
//! (`reader`: pull, `writer`: pull and push, registered users: configurable),
//! and a token grants only the asked-for actions the user holds.
//!
//! The token registry of `scripts/test-services.sh` sends clients to
//! `http://127.0.0.1:5005/token`, so [`AuthServer::shared_on_realm_port`]
//! makes sure a server answers there: a process of its own
//! (`vmr-test-authd`), shared by every test process and outliving each, that
//! exits after [`REALM_IDLE`] without a request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::os::unix::process::CommandExt;

use anyhow::{Context, anyhow, bail};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The port the token registry's realm names.
pub const REALM_PORT: u16 = 5005;
/// What `GET /` answers, so a second test process can tell the server on
/// the realm port is one of ours.
const BANNER: &str = "vmr test auth server";

/// A user and the repository actions it may be granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestUser {
    pub username: String,
    pub password: String,
    /// `pull`, `push`, `delete`.
    pub actions: Vec<String>,
}

impl TestUser {
    pub fn new(username: &str, password: &str, actions: &[&str]) -> Self {
        Self {
            username: username.to_owned(),
            password: password.to_owned(),
            actions: actions.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    /// `reader` / `readerpass`: pull only.
    pub fn reader() -> Self {
        Self::new("reader", "readerpass", &["pull"])
    }

    /// `writer` / `writerpass`: pull and push.
    pub fn writer() -> Self {
        Self::new("writer", "writerpass", &["pull", "push"])
    }
}

/// How the server signs and whom it knows.
#[derive(Clone)]
pub struct AuthServerConfig {
    /// `127.0.0.1:0` for any free port.
    pub addr: SocketAddr,
    /// RSA private key, PEM (PKCS#1 or PKCS#8).
    pub key_pem: Vec<u8>,
    /// The certificate of that key, PEM; goes into `x5c`.
    pub cert_pem: String,
    /// The registry's `service` (the JWT audience).
    pub service: String,
    /// The JWT issuer the registry expects.
    pub issuer: String,
    pub users: Vec<TestUser>,
    /// Actions a user created through `/api/v1/register` holds.
    pub registered_actions: Vec<String>,
    /// Lifetime of login access tokens and registry tokens.
    pub token_ttl: Duration,
}

impl std::fmt::Debug for AuthServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthServerConfig")
            .field("addr", &self.addr)
            .field("service", &self.service)
            .field("issuer", &self.issuer)
            .field(
                "users",
                &self.users.iter().map(|u| &u.username).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl AuthServerConfig {
    /// The settings `scripts/test-services.sh env` exports
    /// (`VMR_TEST_TOKEN_KEY`, `_CERT`, `_SERVICE`, `_ISSUER`), on `port`, with
    /// the users `reader` and `writer`.
    pub fn from_env(port: u16) -> anyhow::Result<Self> {
        let var = |name: &str| {
            std::env::var(name).map_err(|_| {
                anyhow!("{name} is not set: run `eval \"$(scripts/test-services.sh env)\"` after `scripts/test-services.sh start`")
            })
        };
        let key_path = var("VMR_TEST_TOKEN_KEY")?;
        let cert_path = var("VMR_TEST_TOKEN_CERT")?;
        let key_pem = std::fs::read(&key_path).with_context(|| format!("reading {key_path}"))?;
        let cert_pem =
            std::fs::read_to_string(&cert_path).with_context(|| format!("reading {cert_path}"))?;
        Ok(Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            key_pem,
            cert_pem,
            service: var("VMR_TEST_TOKEN_SERVICE")?,
            issuer: var("VMR_TEST_TOKEN_ISSUER")?,
            users: vec![TestUser::reader(), TestUser::writer()],
            registered_actions: vec!["pull".to_owned(), "push".to_owned()],
            token_ttl: Duration::from_secs(300),
        })
    }
}

/// The base64 DER of the first certificate in a PEM document (what `x5c`
/// holds: PEM's body is exactly that, wrapped).
fn x5c_of(cert_pem: &str) -> anyhow::Result<String> {
    let body: String = cert_pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END CERTIFICATE-----"))
        .map(str::trim)
        .collect();
    if body.is_empty() {
        bail!("the certificate PEM holds no CERTIFICATE block");
    }
    STANDARD
        .decode(&body)
        .context("the certificate PEM is not base64")?;
    Ok(body)
}

struct Session {
    username: String,
    expires: SystemTime,
}

struct UserRecord {
    password: String,
    actions: Vec<String>,
}

struct Inner {
    key: EncodingKey,
    x5c: String,
    service: String,
    issuer: String,
    registered_actions: Vec<String>,
    token_ttl: Duration,
    users: Mutex<HashMap<String, UserRecord>>,
    sessions: Mutex<HashMap<String, Session>>,
}

type Shared = Arc<Inner>;

/// A running server; it stops when dropped (or with its runtime).
pub struct AuthServer {
    addr: SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for AuthServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl AuthServer {
    /// Binds `config.addr` and serves on the current tokio runtime.
    pub async fn start(config: AuthServerConfig) -> anyhow::Result<Self> {
        let router = router(config.clone())?;
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .with_context(|| format!("binding the test auth server to {}", config.addr))?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "test auth server stopped");
            }
        });
        Ok(Self {
            addr,
            task: Some(task),
        })
    }

    /// The server on the realm port (5005) with the environment's key: the
    /// one already there, or a `vmr-test-authd` started now. Not a thread of
    /// this process: a test process exits when its test ends, and tests in
    /// other processes may be fetching tokens from the same port then.
    pub fn shared_on_realm_port() -> anyhow::Result<String> {
        static SHARED: OnceLock<Result<String, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| ensure_realm_server().map_err(|e| format!("{e:#}")))
            .clone()
            .map_err(|e| anyhow!(e))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// How long `vmr-test-authd` waits without a request before it exits.
pub const REALM_IDLE: Duration = Duration::from_secs(120);

fn ensure_realm_server() -> anyhow::Result<String> {
    let url = format!("http://127.0.0.1:{REALM_PORT}");
    if is_ours(REALM_PORT) {
        return Ok(url);
    }
    let program = crate::daemon::bin("vmr-test-authd");
    let mut child = std::process::Command::new(&program)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        // Its own process group: nothing aimed at the test's group reaches it.
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        if is_ours(REALM_PORT) {
            return Ok(url);
        }
        // It exits at once, successfully, when another process won the port
        // (another test process's server, maybe not answering yet).
        if let Ok(Some(status)) = child.try_wait()
            && !status.success()
        {
            bail!("{} exited with {status}", program.display());
        }
        if std::time::Instant::now() >= deadline {
            bail!(
                "nothing answering as a vmr test auth server on 127.0.0.1:{REALM_PORT} within 15 s"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Serves the realm port with the environment's key until [`REALM_IDLE`]
/// passes without a request. `Ok(false)` when the port was taken.
pub async fn serve_realm_until_idle() -> anyhow::Result<bool> {
    use std::sync::atomic::{AtomicU64, Ordering};

    let config = AuthServerConfig::from_env(REALM_PORT)?;
    let listener = match tokio::net::TcpListener::bind(config.addr).await {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("binding {}", config.addr)),
    };
    let _pid_file = PidFile::record()?;
    let started = std::time::Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&last);
    let router = router(config)?.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            seen.store(started.elapsed().as_secs(), Ordering::Relaxed);
            next.run(request)
        },
    ));
    let idle = async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let since = started.elapsed().as_secs() - last.load(Ordering::Relaxed);
            if since >= REALM_IDLE.as_secs() {
                return;
            }
        }
    };
    axum::serve(listener, router)
        .with_graceful_shutdown(idle)
        .await
        .context("serving the token realm")?;
    Ok(true)
}

/// `$VMR_TEST_SERVICES_DIR/authd.pid` while the realm server runs, so that
/// `scripts/test-services.sh stop` ends this process by its id and never
/// another run's server of the same name. Removed on exit when still ours.
struct PidFile(Option<std::path::PathBuf>);

impl PidFile {
    fn record() -> anyhow::Result<Self> {
        let Some(dir) = std::env::var_os("VMR_TEST_SERVICES_DIR") else {
            return Ok(Self(None));
        };
        let path = std::path::Path::new(&dir).join("authd.pid");
        std::fs::write(&path, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(Self(Some(path)))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let Some(path) = &self.0 else { return };
        let ours = std::fs::read_to_string(path)
            .is_ok_and(|text| text.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Whether `127.0.0.1:port` answers `GET /` with our banner.
fn is_ours(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.contains(BANNER)
}

/// The routes, with the state built from `config`.
pub fn router(config: AuthServerConfig) -> anyhow::Result<axum::Router> {
    let key = EncodingKey::from_rsa_pem(&config.key_pem)
        .context("the token key is not an RSA private key in PEM")?;
    let x5c = x5c_of(&config.cert_pem)?;
    let users = config
        .users
        .into_iter()
        .map(|u| {
            let record = UserRecord {
                password: u.password,
                actions: u.actions,
            };
            (u.username, record)
        })
        .collect();
    let state: Shared = Arc::new(Inner {
        key,
        x5c,
        service: config.service,
        issuer: config.issuer,
        registered_actions: config.registered_actions,
        token_ttl: config.token_ttl,
        users: Mutex::new(users),
        sessions: Mutex::new(HashMap::new()),
    });
    Ok(axum::Router::new()
        .route("/", get(|| async { BANNER }))
        .route("/api/v1/register", post(register))
        .route("/api/v1/login", post(login))
        .route("/api/v1/logout", post(logout))
        .route("/token", get(token))
        .with_state(state))
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let mut response = (status, Json(json!({ "error": code, "message": message }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"vmr-test-auth\""),
        );
    }
    response
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[derive(Deserialize)]
struct RegisterBody {
    username: String,
    password: String,
    #[serde(default)]
    #[allow(dead_code)]
    email: Option<String>,
}

#[derive(Deserialize)]
struct LoginBody {
    username: String,
    password: String,
}

fn valid_username(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

async fn register(
    State(state): State<Shared>,
    body: Result<Json<RegisterBody>, JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(body) => body,
        Err(e) => return error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", &e.body_text()),
    };
    if !valid_username(&body.username) {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_USERNAME",
            "username must be 1-64 letters, digits, `.`, `_` or `-`",
        );
    }
    if body.password.len() < 6 {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_PASSWORD",
            "password must be at least 6 characters",
        );
    }
    let mut users = state.users.lock().unwrap_or_else(|e| e.into_inner());
    if users.contains_key(&body.username) {
        return error(
            StatusCode::CONFLICT,
            "USER_EXISTS",
            &format!("user {} already exists", body.username),
        );
    }
    users.insert(
        body.username.clone(),
        UserRecord {
            password: body.password,
            actions: state.registered_actions.clone(),
        },
    );
    (
        StatusCode::CREATED,
        Json(json!({ "username": body.username })),
    )
        .into_response()
}

fn check_password(state: &Inner, username: &str, password: &str) -> bool {
    let users = state.users.lock().unwrap_or_else(|e| e.into_inner());
    users.get(username).is_some_and(|u| u.password == password)
}

async fn login(
    State(state): State<Shared>,
    body: Result<Json<LoginBody>, JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(body) => body,
        Err(e) => return error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", &e.body_text()),
    };
    if !check_password(&state, &body.username, &body.password) {
        return error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "wrong username or password",
        );
    }
    let access_token = uuid::Uuid::new_v4().simple().to_string();
    state
        .sessions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            access_token.clone(),
            Session {
                username: body.username,
                expires: SystemTime::now() + state.token_ttl,
            },
        );
    Json(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": state.token_ttl.as_secs(),
    }))
    .into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

async fn logout(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let Some(token) = bearer(&headers) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "a Bearer access token is required",
        );
    };
    let removed = state
        .sessions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(token);
    match removed {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "unknown or revoked access token",
        ),
    }
}

/// Who the request's `Authorization` names: `Ok(None)` when anonymous,
/// `Err(reason)` when the credential is refused.
fn authenticate(state: &Inner, headers: &HeaderMap) -> Result<Option<String>, &'static str> {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(None);
    };
    let (scheme, rest) = value
        .split_once(' ')
        .ok_or("malformed Authorization header")?;
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = STANDARD
            .decode(rest.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or("malformed Basic credentials")?;
        let (username, password) = decoded
            .split_once(':')
            .ok_or("malformed Basic credentials")?;
        if check_password(state, username, password) {
            Ok(Some(username.to_owned()))
        } else {
            Err("wrong username or password")
        }
    } else if scheme.eq_ignore_ascii_case("bearer") {
        let sessions = state.sessions.lock().unwrap_or_else(|e| e.into_inner());
        match sessions.get(rest.trim()) {
            Some(session) if session.expires > SystemTime::now() => {
                Ok(Some(session.username.clone()))
            }
            Some(_) => Err("the access token has expired"),
            None => Err("unknown or revoked access token"),
        }
    } else {
        Err("only Basic and Bearer authorization are accepted")
    }
}

#[derive(Serialize)]
struct Access {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    actions: Vec<String>,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: String,
    access: Vec<Access>,
}

/// `repository:<name>:<a,b>` → the part of it `allowed` covers.
fn grant(scope: &str, allowed: &[String]) -> Option<Access> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    if kind != "repository" {
        return None;
    }
    let actions = actions
        .split(',')
        .filter(|a| allowed.iter().any(|ok| ok == a))
        .map(str::to_owned)
        .collect();
    Some(Access {
        kind: kind.to_owned(),
        name: name.to_owned(),
        actions,
    })
}

async fn token(
    State(state): State<Shared>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let username = match authenticate(&state, &headers) {
        Ok(Some(username)) => username,
        Ok(None) => {
            return error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "authentication required",
            );
        }
        Err(reason) => return error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", reason),
    };
    let service = query
        .iter()
        .find(|(k, _)| k == "service")
        .map(|(_, v)| v.as_str());
    if service != Some(state.service.as_str()) {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_SERVICE",
            &format!(
                "this server issues tokens for service {} only",
                state.service
            ),
        );
    }
    let allowed = state
        .users
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&username)
        .map(|u| u.actions.clone())
        .unwrap_or_default();
    let access = query
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' '))
        .filter_map(|scope| grant(scope, &allowed))
        .collect();
    let now = now_secs();
    let ttl = state.token_ttl.as_secs();
    let claims = Claims {
        iss: &state.issuer,
        sub: &username,
        aud: &state.service,
        exp: now + ttl,
        // A second of slack for clocks read a moment apart.
        nbf: now.saturating_sub(1),
        iat: now,
        jti: uuid::Uuid::new_v4().simple().to_string(),
        access,
    };
    let mut jwt_header = Header::new(Algorithm::RS256);
    jwt_header.x5c = Some(vec![state.x5c.clone()]);
    match jsonwebtoken::encode(&jwt_header, &claims, &state.key) {
        Ok(jwt) => {
            Json(json!({ "token": jwt, "access_token": jwt, "expires_in": ttl })).into_response()
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SIGNING_FAILED",
            &e.to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_only_allowed_actions() {
        let allowed = vec!["pull".to_owned()];
        let a = grant("repository:team/vm:pull,push", &allowed).unwrap();
        assert_eq!(
            (a.name.as_str(), a.actions),
            ("team/vm", vec!["pull".to_owned()])
        );
        assert!(grant("registry:catalog:*", &allowed).is_none());
        assert!(grant("garbage", &allowed).is_none());
    }

    #[test]
    fn x5c_is_the_pem_body() {
        let pem = "-----BEGIN CERTIFICATE-----\nQUJD\nREVG\n-----END CERTIFICATE-----\n";
        assert_eq!(x5c_of(pem).unwrap(), "QUJDREVG");
        assert!(x5c_of("nothing").is_err());
    }
}
