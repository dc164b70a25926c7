//! The state shared by the batching service and the stream driver.
//!
//! Requests wait in `queued` until a pull takes them; a pull moves them to `in_flight`, keyed
//! by request id, until their answer arrives. Callers hold the receiving half of a oneshot
//! channel; the queue holds the sending half, so whoever ends a call (answer, stream break,
//! shutdown) does it by sending once, and a call whose caller went away is recognised by its
//! closed channel.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll, Waker},
};

use prost::encoding::{encoded_len_varint, message, string};
use tokio::sync::oneshot;

use super::Error;
use crate::proto::{AllocationRequest, AllocationResponse, RequestWrapper};

pub(crate) type Answer = Result<AllocationResponse, Error>;

/// The longest batch id the driver sends: a `u64` in decimal.
const MAX_BATCH_ID_LEN: usize = 20;

/// The most bytes one batch message may take, encoded, and how many of them are not requests.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MessageLimit {
    limit: usize,
    /// A bound on everything but the requests: the client id, the batch id and the field
    /// headers.
    overhead: usize,
}

impl MessageLimit {
    /// The limit of batch messages of `client_id` to a processor that accepts messages of up
    /// to `limit` bytes.
    pub(crate) fn new(client_id: &str, limit: usize) -> Self {
        let batch_id = "0".repeat(MAX_BATCH_ID_LEN);
        // ProcessorMessage: client_id (1), batch_request (3) whose length is at most `limit`;
        // BatchRequest: batch_id (1), then the requests.
        let overhead = string::encoded_len(1, &client_id.to_owned())
            + 1
            + encoded_len_varint(limit as u64)
            + string::encoded_len(1, &batch_id);
        Self { limit, overhead }
    }

    /// No limit.
    #[cfg(test)]
    pub(crate) fn none() -> Self {
        Self {
            limit: usize::MAX,
            overhead: 0,
        }
    }
}

/// What one request adds to a batch message: its `requests` entry, encoded.
fn entry_len(wrapper_len: usize) -> usize {
    1 + encoded_len_varint(wrapper_len as u64) + wrapper_len
}

/// The request id written as `request_id`, only if the client writes it so: `01` and `+1`
/// are not the id `1`, since ids are matched as the strings sent.
fn parse_id(request_id: &str) -> Option<u64> {
    let canonical = request_id.bytes().all(|b| b.is_ascii_digit())
        && (request_id == "0" || !request_id.starts_with('0'));
    if canonical {
        request_id.parse().ok()
    } else {
        None
    }
}

/// The length of `id` written in decimal, as it is sent.
fn id_len(id: u64) -> usize {
    id.checked_ilog10().map_or(1, |log| log as usize + 1)
}

/// A request waiting for a pull.
#[derive(Debug)]
struct Queued {
    id: u64,
    request: AllocationRequest,
    answer: oneshot::Sender<Answer>,
    /// Its entry in a batch message, in bytes.
    entry_len: usize,
}

#[derive(Debug, Default)]
struct State {
    queued: VecDeque<Queued>,
    in_flight: HashMap<u64, oneshot::Sender<Answer>>,
    /// Slots promised by `poll_ready` and not yet used by `call`.
    reserved: usize,
    /// Tasks waiting in `poll_ready` for a free slot.
    waiting: Vec<Waker>,
    next_id: u64,
    /// Calls whose caller stopped waiting before the answer.
    abandoned: u64,
    closed: bool,
    /// Why the processor refused the last connection attempt, until one is accepted.
    refused: Option<tonic::Status>,
}

impl State {
    fn wake_waiting(&mut self) {
        for waker in self.waiting.drain(..) {
            waker.wake();
        }
    }
}

/// Handle on the shared request queue; clones share one queue.
#[derive(Debug, Clone)]
pub(crate) struct Queue {
    state: Arc<Mutex<State>>,
    capacity: usize,
    limit: MessageLimit,
}

