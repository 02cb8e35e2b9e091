//! Leases shared between daemons: when several hosts use one store (an S3
//! bucket), each publishes what it must keep (blobs its operations in flight
//! wrote or read, images its VMs use), and a garbage collection on any host
//! keeps what a live record names and whatever is younger than the grace
//! window. A store only one daemon uses (the filesystem, memory) needs none
//! of it: [`NoSharedLeases`] does nothing, at no cost.
//!
//! The protocol (docs/shared-bucket.md) is two-sided, like a lock in a
//! store without compare-and-swap: a host publishes its record, *then*
//! looks for collections in progress and waits for them; a collection
//! announces itself, *then* reads the records. With a store that reads its
//! own writes (S3 is strongly consistent), either the collection sees the
//! record or the host sees the collection and waits for it to end, after
//! which it checks (HEAD) that what it needs is still there.

use std::collections::BTreeSet;

use async_trait::async_trait;
use vmr_domain::image::Digest;

use crate::blobstore::StoreError;

/// What one host keeps from collection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostRecord {
    /// Blobs kept as they are (leases of operations in flight).
    pub digests: BTreeSet<Digest>,
    /// Manifests kept with every blob they name (images VMs use).
    pub images: BTreeSet<Digest>,
}

/// What a collection in progress may not delete, read when it began.
#[derive(Debug, Default)]
pub struct CollectionView {
    /// Names the collection to [`SharedLeases::end_collection`].
    pub id: String,
    /// The other hosts' live records, merged.
    pub others: HostRecord,
    /// On a shared store, the only blobs the collection may delete: those
    /// listed right after the announcement and older than the grace window
    /// (by the store's clock). A blob that appeared after that listing is
    /// younger than any grace window, whatever a later listing says. `None`
    /// on a store no other daemon uses: no blob is spared by its age.
    pub old: Option<BTreeSet<Digest>>,
}

/// A record or collection that was not renewed within the lease TTL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredLease {
    /// The object's key (`leases/<host>.json`, `collections/<host>/<id>`).
    pub key: String,
    /// The id of the host that wrote it (and stopped renewing it).
    pub host: String,
    /// A host's lease record or a collection's announcement.
    pub kind: ExpiredKind,
    /// Seconds since it was last renewed, by the store's clock.
    pub age_secs: u64,
}

/// What an [`ExpiredLease`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiredKind {
    /// A host's record of what it keeps (`leases/<host>.json`).
    Record,
    /// A collection's announcement (`collections/<host>/<id>`).
    Collection,
}

/// The shared side of leases (see the module docs).
#[async_trait]
pub trait SharedLeases: Send + Sync {
    /// Whether other daemons may share the store. When false every other
    /// method is a no-op and callers may skip building records.
    fn is_shared(&self) -> bool;
    /// Replaces this host's record, then waits until every collection by
    /// another host that was running at that moment has ended (or expired).
    async fn publish(&self, record: &HostRecord) -> Result<(), StoreError>;
    /// Announces a collection, then reads the other hosts' live records and
    /// the blobs inside the grace window.
    async fn begin_collection(&self) -> Result<CollectionView, StoreError>;
    /// Renews a long collection's announcement.
    async fn renew_collection(&self, view: &CollectionView) -> Result<(), StoreError>;
    /// Withdraws the announcement and removes expired records and
    /// announcements (a dead host's); returns how many it removed.
    async fn end_collection(&self, view: CollectionView) -> Result<usize, StoreError>;
    /// The images the other hosts' VMs use, from their live records.
    async fn images_in_use_elsewhere(&self) -> Result<BTreeSet<Digest>, StoreError>;
    /// Records and announcements that expired (for `vmr system check`).
    async fn expired(&self) -> Result<Vec<ExpiredLease>, StoreError>;
    /// Removes this host's record (a clean stop).
    async fn withdraw(&self) -> Result<(), StoreError>;
}

/// A store no other daemon uses: nothing to share.
#[derive(Debug, Default)]
pub struct NoSharedLeases;

#[async_trait]
impl SharedLeases for NoSharedLeases {
    fn is_shared(&self) -> bool {
        false
    }
    async fn publish(&self, _: &HostRecord) -> Result<(), StoreError> {
        Ok(())
    }
    async fn begin_collection(&self) -> Result<CollectionView, StoreError> {
        Ok(CollectionView::default())
    }
    async fn renew_collection(&self, _: &CollectionView) -> Result<(), StoreError> {
        Ok(())
    }
    async fn end_collection(&self, _: CollectionView) -> Result<usize, StoreError> {
        Ok(0)
    }
    async fn images_in_use_elsewhere(&self) -> Result<BTreeSet<Digest>, StoreError> {
        Ok(BTreeSet::new())
    }
    async fn expired(&self) -> Result<Vec<ExpiredLease>, StoreError> {
        Ok(Vec::new())
    }
    async fn withdraw(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
