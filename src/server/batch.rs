//! The batch pipeline: checks a batch, runs its accepted requests through the batch allocator
//! and answers every request exactly once, in one `BatchResponse`.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::watch;
use tonic::Code;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service, ServiceExt};
use tracing::Instrument;

use super::counters::Counters;
use super::lifecycle::InFlight;
use super::pull::offer_pull;
use super::registry::Outbound;
use crate::allocator::BatchOutcome;
use crate::proto::response_wrapper::Result as Answer;
use crate::proto::{
    AllocationRequest, BatchRequest, BatchResponse, ProcessorMessage, RequestWrapper,
    ResponseWrapper, processor_message::Payload,
};
use crate::status::{rpc_status, rpc_status_from_error};

/// The batch allocator the handler runs, whatever its concrete type.
pub(crate) type BoxBatch = BoxCloneSyncService<Vec<AllocationRequest>, Vec<BatchOutcome>, BoxError>;

/// What a batch is answered with, beyond the batch itself.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    /// The code of the answer given when no game server matched.
    pub(crate) unallocated: Code,
    /// Requests from this position on are answered `ResourceExhausted`.
    pub(crate) max_batch_size: usize,
    /// Batches of one stream allocated at once; further batches are refused whole.
    pub(crate) max_batches_per_client: usize,
}

/// What answering one batch needs besides the batch.
pub(crate) struct BatchTask {
    pub(crate) allocator: BoxBatch,
    pub(crate) client_id: String,
    pub(crate) rules: Rules,
    pub(crate) outbound: Outbound,
    pub(crate) counters: Arc<Counters>,
    /// Released once the answer was sent or found undeliverable; counted processor-wide for
    /// shutdown and per stream for the end of leadership.
    pub(crate) in_flight: (InFlight, InFlight),
    /// With adaptive pulling: whether the pull loop is pulling.
    pub(crate) repull: Option<watch::Receiver<bool>>,
}

/// Answers `batch` in a task of its own and sends the answer on the stream's outbound queue.
///
/// The task runs in the caller's span, so its logs carry the stream's client id. With adaptive
/// pulling, the client is pulled again right after its answer if the pull loop is pulling.
pub(crate) fn spawn(batch: BatchRequest, task: BatchTask) {
    let BatchTask {
        allocator,
        client_id,
        rules,
        outbound,
        counters,
        in_flight,
        repull,
    } = task;
    let span = tracing::debug_span!(
        "batch",
        batch_id = %batch.batch_id,
        size = batch.requests.len(),
    );
    let task = async move {
        let responses = answer_all(allocator, batch.requests, &rules).await;
        let failed = responses
            .iter()
            .filter(|response| matches!(response.result, Some(Answer::Error(_))))
            .count();
        for response in &responses {
            counters.answered(match &response.result {
                Some(Answer::Error(status)) => status.code,
                _ => Code::Ok as i32,
            });
        }
        tracing::debug!(
            answered = responses.len() - failed,
            failed,
            "batch answered"
        );

        let message = ProcessorMessage {
            client_id: client_id.clone(),
            payload: Some(Payload::BatchResponse(BatchResponse {
                batch_id: batch.batch_id,
                responses,
            })),
        };
        // Waiting here, rather than dropping the answer when the queue is full, is what makes
        // every answer reach a live stream; only this batch's task waits.
        if outbound.send(Ok(message)).await.is_err() {
            tracing::debug!("stream gone, batch response dropped");
        } else if repull.is_some_and(|pulling| *pulling.borrow()) {
            // Adaptive pulling: a client that just had a batch answered is likely to have more.
            offer_pull(&client_id, &outbound, &counters);
        }
        drop(in_flight);
    };
    tokio::spawn(task.instrument(span));
}

