//! The client service users call.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, atomic::Ordering::Relaxed},
    task::{Context, Poll, ready},
    time::Duration,
};

use tokio::sync::oneshot;
use tower::{BoxError, buffer::Buffer, load_shed::LoadShed, timeout::Timeout, util::Either};
use tower_service::Service;

use super::{
    Builder, Error, batch,
    driver::{Counters, StreamHarness},
    queue::Queue,
};
use crate::proto::{AllocationRequest, AllocationResponse};

type Buffered = Buffer<AllocationRequest, batch::ResponseFuture>;

/// The stack inside the client: the load shedding layer is present only when enabled.
pub(crate) type Inner = Timeout<Either<LoadShed<Buffered>, Buffered>>;

/// A processor client: a `tower::Service<AllocationRequest>` whose calls are answered by a
/// remote processor that pulls them in batches.
///
/// Built by [`ProcessorClient::builder`] as `Timeout` → `Buffer` → [`Batch`](super::Batch).
/// Clones share one queue, one stream and one driver; the driver stops once the last clone is
/// dropped and the last pending call has ended.
///
/// # Backpressure
///
/// `poll_ready` is tower's `Buffer` readiness: it reserves a place in the buffer, which is
/// released by `call` or by dropping the client. The buffer is full once the batching queue
/// holds `max_batch_size` requests and `buffer_size` more wait in front of it; callers then
/// wait until a pull drains the queue or queued calls give up. The allocation timeout counts
/// from `call`, not from readiness.
#[derive(Debug, Clone)]
pub struct ProcessorClient {
    inner: Inner,
    allocation_timeout: Duration,
    shared: Arc<Shared>,
}

/// What the clones of one client share; dropping the last one stops the driver.
#[derive(Debug)]
struct Shared {
    client_id: String,
    queue: Queue,
    counters: Arc<Counters>,
    /// Dropped with the last clone, which tells the driver to shut down.
    _drop_guard: oneshot::Sender<()>,
}

/// A snapshot of a client's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// Requests waiting for a pull.
    pub queued: usize,
    /// Requests sent and waiting for their answer.
    pub in_flight: usize,
    /// Pulls received from the processor.
    pub pulls: u64,
    /// Pulls that took nothing because the transport had not yet taken the batches before
    /// (the processor reads slower than it pulls).
    pub pulls_skipped: u64,
    /// Batches sent.
    pub batches_sent: u64,
    /// Requests sent in those batches.
    pub requests_sent: u64,
    /// Answers handed to a waiting call.
    pub answers: u64,
    /// Streams established (the first connection and every reconnection).
    pub connects: u64,
    /// Calls that ended with [`Error::Timeout`].
    pub timed_out: u64,
    /// Calls dropped before their answer arrived, by their caller or by a timeout.
    pub abandoned: u64,
}

impl ProcessorClient {
    /// A builder for a client of the processor at `processor_address`, such as
    /// `http://127.0.0.1:9090`.
    pub fn builder(processor_address: impl Into<String>) -> Builder {
        Builder::new(processor_address)
    }

    pub(crate) fn new(
        inner: Inner,
        allocation_timeout: Duration,
        client_id: String,
        queue: Queue,
        counters: Arc<Counters>,
        drop_guard: oneshot::Sender<()>,
    ) -> Self {
        let shared = Shared {
            client_id,
            queue,
            counters,
            _drop_guard: drop_guard,
        };
        Self {
            inner,
            allocation_timeout,
            shared: Arc::new(shared),
        }
    }

    /// The stream handling of this client, driven by hand, for [`Builder::build_detached`].
    pub(crate) fn harness(&self, max_batch_size: usize, max_message_size: usize) -> StreamHarness {
        StreamHarness::over(
            &self.shared.client_id,
            self.shared.queue.clone(),
            Arc::clone(&self.shared.counters),
            max_batch_size,
            max_message_size,
        )
    }

    /// The id this client registers with.
    pub fn client_id(&self) -> &str {
        &self.shared.client_id
    }

