//! Lets gRPC clients that name a Unix socket in `:authority` through.
//!
//! grpc C-core (Python grpcio, Ruby, PHP, C++) sends the socket's path,
//! percent-encoded, as the HTTP/2 `:authority` (`tmp%2Fvmr.sock`);
//! grpc-java and grpc-swift send the path itself. Neither is an authority
//! (RFC 3986 `host[:port]`), and hyper's HTTP/2 layer (the `h2` crate)
//! resets such a stream with PROTOCOL_ERROR before tonic sees it. On a Unix
//! socket the authority names nothing (the socket is the peer), so this
//! reader sits between the socket and h2 and rewrites an `:authority` that
//! does not parse to `localhost`, what grpc-go sends.
//!
//! It works on the frame level of the client's byte stream: every header
//! block (HEADERS and its CONTINUATIONs) is HPACK-decoded with the client's
//! compression context and re-encoded as literals that never touch h2's
//! dynamic table, so the two tables cannot drift apart. Every other frame
//! (DATA above all: disk uploads) passes through untouched, read straight
//! into h2's buffer. What the server writes is not touched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use loona_hpack::Decoder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tonic::transport::server::{Connected, UdsConnectInfo};

/// What a client sends first on an HTTP/2 connection with prior knowledge.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// h2's SETTINGS_MAX_FRAME_SIZE (its default; the server does not raise
/// it), so re-encoded blocks are split at this size.
const MAX_FRAME: usize = 16 * 1024;
/// h2's SETTINGS_HEADER_TABLE_SIZE: the most a client may size its table to.
const HEADER_TABLE: usize = 4096;
/// The largest header block buffered; gRPC's are a few hundred bytes.
const MAX_BLOCK: usize = 1024 * 1024;
/// What an unparseable authority becomes.
const REPLACEMENT: &[u8] = b"localhost";

/// A header block being collected across HEADERS and CONTINUATION frames.
struct Block {
    stream_id: u32,
    /// END_STREAM, kept for the re-encoded HEADERS frame.
    end_stream: bool,
    /// The 5 bytes of a PRIORITY flag, kept as they were.
    priority: Option<[u8; 5]>,
    fragment: BytesMut,
}

/// The socket as h2 reads it: `:authority` repaired, all else as sent.
pub struct AuthorityRepair<S> {
    inner: S,
    decoder: Decoder<'static>,
    /// Bytes read from the socket, not yet parsed.
    input: BytesMut,
    /// Bytes ready for h2.
    output: BytesMut,
    /// Bytes of the current frame's payload still to pass through as they are.
    passthrough: usize,
    preface_seen: bool,
    /// Not HTTP/2, or a block h2 must judge itself: everything passes as is.
    transparent: bool,
    block: Option<Block>,
    repaired: bool,
}

impl<S> AuthorityRepair<S> {
    pub fn new(inner: S) -> Self {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(HEADER_TABLE);
        Self {
            inner,
            decoder,
            input: BytesMut::new(),
            output: BytesMut::new(),
            passthrough: 0,
            preface_seen: false,
            transparent: false,
            block: None,
            repaired: false,
        }
    }

    /// Parses what `input` holds into `output`; false when it needs more bytes.
    fn step(&mut self) -> io::Result<bool> {
        if self.transparent {
            let all = self.input.split();
            self.output.unsplit(all);
            return Ok(false);
        }
        if !self.preface_seen {
            let n = self.input.len().min(PREFACE.len());
            if self.input[..n] != PREFACE[..n] {
                self.transparent = true;
                return Ok(true);
            }
            if n < PREFACE.len() {
                return Ok(false);
            }
            self.preface_seen = true;
            let preface = self.input.split_to(PREFACE.len());
            self.output.unsplit(preface);
            return Ok(true);
        }
        if self.input.len() < FRAME_HEADER {
            return Ok(false);
        }
        let len = usize::from(self.input[0]) << 16
            | usize::from(self.input[1]) << 8
            | usize::from(self.input[2]);
        let (kind, flags) = (self.input[3], self.input[4]);
        let stream_id =
            u32::from_be_bytes([self.input[5], self.input[6], self.input[7], self.input[8]])
                & 0x7fff_ffff;
        let in_block = self.block.is_some();
        if !(kind == HEADERS || (kind == CONTINUATION && in_block)) || len > MAX_BLOCK {
            // Any other frame, or one h2 will refuse on its own (a stray
            // CONTINUATION, an oversized frame): as it is.
            let header = self.input.split_to(FRAME_HEADER);
            self.output.unsplit(header);
            self.passthrough = len;
            return Ok(true);
        }
        if self.input.len() < FRAME_HEADER + len {
            return Ok(false);
        }
        let mut frame = self.input.split_to(FRAME_HEADER + len);
        frame.advance(FRAME_HEADER);
        if kind == HEADERS {
            if in_block {
                return Err(invalid("a HEADERS frame inside an open header block"));
            }
            let Some(block) = start_block(stream_id, flags, frame) else {
                return Err(invalid(
                    "a HEADERS frame whose padding is longer than itself",
                ));
            };
            self.block = Some(block);
        } else if let Some(block) = self.block.as_mut() {
            if block.stream_id != stream_id || block.fragment.len() + len > MAX_BLOCK {
                return Err(invalid("a header block over 1 MiB, or interleaved"));
            }
            block.fragment.unsplit(frame);
        }
        if flags & END_HEADERS != 0
            && let Some(block) = self.block.take()
        {
            self.finish(block)?;
        }
        Ok(true)
    }

