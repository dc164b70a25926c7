//! The stream driver: the background task that talks to the processor.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tracing::Instrument;

use super::{Error, backoff::Backoff, queue::Queue};
use crate::{
    HEALTH_SERVICE_NAME,
    proto::{
        BatchRequest, BatchResponse, ProcessorMessage, processor_client::ProcessorClient,
        processor_message::Payload, response_wrapper,
    },
    status::status_from_rpc,
};

/// How long the health check before each connection may take, as upstream.
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Messages the driver may have written and the transport not yet taken. The driver writes
/// at most one batch per pull, so a short queue is enough.
const OUTBOUND_CAPACITY: usize = 8;

type BoxError = tower::BoxError;

/// Counters kept by the driver, readable through [`ClientStats`](super::ClientStats).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) pulls: AtomicU64,
    pub(crate) batches_sent: AtomicU64,
    pub(crate) requests_sent: AtomicU64,
    pub(crate) answers: AtomicU64,
    pub(crate) connects: AtomicU64,
    pub(crate) timed_out: AtomicU64,
}

/// What the driver needs, built by the client builder.
pub(crate) struct DriverConfig {
    pub(crate) client_id: String,
    pub(crate) endpoint: Endpoint,
    pub(crate) max_batch_size: usize,
    pub(crate) reconnect_interval: Duration,
    pub(crate) max_reconnect_interval: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) queue: Queue,
    pub(crate) counters: Arc<Counters>,
    /// Fires when the last client handle is dropped.
    pub(crate) dropped: oneshot::Receiver<()>,
    /// The user's shutdown signal, if any.
    pub(crate) shutdown: Option<ShutdownSignal>,
}

/// A future that resolves when the client should shut down.
pub(crate) type ShutdownSignal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The background task of a [processor client](super::ProcessorClient): connects to the
/// processor, registers, answers its pulls with the queued requests and routes the answers
/// back to the waiting calls, reconnecting whenever the stream ends.
///
/// It must be spawned (or awaited) for calls to be answered; [`Builder::spawn`] does that.
/// It returns when the shutdown signal given to [`Builder::shutdown_signal`] fires, or once
/// every handle on its client and every pending call are dropped, after failing the requests
/// it still holds with [`Error::Closed`]; calls made after that fail with [`Error::Closed`] too.
///
/// [`Builder::spawn`]: super::Builder::spawn
/// [`Builder::shutdown_signal`]: super::Builder::shutdown_signal
#[must_use = "the driver does nothing unless spawned or awaited"]
pub struct Driver {
    future: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl fmt::Debug for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver").finish_non_exhaustive()
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.future.as_mut().poll(cx)
    }
}

impl Driver {
    pub(crate) fn new(config: DriverConfig) -> Self {
        let span = tracing::info_span!("processor_client", client_id = %config.client_id);
        Self {
            future: Box::pin(run(config).instrument(span)),
        }
    }
}

async fn run(config: DriverConfig) {
    let mut session = Session {
        client_id: config.client_id,
        max_batch_size: config.max_batch_size,
        queue: config.queue,
        counters: config.counters,
        next_batch_id: 0,
        connected: false,
        idle_timeout: config.idle_timeout,
    };
    let mut dropped = config.dropped;
    let mut signal = config.shutdown;
    let shutdown = async move {
        match signal.as_mut() {
            Some(signal) => tokio::select! {
                _ = &mut dropped => {}
                _ = signal => {}
            },
            None => {
                let _ = (&mut dropped).await;
            }
        }
    };
    tokio::pin!(shutdown);

    let mut backoff = Backoff::new(config.reconnect_interval, config.max_reconnect_interval);
    let mut last_failure: Option<String> = None;
    loop {
        session.connected = false;
        let ended = tokio::select! {
            ended = session.run(&config.endpoint) => ended,
            _ = &mut shutdown => break,
        };

        // Requests sent on the stream that just ended may or may not have been allocated;
        // their callers learn that now rather than at their timeout.
        let failed = session.queue.fail_in_flight();
        if failed > 0 {
            tracing::warn!(requests = failed, "stream ended with requests in flight");
        }
        if session.connected {
            backoff.reset();
            last_failure = None;
        }
        match ended {
            Ok(()) => tracing::info!("processor ended the stream"),
            // Log a failure once, not once per retry, while it keeps recurring.
            Err(error) => {
                let text = error.to_string();
                if last_failure.as_deref() != Some(text.as_str()) {
                    tracing::warn!(error = %text, "processor unreachable, retrying");
                } else {
                    tracing::debug!(error = %text, "processor still unreachable");
                }
                last_failure = Some(text);
            }
        }

        let delay = backoff.next_delay();
        tracing::debug!(?delay, "reconnecting after a delay");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = &mut shutdown => break,
        }
    }
    tracing::info!("processor client shutting down");
    session.queue.close();
}

/// One connection's worth of driver state.
struct Session {
    client_id: String,
    max_batch_size: usize,
    queue: Queue,
    counters: Arc<Counters>,
    next_batch_id: u64,
    /// Whether the current attempt got as far as an established stream.
    connected: bool,
    /// How long the stream may stay silent before it counts as dead.
    idle_timeout: Duration,
}

