//! The stream worker: reads one registered client's stream until it ends.

use std::sync::Arc;

use tokio::sync::{oneshot, watch};
use tonic::{Status, Streaming};
use tracing::Instrument;

use super::batch::{self, BatchTask};
use super::counters::Counters;
use super::handler::Shared;
use super::lifecycle::{InFlight, InFlightCount, Phase};
use super::registry::{Outbound, Registration};
use crate::proto::ProcessorMessage;
use crate::proto::{
    BatchRequest, BatchResponse, ResponseWrapper, processor_message::Payload, response_wrapper,
};

/// The message that ends a stream whose client id registered again elsewhere.
const REPLACED: &str = "replaced by a newer registration with the same client id";
/// The message that ends every stream when the processor shuts down.
pub(crate) const SHUTTING_DOWN: &str = "processor shutting down";
/// The message that ends every stream when the processor stops leading.
pub(crate) const NOT_LEADING: &str = "processor stopped leading";
/// The answer to every request of a batch whose client id is not the one the stream registered.
const WRONG_CLIENT_ID: &str = "batch client id differs from the stream's registered client id";
/// The answer to every request of a batch beyond the client's batches in flight.
const TOO_MANY_BATCHES: &str = "too many batches in flight for this client";

/// Reads a registered stream, dispatching its batches, and deregisters it at the end.
pub(crate) struct StreamWorker<A> {
    client_id: String,
    connection: u64,
    inbound: Streaming<ProcessorMessage>,
    outbound: Outbound,
    replaced: oneshot::Receiver<()>,
    shared: Arc<Shared<A>>,
    /// This stream's batches not yet answered.
    batches: InFlightCount,
    _open: InFlight,
}

/// Why a stream ended.
enum End {
    /// The client closed its side: answers still in flight are delivered, then the stream ends.
    Closed,
    /// The response stream was dropped: the client went away.
    Gone,
    /// The inbound stream failed, e.g. with a message that does not decode.
    Failed(Status),
    /// A newer registration with the same client id took this one's place.
    Replaced,
    /// The processor shuts down and its batches in flight have been answered.
    Shutdown,
    /// The processor stopped leading: no more pulls will come, so the client is better served
    /// by reconnecting, which finds the new leader.
    NotLeading,
}

