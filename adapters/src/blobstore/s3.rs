//! Connecting the store to an S3 bucket: the opendal operator over our own
//! reqwest client, creating the bucket (opendal has no CreateBucket, so one
//! SigV4-signed `PUT /<bucket>` is sent by hand), and a first listing that
//! turns bad credentials or a missing bucket into one clear error at start.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use opendal::services::S3;
use opendal::{ErrorKind, HttpTransporter, Operator};
use opendal_http_transport_reqwest::ReqwestTransport;
use sha2::{Digest as _, Sha256};
use vmr_ports::blobstore::{Cause, StoreError};

use super::layout::BLOBS_DIR;

/// The one region whose CreateBucket takes no location constraint.
const DEFAULT_REGION: &str = "us-east-1";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how to reach the S3 bucket that holds the store.
#[derive(Clone, Default)]
pub struct S3Settings {
    pub bucket: String,
    /// Defaults to `us-east-1` when empty.
    pub region: String,
    /// Any S3-compatible endpoint (`http://127.0.0.1:8333`); the regional AWS
    /// endpoint when `None`. Requests are path-style.
    pub endpoint: Option<String>,
    /// With both keys set they are the only credentials used; otherwise the
    /// usual AWS environment, profile and instance metadata are consulted.
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    /// Do not try to create the bucket at start (it must exist).
    pub skip_bucket_creation: bool,
    /// Age after which an unfinished multipart upload is a crash's leftover:
    /// aborted at start, reported by the store check. `None`: one hour.
    pub upload_expiry: Option<Duration>,
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key", &self.access_key)
            .field(
                "secret_key",
                &self.secret_key.as_ref().map(|_| "<redacted>"),
            )
            .field("skip_bucket_creation", &self.skip_bucket_creation)
            .field("upload_expiry", &self.upload_expiry)
            .finish()
    }
}

impl S3Settings {
    pub(crate) fn region(&self) -> &str {
        if self.region.is_empty() {
            DEFAULT_REGION
        } else {
            &self.region
        }
    }

    pub(crate) fn endpoint(&self) -> String {
        match &self.endpoint {
            Some(endpoint) => endpoint.trim_end_matches('/').to_owned(),
            None => format!("https://s3.{}.amazonaws.com", self.region()),
        }
    }

    pub(crate) fn upload_expiry(&self) -> Duration {
        self.upload_expiry
            .unwrap_or(super::s3_uploads::DEFAULT_UPLOAD_EXPIRY)
    }

    fn keys(&self) -> Option<(&str, &str)> {
        Some((self.access_key.as_deref()?, self.secret_key.as_deref()?))
    }

    /// A failure of the bucket while `doing` something, keeping its cause.
    pub(crate) fn error(&self, doing: impl fmt::Display, cause: impl Into<Cause>) -> StoreError {
        StoreError::backend(
            format!("S3 bucket {} at {}: {doing}", self.bucket, self.endpoint()),
            cause,
        )
    }
}

/// An operator on the bucket and the HTTP client under it, after creating
/// the bucket (unless told not to) and checking that it can be listed with
/// the given credentials.
pub(crate) async fn connect(
    settings: &S3Settings,
) -> Result<(Operator, reqwest::Client), StoreError> {
    if settings.bucket.is_empty() {
        return Err(StoreError::Invalid {
            field: "s3-bucket".to_owned(),
            reason: "must not be empty with S3 storage".to_owned(),
        });
    }
    let client = http_client(settings)?;
    let op = operator(settings, &client)?;
    if !settings.skip_bucket_creation {
        create_bucket(&client, settings).await?;
    }
    probe(&op, settings).await?;
    Ok((op, client))
}

/// An opendal operator on the bucket over `client` (no request sent).
pub(crate) fn operator(
    settings: &S3Settings,
    client: &reqwest::Client,
) -> Result<Operator, StoreError> {
    let mut builder = S3::default()
        .bucket(&settings.bucket)
        .region(settings.region())
        .endpoint(&settings.endpoint());
    if let Some((access_key, secret_key)) = settings.keys() {
        builder = builder
            .access_key_id(access_key)
            .secret_access_key(secret_key)
            .disable_config_load()
            .disable_ec2_metadata();
    }
    let op = Operator::new(builder).map_err(|e| settings.error("configuring the client", e))?;
    let transport = HttpTransporter::new(ReqwestTransport::new(client.clone()));
    let context = op.context().with_http_transport(transport);
    Ok(op.with_context(context))
}

