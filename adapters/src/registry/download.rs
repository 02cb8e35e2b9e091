//! Blob downloads: a GET (with `Range` when resuming), and a stream that
//! drops a prefix the registry sent anyway and ends in an error unless
//! exactly the announced bytes arrive, so a cut download is noticed and can
//! be resumed. The digest is the caller's to check (its store writer hashes
//! the whole blob, the part from an earlier attempt included).

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, HeaderValue, RANGE};
use reqwest::{Method, StatusCode};
use vmr_domain::image::{Digest, Repository};
use vmr_ports::{BlobDownload, RegistryByteStream, RegistryClient as _, RegistryError};

use super::client::OciRegistryClient;
use super::header_str;
use super::transport::{Request, pull_scope};

/// `GET` a blob from `offset`.
pub(super) async fn download(
    client: &OciRegistryClient,
    repository: &Repository,
    digest: &Digest,
    offset: u64,
) -> Result<BlobDownload, RegistryError> {
    let what = format!("blob {digest} in {}", repository.as_str());
    let url = client.url(&format!("/v2/{}/blobs/{digest}", repository.as_str()));
    let mut request = Request::new(Method::GET, url, vec![pull_scope(repository.as_str())]);
    if offset > 0 {
        let range = HeaderValue::from_str(&format!("bytes={offset}-"))
            .map_err(|e| client.invalid(format!("range header: {e}")))?;
        request = request.header(RANGE, range);
    }
    let response = client.transport.send(&request).await?;
    let registry = client.transport.registry();
    match response.status() {
        StatusCode::OK => {
            let size = header_str(response.headers(), CONTENT_LENGTH.as_str())
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| {
                    client.invalid(format!("the download of {what} has no Content-Length"))
                })?;
            if offset > size {
                return Err(RegistryError::Rejected {
                    registry,
                    message: format!("{what} has {size} bytes, cannot resume at {offset}"),
                });
            }
            // The registry ignored the range: drop the prefix here.
            let body = response.bytes_stream().boxed();
            Ok(BlobDownload {
                size,
                stream: length_checked(body, offset, size - offset, registry),
            })
        }
        StatusCode::PARTIAL_CONTENT => {
            let (start, size) = header_str(response.headers(), CONTENT_RANGE.as_str())
                .and_then(parse_content_range)
                .ok_or_else(|| {
                    client.invalid(format!(
                        "the ranged download of {what} has no usable Content-Range"
                    ))
                })?;
            if start != offset || start > size {
                return Err(client.invalid(format!(
                    "asked for {what} from byte {offset}, the registry sent from {start}"
                )));
            }
            let body = response.bytes_stream().boxed();
            Ok(BlobDownload {
                size,
                stream: length_checked(body, 0, size - offset, registry),
            })
        }
        StatusCode::RANGE_NOT_SATISFIABLE if offset > 0 => {
            match client.blob_exists(repository, digest).await? {
                // Everything is already there: nothing left to send.
                Some(size) if size == offset => Ok(BlobDownload {
                    size,
                    stream: futures::stream::empty().boxed(),
                }),
                Some(size) => Err(RegistryError::Rejected {
                    registry,
                    message: format!("{what} has {size} bytes, cannot resume at {offset}"),
                }),
                None => Err(RegistryError::NotFound {
                    registry,
                    what,
                    message: "BLOB_UNKNOWN".to_owned(),
                }),
            }
        }
        _ => Err(client.fail(&what, response).await),
    }
}

/// `bytes <start>-<end>/<total>` → (start, total).
fn parse_content_range(value: &str) -> Option<(u64, u64)> {
    let rest = value.trim().strip_prefix("bytes")?.trim();
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()?))
}

/// A blob body, with `skip` bytes dropped from its start and exactly
/// `expected` bytes let through; a short or long body ends in an error.
fn length_checked(
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    skip: u64,
    expected: u64,
    registry: String,
) -> RegistryByteStream {
    struct State {
        body: BoxStream<'static, reqwest::Result<Bytes>>,
        skip: u64,
        remaining: u64,
        received: u64,
        registry: String,
        done: bool,
    }
    let state = State {
        body,
        skip,
        remaining: expected,
        received: 0,
        registry,
        done: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            match st.body.next().await {
                Some(Ok(mut chunk)) => {
                    if st.skip > 0 {
                        let drop = st.skip.min(chunk.len() as u64);
                        let _ = chunk.split_to(drop as usize);
                        st.skip -= drop;
                    }
                    if chunk.is_empty() {
                        continue;
                    }
                    if chunk.len() as u64 > st.remaining {
                        st.done = true;
                        let error = RegistryError::InvalidResponse {
                            registry: st.registry.clone(),
                            message: "the blob download is longer than its announced size"
                                .to_owned(),
                        };
                        return Some((Err(error), st));
                    }
                    st.remaining -= chunk.len() as u64;
                    st.received += chunk.len() as u64;
                    return Some((Ok(chunk), st));
                }
                Some(Err(e)) => {
                    st.done = true;
                    let error = RegistryError::Unavailable {
                        registry: st.registry.clone(),
                        message: format!(
                            "the blob download broke off after {} bytes: {}",
                            st.received,
                            super::http::describe_error(&e)
                        ),
                    };
                    return Some((Err(error), st));
                }
                None if st.remaining > 0 || st.skip > 0 => {
                    st.done = true;
                    let error = RegistryError::Unavailable {
                        registry: st.registry.clone(),
                        message: format!(
                            "the blob download ended after {} bytes, {} short",
                            st.received, st.remaining
                        ),
                    };
                    return Some((Err(error), st));
                }
                None => return None,
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("bytes 100-199/1000"), Some((100, 1000)));
        assert_eq!(parse_content_range("bytes */1000"), None);
        assert_eq!(parse_content_range("100-199/1000"), None);
    }

    #[tokio::test]
    async fn length_checked_skips_and_counts() {
        let chunks: Vec<reqwest::Result<Bytes>> = vec![
            Ok(Bytes::from_static(b"abc")),
            Ok(Bytes::from_static(b"defg")),
        ];
        let out: Vec<_> = length_checked(futures::stream::iter(chunks).boxed(), 4, 3, "r".into())
            .collect()
            .await;
        let bytes: Vec<u8> = out.into_iter().flat_map(|c| c.unwrap().to_vec()).collect();
        assert_eq!(bytes, b"efg");

        let short: Vec<reqwest::Result<Bytes>> = vec![Ok(Bytes::from_static(b"ab"))];
        let out: Vec<_> = length_checked(futures::stream::iter(short).boxed(), 0, 3, "r".into())
            .collect()
            .await;
        assert!(matches!(
            out.last(),
            Some(Err(RegistryError::Unavailable { .. }))
        ));

        let long: Vec<reqwest::Result<Bytes>> = vec![Ok(Bytes::from_static(b"abcd"))];
        let out: Vec<_> = length_checked(futures::stream::iter(long).boxed(), 0, 3, "r".into())
            .collect()
            .await;
        assert!(matches!(
            out.last(),
            Some(Err(RegistryError::InvalidResponse { .. }))
        ));
    }
}
