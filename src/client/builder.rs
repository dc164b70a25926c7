//! Configuration of a processor client.

use std::{fmt, future::Future, sync::Arc, time::Duration};

use tokio::sync::oneshot;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::Endpoint;
use tower::ServiceBuilder;

#[cfg(feature = "tls")]
use crate::tls::ClientTls;

use super::{
    Batch, BuildError, Driver, ProcessorClient,
    driver::{DriverConfig, ShutdownSignal, StreamHarness},
    queue::{MessageLimit, Queue},
    service::Inner,
};

/// gRPC's usual receive limit, tonic's and Go's default, and the processor's.
const DEFAULT_MAX_MESSAGE_SIZE: usize = 4 * 1024 * 1024;

/// Configures and builds a [`ProcessorClient`] and its [`Driver`].
///
/// The names follow the Agones processor client's configuration.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
///
/// use agones_processor::{AllocationRequest, ProcessorClient};
///
/// let client = ProcessorClient::builder("http://127.0.0.1:9090")
///     .client_id("allocator-0")
///     .max_batch_size(100)
///     .allocation_timeout(Duration::from_secs(30))
///     .spawn()?;
/// let response = client.allocate(AllocationRequest::default()).await?;
/// println!("allocated {}", response.game_server_name);
/// # Ok(())
/// # }
/// ```
pub struct Builder {
    processor_address: String,
    client_id: String,
    max_batch_size: usize,
    allocation_timeout: Duration,
    reconnect_interval: Duration,
    max_reconnect_interval: Duration,
    idle_timeout: Duration,
    keepalive_interval: Duration,
    keepalive_timeout: Duration,
    buffer_size: usize,
    max_message_size: usize,
    load_shed: bool,
    shutdown: Option<ShutdownSignal>,
    #[cfg(feature = "tls")]
    tls: Option<ClientTls>,
    bearer_token: Option<String>,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut f = f.debug_struct("Builder");
        f.field("processor_address", &self.processor_address)
            .field("client_id", &self.client_id)
            .field("max_batch_size", &self.max_batch_size)
            .field("allocation_timeout", &self.allocation_timeout)
            .field("reconnect_interval", &self.reconnect_interval)
            .field("max_reconnect_interval", &self.max_reconnect_interval)
            .field("idle_timeout", &self.idle_timeout)
            .field("keepalive_interval", &self.keepalive_interval)
            .field("keepalive_timeout", &self.keepalive_timeout)
            .field("buffer_size", &self.buffer_size)
            .field("max_message_size", &self.max_message_size)
            .field("load_shed", &self.load_shed)
            .field("shutdown_signal", &self.shutdown.is_some());
        #[cfg(feature = "tls")]
        f.field("tls", &self.tls);
        // The token is a secret: only whether there is one is shown.
        f.field("bearer_token", &self.bearer_token.is_some())
            .finish()
    }
}

impl Builder {
    pub(crate) fn new(processor_address: impl Into<String>) -> Self {
        Self {
            processor_address: processor_address.into(),
            client_id: String::new(),
            max_batch_size: 100,
            allocation_timeout: Duration::from_secs(30),
            reconnect_interval: Duration::from_secs(1),
            max_reconnect_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(15),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
            buffer_size: 1024,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            load_shed: false,
            shutdown: None,
            #[cfg(feature = "tls")]
            tls: None,
            bearer_token: None,
        }
    }

