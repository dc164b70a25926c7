//! The stream worker: reads one registered client's stream until it ends.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::oneshot;
use tonic::{Status, Streaming};
use tower::{BoxError, Service};
use tracing::Instrument;

use super::batch;
use super::handler::Shared;
use super::registry::{Outbound, Registration};
use crate::proto::{AllocationRequest, AllocationResponse, ProcessorMessage};
use crate::proto::{BatchRequest, processor_message::Payload};

/// The message that ends a stream whose client id registered again elsewhere.
const REPLACED: &str = "replaced by a newer registration with the same client id";

/// Reads a registered stream, dispatching its batches, and deregisters it at the end.
pub(crate) struct StreamWorker<A> {
    client_id: String,
    connection: u64,
    inbound: Streaming<ProcessorMessage>,
    outbound: Outbound,
    replaced: oneshot::Receiver<()>,
    shared: Arc<Shared<A>>,
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
}

impl<A> StreamWorker<A>
where
    A: Service<AllocationRequest, Response = AllocationResponse> + Clone + Send + Sync + 'static,
    A::Error: Into<BoxError>,
    A::Future: Send,
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
            shared,
        };
        tokio::spawn(worker.run().instrument(span));
    }

    async fn run(mut self) {
        let end = loop {
            tokio::select! {
                _ = &mut self.replaced => break End::Replaced,
                _ = self.outbound.closed() => break End::Gone,
                message = self.inbound.message() => match message {
                    Ok(Some(message)) => self.dispatch(message),
                    Ok(None) => break End::Closed,
                    Err(status) => break End::Failed(status),
                },
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
        };
        if let Some(status) = last {
            // An error item ends the RPC with that status even while batch tasks still hold
            // senders. A send that fails means the client is gone already.
            let _ = self.outbound.send(Err(status)).await;
        }
    }

    fn dispatch(&self, message: ProcessorMessage) {
        match message.payload {
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

    fn start_batch(&self, batch: BatchRequest) {
        let shared = &self.shared;
        shared.batches_received.fetch_add(1, Ordering::Relaxed);
        shared
            .requests_received
            .fetch_add(batch.requests.len() as u64, Ordering::Relaxed);
        tracing::debug!(
            batch_id = %batch.batch_id,
            requests = batch.requests.len(),
            "batch received"
        );
        batch::spawn(
            shared.allocator.clone(),
            self.client_id.clone(),
            batch,
            shared.unallocated,
            self.outbound.clone(),
        );
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
