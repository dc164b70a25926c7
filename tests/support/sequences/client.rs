//! Arbitrary sequences of calls and processor messages against the client's stream handling.
//!
//! The client is driven through `client::StreamHarness`, the driver's own handling of an
//! established stream without the network: calls go through the batching service, processor
//! messages are handed to the driver's handler, and what the client sends back is checked.
//! Pulls arrive at any time and in bursts; answers name requests in flight, requests already
//! answered, requests never sent, requests whose caller left, and ids that are no number at
//! all; streams break and the client shuts down.
//!
//! Invariants, checked after every operation:
//!
//! - every call ends exactly once, and only when something ended it: its answer, the end of the
//!   stream that carried it, the client's shutdown, or its own size;
//! - a call's answer is the answer the script gave to the request id the client sent it
//!   under: no call gets an answer meant for another;
//! - a pull is answered with one batch of the oldest waiting calls, at most the batch size
//!   and within the message limit, or with nothing when no call waits;
//! - a request is sent once at most, and never after its caller left;
//! - the client is ready for a call exactly when its queue has room;
//! - nothing panics.

use std::{
    collections::HashMap,
    pin::Pin,
    task::{Context, Poll, Waker},
};

use agones_processor::{
    AllocationRequest, AllocationResponse,
    client::{BatchFuture, Error, StreamHarness},
    proto::{
        BatchRequest, BatchResponse, ProcessorMessage, PullRequest, ResponseWrapper,
        processor_message::Payload, response_wrapper,
    },
};
use prost::Message as _;
use tonic::Code;
use tower::Service;

use super::script::{Script, Writer, weighted_byte};

const CLIENT_ID: &str = "allocator-7f3a";
const MAX_BATCH_SIZE: usize = 3;
/// Room for three small requests, or one of the larger ones.
pub(crate) const MAX_MESSAGE_SIZE: usize = 600;
/// Namespace lengths: small, large (one per batch), too large for any batch.
const SIZES: [usize; 3] = [0, 300, 700];
/// Operations per script; the rest of a longer input is ignored.
const MAX_OPERATIONS: usize = 96;

/// The operations of a script, chosen by their first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// Makes a call, if the client is ready for one.
    Call,
    /// Drops a call, as a caller that gives up does.
    DropCall,
    /// A pull arrives.
    Pull,
    /// A batch response arrives, with answers chosen by the script.
    Answer,
    /// A batch request or a message without payload arrives, which a processor should not send.
    Unexpected,
    /// A message whose bytes come from the script arrives; bytes that do not decode break the
    /// stream, as they would in tonic.
    Message,
    /// The stream breaks.
    EndStream,
    /// The client shuts down.
    Close,
}

/// The operations with their weights, out of 100: mostly calls, pulls and answers.
const OPS: [(Op, u8); 8] = [
    (Op::Call, 30),
    (Op::DropCall, 5),
    (Op::Pull, 25),
    (Op::Answer, 27),
    (Op::Unexpected, 3),
    (Op::Message, 3),
    (Op::EndStream, 5),
    (Op::Close, 2),
];

/// Where a call is, as far as the script knows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Waiting for a pull.
    Queued,
    /// Sent under this request id.
    InFlight(String),
    /// Ended, with this outcome; its future has returned.
    Ended(Outcome),
    /// Dropped by its caller.
    Dropped,
}

/// How a call ended, comparably.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Allocated(String),
    Refused(Code, String),
    Unknown,
    Closed,
    TooLarge,
}

impl Outcome {
    fn of(result: Result<AllocationResponse, Error>) -> Self {
        match result {
            Ok(response) => Self::Allocated(response.game_server_name),
            Err(Error::Allocation(status)) => Self::Refused(status.code(), status.message().into()),
            Err(Error::OutcomeUnknown) => Self::Unknown,
            Err(Error::Closed) => Self::Closed,
            Err(Error::TooLarge { .. }) => Self::TooLarge,
            Err(other) => panic!("a batching call cannot end with {other:?}"),
        }
    }

    /// What a call ends with when `answer` arrives for it.
    fn of_answer(answer: &Option<response_wrapper::Result>) -> Self {
        match answer {
            Some(response_wrapper::Result::Response(response)) => {
                Self::Allocated(response.game_server_name.clone())
            }
            Some(response_wrapper::Result::Error(status)) => {
                let code = match Code::from_i32(status.code) {
                    // An error claiming success reads as Unknown.
                    Code::Ok => Code::Unknown,
                    code => code,
                };
                Self::Refused(code, status.message.clone())
            }
            None => Self::Refused(
                Code::Internal,
                "processor answered with neither a response nor an error".into(),
            ),
        }
    }
}

