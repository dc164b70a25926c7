//! The batching service: queues each request until the processor pulls it.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use tokio::sync::oneshot;
use tower_service::Service;

use super::{
    Error,
    queue::{Answer, Queue},
};
use crate::proto::{AllocationRequest, AllocationResponse};

/// A service that queues allocation requests until the processor pulls them, and resolves each
/// call when the processor's answer for it arrives.
///
/// # Backpressure
///
/// The queue holds at most `max_batch_size` requests: what one pull can take. `poll_ready`
/// reserves one of those slots for the next `call` and is not ready while all of them are
/// taken; it wakes the caller when a pull drains the queue or a queued call is dropped. A
/// handle dropped with a reserved slot gives it back. Behind tower's `Buffer`, which drives
/// this service from one task, the buffer's own bound then holds further callers.
///
/// # Cancellation
///
/// Dropping a call's [`ResponseFuture`] before its request is pulled removes the request from
/// the queue, so it is never sent and no game server is allocated for it. Dropped after the
/// pull, its answer is discarded when it arrives.
///
/// # Panics
///
/// `call` panics if `poll_ready` did not return `Ready(Ok(()))` first.
#[derive(Debug)]
pub struct Batch {
    queue: Queue,
    reserved: bool,
}

impl Batch {
    pub(crate) fn new(queue: Queue) -> Self {
        Self {
            queue,
            reserved: false,
        }
    }
}

impl Clone for Batch {
    /// A new handle on the same queue; the reservation of `self` is not shared.
    fn clone(&self) -> Self {
        Self::new(self.queue.clone())
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        if self.reserved {
            self.queue.release();
        }
    }
}

impl Service<AllocationRequest> for Batch {
    type Response = AllocationResponse;
    type Error = Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.reserved {
            return Poll::Ready(Ok(()));
        }
        ready!(self.queue.poll_reserve(cx))?;
        self.reserved = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: AllocationRequest) -> ResponseFuture {
        assert!(self.reserved, "Batch::call without a successful poll_ready");
        self.reserved = false;
        match self.queue.push(request) {
            Ok((id, answer)) => {
                tracing::Span::current().record("request_id", id);
                tracing::trace!(request_id = id, "queued");
                ResponseFuture {
                    state: State::Waiting {
                        id,
                        answer,
                        queue: self.queue.clone(),
                    },
                }
            }
            Err(error) => ResponseFuture {
                state: State::Failed(Some(error)),
            },
        }
    }
}

/// The future of one [`Batch`] call: the processor's answer for the request.
#[derive(Debug)]
pub struct ResponseFuture {
    state: State,
}

#[derive(Debug)]
enum State {
    Waiting {
        id: u64,
        answer: oneshot::Receiver<Answer>,
        queue: Queue,
    },
    Failed(Option<Error>),
    Done,
}

impl Future for ResponseFuture {
    type Output = Answer;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer> {
        let answer = match &mut self.state {
            State::Waiting { answer, .. } => {
                // A dropped sender means the queue was torn down without answering.
                ready!(Pin::new(answer).poll(cx)).unwrap_or(Err(Error::Closed))
            }
            State::Failed(error) => Err(error.take().expect("polled after completion")),
            State::Done => panic!("polled after completion"),
        };
        self.state = State::Done;
        Poll::Ready(answer)
    }
}

impl Drop for ResponseFuture {
    fn drop(&mut self) {
        if let State::Waiting { id, queue, .. } = &self.state {
            tracing::trace!(request_id = id, "caller gave up");
            queue.abandon(*id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    fn ready(batch: &mut Batch) -> Poll<Result<(), Error>> {
        batch.poll_ready(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn reservation_is_released_when_a_handle_drops() {
        let queue = Queue::new(1);
        let mut first = Batch::new(queue.clone());
        let mut second = Batch::new(queue.clone());
        assert!(ready(&mut first).is_ready());
        assert!(ready(&mut second).is_pending(), "the only slot is reserved");
        drop(first);
        assert!(ready(&mut second).is_ready());
    }

    #[test]
    #[should_panic(expected = "without a successful poll_ready")]
    fn call_without_ready_panics() {
        let mut batch = Batch::new(Queue::new(1));
        drop(batch.call(AllocationRequest::default()));
    }

    #[tokio::test]
    async fn answer_resolves_the_call() {
        let queue = Queue::new(4);
        let mut batch = Batch::new(queue.clone());
        assert!(ready(&mut batch).is_ready());
        let call = batch.call(AllocationRequest::default());

        let sent = queue.take_batch(4);
        let response = AllocationResponse {
            game_server_name: "gs-1".into(),
            ..Default::default()
        };
        assert!(queue.answer(&sent[0].request_id, Ok(response)));
        assert_eq!(call.await.unwrap().game_server_name, "gs-1");
        assert_eq!(queue.in_flight(), 0);
    }

    #[tokio::test]
    async fn dropped_call_leaves_the_queue_and_frees_its_slot() {
        let queue = Queue::new(1);
        let mut batch = Batch::new(queue.clone());
        assert!(ready(&mut batch).is_ready());
        let call = batch.call(AllocationRequest::default());
        assert!(ready(&mut batch).is_pending());

        drop(call);
        assert_eq!(queue.queued(), 0);
        assert!(ready(&mut batch).is_ready());
        assert!(
            queue.take_batch(1).is_empty(),
            "nothing is sent for a dropped call"
        );
    }

    #[tokio::test]
    async fn closed_queue_fails_calls() {
        let queue = Queue::new(1);
        let mut batch = Batch::new(queue.clone());
        assert!(ready(&mut batch).is_ready());
        let call = batch.call(AllocationRequest::default());
        queue.close();
        assert!(matches!(call.await, Err(Error::Closed)));
        assert!(matches!(ready(&mut batch), Poll::Ready(Err(Error::Closed))));
    }
}
