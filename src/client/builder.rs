//! Configuration of a processor client.

use std::{sync::Arc, time::Duration};

use tokio::sync::oneshot;
use tonic::transport::Endpoint;
use tower::ServiceBuilder;

use super::{Batch, Driver, ProcessorClient, driver::DriverConfig, queue::Queue};

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
#[derive(Debug, Clone)]
pub struct Builder {
    processor_address: String,
    client_id: String,
    max_batch_size: usize,
    allocation_timeout: Duration,
    reconnect_interval: Duration,
    buffer_size: usize,
}

impl Builder {
    pub(crate) fn new(processor_address: impl Into<String>) -> Self {
        Self {
            processor_address: processor_address.into(),
            client_id: String::new(),
            max_batch_size: 100,
            allocation_timeout: Duration::from_secs(30),
            reconnect_interval: Duration::from_secs(1),
            buffer_size: 1024,
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
    /// failed.
    ///
    /// Default: 1 second.
    pub fn reconnect_interval(mut self, reconnect_interval: Duration) -> Self {
        self.reconnect_interval = reconnect_interval;
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
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(false);
        let client_id = if self.client_id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            self.client_id
        };

        let queue = Queue::new(self.max_batch_size);
        let counters = Arc::default();
        let (shutdown, shutdown_signal) = oneshot::channel();

        // The timeout is outermost so that it counts the time spent waiting in the buffer.
        let inner = ServiceBuilder::new()
            .timeout(self.allocation_timeout)
            .buffer(self.buffer_size)
            .service(Batch::new(queue.clone()));

        let driver = Driver::new(DriverConfig {
            client_id: client_id.clone(),
            endpoint,
            max_batch_size: self.max_batch_size,
            reconnect_interval: self.reconnect_interval,
            queue: queue.clone(),
            counters: Arc::clone(&counters),
            shutdown: shutdown_signal,
        });
        let client = ProcessorClient::new(
            inner,
            self.allocation_timeout,
            client_id,
            queue,
            counters,
            shutdown,
        );
        Ok((client, driver))
    }

    /// Builds the client and spawns its driver on the current tokio runtime; the driver stops
    /// when the last clone of the client is dropped.
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
