//! Configuration of a processor client.

use std::{fmt, future::Future, sync::Arc, time::Duration};

use tokio::sync::oneshot;
use tonic::transport::Endpoint;
use tower::ServiceBuilder;

use super::{
    Batch, Driver, ProcessorClient,
    driver::{Detached, DriverConfig, ShutdownSignal},
    queue::Queue,
    service::Inner,
};

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
    load_shed: bool,
    shutdown: Option<ShutdownSignal>,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("processor_address", &self.processor_address)
            .field("client_id", &self.client_id)
            .field("max_batch_size", &self.max_batch_size)
            .field("allocation_timeout", &self.allocation_timeout)
            .field("reconnect_interval", &self.reconnect_interval)
            .field("max_reconnect_interval", &self.max_reconnect_interval)
            .field("idle_timeout", &self.idle_timeout)
            .field("keepalive_interval", &self.keepalive_interval)
            .field("keepalive_timeout", &self.keepalive_timeout)
            .field("buffer_size", &self.buffer_size)
            .field("load_shed", &self.load_shed)
            .field("shutdown_signal", &self.shutdown.is_some())
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
            load_shed: false,
            shutdown: None,
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

    /// Builds the client and the driver that must run for its calls to be answered.
    ///
    /// Must be called within a tokio runtime, which runs the buffer's worker.
    ///
    /// # Errors
    ///
    /// The processor address is not a valid URI.
    ///
    /// # Panics
    ///
    /// `max_batch_size` or `buffer_size` is 0, or there is no tokio runtime.
    pub fn build(self) -> Result<(ProcessorClient, Driver), tonic::transport::Error> {
        assert!(self.buffer_size > 0, "buffer_size must be at least 1");
        let endpoint = Endpoint::from_shared(self.processor_address)?
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

        let queue = Queue::new(self.max_batch_size);
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
            reconnect_interval: self.reconnect_interval,
            max_reconnect_interval: self.max_reconnect_interval,
            idle_timeout: self.idle_timeout,
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

    /// Builds the client with no driver: nothing connects, nothing pulls, and calls wait until
    /// the returned [`Detached`] takes them with `pull` and answers them with `answer`.
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
    pub fn build_detached(self) -> Result<(ProcessorClient, Detached), tonic::transport::Error> {
        let max_batch_size = self.max_batch_size;
        let (client, _driver) = self.build()?;
        let detached = client.detached(max_batch_size);
        Ok((client, detached))
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
    pub fn spawn(self) -> Result<ProcessorClient, tonic::transport::Error> {
        let (client, driver) = self.build()?;
        tokio::spawn(driver);
        Ok(client)
    }
}
