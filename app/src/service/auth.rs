//! Login, logout and register against a context's auth server or registry.
//! With an auth server, login exchanges the password for its access token
//! (a `Bearer` credential); without one, the password itself is checked
//! against the registry's `/v2/` and becomes a `Basic` credential. Either
//! way the credential goes back to the user: the daemon keeps none and logs
//! none.

use std::sync::Arc;

use async_trait::async_trait;
use tracing::{info, instrument};
use vmr_ports::driving::{AuthUseCases, Context, ErrorKind, LoginOutcome, UseCaseError};
use vmr_ports::{
    AuthClient, AuthConnector, AuthTarget, Credential, RegistryConnector, RegistryError,
    RegistryTarget,
};

use super::contexts::ContextService;

/// The account use cases.
pub struct AuthService {
    contexts: Arc<ContextService>,
    registries: Arc<dyn RegistryConnector>,
    auth: Arc<dyn AuthConnector>,
}

fn required(field: &str, value: &str) -> Result<(), UseCaseError> {
    if value.is_empty() {
        Err(UseCaseError::invalid(field, "is required"))
    } else {
        Ok(())
    }
}

impl AuthService {
    pub fn new(
        contexts: Arc<ContextService>,
        registries: Arc<dyn RegistryConnector>,
        auth: Arc<dyn AuthConnector>,
    ) -> Self {
        Self {
            contexts,
            registries,
            auth,
        }
    }

    /// The context's auth server, if it has one.
    fn auth_client(&self, context: &Context) -> Result<Option<Arc<dyn AuthClient>>, UseCaseError> {
        match context.auth_url.as_deref().filter(|u| !u.is_empty()) {
            None => Ok(None),
            Some(url) => Ok(Some(self.auth.connect(&AuthTarget {
                base_url: url.to_owned(),
                insecure: context.insecure,
            })?)),
        }
    }
}

#[async_trait]
impl AuthUseCases for AuthService {
    #[instrument(skip(self, password))]
    async fn login(
        &self,
        context: &str,
        username: &str,
        password: &str,
    ) -> Result<LoginOutcome, UseCaseError> {
        required("username", username)?;
        required("password", password)?;
        let context = self.contexts.resolve(context).await?;
        let registry_url = context.registry_url.clone().filter(|u| !u.is_empty());
        let (credential, expires_in) = if let Some(auth) = self.auth_client(&context)? {
            let token = auth.login(username, password).await?;
            info!(server = %auth.describe(), "logged in at the auth server");
            (
                Credential::Bearer {
                    token: token.access_token,
                },
                token.expires_in,
            )
        } else if let Some(url) = &registry_url {
            let credential = Credential::Basic {
                username: username.to_owned(),
                password: password.to_owned(),
            };
            let registry = self.registries.connect(&RegistryTarget {
                base_url: url.clone(),
                insecure: context.insecure,
                credential: Some(credential.clone()),
            })?;
            // A registry without auth accepts anything here, as docker login
            // does; one with Basic or token auth checks the password now.
            registry.ping().await.map_err(|e| match e {
                RegistryError::Unauthorized { registry, message } => UseCaseError::new(
                    ErrorKind::Unauthenticated,
                    format!(
                        "registry {registry} refused the login of {username}: wrong username or password ({message})"
                    ),
                ),
                other => other.into(),
            })?;
            info!(registry = %registry.describe(), "password accepted by the registry");
            (credential, None)
        } else {
            return Err(UseCaseError::precondition(format!(
                "context {} has neither an auth server nor a registry to log in to",
                context.name
            )));
        };
        Ok(LoginOutcome {
            context: context.name,
            credential,
            expires_in,
            username: username.to_owned(),
            registry_url,
        })
    }

    #[instrument(skip(self, credential))]
    async fn logout(&self, context: &str, credential: &Credential) -> Result<(), UseCaseError> {
        let context = self.contexts.resolve(context).await?;
        // A password, or a token without a server to revoke it at: forgetting
        // it (the client's part) is all there is to do.
        if let (Credential::Bearer { token }, Some(auth)) =
            (credential, self.auth_client(&context)?)
        {
            auth.logout(token).await?;
            info!(server = %auth.describe(), "access token revoked");
        }
        Ok(())
    }

