//! The `Processor` gRPC handler.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::Routes;
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_health::pb::health_server::{Health, HealthServer};
use tower::{BoxError, Service};

use super::batch::{BoxBatch, Rules};
use super::builder::Builder;
use super::counters::Counters;
use super::identity::{Credentials, IdentityChecks};
use super::lifecycle::Lifecycle;
use super::pull::PullLoopHandle;
use super::registry::{Full, Registry};
use super::stream::{SHUTTING_DOWN, StreamWorker, payload_kind};
use super::unary::AllocationServiceHandler;
use crate::allocator::{BatchOutcome, ConcurrentBatch};
use crate::proto::processor_server::{Processor, ProcessorServer};
use crate::proto::{AllocationRequest, AllocationResponse, ProcessorMessage};

/// The response stream of one `StreamBatches` call.
///
/// It is the receiving end of the stream's outbound queue, the one place that pulls and batch
/// responses are written to.
pub type OutboundStream = ReceiverStream<Result<ProcessorMessage, Status>>;

/// The processor: serves `allocation.Processor/StreamBatches` and, while this replica leads,
/// pulls batches from every registered client.
///
/// Built with [`ProcessorHandler::builder`] (a per-request allocator) or
/// [`ProcessorHandler::batch_builder`] (a batch allocator), which also start the pull loop.
/// Clones share the registry, the counters and the pull loop; the pull loop stops when the last
/// clone is dropped, while the streams already open keep being answered until they end.
///
/// Each stream has a bounded outbound queue, its only writer. Pulls are offered to it without
/// waiting and skipped when it is full, so a client that does not read never delays the
/// others; batch responses wait for room, so none is lost while the stream lives.
///
/// Batches are answered each in a task of their own, so batches of different clients reach the
/// allocator concurrently. Whether they are allocated concurrently is the allocator stack's
/// decision: a `ConcurrencyLimit` of 1 around a batch allocator allocates one batch at a time,
/// in the order they reached it.
pub struct ProcessorHandler<A> {
    shared: Arc<Shared<A>>,
    _pull_loop: Arc<PullLoopHandle>,
}

/// What the handler, its stream workers and its batch tasks share.
pub(crate) struct Shared<A> {
    /// The allocator as given to the builder, for the unary handler.
    pub(crate) allocator: A,
    pub(crate) batch: BoxBatch,
    pub(crate) registry: Arc<Registry>,
    pub(crate) rules: Rules,
    pub(crate) max_clients: usize,
    /// What a registration must prove about its client id.
    pub(crate) identity: IdentityChecks,
    pub(crate) outbound_capacity: usize,
    /// How long a new stream may take to send its registration.
    pub(crate) registration_timeout: Duration,
    /// The largest inbound message, encoded.
    pub(crate) max_message_size: usize,
    /// Pull a client again right after answering its batch.
    pub(crate) adaptive_pulling: bool,
    pub(crate) counters: Arc<Counters>,
    pub(crate) lifecycle: Lifecycle,
}

impl<A> ProcessorHandler<A> {
    /// A builder for a handler that runs every request through the per-request `allocator`.
    ///
    /// The requests of a batch are handed to it by a [`ConcurrentBatch`], in batch order and at
    /// most [`Builder::batch_concurrency`] at once.
    pub fn builder(allocator: A) -> Builder<A>
    where
        A: Service<AllocationRequest, Response = AllocationResponse>
            + Clone
            + Send
            + Sync
            + 'static,
        A::Error: Into<BoxError>,
        A::Future: Send + 'static,
    {
        Builder::new(allocator, |allocator, limit| {
            super::batch::boxed(ConcurrentBatch::new(allocator, limit))
        })
    }

    /// A builder for a handler that hands every batch to the batch `allocator` at once.
    ///
    /// The allocator gets the requests the handler accepted, in batch order, and must return
    /// one outcome per request in the same order; see [`crate::allocator::BatchOutcome`].
    /// [`Builder::batch_concurrency`] does not apply.
    pub fn batch_builder(allocator: A) -> Builder<A>
    where
        A: Service<Vec<AllocationRequest>, Response = Vec<BatchOutcome>>
            + Clone
            + Send
            + Sync
            + 'static,
        A::Error: Into<BoxError>,
        A::Future: Send + 'static,
    {
        Builder::new(allocator, |allocator, _| super::batch::boxed(allocator))
    }

