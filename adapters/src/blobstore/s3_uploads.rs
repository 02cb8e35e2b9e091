//! What a crash leaves in an S3 bucket: multipart uploads that were started
//! (a blob larger than one part) and never completed nor aborted. They are
//! invisible to listings but hold storage until aborted. At start the store
//! aborts those older than the expiry (`S3Settings::upload_expiry`): younger
//! ones may belong to another host sharing the bucket. Also: deleting a
//! whole bucket, for tests and tools that made one.

use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt as _;
use serde::Deserialize;
use vmr_ports::blobstore::StoreError;

use super::s3::{S3Settings, send_signed, xml_element};

/// Default age after which an unfinished multipart upload is a leftover.
pub const DEFAULT_UPLOAD_EXPIRY: Duration = Duration::from_secs(60 * 60);

/// One unfinished multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Upload {
    pub key: String,
    pub upload_id: String,
    /// Seconds since it was initiated (0 when the server's clock is ahead).
    pub age: Duration,
}

impl Upload {
    /// How `list_temporaries` names it.
    pub(crate) fn name(&self) -> String {
        format!("s3-upload:{} (upload id {})", self.key, self.upload_id)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListResult {
    #[serde(default)]
    upload: Vec<UploadXml>,
    #[serde(default)]
    is_truncated: bool,
    next_key_marker: Option<String>,
    next_upload_id_marker: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UploadXml {
    key: String,
    upload_id: String,
    initiated: String,
}

fn bucket_url(settings: &S3Settings) -> reqwest::Url {
    let mut url = reqwest::Url::parse(&settings.endpoint()).unwrap_or_else(|_| {
        reqwest::Url::parse("http://invalid.invalid").unwrap_or_else(|_| unreachable!())
    });
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty().push(&settings.bucket);
    }
    url
}

/// Every unfinished multipart upload in the bucket.
pub(crate) async fn list_uploads(
    client: &reqwest::Client,
    settings: &S3Settings,
) -> Result<Vec<Upload>, StoreError> {
    let now = jiff::Timestamp::now();
    let mut out = Vec::new();
    let mut markers: Option<(String, String)> = None;
    loop {
        let mut url = bucket_url(settings);
        // Sorted query keys: the signed canonical query is this string.
        let mut query = String::from("uploads=");
        if let Some((key, id)) = &markers {
            query = format!(
                "key-marker={}&upload-id-marker={}&uploads=",
                encode(key),
                encode(id)
            );
        }
        url.set_query(Some(&query));
        let response = send_signed(
            client,
            settings,
            http::Method::GET,
            url.as_str(),
            Bytes::new(),
            "ListMultipartUploads",
        )
        .await?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| settings.error("ListMultipartUploads", e))?;
        if !status.is_success() {
            return Err(settings.error(
                "listing unfinished uploads failed",
                format!(
                    "{status} {}",
                    xml_element(&text, "Message").unwrap_or(text.trim())
                ),
            ));
        }
        let page: ListResult = quick_xml::de::from_str(&text)
            .map_err(|e| settings.error("ListMultipartUploads: unreadable answer", e))?;
        for upload in page.upload {
            let age = upload
                .initiated
                .parse::<jiff::Timestamp>()
                .ok()
                .and_then(|at| Duration::try_from(now.duration_since(at)).ok())
                .unwrap_or_default();
            out.push(Upload {
                key: upload.key,
                upload_id: upload.upload_id,
                age,
            });
        }
        match (
            page.is_truncated,
            page.next_key_marker,
            page.next_upload_id_marker,
        ) {
            (true, Some(key), Some(id)) if markers.as_ref() != Some(&(key.clone(), id.clone())) => {
                markers = Some((key, id));
            }
            _ => return Ok(out),
        }
    }
}

/// Aborts one unfinished upload (already gone is fine).
pub(crate) async fn abort_upload(
    client: &reqwest::Client,
    settings: &S3Settings,
    upload: &Upload,
) -> Result<(), StoreError> {
    let mut url = bucket_url(settings);
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.extend(upload.key.split('/'));
    }
    url.set_query(Some(&format!("uploadId={}", encode(&upload.upload_id))));
    delete_if_present(
        client,
        settings,
        &url,
        "AbortMultipartUpload",
        &format!("aborting upload {} of {}", upload.upload_id, upload.key),
    )
    .await
}

