//! The HTTP client of vmr's auth server (PROTOCOLS.md): register, login,
//! logout and Docker-style registry tokens, over reqwest. Passwords and
//! tokens go in bodies and headers only, never in logs.

pub mod token;

use std::sync::Arc;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use vmr_ports::{
    AuthClient, AuthConnector, AuthError, AuthTarget, Credential, LoginToken, RegistryToken,
};

use crate::registry::TrustedRoots;
use crate::registry::http::{
    ClientBuildError, Endpoint, EndpointError, RetryPolicy, build_client, describe_error,
    read_bounded, send_retrying,
};
use token::{TokenError, fetch_token, server_message};

/// The most of an auth-server answer we read.
const MAX_ANSWER: usize = 1024 * 1024;

/// Opens [`HttpAuthClient`]s; holds the connection pools.
pub struct HttpAuthConnector {
    secure: reqwest::Client,
    insecure: reqwest::Client,
    retry: RetryPolicy,
}

impl HttpAuthConnector {
    /// Trusting the system's certificate authorities.
    pub fn new(retry: RetryPolicy) -> Result<Self, ClientBuildError> {
        Self::with_roots(retry, &TrustedRoots::default())
    }

    /// Trusting `roots` too (the daemon's `--registry-ca-file`).
    pub fn with_roots(retry: RetryPolicy, roots: &TrustedRoots) -> Result<Self, ClientBuildError> {
        Ok(Self {
            secure: build_client(false, roots)?,
            insecure: build_client(true, roots)?,
            retry,
        })
    }
}

impl AuthConnector for HttpAuthConnector {
    fn connect(&self, target: &AuthTarget) -> Result<Arc<dyn AuthClient>, AuthError> {
        let endpoint = Endpoint::parse(&target.base_url, target.insecure).map_err(|e| match e {
            EndpointError::Invalid { url, reason } => AuthError::InvalidTarget { url, reason },
            EndpointError::InsecureRefused { host } => AuthError::InsecureRefused { host },
        })?;
        let http = if target.insecure {
            &self.insecure
        } else {
            &self.secure
        };
        Ok(Arc::new(HttpAuthClient {
            http: http.clone(),
            endpoint,
            retry: self.retry.clone(),
        }))
    }
}

/// One auth server.
pub struct HttpAuthClient {
    http: reqwest::Client,
    endpoint: Endpoint,
    retry: RetryPolicy,
}

#[derive(Serialize)]
struct RegisterBody<'a> {
    username: &'a str,
    password: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
}

#[derive(Serialize)]
struct LoginBody<'a> {
    username: &'a str,
    password: &'a str,
}

#[derive(Deserialize)]
struct LoginAnswer {
    access_token: Option<String>,
    token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<u64>,
}

impl HttpAuthClient {
    fn server(&self) -> String {
        self.endpoint.display().to_owned()
    }

    /// Sends a request and returns the status and body of the answer.
    async fn call(
        &self,
        method: Method,
        path: &str,
        json: Option<serde_json::Value>,
        bearer: Option<&str>,
        retry: bool,
    ) -> Result<(StatusCode, Vec<u8>), AuthError> {
        let url = self.endpoint.join(path);
        let policy = if retry {
            self.retry.clone()
        } else {
            RetryPolicy::none()
        };
        tracing::debug!(%method, %url, "auth server request");
        let response = send_retrying(&policy, || {
            let mut request = self.http.request(method.clone(), url.clone());
            if let Some(json) = &json {
                request = request.json(json);
            }
            if let Some(token) = bearer {
                request = request.bearer_auth(token);
            }
            request
        })
        .await
        .map_err(|e| AuthError::Unavailable {
            server: self.server(),
            message: describe_error(&e),
        })?;
        let status = response.status();
        let body = read_bounded(response, MAX_ANSWER)
            .await
            .map_err(|message| AuthError::Unavailable {
                server: self.server(),
                message,
            })?;
        Ok((status, body))
    }

