//! Sending one request to a registry as the user: answers a 401 challenge
//! once per request (Basic: the user's password; Bearer: a token from the
//! realm, cached per scope set until shortly before it expires), retries
//! transient failures, and sends credentials only to the registry's own
//! origin. Once a registry has shown its scheme, later requests carry the
//! right header up front.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::{Method, Response, StatusCode, Url};
use tokio::sync::Mutex;
use tokio::time::Instant;
use vmr_ports::{Credential, RegistryError};

use super::challenge::{Challenge, parse_challenges};
use super::errors::error_from_response;
use super::http::{Endpoint, RetryPolicy, describe_error, send_retrying, url_allowed};
use crate::auth::token::{TokenError, fetch_token};

/// One request, replayable (the body is in memory).
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: Option<Bytes>,
    /// Token scopes the request needs (`repository:team/vm:pull`).
    pub scopes: Vec<String>,
    /// Whether a transient failure may be retried blindly.
    pub idempotent: bool,
}

impl Request {
    pub fn new(method: Method, url: Url, scopes: Vec<String>) -> Self {
        let idempotent = method != Method::PATCH;
        Self {
            method,
            url,
            headers: HeaderMap::new(),
            body: None,
            scopes,
            idempotent,
        }
    }

    pub fn header(
        mut self,
        name: reqwest::header::HeaderName,
        value: reqwest::header::HeaderValue,
    ) -> Self {
        self.headers.insert(name, value);
        self
    }

    pub fn body(mut self, body: Bytes) -> Self {
        self.body = Some(body);
        self
    }
}

/// What became of a request with a streamed body.
pub enum Streamed {
    /// The registry's answer (the caller checks the status).
    Answered(Response),
    /// The registry asked for credentials, which are now at hand.
    Challenged,
}

/// The scope for pulling from a repository.
pub fn pull_scope(repository: &str) -> String {
    format!("repository:{repository}:pull")
}

/// The scope for pushing to a repository.
pub fn push_scope(repository: &str) -> String {
    format!("repository:{repository}:pull,push")
}

enum Scheme {
    Basic,
    Bearer { realm: Url, service: Option<String> },
}

struct CachedToken {
    token: String,
    valid_until: Instant,
}

#[derive(Default)]
struct AuthState {
    scheme: Option<Scheme>,
    /// Keyed by the sorted, space-joined scopes of the requests they serve.
    tokens: HashMap<String, CachedToken>,
}

enum AuthHeader {
    Basic { username: String, password: String },
    Bearer(String),
}

/// The connection to one registry as one user.
pub struct Transport {
    http: reqwest::Client,
    endpoint: Endpoint,
    insecure: bool,
    credential: Option<Credential>,
    retry: RetryPolicy,
    auth: Mutex<AuthState>,
}

fn scope_key(scopes: &[String]) -> String {
    let mut sorted = scopes.to_vec();
    sorted.sort();
    sorted.dedup();
    sorted.join(" ")
}

