//! Batch allocators: services that see a whole batch at once.
//!
//! A batch allocator is a `tower::Service<Vec<AllocationRequest>, Response =
//! Vec<BatchOutcome>>` that returns one outcome per request, in request order. It can pack the
//! batch as a whole, e.g. sort it before choosing game servers. An error of the service itself
//! answers every request of the batch with that error.
//!
//! [`ConcurrentBatch`] runs a per-request allocator as a batch allocator.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::stream::{FuturesUnordered, StreamExt};
use tower::{BoxError, Layer, Service, ServiceExt};

use crate::proto::{AllocationRequest, AllocationResponse};

/// The outcome of one request of a batch: its response or why it failed.
///
/// Errors become `google.rpc.Status` answers by
/// [`rpc_status_from_error`](crate::status::rpc_status_from_error), which keeps a
/// [`tonic::Status`]'s code and message and maps
/// [`AllocationError::Unallocated`](super::AllocationError::Unallocated) to the processor's
/// unallocated code.
pub type BatchOutcome = Result<AllocationResponse, BoxError>;

/// The future of a [`ConcurrentBatch`] call.
pub type BatchFuture =
    Pin<Box<dyn Future<Output = Result<Vec<BatchOutcome>, Infallible>> + Send + 'static>>;

/// Runs a per-request allocator as a batch allocator, up to `limit` requests at once.
///
/// Requests are handed to the allocator one after the other in batch order, each once the
/// allocator is ready, so an allocator that decides in `call` decides in arrival order. At most
/// `limit` calls of one batch are outstanding; the next call waits until one of them finished.
/// Each outcome lands in its request's slot whatever order the calls finish in.
///
/// `poll_ready` reserves nothing and is always ready: readiness of the inner allocator is
/// awaited per request inside the batch, on a clone of it, so layers such as
/// `ConcurrencyLimit` or `RateLimit` wrapped around the inner allocator apply per request.
/// Once the inner allocator fails to get ready it is not asked again: that request and the rest
/// of the batch fail with its error.
///
/// ```
/// use agones_processor::allocator::{BatchOutcome, ConcurrentBatch};
/// use agones_processor::proto::{AllocationRequest, AllocationResponse};
/// use tower::ServiceExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let allocator = tower::service_fn(|request: AllocationRequest| async move {
///     Ok::<_, tower::BoxError>(AllocationResponse {
///         game_server_name: format!("gs-{}", request.namespace),
///         ..Default::default()
///     })
/// });
/// let requests = vec![AllocationRequest::default(); 3];
/// let outcomes: Vec<BatchOutcome> =
///     ConcurrentBatch::new(allocator, 2).oneshot(requests).await.unwrap();
/// assert_eq!(outcomes.len(), 3);
/// # }
/// ```
#[derive(Clone)]
pub struct ConcurrentBatch<S> {
    inner: S,
    limit: usize,
}

impl<S> ConcurrentBatch<S> {
    /// Wraps `inner`, running at most `limit` of a batch's requests at once.
    ///
    /// # Panics
    ///
    /// Panics if `limit` is zero.
    pub fn new(inner: S, limit: usize) -> Self {
        assert!(limit > 0, "batch concurrency limit must not be zero");
        Self { inner, limit }
    }

    /// A layer that wraps allocators in a `ConcurrentBatch` with `limit`.
    ///
    /// # Panics
    ///
    /// Panics if `limit` is zero.
    pub fn layer(limit: usize) -> ConcurrentBatchLayer {
        assert!(limit > 0, "batch concurrency limit must not be zero");
        ConcurrentBatchLayer { limit }
    }
}

impl<S> fmt::Debug for ConcurrentBatch<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrentBatch")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

/// Makes [`ConcurrentBatch`] services; made by [`ConcurrentBatch::layer`].
#[derive(Debug, Clone, Copy)]
pub struct ConcurrentBatchLayer {
    limit: usize,
}

impl<S> Layer<S> for ConcurrentBatchLayer {
    type Service = ConcurrentBatch<S>;

    fn layer(&self, inner: S) -> ConcurrentBatch<S> {
        ConcurrentBatch::new(inner, self.limit)
    }
}

impl<S> Service<Vec<AllocationRequest>> for ConcurrentBatch<S>
where
    S: Service<AllocationRequest, Response = AllocationResponse> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = Vec<BatchOutcome>;
    type Error = Infallible;
    type Future = BatchFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, requests: Vec<AllocationRequest>) -> BatchFuture {
        let inner = self.inner.clone();
        let limit = self.limit;
        Box::pin(async move { Ok(run(inner, requests, limit).await) })
    }
}

