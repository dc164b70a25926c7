//! The batch pipeline: every request of a batch through the allocator, one answer per request.

use futures_util::future::join_all;
use tonic::Code;
use tower::{BoxError, Service, ServiceExt};
use tracing::Instrument;

use super::registry::Outbound;
use crate::proto::response_wrapper::Result as Answer;
use crate::proto::{
    AllocationRequest, AllocationResponse, BatchRequest, BatchResponse, ProcessorMessage,
    RequestWrapper, ResponseWrapper, processor_message::Payload,
};
use crate::status::rpc_status_from_error;

/// Answers `batch` in a task of its own and sends the answer on `outbound`.
///
/// The task runs in the caller's span, so its logs carry the stream's client id.
pub(crate) fn spawn<A>(
    allocator: A,
    client_id: String,
    batch: BatchRequest,
    unallocated: Code,
    outbound: Outbound,
) where
    A: Service<AllocationRequest, Response = AllocationResponse> + Send + 'static,
    A::Error: Into<BoxError>,
    A::Future: Send,
{
    let span = tracing::debug_span!("batch", batch_id = %batch.batch_id);
    let task = async move {
        let responses = allocate_all(allocator, batch.requests, unallocated).await;
        let failed = responses
            .iter()
            .filter(|response| matches!(response.result, Some(Answer::Error(_))))
            .count();
        tracing::debug!(responses = responses.len(), failed, "batch answered");

        let message = ProcessorMessage {
            client_id,
            payload: Some(Payload::BatchResponse(BatchResponse {
                batch_id: batch.batch_id,
                responses,
            })),
        };
        // Waiting here, rather than dropping the answer when the queue is full, is what makes
        // every answer reach a live stream; only this batch's task waits.
        if outbound.send(Ok(message)).await.is_err() {
            tracing::debug!("stream gone, batch response dropped");
        }
    };
    tokio::spawn(task.instrument(span));
}

/// Runs every request through `allocator` and returns their answers in request order.
///
/// Requests are handed to the allocator one after the other, each after the allocator said it
/// is ready, so an allocator that decides in `call` decides in arrival order. The responses are
/// then awaited together. Once the allocator fails to get ready it is not asked again: that
/// request and the rest of the batch are answered with its error.
pub(crate) async fn allocate_all<A>(
    mut allocator: A,
    requests: Vec<RequestWrapper>,
    unallocated: Code,
) -> Vec<ResponseWrapper>
where
    A: Service<AllocationRequest, Response = AllocationResponse>,
    A::Error: Into<BoxError>,
{
    let mut pending = Vec::with_capacity(requests.len());
    let mut broken: Option<tonic_types::Status> = None;
    for wrapper in requests {
        // A wrapper without a request means the default request, as protobuf decoding does for
        // any absent message.
        let request = wrapper.request.unwrap_or_default();
        let call = match &broken {
            Some(status) => Err(status.clone()),
            None => match allocator.ready().await {
                Ok(ready) => Ok(ready.call(request)),
                Err(error) => {
                    let status = rpc_status(error, unallocated);
                    tracing::debug!(code = status.code, %status.message, "allocator failed");
                    broken = Some(status.clone());
                    Err(status)
                }
            },
        };
        pending.push(answer(wrapper.request_id, call, unallocated));
    }
    join_all(pending).await
}

async fn answer<F, E>(
    request_id: String,
    call: Result<F, tonic_types::Status>,
    unallocated: Code,
) -> ResponseWrapper
where
    F: Future<Output = Result<AllocationResponse, E>>,
    E: Into<BoxError>,
{
    let outcome = match call {
        Ok(future) => future.await.map_err(|error| rpc_status(error, unallocated)),
        Err(status) => Err(status),
    };
    let result = match outcome {
        Ok(response) => {
            tracing::trace!(%request_id, game_server = %response.game_server_name, "allocated");
            Answer::Response(response)
        }
        Err(status) => {
            tracing::trace!(%request_id, code = status.code, %status.message, "not allocated");
            Answer::Error(status)
        }
    };
    ResponseWrapper {
        request_id,
        result: Some(result),
    }
}

