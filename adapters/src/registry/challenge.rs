//! `WWW-Authenticate` challenges (RFC 7235 syntax) as registries send them:
//! `Basic realm="..."` and `Bearer realm="...",service="...",scope="..."`,
//! possibly with `error="insufficient_scope"`.

use reqwest::header::{HeaderMap, WWW_AUTHENTICATE};

/// One challenge from a 401 answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic {
        realm: Option<String>,
    },
    Bearer {
        realm: String,
        service: Option<String>,
        /// Space-separated scopes, as sent.
        scope: Option<String>,
        /// `insufficient_scope`, `invalid_token`, ...
        error: Option<String>,
    },
}

impl Challenge {
    /// The scopes of a Bearer challenge, split.
    pub fn scopes(&self) -> Vec<String> {
        match self {
            Self::Bearer {
                scope: Some(scope), ..
            } => scope.split_whitespace().map(str::to_owned).collect(),
            _ => Vec::new(),
        }
    }
}

/// Every challenge vmr understands in the answer's `WWW-Authenticate`
/// headers, Bearer ones first (preferred when a registry offers both).
pub fn parse_challenges(headers: &HeaderMap) -> Vec<Challenge> {
    let mut found: Vec<Challenge> = headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(parse_header)
        .collect();
    found.sort_by_key(|c| matches!(c, Challenge::Basic { .. }));
    found
}

/// The `error` parameter of a Bearer challenge in `headers`, if any.
pub fn bearer_error(headers: &HeaderMap) -> Option<String> {
    parse_challenges(headers).into_iter().find_map(|c| match c {
        Challenge::Bearer { error, .. } => error,
        Challenge::Basic { .. } => None,
    })
}

/// One header value may hold several challenges: `Basic realm="a", Bearer
/// realm="b",service="c"`. A token followed by a space starts a challenge;
/// everything else is `name=value` parameters separated by commas.
fn parse_header(value: &str) -> Vec<Challenge> {
    let mut challenges = Vec::new();
    let mut current: Option<(String, Vec<(String, String)>)> = None;
    let mut rest = value.trim();
    while !rest.is_empty() {
        rest = rest.trim_start_matches([',', ' ', '\t']);
        if rest.is_empty() {
            break;
        }
        let token_end = rest
            .find(|c: char| c == '=' || c == ',' || c.is_whitespace())
            .unwrap_or(rest.len());
        let token = &rest[..token_end];
        let after = rest[token_end..].trim_start();
        if let Some(value_part) = after.strip_prefix('=') {
            let (param_value, remaining) = parse_value(value_part.trim_start());
            if let Some((_, params)) = current.as_mut() {
                params.push((token.to_ascii_lowercase(), param_value));
            }
            rest = remaining;
        } else {
            if let Some((scheme, params)) = current.take() {
                challenges.extend(build(&scheme, params));
            }
            current = Some((token.to_ascii_lowercase(), Vec::new()));
            rest = after;
        }
    }
    if let Some((scheme, params)) = current {
        challenges.extend(build(&scheme, params));
    }
    challenges
}

/// A quoted string (with `\` escapes) or a token, and what follows it.
fn parse_value(input: &str) -> (String, &str) {
    if let Some(quoted) = input.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                }
                '"' => return (value, &quoted[i + 1..]),
                _ => value.push(c),
            }
        }
        (value, "")
    } else {
        let end = input.find([',', ' ', '\t']).unwrap_or(input.len());
        (input[..end].to_owned(), &input[end..])
    }
}

fn build(scheme: &str, params: Vec<(String, String)>) -> Option<Challenge> {
    let mut realm = None;
    let mut service = None;
    let mut scope = None;
    let mut error = None;
    for (name, value) in params {
        match name.as_str() {
            "realm" => realm = Some(value),
            "service" => service = Some(value),
            "scope" => scope = Some(value),
            "error" => error = Some(value),
            _ => {}
        }
    }
    match scheme {
        "basic" => Some(Challenge::Basic { realm }),
        "bearer" => Some(Challenge::Bearer {
            realm: realm?,
            service,
            scope,
            error,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(WWW_AUTHENTICATE, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn distribution_bearer_challenge() {
        let h = headers(&[
            r#"Bearer realm="http://127.0.0.1:5005/token",service="vmr-test-registry",scope="repository:a/b:pull,push repository:c:pull",error="insufficient_scope""#,
        ]);
        let c = parse_challenges(&h);
        assert_eq!(
            c,
            vec![Challenge::Bearer {
                realm: "http://127.0.0.1:5005/token".to_owned(),
                service: Some("vmr-test-registry".to_owned()),
                scope: Some("repository:a/b:pull,push repository:c:pull".to_owned()),
                error: Some("insufficient_scope".to_owned()),
            }]
        );
        assert_eq!(
            c[0].scopes(),
            vec!["repository:a/b:pull,push", "repository:c:pull"]
        );
        assert_eq!(bearer_error(&h).as_deref(), Some("insufficient_scope"));
    }

    #[test]
    fn basic_and_several_challenges() {
        let h = headers(&[r#"Basic realm="vmr-test-basic""#]);
        assert_eq!(
            parse_challenges(&h),
            vec![Challenge::Basic {
                realm: Some("vmr-test-basic".to_owned())
            }]
        );
        let h = headers(&[r#"Basic realm="a", Bearer realm="https://x/t", service=reg"#]);
        let c = parse_challenges(&h);
        assert_eq!(c.len(), 2);
        assert!(matches!(&c[0], Challenge::Bearer { service: Some(s), .. } if s == "reg"));
        assert!(matches!(&c[1], Challenge::Basic { .. }));
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        for v in [
            "",
            "Bearer",
            "Bearer realm",
            "Bearer realm=\"unterminated",
            "Negotiate abc==",
            ",,,",
        ] {
            let _ = parse_challenges(&headers(&[v]));
        }
        // A Bearer challenge without a realm is unusable.
        assert!(parse_challenges(&headers(&["Bearer service=x"])).is_empty());
        assert_eq!(
            parse_challenges(&headers(&[r#"Bearer realm="a\"b""#])),
            vec![Challenge::Bearer {
                realm: "a\"b".to_owned(),
                service: None,
                scope: None,
                error: None
            }]
        );
    }
}