/// One answer per request of `requests`, in their order.
///
/// Requests beyond `max_batch_size`, with an empty id, with an id already seen in the batch or
/// without a request are answered without reaching the allocator; the rest go to it as one
/// batch.
pub(crate) async fn answer_all(
    allocator: BoxBatch,
    requests: Vec<RequestWrapper>,
    rules: &Rules,
) -> Vec<ResponseWrapper> {
    let mut answers: Vec<Option<Answer>> = Vec::with_capacity(requests.len());
    let mut ids = Vec::with_capacity(requests.len());
    let mut accepted = Vec::with_capacity(requests.len().min(rules.max_batch_size));
    let repeated = repeated_ids(&requests, rules.max_batch_size);
    for (position, wrapper) in requests.into_iter().enumerate() {
        let checked = if position >= rules.max_batch_size {
            Err(rpc_status(
                Code::ResourceExhausted,
                format!("batch holds more than {} requests", rules.max_batch_size),
            ))
        } else if wrapper.request_id.is_empty() {
            Err(rpc_status(Code::InvalidArgument, "request id is required"))
        } else if repeated[position] {
            Err(rpc_status(
                Code::InvalidArgument,
                "duplicate request id in batch",
            ))
        } else {
            // An absent request is not an empty one: an empty request is present with zero
            // bytes and allocates from the default namespace. Absence means a sender that lost
            // the request, and nothing must be allocated for it.
            wrapper
                .request
                .ok_or_else(|| rpc_status(Code::InvalidArgument, "request is required"))
        };
        match checked {
            Ok(request) => {
                accepted.push((position, request));
                answers.push(None);
            }
            Err(status) => {
                tracing::debug!(request_id = %wrapper.request_id, %status.message, "request refused");
                answers.push(Some(Answer::Error(status)));
            }
        }
        ids.push(wrapper.request_id);
    }

    let (positions, batch): (Vec<usize>, Vec<AllocationRequest>) = accepted.into_iter().unzip();
    if !batch.is_empty() {
        let outcomes = allocator.oneshot(batch).await;
        fill(&mut answers, &positions, outcomes, rules.unallocated);
    }

    ids.into_iter()
        .zip(answers)
        .map(|(request_id, answer)| {
            let result = answer.expect("every request has an answer");
            match &result {
                Answer::Response(response) => tracing::trace!(
                    %request_id,
                    game_server = %response.game_server_name,
                    "allocated"
                ),
                Answer::Error(status) => tracing::trace!(
                    %request_id,
                    code = status.code,
                    %status.message,
                    "not allocated"
                ),
            }
            ResponseWrapper {
                request_id,
                result: Some(result),
            }
        })
        .collect()
}

/// For each request, whether its id already appeared earlier among the first `limit` requests
/// of the batch. Empty ids and requests from `limit` on are never repeats: they are refused for
/// their own reasons. The ids are borrowed, not copied.
fn repeated_ids(requests: &[RequestWrapper], limit: usize) -> Vec<bool> {
    let mut seen = HashSet::with_capacity(requests.len().min(limit));
    requests
        .iter()
        .enumerate()
        .map(|(position, wrapper)| {
            position < limit
                && !wrapper.request_id.is_empty()
                && !seen.insert(wrapper.request_id.as_str())
        })
        .collect()
}

/// Puts the allocator's outcomes into the answers at `positions`.
///
/// An allocator that failed as a whole answers every request with its error; one that returned
/// too few outcomes leaves the rest answered `Internal`, and extra outcomes are dropped.
fn fill(
    answers: &mut [Option<Answer>],
    positions: &[usize],
    outcomes: Result<Vec<BatchOutcome>, BoxError>,
    unallocated: Code,
) {
    let outcomes = match outcomes {
        Ok(outcomes) => outcomes,
        Err(error) => {
            let status = rpc_status_from_error(&*error, unallocated);
            tracing::debug!(code = status.code, %status.message, "batch allocator failed");
            for &position in positions {
                answers[position] = Some(Answer::Error(status.clone()));
            }
            return;
        }
    };
    if outcomes.len() != positions.len() {
        tracing::warn!(
            expected = positions.len(),
            returned = outcomes.len(),
            "batch allocator returned a wrong number of outcomes"
        );
    }
    let mut outcomes = outcomes.into_iter();
    for &position in positions {
        answers[position] = Some(match outcomes.next() {
            Some(Ok(response)) => Answer::Response(response),
            Some(Err(error)) => Answer::Error(rpc_status_from_error(&*error, unallocated)),
            None => Answer::Error(rpc_status(
                Code::Internal,
                "allocator returned no outcome for the request",
            )),
        });
    }
}

