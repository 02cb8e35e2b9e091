use loona_hpack::{Decoder, Encoder};
use tokio::io::AsyncReadExt;

use super::*;

fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    put_frame_header(&mut out, payload.len(), kind, flags, stream_id);
    out.put_slice(payload);
    out.to_vec()
}

/// The frames of an HTTP/2 byte stream after its preface.
fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
    assert!(bytes.starts_with(PREFACE));
    bytes = &bytes[PREFACE.len()..];
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        let id = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
        out.push((bytes[3], bytes[4], id, bytes[9..9 + len].to_vec()));
        bytes = &bytes[9 + len..];
    }
    out
}

async fn repaired(input: Vec<u8>) -> Vec<u8> {
    let mut reader = AuthorityRepair::new(input.as_slice());
    let mut out = Vec::new();
    reader.read_to_end(&mut out).await.unwrap();
    out
}

fn request(encoder: &mut Encoder<'_>, authority: &[u8]) -> Vec<u8> {
    encoder.encode([
        (&b":method"[..], &b"POST"[..]),
        (b":scheme", b"http"),
        (b":path", b"/grpc.health.v1.Health/Check"),
        (b":authority", authority),
        (b"x-vmr-custom", b"kept"),
    ])
}

#[tokio::test]
async fn a_socket_path_authority_becomes_localhost_and_the_rest_is_kept() {
    let mut encoder = Encoder::new();
    let mut input = PREFACE.to_vec();
    input.extend(frame(0x4, 0, 0, &[])); // SETTINGS
    input.extend(frame(
        HEADERS,
        END_HEADERS,
        1,
        &request(&mut encoder, b"tmp%2Fs.sock"),
    ));
    let data = vec![7u8; 100_000];
    input.extend(frame(0x0, END_STREAM, 1, &data));
    // The second request refers to the client's dynamic table (x-vmr-custom).
    input.extend(frame(
        HEADERS,
        END_HEADERS,
        3,
        &request(&mut encoder, b"/tmp/s.sock"),
    ));

    let out = frames(&repaired(input).await);
    assert_eq!(out.len(), 4);
    assert_eq!((out[0].0, out[0].3.len()), (0x4, 0));
    assert_eq!(out[2].3, data, "DATA passes as it was");
    assert_eq!(out[2].1, END_STREAM);
    let mut decoder = Decoder::new();
    for (index, stream) in [(1, 1), (3, 3)] {
        let (kind, flags, id, block) = &out[index];
        assert_eq!((*kind, *flags, *id), (HEADERS, END_HEADERS, stream));
        let fields = decoder.decode(block).unwrap();
        let get = |name: &[u8]| {
            fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(get(b":authority"), b"localhost");
        assert_eq!(get(b":path"), b"/grpc.health.v1.Health/Check");
        assert_eq!(get(b"x-vmr-custom"), b"kept");
        assert_eq!(fields.len(), 5);
    }
}

#[tokio::test]
async fn a_valid_authority_is_left_as_it_is() {
    let mut encoder = Encoder::new();
    let mut input = PREFACE.to_vec();
    input.extend(frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &request(&mut encoder, b"localhost:50051"),
    ));
    let out = frames(&repaired(input).await);
    let fields = Decoder::new().decode(&out[0].3).unwrap();
    assert!(fields.contains(&(b":authority".to_vec(), b"localhost:50051".to_vec())));
    assert_eq!(out[0].1, END_HEADERS | END_STREAM);
}

#[tokio::test]
async fn padding_and_continuations_are_read_and_large_blocks_split() {
    let mut encoder = Encoder::new();
    let big = vec![b'v'; 40_000];
    let block = encoder.encode([
        (&b":method"[..], &b"POST"[..]),
        (b":authority", b"%2Fs.sock"),
        (b"x-big", big.as_slice()),
    ]);
    // HEADERS, padded, with half the block; the rest in a CONTINUATION.
    let (head, tail) = block.split_at(block.len() / 2);
    let mut padded = vec![3u8];
    padded.extend_from_slice(head);
    padded.extend_from_slice(&[0, 0, 0]);
    let mut input = PREFACE.to_vec();
    input.extend(frame(HEADERS, PADDED, 5, &padded));
    input.extend(frame(CONTINUATION, END_HEADERS, 5, tail));

    let out = frames(&repaired(input).await);
    assert_eq!(out.len(), 3, "40 kB of headers travel in 16 kB frames");
    assert_eq!((out[0].0, out[0].1), (HEADERS, 0));
    assert_eq!((out[1].0, out[1].1), (CONTINUATION, 0));
    assert_eq!((out[2].0, out[2].1), (CONTINUATION, END_HEADERS));
    let joined: Vec<u8> = out.iter().flat_map(|f| f.3.clone()).collect();
    let fields = Decoder::new().decode(&joined).unwrap();
    assert_eq!(fields[1], (b":authority".to_vec(), b"localhost".to_vec()));
    assert_eq!(fields[2].1, big);
}

#[tokio::test]
async fn bytes_that_are_not_http2_pass_untouched() {
    let input = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    assert_eq!(repaired(input.clone()).await, input);
}

#[tokio::test]
async fn an_oversized_header_block_ends_the_connection() {
    let mut input = PREFACE.to_vec();
    let piece = vec![0u8; 600 * 1024];
    input.extend(frame(HEADERS, 0, 1, &piece));
    input.extend(frame(CONTINUATION, 0, 1, &piece));
    let mut reader = AuthorityRepair::new(input.as_slice());
    let mut out = Vec::new();
    let err = reader.read_to_end(&mut out).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
}
