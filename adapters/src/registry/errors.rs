//! Turning a registry's error answer into a [`RegistryError`]: the status
//! decides the kind, the OCI error body (`{"errors":[{"code","message"}]}`)
//! supplies the words, so the user reads what the registry said.

use reqwest::{Response, StatusCode};
use serde::Deserialize;
use vmr_ports::RegistryError;

use super::challenge::bearer_error;

/// The most of an error body we read.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// The most of a non-JSON error body we repeat.
const MAX_QUOTED_TEXT: usize = 200;

#[derive(Deserialize)]
struct OciErrors {
    #[serde(default)]
    errors: Vec<OciError>,
}

#[derive(Deserialize)]
struct OciError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
    /// Free-form; a plain string (a digest, a tag) is worth repeating.
    #[serde(default)]
    detail: serde_json::Value,
}

/// What an error answer said: the OCI codes, and one line for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorText {
    pub codes: Vec<String>,
    pub summary: String,
}

impl ErrorText {
    /// Reads the text out of an error body (`CODE: message; CODE: message`,
    /// or the start of a plain-text body, or the HTTP status alone).
    pub fn from_body(status: StatusCode, body: &[u8]) -> Self {
        if let Ok(parsed) = serde_json::from_slice::<OciErrors>(body)
            && !parsed.errors.is_empty()
        {
            let codes = parsed.errors.iter().map(|e| e.code.clone()).collect();
            let summary = parsed
                .errors
                .iter()
                .map(|e| {
                    let text = match (e.code.is_empty(), e.message.is_empty()) {
                        (false, false) => format!("{}: {}", e.code, clean(&e.message)),
                        (false, true) => e.code.clone(),
                        _ => clean(&e.message),
                    };
                    match e.detail.as_str() {
                        Some(detail) if !detail.is_empty() => format!("{text} ({})", clean(detail)),
                        _ => text,
                    }
                })
                .collect::<Vec<_>>()
                .join("; ");
            return Self { codes, summary };
        }
        let text = clean(&String::from_utf8_lossy(body));
        let summary = if text.is_empty() || text.starts_with('<') {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {text}")
        };
        Self {
            codes: Vec::new(),
            summary,
        }
    }

    fn has(&self, code: &str) -> bool {
        self.codes.iter().any(|c| c == code)
    }
}

/// Printable, single-line and short: error bodies come from a server we do
/// not control and end up in terminals and logs.
pub fn clean(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_QUOTED_TEXT)
        .collect();
    if text.chars().count() > MAX_QUOTED_TEXT {
        out.push('…');
    }
    out.trim().to_owned()
}

/// Reads at most [`MAX_ERROR_BODY`] bytes of a body; a broken body is empty.
pub async fn read_error_body(mut response: Response) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = MAX_ERROR_BODY - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_ERROR_BODY {
            break;
        }
    }
    body
}

/// The error for a non-success answer about `what` ("manifest team/vm:1").
/// `anonymous` adds a hint to log in when the registry wants credentials.
pub async fn error_from_response(
    registry: &str,
    what: &str,
    anonymous: bool,
    response: Response,
) -> RegistryError {
    let status = response.status();
    let insufficient_scope =
        bearer_error(response.headers()).is_some_and(|e| e == "insufficient_scope");
    let body = read_error_body(response).await;
    classify(
        registry,
        what,
        anonymous,
        status,
        insufficient_scope,
        &ErrorText::from_body(status, &body),
    )
}