/// Boxes a batch allocator with its error made a [`BoxError`].
pub(crate) fn boxed<B>(allocator: B) -> BoxBatch
where
    B: Service<Vec<AllocationRequest>, Response = Vec<BatchOutcome>>
        + Clone
        + Send
        + Sync
        + 'static,
    B::Error: Into<BoxError>,
    B::Future: Send + 'static,
{
    BoxCloneSyncService::new(allocator.map_err(Into::into))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::allocator::{AllocationError, ConcurrentBatch};
    use crate::proto::AllocationResponse;

    fn wrapper(request_id: &str, namespace: &str) -> RequestWrapper {
        RequestWrapper {
            request_id: request_id.into(),
            request: Some(AllocationRequest {
                namespace: namespace.into(),
                ..Default::default()
            }),
        }
    }

    fn rules(max_batch_size: usize) -> Rules {
        Rules {
            max_batches_per_client: 16,
            unallocated: Code::ResourceExhausted,
            max_batch_size,
        }
    }

    /// Allocates a game server named after the request's namespace; fails for "none".
    fn echo() -> BoxBatch {
        let allocator = tower::service_fn(|request: AllocationRequest| async move {
            if request.namespace == "none" {
                return Err(AllocationError::Unallocated);
            }
            Ok(AllocationResponse {
                game_server_name: format!("gs-{}", request.namespace),
                ..Default::default()
            })
        });
        boxed(ConcurrentBatch::new(allocator, 16))
    }

    fn game_server(response: &ResponseWrapper) -> Option<&str> {
        match &response.result {
            Some(Answer::Response(response)) => Some(&response.game_server_name),
            _ => None,
        }
    }

    fn code(response: &ResponseWrapper) -> Option<Code> {
        match &response.result {
            Some(Answer::Error(status)) => Some(Code::from_i32(status.code)),
            _ => None,
        }
    }

    fn ids(responses: &[ResponseWrapper]) -> Vec<&str> {
        responses.iter().map(|r| r.request_id.as_str()).collect()
    }

    #[tokio::test]
    async fn answers_keep_request_order_and_ids() {
        let requests = vec![
            wrapper("r1", "a"),
            wrapper("r2", "none"),
            wrapper("r3", "c"),
        ];
        let responses = answer_all(echo(), requests, &rules(100)).await;

        assert_eq!(ids(&responses), ["r1", "r2", "r3"]);
        assert_eq!(game_server(&responses[0]), Some("gs-a"));
        assert_eq!(code(&responses[1]), Some(Code::ResourceExhausted));
        assert_eq!(game_server(&responses[2]), Some("gs-c"));
    }

    #[tokio::test]
    async fn missing_request_is_invalid_argument_and_an_empty_one_is_allocated() {
        let requests = vec![
            RequestWrapper {
                request_id: "r1".into(),
                request: None,
            },
            RequestWrapper {
                request_id: "r2".into(),
                request: Some(AllocationRequest::default()),
            },
        ];
        let responses = answer_all(echo(), requests, &rules(100)).await;
        assert_eq!(code(&responses[0]), Some(Code::InvalidArgument));
        assert_eq!(game_server(&responses[1]), Some("gs-"));
    }

    #[test]
    fn repeats_are_later_copies_of_an_id_within_the_limit() {
        let requests: Vec<_> = ["a", "", "b", "a", "", "b", "a"]
            .into_iter()
            .map(|id| wrapper(id, "ns"))
            .collect();
        assert_eq!(
            repeated_ids(&requests, 6),
            [false, false, false, true, false, true, false],
            "the first of each id, empty ids and requests beyond the limit are not repeats"
        );
    }

    #[tokio::test]
    async fn duplicate_id_of_five_is_invalid_argument_and_all_five_answered() {
        let requests = vec![
            wrapper("r1", "a"),
            wrapper("r2", "b"),
            wrapper("r1", "c"),
            wrapper("r3", "d"),
            wrapper("r4", "e"),
        ];
        let responses = answer_all(echo(), requests, &rules(100)).await;

        assert_eq!(ids(&responses), ["r1", "r2", "r1", "r3", "r4"]);
        assert_eq!(game_server(&responses[0]), Some("gs-a"));
        assert_eq!(code(&responses[2]), Some(Code::InvalidArgument));
        for i in [1, 3, 4] {
            assert!(game_server(&responses[i]).is_some(), "answer {i}");
        }
    }

    #[tokio::test]
    async fn empty_id_is_invalid_argument() {
        let requests = vec![wrapper("", "a"), wrapper("r2", "b")];
        let responses = answer_all(echo(), requests, &rules(100)).await;
        assert_eq!(code(&responses[0]), Some(Code::InvalidArgument));
        assert_eq!(game_server(&responses[1]), Some("gs-b"));
    }

    #[tokio::test]
    async fn requests_beyond_the_limit_are_resource_exhausted() {
        let requests = (0..5).map(|i| wrapper(&format!("r{i}"), "a")).collect();
        let responses = answer_all(echo(), requests, &rules(3)).await;

        assert_eq!(responses.len(), 5);
        for response in &responses[..3] {
            assert_eq!(game_server(response), Some("gs-a"));
        }
        for response in &responses[3..] {
            assert_eq!(code(response), Some(Code::ResourceExhausted));
        }
    }

    #[tokio::test]
    async fn failed_batch_allocator_answers_every_request() {
        let failing = tower::service_fn(|_: Vec<AllocationRequest>| async {
            Err::<Vec<BatchOutcome>, _>(tonic::Status::unavailable("fleet unreachable"))
        });
        let requests = vec![wrapper("r1", "a"), wrapper("", "b"), wrapper("r3", "c")];
        let responses = answer_all(boxed(failing), requests, &rules(100)).await;

        assert_eq!(code(&responses[0]), Some(Code::Unavailable));
        assert_eq!(code(&responses[1]), Some(Code::InvalidArgument));
        assert_eq!(code(&responses[2]), Some(Code::Unavailable));
    }

    #[tokio::test]
    async fn short_outcome_list_leaves_internal_answers() {
        let short = tower::service_fn(|requests: Vec<AllocationRequest>| async move {
            let outcomes = requests
                .into_iter()
                .skip(1)
                .map(|_| Ok(AllocationResponse::default()))
                .collect::<Vec<BatchOutcome>>();
            Ok::<_, BoxError>(outcomes)
        });
        let requests = vec![wrapper("r1", "a"), wrapper("r2", "b")];
        let responses = answer_all(boxed(short), requests, &rules(100)).await;
        assert!(game_server(&responses[0]).is_some());
        assert_eq!(code(&responses[1]), Some(Code::Internal));
    }

    #[tokio::test(start_paused = true)]
    async fn per_request_timeout_answers_deadline_exceeded_and_the_rest() {
        let allocator = tower::ServiceBuilder::new()
            .timeout(Duration::from_secs(1))
            .service_fn(|request: AllocationRequest| async move {
                if request.namespace == "hang" {
                    std::future::pending::<()>().await;
                }
                Ok::<_, BoxError>(AllocationResponse::default())
            });
        let requests = vec![
            wrapper("r1", "a"),
            wrapper("r2", "hang"),
            wrapper("r3", "c"),
        ];
        let responses = answer_all(
            boxed(ConcurrentBatch::new(allocator, 8)),
            requests,
            &rules(100),
        )
        .await;

        assert!(game_server(&responses[0]).is_some());
        assert_eq!(code(&responses[1]), Some(Code::DeadlineExceeded));
        assert!(game_server(&responses[2]).is_some());
    }

    type MockAllocator = tower_test::mock::Mock<AllocationRequest, AllocationResponse>;
    type MockHandle = tower_test::mock::Handle<AllocationRequest, AllocationResponse>;

    #[tokio::test(start_paused = true)]
    async fn hanging_mock_call_under_a_timeout_is_deadline_exceeded() {
        let (mock, mut handle): (MockAllocator, MockHandle) = tower_test::mock::pair();
        let allocator = tower::ServiceBuilder::new()
            .timeout(Duration::from_secs(1))
            .service(mock);
        let requests = vec![
            wrapper("r1", "a"),
            wrapper("r2", "hang"),
            wrapper("r3", "c"),
        ];
        let batch = tokio::spawn(async move {
            answer_all(
                boxed(ConcurrentBatch::new(allocator, 8)),
                requests,
                &rules(100),
            )
            .await
        });

        let mut hanging = None;
        for _ in 0..3 {
            let (request, reply) = handle.next_request().await.unwrap();
            if request.namespace == "hang" {
                // Kept, never answered.
                hanging = Some(reply);
            } else {
                reply.send_response(AllocationResponse::default());
            }
        }
        let responses = batch.await.unwrap();
        assert!(hanging.is_some());
        assert_eq!(code(&responses[0]), None);
        assert_eq!(code(&responses[1]), Some(Code::DeadlineExceeded));
        assert_eq!(code(&responses[2]), None);
    }

    #[tokio::test]
    async fn duplicate_never_reaches_the_mock_allocator() {
        let (mock, mut handle): (MockAllocator, MockHandle) = tower_test::mock::pair();
        let ids = ["r1", "r2", "r3", "r2", "r4"];
        let requests = ids.iter().map(|id| wrapper(id, id)).collect();
        let batch = tokio::spawn(async move {
            answer_all(boxed(ConcurrentBatch::new(mock, 8)), requests, &rules(100)).await
        });

        let mut seen = Vec::new();
        for _ in 0..4 {
            let (request, reply) = handle.next_request().await.unwrap();
            seen.push(request.namespace.clone());
            reply.send_response(AllocationResponse::default());
        }
        let responses = batch.await.unwrap();
        assert_eq!(seen, ["r1", "r2", "r3", "r4"]);
        assert_eq!(responses.len(), 5);
        assert_eq!(code(&responses[3]), Some(Code::InvalidArgument));
        assert!(
            handle.next_request().await.is_none(),
            "a fifth request reached it"
        );
    }
}
