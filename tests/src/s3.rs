//! The test S3 servers (SeaweedFS, and moto's server as a second
//! implementation, both started by scripts/test-services.sh): daemon flags
//! for a fresh bucket, and a guard that deletes the bucket with everything
//! in it when dropped (SeaweedFS holds only a few dozen buckets).

use vmr_adapters::blobstore::{S3Settings, delete_bucket};

/// Which test S3 server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3Server {
    /// SeaweedFS (`VMR_TEST_S3_*`).
    Seaweed,
    /// moto's server (`VMR_TEST_S3B_*`).
    Moto,
}

impl S3Server {
    fn var(self, name: &str) -> String {
        match self {
            Self::Seaweed => format!("VMR_TEST_S3_{name}"),
            Self::Moto => format!("VMR_TEST_S3B_{name}"),
        }
    }
}

/// A fresh bucket on the test S3 server, deleted when dropped.
pub struct S3Bucket {
    pub name: String,
    endpoint: String,
    access_key: String,
    secret_key: String,
}

impl S3Bucket {
    /// A new bucket name (created by the first daemon that uses it), or
    /// `None` when `VMR_TEST_SKIP_S3=1` and no server is configured.
    pub fn fresh(prefix: &str) -> Option<Self> {
        Self::fresh_on(S3Server::Seaweed, prefix)
    }

    /// A new bucket name on `server` (see [`Self::fresh`]).
    pub fn fresh_on(server: S3Server, prefix: &str) -> Option<Self> {
        let endpoint_var = server.var("ENDPOINT");
        let endpoint = match std::env::var(&endpoint_var) {
            Ok(e) if !e.is_empty() => e,
            _ if std::env::var("VMR_TEST_SKIP_S3").as_deref() == Ok("1") => {
                eprintln!("skipped: VMR_TEST_SKIP_S3=1");
                return None;
            }
            _ => panic!(
                "{endpoint_var} is not set: run scripts/test-services.sh start and eval its \
                 env, or set VMR_TEST_SKIP_S3=1"
            ),
        };
        let access_var = server.var("ACCESS_KEY");
        let secret_var = server.var("SECRET_KEY");
        Some(Self {
            name: format!("{prefix}-{}", crate::libvirt::unique_suffix()),
            endpoint,
            access_key: std::env::var(&access_var).expect(&access_var),
            secret_key: std::env::var(&secret_var).expect(&secret_var),
        })
    }

    /// `vmrd` flags for an S3 store in this bucket (fake hypervisor).
    pub fn daemon_flags(&self) -> Vec<String> {
        [
            "--hypervisor",
            "fake",
            "--storage",
            "s3",
            "--s3-bucket",
            &self.name,
            "--s3-endpoint",
            &self.endpoint,
            "--s3-access-key",
            &self.access_key,
            "--s3-secret-key",
            &self.secret_key,
        ]
        .map(String::from)
        .to_vec()
    }

    fn settings(&self) -> S3Settings {
        S3Settings {
            bucket: self.name.clone(),
            region: std::env::var("VMR_TEST_S3_REGION").unwrap_or_else(|_| "us-east-1".into()),
            endpoint: Some(self.endpoint.clone()),
            access_key: Some(self.access_key.clone()),
            secret_key: Some(self.secret_key.clone()),
            skip_bucket_creation: true,
            upload_expiry: None,
        }
    }

    /// Deletes the bucket and everything in it (a missing bucket is fine).
    pub fn delete(&self) -> Result<(), String> {
        let settings = self.settings();
        // May be called inside a test's runtime: use a thread and a runtime
        // of its own.
        std::thread::spawn(move || {
            let _ = rustls::crypto::ring::default_provider().install_default();
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(delete_bucket(&settings))
                .map_err(|e| e.to_string())
        })
        .join()
        .map_err(|_| "deleting the bucket panicked".to_owned())?
    }
}