impl Queue {
    /// A queue holding at most `capacity` requests that wait for a pull, with no limit on the
    /// size of a batch.
    #[cfg(test)]
    pub(crate) fn new(capacity: usize) -> Self {
        Self::with_limit(capacity, MessageLimit::none())
    }

    /// A queue holding at most `capacity` requests that wait for a pull, whose batches encode
    /// within `limit`: a request that cannot fit in a batch on its own is refused.
    pub(crate) fn with_limit(capacity: usize, limit: MessageLimit) -> Self {
        assert!(capacity > 0, "the queue capacity must be at least 1");
        Self {
            state: Arc::default(),
            capacity,
            limit,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state consistent: every method makes its
        // change in one step, so a poisoned lock is still safe to use.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reserves a slot for one request, or registers the task to be woken when one frees up.
    pub(crate) fn poll_reserve(&self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let mut state = self.lock();
        if state.closed {
            return Poll::Ready(Err(Error::Closed));
        }
        if state.queued.len() + state.reserved < self.capacity {
            state.reserved += 1;
            return Poll::Ready(Ok(()));
        }
        if !state.waiting.iter().any(|w| w.will_wake(cx.waker())) {
            state.waiting.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Gives back a slot reserved by [`Queue::poll_reserve`] and never used.
    pub(crate) fn release(&self) {
        let mut state = self.lock();
        state.reserved -= 1;
        state.wake_waiting();
    }

    /// Queues a request in a reserved slot; returns its id and where its answer will arrive.
    ///
    /// A request too large to fit in a batch message on its own is refused with
    /// [`Error::TooLarge`].
    pub(crate) fn push(
        &self,
        request: AllocationRequest,
    ) -> Result<(u64, oneshot::Receiver<Answer>), Error> {
        // Measured before taking the lock, which the driver needs for every pull and answer.
        let request_len = message::encoded_len(2, &request);
        let mut state = self.lock();
        state.reserved -= 1;
        if state.closed {
            return Err(Error::Closed);
        }
        if let Some(status) = &state.refused {
            return Err(Error::Refused(status.clone()));
        }
        let id = state.next_id;
        // Measured with the id it will be sent with, as in `RequestWrapper`.
        let wrapper_len = 1 + encoded_len_varint(id_len(id) as u64) + id_len(id) + request_len;
        let entry_len = entry_len(wrapper_len);
        let size = self.limit.overhead.saturating_add(entry_len);
        if size > self.limit.limit {
            state.wake_waiting();
            return Err(Error::TooLarge {
                size,
                limit: self.limit.limit,
            });
        }
        state.next_id += 1;
        let (answer, receiver) = oneshot::channel();
        state.queued.push_back(Queued {
            id,
            request,
            answer,
            entry_len,
        });
        Ok((id, receiver))
    }

    /// Forgets a request whose caller stopped waiting, so it is never sent, or, if it was,
    /// so its answer is dropped.
    pub(crate) fn abandon(&self, id: u64) {
        let mut state = self.lock();
        state.abandoned += 1;
        if let Some(position) = state.queued.iter().position(|queued| queued.id == id) {
            state.queued.remove(position);
            state.wake_waiting();
        } else {
            state.in_flight.remove(&id);
        }
    }

    /// Takes up to `max` queued requests, oldest first, skipping those nobody waits for, and
    /// marks them in flight. The batch stops before the first request that would take its
    /// message beyond the limit; that request goes first in the next batch.
    pub(crate) fn take_batch(&self, max: usize) -> Vec<RequestWrapper> {
        let mut state = self.lock();
        let mut batch = Vec::with_capacity(max.min(state.queued.len()));
        let mut size = self.limit.overhead;
        while batch.len() < max {
            let Some(front) = state.queued.front() else {
                break;
            };
            if !front.answer.is_closed() {
                // Every queued request fits on its own, so a batch is never empty for this.
                if size.saturating_add(front.entry_len) > self.limit.limit {
                    break;
                }
                size += front.entry_len;
            }
            let Some(queued) = state.queued.pop_front() else {
                break;
            };
            if queued.answer.is_closed() {
                continue;
            }
            batch.push(RequestWrapper {
                request_id: queued.id.to_string(),
                request: Some(queued.request),
            });
            state.in_flight.insert(queued.id, queued.answer);
        }
        state.wake_waiting();
        batch
    }

    /// Ends the in-flight request `request_id` with `answer`.
    ///
    /// Returns `false` when no call waits for that id: it was never sent, was already
    /// answered, or its caller gave up.
    pub(crate) fn answer(&self, request_id: &str, answer: Answer) -> bool {
        let Some(id) = parse_id(request_id) else {
            return false;
        };
        let Some(sender) = self.lock().in_flight.remove(&id) else {
            return false;
        };
        sender.send(answer).is_ok()
    }

    /// Fails every in-flight request: the stream that carried them ended.
    pub(crate) fn fail_in_flight(&self) -> usize {
        let in_flight = std::mem::take(&mut self.lock().in_flight);
        let count = in_flight.len();
        for (_, sender) in in_flight {
            let _ = sender.send(Err(Error::OutcomeUnknown));
        }
        count
    }

    /// The processor refused this client: every queued request fails with
    /// [`Error::Refused`], and so does every new call until [`Queue::accepted`].
    ///
    /// Returns how many queued requests failed.
    pub(crate) fn refuse(&self, status: tonic::Status) -> usize {
        let queued = {
            let mut state = self.lock();
            state.refused = Some(status.clone());
            state.wake_waiting();
            std::mem::take(&mut state.queued)
        };
        let count = queued.len();
        for queued in queued {
            let _ = queued.answer.send(Err(Error::Refused(status.clone())));
        }
        count
    }

    /// The processor accepted this client: calls queue again.
    pub(crate) fn accepted(&self) {
        self.lock().refused = None;
    }

    /// Closes the queue: new calls fail, and every queued and in-flight request fails with
    /// [`Error::Closed`].
    pub(crate) fn close(&self) {
        let (queued, in_flight) = {
            let mut state = self.lock();
            state.closed = true;
            state.wake_waiting();
            (
                std::mem::take(&mut state.queued),
                std::mem::take(&mut state.in_flight),
            )
        };
        for queued in queued {
            let _ = queued.answer.send(Err(Error::Closed));
        }
        for (_, sender) in in_flight {
            let _ = sender.send(Err(Error::Closed));
        }
    }

    /// How many requests wait for a pull.
    pub(crate) fn queued(&self) -> usize {
        self.lock().queued.len()
    }

    /// How many calls were dropped before their answer arrived.
    pub(crate) fn abandoned(&self) -> u64 {
        self.lock().abandoned
    }

    /// How many requests were sent and wait for their answer.
    pub(crate) fn in_flight(&self) -> usize {
        self.lock().in_flight.len()
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    fn reserve(queue: &Queue) -> Poll<Result<(), Error>> {
        queue.poll_reserve(&mut Context::from_waker(Waker::noop()))
    }

    fn request(namespace: &str) -> AllocationRequest {
        AllocationRequest {
            namespace: namespace.into(),
            ..Default::default()
        }
    }

    /// A full queue holding one request per namespace, in order, and where their answers go.
    fn queued(namespaces: &[&str]) -> (Queue, Vec<(u64, oneshot::Receiver<Answer>)>) {
        let queue = Queue::new(namespaces.len());
        let receivers = namespaces
            .iter()
            .map(|namespace| {
                assert!(reserve(&queue).is_ready());
                queue.push(request(namespace)).unwrap()
            })
            .collect();
        (queue, receivers)
    }

    #[test]
    fn not_ready_while_full() {
        let queue = Queue::new(2);
        assert!(reserve(&queue).is_ready());
        assert!(reserve(&queue).is_ready());
        assert!(reserve(&queue).is_pending(), "two slots reserved");

        queue.release();
        assert!(reserve(&queue).is_ready(), "a released slot is free again");
    }

    #[test]
    fn batch_takes_oldest_first_up_to_max() {
        let (queue, _receivers) = queued(&["a", "b", "c"]);
        let batch = queue.take_batch(2);
        let namespaces: Vec<_> = batch
            .iter()
            .map(|w| w.request.as_ref().unwrap().namespace.as_str())
            .collect();
        assert_eq!(namespaces, ["a", "b"]);
        assert_eq!((queue.queued(), queue.in_flight()), (1, 2));
    }

    #[test]
    fn abandoned_request_is_never_sent() {
        let queue = Queue::new(2);
        assert!(reserve(&queue).is_ready());
        let (id, _receiver) = queue.push(request("gone")).unwrap();
        assert!(reserve(&queue).is_ready());
        let (_, kept) = queue.push(request("kept")).unwrap();

        queue.abandon(id);
        let batch = queue.take_batch(10);
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].request.as_ref().unwrap().namespace, "kept");
        drop(kept);
    }

    #[test]
    fn dropped_receiver_is_skipped_at_pull() {
        let queue = Queue::new(1);
        assert!(reserve(&queue).is_ready());
        let (_, receiver) = queue.push(request("gone")).unwrap();
        drop(receiver);
        assert!(queue.take_batch(10).is_empty());
    }

    #[test]
    fn answers_route_by_id_once() {
        let queue = Queue::new(1);
        assert!(reserve(&queue).is_ready());
        let (_, mut receiver) = queue.push(request("a")).unwrap();
        let batch = queue.take_batch(1);

        let id = &batch[0].request_id;
        assert!(queue.answer(id, Ok(AllocationResponse::default())));
        assert!(
            !queue.answer(id, Ok(AllocationResponse::default())),
            "a duplicate is dropped"
        );
        assert!(!queue.answer("not-a-number", Ok(AllocationResponse::default())));
        assert!(receiver.try_recv().unwrap().is_ok());
    }

    #[test]
    fn ids_are_measured_and_read_back_as_written() {
        for id in [0, 1, 9, 10, 99, 100, 12_345, u64::MAX] {
            assert_eq!(id_len(id), id.to_string().len(), "{id}");
            assert_eq!(parse_id(&id.to_string()), Some(id));
        }
        for other in [
            "",
            "00",
            "01",
            "+1",
            "-1",
            " 1",
            "1 ",
            "1a",
            "18446744073709551616",
        ] {
            assert_eq!(parse_id(other), None, "{other:?}");
        }
    }

    #[test]
    fn answers_match_the_id_as_sent_not_its_number() {
        let queue = Queue::new(1);
        assert!(reserve(&queue).is_ready());
        let (_, mut receiver) = queue.push(request("a")).unwrap();
        let batch = queue.take_batch(1);
        let id = &batch[0].request_id;

        for other in [format!("0{id}"), format!("+{id}"), format!("{id} ")] {
            assert!(
                !queue.answer(&other, Ok(AllocationResponse::default())),
                "{other:?} is not {id:?}"
            );
        }
        assert!(
            receiver.try_recv().is_err(),
            "still waiting for its own answer"
        );
        assert!(queue.answer(id, Ok(AllocationResponse::default())));
        assert!(receiver.try_recv().unwrap().is_ok());
    }

    #[test]
    fn stream_end_fails_in_flight_but_keeps_queued() {
        let queue = Queue::new(2);
        assert!(reserve(&queue).is_ready());
        let (_, mut sent) = queue.push(request("sent")).unwrap();
        queue.take_batch(1);
        assert!(reserve(&queue).is_ready());
        let (_, mut waiting) = queue.push(request("waiting")).unwrap();

        assert_eq!(queue.fail_in_flight(), 1);
        assert!(matches!(sent.try_recv(), Ok(Err(Error::OutcomeUnknown))));
        assert!(
            waiting.try_recv().is_err(),
            "the queued request still waits"
        );
        assert_eq!(queue.queued(), 1);
    }

    /// A request whose namespace is `len` bytes long.
    fn sized(len: usize) -> AllocationRequest {
        request(&"n".repeat(len))
    }

    #[test]
    fn request_too_large_for_a_message_is_refused_alone() {
        let limit = MessageLimit::new("client-1", 1_000);
        let queue = Queue::with_limit(4, limit);
        assert!(reserve(&queue).is_ready());
        let error = queue.push(sized(1_000)).unwrap_err();
        assert!(
            matches!(error, Error::TooLarge { size, limit: 1_000 } if size > 1_000),
            "{error:?}"
        );
        assert!(
            reserve(&queue).is_ready(),
            "the refused request left no trace"
        );
        let (_, _receiver) = queue.push(sized(10)).unwrap();
        assert_eq!(queue.take_batch(4).len(), 1);
    }

    #[test]
    fn batches_stop_before_the_message_limit_and_keep_the_order() {
        use prost::Message as _;

        use crate::proto::{BatchRequest, ProcessorMessage, processor_message::Payload};

        let client_id = "allocator-7f3a";
        for limit in [300, 1_000, 4_096] {
            let queue = Queue::with_limit(64, MessageLimit::new(client_id, limit));
            let mut receivers = Vec::new();
            for len in (0..40).map(|i| (i * 37) % 200) {
                assert!(reserve(&queue).is_ready());
                match queue.push(sized(len)) {
                    Ok((_, receiver)) => receivers.push(receiver),
                    Err(Error::TooLarge { .. }) => {}
                    Err(other) => panic!("{other:?}"),
                }
            }
            let mut sent = Vec::new();
            let mut batch_id = u64::MAX; // the longest id
            loop {
                let batch = queue.take_batch(64);
                if batch.is_empty() {
                    break;
                }
                sent.extend(batch.iter().map(|w| w.request_id.parse::<u64>().unwrap()));
                let message = ProcessorMessage {
                    client_id: client_id.into(),
                    payload: Some(Payload::BatchRequest(BatchRequest {
                        batch_id: batch_id.to_string(),
                        requests: batch,
                    })),
                };
                assert!(
                    message.encoded_len() <= limit,
                    "{} > {limit}",
                    message.encoded_len()
                );
                batch_id -= 1;
            }
            assert_eq!(
                sent.len(),
                receivers.len(),
                "every accepted request is sent"
            );
            assert!(sent.is_sorted(), "oldest first");
        }
    }

    #[test]
    fn refusal_fails_queued_and_new_calls_until_accepted() {
        let queue = Queue::new(2);
        assert!(reserve(&queue).is_ready());
        let (_, mut queued) = queue.push(request("a")).unwrap();

        assert_eq!(
            queue.refuse(tonic::Status::permission_denied("not yours")),
            1
        );
        let refused = queued.try_recv().unwrap().unwrap_err();
        assert!(
            matches!(&refused, Error::Refused(status) if status.message() == "not yours"),
            "{refused:?}"
        );
        assert_eq!(queue.queued(), 0);
        assert!(reserve(&queue).is_ready(), "refused calls free their slots");
        assert!(matches!(queue.push(request("b")), Err(Error::Refused(_))));

        queue.accepted();
        assert!(reserve(&queue).is_ready());
        assert!(queue.push(request("c")).is_ok());
    }

    #[test]
    fn close_fails_everything_and_refuses_new_calls() {
        let queue = Queue::new(2);
        assert!(reserve(&queue).is_ready());
        let (_, mut queued) = queue.push(request("a")).unwrap();
        queue.close();
        assert!(matches!(queued.try_recv(), Ok(Err(Error::Closed))));
        assert!(matches!(reserve(&queue), Poll::Ready(Err(Error::Closed))));
    }
}