    /// The client's counters now.
    pub fn stats(&self) -> ClientStats {
        let counters = &self.shared.counters;
        ClientStats {
            queued: self.shared.queue.queued(),
            in_flight: self.shared.queue.in_flight(),
            pulls: counters.pulls.load(Relaxed),
            pulls_skipped: counters.pulls_skipped.load(Relaxed),
            batches_sent: counters.batches_sent.load(Relaxed),
            requests_sent: counters.requests_sent.load(Relaxed),
            answers: counters.answers.load(Relaxed),
            connects: counters.connects.load(Relaxed),
            timed_out: counters.timed_out.load(Relaxed),
            abandoned: self.shared.queue.abandoned(),
        }
    }

    /// Allocates a game server: waits for readiness, then calls.
    ///
    /// The future holds a clone of this handle, not a borrow, so it can be spawned.
    ///
    /// # Errors
    ///
    /// See [`Error`].
    pub fn allocate(
        &self,
        request: AllocationRequest,
    ) -> impl Future<Output = Result<AllocationResponse, Error>> + Send + 'static {
        // A plain function rather than an `async fn`: the future is tower's `Oneshot` itself,
        // half the size of an `async fn` wrapping it, which callers move into their tasks.
        self.clone().allocate_owned(request)
    }

    /// Like [`allocate`](Self::allocate), consuming this handle, for futures that must be
    /// `'static` (such as spawned tasks).
    ///
    /// # Errors
    ///
    /// See [`Error`].
    pub fn allocate_owned(
        self,
        request: AllocationRequest,
    ) -> impl Future<Output = Result<AllocationResponse, Error>> + Send + 'static {
        tower::ServiceExt::oneshot(self, request)
    }
}

