//! The processor server: the side that pulls batches from allocator clients.
//!
//! [`ProcessorHandler`] implements the generated [`Processor`] trait, so it mounts on a
//! [`tonic::transport::Server`] next to `tonic-health`. Every request of every batch it receives
//! runs through one allocator, any `tower::Service<AllocationRequest, Response =
//! AllocationResponse>`, and the answers go back on the stream the batch came from.
//!
//! ```text
//! StreamBatches ──► registry (client id -> the stream's only writer) ◄── pull loop
//!       │
//!       └─ BatchRequest ──► batch pipeline ──► allocator ──► BatchResponse (same writer)
//! ```
//!
//! - The first message of a stream registers its client id. A later registration with the same
//!   id replaces the earlier stream, which then ends with `AlreadyExists`.
//! - A pull loop sends every registered client a pull every pull interval. While it runs, the
//!   optional health reporter says [`HEALTH_SERVICE_NAME`] is `SERVING`.
//! - Each batch is processed in a task of its own and answered with one `BatchResponse`.
//! - [`AllocationServiceHandler`] serves the unary `AllocationService/Allocate` through the same
//!   allocator.
//!
//! ```no_run
//! use agones_processor::proto::{AllocationRequest, AllocationResponse};
//! use agones_processor::server::ProcessorHandler;
//! use std::time::Duration;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let allocator = tower::service_fn(|_request: AllocationRequest| async {
//!     Ok::<_, tower::BoxError>(AllocationResponse {
//!         game_server_name: "gs-1".into(),
//!         ..Default::default()
//!     })
//! });
//!
//! let (health, health_server) = tonic_health::server::health_reporter();
//! let processor = ProcessorHandler::builder(allocator)
//!     .pull_interval(Duration::from_millis(200))
//!     .health_reporter(health)
//!     .build();
//!
//! tonic::transport::Server::builder()
//!     .add_service(health_server)
//!     .add_service(processor.allocation_service().into_server())
//!     .add_service(processor.into_server())
//!     .serve("127.0.0.1:9090".parse()?)
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Known limits
//!
//! - The pull loop runs from [`Builder::build`] until the handler is dropped; there is no leader
//!   election yet, so every replica pulls.
//! - Batches of one client are processed concurrently without a limit. A well-behaved client
//!   sends at most one batch per pull, which bounds them in practice; a limit on the allocator
//!   (`tower::limit::ConcurrencyLimit`) bounds the work itself.
//! - There is no limit on the number of clients or on the size of a batch beyond gRPC's message
//!   size limit.
//! - A stream that never sends its registration keeps its RPC open until the client leaves.
//!
//! [`Processor`]: crate::proto::processor_server::Processor

mod batch;
mod builder;
mod counters;
mod handler;
mod lifecycle;
mod pull;
pub mod record;
mod registry;
mod stream;
mod transport;
mod unary;

#[cfg(test)]
mod tests;

pub use crate::HEALTH_SERVICE_NAME;
pub use builder::Builder;
pub use handler::{OutboundStream, ProcessorHandler};
pub use transport::{
    KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, MIN_CLIENT_PING_INTERVAL, recommended_server,
};
pub use unary::AllocationServiceHandler;