impl Transport {
    pub fn new(
        http: reqwest::Client,
        endpoint: Endpoint,
        insecure: bool,
        credential: Option<Credential>,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            http,
            endpoint,
            insecure,
            credential,
            retry,
            auth: Mutex::new(AuthState::default()),
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub fn registry(&self) -> String {
        self.endpoint.display().to_owned()
    }

    pub fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    /// The error for a non-success answer about `what`.
    pub async fn error(&self, what: &str, response: Response) -> RegistryError {
        error_from_response(
            self.endpoint.display(),
            what,
            self.credential.is_none(),
            response,
        )
        .await
    }

    /// A transport failure as `Unavailable`.
    pub fn unavailable(&self, error: &reqwest::Error) -> RegistryError {
        RegistryError::Unavailable {
            registry: self.registry(),
            message: describe_error(error),
        }
    }

    /// Sends `request`, answering one auth challenge; returns whatever the
    /// registry finally said (the caller checks the status).
    pub async fn send(&self, request: &Request) -> Result<Response, RegistryError> {
        let ours = self.endpoint.same_origin(&request.url);
        let policy = if request.idempotent {
            self.retry.clone()
        } else {
            RetryPolicy::none()
        };
        let mut challenged = false;
        loop {
            let auth = if ours {
                self.authorization(&request.scopes).await?
            } else {
                None
            };
            tracing::debug!(method = %request.method, url = %request.url, "registry request");
            let response = send_retrying(&policy, || self.build(request, auth.as_ref()))
                .await
                .map_err(|e| self.unavailable(&e))?;
            tracing::debug!(status = %response.status(), url = %request.url, "registry answer");
            if response.status() != StatusCode::UNAUTHORIZED || !ours || challenged {
                return Ok(response);
            }
            challenged = true;
            let sent_basic = matches!(auth, Some(AuthHeader::Basic { .. }));
            if !self
                .answer_challenge(&response, &request.scopes, sent_basic)
                .await?
            {
                return Ok(response);
            }
        }
    }

    /// Sends `request` once with a streamed `body` (which cannot be
    /// replayed): no blind retry. A 401 that the registry's challenge can
    /// answer comes back as [`Streamed::Challenged`]: the caller opens its
    /// source again and resends, once.
    pub async fn send_streamed(
        &self,
        request: &Request,
        body: reqwest::Body,
        challenged: bool,
    ) -> Result<Streamed, RegistryError> {
        let ours = self.endpoint.same_origin(&request.url);
        let auth = if ours {
            self.authorization(&request.scopes).await?
        } else {
            None
        };
        tracing::debug!(method = %request.method, url = %request.url, "registry request, streamed body");
        let response = self
            .build(request, auth.as_ref())
            .body(body)
            .send()
            .await
            .map_err(|e| self.unavailable(&e))?;
        tracing::debug!(status = %response.status(), url = %request.url, "registry answer");
        if response.status() != StatusCode::UNAUTHORIZED || !ours || challenged {
            return Ok(Streamed::Answered(response));
        }
        let sent_basic = matches!(auth, Some(AuthHeader::Basic { .. }));
        if self
            .answer_challenge(&response, &request.scopes, sent_basic)
            .await?
        {
            Ok(Streamed::Challenged)
        } else {
            Ok(Streamed::Answered(response))
        }
    }

    fn build(&self, request: &Request, auth: Option<&AuthHeader>) -> reqwest::RequestBuilder {
        let mut builder = self
            .http
            .request(request.method.clone(), request.url.clone())
            .headers(request.headers.clone());
        if let Some(body) = &request.body {
            builder = builder.body(body.clone());
        }
        match auth {
            Some(AuthHeader::Basic { username, password }) => {
                builder.basic_auth(username, Some(password))
            }
            Some(AuthHeader::Bearer(token)) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// The header this request should carry, given what the registry has
    /// asked for so far; fetches a token when none is cached for the scopes.
    async fn authorization(&self, scopes: &[String]) -> Result<Option<AuthHeader>, RegistryError> {
        let mut state = self.auth.lock().await;
        match &state.scheme {
            None => Ok(None),
            Some(Scheme::Basic) => Ok(match &self.credential {
                Some(Credential::Basic { username, password }) => Some(AuthHeader::Basic {
                    username: username.clone(),
                    password: password.clone(),
                }),
                _ => None,
            }),
            Some(Scheme::Bearer { realm, service }) => {
                let key = scope_key(scopes);
                if let Some(cached) = state.tokens.get(&key)
                    && cached.valid_until > Instant::now()
                {
                    return Ok(Some(AuthHeader::Bearer(cached.token.clone())));
                }
                let (realm, service) = (realm.clone(), service.clone());
                let cached = self.fetch(&realm, service.as_deref(), scopes).await?;
                let token = cached.token.clone();
                state.tokens.insert(key, cached);
                Ok(Some(AuthHeader::Bearer(token)))
            }
        }
    }

    /// Learns from a 401; `true` when the request is worth sending again.
    async fn answer_challenge(
        &self,
        response: &Response,
        scopes: &[String],
        sent_basic: bool,
    ) -> Result<bool, RegistryError> {
        let Some(challenge) = parse_challenges(response.headers()).into_iter().next() else {
            return Ok(false);
        };
        let mut state = self.auth.lock().await;
        match challenge {
            Challenge::Basic { .. } => {
                let has_password = matches!(self.credential, Some(Credential::Basic { .. }));
                if !has_password || sent_basic {
                    return Ok(false);
                }
                state.scheme = Some(Scheme::Basic);
                Ok(true)
            }
            Challenge::Bearer {
                ref realm,
                ref service,
                ..
            } => {
                let realm = Url::parse(realm).map_err(|e| RegistryError::InvalidResponse {
                    registry: self.registry(),
                    message: format!("the token realm `{realm}` is not a URL: {e}"),
                })?;
                if !url_allowed(&realm, self.insecure) {
                    return Err(RegistryError::InsecureRefused {
                        host: realm.host_str().unwrap_or("?").to_owned(),
                    });
                }
                // Whatever the registry asks for on top of what we meant to do.
                let mut wanted = scopes.to_vec();
                wanted.extend(challenge.scopes());
                let cached = self.fetch(&realm, service.as_deref(), &wanted).await?;
                state.tokens.insert(scope_key(scopes), cached);
                state.scheme = Some(Scheme::Bearer {
                    realm,
                    service: service.clone(),
                });
                Ok(true)
            }
        }
    }

    async fn fetch(
        &self,
        realm: &Url,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<CachedToken, RegistryError> {
        let mut scopes = scopes.to_vec();
        scopes.sort();
        scopes.dedup();
        let registry = self.registry();
        let token = fetch_token(
            &self.http,
            &self.retry,
            realm,
            service,
            &scopes,
            self.credential.as_ref(),
        )
        .await
        .map_err(|e| match e {
            TokenError::Unauthorized(message) if self.credential.is_none() => {
                RegistryError::Unauthorized {
                    registry,
                    message: format!("{message}; no credential was given: log in first"),
                }
            }
            TokenError::Unauthorized(message) => RegistryError::Unauthorized { registry, message },
            TokenError::Denied(message) => RegistryError::Denied { registry, message },
            TokenError::Unavailable(message) => RegistryError::Unavailable { registry, message },
            TokenError::Invalid(message) => RegistryError::InvalidResponse { registry, message },
        })?;
        // Renew a little early so a token does not expire in flight.
        let lifetime = Duration::from_secs(token.expires_in);
        let margin = (lifetime / 10).min(Duration::from_secs(30));
        Ok(CachedToken {
            token: token.token,
            valid_until: Instant::now() + lifetime.saturating_sub(margin),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_keys_ignore_order_and_repeats() {
        let a = vec![push_scope("a"), pull_scope("b"), push_scope("a")];
        let b = vec![pull_scope("b"), push_scope("a")];
        assert_eq!(scope_key(&a), scope_key(&b));
        assert_eq!(scope_key(&b), "repository:a:pull,push repository:b:pull");
    }
}