impl Service<AllocationRequest> for ProcessorClient {
    type Response = AllocationResponse;
    type Error = Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let timeout = self.allocation_timeout;
        self.inner
            .poll_ready(cx)
            .map_err(|error| from_box(error, timeout))
    }

    fn call(&mut self, request: AllocationRequest) -> ResponseFuture {
        // The buffer carries the caller's span to its worker, where the batching service
        // records the request id on it.
        let span = tracing::trace_span!("allocate", request_id = tracing::field::Empty);
        let inner = span.in_scope(|| self.inner.call(request));
        ResponseFuture {
            inner,
            span,
            allocation_timeout: self.allocation_timeout,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The future of one [`ProcessorClient`] call.
#[pin_project::pin_project]
pub struct ResponseFuture {
    #[pin]
    inner: <Inner as Service<AllocationRequest>>::Future,
    /// The call's span, `allocate` with its request id.
    span: tracing::Span,
    allocation_timeout: Duration,
    /// Keeps the driver running while the call waits, whatever became of the client handles.
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<AllocationResponse, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let result = ready!(this.inner.poll(cx)).map_err(|error| {
            let error = from_box(error, *this.allocation_timeout);
            if let Error::Timeout(_) = error {
                this.shared.counters.timed_out.fetch_add(1, Relaxed);
            }
            error
        });
        Poll::Ready(result)
    }
}

/// Recovers the client's error from what `Timeout` and `Buffer` return.
fn from_box(error: BoxError, allocation_timeout: Duration) -> Error {
    match error.downcast::<Error>() {
        Ok(error) => *error,
        Err(error) if error.is::<tower::timeout::error::Elapsed>() => {
            Error::Timeout(allocation_timeout)
        }
        Err(error) if error.is::<tower::load_shed::error::Overloaded>() => Error::Overloaded,
        // The buffer's worker is gone: the batching service closed.
        Err(_) => Error::Closed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client whose driver never runs: nothing is ever pulled.
    fn unpulled(timeout: Duration) -> (ProcessorClient, super::super::Driver) {
        ProcessorClient::builder("http://127.0.0.1:9")
            .allocation_timeout(timeout)
            .max_batch_size(4)
            .build()
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn unanswered_call_times_out_at_the_allocation_timeout() {
        let timeout = Duration::from_secs(30);
        let (client, _driver) = unpulled(timeout);
        let started = tokio::time::Instant::now();

        let error = client
            .allocate(AllocationRequest::default())
            .await
            .unwrap_err();
        assert!(
            matches!(error, Error::Timeout(t) if t == timeout),
            "{error:?}"
        );
        assert_eq!(started.elapsed(), timeout);
        let stats = client.stats();
        assert_eq!((stats.timed_out, stats.abandoned, stats.queued), (1, 1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn timed_out_calls_free_the_queue_for_later_calls() {
        let (client, _driver) = unpulled(Duration::from_secs(1));
        let calls: Vec<_> = (0..20)
            .map(|_| tokio::spawn(client.clone().allocate_owned(AllocationRequest::default())))
            .collect();
        for call in calls {
            assert!(matches!(call.await.unwrap(), Err(Error::Timeout(_))));
        }
        assert_eq!(client.stats().timed_out, 20);
        assert_eq!(client.stats().queued, 0);
    }

    #[tokio::test]
    async fn addresses_without_a_scheme_or_not_uris_are_refused() {
        use std::error::Error as _;

        let error = ProcessorClient::builder("127.0.0.1:9090")
            .build()
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"the processor address "127.0.0.1:9090" must start with http:// or https://"#
        );
        let error = ProcessorClient::builder("not a uri").build().unwrap_err();
        assert_eq!(
            error.to_string(),
            "the processor address is not a valid URI"
        );
        assert!(
            error.source().is_some(),
            "the parser's reason is the source"
        );
    }

    #[tokio::test]
    async fn detached_client_is_answered_by_hand() {
        use crate::proto::{BatchResponse, ResponseWrapper, response_wrapper};

        let (client, mut detached) = ProcessorClient::builder("http://127.0.0.1:9")
            .max_batch_size(2)
            .build_detached()
            .unwrap();
        // `allocate` borrows the handle only to clone it: its future can be spawned.
        let calls: Vec<_> = (0..3)
            .map(|_| tokio::spawn(client.allocate(AllocationRequest::default())))
            .collect();
        while client.stats().queued < 2 {
            tokio::task::yield_now().await;
        }

        let mut answered = 0;
        while answered < 3 {
            let Some(batch) = detached.pull() else {
                tokio::task::yield_now().await;
                continue;
            };
            assert!(
                batch.requests.len() <= 2,
                "a pull takes at most the batch size"
            );
            let responses: Vec<_> = batch
                .requests
                .into_iter()
                .map(|wrapper| ResponseWrapper {
                    result: Some(response_wrapper::Result::Response(AllocationResponse {
                        game_server_name: format!("gs-{}", wrapper.request_id),
                        ..Default::default()
                    })),
                    request_id: wrapper.request_id,
                })
                .collect();
            answered += responses.len();
            detached.answer(BatchResponse {
                batch_id: batch.batch_id,
                responses,
            });
        }

        let mut names = Vec::new();
        for call in calls {
            names.push(call.await.unwrap().unwrap().game_server_name);
        }
        names.sort();
        assert_eq!(names, ["gs-0", "gs-1", "gs-2"]);
        let stats = client.stats();
        assert_eq!(
            (stats.batches_sent, stats.requests_sent, stats.answers),
            (2, 3, 3)
        );
        assert_eq!((stats.queued, stats.in_flight), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn pending_calls_keep_the_driver_until_they_end() {
        let (client, driver) = unpulled(Duration::from_secs(30));
        let driver = tokio::spawn(driver);
        let pending = tokio::spawn(client.clone().allocate_owned(AllocationRequest::default()));
        while client.stats().queued == 0 {
            tokio::task::yield_now().await;
        }

        drop(client);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!driver.is_finished(), "a pending call keeps its driver");

        pending.abort();
        let stopped = tokio::time::timeout(Duration::from_secs(60), driver).await;
        stopped
            .expect("the driver stops with the last call")
            .unwrap();
    }
}