/// How the calls of a script ended, for tests that check a script reaches what it was
/// written for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Report {
    /// Batches the client sent.
    pub(crate) batches: usize,
    /// Calls ended by an answer.
    pub(crate) answered: usize,
    /// Calls ended by a stream break.
    pub(crate) unknown: usize,
    /// Calls ended by the shutdown.
    pub(crate) closed: usize,
    /// Calls refused for their size.
    pub(crate) too_large: usize,
    /// Calls dropped by their caller.
    pub(crate) dropped: usize,
}

/// One call and its future.
struct Call {
    /// The request's namespace, unique to the call.
    tag: String,
    future: Option<BatchFuture>,
    state: State,
    /// Ended as soon as it was made: its request can never be sent.
    too_large: bool,
}

/// The client and the calls of one script.
struct Run {
    harness: StreamHarness,
    batch: agones_processor::client::Batch,
    calls: Vec<Call>,
    /// Request ids sent, with the call each belongs to.
    sent: HashMap<String, usize>,
    closed: bool,
    /// Batches the client sent.
    batches: usize,
}

/// Runs `data` as a script against a fresh client; panics when an invariant breaks.
pub(crate) fn run(data: &[u8]) -> Report {
    let (harness, batch) = StreamHarness::new(CLIENT_ID, MAX_BATCH_SIZE, MAX_MESSAGE_SIZE);
    let mut run = Run {
        harness,
        batch,
        calls: Vec::new(),
        sent: HashMap::new(),
        closed: false,
        batches: 0,
    };
    let mut script = Script::new(data);
    let mut operations = 0;
    while !script.is_done() && operations < MAX_OPERATIONS {
        operations += 1;
        run.step(&mut script);
        run.check_calls();
    }
    // Shutting down ends every call still pending.
    run.harness.close();
    run.closed = true;
    run.expect_all(
        |state| matches!(state, State::Queued | State::InFlight(_)),
        Outcome::Closed,
    );
    run.check_calls();
    let mut report = Report {
        batches: run.batches,
        ..Report::default()
    };
    for (index, call) in run.calls.iter().enumerate() {
        match &call.state {
            State::Ended(Outcome::Allocated(_) | Outcome::Refused(..)) => report.answered += 1,
            State::Ended(Outcome::Unknown) => report.unknown += 1,
            State::Ended(Outcome::Closed) => report.closed += 1,
            State::Ended(Outcome::TooLarge) => report.too_large += 1,
            State::Dropped => report.dropped += 1,
            state => panic!("call {index} never ended: {state:?}"),
        }
    }
    report
}

impl Run {
    fn step(&mut self, script: &mut Script<'_>) {
        match script.weighted(&OPS) {
            Op::Call => {
                let size = script.choose(&SIZES);
                self.call(size);
            }
            Op::DropCall => {
                if !self.calls.is_empty() {
                    let index = script.below(self.calls.len());
                    self.drop_call(index);
                }
            }
            Op::Pull => {
                let client_id = if script.chance(90) {
                    CLIENT_ID
                } else {
                    "someone-else"
                };
                self.receive(ProcessorMessage {
                    client_id: client_id.into(),
                    payload: Some(Payload::Pull(PullRequest {
                        message: "pull".into(),
                    })),
                });
            }
            Op::Answer => {
                let message = self.answer(script);
                self.receive(message);
            }
            Op::Unexpected => {
                let payload = script.chance(50).then(|| {
                    Payload::BatchRequest(BatchRequest {
                        batch_id: "0".into(),
                        requests: Vec::new(),
                    })
                });
                self.receive(ProcessorMessage {
                    client_id: CLIENT_ID.into(),
                    payload,
                });
            }
            Op::Message => match ProcessorMessage::decode(script.chunk()) {
                Ok(message) => self.receive(message),
                Err(_) => self.end_stream(),
            },
            Op::EndStream => self.end_stream(),
            Op::Close => {
                self.harness.close();
                self.closed = true;
                self.expect_all(
                    |state| matches!(state, State::Queued | State::InFlight(_)),
                    Outcome::Closed,
                );
            }
        }
    }

