//! Leases shared through the S3 bucket itself (docs/shared-bucket.md): each
//! daemon writes `leases/<host-id>.json` (what it keeps) and renews it; a
//! collection writes `collections/<host-id>/<id>` while it runs. Every age
//! is the S3 server's `Last-Modified` against another `Last-Modified` the
//! server gave just before, so host clocks never matter (only the rate of a
//! host's clock, for waiting).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use opendal::{ErrorKind, Operator};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tracing::{debug, info, warn};
use vmr_domain::image::Digest;
use vmr_ports::blobstore::StoreError;
use vmr_ports::leases::{CollectionView, ExpiredLease, HostRecord, SharedLeases};

use super::error::backend_error;
use super::layout::{BLOBS_DIR, parse_blob_name};

/// Where the hosts' records live.
pub(crate) const LEASES_DIR: &str = "leases";
/// Where running collections announce themselves.
pub(crate) const COLLECTIONS_DIR: &str = "collections";
/// How often a waiting host looks whether a collection ended.
const POLL: Duration = Duration::from_millis(200);

/// How long records live and how young a blob is spared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseSettings {
    /// A record or announcement not renewed for this long is a dead host's.
    pub ttl: Duration,
    /// An unreferenced blob younger than this (by `Last-Modified`) is kept.
    pub grace: Duration,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(120),
            grace: Duration::from_secs(3600),
        }
    }
}

impl LeaseSettings {
    /// How often a host renews its record: four times per TTL, so one or
    /// two failed renewals do not expire it.
    pub fn renew_every(&self) -> Duration {
        (self.ttl / 4).max(Duration::from_millis(250))
    }
}

/// A record as stored (JSON).
#[derive(Debug, Default, Serialize, Deserialize)]
struct RecordFile {
    host: String,
    pid: u32,
    digests: Vec<Digest>,
    images: Vec<Digest>,
}

/// The shared leases of one daemon on one bucket.
pub struct BucketLeases {
    op: Operator,
    /// This daemon's id, kept in its local cache: a restarted daemon
    /// replaces the record of its previous life at once (nothing of that
    /// life is in flight any more).
    host: String,
    settings: LeaseSettings,
    /// The last record written, re-written to learn the server's time;
    /// empty until the first publication.
    last: Mutex<Vec<u8>>,
}