impl Session {
    /// Connects, checks health, registers, then serves pulls until the stream ends.
    async fn run(&mut self, endpoint: &Endpoint) -> Result<(), BoxError> {
        let channel = endpoint.connect().await?;
        check_health(channel.clone()).await?;

        // Registration goes into the outbound stream before the call is made: a processor
        // may send no response headers until it has a message to send.
        let (outbound, receiver) = mpsc::channel(OUTBOUND_CAPACITY);
        outbound
            .try_send(self.message(None))
            .expect("a new channel has room");
        let mut inbound = ProcessorClient::new(channel)
            .stream_batches(ReceiverStream::new(receiver))
            .await?
            .into_inner();
        self.counters.connects.fetch_add(1, Relaxed);
        self.connected = true;
        tracing::info!("connected to processor");

        loop {
            // A connection that silently stops carrying bytes (a black hole) is found by the
            // processor's silence long before keepalive would find it.
            let next = tokio::time::timeout(self.idle_timeout, inbound.message());
            let Ok(message) = next.await else {
                return Err(
                    format!("no message from the processor for {:?}", self.idle_timeout).into(),
                );
            };
            let Some(message) = message? else {
                return Ok(());
            };
            self.handle(message, &outbound).await;
        }
    }

    async fn handle(
        &mut self,
        message: ProcessorMessage,
        outbound: &mpsc::Sender<ProcessorMessage>,
    ) {
        match message.payload {
            Some(Payload::Pull(_)) => self.answer_pull(outbound).await,
            Some(Payload::BatchResponse(batch)) => {
                route(&self.queue, &self.counters, batch);
            }
            Some(Payload::BatchRequest(_)) | None => {
                tracing::warn!("ignoring a message a processor should not send");
            }
        }
    }

    /// Sends the queued requests as one batch; an empty queue sends nothing.
    async fn answer_pull(&mut self, outbound: &mpsc::Sender<ProcessorMessage>) {
        self.counters.pulls.fetch_add(1, Relaxed);
        let requests = self.queue.take_batch(self.max_batch_size);
        if requests.is_empty() {
            return;
        }
        let batch_id = self.next_batch_id.to_string();
        self.next_batch_id += 1;
        let size = requests.len();
        let span = tracing::debug_span!("batch", batch_id, size);
        tracing::debug!(parent: &span, "sending batch");

        let message = self.message(Some(Payload::BatchRequest(BatchRequest {
            batch_id,
            requests,
        })));
        match outbound.send(message).instrument(span).await {
            Ok(()) => {
                self.counters.batches_sent.fetch_add(1, Relaxed);
                self.counters.requests_sent.fetch_add(size as u64, Relaxed);
            }
            // The stream is gone and the batch never left: its requests wait for the next one.
            Err(mpsc::error::SendError(message)) => {
                if let Some(Payload::BatchRequest(batch)) = message.payload {
                    self.queue.requeue(batch.requests);
                }
            }
        }
    }

    fn message(&self, payload: Option<Payload>) -> ProcessorMessage {
        ProcessorMessage {
            client_id: self.client_id.clone(),
            payload,
        }
    }
}

/// Hands each answer of a batch to the call waiting for it; returns how many found one.
fn route(queue: &Queue, counters: &Counters, batch: BatchResponse) -> usize {
    tracing::debug!(
        batch_id = batch.batch_id,
        size = batch.responses.len(),
        "batch answered"
    );
    let mut delivered = 0;
    for wrapper in batch.responses {
        let answer = match wrapper.result {
            Some(response_wrapper::Result::Response(response)) => Ok(response),
            Some(response_wrapper::Result::Error(status)) => {
                Err(Error::Allocation(status_from_rpc(status)))
            }
            None => Err(Error::Allocation(tonic::Status::internal(
                "processor answered with neither a response nor an error",
            ))),
        };
        if queue.answer(&wrapper.request_id, answer) {
            counters.answers.fetch_add(1, Relaxed);
            delivered += 1;
        } else {
            tracing::debug!(
                request_id = wrapper.request_id,
                "dropping answer nobody waits for"
            );
        }
    }
    delivered
}

/// A client's queue driven by hand instead of by a [`Driver`]: made by
/// [`Builder::build_detached`](super::Builder::build_detached).
///
/// [`pull`](Self::pull) takes the queued requests as the driver does when the processor pulls,
/// and [`answer`](Self::answer) routes a batch's answers to their calls as the driver does when
/// the answer arrives. Nothing crosses a network, so the client's own cost per call (buffer,
/// batching queue, timeout, routing) can be measured apart from gRPC.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct Detached {
    queue: Queue,
    counters: Arc<Counters>,
    max_batch_size: usize,
}

impl Detached {
    pub(crate) fn new(queue: Queue, counters: Arc<Counters>, max_batch_size: usize) -> Self {
        Self {
            queue,
            counters,
            max_batch_size,
        }
    }

    /// Answers one pull: takes up to `max_batch_size` queued requests, oldest first, and marks
    /// them in flight. `None` when nothing is queued, in which case the driver sends nothing.
    pub fn pull(&self) -> Option<BatchRequest> {
        self.counters.pulls.fetch_add(1, Relaxed);
        let requests = self.queue.take_batch(self.max_batch_size);
        if requests.is_empty() {
            return None;
        }
        let batch_id = self.counters.batches_sent.fetch_add(1, Relaxed).to_string();
        self.counters
            .requests_sent
            .fetch_add(requests.len() as u64, Relaxed);
        Some(BatchRequest { batch_id, requests })
    }

    /// Hands each answer of `batch` to the call waiting for it; returns how many found one.
    pub fn answer(&self, batch: BatchResponse) -> usize {
        route(&self.queue, &self.counters, batch)
    }
}

/// Succeeds when the processor reports itself serving.
async fn check_health(channel: Channel) -> Result<(), BoxError> {
    let request = HealthCheckRequest {
        service: HEALTH_SERVICE_NAME.to_owned(),
    };
    let mut health = HealthClient::new(channel);
    let status = tokio::time::timeout(HEALTH_CHECK_TIMEOUT, health.check(request))
        .await
        .map_err(|_| "health check timed out")??
        .into_inner()
        .status();
    if status != ServingStatus::Serving {
        return Err(format!("processor health is {}", status.as_str_name()).into());
    }
    Ok(())
}
