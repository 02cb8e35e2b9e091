use super::*;

fn frames(path: &str) -> Frames {
    let (name, check) = guarded(path).unwrap();
    Frames::new(path, name, check)
}

fn framed(message: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

const EVENTS: &str = "/vmregistry.v1.VMService/WatchEvents";

#[test]
fn valid_messages_pass_however_they_are_split() {
    let request = vmr_proto::v1::WatchEventsRequest {
        since_sequence: 7,
        ..Default::default()
    };
    let mut bytes = framed(&request.encode_to_vec());
    bytes.extend(framed(&request.encode_to_vec()));
    for split in 0..bytes.len() {
        let mut f = frames(EVENTS);
        f.feed(&bytes[..split]).unwrap();
        f.feed(&bytes[split..]).unwrap();
        assert!(!f.in_message && f.header_len == 0);
    }
}

#[test]
fn a_message_that_does_not_decode_is_invalid_argument() {
    // Field 1 as a length-delimited field running past the end.
    let (code, message) = frames(EVENTS).feed(&framed(&[0x0a, 0x7f, 1])).unwrap_err();
    assert_eq!(code, Code::InvalidArgument);
    assert!(
        message.contains("not a valid WatchEventsRequest"),
        "{message}"
    );
}

#[test]
fn an_oversized_message_is_refused_from_its_prefix_alone() {
    let mut prefix = vec![0];
    prefix.extend_from_slice(&(MAX_SMALL_REQUEST as u32 + 1).to_be_bytes());
    let (code, message) = frames("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
        .feed(&prefix)
        .unwrap_err();
    assert_eq!(code, Code::ResourceExhausted);
    assert!(message.contains("at most 65536 bytes"), "{message}");
}

#[test]
fn other_methods_are_not_guarded() {
    assert!(guarded("/vmregistry.v1.VMService/ImportImage").is_none());
}

#[test]
fn refusals_replace_the_status_percent_encoded() {
    let mut headers = HeaderMap::new();
    headers.insert("grpc-status", HeaderValue::from(0));
    overwrite(&mut headers, &(Code::InvalidArgument, "bad: 100% é".into()));
    assert_eq!(headers["grpc-status"], "3");
    assert_eq!(headers["grpc-message"], "bad: 100%25 %C3%A9");
}