fn rpc_status(error: impl Into<BoxError>, unallocated: Code) -> tonic_types::Status {
    let error = error.into();
    rpc_status_from_error(&*error, unallocated)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};

    use super::*;
    use crate::allocator::AllocationError;
    use crate::proto::AllocationRequest;

    fn wrapper(request_id: &str, namespace: &str) -> RequestWrapper {
        RequestWrapper {
            request_id: request_id.into(),
            request: Some(AllocationRequest {
                namespace: namespace.into(),
                ..Default::default()
            }),
        }
    }

    /// Allocates a game server named after the request's namespace; fails for "none".
    fn echo() -> impl Service<
        AllocationRequest,
        Response = AllocationResponse,
        Error = AllocationError,
        Future: Send,
    > + Clone {
        tower::service_fn(|request: AllocationRequest| async move {
            if request.namespace == "none" {
                return Err(AllocationError::Unallocated);
            }
            Ok(AllocationResponse {
                game_server_name: format!("gs-{}", request.namespace),
                ..Default::default()
            })
        })
    }

    fn game_server(response: &ResponseWrapper) -> Option<&str> {
        match &response.result {
            Some(Answer::Response(response)) => Some(&response.game_server_name),
            _ => None,
        }
    }

    fn error(response: &ResponseWrapper) -> Option<&tonic_types::Status> {
        match &response.result {
            Some(Answer::Error(status)) => Some(status),
            _ => None,
        }
    }

    #[tokio::test]
    async fn answers_keep_request_order_and_ids() {
        let requests = vec![
            wrapper("r1", "a"),
            wrapper("r2", "none"),
            wrapper("r3", "c"),
        ];
        let responses = allocate_all(echo(), requests, Code::ResourceExhausted).await;

        let ids: Vec<_> = responses.iter().map(|r| r.request_id.as_str()).collect();
        assert_eq!(ids, ["r1", "r2", "r3"]);
        assert_eq!(game_server(&responses[0]), Some("gs-a"));
        assert_eq!(game_server(&responses[2]), Some("gs-c"));
        let status = error(&responses[1]).expect("an error");
        assert_eq!(status.code, Code::ResourceExhausted as i32);
        assert_eq!(status.message, "no game server matched");
    }

    #[tokio::test]
    async fn missing_request_is_the_default_request() {
        let requests = vec![RequestWrapper {
            request_id: "r1".into(),
            request: None,
        }];
        let responses = allocate_all(echo(), requests, Code::ResourceExhausted).await;
        assert_eq!(game_server(&responses[0]), Some("gs-"));
    }

    #[tokio::test]
    async fn calls_are_made_in_arrival_order() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorder = {
            let seen = seen.clone();
            tower::service_fn(move |request: AllocationRequest| {
                seen.lock().unwrap().push(request.namespace.clone());
                async move {
                    // Later requests finish first, so order can only come from the calls.
                    tokio::task::yield_now().await;
                    Ok::<_, AllocationError>(AllocationResponse::default())
                }
            })
        };
        let requests = (0..20).map(|i| wrapper(&format!("r{i}"), &i.to_string()));
        allocate_all(recorder, requests.collect(), Code::ResourceExhausted).await;

        let expected: Vec<String> = (0..20).map(|i| i.to_string()).collect();
        assert_eq!(*seen.lock().unwrap(), expected);
    }

    /// Ready once, then fails to get ready.
    struct Breaks {
        calls: usize,
    }

    impl Service<AllocationRequest> for Breaks {
        type Response = AllocationResponse;
        type Error = tonic::Status;
        type Future = std::future::Ready<Result<AllocationResponse, tonic::Status>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), tonic::Status>> {
            if self.calls == 0 {
                Poll::Ready(Ok(()))
            } else {
                Poll::Ready(Err(tonic::Status::unavailable("allocator closed")))
            }
        }

        fn call(&mut self, _: AllocationRequest) -> Self::Future {
            self.calls += 1;
            std::future::ready(Ok(AllocationResponse::default()))
        }
    }

    #[tokio::test]
    async fn failing_readiness_answers_the_rest_with_its_error() {
        let requests = vec![wrapper("r1", "a"), wrapper("r2", "b"), wrapper("r3", "c")];
        let responses = allocate_all(Breaks { calls: 0 }, requests, Code::ResourceExhausted).await;

        assert!(game_server(&responses[0]).is_some());
        for response in &responses[1..] {
            let status = error(response).expect("an error");
            assert_eq!(status.code, Code::Unavailable as i32);
            assert_eq!(status.message, "allocator closed");
        }
    }
}
