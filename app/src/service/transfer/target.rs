//! Which registry a reference means, and whether the context's credential
//! goes with it. A reference without a host means the context's registry.
//! A reference naming a host gets the context's URL, TLS setting and
//! credential only when that host is the context's registry; any other host
//! is reached anonymously (https, or http for loopback): a user's password
//! or token is never sent to a registry it was not issued for.

use vmr_ports::driving::{Context, UseCaseError};
use vmr_ports::{Credential, RegistryTarget};

/// The `host[:port]` of a URL, lowercased (`http://127.0.0.1:5000/` →
/// `127.0.0.1:5000`).
fn authority(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    // Userinfo never belongs in a registry URL, but must not decide a match.
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    authority.to_ascii_lowercase()
}

/// The registry for a push or pull: `host` is the reference's registry part.
pub fn registry_target(
    context: &Context,
    host: Option<&str>,
    credential: Option<Credential>,
) -> Result<RegistryTarget, UseCaseError> {
    let context_registry = context.registry_url.as_deref().filter(|u| !u.is_empty());
    match (host, context_registry) {
        (None, None) => Err(UseCaseError::precondition(format!(
            "context {} has no registry: name one in the reference (host[:port]/path:tag) or use a context created with --registry-url",
            context.name
        ))),
        (None, Some(url)) => Ok(RegistryTarget {
            base_url: url.to_owned(),
            insecure: context.insecure,
            credential,
        }),
        (Some(host), Some(url)) if authority(url) == host.to_ascii_lowercase() => {
            Ok(RegistryTarget {
                base_url: url.to_owned(),
                insecure: context.insecure,
                credential,
            })
        }
        (Some(host), _) => {
            if credential.is_some() {
                tracing::debug!(
                    registry = host,
                    "not the context's registry: the credential stays home"
                );
            }
            Ok(RegistryTarget {
                base_url: host.to_owned(),
                insecure: false,
                credential: None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use vmr_ports::driving::ErrorKind;

    use super::*;

    fn context(url: Option<&str>) -> Context {
        Context {
            name: "lab".into(),
            registry_url: url.map(str::to_owned),
            auth_url: None,
            insecure: true,
        }
    }

    fn token() -> Option<Credential> {
        Some(Credential::Bearer { token: "t".into() })
    }

    #[test]
    fn authorities() {
        assert_eq!(authority("http://127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(authority("https://Reg.Example/v2/"), "reg.example");
        assert_eq!(authority("reg.example:443"), "reg.example:443");
        assert_eq!(authority("https://u@reg.example"), "reg.example");
    }

    #[test]
    fn no_host_means_the_context_registry_with_the_credential() {
        let target = registry_target(&context(Some("http://127.0.0.1:5001")), None, token())
            .expect("target");
        assert_eq!(target.base_url, "http://127.0.0.1:5001");
        assert!(target.insecure);
        assert_eq!(target.credential, token());
    }

    #[test]
    fn the_context_host_keeps_the_credential_another_host_does_not() {
        let ctx = context(Some("http://127.0.0.1:5001"));
        let same = registry_target(&ctx, Some("127.0.0.1:5001"), token()).expect("target");
        assert_eq!(same.base_url, "http://127.0.0.1:5001");
        assert_eq!(same.credential, token());
        let other = registry_target(&ctx, Some("127.0.0.1:5000"), token()).expect("target");
        assert_eq!(other.base_url, "127.0.0.1:5000");
        assert_eq!(other.credential, None);
        assert!(!other.insecure);
    }

    #[test]
    fn no_registry_anywhere_is_a_precondition() {
        let err = registry_target(&context(None), None, None).expect_err("no registry");
        assert_eq!(err.kind, ErrorKind::FailedPrecondition);
        assert!(err.message.contains("context lab has no registry"), "{err}");
        // A host in the reference needs no context registry.
        assert!(registry_target(&context(None), Some("reg.example"), None).is_ok());
    }
}