async fn run<S>(mut inner: S, requests: Vec<AllocationRequest>, limit: usize) -> Vec<BatchOutcome>
where
    S: Service<AllocationRequest, Response = AllocationResponse>,
    S::Error: Into<BoxError>,
{
    let mut slots: Vec<Option<BatchOutcome>> = requests.iter().map(|_| None).collect();
    let mut running = FuturesUnordered::new();
    let mut broken: Option<Arc<BoxError>> = None;

    for (index, request) in requests.into_iter().enumerate() {
        if let Some(error) = &broken {
            slots[index] = Some(Err(NotReady(error.clone()).into()));
            continue;
        }

        // The calls already made are driven while waiting: an inner allocator may only get
        // ready again once one of them finished (a concurrency limit holds its permit until
        // then), and it must never wait on a future nobody polls.
        let ready = loop {
            if running.len() < limit {
                tokio::select! {
                    biased;
                    Some((done, outcome)) = running.next(), if !running.is_empty() => {
                        slots[done] = Some(outcome);
                    }
                    ready = inner.ready() => break ready.map_err(Into::into),
                }
            } else if let Some((done, outcome)) = running.next().await {
                slots[done] = Some(outcome);
            }
        };

        match ready {
            Ok(ready) => {
                let call = ready.call(request);
                running.push(async move { (index, call.await.map_err(Into::into)) });
            }
            Err(error) => {
                let error = Arc::new(error);
                slots[index] = Some(Err(NotReady(error.clone()).into()));
                broken = Some(error);
            }
        }
    }

    while let Some((done, outcome)) = running.next().await {
        slots[done] = Some(outcome);
    }
    slots
        .into_iter()
        .map(|slot| slot.expect("every request has been called or refused"))
        .collect()
}

/// The inner allocator failed to get ready; its error is the source.
#[derive(Debug)]
struct NotReady(Arc<BoxError>);

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "allocator not ready: {}", self.0)
    }
}

