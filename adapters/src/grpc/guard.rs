//! Bad requests to the small-message methods (reflection, health, events)
//! end with a clear status. Left to themselves, tonic's generated services
//! answer a request that does not decode with INTERNAL, one over the codec's
//! limit with OUT_OF_RANGE, and tonic-reflection ends its stream with OK
//! on either (it drops the stream's error). This layer reads the request
//! frames of those methods as they pass: a message larger than
//! [`MAX_SMALL_REQUEST`] gets RESOURCE_EXHAUSTED, one that is not the
//! method's request message gets INVALID_ARGUMENT. It then ends the request
//! (the method sees its end, buffering at most one bounded message) and puts
//! the status in the response in place of whatever the method said.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use prost::Message;
use tonic::Code;
use tower::{Layer, Service};

/// The largest request message of a guarded method: reflection asks name a
/// symbol or a file, an events request holds at most 64 short filters.
pub const MAX_SMALL_REQUEST: usize = 64 * 1024;

/// Whether bytes decode as the method's request message.
type Check = fn(&[u8]) -> bool;

fn reflection_request(bytes: &[u8]) -> bool {
    // v1alpha's messages are v1's on the wire.
    tonic_reflection::pb::v1::ServerReflectionRequest::decode(bytes).is_ok()
}

fn health_request(bytes: &[u8]) -> bool {
    tonic_health::pb::HealthCheckRequest::decode(bytes).is_ok()
}

fn events_request(bytes: &[u8]) -> bool {
    vmr_proto::v1::WatchEventsRequest::decode(bytes).is_ok()
}

/// The guarded methods and their request messages.
fn guarded(path: &str) -> Option<(&'static str, Check)> {
    match path {
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        | "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo" => {
            Some(("ServerReflectionRequest", reflection_request))
        }
        "/grpc.health.v1.Health/Check" | "/grpc.health.v1.Health/Watch" => {
            Some(("HealthCheckRequest", health_request))
        }
        "/vmregistry.v1.VMService/WatchEvents" => Some(("WatchEventsRequest", events_request)),
        _ => None,
    }
}

/// The tower layer that guards the small-message methods.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestGuardLayer;

impl<S> Layer<S> for RequestGuardLayer {
    type Service = RequestGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestGuard { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RequestGuard<S> {
    inner: S,
}

/// The status a guarded call ends with, once its request was refused.
type Verdict = Arc<Mutex<Option<(Code, String)>>>;

fn verdict(slot: &Verdict) -> Option<(Code, String)> {
    slot.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// Puts the refusal in `headers` (response headers or trailers) in place of
/// the method's own status.
fn overwrite(headers: &mut HeaderMap, (code, message): &(Code, String)) {
    headers.insert("grpc-status", HeaderValue::from(*code as i32));
    let encoded: String = message
        .bytes()
        .map(|b| match b {
            b' '..=b'~' if b != b'%' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    if let Ok(value) = HeaderValue::from_str(&encoded) {
        headers.insert("grpc-message", value);
    }
}

impl<S, B, R> Service<Request<B>> for RequestGuard<S>
where
    S: Service<Request<GuardedRequest<B>>, Response = Response<R>>,
    S::Future: Send + 'static,
    B: Body<Data = Bytes>,
    R: Body,
{
    type Response = Response<GuardedResponse<R>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let slot: Verdict = Arc::default();
        let path = request.uri().path();
        let frames = guarded(path).map(|(name, check)| Frames::new(path, name, check));
        let guard_slot = slot.clone();
        let request = request.map(|inner| GuardedRequest {
            inner,
            frames,
            slot: guard_slot,
            ended: false,
        });
        let future = self.inner.call(request);
        Box::pin(async move {
            let mut response = future.await?;
            if let Some(refusal) = verdict(&slot)
                && response.headers().contains_key("grpc-status")
            {
                overwrite(response.headers_mut(), &refusal);
            }
            Ok(response.map(|inner| GuardedResponse { inner, slot }))
        })
    }
}

/// Where a guarded request's frames stand.
struct Frames {
    method: String,
    name: &'static str,
    check: Check,
    /// The 5-byte gRPC message prefix (compressed flag, big-endian length).
    header: [u8; 5],
    header_len: usize,
    /// Bytes of the current message still to come.
    remaining: usize,
    in_message: bool,
    compressed: bool,
    message: Vec<u8>,
}

impl Frames {
    fn new(method: &str, name: &'static str, check: Check) -> Self {
        Self {
            method: method.to_string(),
            name,
            check,
            header: [0; 5],
            header_len: 0,
            remaining: 0,
            in_message: false,
            compressed: false,
            message: Vec::new(),
        }
    }

    fn feed(&mut self, mut data: &[u8]) -> Result<(), (Code, String)> {
        while !data.is_empty() {
            if !self.in_message {
                let take = (5 - self.header_len).min(data.len());
                self.header[self.header_len..self.header_len + take].copy_from_slice(&data[..take]);
                self.header_len += take;
                data = &data[take..];
                if self.header_len < 5 {
                    return Ok(());
                }
                let len = u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]) as usize;
                if len > MAX_SMALL_REQUEST {
                    return Err((
                        Code::ResourceExhausted,
                        format!(
                            "{}: a request message of {len} bytes; a {} is at most {MAX_SMALL_REQUEST} bytes",
                            self.method, self.name
                        ),
                    ));
                }
                self.compressed = self.header[0] != 0;
                self.remaining = len;
                self.in_message = true;
                self.message.clear();
            }
            let take = self.remaining.min(data.len());
            if !self.compressed {
                self.message.extend_from_slice(&data[..take]);
            }
            self.remaining -= take;
            data = &data[take..];
            if self.remaining == 0 {
                // A compressed message is the codec's to refuse or read.
                if !self.compressed && !(self.check)(&self.message) {
                    return Err((
                        Code::InvalidArgument,
                        format!(
                            "{}: the request message is not a valid {}",
                            self.method, self.name
                        ),
                    ));
                }
                self.in_message = false;
                self.header_len = 0;
            }
        }
        Ok(())
    }
}

pin_project_lite::pin_project! {
    /// A request body whose messages are checked as they pass; it ends at
    /// the first refused one.
    pub struct GuardedRequest<B> {
        #[pin]
        inner: B,
        frames: Option<Frames>,
        slot: Verdict,
        ended: bool,
    }
}

impl<B: Body<Data = Bytes>> Body for GuardedRequest<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if *this.ended {
            return Poll::Ready(None);
        }
        let polled = this.inner.poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(frames)) = (&polled, this.frames.as_mut())
            && let Some(data) = frame.data_ref()
            && let Err(refusal) = frames.feed(data)
        {
            tracing::debug!(status = ?refusal.0, message = %refusal.1, "request refused");
            *this.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(refusal);
            *this.ended = true;
            return Poll::Ready(None);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// A response body whose trailers carry the refusal, if there was one.
    pub struct GuardedResponse<B> {
        #[pin]
        inner: B,
        slot: Verdict,
    }
}

impl<B: Body> Body for GuardedResponse<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let mut polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &mut polled
            && let Some(trailers) = frame.trailers_mut()
            && let Some(refusal) = verdict(this.slot)
        {
            overwrite(trailers, &refusal);
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
#[path = "guard_tests.rs"]
mod tests;
