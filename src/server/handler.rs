//! The `Processor` gRPC handler.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};
use tower::{BoxError, Service};

use super::builder::Builder;
use super::pull::PullLoopHandle;
use super::registry::Registry;
use super::stream::{StreamWorker, payload_kind};
use super::unary::AllocationServiceHandler;
use crate::proto::processor_server::{Processor, ProcessorServer};
use crate::proto::{AllocationRequest, AllocationResponse, ProcessorMessage};

/// The response stream of one `StreamBatches` call.
///
/// It is the receiving end of the stream's outbound queue, the one place that pulls and batch
/// responses are written to.
pub type OutboundStream = ReceiverStream<Result<ProcessorMessage, Status>>;

/// The processor: serves `allocation.Processor/StreamBatches` and pulls batches from every
/// registered client.
///
/// Built with [`ProcessorHandler::builder`], which also starts the pull loop. Clones share the
/// registry, the counters and the pull loop; the pull loop stops when the last clone is dropped,
/// while the streams already open keep being answered until they end.
///
/// Each stream has a bounded outbound queue. Pulls are offered to it without waiting and
/// skipped when it is full, so a client that does not read never delays the others; batch
/// responses wait for room, so none is lost while the stream lives.
pub struct ProcessorHandler<A> {
    shared: Arc<Shared<A>>,
    _pull_loop: Arc<PullLoopHandle>,
}

/// What the handler, its stream workers and its batch tasks share.
pub(crate) struct Shared<A> {
    pub(crate) allocator: A,
    pub(crate) registry: Arc<Registry>,
    /// The code of the answer given when no game server matched.
    pub(crate) unallocated: Code,
    pub(crate) outbound_capacity: usize,
    pub(crate) batches_received: AtomicU64,
    pub(crate) requests_received: AtomicU64,
}

impl<A> ProcessorHandler<A> {
    /// A builder for a handler that runs every request through `allocator`.
    pub fn builder(allocator: A) -> Builder<A> {
        Builder::new(allocator)
    }

    pub(crate) fn from_parts(shared: Shared<A>, pull_loop: PullLoopHandle) -> Self {
        Self {
            shared: Arc::new(shared),
            _pull_loop: Arc::new(pull_loop),
        }
    }

    /// The handler as a tonic service, ready for `tonic::transport::Server::add_service`.
    pub fn into_server(self) -> ProcessorServer<Self>
    where
        Self: Processor,
    {
        ProcessorServer::new(self)
    }

    /// A handler for the unary `AllocationService/Allocate` with the same allocator and
    /// unallocated code.
    pub fn allocation_service(&self) -> AllocationServiceHandler<A>
    where
        A: Clone,
    {
        AllocationServiceHandler::with_code(self.shared.allocator.clone(), self.shared.unallocated)
    }

    /// The ids of the registered clients, sorted.
    pub fn connected_clients(&self) -> Vec<String> {
        self.shared.registry.client_ids()
    }

    /// How many batches the handler has received from registered clients.
    pub fn batches_received(&self) -> u64 {
        self.shared.batches_received.load(Ordering::Relaxed)
    }

    /// How many requests the received batches held.
    pub fn requests_received(&self) -> u64 {
        self.shared.requests_received.load(Ordering::Relaxed)
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
            .field("unallocated", &self.shared.unallocated)
            .field("batches_received", &self.batches_received())
            .field("requests_received", &self.requests_received())
            .finish_non_exhaustive()
    }
}

#[tonic::async_trait]
impl<A> Processor for ProcessorHandler<A>
where
    A: Service<AllocationRequest, Response = AllocationResponse> + Clone + Send + Sync + 'static,
    A::Error: Into<BoxError>,
    A::Future: Send,
{
    type StreamBatchesStream = OutboundStream;

    /// Registers the stream's client, then reads its batches in a task of its own.
    ///
    /// The registration is read before the response is returned: clients send it before they
    /// wait for the response headers.
    ///
    /// # Errors
    ///
    /// `InvalidArgument` when the registration has an empty client id; the inbound stream's
    /// error when it fails before registering.
    async fn stream_batches(
        &self,
        request: Request<Streaming<ProcessorMessage>>,
    ) -> Result<Response<OutboundStream>, Status> {
        let mut inbound = request.into_inner();
        let Some(client_id) = read_registration(&mut inbound).await? else {
            // The client left before registering: end its stream with nothing in it.
            return Ok(Response::new(ReceiverStream::new(mpsc::channel(1).1)));
        };

        let (outbound, receiver) = mpsc::channel(self.shared.outbound_capacity);
        let registration = self.shared.registry.register(&client_id, outbound.clone());
        tracing::info!(
            %client_id,
            connection = registration.connection,
            replacing = registration.replacing,
            "client connected"
        );
        StreamWorker::spawn(
            client_id,
            registration,
            inbound,
            outbound,
            self.shared.clone(),
        );
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