async fn create_bucket(client: &reqwest::Client, settings: &S3Settings) -> Result<(), StoreError> {
    let url = format!("{}/{}", settings.endpoint(), settings.bucket);
    let body = if settings.region() == DEFAULT_REGION {
        Bytes::new()
    } else {
        Bytes::from(format!(
            "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
             <LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
            settings.region()
        ))
    };
    let response = send_signed(
        client,
        settings,
        http::Method::PUT,
        &url,
        body,
        "CreateBucket",
    )
    .await?;
    let status = response.status();
    if status.is_success() {
        tracing::info!(bucket = %settings.bucket, "created S3 bucket");
        return Ok(());
    }
    let text = response.text().await.unwrap_or_default();
    let code = xml_element(&text, "Code").unwrap_or_default();
    if status == reqwest::StatusCode::CONFLICT
        && matches!(code, "BucketAlreadyOwnedByYou" | "BucketAlreadyExists")
    {
        return Ok(());
    }
    let message = xml_element(&text, "Message").unwrap_or(text.trim());
    let hint = if status == reqwest::StatusCode::FORBIDDEN {
        " (check s3-access-key and s3-secret-key)"
    } else {
        ""
    };
    Err(settings.error(
        "creating the bucket failed",
        format!("{status} {code}: {message}{hint}"),
    ))
}

/// Sends one request that opendal has no call for (CreateBucket,
/// ListMultipartUploads, AbortMultipartUpload, DeleteBucket), SigV4-signed
/// when keys are configured. `url` must already be in canonical form.
pub(crate) async fn send_signed(
    client: &reqwest::Client,
    settings: &S3Settings,
    method: http::Method,
    url: &str,
    body: Bytes,
    what: &str,
) -> Result<reqwest::Response, StoreError> {
    let (mut head, ()) = http::Request::builder()
        .method(method.clone())
        .uri(url)
        .header("x-amz-content-sha256", hex::encode(Sha256::digest(&body)))
        .body(())
        .map_err(|e| settings.error(format_args!("bad endpoint URL {url}"), e))?
        .into_parts();
    if let Some((access_key, secret_key)) = settings.keys() {
        let signer = reqsign_core::Signer::new(
            reqsign_core::Context::new(),
            reqsign_aws_v4::StaticCredentialProvider::new(access_key, secret_key),
            reqsign_aws_v4::RequestSigner::new("s3", settings.region()),
        );
        signer
            .sign(&mut head, None)
            .await
            .map_err(|e| settings.error(format_args!("signing the {what} request"), e))?;
    }
    client
        .request(method, url)
        .headers(head.headers)
        .body(body)
        .send()
        .await
        .map_err(|e| settings.error(format_args!("{what}: cannot reach the endpoint"), e))
}

/// An HTTP client for the hand-made requests.
pub(crate) fn http_client(settings: &S3Settings) -> Result<reqwest::Client, StoreError> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
        .map_err(|e| settings.error("building the HTTP client", e))
}

/// Lists one key, so bad credentials or a missing bucket fail the start.
async fn probe(op: &Operator, settings: &S3Settings) -> Result<(), StoreError> {
    let result = match op.lister_with(&format!("{BLOBS_DIR}/")).limit(1).await {
        Ok(mut lister) => {
            use futures::TryStreamExt as _;
            lister.try_next().await.map(drop)
        }
        Err(e) => Err(e),
    };
    let Err(e) = result else { return Ok(()) };
    // opendal's message is the S3 error document (code and text); its
    // Display adds the whole response head, which belongs in a debug log.
    tracing::debug!(bucket = %settings.bucket, error = %e, "S3 bucket probe failed");
    let reason = e.message();
    if e.kind() == ErrorKind::PermissionDenied {
        Err(settings.error(
            "access denied (check s3-access-key and s3-secret-key)",
            reason.to_owned(),
        ))
    } else if e.kind() == ErrorKind::NotFound || reason.contains("NoSuchBucket") {
        Err(settings.error(
            "the bucket does not exist (create it, or let vmrd create it by dropping \
             s3-skip-bucket-creation)",
            reason.to_owned(),
        ))
    } else {
        Err(settings.error("cannot list the bucket", e))
    }
}

/// The text of the first `<name>` element of a small S3 error document.
pub(crate) fn xml_element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    Some(&xml[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_documents() {
        let xml = "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code>\
                   <Message>The request signature we calculated does not match</Message></Error>";
        assert_eq!(xml_element(xml, "Code"), Some("SignatureDoesNotMatch"));
        assert_eq!(
            xml_element(xml, "Message"),
            Some("The request signature we calculated does not match")
        );
        assert_eq!(xml_element(xml, "Resource"), None);
        assert_eq!(xml_element("", "Code"), None);
    }

    #[test]
    fn defaults_and_redaction() {
        let settings = S3Settings {
            bucket: "b".to_owned(),
            secret_key: Some("hunter2".to_owned()),
            ..S3Settings::default()
        };
        assert_eq!(settings.region(), "us-east-1");
        assert_eq!(settings.endpoint(), "https://s3.us-east-1.amazonaws.com");
        assert!(!format!("{settings:?}").contains("hunter2"));
        let settings = S3Settings {
            endpoint: Some("http://127.0.0.1:8333/".to_owned()),
            ..settings
        };
        assert_eq!(settings.endpoint(), "http://127.0.0.1:8333");
    }
}