    /// Re-encodes a whole header block into `output`.
    fn finish(&mut self, block: Block) -> io::Result<()> {
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let decoded = self.decoder.decode_with_cb(&block.fragment, |name, value| {
            fields.push((name.into_owned(), value.into_owned()));
        });
        if decoded.is_err() {
            // The client's compression is broken: h2 answers that itself
            // (COMPRESSION_ERROR) from the block as it was.
            let mut original = BytesMut::new();
            put_frame_header(
                &mut original,
                block.fragment.len(),
                HEADERS,
                END_HEADERS | if block.end_stream { END_STREAM } else { 0 },
                block.stream_id,
            );
            original.unsplit(block.fragment);
            self.transparent = true;
            self.output.unsplit(original);
            return Ok(());
        }
        let mut encoded = BytesMut::new();
        if let Some(priority) = block.priority {
            encoded.put_slice(&priority);
        }
        for (name, value) in &fields {
            let value = if name == b":authority" && !is_authority(value) {
                if !self.repaired {
                    self.repaired = true;
                    tracing::debug!(
                        authority = %String::from_utf8_lossy(value),
                        "a client named the socket as :authority; read as localhost"
                    );
                }
                REPLACEMENT
            } else {
                value.as_slice()
            };
            put_literal(&mut encoded, name, value);
        }
        let mut first = true;
        while first || !encoded.is_empty() {
            let piece = encoded.split_to(encoded.len().min(MAX_FRAME));
            let last = encoded.is_empty();
            let (kind, mut flags) = if first {
                let mut flags = if block.end_stream { END_STREAM } else { 0 };
                if block.priority.is_some() {
                    flags |= PRIORITY;
                }
                (HEADERS, flags)
            } else {
                (CONTINUATION, 0)
            };
            if last {
                flags |= END_HEADERS;
            }
            put_frame_header(&mut self.output, piece.len(), kind, flags, block.stream_id);
            self.output.unsplit(piece);
            first = false;
        }
        Ok(())
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("HTTP/2: {what}"))
}

/// The header block fragment of a HEADERS frame, its padding and priority
/// taken off; `None` when the padding is longer than the frame.
fn start_block(stream_id: u32, flags: u8, mut payload: BytesMut) -> Option<Block> {
    let mut pad = 0;
    if flags & PADDED != 0 {
        if payload.is_empty() {
            return None;
        }
        pad = usize::from(payload.get_u8());
    }
    let mut priority = None;
    if flags & PRIORITY != 0 {
        if payload.len() < 5 {
            return None;
        }
        let mut bytes = [0u8; 5];
        payload.copy_to_slice(&mut bytes);
        priority = Some(bytes);
    }
    if pad > payload.len() {
        return None;
    }
    payload.truncate(payload.len() - pad);
    Some(Block {
        stream_id,
        end_stream: flags & END_STREAM != 0,
        priority,
        fragment: payload,
    })
}

fn is_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

fn put_frame_header(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream_id: u32) {
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    out.put_slice(&len[1..]);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream_id);
}

/// "Literal Header Field without Indexing — New Name" (RFC 7541 §6.2.2),
/// no Huffman coding: leaves the receiver's dynamic table alone.
fn put_literal(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_u8(0);
    put_string(out, name);
    put_string(out, value);
}

fn put_string(out: &mut BytesMut, s: &[u8]) {
    let mut writer = out.writer();
    // Writing to memory cannot fail.
    let _ = loona_hpack::encoder::encode_integer_into(s.len(), 7, 0, &mut writer);
    writer.into_inner().put_slice(s);
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityRepair<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.passthrough > 0 {
                if !this.input.is_empty() {
                    let n = this.input.len().min(this.passthrough);
                    let bytes = this.input.split_to(n);
                    this.output.unsplit(bytes);
                    this.passthrough -= n;
                    continue;
                }
                // Payload bytes go straight into h2's buffer.
                let limit = this.passthrough.min(buf.remaining());
                let unfilled = buf.initialize_unfilled_to(limit);
                let mut limited = ReadBuf::new(unfilled);
                match Pin::new(&mut this.inner).poll_read(cx, &mut limited) {
                    Poll::Ready(Ok(())) => {
                        let n = limited.filled().len();
                        buf.advance(n);
                        this.passthrough -= n;
                        return Poll::Ready(Ok(()));
                    }
                    other => return other,
                }
            }
            if this.transparent && this.input.is_empty() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            if this.step()? {
                continue;
            }
            if !this.output.is_empty() {
                continue;
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut more = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut more) {
                Poll::Ready(Ok(())) if more.filled().is_empty() => {
                    // The client is gone; whatever it left unparsed goes to
                    // h2 as it is, which then sees the end.
                    let rest = this.input.split();
                    if rest.is_empty() {
                        return Poll::Ready(Ok(()));
                    }
                    this.transparent = true;
                    this.output.unsplit(rest);
                }
                Poll::Ready(Ok(())) => this.input.extend_from_slice(more.filled()),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityRepair<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The caller's peer credentials stay those of the socket, for the call log.
impl Connected for AuthorityRepair<UnixStream> {
    type ConnectInfo = UdsConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
#[path = "authority_tests.rs"]
mod tests;
