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
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tracing::Instrument as _;

use super::{
    Batch, Error,
    backoff::Backoff,
    queue::{MessageLimit, Queue},
};
use crate::{
    HEALTH_SERVICE_NAME,
    proto::{
        BatchRequest, BatchResponse, ProcessorMessage, PullRequest,
        processor_client::ProcessorClient, processor_message::Payload, response_wrapper,
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
    pub(crate) pulls_skipped: AtomicU64,
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
    /// The decode limit of messages from the processor.
    pub(crate) max_message_size: usize,
    pub(crate) reconnect_interval: Duration,
    pub(crate) max_reconnect_interval: Duration,
    pub(crate) idle_timeout: Duration,
    /// `Bearer <token>`, sent as `authorization` metadata.
    pub(crate) bearer_token: Option<AsciiMetadataValue>,
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
        max_message_size: config.max_message_size,
        queue: config.queue,
        counters: config.counters,
        next_batch_id: 0,
        connected: false,
        idle_timeout: config.idle_timeout,
        bearer_token: config.bearer_token,
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
            Err(error) => {
                // A refusal is not waited out: the callers learn it now, and calls fail with
                // it until an attempt is accepted.
                let refused = refusal(&error).map(|status| {
                    let failed = session.queue.refuse(status.clone());
                    (status, failed)
                });
                // Log a failure once, not once per retry, while it keeps recurring.
                let text = with_sources(error.as_ref());
                let repeated = last_failure.as_deref() == Some(text.as_str());
                match (refused, repeated) {
                    (Some((status, failed)), false) => tracing::warn!(
                        code = ?status.code(),
                        reason = status.message(),
                        failed,
                        "processor refused this client"
                    ),
                    (Some((status, failed)), true) => {
                        tracing::debug!(code = ?status.code(), failed, "processor still refuses");
                    }
                    (None, false) => tracing::warn!(
                        address = %config.endpoint.uri(),
                        error = %text,
                        "processor unreachable, retrying"
                    ),
                    (None, true) => tracing::debug!(error = %text, "processor still unreachable"),
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
    max_message_size: usize,
    queue: Queue,
    counters: Arc<Counters>,
    next_batch_id: u64,
    /// Whether the current attempt got as far as an established stream.
    connected: bool,
    /// How long the stream may stay silent before it counts as dead.
    idle_timeout: Duration,
    /// `Bearer <token>` for the `authorization` metadata of every request.
    bearer_token: Option<AsciiMetadataValue>,
}

impl Session {
    /// Connects, checks health, registers, then serves pulls until the stream ends.
    async fn run(&mut self, endpoint: &Endpoint) -> Result<(), BoxError> {
        let channel = endpoint.connect().await?;
        check_health(
            channel.clone(),
            self.request(HealthCheckRequest {
                service: HEALTH_SERVICE_NAME.to_owned(),
            }),
        )
        .await?;

        // Registration goes into the outbound stream before the call is made: a processor
        // may send no response headers until it has a message to send.
        let (outbound, receiver) = mpsc::channel(OUTBOUND_CAPACITY);
        outbound
            .try_send(self.message(None))
            .expect("a new channel has room");
        let mut inbound = ProcessorClient::new(channel)
            .max_decoding_message_size(self.max_message_size)
            .stream_batches(self.request(ReceiverStream::new(receiver)))
            .await?
            .into_inner();
        // The processor answers only after it checked the registration: the client id is
        // accepted.
        self.queue.accepted();
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
            self.handle(message, &outbound);
        }
    }

    fn handle(&mut self, message: ProcessorMessage, outbound: &mpsc::Sender<ProcessorMessage>) {
        match message.payload {
            Some(Payload::Pull(_)) => self.answer_pull(outbound),
            Some(Payload::BatchResponse(batch)) => {
                route(&self.queue, &self.counters, batch);
            }
            Some(Payload::BatchRequest(_)) | None => {
                tracing::warn!("ignoring a message a processor should not send");
            }
        }
    }

    /// Sends the queued requests as one batch; an empty queue sends nothing.
    ///
    /// Never waits for the transport: while the driver waits, it reads nothing, and a
    /// processor that has stopped reading until its own sends go through would wait for the
    /// driver in turn. When the outbound queue is full, this pull takes nothing and the
    /// requests wait for a later one.
    fn answer_pull(&mut self, outbound: &mpsc::Sender<ProcessorMessage>) {
        self.counters.pulls.fetch_add(1, Relaxed);
        let permit = match outbound.try_reserve() {
            Ok(permit) => permit,
            Err(mpsc::error::TrySendError::Full(())) => {
                self.counters.pulls_skipped.fetch_add(1, Relaxed);
                tracing::debug!("transport backed up, this pull takes nothing");
                return;
            }
            // The stream is gone; the read loop ends with it.
            Err(mpsc::error::TrySendError::Closed(())) => return,
        };
        let requests = self.queue.take_batch(self.max_batch_size);
        if requests.is_empty() {
            return;
        }
        let batch_id = self.next_batch_id.to_string();
        self.next_batch_id += 1;
        let size = requests.len();
        let _span = tracing::debug_span!("batch", batch_id, size).entered();
        tracing::debug!("sending batch");
        permit.send(self.message(Some(Payload::BatchRequest(BatchRequest {
            batch_id,
            requests,
        }))));
        self.counters.batches_sent.fetch_add(1, Relaxed);
        self.counters.requests_sent.fetch_add(size as u64, Relaxed);
    }

    /// A request to the processor with this client's metadata.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.bearer_token {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        request
    }

    fn message(&self, payload: Option<Payload>) -> ProcessorMessage {
        ProcessorMessage {
            client_id: self.client_id.clone(),
            payload,
        }
    }
}

/// Hands each answer of a batch to the call waiting for it.
fn route(queue: &Queue, counters: &Counters, batch: BatchResponse) {
    tracing::debug!(
        batch_id = batch.batch_id,
        size = batch.responses.len(),
        "batch answered"
    );
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
        } else {
            tracing::debug!(
                request_id = wrapper.request_id,
                "dropping answer nobody waits for"
            );
        }
    }
}

