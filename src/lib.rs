//! The Agones allocation processor as tower middleware.

pub mod allocator;
pub mod client;
pub mod proto;
pub mod server;
pub mod status;
#[cfg(feature = "tls")]
pub mod tls;

pub use client::ProcessorClient;
pub use proto::{AllocationRequest, AllocationResponse};

/// The service name of the processor's gRPC health: `SERVING` while it pulls.
///
/// Clients check it with the standard `grpc.health.v1.Health/Check` before they open their
/// stream.
pub const HEALTH_SERVICE_NAME: &str = "processor";