    #[instrument(skip(self, password, email))]
    async fn register(
        &self,
        context: &str,
        username: &str,
        password: &str,
        email: Option<&str>,
    ) -> Result<String, UseCaseError> {
        required("username", username)?;
        required("password", password)?;
        let context = self.contexts.resolve(context).await?;
        let Some(auth) = self.auth_client(&context)? else {
            return Err(UseCaseError::precondition(format!(
                "context {} has no auth server to register with; create a context with --auth-url",
                context.name
            )));
        };
        auth.register(username, password, email.filter(|e| !e.is_empty()))
            .await?;
        info!(server = %auth.describe(), "user registered");
        Ok(username.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use vmr_adapters::fake::auth::{FakeAccess, FakeAuth};
    use vmr_adapters::fake::registry::FakeRegistry;
    use vmr_ports::driving::ContextUseCases;

    use super::*;

    async fn service(auth: FakeAuth, with_auth_url: bool) -> (AuthService, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let contexts = Arc::new(ContextService::new(
            dir.path().join("contexts.json"),
            Some("http://127.0.0.1:5000".into()),
            with_auth_url.then(|| "http://127.0.0.1:5005".into()),
        ));
        contexts
            .create(Context {
                name: "bare".into(),
                registry_url: Some("http://127.0.0.1:5001".into()),
                auth_url: None,
                insecure: false,
            })
            .await
            .expect("context");
        let registry = Arc::new(FakeRegistry::with_auth(auth.clone()));
        (AuthService::new(contexts, registry, Arc::new(auth)), dir)
    }

    #[tokio::test]
    async fn login_with_an_auth_server_returns_its_token_and_logout_revokes_it() {
        let auth = FakeAuth::new().with_user("ana", "secret", FakeAccess::PullPush);
        let (svc, _dir) = service(auth.clone(), true).await;
        let outcome = svc.login("", "ana", "secret").await.expect("login");
        assert_eq!(outcome.context, "default");
        assert!(matches!(outcome.credential, Credential::Bearer { .. }));
        assert_eq!(
            outcome.registry_url.as_deref(),
            Some("http://127.0.0.1:5000")
        );
        assert_eq!(auth.active_sessions(), 1);
        svc.logout("", &outcome.credential).await.expect("logout");
        assert_eq!(auth.active_sessions(), 0);

        let err = svc
            .login("", "ana", "wrong")
            .await
            .expect_err("wrong password");
        assert_eq!(err.kind, ErrorKind::Unauthenticated);
        let err = svc.login("", "", "x").await.expect_err("no user");
        assert_eq!(err.field.as_deref(), Some("username"));
    }

    #[tokio::test]
    async fn login_without_an_auth_server_checks_the_password_at_the_registry() {
        let auth = FakeAuth::new().with_user("ana", "secret", FakeAccess::PullPush);
        let (svc, _dir) = service(auth, false).await;
        let outcome = svc.login("bare", "ana", "secret").await.expect("login");
        assert_eq!(
            outcome.credential,
            Credential::Basic {
                username: "ana".into(),
                password: "secret".into()
            }
        );
        assert_eq!(outcome.expires_in, None);
        let err = svc.login("bare", "ana", "nope").await.expect_err("refused");
        assert_eq!(err.kind, ErrorKind::Unauthenticated);
        assert!(err.message.contains("wrong username or password"), "{err}");
        assert!(!err.message.contains("nope"), "{err}");
        // Nothing to revoke for a password.
        svc.logout("bare", &outcome.credential)
            .await
            .expect("logout");
    }

    #[tokio::test]
    async fn register_needs_an_auth_server() {
        let auth = FakeAuth::new();
        let (svc, _dir) = service(auth.clone(), true).await;
        assert_eq!(
            svc.register("", "bob", "bobpass", Some("b@example.org"))
                .await
                .expect("register"),
            "bob"
        );
        assert_eq!(auth.email_of("bob").as_deref(), Some("b@example.org"));
        let err = svc
            .register("", "bob", "bobpass", None)
            .await
            .expect_err("twice");
        assert_eq!(err.kind, ErrorKind::AlreadyExists);
        let err = svc
            .register("bare", "eve", "evepass", None)
            .await
            .expect_err("no auth server");
        assert_eq!(err.kind, ErrorKind::FailedPrecondition);
        assert!(err.message.contains("no auth server"), "{err}");
    }
}