/// The status callers get when `error` says that this client's credentials will not do: the
/// processor's refusal of its certificate, token or client id, or a TLS handshake that failed
/// on a certificate (either side's).
fn refusal(error: &BoxError) -> Option<Status> {
    if let Some(status) = error.downcast_ref::<Status>()
        && matches!(
            status.code(),
            Code::Unauthenticated | Code::PermissionDenied
        )
    {
        return Some(Status::new(status.code(), status.message()));
    }
    #[cfg(feature = "tls")]
    if let Some(error) = certificate_failure(error.as_ref()) {
        return Some(Status::unauthenticated(format!(
            "TLS handshake failed: {error}"
        )));
    }
    None
}

/// Alerts by which a processor refuses this client's certificate.
#[cfg(feature = "tls")]
const CERTIFICATE_ALERTS: [rustls::AlertDescription; 8] = [
    rustls::AlertDescription::BadCertificate,
    rustls::AlertDescription::UnsupportedCertificate,
    rustls::AlertDescription::CertificateRevoked,
    rustls::AlertDescription::CertificateExpired,
    rustls::AlertDescription::CertificateUnknown,
    rustls::AlertDescription::UnknownCA,
    rustls::AlertDescription::AccessDenied,
    rustls::AlertDescription::CertificateRequired,
];

/// The rustls error in `error`'s chain, as text, if it is about a certificate: one the
/// processor sent that this client does not trust, or this client's own that the processor
/// refused (an alert from it).
///
/// With TLS 1.3 a processor refuses a client's certificate after the client finished its
/// handshake, so the alert arrives on the HTTP/2 connection, whose errors keep only the text
/// of the I/O error they carried: alerts are recognised by rustls' text for them.
#[cfg(feature = "tls")]
fn certificate_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let refused = |tls: &rustls::Error| match tls {
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => true,
        rustls::Error::AlertReceived(alert) => CERTIFICATE_ALERTS.contains(alert),
        _ => false,
    };
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(tls) = error.downcast_ref::<rustls::Error>()
            && refused(tls)
        {
            return Some(tls.to_string());
        }
        // I/O errors wrap what they carry, and their `source` skips it.
        if let Some(inner) = error
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
                if refused(tls) {
                    return Some(tls.to_string());
                }
            } else {
                let text = inner.to_string();
                let alert = |alert: &rustls::AlertDescription| {
                    rustls::Error::AlertReceived(*alert).to_string() == text
                };
                if CERTIFICATE_ALERTS.iter().any(alert) {
                    return Some(text);
                }
            }
        }
        next = error.source();
    }
    None
}

