//! An in-memory auth server: users with repository rights, login sessions
//! that logout revokes, and registry tokens. A [`FakeRegistry`] built with
//! [`FakeRegistry::with_auth`] checks credentials against the same users, so
//! login → push → pull → logout behaves as with the real services.
//!
//! [`FakeRegistry`]: super::registry::FakeRegistry
//! [`FakeRegistry::with_auth`]: super::registry::FakeRegistry::with_auth

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use vmr_ports::{
    AuthClient, AuthConnector, AuthError, AuthTarget, Credential, LoginToken, RegistryToken,
};

use crate::registry::http::{Endpoint, EndpointError};

/// What a user may do to repositories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeAccess {
    Pull,
    PullPush,
}

impl FakeAccess {
    pub fn can_push(self) -> bool {
        self == Self::PullPush
    }
}

/// Lifetime the fake reports for access and registry tokens.
const TOKEN_SECONDS: u64 = 3600;

struct User {
    password: String,
    email: Option<String>,
    access: FakeAccess,
}

#[derive(Default)]
struct AuthState {
    users: HashMap<String, User>,
    /// Access token → username.
    sessions: HashMap<String, String>,
    /// Registry token → username.
    registry_tokens: HashMap<String, String>,
    issued: u64,
    down: bool,
}

/// The fake auth server; clones share state.
#[derive(Clone)]
pub struct FakeAuth {
    state: Arc<Mutex<AuthState>>,
    /// Rights of users created through `register`.
    registered_access: FakeAccess,
}

impl Default for FakeAuth {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeAuth {
    /// No users; registered users may pull and push.
    pub fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(AuthState::default())),
            registered_access: FakeAccess::PullPush,
        }
    }

    /// Rights of users created through `register` from now on.
    pub fn with_registered_access(mut self, access: FakeAccess) -> Self {
        self.registered_access = access;
        self
    }

    /// Adds (or replaces) a user.
    pub fn with_user(self, username: &str, password: &str, access: FakeAccess) -> Self {
        self.lock().users.insert(
            username.to_owned(),
            User {
                password: password.to_owned(),
                email: None,
                access,
            },
        );
        self
    }

    /// Makes every call fail with `Unavailable` (or work again).
    pub fn set_unavailable(&self, down: bool) {
        self.lock().down = down;
    }

    /// Login sessions not logged out.
    pub fn active_sessions(&self) -> usize {
        self.lock().sessions.len()
    }

    /// The email a user registered with.
    pub fn email_of(&self, username: &str) -> Option<String> {
        self.lock()
            .users
            .get(username)
            .and_then(|u| u.email.clone())
    }

    fn lock(&self) -> MutexGuard<'_, AuthState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the auth server is down.
    pub(crate) fn is_down(&self) -> bool {
        self.lock().down
    }

    /// The user a credential proves, or why not: a password, an access token
    /// from login, or a registry token from `token`.
    pub(crate) fn authenticate(
        &self,
        credential: &Credential,
    ) -> Result<(String, FakeAccess), String> {
        let state = self.lock();
        let username = match credential {
            Credential::Basic { username, password } => match state.users.get(username) {
                Some(user) if user.password == *password => username.clone(),
                _ => return Err("wrong username or password".to_owned()),
            },
            Credential::Bearer { token } => match state
                .sessions
                .get(token)
                .or_else(|| state.registry_tokens.get(token))
            {
                Some(username) => username.clone(),
                None => return Err("unknown or revoked token".to_owned()),
            },
        };
        let access = state
            .users
            .get(&username)
            .map(|u| u.access)
            .ok_or_else(|| format!("user {username} no longer exists"))?;
        Ok((username, access))
    }

    fn issue(state: &mut AuthState, kind: &str) -> String {
        state.issued += 1;
        format!("fake-{kind}-{}", state.issued)
    }
}

impl AuthConnector for FakeAuth {
    fn connect(&self, target: &AuthTarget) -> Result<Arc<dyn AuthClient>, AuthError> {
        let endpoint = Endpoint::parse(&target.base_url, target.insecure).map_err(|e| match e {
            EndpointError::Invalid { url, reason } => AuthError::InvalidTarget { url, reason },
            EndpointError::InsecureRefused { host } => AuthError::InsecureRefused { host },
        })?;
        Ok(Arc::new(FakeAuthClient {
            auth: self.clone(),
            server: endpoint.display().to_owned(),
        }))
    }
}

/// A client of the fake auth server.
pub struct FakeAuthClient {
    auth: FakeAuth,
    server: String,
}

impl FakeAuthClient {
    fn up(&self) -> Result<MutexGuard<'_, AuthState>, AuthError> {
        let state = self.auth.lock();
        if state.down {
            return Err(AuthError::Unavailable {
                server: self.server.clone(),
                message: "cannot connect: connection refused".to_owned(),
            });
        }
        Ok(state)
    }

    fn unauthorized(&self, message: &str) -> AuthError {
        AuthError::Unauthorized {
            server: self.server.clone(),
            message: message.to_owned(),
        }
    }
}