    pub(crate) fn from_parts(shared: Shared<A>, pull_loop: PullLoopHandle) -> Self {
        Self {
            shared: Arc::new(shared),
            _pull_loop: Arc::new(pull_loop),
        }
    }

    /// The handler as a tonic service, ready for `tonic::transport::Server::add_service`.
    ///
    /// Inbound messages larger than [`Builder::max_message_size`] end their stream with
    /// `OutOfRange`.
    pub fn into_server(self) -> ProcessorServer<Self>
    where
        Self: Processor,
    {
        let limit = self.shared.max_message_size;
        ProcessorServer::new(self).max_decoding_message_size(limit)
    }

    /// The handler mounted next to a `tonic-health` service, ready for
    /// `tonic::transport::Server::add_routes` or an axum router.
    ///
    /// ```no_run
    /// # use agones_processor::proto::{AllocationRequest, AllocationResponse};
    /// # use agones_processor::server::{ProcessorHandler, recommended_server};
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// # let allocator = tower::service_fn(|_: AllocationRequest| async {
    /// #     Ok::<_, tower::BoxError>(AllocationResponse::default())
    /// # });
    /// let (health, health_service) = tonic_health::server::health_reporter();
    /// let processor = ProcessorHandler::builder(allocator).health_reporter(health).build();
    /// recommended_server()
    ///     .add_routes(processor.routes(health_service))
    ///     .serve("127.0.0.1:9090".parse()?)
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn routes<H>(&self, health: HealthServer<H>) -> Routes
    where
        Self: Processor,
        H: Health,
    {
        Routes::new(health).add_service(self.clone().into_server())
    }

    /// A handler for the unary `AllocationService/Allocate` with the same allocator and
    /// unallocated code; only for per-request allocators.
    pub fn allocation_service(&self) -> AllocationServiceHandler<A>
    where
        A: Service<AllocationRequest, Response = AllocationResponse> + Clone,
    {
        AllocationServiceHandler::with_code(
            self.shared.allocator.clone(),
            self.shared.rules.unallocated,
        )
    }

    /// Shuts the processor down gracefully, within `grace`.
    ///
    /// In order: health reports `NOT_SERVING` and pulls stop; batches in flight are finished
    /// and their answers queued on their streams; then every stream ends with `Unavailable`
    /// ("processor shutting down") after what is queued on it. New registrations are refused
    /// from the start. Pass the future, after the shutdown signal, to tonic's
    /// `serve_with_shutdown`, so that the server stops once the streams ended.
    ///
    /// Returns `true` when everything finished within `grace`. When `grace` runs out first,
    /// streams are told to end anyway, answers of batches still running may be lost, and
    /// `false` is returned.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        tracing::info!(?grace, "shutting down");
        let finished = self.shared.lifecycle.shutdown(grace).await;
        if finished {
            tracing::info!("shut down");
        } else {
            tracing::warn!("shutdown grace period ran out before every batch and stream ended");
        }
        finished
    }

    /// How many `StreamBatches` streams are open: registered ones, and ones that are open but
    /// have not registered yet.
    ///
    /// A registered stream counts until it ends; answers of its last batches may still be on
    /// their way. A stream that never registers counts until its client leaves or
    /// [`Builder::registration_timeout`] ends it.
    pub fn open_streams(&self) -> usize {
        let awaiting = usize::try_from(self.shared.counters.awaiting()).unwrap_or(usize::MAX);
        self.shared.lifecycle.streams().saturating_add(awaiting)
    }

    /// The ids of the registered clients, sorted.
    pub fn connected_clients(&self) -> Vec<String> {
        self.shared.registry.client_ids()
    }

    /// How many batches the handler has received from registered clients.
    pub fn batches_received(&self) -> u64 {
        Counters::get(&self.shared.counters.batches)
    }

    /// How many requests the received batches held.
    pub fn requests_received(&self) -> u64 {
        Counters::get(&self.shared.counters.requests)
    }

    /// How many pulls have been queued for clients.
    pub fn pulls_sent(&self) -> u64 {
        Counters::get(&self.shared.counters.pulls_sent)
    }

    /// How many pulls were skipped because the client's outbound queue was full or its stream
    /// closing.
    pub fn pulls_skipped(&self) -> u64 {
        Counters::get(&self.shared.counters.pulls_skipped)
    }

    /// How many requests have been answered with `code` (`Code::Ok` for a response).
    ///
    /// Answers are counted when their batch is complete, before they are sent.
    pub fn answers(&self, code: Code) -> u64 {
        self.shared.counters.answers(code)
    }
}

