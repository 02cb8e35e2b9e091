//! The client's way to the daemon: which Unix socket, the gRPC channel over
//! it, and turning a failed call into the one sentence the user reads.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};
use vmr_proto::v1::vm_service_client::VmServiceClient;

/// The gRPC client of `VMService` over the daemon's socket.
pub type Client = VmServiceClient<Channel>;

/// The daemon accepts messages up to 4 GiB; so does the client.
const MAX_MESSAGE_BYTES: u64 = 4 << 30;

const STREAM_WINDOW_BYTES: u32 = 16 << 20;
const CONNECTION_WINDOW_BYTES: u32 = 32 << 20;

/// The daemon's default socket: `$XDG_RUNTIME_DIR/vm-registry.sock` for a
/// user other than root who has a runtime directory,
/// `/var/run/vm-registry.sock` otherwise. This mirrors vmrd's own default
/// (`config::Defaults`), so that both ends meet without flags.
pub fn default_socket_path() -> PathBuf {
    crate::config::Defaults::from_env().socket()
}

/// The daemon could not be reached at all.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach vmrd at {}: {reason} ({hint})", path.display())]
pub struct ConnectError {
    pub path: PathBuf,
    pub reason: String,
    /// What the user can check.
    pub hint: &'static str,
}

/// Opens a channel to the daemon's socket.
pub async fn connect(path: &Path) -> Result<Client, ConnectError> {
    let socket = path.to_path_buf();
    // The URI is required by the API but unused: the connector dials the socket.
    let channel = Endpoint::from_static("http://vmrd.invalid")
        // Wider HTTP/2 windows than hyper's defaults keep a disk upload from
        // stalling on flow control when the daemon's data path is fast
        // (shared/research/stream-throughput.md).
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|err| ConnectError {
            path: path.to_path_buf(),
            reason: root_cause(&err),
            hint: hint(&err),
        })?;
    let limit = usize::try_from(MAX_MESSAGE_BYTES).unwrap_or(usize::MAX);
    Ok(VmServiceClient::new(channel)
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit))
}

fn hint(err: &(dyn std::error::Error + 'static)) -> &'static str {
    let mut cause = Some(err);
    while let Some(current) = cause {
        if let Some(io) = current.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::PermissionDenied
        {
            return "is your user in the socket's group?";
        }
        cause = current.source();
    }
    "is the daemon running?"
}

/// The innermost cause: tonic wraps the socket's io error in "transport
/// error", which tells the user nothing.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// A call the daemon answered with an error status; shown as the status's
/// message, which the daemon writes as one sentence for the user.
#[derive(Debug, thiserror::Error)]
#[error("{}", describe(.0))]
pub struct RpcError(pub tonic::Status);

impl RpcError {
    pub fn code(&self) -> tonic::Code {
        self.0.code()
    }
}

fn describe(status: &tonic::Status) -> String {
    // A status with a source was made by the client's transport, not sent
    // by the daemon: its message ("transport error") says nothing.
    if let Some(source) = std::error::Error::source(status) {
        return format!("lost the connection to vmrd: {}", root_cause(source));
    }
    let message = status.message().trim();
    if !message.is_empty() {
        return message.to_owned();
    }
    match status.code() {
        tonic::Code::Unimplemented => {
            "the daemon does not implement this request (it may be older than this client)"
                .to_owned()
        }
        code => format!("the daemon answered {}", code.description()),
    }
}

/// `.reply()` on a call's result: the message, or an [`RpcError`].
pub trait Reply<T> {
    fn reply(self) -> Result<T, RpcError>;
}

impl<T> Reply<T> for Result<tonic::Response<T>, tonic::Status> {
    fn reply(self) -> Result<T, RpcError> {
        self.map(tonic::Response::into_inner).map_err(RpcError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_message_is_shown_as_is() {
        let err = RpcError(tonic::Status::not_found("no VM named web"));
        assert_eq!(err.to_string(), "no VM named web");
    }

    #[test]
    fn empty_unimplemented_status_still_says_what_happened() {
        let err = RpcError(tonic::Status::unimplemented(""));
        assert!(err.to_string().contains("does not implement"), "{err}");
        let err = RpcError(tonic::Status::unimplemented(
            "ComposeUp is not implemented yet",
        ));
        assert_eq!(err.to_string(), "ComposeUp is not implemented yet");
    }

    #[tokio::test]
    async fn missing_socket_names_the_path_and_the_cause() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("absent.sock");
        let err = connect(&path).await.expect_err("nothing listens there");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("cannot reach vmrd at {}: ", path.display())),
            "{text}"
        );
        assert!(text.contains("No such file or directory"), "{text}");
        assert!(text.ends_with("(is the daemon running?)"), "{text}");
    }

    #[test]
    fn default_socket_depends_on_the_user() {
        let path = default_socket_path();
        if nix::unistd::geteuid().is_root() {
            assert_eq!(path, Path::new("/var/run/vm-registry.sock"));
        } else {
            assert!(path.ends_with("vm-registry.sock"), "{}", path.display());
        }
    }
}