impl BucketLeases {
    /// Leases under the id kept in `id_file` (created on first use).
    pub(crate) fn new(op: Operator, settings: LeaseSettings, id_file: &std::path::Path) -> Self {
        let kept = std::fs::read_to_string(id_file)
            .ok()
            .map(|id| id.trim().to_owned())
            .filter(|id| {
                !id.is_empty()
                    && id.len() <= 80
                    && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        let host = kept.unwrap_or_else(|| {
            let id = Self::new_id();
            if let Err(e) = std::fs::write(id_file, &id) {
                warn!(file = %id_file.display(), error = %e, "could not keep this host's lease id");
            }
            id
        });
        Self {
            op,
            host,
            settings,
            last: Mutex::new(Vec::new()),
        }
    }

    fn new_id() -> String {
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|n| n.trim().to_owned())
            .unwrap_or_else(|_| "host".to_owned());
        let name: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(40)
            .collect();
        format!("{name}-{}", uuid::Uuid::new_v4().simple())
    }

    /// This daemon's id in the bucket.
    pub fn host_id(&self) -> &str {
        &self.host
    }

    fn record_key(&self) -> String {
        format!("{LEASES_DIR}/{}.json", self.host)
    }

    fn own_collections(&self) -> String {
        format!("{COLLECTIONS_DIR}/{}/", self.host)
    }

    fn error(doing: &str, err: opendal::Error) -> StoreError {
        backend_error(doing, err)
    }

    /// Keys under `prefix` with their `Last-Modified`.
    async fn list_times(
        &self,
        prefix: &str,
    ) -> Result<BTreeMap<String, jiff::Timestamp>, StoreError> {
        let entries = match self.op.list_with(prefix).recursive(true).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Self::error(&format!("listing {prefix}"), e)),
        };
        let mut out = BTreeMap::new();
        for entry in entries {
            let meta = entry.metadata();
            if meta.is_dir() {
                continue;
            }
            let modified = match meta.last_modified() {
                Some(t) => stamp(t),
                // Listings without times (not S3): ask for it.
                None => match self.op.stat(entry.path()).await {
                    Ok(meta) => match meta.last_modified() {
                        Some(t) => stamp(t),
                        None => continue,
                    },
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(Self::error("reading a lease's time", e)),
                },
            };
            out.insert(entry.path().to_owned(), modified);
        }
        Ok(out)
    }

    /// The server's time: the `Last-Modified` of `key`, just written.
    async fn write_and_time(
        &self,
        key: &str,
        body: Vec<u8>,
    ) -> Result<jiff::Timestamp, StoreError> {
        self.op
            .write(key, body)
            .await
            .map_err(|e| Self::error(&format!("writing {key}"), e))?;
        let meta = self
            .op
            .stat(key)
            .await
            .map_err(|e| Self::error(&format!("reading back {key}"), e))?;
        meta.last_modified()
            .map(stamp)
            .ok_or_else(|| StoreError::backend(key, "the server gave no Last-Modified"))
    }

    /// The server's time now, by renewing this host's record.
    async fn server_now(&self) -> Result<jiff::Timestamp, StoreError> {
        let body = self.last.lock().await.clone();
        let body = if body.is_empty() {
            self.body(&HostRecord::default())?
        } else {
            body
        };
        self.write_and_time(&self.record_key(), body).await
    }

    fn body(&self, record: &HostRecord) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(&RecordFile {
            host: self.host.clone(),
            pid: std::process::id(),
            digests: record.digests.iter().cloned().collect(),
            images: record.images.iter().cloned().collect(),
        })
        .map_err(|e| StoreError::backend("encoding the lease record", e))
    }

    fn live(&self, modified: jiff::Timestamp, now: jiff::Timestamp) -> bool {
        age(modified, now) < self.settings.ttl
    }

    /// The other hosts' live records, merged; unreadable ones are skipped
    /// (a PUT is atomic, so only a stranger's object can be one).
    async fn others(&self, now: jiff::Timestamp) -> Result<HostRecord, StoreError> {
        let own = self.record_key();
        let mut merged = HostRecord::default();
        for (key, modified) in self.list_times(&format!("{LEASES_DIR}/")).await? {
            if key == own || !self.live(modified, now) {
                continue;
            }
            let bytes = match self.op.read(&key).await {
                Ok(bytes) => bytes.to_vec(),
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(Self::error(&format!("reading {key}"), e)),
            };
            match serde_json::from_slice::<RecordFile>(&bytes) {
                Ok(record) => {
                    merged.digests.extend(record.digests);
                    merged.images.extend(record.images);
                }
                Err(e) => warn!(%key, error = %e, "skipping an unreadable lease record"),
            }
        }
        Ok(merged)
    }

    /// Waits until every other host's collection running now has ended or
    /// expired.
    async fn wait_for_collections(&self) -> Result<(), StoreError> {
        let own = self.own_collections();
        let running =
            |all: BTreeMap<String, jiff::Timestamp>| -> BTreeMap<String, jiff::Timestamp> {
                all.into_iter()
                    .filter(|(k, _)| !k.starts_with(&own))
                    .collect()
            };
        let mut waiting = running(self.list_times(&format!("{COLLECTIONS_DIR}/")).await?);
        if waiting.is_empty() {
            return Ok(());
        }
        let now = self.server_now().await?;
        let started = Instant::now();
        debug!(
            collections = waiting.len(),
            "waiting for collections on other hosts"
        );
        loop {
            let elapsed = jiff::SignedDuration::try_from(started.elapsed()).unwrap_or_default();
            let estimate = now.checked_add(elapsed).unwrap_or(now);
            waiting.retain(|_, modified| self.live(*modified, estimate));
            if waiting.is_empty() {
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
            let current = self.list_times(&format!("{COLLECTIONS_DIR}/")).await?;
            // Only the announcements seen at first: a collection that began
            // later read this host's record.
            waiting = waiting
                .into_keys()
                .filter_map(|k| current.get(&k).map(|t| (k, *t)))
                .collect();
        }
    }

    /// Records and announcements older than the TTL at server time `now`.
    async fn expired_at(&self, now: jiff::Timestamp) -> Result<Vec<ExpiredLease>, StoreError> {
        let mut out = Vec::new();
        for prefix in [format!("{LEASES_DIR}/"), format!("{COLLECTIONS_DIR}/")] {
            for (key, modified) in self.list_times(&prefix).await? {
                if !self.live(modified, now) {
                    out.push(ExpiredLease {
                        key,
                        age_secs: age(modified, now).as_secs(),
                    });
                }
            }
        }
        Ok(out)
    }
}