impl S3Bucket {
    /// Runs `job` on an operator on the bucket, behind the store, in a thread
    /// and runtime of its own (callers may be inside a test's runtime).
    fn behind_the_store<T, F>(&self, job: impl FnOnce(opendal::Operator) -> F + Send + 'static) -> T
    where
        T: Send + 'static,
        F: std::future::Future<Output = T>,
    {
        Self::on_a_store(self.settings(), |store| job(store.operator().clone()))
    }

    /// Runs `job` on a store of its own opened with `settings`, in a thread
    /// and runtime of its own.
    fn on_a_store<T, F>(
        settings: S3Settings,
        job: impl FnOnce(vmr_adapters::blobstore::OpendalStore) -> F + Send + 'static,
    ) -> T
    where
        T: Send + 'static,
        F: std::future::Future<Output = T>,
    {
        std::thread::spawn(move || {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let local = tempfile::tempdir().expect("temp dir");
                let store = vmr_adapters::blobstore::OpendalStore::s3(settings, local.path())
                    .await
                    .expect("open the bucket");
                job(store).await
            })
        })
        .join()
        .expect("reaching the bucket")
    }

    /// The bucket's unfinished multipart uploads, however young (what an
    /// upload cut short leaves), named as the store names them
    /// (`s3-upload:<key> (upload id <id>)`).
    pub fn unfinished_uploads(&self) -> Vec<String> {
        let settings = S3Settings {
            upload_expiry: Some(std::time::Duration::ZERO),
            ..self.settings()
        };
        Self::on_a_store(settings, |store| async move {
            use vmr_ports::blobstore::StoreUpkeep as _;
            let names = store.list_temporaries().await.expect("listing the uploads");
            names
                .into_iter()
                .filter(|name| name.starts_with("s3-upload:"))
                .collect()
        })
    }

    /// Every object under `prefix` with its bytes, read behind the store
    /// (the shared-lease records of docs/shared-bucket.md, say).
    pub fn objects(&self, prefix: &str) -> Vec<(String, Vec<u8>)> {
        let prefix = prefix.to_owned();
        self.behind_the_store(|op| async move {
            let mut out = Vec::new();
            for entry in op
                .list_with(&prefix)
                .recursive(true)
                .await
                .unwrap_or_default()
            {
                if entry.metadata().is_dir() {
                    continue;
                }
                if let Ok(bytes) = op.read(entry.path()).await {
                    out.push((entry.path().to_owned(), bytes.to_vec()));
                }
            }
            out
        })
    }

    /// Writes `objects` (key, bytes) behind the store, or with `None` as the
    /// bytes deletes the key (standing in for what other hosts write).
    pub fn write_objects(&self, objects: Vec<(String, Option<Vec<u8>>)>) {
        self.behind_the_store(|op| async move {
            for (key, bytes) in objects {
                match bytes {
                    Some(bytes) => op.write(&key, bytes).await.map(drop),
                    None => op.delete(&key).await,
                }
                .unwrap_or_else(|e| panic!("writing {key}: {e}"));
            }
        });
    }

    /// The `Last-Modified` the server gives `key` (`None`: no such object).
    pub fn last_modified(&self, key: &str) -> Option<std::time::SystemTime> {
        let key = key.to_owned();
        self.behind_the_store(|op| async move {
            let meta = op.stat(&key).await.ok()?;
            meta.last_modified().map(std::time::SystemTime::from)
        })
    }

    /// The server's time now: the `Last-Modified` of a probe object written
    /// now (`probe/now`, deleted with the bucket).
    pub fn server_now(&self) -> std::time::SystemTime {
        self.write_objects(vec![("probe/now".to_owned(), Some(Vec::new()))]);
        self.last_modified("probe/now").expect("the probe object")
    }
}

impl Drop for S3Bucket {
    fn drop(&mut self) {
        if let Err(e) = self.delete() {
            eprintln!("could not delete test bucket {}: {e}", self.name);
        }
    }
}
