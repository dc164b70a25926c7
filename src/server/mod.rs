//! The processor server: the side that pulls batches from allocator clients.
//!
//! [`ProcessorHandler`] implements the generated [`Processor`] trait, so it mounts on a
//! [`tonic::transport::Server`] next to `tonic-health` ([`ProcessorHandler::routes`]). Every
//! batch it receives runs through one allocator stack, and the answers go back on the stream
//! the batch came from.
//!
//! ```text
//! StreamBatches ─► registry (client id -> its stream's only writer) ◄─ pull loop (leader)
//!       │
//!       └─ BatchRequest ─► batch rules ─► allocator stack ─► BatchResponse (same writer)
//! ```
//!
//! - The allocator is a per-request `tower::Service<AllocationRequest, Response =
//!   AllocationResponse>` ([`ProcessorHandler::builder`]), run per batch by a
//!   [`ConcurrentBatch`](crate::allocator::ConcurrentBatch), or a batch allocator
//!   ([`ProcessorHandler::batch_builder`]). Wrap it in any `tower::ServiceBuilder` layers;
//!   [`record::RecordLayer`] counts outcomes and latency.
//! - The first message of a stream registers its client id. A later registration with the same
//!   id replaces the earlier stream, which then ends with `AlreadyExists`. A stream that does
//!   not register within [`Builder::registration_timeout`] ends with `DeadlineExceeded`.
//! - A batch whose client id is not the one its stream registered has every request answered
//!   `InvalidArgument` without reaching the allocator; so has a request wrapper without a
//!   request.
//! - Client identity: a registration is checked before the client is registered. With mutual
//!   TLS, [`Builder::certificate_identity`] requires the id to be named by the client's
//!   certificate; [`BearerTokenLayer`] authenticates requests by bearer token and limits the ids
//!   each token may register as ([`ClientIds`]). Refusals are `Unauthenticated` (no or unknown
//!   credentials) and `PermissionDenied` (an id the credentials do not permit). Serve with TLS
//!   through [`recommended_tls_server`].
//! - While the leadership signal is `true`, a pull loop sends every registered client a pull
//!   every pull interval, and the optional health reporter says [`HEALTH_SERVICE_NAME`] is
//!   `SERVING`. When it turns `false`, each stream ends with `Unavailable` once its batches in
//!   flight are answered, so that clients reconnect to the new leader.
//! - Every request of a batch gets one answer in one `BatchResponse`: empty and duplicate ids
//!   get `InvalidArgument`, requests beyond the batch limit `ResourceExhausted`. Each batch is
//!   processed in a task of its own; a `concurrency_limit(1)` around a batch allocator makes
//!   the processing of batches strictly one at a time.
//! - [`ProcessorHandler::shutdown`] stops pulls, answers the batches in flight, then ends the
//!   streams.
//! - [`AllocationServiceHandler`] serves the unary `AllocationService/Allocate` through the same
//!   per-request allocator.
//!
//! ```no_run
//! use agones_processor::proto::{AllocationRequest, AllocationResponse};
//! use agones_processor::server::record::{OutcomeStats, RecordLayer};
//! use agones_processor::server::{ProcessorHandler, recommended_server};
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let outcomes = OutcomeStats::default();
//! let allocator = ServiceBuilder::new()
//!     // Outermost, so that it counts timeouts and shed requests too.
//!     .layer(RecordLayer::new(outcomes.clone()))
//!     .load_shed()
//!     .concurrency_limit(64)
//!     .timeout(Duration::from_secs(5))
//!     .service_fn(|_request: AllocationRequest| async {
//!         Ok::<_, tower::BoxError>(AllocationResponse {
//!             game_server_name: "gs-1".into(),
//!             ..Default::default()
//!         })
//!     });
//!
//! let (_leading, leadership) = tokio::sync::watch::channel(true);
//! let (health, health_server) = tonic_health::server::health_reporter();
//! let processor = ProcessorHandler::builder(allocator)
//!     .pull_interval(Duration::from_millis(200))
//!     .leadership(leadership)
//!     .health_reporter(health)
//!     .build();
//!
//! let shutdown = {
//!     let processor = processor.clone();
//!     async move {
//!         let _ = tokio::signal::ctrl_c().await;
//!         processor.shutdown(Duration::from_secs(10)).await;
//!     }
//! };
//! recommended_server()
//!     .add_routes(processor.routes(health_server))
//!     .add_service(processor.allocation_service().into_server())
//!     .serve_with_shutdown("127.0.0.1:9090".parse()?, shutdown)
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Known limits
//!
//! - There is no leader election; the user drives the leadership signal. Without one, every
//!   replica pulls.
//! - A batch that a client sends during shutdown without having been pulled may be cut off when
//!   the streams end.
//! - Upstream's idle-connection limit and minimum client ping interval have no tonic
//!   equivalent; see [`recommended_server`].
//!
//! [`Processor`]: crate::proto::processor_server::Processor

mod batch;
mod builder;
mod counters;
mod handler;
mod identity;
mod lifecycle;
mod pull;
pub mod record;
mod registry;
mod stream;
mod token;
mod transport;
mod unary;

#[cfg(test)]
mod tests;

pub use crate::HEALTH_SERVICE_NAME;
pub use builder::Builder;
pub use handler::{OutboundStream, ProcessorHandler};
#[cfg(feature = "tls")]
pub use identity::CertificateIdentity;
pub use identity::ClientIds;
pub use token::{BearerToken, BearerTokenLayer, BearerTokens};
#[cfg(feature = "tls")]
pub use transport::recommended_tls_server;
pub use transport::{
    KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, MIN_CLIENT_PING_INTERVAL, incoming, recommended_server,
};
pub use unary::AllocationServiceHandler;