    /// The id the client registers with; the processor routes its pulls and answers by it.
    /// Upstream allocators use their pod name.
    ///
    /// Default: a random UUID.
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = client_id.into();
        self
    }

    /// The most requests sent in answer to one pull, which is also how many requests wait for
    /// a pull before the client stops being ready.
    ///
    /// Default: 100.
    ///
    /// # Panics
    ///
    /// `build` panics if it is 0.
    pub fn max_batch_size(mut self, max_batch_size: usize) -> Self {
        self.max_batch_size = max_batch_size;
        self
    }

    /// How long a call may take, from `call` to its answer, before it fails with
    /// [`Error::Timeout`](super::Error::Timeout).
    ///
    /// Default: 30 seconds.
    pub fn allocation_timeout(mut self, allocation_timeout: Duration) -> Self {
        self.allocation_timeout = allocation_timeout;
        self
    }

    /// How long to wait before connecting again after a stream ended or a connection attempt
    /// failed. Each further failure in a row doubles the wait, up to
    /// [`max_reconnect_interval`](Self::max_reconnect_interval), and up to a quarter more is
    /// added at random. A processor that does not report itself serving counts as a failure.
    ///
    /// Default: 1 second.
    pub fn reconnect_interval(mut self, reconnect_interval: Duration) -> Self {
        self.reconnect_interval = reconnect_interval;
        self
    }

    /// The longest wait between two connection attempts, before jitter.
    ///
    /// Default: 30 seconds.
    pub fn max_reconnect_interval(mut self, max_reconnect_interval: Duration) -> Self {
        self.max_reconnect_interval = max_reconnect_interval;
        self
    }

    /// How long the stream may carry no message from the processor before the client drops
    /// it and reconnects. A leading processor pulls every pull interval (200 ms upstream), so
    /// silence means a dead connection, such as one that stopped carrying bytes without
    /// closing, or a processor that stopped pulling. Requests sent on the dropped stream fail
    /// with [`Error::OutcomeUnknown`](super::Error::OutcomeUnknown).
    ///
    /// Must be longer than the processor's pull interval. Default: 15 seconds.
    pub fn idle_timeout(mut self, idle_timeout: Duration) -> Self {
        self.idle_timeout = idle_timeout;
        self
    }

    /// How often the client sends an HTTP/2 keepalive ping, and how long it waits for the
    /// answer before closing the connection. Go processors disconnect clients that ping more
    /// often than every 10 seconds.
    ///
    /// Default: every 30 seconds, 20 seconds to answer.
    pub fn keepalive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keepalive_interval = interval;
        self.keepalive_timeout = timeout;
        self
    }

    /// How many calls may wait in the buffer in front of a full batching queue.
    ///
    /// Default: 1024.
    ///
    /// # Panics
    ///
    /// `build` panics if it is 0.
    pub fn buffer_size(mut self, buffer_size: usize) -> Self {
        self.buffer_size = buffer_size;
        self
    }

    /// The largest message, encoded, sent to or accepted from the processor.
    ///
    /// Batches are cut so that each message stays within it: a pull then takes fewer than
    /// `max_batch_size` requests if they would not fit, and the rest go with the next pull. A
    /// request that would not fit even alone fails at once with
    /// [`Error::TooLarge`](super::Error::TooLarge) and is never sent. A message from the
    /// processor larger than this ends the stream with `OutOfRange`, as a broken stream
    /// does: requests in flight fail with [`Error::OutcomeUnknown`](super::Error::OutcomeUnknown)
    /// and the client reconnects.
    ///
    /// Set it to the processor's own limit. Default: 4 MiB, gRPC's usual limit and the
    /// processor's default.
    ///
    /// # Panics
    ///
    /// `build` panics if it is 0.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Whether a call finding the client full fails at once with
    /// [`Error::Overloaded`](super::Error::Overloaded) (`ResourceExhausted`) instead of
    /// waiting for room. With load shedding the client is always ready.
    ///
    /// Default: `false` (callers wait).
    pub fn load_shed(mut self, load_shed: bool) -> Self {
        self.load_shed = load_shed;
        self
    }

    /// A future after which the client shuts down: the driver stops accepting calls, fails
    /// every queued and in-flight call with [`Error::Closed`](super::Error::Closed), closes
    /// the stream and returns. Without it, the driver shuts down when the last client handle
    /// is dropped.
    ///
    /// Default: none.
    pub fn shutdown_signal(mut self, signal: impl Future<Output = ()> + Send + 'static) -> Self {
        self.shutdown = Some(Box::pin(signal));
        self
    }

    /// Connects with TLS: trusts the CA of `tls` for the processor's certificate and, when
    /// `tls` has an identity, presents it (mutual TLS). The processor address must then be
    /// `https://`.
    ///
    /// A processor that refuses the client's certificate, or whose certificate the client
    /// does not trust, ends the connection attempt; the client retries with backoff, and calls
    /// fail with [`Error::Refused`](super::Error::Refused) when the processor's answer says
    /// why (a client id its certificate does not name).
    ///
    /// Default: none; `http://` addresses only.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// A bearer token sent as `authorization: Bearer <token>` metadata on every request to
    /// the processor (health checks and the stream), for processors behind a
    /// [`BearerTokenLayer`](crate::server::BearerTokenLayer).
    ///
    /// A token the processor does not accept, or one that does not permit the client id, makes
    /// calls fail with [`Error::Refused`](super::Error::Refused). Without TLS the token
    /// crosses the network in the clear.
    ///
    /// Default: none.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer_token = Some(token.into());
        self
    }

    /// Builds the client and the driver that must run for its calls to be answered.
    ///
    /// Must be called within a tokio runtime, which runs the buffer's worker.
    ///
    /// # Errors
    ///
    /// The processor address is not a valid URI or does not start with `http://` or
    /// `https://`; it is `https://` without TLS configured, or
    /// TLS is configured for an address that is not `https://`; rustls refuses the TLS
    /// configuration; the bearer token is not visible ASCII.
    ///
    /// # Panics
    ///
    /// `max_batch_size`, `buffer_size` or `max_message_size` is 0, or there is no tokio
    /// runtime.
    pub fn build(self) -> Result<(ProcessorClient, Driver), BuildError> {
        assert!(self.buffer_size > 0, "buffer_size must be at least 1");
        assert!(
            self.max_message_size > 0,
            "max_message_size must be at least 1"
        );
        let address = self.processor_address;
        let endpoint =
            Endpoint::from_shared(address.clone()).map_err(BuildError::InvalidAddress)?;
        let https = match endpoint.uri().scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(BuildError::UnknownScheme { address }),
        };
        #[cfg(feature = "tls")]
        let endpoint = match self.tls {
            Some(tls) if https => endpoint
                .tls_config(tls.to_config())
                .map_err(BuildError::Tls)?,
            None if !https => endpoint,
            tls => {
                return Err(BuildError::SchemeMismatch {
                    address,
                    tls: tls.is_some(),
                });
            }
        };
        #[cfg(not(feature = "tls"))]
        if https {
            return Err(BuildError::SchemeMismatch {
                address,
                tls: false,
            });
        }
        let bearer_token = self
            .bearer_token
            .map(|token| -> Result<AsciiMetadataValue, BuildError> {
                let mut value = MetadataValue::try_from(format!("Bearer {token}"))
                    .map_err(|_| BuildError::InvalidToken)?;
                value.set_sensitive(true);
                Ok(value)
            })
            .transpose()?;
        let endpoint = endpoint
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            // Go processors disconnect clients that ping more often than every 10 seconds.
            .http2_keep_alive_interval(self.keepalive_interval)
            .keep_alive_timeout(self.keepalive_timeout)
            .keep_alive_while_idle(false);
        let client_id = if self.client_id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            self.client_id
        };

        let limit = MessageLimit::new(&client_id, self.max_message_size);
        let queue = Queue::with_limit(self.max_batch_size, limit);
        let counters = Arc::default();
        let (drop_guard, dropped) = oneshot::channel();

        // The timeout is outermost so that it counts the time spent waiting in the buffer; the
        // optional load shedding sits in front of the buffer, whose readiness it turns into
        // immediate failures.
        let inner: Inner = ServiceBuilder::new()
            .timeout(self.allocation_timeout)
            .option_layer(self.load_shed.then(tower::load_shed::LoadShedLayer::new))
            .buffer(self.buffer_size)
            .service(Batch::new(queue.clone()));

        let driver = Driver::new(DriverConfig {
            client_id: client_id.clone(),
            endpoint,
            max_batch_size: self.max_batch_size,
            max_message_size: self.max_message_size,
            reconnect_interval: self.reconnect_interval,
            max_reconnect_interval: self.max_reconnect_interval,
            idle_timeout: self.idle_timeout,
            bearer_token,
            queue: queue.clone(),
            counters: Arc::clone(&counters),
            dropped,
            shutdown: self.shutdown,
        });
        let client = ProcessorClient::new(
            inner,
            self.allocation_timeout,
            client_id,
            queue,
            counters,
            drop_guard,
        );
        Ok((client, driver))
    }

    /// Builds the client with no driver: nothing connects, and calls wait until the returned
    /// [`StreamHarness`] plays the processor: `pull` takes them as the driver does when the
    /// processor pulls, `answer` routes a batch's answers to their calls.
    ///
    /// For measuring the client's own cost per call without a network; a program that talks to
    /// a processor uses [`build`](Self::build) or [`spawn`](Self::spawn).
    ///
    /// # Errors
    ///
    /// As [`Builder::build`].
    ///
    /// # Panics
    ///
    /// As [`Builder::build`].
    #[doc(hidden)]
    pub fn build_detached(self) -> Result<(ProcessorClient, StreamHarness), BuildError> {
        let (max_batch_size, max_message_size) = (self.max_batch_size, self.max_message_size);
        let (client, _driver) = self.build()?;
        let harness = client.harness(max_batch_size, max_message_size);
        Ok((client, harness))
    }

    /// Builds the client and spawns its driver on the current tokio runtime; the driver stops
    /// once the last clone of the client is dropped and its last pending call has ended.
    ///
    /// # Errors
    ///
    /// As [`Builder::build`].
    ///
    /// # Panics
    ///
    /// As [`Builder::build`].
    pub fn spawn(self) -> Result<ProcessorClient, BuildError> {
        let (client, driver) = self.build()?;
        tokio::spawn(driver);
        Ok(client)
    }
}
