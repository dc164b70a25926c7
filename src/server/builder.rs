//! The builder of a [`ProcessorHandler`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tonic_health::server::HealthReporter;

use super::batch::{BoxBatch, Rules};
use super::counters::Counters;
use super::handler::{ProcessorHandler, Shared};
#[cfg(feature = "tls")]
use super::identity::CertificateIdentity;
use super::identity::IdentityChecks;
use super::lifecycle::Lifecycle;
use super::pull::{PullLoop, PullLoopHandle};
use super::registry::Registry;
use crate::status::grpc_code_from_http_status;

/// Upstream's pull interval.
const DEFAULT_PULL_INTERVAL: Duration = Duration::from_millis(200);
/// Upstream's unallocated HTTP status: Too Many Requests.
const DEFAULT_UNALLOCATED_HTTP_STATUS: u16 = 429;
/// Room for a batch response and a few pulls behind it.
const DEFAULT_OUTBOUND_CAPACITY: usize = 8;
/// Ten times upstream clients' default batch size.
const DEFAULT_MAX_BATCH_SIZE: usize = 1_000;
/// Far more allocator replicas than a cluster runs.
const DEFAULT_MAX_CLIENTS: usize = 1_000;
/// Requests of one batch in the allocator at once, for per-request allocators.
const DEFAULT_BATCH_CONCURRENCY: usize = 64;
/// Long enough for a client on a slow link, short enough that idle connections do not pile up.
const DEFAULT_REGISTRATION_TIMEOUT: Duration = Duration::from_secs(10);
/// gRPC's usual receive limit, tonic's and Go's default.
const DEFAULT_MAX_MESSAGE_SIZE: usize = 4 * 1024 * 1024;

/// Configures and builds a [`ProcessorHandler`]; made by [`ProcessorHandler::builder`] or
/// [`ProcessorHandler::batch_builder`].
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
/// let (leading, leadership) = tokio::sync::watch::channel(false);
/// let processor = ProcessorHandler::builder(allocator)
///     .pull_interval(Duration::from_millis(100))
///     .unallocated_http_status(503)
///     .max_batch_size(500)
///     .max_clients(64)
///     .outbound_capacity(16)
///     .leadership(leadership)
///     .build();
/// assert!(processor.connected_clients().is_empty());
/// leading.send_replace(true);
/// # }
/// ```
pub struct Builder<A> {
    allocator: A,
    make_batch: fn(A, usize) -> BoxBatch,
    pull_interval: Duration,
    unallocated_http_status: u16,
    max_batch_size: usize,
    max_batches_per_client: usize,
    max_clients: usize,
    outbound_capacity: usize,
    batch_concurrency: usize,
    registration_timeout: Duration,
    max_message_size: usize,
    adaptive_pulling: bool,
    leadership: Option<watch::Receiver<bool>>,
    health: Option<HealthReporter>,
    identity: IdentityChecks,
}