    /// Makes a call whose namespace is `size` bytes long and unique to it.
    fn call(&mut self, size: usize) {
        let index = self.calls.len();
        let mut tag = format!("c{index}-");
        tag.extend(std::iter::repeat_n('n', size));
        let queued = self.queued().count();
        let mut context = Context::from_waker(Waker::noop());
        match self.batch.poll_ready(&mut context) {
            Poll::Pending => {
                assert!(!self.closed, "a closed client is not pending");
                assert_eq!(queued, MAX_BATCH_SIZE, "not ready with room in the queue");
                return;
            }
            Poll::Ready(Err(error)) => {
                assert!(self.closed, "not ready before shutdown: {error:?}");
                assert!(matches!(error, Error::Closed), "{error:?}");
                return;
            }
            Poll::Ready(Ok(())) => {
                assert!(!self.closed, "ready after shutdown");
                assert!(queued < MAX_BATCH_SIZE, "ready with a full queue");
            }
        }
        let request = AllocationRequest {
            namespace: tag.clone(),
            ..Default::default()
        };
        let too_large = request.encoded_len() > MAX_MESSAGE_SIZE;
        let future = self.batch.call(request);
        self.calls.push(Call {
            tag,
            future: Some(future),
            state: State::Queued,
            too_large,
        });
        if too_large {
            self.calls[index].state = State::Ended(Outcome::TooLarge);
        }
    }

    fn drop_call(&mut self, index: usize) {
        let call = &mut self.calls[index];
        if matches!(call.state, State::Queued | State::InFlight(_)) {
            call.future = None;
            call.state = State::Dropped;
        }
    }

