//! The Agones allocation processor as tower middleware.

pub mod allocator;
pub mod client;
pub mod proto;
pub mod server;
pub mod status;

pub use client::ProcessorClient;
pub use proto::{AllocationRequest, AllocationResponse};

/// The service name whose gRPC health tells clients that a processor is pulling.
pub const HEALTH_SERVICE_NAME: &str = "processor";