/// The client's handling of one established processor stream, without a network.
///
/// It runs the driver's own code for what a processor sends: a pull takes a batch from the
/// queue and sends it, a batch response ends the calls it answers, anything else is ignored.
/// Calls are made through the [`Batch`] service it comes with; [`end_stream`] and [`close`] do
/// to them what a broken stream and a shutdown do. It exists for fuzz targets and property
/// tests that drive the client with arbitrary message sequences, and for benchmarks of the
/// client without a network ([`Builder::build_detached`](super::Builder::build_detached)); it
/// is not part of the supported API.
///
/// [`end_stream`]: Self::end_stream
/// [`close`]: Self::close
#[doc(hidden)]
pub struct StreamHarness {
    session: Session,
    outbound: mpsc::Sender<ProcessorMessage>,
    sent: mpsc::Receiver<ProcessorMessage>,
}

impl fmt::Debug for StreamHarness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamHarness")
            .field("client_id", &self.session.client_id)
            .finish_non_exhaustive()
    }
}

impl StreamHarness {
    /// A client registered as `client_id` on a fresh stream, with the batching service its
    /// calls go through.
    ///
    /// # Panics
    ///
    /// If `max_batch_size` is 0.
    pub fn new(client_id: &str, max_batch_size: usize, max_message_size: usize) -> (Self, Batch) {
        let queue = Queue::with_limit(
            max_batch_size,
            MessageLimit::new(client_id, max_message_size),
        );
        let harness = Self::over(
            client_id,
            queue.clone(),
            Arc::default(),
            max_batch_size,
            max_message_size,
        );
        (harness, Batch::new(queue))
    }

    /// The stream handling of a client whose queue and counters are these.
    pub(crate) fn over(
        client_id: &str,
        queue: Queue,
        counters: Arc<Counters>,
        max_batch_size: usize,
        max_message_size: usize,
    ) -> Self {
        let (outbound, sent) = mpsc::channel(OUTBOUND_CAPACITY);
        let session = Session {
            client_id: client_id.to_owned(),
            max_batch_size,
            max_message_size,
            queue,
            counters,
            next_batch_id: 0,
            connected: true,
            idle_timeout: Duration::MAX,
            bearer_token: None,
        };
        Self {
            session,
            outbound,
            sent,
        }
    }

    /// Answers a pull as the driver does: the batch sent, if anything was queued.
    pub fn pull(&mut self) -> Option<BatchRequest> {
        let pull = self
            .session
            .message(Some(Payload::Pull(PullRequest::default())));
        self.receive(pull)
            .into_iter()
            .find_map(|message| match message.payload {
                Some(Payload::BatchRequest(batch)) => Some(batch),
                _ => None,
            })
    }

    /// Hands the answers of `batch` to their calls, as the driver does when they arrive.
    pub fn answer(&mut self, batch: BatchResponse) {
        let response = self.session.message(Some(Payload::BatchResponse(batch)));
        self.receive(response);
    }

    /// Handles `message` as if it arrived on the stream; returns what the client sent in
    /// answer (a batch, or nothing).
    pub fn receive(&mut self, message: ProcessorMessage) -> Vec<ProcessorMessage> {
        // The client sends at most one message per message received, and what it sent is taken
        // below before the next one, so the outbound queue always has room.
        self.session.handle(message, &self.outbound);
        let mut sent = Vec::new();
        while let Ok(message) = self.sent.try_recv() {
            sent.push(message);
        }
        sent
    }

    /// Ends the stream as a break does, then opens the next one: requests in flight fail with
    /// [`Error::OutcomeUnknown`], queued ones wait for the next pull. Returns how many failed.
    pub fn end_stream(&mut self) -> usize {
        self.session.queue.fail_in_flight()
    }

