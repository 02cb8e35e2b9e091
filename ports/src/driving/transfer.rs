//! Push and pull: images between the local store and an OCI registry, as a
//! stream of per-blob progress that ends with the manifest digest. The
//! caller passes the user's credential with each call; the core keeps none.

use async_trait::async_trait;
use futures::stream::BoxStream;
use vmr_domain::image::{Digest, Reference};

use super::UseCaseError;
use crate::auth::Credential;

/// One push or pull.
#[derive(Debug, Clone)]
pub struct TransferRequest {
    /// `[registry-host/]path[:tag][@digest]`; without a host, the context's
    /// registry is meant.
    pub reference: Reference,
    /// The context whose registry (and credential) is meant; empty for the
    /// current one.
    pub context: String,
    /// What `vmr login` returned for that context, if the user logged in.
    pub credential: Option<Credential>,
}

/// Progress of one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobProgress {
    pub digest: Digest,
    pub media_type: String,
    /// Bytes of the blob at the destination so far (a resumed pull starts
    /// at what was already on disk).
    pub done: u64,
    pub total: u64,
    /// The destination already had it (or a cross-repository mount gave it):
    /// no byte of it travelled.
    pub skipped: bool,
}

/// The end of a successful transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferDone {
    /// The reference as the user gave it.
    pub reference: String,
    /// The manifest's digest, the same locally and in the registry.
    pub digest: Digest,
    /// Blob bytes that actually travelled in this call (skipped blobs and
    /// the resumed part of a blob excluded; the manifest itself excluded).
    pub bytes_transferred: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferEvent {
    Blob(BlobProgress),
    Done(TransferDone),
}

/// Events of one transfer; an error ends it.
pub type TransferEventStream = BoxStream<'static, Result<TransferEvent, UseCaseError>>;

#[async_trait]
pub trait TransferUseCases: Send + Sync {
    /// Pushes a local image. Fails at once (before any stream) when the
    /// reference, the context or the local image is wrong; registry failures
    /// end the stream. Dropping the stream cancels the push.
    async fn push(&self, request: TransferRequest) -> Result<TransferEventStream, UseCaseError>;
    /// Pulls an image into the local store, every blob digest-verified; an
    /// interrupted pull leaves its partial blobs for the next one to resume.
    /// Dropping the stream cancels the pull.
    async fn pull(&self, request: TransferRequest) -> Result<TransferEventStream, UseCaseError>;
}
