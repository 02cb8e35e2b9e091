//! Upkeep of the store: the local temporaries a crash leaves and, on S3,
//! the unfinished multipart uploads.

use async_trait::async_trait;
use vmr_ports::blobstore::{StoreError, StoreUpkeep};

use super::{Backend, OpendalStore, local, s3_uploads};

#[async_trait]
impl StoreUpkeep for OpendalStore {
    async fn clean_temporaries(&self) -> Result<usize, StoreError> {
        let removed = local::clean_temporaries(&self.inner.temp_dir, &self.inner.temps).await?;
        if removed > 0 {
            tracing::info!(removed, dir = %self.inner.temp_dir.display(), "removed leftover temporaries");
        }
        let aborted = match &self.inner.backend {
            Backend::Remote { s3: Some(s3), .. } => {
                let (settings, client) = &**s3;
                s3_uploads::abort_stale_uploads(client, settings, settings.upload_expiry()).await?
            }
            _ => 0,
        };
        Ok(removed + aborted)
    }

    async fn list_temporaries(&self) -> Result<Vec<String>, StoreError> {
        let mut names = local::list_temporaries(&self.inner.temp_dir, &self.inner.temps).await?;
        if let Backend::Remote { s3: Some(s3), .. } = &self.inner.backend {
            let (settings, client) = &**s3;
            let expiry = settings.upload_expiry();
            names.extend(
                s3_uploads::list_uploads(client, settings)
                    .await?
                    .iter()
                    .filter(|upload| upload.age >= expiry)
                    .map(s3_uploads::Upload::name),
            );
        }
        Ok(names)
    }

    fn describe(&self) -> String {
        self.inner.description.clone()
    }
}