    /// Shuts the client down as the driver does: every queued and in-flight call fails with
    /// [`Error::Closed`], and later calls too.
    pub fn close(&mut self) {
        self.session.queue.close();
    }
}

/// `error` and each of its sources, on one line: transport errors keep their cause there.
fn with_sources(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(error) = source {
        let next = error.to_string();
        // Some errors repeat their source in their own message.
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = error.source();
    }
    text
}

/// Succeeds when the processor reports itself serving.
async fn check_health(
    channel: Channel,
    request: tonic::Request<HealthCheckRequest>,
) -> Result<(), BoxError> {
    let mut health = HealthClient::new(channel);
    let answer = tokio::time::timeout(HEALTH_CHECK_TIMEOUT, health.check(request))
        .await
        .map_err(|_| "health check timed out")?;
    let status = match answer {
        Ok(response) => response.into_inner().status(),
        Err(status) if status.code() == Code::NotFound => {
            return Err(format!(
                "the processor has no health status for service {HEALTH_SERVICE_NAME:?}: \
                 was its handler built with a health reporter?"
            )
            .into());
        }
        Err(status) => return Err(status.into()),
    };
    if status != ServingStatus::Serving {
        return Err(format!("processor health is {}", status.as_str_name()).into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_processor_without_health_status_is_named_as_such() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        // A health service nobody reports to: what a handler built without a reporter serves.
        let (_reporter, health) = tonic_health::server::health_reporter();
        let server = tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(crate::server::incoming(listener));
        let server = tokio::spawn(server);
        let channel = Endpoint::from_shared(format!("http://{address}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let request = tonic::Request::new(HealthCheckRequest {
            service: HEALTH_SERVICE_NAME.to_owned(),
        });
        let error = check_health(channel, request).await.unwrap_err();
        assert!(
            error.to_string().contains("built with a health reporter"),
            "{error}"
        );
        server.abort();
    }

    #[test]
    fn errors_are_logged_with_their_sources() {
        #[derive(Debug)]
        struct Transport(std::io::Error);
        impl fmt::Display for Transport {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("transport error")
            }
        }
        impl std::error::Error for Transport {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(
            with_sources(&Transport(refused)),
            "transport error: refused"
        );
    }

    #[test]
    fn refusals_by_status_code() {
        for code in [Code::Unauthenticated, Code::PermissionDenied] {
            let error: BoxError = Status::new(code, "no").into();
            let status = refusal(&error).expect("a refusal");
            assert_eq!((status.code(), status.message()), (code, "no"));
        }
        for code in [Code::Unavailable, Code::Unknown, Code::InvalidArgument] {
            let error: BoxError = Status::new(code, "no").into();
            assert!(refusal(&error).is_none(), "{code:?}");
        }
        assert!(refusal(&"health check timed out".into()).is_none());
    }

    #[cfg(feature = "tls")]
    #[test]
    fn certificate_failures_are_refusals() {
        /// An error with a source, as transports nest them.
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("transport error")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let invalid = std::io::ErrorKind::InvalidData;

        let untrusted = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let error: BoxError = Outer(std::io::Error::new(invalid, untrusted)).into();
        let status = refusal(&error).expect("an untrusted processor certificate");
        assert_eq!(status.code(), Code::Unauthenticated);
        assert!(status.message().contains("UnknownIssuer"), "{status:?}");

        // An alert whose type was lost on the way, as HTTP/2 errors keep only the text.
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired);
        let error: BoxError = Outer(std::io::Error::new(invalid, alert.to_string())).into();
        let status = refusal(&error).expect("a refused client certificate");
        assert!(
            status.message().contains("CertificateRequired"),
            "{status:?}"
        );

        for other in [
            rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure).to_string(),
            "connection reset".to_owned(),
        ] {
            let error: BoxError = Outer(std::io::Error::new(invalid, other.clone())).into();
            assert!(refusal(&error).is_none(), "{other}");
        }
        let closed = rustls::Error::AlertReceived(rustls::AlertDescription::CloseNotify);
        let error: BoxError = Outer(std::io::Error::new(invalid, closed)).into();
        assert!(refusal(&error).is_none());
    }
}
