//! The Docker token flow's client side: `GET <realm>?service=&scope=` with
//! the user's credential (Basic or Bearer) or none, answered by
//! `{token | access_token, expires_in}`. Used by the auth-server client and by
//! the registry client when a registry sends a Bearer challenge.

use reqwest::{StatusCode, Url};
use serde::Deserialize;
use vmr_ports::{Credential, RegistryToken};

use crate::registry::errors::{ErrorText, clean};
use crate::registry::http::{RetryPolicy, describe_error, read_bounded, send_retrying};

/// The lifetime the token spec assumes when the server does not say.
const DEFAULT_EXPIRES_IN: u64 = 60;
/// The most of a token answer we read.
const MAX_TOKEN_BODY: usize = 1024 * 1024;

/// Why no token came back; each carries a sentence for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// The server does not accept the credential (or wants one).
    Unauthorized(String),
    /// The server refuses this user outright.
    Denied(String),
    /// Cannot connect, or 429/5xx after retries.
    Unavailable(String),
    /// An answer that is not a token.
    Invalid(String),
}

#[derive(Deserialize)]
struct TokenAnswer {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

/// Asks `realm` for a token for `scopes` of `service`.
pub async fn fetch_token(
    http: &reqwest::Client,
    retry: &RetryPolicy,
    realm: &Url,
    service: Option<&str>,
    scopes: &[String],
    credential: Option<&Credential>,
) -> Result<RegistryToken, TokenError> {
    let mut url = realm.clone();
    {
        let mut query = url.query_pairs_mut();
        if let Some(service) = service {
            query.append_pair("service", service);
        }
        for scope in scopes {
            query.append_pair("scope", scope);
        }
        if let Some(username) = credential.and_then(Credential::username) {
            query.append_pair("account", username);
        }
    }
    let host = match (realm.host_str(), realm.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (host, None) => host.unwrap_or("?").to_owned(),
        (None, Some(_)) => "?".to_owned(),
    };
    tracing::debug!(realm = %realm, ?scopes, "fetching a registry token");
    let response = send_retrying(retry, || {
        let request = http.get(url.clone());
        match credential {
            Some(Credential::Basic { username, password }) => {
                request.basic_auth(username, Some(password))
            }
            Some(Credential::Bearer { token }) => request.bearer_auth(token),
            None => request,
        }
    })
    .await
    .map_err(|e| TokenError::Unavailable(format!("token server {host}: {}", describe_error(&e))))?;

    let status = response.status();
    let body = read_bounded(response, MAX_TOKEN_BODY)
        .await
        .map_err(|e| TokenError::Unavailable(format!("token server {host}: {e}")))?;
    if !status.is_success() {
        let text = server_message(status, &body);
        let message = format!("token server {host}: {text}");
        return Err(match status {
            StatusCode::UNAUTHORIZED => TokenError::Unauthorized(message),
            StatusCode::FORBIDDEN => TokenError::Denied(message),
            s if s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error() => {
                TokenError::Unavailable(message)
            }
            _ => TokenError::Invalid(message),
        });
    }
    let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|e| {
        TokenError::Invalid(format!(
            "token server {host}: the answer is not a token: {e}"
        ))
    })?;
    let token = answer
        .token
        .or(answer.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            TokenError::Invalid(format!("token server {host}: the answer has no token"))
        })?;
    Ok(RegistryToken {
        token,
        expires_in: answer
            .expires_in
            .filter(|s| *s > 0)
            .unwrap_or(DEFAULT_EXPIRES_IN),
    })
}

/// What an auth or token server said in an error body: the OCI error list,
/// a `message`/`error`/`detail` field, or the start of the text.
pub fn server_message(status: StatusCode, body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Plain {
        message: Option<String>,
        error: Option<String>,
        detail: Option<String>,
        error_description: Option<String>,
    }
    if let Ok(plain) = serde_json::from_slice::<Plain>(body)
        && let Some(text) = plain
            .message
            .or(plain.error_description)
            .or(plain.error)
            .or(plain.detail)
        && !text.trim().is_empty()
    {
        return clean(&text);
    }
    ErrorText::from_body(status, body).summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_messages() {
        assert_eq!(
            server_message(StatusCode::UNAUTHORIZED, br#"{"error":"wrong password"}"#),
            "wrong password"
        );
        assert_eq!(
            server_message(
                StatusCode::UNAUTHORIZED,
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"no"}]}"#
            ),
            "UNAUTHORIZED: no"
        );
        assert_eq!(
            server_message(StatusCode::CONFLICT, b""),
            "HTTP 409 Conflict"
        );
    }
}
