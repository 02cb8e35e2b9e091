//! The use cases: each implements a driving port over the driven ports. This
//! is where ordering, rollback on partial failure and progress live.

pub mod health;
pub mod images;

pub use health::HealthService;
pub use images::{ImageService, ImagesInUse, NoVms};