impl<A> Builder<A> {
    pub(crate) fn new(allocator: A, make_batch: fn(A, usize) -> BoxBatch) -> Self {
        Self {
            allocator,
            make_batch,
            pull_interval: DEFAULT_PULL_INTERVAL,
            unallocated_http_status: DEFAULT_UNALLOCATED_HTTP_STATUS,
            max_batch_size: DEFAULT_MAX_BATCH_SIZE,
            max_batches_per_client: 16,
            max_clients: DEFAULT_MAX_CLIENTS,
            outbound_capacity: DEFAULT_OUTBOUND_CAPACITY,
            batch_concurrency: DEFAULT_BATCH_CONCURRENCY,
            registration_timeout: DEFAULT_REGISTRATION_TIMEOUT,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            adaptive_pulling: false,
            leadership: None,
            health: None,
            identity: IdentityChecks::default(),
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

    /// The most requests of one batch that reach the allocator; the ones after them are
    /// answered `ResourceExhausted` in the same batch response.
    ///
    /// Default: 1,000.
    ///
    /// # Panics
    ///
    /// Panics if `max` is zero.
    pub fn max_batch_size(mut self, max: usize) -> Self {
        assert!(max > 0, "max batch size must not be zero");
        self.max_batch_size = max;
        self
    }

    /// The most batches of one client allocated at once. A client sends one batch per pull, so
    /// only a client that sends batches unasked reaches it; the requests of its further
    /// batches are answered `ResourceExhausted` without reaching the allocator, which bounds
    /// the memory and the share of the fleet one client can take.
    ///
    /// Default: 16.
    ///
    /// # Panics
    ///
    /// Panics if `max` is zero.
    pub fn max_batches_per_client(mut self, max: usize) -> Self {
        assert!(max > 0, "max batches per client must not be zero");
        self.max_batches_per_client = max;
        self
    }

    /// The most clients registered at once; a further client id is refused with
    /// `ResourceExhausted`. A client registering again under its id is always accepted.
    ///
    /// Default: 1,000.
    ///
    /// # Panics
    ///
    /// Panics if `max` is zero.
    pub fn max_clients(mut self, max: usize) -> Self {
        assert!(max > 0, "max clients must not be zero");
        self.max_clients = max;
        self
    }

    /// How many messages may wait to be sent on one stream: its outbound queue.
    ///
    /// Pulls are skipped for a client whose queue is full; batch responses wait for room. One
    /// slot per batch a client may have in flight plus a few for pulls is enough; memory per
    /// client is bounded by this many messages.
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

    /// How many requests of one batch a per-request allocator is given at once (the limit of
    /// its [`ConcurrentBatch`](crate::allocator::ConcurrentBatch)). Ignored for a batch
    /// allocator.
    ///
    /// Default: 64.
    ///
    /// # Panics
    ///
    /// Panics if `limit` is zero.
    pub fn batch_concurrency(mut self, limit: usize) -> Self {
        assert!(limit > 0, "batch concurrency must not be zero");
        self.batch_concurrency = limit;
        self
    }

    /// How long a new stream may take to send its registration; a stream still unregistered
    /// then ends with `DeadlineExceeded`, so that connections which never register cannot
    /// pile up.
    ///
    /// Default: 10 s.
    ///
    /// # Panics
    ///
    /// Panics if `timeout` is zero.
    pub fn registration_timeout(mut self, timeout: Duration) -> Self {
        assert!(!timeout.is_zero(), "registration timeout must not be zero");
        self.registration_timeout = timeout;
        self
    }

    /// The largest message, encoded, that a client may send; a larger one ends its stream with
    /// `OutOfRange` (tonic's code for it). A batch of `max_batch_size` requests must fit: set the clients'
    /// `max_message_size` to the same value, so that they split their batches below it.
    ///
    /// Applies to the server made by [`ProcessorHandler::into_server`] and
    /// [`ProcessorHandler::routes`]; messages sent to clients are not limited here, but by
    /// each client's own limit.
    ///
    /// Default: 4 MiB, gRPC's usual limit.
    ///
    /// # Panics
    ///
    /// Panics if `bytes` is zero.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        assert!(bytes > 0, "max message size must not be zero");
        self.max_message_size = bytes;
        self
    }

    /// Pulls a client again as soon as its batch has been answered, instead of at the next
    /// tick, while the pull loop is pulling.
    ///
    /// Under load a client's batches then follow each other back to back; idle clients are
    /// still pulled every pull interval. Upstream has no such mode.
    ///
    /// Default: `false`, as upstream.
    pub fn adaptive_pulling(mut self, enabled: bool) -> Self {
        self.adaptive_pulling = enabled;
        self
    }

    /// Pulls only while `leading` holds `true`; the user drives it, e.g. from a lease.
    ///
    /// Losing leadership stops the pulls, withdraws `SERVING` and ends every stream with
    /// `Unavailable` once its batches in flight are answered, so that clients reconnect and
    /// find the new leader. If the sender is dropped, its last value stays in force.
    ///
    /// Default: none; the replica always leads.
    pub fn leadership(mut self, leading: watch::Receiver<bool>) -> Self {
        self.leadership = Some(leading);
        self
    }

    /// Reports [`HEALTH_SERVICE_NAME`](super::HEALTH_SERVICE_NAME) `SERVING` exactly while
    /// the pull loop pulls (leading and not shutting down) and `NOT_SERVING` otherwise.
    ///
    /// Default: none; health is not reported.
    pub fn health_reporter(mut self, reporter: HealthReporter) -> Self {
        self.health = Some(reporter);
        self
    }

    /// Requires every stream to register with a client id that its client certificate names
    /// (mutual TLS): a stream without a client certificate is refused with `Unauthenticated`,
    /// one whose certificate does not name its id with `PermissionDenied`, before the client is
    /// registered. See [`CertificateIdentity`] for how ids are found in certificates.
    ///
    /// The server must require client certificates, with a client CA in its
    /// [`ServerTls`](crate::tls::ServerTls); otherwise every stream is refused.
    ///
    /// Default: off; the client id is taken as sent.
    #[cfg(feature = "tls")]
    pub fn certificate_identity(mut self, identity: CertificateIdentity) -> Self {
        self.identity.certificate = Some(identity);
        self
    }

    /// Builds the handler and spawns its pull loop on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// Panics when called outside a tokio runtime.
    pub fn build(self) -> ProcessorHandler<A>
    where
        A: Clone,
    {
        let registry = Arc::new(Registry::default());
        let counters = Arc::new(Counters::default());
        let lifecycle = Lifecycle::new();
        let pull_loop = PullLoopHandle::spawn(PullLoop {
            registry: registry.clone(),
            counters: counters.clone(),
            interval: self.pull_interval,
            health: self.health,
            leadership: self.leadership,
            phase: lifecycle.phase(),
            pulling: lifecycle.pulling().clone(),
        });
        let shared = Shared {
            batch: (self.make_batch)(self.allocator.clone(), self.batch_concurrency),
            allocator: self.allocator,
            registry,
            rules: Rules {
                unallocated: grpc_code_from_http_status(self.unallocated_http_status),
                max_batch_size: self.max_batch_size,
                max_batches_per_client: self.max_batches_per_client,
            },
            max_clients: self.max_clients,
            identity: self.identity,
            outbound_capacity: self.outbound_capacity,
            registration_timeout: self.registration_timeout,
            max_message_size: self.max_message_size,
            adaptive_pulling: self.adaptive_pulling,
            counters,
            lifecycle,
        };
        ProcessorHandler::from_parts(shared, pull_loop)
    }
}

impl<A> fmt::Debug for Builder<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("pull_interval", &self.pull_interval)
            .field("unallocated_http_status", &self.unallocated_http_status)
            .field("max_batch_size", &self.max_batch_size)
            .field("max_batches_per_client", &self.max_batches_per_client)
            .field("max_clients", &self.max_clients)
            .field("outbound_capacity", &self.outbound_capacity)
            .field("batch_concurrency", &self.batch_concurrency)
            .field("registration_timeout", &self.registration_timeout)
            .field("max_message_size", &self.max_message_size)
            .field("adaptive_pulling", &self.adaptive_pulling)
            .field("leadership", &self.leadership.is_some())
            .field("health", &self.health.is_some())
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}
