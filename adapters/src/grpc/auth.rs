//! Login, logout and register, and the wire form of a registry credential:
//! `basic` with base64 `user:password`, or `bearer` with the auth server's
//! access token. Login returns that pair, push and pull receive it in the
//! `x-vmr-registry-auth` metadata as `<scheme> <credential>`, logout in its
//! request. No credential appears in a status message or a log line.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use vmr_ports::Credential;
use vmr_proto::v1 as pb;

use super::service::Core;
use super::status::to_status;

/// The call metadata key of a push's or pull's registry credential.
pub const REGISTRY_AUTH_METADATA: &str = "x-vmr-registry-auth";

/// `(scheme, credential)` as login returns them.
pub(super) fn credential_to_wire(credential: &Credential) -> (String, String) {
    match credential {
        Credential::Basic { username, password } => (
            "basic".to_owned(),
            STANDARD.encode(format!("{username}:{password}")),
        ),
        Credential::Bearer { token } => ("bearer".to_owned(), token.clone()),
    }
}

fn malformed(what: &str) -> Status {
    Status::unauthenticated(format!(
        "the registry credential sent with the call is malformed ({what}); log in again with `vmr login`"
    ))
}

/// The credential from its wire form.
pub(super) fn credential_from_wire(scheme: &str, value: &str) -> Result<Credential, Status> {
    let value = value.trim();
    if value.is_empty() {
        return Err(malformed("it is empty"));
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Credential::Bearer {
            token: value.to_owned(),
        });
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(malformed("the scheme is neither basic nor bearer"));
    }
    let decoded = STANDARD
        .decode(value)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| malformed("basic credentials must be base64 of user:password"))?;
    let (username, password) = decoded
        .split_once(':')
        .ok_or_else(|| malformed("basic credentials must be base64 of user:password"))?;
    Ok(Credential::Basic {
        username: username.to_owned(),
        password: password.to_owned(),
    })
}

/// The registry credential a push or pull carries, if any.
pub(super) fn registry_credential(metadata: &MetadataMap) -> Result<Option<Credential>, Status> {
    let Some(value) = metadata.get(REGISTRY_AUTH_METADATA) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| malformed("it is not text"))?;
    let (scheme, credential) = value
        .trim()
        .split_once(' ')
        .ok_or_else(|| malformed("expected `<scheme> <credential>`"))?;
    credential_from_wire(scheme, credential).map(Some)
}

pub async fn login(
    core: &Core,
    request: Request<pb::LoginRequest>,
) -> Result<Response<pb::LoginResponse>, Status> {
    let request = request.into_inner();
    let outcome = core
        .auth
        .login(&request.context, &request.username, &request.password)
        .await
        .map_err(to_status)?;
    let (scheme, credential) = credential_to_wire(&outcome.credential);
    Ok(Response::new(pb::LoginResponse {
        scheme,
        credential,
        expires_in_seconds: outcome
            .expires_in
            .map_or(0, |s| i64::try_from(s).unwrap_or(i64::MAX)),
        username: outcome.username,
        registry_url: outcome.registry_url.unwrap_or_default(),
    }))
}

pub async fn logout(
    core: &Core,
    request: Request<pb::LogoutRequest>,
) -> Result<Response<pb::LogoutResponse>, Status> {
    let request = request.into_inner();
    let credential = credential_from_wire(&request.scheme, &request.credential)?;
    core.auth
        .logout(&request.context, &credential)
        .await
        .map_err(to_status)?;
    Ok(Response::new(pb::LogoutResponse {}))
}

pub async fn register(
    core: &Core,
    request: Request<pb::RegisterRequest>,
) -> Result<Response<pb::RegisterResponse>, Status> {
    let request = request.into_inner();
    let email = Some(request.email.as_str()).filter(|e| !e.is_empty());
    let username = core
        .auth
        .register(
            &request.context,
            &request.username,
            &request.password,
            email,
        )
        .await
        .map_err(to_status)?;
    Ok(Response::new(pb::RegisterResponse { username }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_round_trip_through_their_wire_form() {
        for credential in [
            Credential::Basic {
                username: "ana".into(),
                password: "p:a ss".into(),
            },
            Credential::Bearer {
                token: "abc.def.ghi".into(),
            },
        ] {
            let (scheme, value) = credential_to_wire(&credential);
            assert_eq!(
                credential_from_wire(&scheme, &value).expect("round trip"),
                credential
            );
            let mut metadata = MetadataMap::new();
            metadata.insert(
                REGISTRY_AUTH_METADATA,
                format!("{scheme} {value}").parse().expect("header"),
            );
            assert_eq!(
                registry_credential(&metadata).expect("metadata"),
                Some(credential)
            );
        }
        assert_eq!(
            credential_to_wire(&Credential::Basic {
                username: "u".into(),
                password: "p".into()
            })
            .1,
            "dTpw"
        );
        assert_eq!(
            registry_credential(&MetadataMap::new()).expect("none"),
            None
        );
    }

    #[test]
    fn a_malformed_credential_is_refused_without_repeating_it() {
        for (scheme, value) in [
            ("basic", "not base64!"),
            ("basic", "bm9jb2xvbg=="),
            ("digest", "secret-value"),
            ("bearer", " "),
        ] {
            let status = credential_from_wire(scheme, value).expect_err("malformed");
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
            assert!(
                !status.message().contains(value.trim()) || value.trim().is_empty(),
                "{}",
                status.message()
            );
        }
    }
}
