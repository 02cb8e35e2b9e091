//! Authentication against real registries: htpasswd Basic auth
//! (`VMR_TEST_REGISTRY_BASIC`) and token auth (`VMR_TEST_REGISTRY_TOKEN`)
//! with vmr's test auth server on the realm port; and the auth-server client
//! (register, login, logout, token) against that server.

use crate::registry_support::*;
use base64::Engine as _;
use bytes::Bytes;
use vmr_adapters::auth::HttpAuthConnector;
use vmr_adapters::registry::RetryPolicy;
use vmr_domain::image::{Digest, MANIFEST_MEDIA_TYPE};
use vmr_ports::{
    AuthConnector, AuthError, AuthTarget, Credential, ManifestReference, RegistryClient,
    RegistryError,
};
use vmr_tests::authserver::{AuthServer, AuthServerConfig};

/// Pushes a config, a disk and a manifest tagged `v1`; returns the manifest digest.
async fn push_image(
    client: &dyn RegistryClient,
    repo: &vmr_domain::image::Repository,
) -> Result<Digest, RegistryError> {
    let config = Bytes::from_static(br#"{"vm":"auth"}"#);
    let disk = noise(50_000, 9);
    for blob in [&config, &disk] {
        let digest = Digest::of(blob);
        if client.blob_exists(repo, &digest).await?.is_none() {
            client
                .upload_blob(repo, &digest, blob.len() as u64, as_stream(blob), None)
                .await?;
        }
    }
    let manifest = manifest(
        (&Digest::of(&config), config.len()),
        (&Digest::of(&disk), disk.len()),
    );
    client
        .put_manifest(
            repo,
            &ManifestReference::Tag("v1".parse().expect("valid tag")),
            manifest,
            MANIFEST_MEDIA_TYPE,
        )
        .await
}

#[tokio::test]
async fn basic_auth_registry() {
    let Some(registry) = service_env("VMR_TEST_REGISTRY_BASIC") else {
        return;
    };
    let user = service_env("VMR_TEST_REGISTRY_BASIC_USER").expect("user");
    let pass = service_env("VMR_TEST_REGISTRY_BASIC_PASS").expect("password");
    let repo = unique_repo("basic");

    let err = connect(&registry, None)
        .ping()
        .await
        .expect_err("anonymous");
    assert!(
        matches!(&err, RegistryError::Unauthorized { message, .. } if message.contains("log in")),
        "{err}"
    );

    let err = connect(&registry, basic(&user, "wrong-password"))
        .ping()
        .await
        .expect_err("wrong password");
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    let err = push_image(
        connect(&registry, basic(&user, "wrong-password")).as_ref(),
        &repo,
    )
    .await
    .expect_err("wrong password push");
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");

    let client = connect(&registry, basic(&user, &pass));
    client.ping().await.expect("right password");
    let digest = push_image(client.as_ref(), &repo)
        .await
        .expect("push with Basic auth");
    let got = client
        .get_manifest(&repo, &ManifestReference::Tag("v1".parse().unwrap()))
        .await
        .expect("pull with Basic auth");
    assert_eq!(got.digest, digest);

    // Streamed uploads (one PUT, one PATCH) carry the credential too.
    let options = vmr_adapters::registry::RegistryOptions {
        monolithic_limit: 64 * 1024,
        streamed_put_limit: 256 * 1024,
        ..Default::default()
    };
    let streamed = connect_with(options, &registry, basic(&user, &pass));
    for (len, seed) in [(200_000, 31), (400_000, 32)] {
        let blob = noise(len, seed);
        let digest = Digest::of(&blob);
        streamed
            .upload_blob_from(&repo, &digest, len as u64, MemorySource::new(&blob), None)
            .await
            .expect("streamed upload with Basic auth");
        assert_eq!(
            streamed.blob_exists(&repo, &digest).await.unwrap(),
            Some(len as u64)
        );
    }
}

#[tokio::test]
async fn token_registry_grants_what_the_user_may_do() {
    let Some(registry) = service_env("VMR_TEST_REGISTRY_TOKEN") else {
        return;
    };
    service_env("VMR_TEST_TOKEN_KEY").expect("token key");
    init();
    AuthServer::shared_on_realm_port().expect("test auth server on the realm port");
    let repo = unique_repo("token");

    // writer: push and pull.
    let writer = connect(&registry, basic("writer", "writerpass"));
    writer.ping().await.expect("writer ping");
    let digest = push_image(writer.as_ref(), &repo)
        .await
        .expect("writer pushes");
    assert_eq!(writer.list_tags(&repo).await.unwrap().len(), 1);

    // reader: pull yes, push no (a token without push: PERMISSION_DENIED).
    let reader = connect(&registry, basic("reader", "readerpass"));
    let got = reader
        .get_manifest(&repo, &ManifestReference::Digest(digest.clone()))
        .await
        .expect("reader pulls");
    assert_eq!(got.digest, digest);
    let blob = noise(1000, 10);
    let err = reader
        .upload_blob(&repo, &Digest::of(&blob), 1000, as_stream(&blob), None)
        .await
        .expect_err("reader pushes");
    assert!(matches!(err, RegistryError::Denied { .. }), "{err}");
    let err = reader
        .put_manifest(
            &repo,
            &ManifestReference::Tag("v2".parse().unwrap()),
            got.bytes,
            MANIFEST_MEDIA_TYPE,
        )
        .await
        .expect_err("reader tags");
    assert!(matches!(err, RegistryError::Denied { .. }), "{err}");

    // Wrong password and no credential: UNAUTHENTICATED.
    let err = connect(&registry, basic("writer", "nope"))
        .ping()
        .await
        .expect_err("wrong password");
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    let err = connect(&registry, None)
        .get_manifest(&repo, &ManifestReference::Digest(digest))
        .await
        .expect_err("anonymous");
    assert!(
        matches!(&err, RegistryError::Unauthorized { message, .. } if message.contains("log in")),
        "{err}"
    );

    let err = writer
        .get_manifest(&repo, &ManifestReference::Tag("missing".parse().unwrap()))
        .await
        .expect_err("missing manifest");
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn login_token_works_as_registry_credential_until_logout() {
    let Some(registry) = service_env("VMR_TEST_REGISTRY_TOKEN") else {
        return;
    };
    service_env("VMR_TEST_TOKEN_KEY").expect("token key");
    init();
    let auth_url = AuthServer::shared_on_realm_port().expect("test auth server on the realm port");
    let auth = HttpAuthConnector::new(RetryPolicy::default())
        .expect("auth connector")
        .connect(&AuthTarget {
            base_url: auth_url,
            insecure: false,
        })
        .expect("auth client");
    let login = auth.login("writer", "writerpass").await.expect("login");
    let bearer = Some(Credential::Bearer {
        token: login.access_token.clone(),
    });
    let repo = unique_repo("bearer");
    push_image(connect(&registry, bearer.clone()).as_ref(), &repo)
        .await
        .expect("push with the login token");

    auth.logout(&login.access_token).await.expect("logout");
    let err = connect(&registry, bearer)
        .ping()
        .await
        .expect_err("revoked token");
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
}

/// The payload of a JWT, decoded.
fn jwt_claims(jwt: &str) -> serde_json::Value {
    let payload = jwt.split('.').nth(1).expect("three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("json claims")
}

#[tokio::test]
async fn auth_client_speaks_the_contract() {
    if service_env("VMR_TEST_TOKEN_KEY").is_none() {
        return;
    }
    init();
    let server = AuthServer::start(AuthServerConfig::from_env(0).expect("config"))
        .await
        .expect("auth server");
    let connector = HttpAuthConnector::new(RetryPolicy::default()).expect("auth connector");
    let auth = connector
        .connect(&AuthTarget {
            base_url: server.url(),
            insecure: false,
        })
        .expect("auth client");
    auth.ping().await.expect("ping");
    assert_eq!(auth.describe(), server.addr().to_string());

    auth.register("carol", "carolpass", Some("carol@example.com"))
        .await
        .expect("register");
    let err = auth
        .register("carol", "carolpass", None)
        .await
        .expect_err("twice");
    assert!(
        matches!(&err, AuthError::AlreadyExists { message, .. } if message.contains("carol")),
        "{err}"
    );
    let err = auth
        .register("bad name!", "carolpass", None)
        .await
        .expect_err("bad name");
    assert!(matches!(err, AuthError::InvalidRequest { .. }), "{err}");

    let err = auth
        .login("carol", "wrong")
        .await
        .expect_err("wrong password");
    assert!(
        matches!(&err, AuthError::Unauthorized { message, .. } if message.contains("wrong")),
        "{err}"
    );
    let login = auth.login("carol", "carolpass").await.expect("login");
    assert_eq!(login.token_type, "Bearer");
    assert!(login.expires_in.is_some_and(|s| s > 0));
    assert!(
        !format!("{login:?}").contains(&login.access_token),
        "Debug must not show the token"
    );

    let service = std::env::var("VMR_TEST_TOKEN_SERVICE").expect("service");
    let scopes = vec!["repository:team/vm:pull,push".to_owned()];
    let bearer = Credential::Bearer {
        token: login.access_token.clone(),
    };
    let token = auth
        .token(&service, &scopes, Some(&bearer))
        .await
        .expect("token");
    let claims = jwt_claims(&token.token);
    assert_eq!(claims["aud"], service.as_str());
    assert_eq!(claims["sub"], "carol");
    assert_eq!(claims["access"][0]["name"], "team/vm");
    assert_eq!(
        claims["access"][0]["actions"],
        serde_json::json!(["pull", "push"])
    );

    // reader asks for push and gets pull only.
    let reader = Credential::Basic {
        username: "reader".to_owned(),
        password: "readerpass".to_owned(),
    };
    let token = auth
        .token(&service, &scopes, Some(&reader))
        .await
        .expect("reader token");
    assert_eq!(
        jwt_claims(&token.token)["access"][0]["actions"],
        serde_json::json!(["pull"])
    );
    let err = auth
        .token(&service, &scopes, None)
        .await
        .expect_err("anonymous");
    assert!(matches!(err, AuthError::Unauthorized { .. }), "{err}");

    auth.logout(&login.access_token).await.expect("logout");
    let err = auth
        .logout(&login.access_token)
        .await
        .expect_err("logout twice");
    assert!(matches!(err, AuthError::Unauthorized { .. }), "{err}");
    let err = auth
        .token(&service, &scopes, Some(&bearer))
        .await
        .expect_err("revoked");
    assert!(matches!(err, AuthError::Unauthorized { .. }), "{err}");

    let addr = server.addr();
    drop(server);
    tokio::task::yield_now().await;
    let quick = HttpAuthConnector::new(quick_retry()).expect("auth connector");
    let dead = quick
        .connect(&AuthTarget {
            base_url: format!("http://{addr}"),
            insecure: false,
        })
        .expect("auth client");
    let err = dead
        .login("carol", "carolpass")
        .await
        .expect_err("server gone");
    assert!(matches!(err, AuthError::Unavailable { .. }), "{err}");
}
