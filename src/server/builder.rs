//! The builder of a [`ProcessorHandler`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tonic_health::server::HealthReporter;

use super::handler::{ProcessorHandler, Shared};
use super::pull::PullLoopHandle;
use super::registry::Registry;
use crate::status::grpc_code_from_http_status;

/// Upstream's pull interval.
const DEFAULT_PULL_INTERVAL: Duration = Duration::from_millis(200);
/// Upstream's unallocated HTTP status: Too Many Requests.
const DEFAULT_UNALLOCATED_HTTP_STATUS: u16 = 429;
/// Room for a batch response and a few pulls behind it.
const DEFAULT_OUTBOUND_CAPACITY: usize = 8;

/// Configures and builds a [`ProcessorHandler`]; made by [`ProcessorHandler::builder`].
///
/// ```
/// use agones_processor::proto::{AllocationRequest, AllocationResponse};
/// use agones_processor::server::ProcessorHandler;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let allocator = tower::service_fn(|_request: AllocationRequest| async {
///     Ok::<_, tower::BoxError>(AllocationResponse::default())
/// });
/// let processor = ProcessorHandler::builder(allocator)
///     .pull_interval(Duration::from_millis(100))
///     .unallocated_http_status(503)
///     .build();
/// assert!(processor.connected_clients().is_empty());
/// # }
/// ```
pub struct Builder<A> {
    allocator: A,
    pull_interval: Duration,
    unallocated_http_status: u16,
    outbound_capacity: usize,
    health: Option<HealthReporter>,
}

impl<A> Builder<A> {
    pub(crate) fn new(allocator: A) -> Self {
        Self {
            allocator,
            pull_interval: DEFAULT_PULL_INTERVAL,
            unallocated_http_status: DEFAULT_UNALLOCATED_HTTP_STATUS,
            outbound_capacity: DEFAULT_OUTBOUND_CAPACITY,
            health: None,
        }
    }

    /// How often every registered client is pulled.
    ///
    /// Default: 200 ms, as upstream.
    ///
    /// # Panics
    ///
    /// Panics if `interval` is zero.
    pub fn pull_interval(mut self, interval: Duration) -> Self {
        assert!(!interval.is_zero(), "pull interval must not be zero");
        self.pull_interval = interval;
        self
    }

    /// The HTTP status whose gRPC code answers a request for which no game server matched.
    ///
    /// Mapped as upstream maps it, by
    /// [`grpc_code_from_http_status`](crate::status::grpc_code_from_http_status); a status
    /// missing from that table means `ResourceExhausted`.
    ///
    /// Default: 429 (Too Many Requests), which is `ResourceExhausted`.
    pub fn unallocated_http_status(mut self, status: u16) -> Self {
        self.unallocated_http_status = status;
        self
    }

    /// How many messages may wait to be sent on one stream.
    ///
    /// Pulls are skipped for a client whose queue is full; batch responses wait for room. One
    /// slot per batch a client may have in flight plus a few for pulls is enough.
    ///
    /// Default: 8.
    ///
    /// # Panics
    ///
    /// Panics if `capacity` is zero.
    pub fn outbound_capacity(mut self, capacity: usize) -> Self {
        assert!(capacity > 0, "outbound capacity must not be zero");
        self.outbound_capacity = capacity;
        self
    }

    /// Reports [`HEALTH_SERVICE_NAME`](super::HEALTH_SERVICE_NAME) `SERVING` while the pull
    /// loop runs and `NOT_SERVING` once it stopped.
    ///
    /// Default: none; health is not reported.
    pub fn health_reporter(mut self, reporter: HealthReporter) -> Self {
        self.health = Some(reporter);
        self
    }

    /// Builds the handler and spawns its pull loop on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// Panics when called outside a tokio runtime.
    pub fn build(self) -> ProcessorHandler<A> {
        let registry = Arc::new(Registry::default());
        let pull_loop = PullLoopHandle::spawn(registry.clone(), self.pull_interval, self.health);
        let shared = Shared {
            allocator: self.allocator,
            registry,
            unallocated: grpc_code_from_http_status(self.unallocated_http_status),
            outbound_capacity: self.outbound_capacity,
            batches_received: Default::default(),
            requests_received: Default::default(),
        };
        ProcessorHandler::from_parts(shared, pull_loop)
    }
}

impl<A> fmt::Debug for Builder<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("pull_interval", &self.pull_interval)
            .field("unallocated_http_status", &self.unallocated_http_status)
            .field("outbound_capacity", &self.outbound_capacity)
            .field("health", &self.health.is_some())
            .finish_non_exhaustive()
    }
}
