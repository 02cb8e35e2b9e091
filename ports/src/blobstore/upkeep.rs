//! Keeping a store in order: the temporaries a crash leaves, and what the
//! store is, for logs and health.

use async_trait::async_trait;

use super::StoreError;

/// The store's housekeeping.
#[async_trait]
pub trait StoreUpkeep: Send + Sync {
    /// Removes temporaries left by a crash; returns how many it removed.
    async fn clean_temporaries(&self) -> Result<usize, StoreError>;
    /// The names of the temporaries `clean_temporaries` would remove now:
    /// those no live writer owns (resumable partial downloads are kept a day
    /// and are not listed while they may still be resumed).
    async fn list_temporaries(&self) -> Result<Vec<String>, StoreError>;
    /// A short description for logs and health ("filesystem /var/lib/vm-registry").
    fn describe(&self) -> String;
}