    /// The error for a non-success answer.
    fn error(&self, status: StatusCode, body: &[u8]) -> AuthError {
        let server = self.server();
        let message = server_message(status, body);
        match status {
            StatusCode::UNAUTHORIZED => AuthError::Unauthorized { server, message },
            StatusCode::FORBIDDEN => AuthError::Denied { server, message },
            StatusCode::CONFLICT => AuthError::AlreadyExists { server, message },
            StatusCode::TOO_MANY_REQUESTS => AuthError::Unavailable { server, message },
            s if s.is_server_error() => AuthError::Unavailable { server, message },
            StatusCode::NOT_FOUND => AuthError::InvalidRequest {
                server,
                message: format!("{message} (is the auth URL right?)"),
            },
            s if s.is_client_error() => AuthError::InvalidRequest { server, message },
            s => AuthError::InvalidResponse {
                server,
                message: format!("unexpected HTTP {s}"),
            },
        }
    }

    fn to_json<T: Serialize>(&self, body: &T) -> Result<serde_json::Value, AuthError> {
        serde_json::to_value(body).map_err(|e| AuthError::InvalidRequest {
            server: self.server(),
            message: e.to_string(),
        })
    }
}

#[async_trait]
impl AuthClient for HttpAuthClient {
    async fn register<'a>(
        &self,
        username: &str,
        password: &str,
        email: Option<&'a str>,
    ) -> Result<(), AuthError> {
        let body = self.to_json(&RegisterBody {
            username,
            password,
            email,
        })?;
        // Not retried: a lost answer to a successful register would turn
        // into a confusing "already exists".
        let (status, answer) = self
            .call(Method::POST, "/api/v1/register", Some(body), None, false)
            .await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(self.error(status, &answer))
        }
    }

    async fn login(&self, username: &str, password: &str) -> Result<LoginToken, AuthError> {
        let body = self.to_json(&LoginBody { username, password })?;
        let (status, answer) = self
            .call(Method::POST, "/api/v1/login", Some(body), None, true)
            .await?;
        if !status.is_success() {
            return Err(self.error(status, &answer));
        }
        let invalid = |message: String| AuthError::InvalidResponse {
            server: self.server(),
            message,
        };
        let parsed: LoginAnswer = serde_json::from_slice(&answer)
            .map_err(|e| invalid(format!("the login answer is not the expected JSON: {e}")))?;
        let access_token = parsed
            .access_token
            .or(parsed.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| invalid("the login answer has no access_token".to_owned()))?;
        Ok(LoginToken {
            access_token,
            token_type: parsed.token_type.unwrap_or_else(|| "Bearer".to_owned()),
            expires_in: parsed.expires_in,
        })
    }

    async fn logout(&self, access_token: &str) -> Result<(), AuthError> {
        let (status, answer) = self
            .call(
                Method::POST,
                "/api/v1/logout",
                None,
                Some(access_token),
                true,
            )
            .await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(self.error(status, &answer))
        }
    }

    async fn token<'a>(
        &self,
        service: &str,
        scopes: &[String],
        credential: Option<&'a Credential>,
    ) -> Result<RegistryToken, AuthError> {
        let realm = self.endpoint.join("/token");
        let server = self.server();
        fetch_token(
            &self.http,
            &self.retry,
            &realm,
            Some(service),
            scopes,
            credential,
        )
        .await
        .map_err(|e| match e {
            TokenError::Unauthorized(message) => AuthError::Unauthorized { server, message },
            TokenError::Denied(message) => AuthError::Denied { server, message },
            TokenError::Unavailable(message) => AuthError::Unavailable { server, message },
            TokenError::Invalid(message) => AuthError::InvalidResponse { server, message },
        })
    }

    async fn ping(&self) -> Result<(), AuthError> {
        // Any HTTP answer means the server is up; the contract has no health path.
        self.call(Method::GET, "/", None, None, false)
            .await
            .map(|_| ())
    }

    fn describe(&self) -> String {
        self.server()
    }
}
