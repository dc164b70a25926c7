//! Records the outcome and latency of every allocator call.
//!
//! Tower has layers for timeouts, limits, load shedding and tracing, but none that counts
//! outcomes by the gRPC code the processor will answer with. [`RecordLayer`] wraps an allocator
//! (usually outermost, so that timeouts and load shedding below it are counted) and hands each
//! call's code and latency to a [`Recorder`]; [`OutcomeStats`] is a ready-made one.
//!
//! ```
//! use agones_processor::proto::{AllocationRequest, AllocationResponse};
//! use agones_processor::server::record::{OutcomeStats, RecordLayer};
//! use std::time::Duration;
//! use tonic::Code;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let stats = OutcomeStats::default();
//! let allocator = ServiceBuilder::new()
//!     .layer(RecordLayer::new(stats.clone()))
//!     .timeout(Duration::from_secs(1))
//!     .service_fn(|_: AllocationRequest| async {
//!         Ok::<_, tower::BoxError>(AllocationResponse::default())
//!     });
//! allocator.oneshot(AllocationRequest::default()).await.unwrap();
//! assert_eq!(stats.count(Code::Ok), 1);
//! # }
//! ```

mod future;
mod layer;
mod service;
mod stats;

pub use future::ResponseFuture;
pub use layer::RecordLayer;
pub use service::Record;
pub use stats::OutcomeStats;

use std::time::Duration;

use tonic::Code;

/// Receives the outcome of every call a [`Record`] saw.
///
/// Called on the task that polls the call, so it must not block.
pub trait Recorder {
    /// One call ended with `code` (`Code::Ok` for a response) after `latency`.
    ///
    /// A call whose future was dropped before it finished is recorded as `Cancelled`.
    fn record(&self, code: Code, latency: Duration);
}