impl<A> StreamWorker<A>
where
    A: Send + Sync + 'static,
{
    /// Spawns the worker of a stream registered as `client_id`.
    pub(crate) fn spawn(
        client_id: String,
        registration: Registration,
        inbound: Streaming<ProcessorMessage>,
        outbound: Outbound,
        shared: Arc<Shared<A>>,
    ) {
        let span = tracing::info_span!(
            "processor_stream",
            %client_id,
            connection = registration.connection,
        );
        let worker = Self {
            client_id,
            connection: registration.connection,
            inbound,
            outbound,
            replaced: registration.replaced,
            batches: InFlightCount::new(),
            _open: shared.lifecycle.stream_started(),
            shared,
        };
        tokio::spawn(worker.run().instrument(span));
    }

    async fn run(mut self) {
        let mut phase = self.shared.lifecycle.phase();
        let lost = leadership_lost(
            self.shared.lifecycle.pulling().subscribe(),
            self.shared.lifecycle.phase(),
        );
        tokio::pin!(lost);
        let end = loop {
            let message = tokio::select! {
                _ = &mut self.replaced => break End::Replaced,
                _ = phase.wait_for(|phase| *phase == Phase::Closing) => break End::Shutdown,
                _ = &mut lost => break End::NotLeading,
                _ = self.outbound.closed() => break End::Gone,
                message = self.inbound.message() => message,
            };
            // Handled outside the `select!`, whose other arms hold borrows across its awaits.
            match message {
                Ok(Some(message)) => self.dispatch(message).await,
                Ok(None) => break End::Closed,
                Err(status) => break End::Failed(status),
            }
        };

        // Deregistering before the stream's last message is sent means that a client which saw
        // its stream end is no longer registered.
        self.shared
            .registry
            .deregister(&self.client_id, self.connection);
        let last = match end {
            End::Closed => {
                tracing::info!("client disconnected");
                None
            }
            End::Gone => {
                tracing::info!("client gone");
                None
            }
            End::Failed(status) => {
                tracing::info!(code = ?status.code(), message = status.message(), "stream failed");
                Some(status)
            }
            End::Replaced => {
                tracing::info!("client replaced by a newer registration");
                Some(Status::already_exists(REPLACED))
            }
            End::NotLeading => {
                tracing::info!("stream ended: not leading any more");
                // Answers to batches already received are still delivered first.
                self.batches.idle().await;
                Some(Status::unavailable(NOT_LEADING))
            }
            End::Shutdown => {
                tracing::info!("stream ended by shutdown");
                // Not waiting for room: a client that does not read must not hold up the
                // shutdown. Its stream then ends once it read what is queued and every sender
                // is gone.
                let _ = self
                    .outbound
                    .try_send(Err(Status::unavailable(SHUTTING_DOWN)));
                None
            }
        };
        if let Some(status) = last {
            // An error item ends the RPC with that status even while batch tasks still hold
            // senders. A send that fails means the client is gone already.
            let _ = self.outbound.send(Err(status)).await;
        }
    }

    async fn dispatch(&self, message: ProcessorMessage) {
        match message.payload {
            Some(Payload::BatchRequest(batch)) if message.client_id != self.client_id => {
                tracing::warn!(
                    batch_id = %batch.batch_id,
                    message_client_id = %message.client_id,
                    "batch refused: its client id is not the stream's"
                );
                self.refuse_batch(batch, tonic::Code::InvalidArgument, WRONG_CLIENT_ID)
                    .await;
            }
            Some(Payload::BatchRequest(batch))
                if self.batches.count() >= self.shared.rules.max_batches_per_client =>
            {
                tracing::warn!(
                    batch_id = %batch.batch_id,
                    requests = batch.requests.len(),
                    "batch refused: too many batches in flight for this client"
                );
                self.refuse_batch(batch, tonic::Code::ResourceExhausted, TOO_MANY_BATCHES)
                    .await;
            }
            Some(Payload::BatchRequest(batch)) => self.start_batch(batch),
            None => tracing::warn!(
                message_client_id = %message.client_id,
                "repeated registration on a registered stream, ignored"
            ),
            Some(payload @ (Payload::Pull(_) | Payload::BatchResponse(_))) => tracing::warn!(
                kind = payload_kind(Some(&payload)),
                "message kind not expected from a client, ignored"
            ),
        }
    }

    /// Answers every request of `batch` with `code` and `message` without allocating. Waiting
    /// for room on the stream here stops reading it, so a client that sends without reading
    /// holds up only itself.
    async fn refuse_batch(&self, batch: BatchRequest, code: tonic::Code, message: &str) {
        let status = crate::status::rpc_status(code, message);
        let responses = batch
            .requests
            .into_iter()
            .map(|wrapper| ResponseWrapper {
                request_id: wrapper.request_id,
                result: Some(response_wrapper::Result::Error(status.clone())),
            })
            .collect();
        let message = ProcessorMessage {
            client_id: self.client_id.clone(),
            payload: Some(Payload::BatchResponse(BatchResponse {
                batch_id: batch.batch_id,
                responses,
            })),
        };
        let _ = self.outbound.send(Ok(message)).await;
    }

    fn start_batch(&self, batch: BatchRequest) {
        let shared = &self.shared;
        Counters::add(&shared.counters.batches, 1);
        Counters::add(&shared.counters.requests, batch.requests.len() as u64);
        tracing::debug!(
            batch_id = %batch.batch_id,
            requests = batch.requests.len(),
            "batch received"
        );
        let task = BatchTask {
            allocator: shared.batch.clone(),
            client_id: self.client_id.clone(),
            rules: shared.rules.clone(),
            outbound: self.outbound.clone(),
            counters: shared.counters.clone(),
            in_flight: (shared.lifecycle.batch_started(), self.batches.start()),
            repull: shared
                .adaptive_pulling
                .then(|| shared.lifecycle.pulling().subscribe()),
        };
        batch::spawn(batch, task);
    }
}

/// Resolves when the pull loop, having pulled, stops while the processor runs: leadership was
/// lost. A stream registered while not pulling is left alone until then, and a shutdown has
/// its own ending.
async fn leadership_lost(mut pulling: watch::Receiver<bool>, phase: watch::Receiver<Phase>) {
    loop {
        if pulling.wait_for(|pulling| *pulling).await.is_err() {
            return std::future::pending().await;
        }
        if pulling.wait_for(|pulling| !*pulling).await.is_err() {
            return std::future::pending().await;
        }
        if *phase.borrow() == Phase::Running {
            return;
        }
    }
}

/// The name of a message's payload kind, for logs.
pub(crate) fn payload_kind(payload: Option<&Payload>) -> &'static str {
    match payload {
        None => "registration",
        Some(Payload::Pull(_)) => "pull",
        Some(Payload::BatchRequest(_)) => "batch_request",
        Some(Payload::BatchResponse(_)) => "batch_response",
    }
}
