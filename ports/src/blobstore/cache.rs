//! Control of a copy of the store kept in memory (the manifest index of a
//! store this daemon alone writes), apart from the store's own ports: only
//! the use case that must see the store itself needs it.

use async_trait::async_trait;

/// A copy of the store's contents kept in memory.
#[async_trait]
pub trait StoreCache: Send + Sync {
    /// Drops the copy, so the next read sees the store itself (what
    /// `vmr system check` inspects, even after someone changed the files by
    /// hand).
    async fn reload(&self);
}