/// Sends a signed DELETE; success or 404 (already gone) is fine, any other
/// answer is an error naming `what` and S3's message.
async fn delete_if_present(
    client: &reqwest::Client,
    settings: &S3Settings,
    url: &reqwest::Url,
    action: &str,
    what: &str,
) -> Result<(), StoreError> {
    let response = send_signed(
        client,
        settings,
        http::Method::DELETE,
        url.as_str(),
        Bytes::new(),
        action,
    )
    .await?;
    let status = response.status();
    if status.is_success() || status == reqwest::StatusCode::NOT_FOUND {
        return Ok(());
    }
    let text = response.text().await.unwrap_or_default();
    Err(settings.error(
        format_args!("{what} failed"),
        format!(
            "{status} {}",
            xml_element(&text, "Message").unwrap_or(text.trim())
        ),
    ))
}

/// Aborts every unfinished upload older than `expiry`; returns how many.
pub(crate) async fn abort_stale_uploads(
    client: &reqwest::Client,
    settings: &S3Settings,
    expiry: Duration,
) -> Result<usize, StoreError> {
    let mut aborted = 0;
    for upload in list_uploads(client, settings).await? {
        if upload.age >= expiry {
            abort_upload(client, settings, &upload).await?;
            tracing::info!(key = %upload.key, upload_id = %upload.upload_id, "aborted an unfinished S3 upload");
            aborted += 1;
        }
    }
    Ok(aborted)
}

/// Deletes a bucket with everything in it (objects and unfinished uploads).
/// For tests and tools that created a bucket of their own; a missing bucket
/// is fine.
pub async fn delete_bucket(settings: &S3Settings) -> Result<(), StoreError> {
    let client = super::s3::http_client(settings)?;
    let op = super::s3::operator(settings, &client)?;
    let mut lister = match op.lister_with("/").recursive(true).await {
        Ok(lister) => lister,
        Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(settings.error("listing the bucket", e)),
    };
    loop {
        let entry = match lister.try_next().await {
            Ok(Some(entry)) => entry,
            Ok(None) => break,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(settings.error("listing the bucket", e)),
        };
        if !entry.metadata().is_dir() {
            op.delete(entry.path())
                .await
                .map_err(|e| settings.error("emptying the bucket", e))?;
        }
    }
    if let Ok(uploads) = list_uploads(&client, settings).await {
        for upload in uploads {
            abort_upload(&client, settings, &upload).await?;
        }
    }
    delete_if_present(
        &client,
        settings,
        &bucket_url(settings),
        "DeleteBucket",
        "deleting the bucket",
    )
    .await
}

/// S3's URI encoding of a query value: everything but unreserved characters.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_answers_parse() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>b</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>
  <NextKeyMarker>blobs/sha256/bb</NextKeyMarker><NextUploadIdMarker>id2</NextUploadIdMarker>
  <MaxUploads>1000</MaxUploads><IsTruncated>true</IsTruncated>
  <Upload><Key>blobs/sha256/aa</Key><UploadId>id1</UploadId>
    <Initiated>2026-11-27T03:16:02.000Z</Initiated><StorageClass>STANDARD</StorageClass></Upload>
  <Upload><Key>blobs/sha256/bb</Key><UploadId>id2</UploadId>
    <Initiated>2026-11-27T03:17:02Z</Initiated></Upload>
</ListMultipartUploadsResult>"#;
        let page: ListResult = quick_xml::de::from_str(xml).unwrap();
        assert_eq!(page.upload.len(), 2);
        assert_eq!(page.upload[1].key, "blobs/sha256/bb");
        assert_eq!(page.upload[0].upload_id, "id1");
        assert!(page.upload[0].initiated.parse::<jiff::Timestamp>().is_ok());
        assert!(page.is_truncated);
        assert_eq!(page.next_upload_id_marker.as_deref(), Some("id2"));

        let empty = "<ListMultipartUploadsResult><Bucket>b</Bucket>\
                     <IsTruncated>false</IsTruncated></ListMultipartUploadsResult>";
        let page: ListResult = quick_xml::de::from_str(empty).unwrap();
        assert!(page.upload.is_empty());
        assert!(!page.is_truncated);
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(encode("x/y+z=="), "x%2Fy%2Bz%3D%3D");
    }

    #[test]
    fn bucket_urls_are_path_style() {
        let settings = S3Settings {
            bucket: "bkt".to_owned(),
            endpoint: Some("http://127.0.0.1:8333/".to_owned()),
            ..S3Settings::default()
        };
        assert_eq!(bucket_url(&settings).as_str(), "http://127.0.0.1:8333/bkt");
    }
}