    /// The calls waiting for a pull, oldest first.
    fn queued(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.calls.len()).filter(|&index| self.calls[index].state == State::Queued)
    }

    /// A batch response whose answers name requests chosen by the script.
    fn answer(&self, script: &mut Script<'_>) -> ProcessorMessage {
        let mut sent: Vec<&String> = self.sent.keys().collect();
        sent.sort();
        let in_flight: Vec<&String> = self
            .calls
            .iter()
            .filter_map(|call| match &call.state {
                State::InFlight(id) => Some(id),
                _ => None,
            })
            .collect();
        let responses = (0..script.below(5))
            .map(|_| {
                let request_id = match script.below(8) {
                    0..=3 if !in_flight.is_empty() => script.choose(&in_flight).clone(),
                    // Answered already, or whose caller left.
                    4 if !sent.is_empty() => script.choose(&sent).clone(),
                    // Never sent yet, perhaps.
                    5 => self.calls.len().to_string(),
                    6 => script
                        .choose(&["", "x", "-1", "18446744073709551616", " 1", "01", "+1"])
                        .into(),
                    _ => script.below(8).to_string(),
                };
                // Named after the call the id belongs to, so a misrouted answer shows.
                let tag = self
                    .sent
                    .get(&request_id)
                    .map_or("stray", |&index| self.calls[index].tag.as_str());
                let result = match script.below(4) {
                    0 | 1 => Some(response_wrapper::Result::Response(AllocationResponse {
                        game_server_name: format!("gs-{tag}"),
                        ..Default::default()
                    })),
                    2 => Some(response_wrapper::Result::Error(tonic_types::Status {
                        code: script.choose(&[0, 5, 8, 10, 99, -1]),
                        message: format!("refused-{tag}"),
                        details: Vec::new(),
                    })),
                    _ => None,
                };
                ResponseWrapper { request_id, result }
            })
            .collect();
        ProcessorMessage {
            client_id: CLIENT_ID.into(),
            payload: Some(Payload::BatchResponse(BatchResponse {
                batch_id: "0".into(),
                responses,
            })),
        }
    }

    /// Hands `message` to the client and checks what it sends back.
    fn receive(&mut self, message: ProcessorMessage) {
        let is_pull = matches!(message.payload, Some(Payload::Pull(_)));
        let answers = match &message.payload {
            Some(Payload::BatchResponse(batch)) => batch.responses.clone(),
            _ => Vec::new(),
        };
        let waiting: Vec<usize> = self.queued().collect();
        let sent = self.harness.receive(message);

        // Answers end the calls in flight under their ids, the first answer for each.
        for answer in &answers {
            let Some(&index) = self.sent.get(&answer.request_id) else {
                continue;
            };
            if let State::InFlight(id) = &self.calls[index].state
                && *id == answer.request_id
            {
                self.calls[index].state = State::Ended(Outcome::of_answer(&answer.result));
            }
        }

        if !is_pull {
            assert!(
                sent.is_empty(),
                "the client answered a non-pull with {sent:?}"
            );
            return;
        }
        if waiting.is_empty() {
            assert!(sent.is_empty(), "a pull with nothing queued sent {sent:?}");
            return;
        }
        let [message] = sent.as_slice() else {
            panic!("a pull with calls waiting sent {sent:?}");
        };
        assert_eq!(message.client_id, CLIENT_ID);
        assert!(
            message.encoded_len() <= MAX_MESSAGE_SIZE,
            "a batch of {} bytes",
            message.encoded_len()
        );
        let Some(Payload::BatchRequest(batch)) = &message.payload else {
            panic!("a pull answered with {message:?}");
        };
        assert!(!batch.requests.is_empty() && batch.requests.len() <= MAX_BATCH_SIZE);
        self.batches += 1;
        for (wrapper, &index) in batch.requests.iter().zip(&waiting) {
            let call = &mut self.calls[index];
            let request = wrapper
                .request
                .as_ref()
                .expect("a request in every wrapper");
            assert_eq!(request.namespace, call.tag, "not the oldest waiting call");
            assert!(
                self.sent
                    .insert(wrapper.request_id.clone(), index)
                    .is_none(),
                "request id {} sent twice",
                wrapper.request_id
            );
            call.state = State::InFlight(wrapper.request_id.clone());
        }
        // What stays behind did not fit in the message with the rest, as the client counts:
        // with the longest batch id, and here with the longest request id too.
        if batch.requests.len() < MAX_BATCH_SIZE
            && let Some(&next) = waiting.get(batch.requests.len())
        {
            use prost::encoding::{encoded_len_varint, message, string};
            let longest_id = "0".repeat(20);
            let overhead = string::encoded_len(1, &CLIENT_ID.to_owned())
                + 1
                + encoded_len_varint(MAX_MESSAGE_SIZE as u64)
                + string::encoded_len(1, &longest_id);
            let taken = batch.encoded_len() - string::encoded_len(1, &batch.batch_id);
            let request = AllocationRequest {
                namespace: self.calls[next].tag.clone(),
                ..Default::default()
            };
            let wrapper = agones_processor::proto::RequestWrapper {
                request_id: longest_id,
                request: Some(request),
            };
            let next_len = message::encoded_len(2, &wrapper);
            assert!(
                overhead + taken + next_len > MAX_MESSAGE_SIZE,
                "call {next} was left behind though it fitted"
            );
        }
    }

    fn end_stream(&mut self) {
        let in_flight = self
            .calls
            .iter()
            .filter(|call| matches!(call.state, State::InFlight(_)))
            .count();
        assert_eq!(
            self.harness.end_stream(),
            in_flight,
            "calls failed at the break"
        );
        self.expect_all(
            |state| matches!(state, State::InFlight(_)),
            Outcome::Unknown,
        );
    }

    /// Every call in a state that `selected` picks ends with `outcome`.
    fn expect_all(&mut self, selected: impl Fn(&State) -> bool, outcome: Outcome) {
        for call in &mut self.calls {
            if selected(&call.state) {
                call.state = State::Ended(outcome.clone());
            }
        }
    }

    /// Polls every call's future: those the script says ended must be ready with that outcome,
    /// the others pending.
    fn check_calls(&mut self) {
        let mut context = Context::from_waker(Waker::noop());
        for (index, call) in self.calls.iter_mut().enumerate() {
            let Some(future) = &mut call.future else {
                continue;
            };
            match (Pin::new(future).poll(&mut context), &call.state) {
                (Poll::Pending, State::Queued | State::InFlight(_)) => {}
                (Poll::Ready(result), State::Ended(expected)) => {
                    let outcome = Outcome::of(result);
                    assert_eq!(&outcome, expected, "call {index} ({})", call.tag);
                    assert!(call.too_large == (outcome == Outcome::TooLarge));
                    call.future = None;
                }
                (Poll::Ready(result), state) => {
                    panic!("call {index} ended with {result:?} while {state:?}")
                }
                (Poll::Pending, state) => panic!("call {index} still pending while {state:?}"),
            }
        }
    }
}

/// A script: two calls, each of the processor messages `messages` (encoded), then a pull and
/// an answer to what it took.
pub(crate) fn seed(messages: &[&[u8]]) -> Vec<u8> {
    let op = |op| weighted_byte(&OPS, op);
    let mut writer = Writer::default();
    writer.byte(op(Op::Call)).byte(0);
    writer.byte(op(Op::Call)).byte(0);
    for message in messages {
        writer.byte(op(Op::Message)).chunk(message);
    }
    writer.byte(op(Op::Pull)).byte(0);
    // Two answers: to the first id sent, with a response, then to the second, with an error.
    writer.byte(op(Op::Answer)).byte(2);
    writer.byte(0).byte(0).byte(0);
    writer.byte(1).byte(1).byte(2).byte(2);
    writer.finish()
}