/// The kind of error for a status and what the registry said.
pub fn classify(
    registry: &str,
    what: &str,
    anonymous: bool,
    status: StatusCode,
    insufficient_scope: bool,
    text: &ErrorText,
) -> RegistryError {
    let registry = registry.to_owned();
    let message = text.summary.clone();
    match status {
        // A valid token that lacks the action (a reader pushing) is a
        // permission problem, not a login problem.
        StatusCode::UNAUTHORIZED if (insufficient_scope || text.has("DENIED")) && !anonymous => {
            RegistryError::Denied {
                registry,
                message: format!(
                    "the credential does not allow the {what} (the registry said: {message})"
                ),
            }
        }
        StatusCode::UNAUTHORIZED if anonymous => RegistryError::Unauthorized {
            registry,
            message: format!("{message}; no credential was given: log in first"),
        },
        StatusCode::UNAUTHORIZED => RegistryError::Unauthorized { registry, message },
        StatusCode::FORBIDDEN => RegistryError::Denied { registry, message },
        StatusCode::NOT_FOUND => RegistryError::NotFound {
            registry,
            what: what.to_owned(),
            message,
        },
        StatusCode::TOO_MANY_REQUESTS => RegistryError::Unavailable {
            registry,
            message: format!("{message} (still throttled after retries)"),
        },
        s if s.is_server_error() => RegistryError::Unavailable {
            registry,
            message: format!("{message} (still failing after retries)"),
        },
        s if s.is_client_error() => RegistryError::Rejected {
            registry,
            message: format!("{what}: {message}"),
        },
        s => RegistryError::InvalidResponse {
            registry,
            message: format!("unexpected HTTP {s} for {what}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oci_bodies_are_summarised() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}},{"code":"DENIED","message":"no\nway"},{"code":"BLOB_UNKNOWN","message":"blob unknown","detail":"sha256:ab"}]}"#;
        let t = ErrorText::from_body(StatusCode::NOT_FOUND, body);
        assert_eq!(t.codes, vec!["MANIFEST_UNKNOWN", "DENIED", "BLOB_UNKNOWN"]);
        assert_eq!(
            t.summary,
            "MANIFEST_UNKNOWN: manifest unknown; DENIED: no way; BLOB_UNKNOWN: blob unknown (sha256:ab)"
        );
    }

    #[test]
    fn other_bodies_fall_back_to_the_status() {
        let t = ErrorText::from_body(StatusCode::BAD_GATEWAY, b"<html>oops</html>");
        assert_eq!(t.summary, "HTTP 502 Bad Gateway");
        let t = ErrorText::from_body(StatusCode::BAD_REQUEST, b"upload too big\n");
        assert_eq!(t.summary, "HTTP 400 Bad Request: upload too big");
        let long = "x".repeat(1000);
        let t = ErrorText::from_body(StatusCode::BAD_REQUEST, long.as_bytes());
        assert!(t.summary.len() < 300);
    }

    #[test]
    fn statuses_map_to_kinds() {
        let t = ErrorText::from_body(StatusCode::UNAUTHORIZED, b"");
        let kind = |status, scope, anonymous| classify("r", "blob", anonymous, status, scope, &t);
        assert!(matches!(
            kind(StatusCode::UNAUTHORIZED, true, false),
            RegistryError::Denied { .. }
        ));
        assert!(matches!(
            kind(StatusCode::UNAUTHORIZED, false, false),
            RegistryError::Unauthorized { .. }
        ));
        assert!(matches!(
            kind(StatusCode::UNAUTHORIZED, true, true),
            RegistryError::Unauthorized { .. }
        ));
        assert!(matches!(
            kind(StatusCode::FORBIDDEN, false, false),
            RegistryError::Denied { .. }
        ));
        assert!(matches!(
            kind(StatusCode::NOT_FOUND, false, false),
            RegistryError::NotFound { .. }
        ));
        assert!(matches!(
            kind(StatusCode::SERVICE_UNAVAILABLE, false, false),
            RegistryError::Unavailable { .. }
        ));
        assert!(matches!(
            kind(StatusCode::TOO_MANY_REQUESTS, false, false),
            RegistryError::Unavailable { .. }
        ));
        assert!(matches!(
            kind(StatusCode::BAD_REQUEST, false, false),
            RegistryError::Rejected { .. }
        ));
        assert!(matches!(
            kind(StatusCode::FOUND, false, false),
            RegistryError::InvalidResponse { .. }
        ));
    }
}