#[async_trait]
impl AuthClient for FakeAuthClient {
    async fn register<'a>(
        &self,
        username: &str,
        password: &str,
        email: Option<&'a str>,
    ) -> Result<(), AuthError> {
        let mut state = self.up()?;
        let invalid = |message: &str| AuthError::InvalidRequest {
            server: self.server.clone(),
            message: message.to_owned(),
        };
        if username.is_empty()
            || !username
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(invalid("username must be letters, digits, `.`, `_` or `-`"));
        }
        if password.len() < 6 {
            return Err(invalid("password must be at least 6 characters"));
        }
        if state.users.contains_key(username) {
            return Err(AuthError::AlreadyExists {
                server: self.server.clone(),
                message: format!("user {username} already exists"),
            });
        }
        state.users.insert(
            username.to_owned(),
            User {
                password: password.to_owned(),
                email: email.map(str::to_owned),
                access: self.auth.registered_access,
            },
        );
        Ok(())
    }

    async fn login(&self, username: &str, password: &str) -> Result<LoginToken, AuthError> {
        let mut state = self.up()?;
        match state.users.get(username) {
            Some(user) if user.password == password => {}
            _ => return Err(self.unauthorized("wrong username or password")),
        }
        let access_token = FakeAuth::issue(&mut state, "access");
        state
            .sessions
            .insert(access_token.clone(), username.to_owned());
        Ok(LoginToken {
            access_token,
            token_type: "Bearer".to_owned(),
            expires_in: Some(TOKEN_SECONDS),
        })
    }

    async fn logout(&self, access_token: &str) -> Result<(), AuthError> {
        let mut state = self.up()?;
        match state.sessions.remove(access_token) {
            Some(_) => Ok(()),
            None => Err(self.unauthorized("unknown or revoked access token")),
        }
    }

    async fn token<'a>(
        &self,
        _service: &str,
        _scopes: &[String],
        credential: Option<&'a Credential>,
    ) -> Result<RegistryToken, AuthError> {
        drop(self.up()?);
        let Some(credential) = credential else {
            return Err(self.unauthorized("authentication required"));
        };
        let (username, _) = self
            .auth
            .authenticate(credential)
            .map_err(|m| self.unauthorized(&m))?;
        let mut state = self.auth.lock();
        let token = FakeAuth::issue(&mut state, "registry");
        state.registry_tokens.insert(token.clone(), username);
        Ok(RegistryToken {
            token,
            expires_in: TOKEN_SECONDS,
        })
    }

    async fn ping(&self) -> Result<(), AuthError> {
        self.up().map(drop)
    }

    fn describe(&self) -> String {
        self.server.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(auth: &FakeAuth) -> Arc<dyn AuthClient> {
        auth.connect(&AuthTarget {
            base_url: "http://127.0.0.1:5005".to_owned(),
            insecure: false,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn register_login_logout() {
        let auth = FakeAuth::new();
        let c = client(&auth);
        c.register("alice", "secret1", Some("a@example.com"))
            .await
            .unwrap();
        assert!(matches!(
            c.register("alice", "secret1", None).await,
            Err(AuthError::AlreadyExists { .. })
        ));
        assert!(matches!(
            c.login("alice", "wrong!!").await,
            Err(AuthError::Unauthorized { .. })
        ));
        let token = c.login("alice", "secret1").await.unwrap();
        assert_eq!(auth.active_sessions(), 1);
        let bearer = Credential::Bearer {
            token: token.access_token.clone(),
        };
        c.token("reg", &["repository:a:pull".to_owned()], Some(&bearer))
            .await
            .unwrap();
        c.logout(&token.access_token).await.unwrap();
        assert_eq!(auth.active_sessions(), 0);
        assert!(matches!(
            c.logout(&token.access_token).await,
            Err(AuthError::Unauthorized { .. })
        ));
        assert!(matches!(
            c.token("reg", &[], Some(&bearer)).await,
            Err(AuthError::Unauthorized { .. })
        ));
        assert_eq!(auth.email_of("alice").as_deref(), Some("a@example.com"));
    }

    #[tokio::test]
    async fn down_and_insecure() {
        let auth = FakeAuth::new();
        auth.set_unavailable(true);
        assert!(matches!(
            client(&auth).ping().await,
            Err(AuthError::Unavailable { .. })
        ));
        let refused = auth.connect(&AuthTarget {
            base_url: "http://auth.example.com".to_owned(),
            insecure: false,
        });
        assert!(matches!(refused, Err(AuthError::InsecureRefused { .. })));
    }
}