/// opendal's time (its own jiff version) as ours.
fn stamp(t: opendal::raw::Timestamp) -> jiff::Timestamp {
    jiff::Timestamp::from_nanosecond(t.into_inner().as_nanosecond())
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

/// How long before `now` `then` was (zero when after).
fn age(then: jiff::Timestamp, now: jiff::Timestamp) -> Duration {
    Duration::try_from(now.duration_since(then)).unwrap_or(Duration::ZERO)
}

#[async_trait]
impl SharedLeases for BucketLeases {
    fn is_shared(&self) -> bool {
        true
    }

    async fn publish(&self, record: &HostRecord) -> Result<(), StoreError> {
        let body = self.body(record)?;
        {
            let mut last = self.last.lock().await;
            if last.is_empty() {
                // A collection this host announced in an earlier life (it
                // was killed) is over: withdrawn now, not after the TTL.
                for key in self.list_times(&self.own_collections()).await?.into_keys() {
                    let _ = self.op.delete(&key).await;
                }
            }
            self.op
                .write(&self.record_key(), body.clone())
                .await
                .map_err(|e| Self::error("writing this host's lease record", e))?;
            *last = body;
        }
        self.wait_for_collections().await
    }

    async fn begin_collection(&self) -> Result<CollectionView, StoreError> {
        let id = format!(
            "{}{}",
            self.own_collections(),
            uuid::Uuid::new_v4().simple()
        );
        let now = self
            .write_and_time(&id, self.host.clone().into_bytes())
            .await?;
        let others = self.others(now).await?;
        let mut old = BTreeSet::new();
        for (key, modified) in self.list_times(&format!("{BLOBS_DIR}/")).await? {
            if age(modified, now) > self.settings.grace
                && let Some(digest) = parse_blob_name(&key)
            {
                old.insert(digest);
            }
        }
        Ok(CollectionView {
            id,
            others,
            old: Some(old),
        })
    }

    async fn renew_collection(&self, view: &CollectionView) -> Result<(), StoreError> {
        self.op
            .write(&view.id, self.host.clone().into_bytes())
            .await
            .map(drop)
            .map_err(|e| Self::error("renewing the collection's announcement", e))
    }

    async fn end_collection(&self, view: CollectionView) -> Result<usize, StoreError> {
        let now = self.server_now().await?;
        self.op
            .delete(&view.id)
            .await
            .map_err(|e| Self::error("withdrawing the collection's announcement", e))?;
        let mut removed = 0;
        for expired in self.expired_at(now).await? {
            // Re-read just before: a host that came back renewed it.
            let still = match self.op.stat(&expired.key).await {
                Ok(meta) => meta
                    .last_modified()
                    .is_some_and(|t| !self.live(stamp(t), now)),
                Err(_) => false,
            };
            if still && self.op.delete(&expired.key).await.is_ok() {
                info!(key = %expired.key, age_secs = expired.age_secs, "removed an expired lease");
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn images_in_use_elsewhere(&self) -> Result<BTreeSet<Digest>, StoreError> {
        let now = self.server_now().await?;
        Ok(self.others(now).await?.images)
    }

    async fn expired(&self) -> Result<Vec<ExpiredLease>, StoreError> {
        let now = self.server_now().await?;
        self.expired_at(now).await
    }

    async fn withdraw(&self) -> Result<(), StoreError> {
        self.op
            .delete(&self.record_key())
            .await
            .map_err(|e| Self::error("removing this host's lease record", e))
    }
}
