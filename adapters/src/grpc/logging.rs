//! Logs every call, unary or streaming, once it ends: method, the caller's
//! uid/pid from the socket's peer credentials, duration and gRPC status.
//! It wraps the HTTP service so that it sees streaming calls end too (their
//! status travels in the trailers). The same end is told to the metrics
//! recorder (method, status code, duration).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tonic::transport::server::UdsConnectInfo;
use tower::{Layer, Service};
use vmr_ports::{MetricsRecorder, NoMetrics};

/// The tower layer that adds call logging and call metrics.
#[derive(Clone)]
pub struct CallLogLayer {
    metrics: Arc<dyn MetricsRecorder>,
}

impl Default for CallLogLayer {
    fn default() -> Self {
        Self::new(Arc::new(NoMetrics))
    }
}

impl CallLogLayer {
    /// Logs every call and tells `metrics` how each ended.
    pub fn new(metrics: Arc<dyn MetricsRecorder>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for CallLogLayer {
    type Service = CallLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallLog {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct CallLog<S> {
    inner: S,
    metrics: Arc<dyn MetricsRecorder>,
}

/// What is known about a call when it starts.
#[derive(Clone)]
struct CallInfo {
    method: String,
    uid: Option<u32>,
    pid: Option<i32>,
    started: Instant,
    metrics: Arc<dyn MetricsRecorder>,
}

impl CallInfo {
    fn finish(&self, status: &str, message: Option<&str>) {
        let elapsed = self.started.elapsed();
        // A status that is no number is a broken peer's; UNKNOWN says so.
        let code = status.parse::<i32>().unwrap_or(2);
        self.metrics.call_finished(&self.method, code, elapsed);
        let elapsed_ms = elapsed.as_secs_f64() * 1000.0;
        let uid = self.uid.map_or_else(|| "?".to_string(), |u| u.to_string());
        let pid = self.pid.map_or_else(|| "?".to_string(), |p| p.to_string());
        if status == "0" {
            tracing::info!(method = %self.method, uid = %uid, pid = %pid, duration_ms = elapsed_ms, status, "call");
        } else {
            tracing::warn!(method = %self.method, uid = %uid, pid = %pid, duration_ms = elapsed_ms, status, message = message.unwrap_or(""), "call");
        }
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<(String, Option<String>)> {
    let status = headers.get("grpc-status")?.to_str().ok()?.to_string();
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(percent_decode);
    Some((status, message))
}

/// grpc-message is percent-encoded on the wire.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl<S, B, R> Service<Request<B>> for CallLog<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    R: Body,
{
    type Response = Response<LoggedBody<R>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let creds = request
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|info| info.peer_cred);
        let info = CallInfo {
            method: request.uri().path().to_string(),
            uid: creds.map(|c| c.uid()),
            pid: creds.and_then(|c| c.pid()),
            started: Instant::now(),
            metrics: self.metrics.clone(),
        };
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            // A trailers-only response (most errors) carries the status in
            // its headers; otherwise the body's trailers will.
            let pending = match grpc_status(response.headers()) {
                Some((status, message)) => {
                    info.finish(&status, message.as_deref());
                    None
                }
                None => Some(info),
            };
            Ok(response.map(|inner| LoggedBody { inner, pending }))
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that logs its call when the trailers (or the end) pass.
    pub struct LoggedBody<B> {
        #[pin]
        inner: B,
        pending: Option<CallInfo>,
    }

    impl<B> PinnedDrop for LoggedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            // The client went away before the call finished.
            if let Some(info) = this.project().pending.take() {
                info.finish("1", Some("cancelled by the client"));
            }
        }
    }
}

impl<B: Body> Body for LoggedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(info) = this.pending.take()
                {
                    let (status, message) =
                        grpc_status(trailers).unwrap_or_else(|| ("0".to_string(), None));
                    info.finish(&status, message.as_deref());
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(info) = this.pending.take() {
                    info.finish("13", Some("response body failed"));
                }
            }
            Poll::Ready(None) => {
                if let Some(info) = this.pending.take() {
                    info.finish("0", None);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn grpc_messages_are_percent_decoded() {
        assert_eq!(
            percent_decode("image%20a%3Ab not found"),
            "image a:b not found"
        );
        assert_eq!(percent_decode("100%"), "100%");
    }
}
