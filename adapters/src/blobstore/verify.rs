//! Reads that check what they read: a byte stream that hashes as it goes (on
//! a blocking thread, so a runtime worker never spends a millisecond per MiB
//! on sha256) and ends with `Corrupt` when the content does not match its
//! name; and the same check for a blob already in memory.

use bytes::Bytes;
use futures::StreamExt as _;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use vmr_domain::image::Digest;
use vmr_ports::blobstore::{ByteStream, StoreError};

/// Chunks queued for the hashing thread.
const QUEUE_DEPTH: usize = 4;
/// Below this, hashing inline costs less than a trip to a blocking thread.
const INLINE_HASH_LIMIT: usize = 256 << 10;

struct Verifying {
    digest: Digest,
    inner: ByteStream,
    to_hasher: Option<mpsc::Sender<Bytes>>,
    hasher: Option<JoinHandle<Sha256>>,
}

/// Passes `inner` through and fails it with `Corrupt` at the end unless its
/// bytes hash to `digest`. Must be called inside a tokio runtime.
pub(crate) fn verified(digest: Digest, inner: ByteStream) -> ByteStream {
    let (to_hasher, mut chunks) = mpsc::channel::<Bytes>(QUEUE_DEPTH);
    let hasher = tokio::task::spawn_blocking(move || {
        let mut hasher = Sha256::new();
        while let Some(chunk) = chunks.blocking_recv() {
            hasher.update(&chunk);
        }
        hasher
    });
    let state = Verifying {
        digest,
        inner,
        to_hasher: Some(to_hasher),
        hasher: Some(hasher),
    };
    futures::stream::unfold(Some(state), |state| async move {
        let mut state = state?;
        match state.inner.next().await {
            Some(Ok(chunk)) => {
                let hashed = match &state.to_hasher {
                    Some(to_hasher) => to_hasher.send(chunk.clone()).await.is_ok(),
                    None => false,
                };
                if !hashed {
                    let error = StoreError::backend(
                        format!("hashing blob {}", state.digest),
                        "the hashing task stopped",
                    );
                    return Some((Err(error), None));
                }
                Some((Ok(chunk), Some(state)))
            }
            Some(Err(e)) => Some((Err(e), None)),
            None => {
                drop(state.to_hasher.take());
                let hasher = match state.hasher.take()?.await {
                    Ok(hasher) => hasher,
                    Err(e) => return Some((Err(StoreError::task("hashing blob", e)), None)),
                };
                let actual = Digest::from_hasher(hasher);
                if actual == state.digest {
                    None
                } else {
                    tracing::error!(digest = %state.digest, %actual, "blob content does not match its digest");
                    Some((Err(StoreError::Corrupt { digest: state.digest, actual }), None))
                }
            }
        }
    })
    .boxed()
}

/// `Corrupt` unless `bytes` hash to `digest`.
pub(crate) async fn check_bytes(digest: &Digest, bytes: Bytes) -> Result<Bytes, StoreError> {
    let (bytes, actual) = if bytes.len() <= INLINE_HASH_LIMIT {
        let actual = Digest::of(&bytes);
        (bytes, actual)
    } else {
        tokio::task::spawn_blocking(move || {
            let actual = Digest::of(&bytes);
            (bytes, actual)
        })
        .await
        .map_err(|e| StoreError::task("hashing blob", e))?
    };
    if actual == *digest {
        Ok(bytes)
    } else {
        tracing::error!(%digest, %actual, "blob content does not match its digest");
        Err(StoreError::Corrupt {
            digest: digest.clone(),
            actual,
        })
    }
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt as _;

    use super::*;

    fn stream_of(chunks: &[&'static [u8]]) -> ByteStream {
        let chunks: Vec<Result<Bytes, StoreError>> =
            chunks.iter().map(|c| Ok(Bytes::from_static(c))).collect();
        futures::stream::iter(chunks).boxed()
    }

    #[tokio::test]
    async fn matching_content_streams_through() {
        let stream = verified(
            Digest::of(b"hello world"),
            stream_of(&[b"hello ", b"world"]),
        );
        let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
        assert_eq!(chunks.concat(), b"hello world");
    }

    #[tokio::test]
    async fn mismatch_ends_with_corrupt_after_the_bytes() {
        let mut stream = verified(
            Digest::of(b"hello world"),
            stream_of(&[b"hello ", b"there"]),
        );
        assert_eq!(stream.next().await.unwrap().unwrap(), "hello ");
        assert_eq!(stream.next().await.unwrap().unwrap(), "there");
        match stream.next().await {
            Some(Err(StoreError::Corrupt { digest, actual })) => {
                assert_eq!(digest, Digest::of(b"hello world"));
                assert_eq!(actual, Digest::of(b"hello there"));
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn check_bytes_small_and_large() {
        let small = Bytes::from_static(b"abc");
        assert!(
            check_bytes(&Digest::of(b"abc"), small.clone())
                .await
                .is_ok()
        );
        assert!(matches!(
            check_bytes(&Digest::of(b"abd"), small).await,
            Err(StoreError::Corrupt { .. })
        ));
        let large = Bytes::from(vec![7u8; INLINE_HASH_LIMIT + 1]);
        assert!(
            check_bytes(&Digest::of(&large), large.clone())
                .await
                .is_ok()
        );
        assert!(matches!(
            check_bytes(&Digest::of(b""), large).await,
            Err(StoreError::Corrupt { .. })
        ));
    }
}