impl std::error::Error for NotReady {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&**self.0)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use tokio::sync::oneshot;
    use tonic::Code;
    use tower_test::mock;

    use super::*;
    use crate::allocator::AllocationError;
    use crate::status::rpc_status_from_error;

    fn request(namespace: &str) -> AllocationRequest {
        AllocationRequest {
            namespace: namespace.into(),
            ..Default::default()
        }
    }

    fn named(name: &str) -> AllocationResponse {
        AllocationResponse {
            game_server_name: name.into(),
            ..Default::default()
        }
    }

    fn name(outcome: &BatchOutcome) -> &str {
        &outcome.as_ref().expect("a response").game_server_name
    }

    #[tokio::test]
    async fn outcomes_keep_their_slots_when_calls_finish_out_of_order() {
        let (service, mut handle) = mock::pair::<AllocationRequest, AllocationResponse>();
        let batch = tokio::spawn(ConcurrentBatch::new(service, 3).oneshot(vec![
            request("a"),
            request("b"),
            request("c"),
        ]));

        let mut calls = Vec::new();
        for _ in 0..3 {
            calls.push(handle.next_request().await.expect("a call"));
        }
        // Answer in reverse order; the third fails.
        let (c, c_reply) = calls.pop().unwrap();
        assert_eq!(c.namespace, "c");
        c_reply.send_error(AllocationError::Unallocated);
        for (request, reply) in calls.into_iter().rev() {
            reply.send_response(named(&format!("gs-{}", request.namespace)));
        }

        let outcomes = batch.await.unwrap().unwrap();
        assert_eq!(name(&outcomes[0]), "gs-a");
        assert_eq!(name(&outcomes[1]), "gs-b");
        let error = outcomes[2].as_ref().unwrap_err();
        let status = rpc_status_from_error(&**error, Code::ResourceExhausted);
        assert_eq!(status.code, Code::ResourceExhausted as i32);
    }

    #[tokio::test]
    async fn no_more_than_limit_calls_at_once() {
        let (service, mut handle) = mock::pair::<AllocationRequest, AllocationResponse>();
        let requests = (0..5).map(|i| request(&i.to_string())).collect();
        let batch = tokio::spawn(ConcurrentBatch::new(service, 2).oneshot(requests));

        let (first, first_reply) = handle.next_request().await.unwrap();
        let (second, second_reply) = handle.next_request().await.unwrap();
        assert_eq!(
            (first.namespace.as_str(), second.namespace.as_str()),
            ("0", "1")
        );
        // Two calls outstanding: the third must wait for one of them.
        tokio::task::yield_now().await;
        assert!(
            tokio::time::timeout(Duration::from_millis(20), handle.next_request())
                .await
                .is_err(),
            "a third call started while two were outstanding"
        );

        second_reply.send_response(named("gs-1"));
        let (third, third_reply) = handle.next_request().await.unwrap();
        assert_eq!(third.namespace, "2");
        first_reply.send_response(named("gs-0"));
        third_reply.send_response(named("gs-2"));
        for expected in ["3", "4"] {
            let (next, reply) = handle.next_request().await.unwrap();
            assert_eq!(next.namespace, expected);
            reply.send_response(named(&format!("gs-{expected}")));
        }

        let outcomes = batch.await.unwrap().unwrap();
        let names: Vec<_> = outcomes.iter().map(name).collect();
        assert_eq!(names, ["gs-0", "gs-1", "gs-2", "gs-3", "gs-4"]);
    }

    #[tokio::test]
    async fn calls_are_made_in_batch_order() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorder = {
            let seen = seen.clone();
            tower::service_fn(move |request: AllocationRequest| {
                seen.lock().unwrap().push(request.namespace.clone());
                async move {
                    // Later calls finish first, so order can only come from the calls.
                    tokio::task::yield_now().await;
                    Ok::<_, AllocationError>(AllocationResponse::default())
                }
            })
        };
        let requests = (0..20).map(|i| request(&i.to_string())).collect();
        let outcomes = ConcurrentBatch::new(recorder, 4)
            .oneshot(requests)
            .await
            .unwrap();

        assert_eq!(outcomes.len(), 20);
        let expected: Vec<String> = (0..20).map(|i| i.to_string()).collect();
        assert_eq!(*seen.lock().unwrap(), expected);
    }

    #[tokio::test]
    async fn inner_concurrency_limit_does_not_deadlock() {
        let (release, released) = oneshot::channel::<()>();
        let released = Arc::new(tokio::sync::Mutex::new(Some(released)));
        let slow_first = tower::service_fn(move |request: AllocationRequest| {
            let released = released.clone();
            async move {
                if request.namespace == "0" {
                    let receiver = released.lock().await.take().unwrap();
                    receiver.await.unwrap();
                }
                Ok::<_, AllocationError>(named(&request.namespace))
            }
        });
        let limited = tower::ServiceBuilder::new()
            .concurrency_limit(1)
            .service(slow_first);
        let batch = tokio::spawn(
            ConcurrentBatch::new(limited, 8).oneshot(vec![request("0"), request("1")]),
        );
        tokio::task::yield_now().await;
        release.send(()).unwrap();

        let outcomes = batch.await.unwrap().unwrap();
        assert_eq!(name(&outcomes[1]), "1");
    }

    /// Ready once, then fails to get ready.
    #[derive(Clone)]
    struct Breaks {
        calls: Arc<Mutex<usize>>,
    }

    impl Service<AllocationRequest> for Breaks {
        type Response = AllocationResponse;
        type Error = tonic::Status;
        type Future = std::future::Ready<Result<AllocationResponse, tonic::Status>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), tonic::Status>> {
            if *self.calls.lock().unwrap() == 0 {
                Poll::Ready(Ok(()))
            } else {
                Poll::Ready(Err(tonic::Status::unavailable("allocator closed")))
            }
        }

        fn call(&mut self, _: AllocationRequest) -> Self::Future {
            *self.calls.lock().unwrap() += 1;
            std::future::ready(Ok(AllocationResponse::default()))
        }
    }

    #[tokio::test]
    async fn failing_readiness_fails_the_rest_with_its_error() {
        let breaks = Breaks {
            calls: Default::default(),
        };
        let outcomes = ConcurrentBatch::new(breaks.clone(), 4)
            .oneshot(vec![request("a"), request("b"), request("c")])
            .await
            .unwrap();

        assert!(outcomes[0].is_ok());
        for outcome in &outcomes[1..] {
            let error = outcome.as_ref().unwrap_err();
            let status = rpc_status_from_error(&**error, Code::ResourceExhausted);
            assert_eq!(status.code, Code::Unavailable as i32);
            assert_eq!(status.message, "allocator closed");
        }
        assert_eq!(*breaks.calls.lock().unwrap(), 1);
    }
}