impl<A> Clone for ProcessorHandler<A> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            _pull_loop: self._pull_loop.clone(),
        }
    }
}

impl<A> fmt::Debug for ProcessorHandler<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessorHandler")
            .field("connected_clients", &self.connected_clients())
            .field("open_streams", &self.open_streams())
            .field("rules", &self.shared.rules)
            .field("batches_received", &self.batches_received())
            .field("requests_received", &self.requests_received())
            .finish_non_exhaustive()
    }
}

#[tonic::async_trait]
impl<A> Processor for ProcessorHandler<A>
where
    A: Send + Sync + 'static,
{
    type StreamBatchesStream = OutboundStream;

    /// Registers the stream's client, then reads its batches in a task of its own.
    ///
    /// The registration is read before the response is returned: clients send it before they
    /// wait for the response headers.
    ///
    /// # Errors
    ///
    /// `InvalidArgument` when the registration has an empty client id; `DeadlineExceeded` when
    /// no registration arrived within [`Builder::registration_timeout`]; `Unauthenticated` when
    /// a required client certificate is missing; `PermissionDenied` when the client's
    /// certificate or token does not permit its id; `ResourceExhausted` when the most clients
    /// are connected; `Unavailable` during shutdown; the inbound stream's error when it fails
    /// before registering.
    async fn stream_batches(
        &self,
        request: Request<Streaming<ProcessorMessage>>,
    ) -> Result<Response<OutboundStream>, Status> {
        let credentials = Credentials::of(&request);
        let mut inbound = request.into_inner();
        let shared = &self.shared;
        let registration = {
            let _awaiting = shared.counters.awaiting_registration();
            tokio::time::timeout(shared.registration_timeout, read_registration(&mut inbound)).await
        };
        let Ok(registration) = registration else {
            tracing::info!(
                timeout = ?shared.registration_timeout,
                "stream ended: no registration in time"
            );
            return Err(Status::deadline_exceeded(format!(
                "no registration within {:?}",
                shared.registration_timeout
            )));
        };
        let Some(client_id) = registration? else {
            // The client left before registering: end its stream with nothing in it.
            return Ok(Response::new(ReceiverStream::new(mpsc::channel(1).1)));
        };
        if !shared.lifecycle.is_running() {
            tracing::info!(%client_id, "registration refused during shutdown");
            return Err(Status::unavailable(SHUTTING_DOWN));
        }
        // Before registering: a client refused here never takes another's place or answers.
        if let Err(status) = shared.identity.check(&credentials, &client_id) {
            tracing::warn!(
                %client_id,
                code = ?status.code(),
                reason = status.message(),
                "registration refused"
            );
            return Err(status);
        }

        let (outbound, receiver) = mpsc::channel(shared.outbound_capacity);
        let registration =
            match shared
                .registry
                .register(&client_id, outbound.clone(), shared.max_clients)
            {
                Ok(registration) => registration,
                Err(Full) => {
                    tracing::warn!(
                        %client_id,
                        max_clients = shared.max_clients,
                        "registration refused: too many clients"
                    );
                    return Err(Status::resource_exhausted("too many clients connected"));
                }
            };
        tracing::info!(
            %client_id,
            connection = registration.connection,
            replacing = registration.replacing,
            "client connected"
        );
        StreamWorker::spawn(client_id, registration, inbound, outbound, shared.clone());
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

/// Reads up to the registration and returns its client id, or `None` if the stream ended first.
///
/// Messages with a payload before it are ignored: the client is not registered yet, so there is
/// no stream to answer them on.
async fn read_registration(
    inbound: &mut Streaming<ProcessorMessage>,
) -> Result<Option<String>, Status> {
    while let Some(message) = inbound.message().await? {
        if message.payload.is_some() {
            tracing::warn!(
                client_id = %message.client_id,
                kind = payload_kind(message.payload.as_ref()),
                "message before registration, ignored"
            );
            continue;
        }
        if message.client_id.is_empty() {
            tracing::warn!("registration without client id refused");
            return Err(Status::invalid_argument("client id is required"));
        }
        return Ok(Some(message.client_id));
    }
    Ok(None)
}
