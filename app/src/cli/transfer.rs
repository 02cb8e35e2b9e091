//! `vmr push` and `vmr pull`: the call carries the user's stored registry
//! credential for the context in its metadata (the daemon keeps no user
//! tokens), and the server stream of progress drives one bar per blob.

use futures::{Stream, StreamExt};
use tonic::metadata::MetadataValue;
use vmr_proto::v1 as pb;
use vmr_proto::v1::transfer_progress::Event;

use super::Session;
use super::args::TransferArgs;
use super::auth::context_name;
use super::connect::{Reply, RpcError};
use super::credentials::{CredentialStore, StoredCredential};
use super::json::{ToJson, print_json};
use super::output::human_size;
use super::progress::TransferView;

/// The metadata key the daemon reads the user's registry credential from.
pub const REGISTRY_AUTH_METADATA: &str = "x-vmr-registry-auth";

pub async fn push(session: &Session, args: TransferArgs) -> anyhow::Result<()> {
    let mut client = session.client().await?;
    let (context, credential) = stored_credential(session, &mut client).await?;
    let request = authorized(
        pb::PushImageRequest {
            reference: args.reference,
            context,
        },
        credential.as_ref(),
    )?;
    let stream = client.push_image(request).await.reply();
    follow(session, stream, credential.is_some(), ("Pushing", "Pushed")).await
}

pub async fn pull(session: &Session, args: TransferArgs) -> anyhow::Result<()> {
    let mut client = session.client().await?;
    let (context, credential) = stored_credential(session, &mut client).await?;
    let request = authorized(
        pb::PullImageRequest {
            reference: args.reference,
            context,
        },
        credential.as_ref(),
    )?;
    let stream = client.pull_image(request).await.reply();
    follow(session, stream, credential.is_some(), ("Pulling", "Pulled")).await
}

/// The context the call is for (named explicitly, so that the credential and
/// the registry belong together) and the credential `vmr login` stored for
/// it, unless it expired: an expired token would only earn a confusing
/// refusal from the registry.
async fn stored_credential(
    session: &Session,
    client: &mut super::Client,
) -> anyhow::Result<(String, Option<StoredCredential>)> {
    let context = context_name(session, client).await;
    let store = CredentialStore::default_location()?;
    let credential = store
        .get(&context)?
        .filter(|credential| !credential.is_expired(jiff::Timestamp::now()));
    Ok((context, credential))
}

/// Wraps a request with the credential, if any, in the call's metadata.
pub fn authorized<T>(
    message: T,
    credential: Option<&StoredCredential>,
) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    if let Some(credential) = credential {
        let value = MetadataValue::try_from(credential.header_value()).map_err(|_| {
            anyhow::anyhow!("the stored credential is not valid header text; log in again")
        })?;
        request.metadata_mut().insert(REGISTRY_AUTH_METADATA, value);
    }
    Ok(request)
}

async fn follow(
    session: &Session,
    stream: Result<
        impl Stream<Item = Result<pb::TransferProgress, tonic::Status>> + Unpin,
        RpcError,
    >,
    sent_credential: bool,
    (verb, done_word): (&'static str, &'static str),
) -> anyhow::Result<()> {
    let hint = |err: RpcError| -> anyhow::Error {
        // The daemon's message may already say it; say it once.
        if err.code() == tonic::Code::Unauthenticated
            && !sent_credential
            && !err.to_string().contains("log in")
        {
            anyhow::anyhow!("{err} (log in first with `vmr login`)")
        } else {
            err.into()
        }
    };
    let mut stream = stream.map_err(hint)?;
    let mut view = TransferView::new(session.output.shows_progress(), verb, done_word);
    let mut result = None;
    loop {
        let message = match stream.next().await {
            Some(Ok(message)) => message,
            None => break,
            Some(Err(status)) => {
                view.finish();
                return Err(hint(RpcError(status)));
            }
        };
        match message.event {
            Some(Event::Blob(blob)) => view.blob(&blob),
            Some(Event::Done(done)) => result = Some(done),
            None => {}
        }
    }
    view.finish();
    let done = result
        .ok_or_else(|| anyhow::anyhow!("the daemon ended the transfer without a final digest"))?;
    if session.output.is_json() {
        print_json(&done.to_json());
    } else {
        println!(
            "{}: digest: {} ({} transferred)",
            done.reference,
            done.digest,
            human_size(done.bytes_transferred)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_credential_travels_in_the_call_metadata() {
        let credential = StoredCredential {
            scheme: "bearer".to_owned(),
            credential: "abc.def".to_owned(),
            username: "ana".to_owned(),
            registry_url: String::new(),
            expires_at: None,
        };
        let request =
            authorized(pb::PullImageRequest::default(), Some(&credential)).expect("valid header");
        assert_eq!(
            request
                .metadata()
                .get(REGISTRY_AUTH_METADATA)
                .and_then(|value| value.to_str().ok()),
            Some("bearer abc.def")
        );
        let anonymous = authorized(pb::PullImageRequest::default(), None).expect("request");
        assert!(anonymous.metadata().get(REGISTRY_AUTH_METADATA).is_none());
    }

    fn session() -> Session {
        Session {
            socket: "/unused.sock".into(),
            output: crate::cli::output::OutputFormat::Json,
            context: None,
        }
    }

    fn blob(done: u64) -> Result<pb::TransferProgress, tonic::Status> {
        Ok(pb::TransferProgress {
            event: Some(Event::Blob(pb::BlobProgress {
                digest: "sha256:aa".to_owned(),
                media_type: "application/vnd.vmregistry.disk.v1.raw".to_owned(),
                done,
                total: 10,
                skipped: false,
            })),
        })
    }

    const WORDS: (&str, &str) = ("Pulling", "Pulled");

    #[tokio::test]
    async fn a_transfer_ends_with_its_digest() {
        let done = Ok(pb::TransferProgress {
            event: Some(Event::Done(pb::TransferDone {
                reference: "a/b:1".to_owned(),
                digest: "sha256:bb".to_owned(),
                bytes_transferred: 10,
            })),
        });
        let stream = futures::stream::iter([blob(5), blob(10), done]);
        follow(&session(), Ok(stream), true, WORDS)
            .await
            .expect("complete transfer");
    }

    #[tokio::test]
    async fn a_stream_without_a_digest_is_a_failure() {
        let stream = futures::stream::iter([blob(5)]);
        let err = follow(&session(), Ok(stream), true, WORDS)
            .await
            .expect_err("cut short");
        assert!(err.to_string().contains("without a final digest"), "{err}");
    }

    #[tokio::test]
    async fn a_refusal_without_credential_suggests_login() {
        let refused = || Err(tonic::Status::unauthenticated("registry said 401"));
        let stream = futures::stream::iter([blob(5), refused()]);
        let err = follow(&session(), Ok(stream), false, WORDS)
            .await
            .expect_err("refused");
        assert_eq!(
            err.to_string(),
            "registry said 401 (log in first with `vmr login`)"
        );
        // With a credential sent, the refusal is the registry's word alone.
        let stream = futures::stream::iter([refused()]);
        let err = follow(&session(), Ok(stream), true, WORDS)
            .await
            .expect_err("refused");
        assert_eq!(err.to_string(), "registry said 401");
    }
}
