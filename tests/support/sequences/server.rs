//! Arbitrary sequences of client messages against the processor's stream handling.
//!
//! Up to three streams at once go to `ProcessorHandler::stream_batches` as tonic hands them
//! over: a request body the script writes gRPC frames into, decoded by tonic's own `Streaming`
//! with the processor's message limit. What the handler answers is read the way tonic sends
//! it, up to the first error. There is no network, so the clock is paused and a script runs in
//! a millisecond or so.
//!
//! Invariants, checked as messages arrive and once every stream has ended:
//!
//! - every message on a stream carries the id that stream registered, and is a pull or a
//!   batch response;
//! - every batch response answers a batch sent on that stream and not answered yet, one
//!   answer per request, in order, each the one the request calls for (allocated, refused by
//!   the allocator, or refused by a batch rule);
//! - a stream that ends without an error, and was not disturbed by a replacement, a shutdown,
//!   a change of leadership or bytes that do not decode, answered every batch it was sent;
//! - every stream ends once its client has closed its side;
//! - every error a stream ends with has a cause in the script;
//! - nothing panics, in any task.

use std::{collections::HashSet, time::Duration};

use agones_processor::{
    AllocationRequest, AllocationResponse,
    allocator::AllocationError,
    proto::{
        BatchRequest, BatchResponse, ProcessorMessage, PullRequest, RequestWrapper,
        ResponseWrapper, processor_message::Payload, processor_server::Processor, response_wrapper,
    },
    server::{OutboundStream, ProcessorHandler},
};
use futures_util::FutureExt as _;
use http_body_util::channel::{Channel, Sender};
use prost::Message as _;
use tokio::{sync::watch, task::JoinHandle};
use tokio_stream::StreamExt as _;
use tonic::{Code, Request, Response, Status, Streaming, codegen::Bytes};
use tower::BoxError;

use super::script::{Script, Writer, weighted_byte};

/// The handler's limits, small so that scripts reach them.
const MAX_BATCH_SIZE: usize = 3;
const MAX_BATCHES_PER_CLIENT: usize = 2;
const MAX_CLIENTS: usize = 2;
const OUTBOUND_CAPACITY: usize = 2;
pub(crate) const MAX_MESSAGE_SIZE: usize = 512;
const PULL_INTERVAL: Duration = Duration::from_millis(10);
const REGISTRATION_TIMEOUT: Duration = Duration::from_millis(100);
/// How long the "slow" namespace takes to allocate.
const SLOW: Duration = Duration::from_millis(30);

/// Streams open at once.
const SLOTS: usize = 3;
/// Operations per script; the rest of a longer input is ignored.
const MAX_OPERATIONS: usize = 64;
/// Frames a body holds; more than a script can write, so writing never waits.
const BODY_CAPACITY: usize = 256;

const CLIENT_IDS: [&str; 4] = ["a", "b", "c", ""];
const REQUEST_IDS: [&str; 5] = ["r0", "r1", "r2", "r3", ""];
/// "none" matches nothing, "fail" fails with `Aborted`, "slow" takes [`SLOW`].
const NAMESPACES: [&str; 5] = ["x", "y", "none", "fail", "slow"];

/// The operations of a script, chosen by their first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// Opens a stream in a slot, dropping the slot's stream if any, and mostly registers it.
    Open,
    /// Sends a registration.
    Register,
    /// Sends a batch.
    Batch,
    /// Sends a pull or a batch response, which a client should not send.
    Unexpected,
    /// Sends a message whose bytes come from the script; bytes that do not decode fail the
    /// stream.
    Message,
    /// Writes raw bytes into the body, not framed.
    Raw,
    /// Sends a batch larger than the message limit.
    Oversized,
    /// Reads what the slot's stream has sent.
    Read,
    /// Lets time pass.
    Sleep,
    /// Ends the client's side of the stream.
    CloseSend,
    /// Drops the stream, as a client that goes away does.
    Drop,
    /// Switches leadership.
    Leadership,
    /// Starts a shutdown.
    Shutdown,
}

/// The operations with their weights, out of 100: mostly batches, reads and time.
const OPS: [(Op, u8); 13] = [
    (Op::Open, 6),
    (Op::Register, 4),
    (Op::Batch, 35),
    (Op::Unexpected, 3),
    (Op::Message, 3),
    (Op::Raw, 1),
    (Op::Oversized, 1),
    (Op::Read, 20),
    (Op::Sleep, 20),
    (Op::CloseSend, 2),
    (Op::Drop, 2),
    (Op::Leadership, 2),
    (Op::Shutdown, 1),
];

/// What a request of a batch must be answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expected {
    Allocated(String),
    Refused(Code),
}

/// A batch sent on a stream, waiting for its answer.
#[derive(Debug)]
struct Sent {
    batch_id: String,
    request_ids: Vec<String>,
    expected: Vec<Expected>,
    /// Sent under another client id than the stream's: refused whole, never "too many".
    mismatched: bool,
}

/// One stream and what the script knows of it.
struct Stream {
    body: Option<Sender<Bytes>>,
    call: Option<JoinHandle<Result<Response<OutboundStream>, Status>>>,
    outbound: Option<OutboundStream>,
    /// The client id of the first message without a payload.
    registration: Option<String>,
    /// Batches sent after the registration and not answered yet.
    waiting: Vec<Sent>,
    /// Bytes were written that the script does not model: answers are not matched.
    garbled: bool,
    /// Two batches waiting at once had the same id: answers are not matched.
    ambiguous: bool,
    /// A message beyond the limit was sent: the stream fails with `OutOfRange`.
    oversized: bool,
    /// A registration with the same id was sent on another stream.
    replaced: bool,
    /// Shutdown or a change of leadership may have ended the stream early.
    disturbed: bool,
    ended: bool,
}

impl Stream {
    /// Whether what the stream reads is still what the script wrote.
    fn modelled(&self) -> bool {
        !self.garbled && !self.ambiguous && !self.oversized
    }
}

/// What a script got to do, for tests that check a script reaches what it was written for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Report {
    /// Streams whose registration the handler accepted.
    pub(crate) registered: usize,
    /// Batches sent on streams after their registration.
    pub(crate) sent: usize,
    /// Batch responses matched to their batch and checked answer by answer.
    pub(crate) answered: usize,
    /// Pulls received.
    pub(crate) pulls: usize,
    /// Streams that ended without an error with every batch answered, checked.
    pub(crate) complete: usize,
    /// Streams that ended with an error, or were refused.
    pub(crate) failed: usize,
}

/// The processor and the streams of one script.
struct Run {
    report: Report,
    handler: ProcessorHandler<Allocator>,
    leading: watch::Sender<bool>,
    slots: Vec<Option<Stream>>,
    shutdown: Option<JoinHandle<bool>>,
    /// Leadership changed and the pull loop may not have seen it yet: streams opened now may
    /// still be ended by it.
    leadership_changing: bool,
    /// A stream without a known registration was written bytes the script does not model:
    /// they may hold a registration, which replaces any stream registered under its id.
    hidden_registration: bool,
    /// Batches made, for their ids.
    batches: usize,
}

type Allocator = tower::util::BoxCloneSyncService<AllocationRequest, AllocationResponse, BoxError>;

/// Allocates a game server named after the namespace; see [`NAMESPACES`].
fn allocator() -> Allocator {
    tower::util::BoxCloneSyncService::new(tower::service_fn(
        |request: AllocationRequest| async move {
            match request.namespace.as_str() {
                "none" => Err(BoxError::from(AllocationError::Unallocated)),
                "fail" => Err(Status::aborted("contended").into()),
                namespace => {
                    if namespace == "slow" {
                        tokio::time::sleep(SLOW).await;
                    }
                    Ok(AllocationResponse {
                        game_server_name: format!("gs-{namespace}"),
                        ..Default::default()
                    })
                }
            }
        },
    ))
}

/// The answer each request of a batch calls for.
fn expected(registration: &str, client_id: &str, batch: &BatchRequest) -> Sent {
    let mismatched = client_id != registration;
    let mut seen = HashSet::new();
    let expected = batch
        .requests
        .iter()
        .enumerate()
        .map(|(position, wrapper)| {
            if mismatched {
                return Expected::Refused(Code::InvalidArgument);
            }
            if position >= MAX_BATCH_SIZE {
                return Expected::Refused(Code::ResourceExhausted);
            }
            if wrapper.request_id.is_empty() || !seen.insert(wrapper.request_id.as_str()) {
                return Expected::Refused(Code::InvalidArgument);
            }
            match wrapper.request.as_ref().map(|r| r.namespace.as_str()) {
                None => Expected::Refused(Code::InvalidArgument),
                Some("none") => Expected::Refused(Code::ResourceExhausted),
                Some("fail") => Expected::Refused(Code::Aborted),
                Some(namespace) => Expected::Allocated(format!("gs-{namespace}")),
            }
        })
        .collect();
    Sent {
        batch_id: batch.batch_id.clone(),
        request_ids: batch
            .requests
            .iter()
            .map(|w| w.request_id.clone())
            .collect(),
        expected,
        mismatched,
    }
}

/// A message as a gRPC frame: uncompressed, its length, its bytes.
fn frame(message: &[u8]) -> Bytes {
    let len = u32::try_from(message.len()).expect("small messages");
    let mut frame = Vec::with_capacity(5 + message.len());
    frame.push(0);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(message);
    frame.into()
}

/// Runs `data` as a script against a fresh processor; panics when an invariant breaks.
///
/// Slots 0 and 1 start with streams registered as "a" and "b", slot 2 with a stream that has
/// not registered, so that scripts start where the interesting states are near.
pub(crate) fn run(data: &[u8]) -> Report {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let mut run = Run::new();
        run.open(0);
        run.send(0, registration("a")).await;
        run.open(1);
        run.send(1, registration("b")).await;
        run.open(2);
        let mut script = Script::new(data);
        let mut operations = 0;
        while !script.is_done() && operations < MAX_OPERATIONS {
            operations += 1;
            run.step(&mut script).await;
        }
        run.finish().await;
        run.report
    })
}

impl Run {
    fn new() -> Self {
        let (leading, leadership) = watch::channel(true);
        let handler = ProcessorHandler::builder(allocator())
            .pull_interval(PULL_INTERVAL)
            .max_batch_size(MAX_BATCH_SIZE)
            .max_batches_per_client(MAX_BATCHES_PER_CLIENT)
            .max_clients(MAX_CLIENTS)
            .outbound_capacity(OUTBOUND_CAPACITY)
            .registration_timeout(REGISTRATION_TIMEOUT)
            .max_message_size(MAX_MESSAGE_SIZE)
            .leadership(leadership)
            .build();
        Self {
            report: Report::default(),
            handler,
            leading,
            slots: (0..SLOTS).map(|_| None).collect(),
            shutdown: None,
            leadership_changing: false,
            hidden_registration: false,
            batches: 0,
        }
    }

    async fn step(&mut self, script: &mut Script<'_>) {
        let op = script.weighted(&OPS);
        let slot = script.below(SLOTS);
        match op {
            Op::Open => {
                self.open(slot);
                if script.chance(80) {
                    let client_id = script.choose(&CLIENT_IDS[..3]);
                    self.send(slot, registration(client_id)).await;
                }
            }
            Op::Register => {
                let client_id = script.choose(&CLIENT_IDS);
                self.send(slot, registration(client_id)).await;
            }
            Op::Batch => {
                let message = self.batch(slot, script);
                self.send(slot, message).await;
            }
            Op::Unexpected => {
                let payload = if script.chance(50) {
                    Payload::Pull(PullRequest {
                        message: "pull".into(),
                    })
                } else {
                    Payload::BatchResponse(BatchResponse {
                        batch_id: "b0".into(),
                        responses: Vec::new(),
                    })
                };
                let client_id = self.own_id(slot);
                self.send(
                    slot,
                    ProcessorMessage {
                        client_id,
                        payload: Some(payload),
                    },
                )
                .await;
            }
            Op::Message => {
                let bytes = script.chunk();
                self.send_bytes(slot, bytes).await;
            }
            Op::Raw => {
                let bytes = Bytes::copy_from_slice(script.chunk());
                if let Some(stream) = self.stream(slot) {
                    stream.garbled = true;
                    let unregistered = stream.registration.is_none();
                    write(stream, bytes).await;
                    self.hidden_registration |= unregistered;
                }
            }
            Op::Oversized => {
                let mut message = self.batch(slot, script);
                message.client_id = "o".repeat(MAX_MESSAGE_SIZE);
                self.send(slot, message).await;
            }
            Op::Read => self.read(slot),
            Op::Sleep => {
                let millis = script.choose(&[0, 1, 5, 20, 50, 150]);
                if millis == 0 {
                    tokio::task::yield_now().await;
                } else {
                    tokio::time::sleep(Duration::from_millis(millis)).await;
                }
                // The pull loop has had its turn.
                self.leadership_changing = false;
            }
            Op::CloseSend => {
                if let Some(stream) = self.stream(slot) {
                    stream.body = None;
                }
            }
            Op::Drop => self.drop_slot(slot),
            Op::Leadership => {
                let leading = !*self.leading.borrow();
                self.leading.send_replace(leading);
                self.leadership_changing = true;
                self.disturb_all();
            }
            Op::Shutdown => {
                if self.shutdown.is_none() {
                    let handler = self.handler.clone();
                    self.shutdown = Some(tokio::spawn(async move {
                        handler.shutdown(Duration::from_millis(500)).await
                    }));
                    self.disturb_all();
                }
            }
        }
    }

    fn stream(&mut self, slot: usize) -> Option<&mut Stream> {
        self.slots[slot].as_mut().filter(|stream| !stream.ended)
    }

    /// The id the slot's stream registered, or one of the others when it has none.
    fn own_id(&self, slot: usize) -> String {
        self.slots[slot]
            .as_ref()
            .and_then(|stream| stream.registration.clone())
            .unwrap_or_else(|| "a".into())
    }

    fn disturb_all(&mut self) {
        for stream in self.slots.iter_mut().flatten() {
            stream.disturbed = true;
        }
    }

    fn open(&mut self, slot: usize) {
        self.drop_slot(slot);
        let (body, channel) = Channel::<Bytes>::new(BODY_CAPACITY);
        let decoder = tonic_prost::ProstDecoder::<ProcessorMessage>::default();
        let inbound = Streaming::new_request(decoder, channel, None, Some(MAX_MESSAGE_SIZE));
        let handler = self.handler.clone();
        let call = tokio::spawn(async move { handler.stream_batches(Request::new(inbound)).await });
        self.slots[slot] = Some(Stream {
            body: Some(body),
            call: Some(call),
            outbound: None,
            registration: None,
            waiting: Vec::new(),
            garbled: false,
            ambiguous: false,
            oversized: false,
            replaced: false,
            disturbed: self.shutdown.is_some() || self.leadership_changing,
            ended: false,
        });
    }

    /// Drops the slot's stream: the client went away (the RPC is cancelled).
    fn drop_slot(&mut self, slot: usize) {
        if let Some(stream) = self.slots[slot].take()
            && let Some(call) = stream.call
        {
            call.abort();
        }
    }

    /// A batch for the slot's stream, mostly under its own client id, with an id of its own.
    fn batch(&mut self, slot: usize, script: &mut Script<'_>) -> ProcessorMessage {
        self.batches += 1;
        let client_id = if script.chance(85) {
            self.own_id(slot)
        } else {
            script.choose(&CLIENT_IDS).into()
        };
        let requests = (0..script.below(6))
            .map(|_| RequestWrapper {
                request_id: script.choose(&REQUEST_IDS).into(),
                request: (!script.chance(10)).then(|| AllocationRequest {
                    namespace: script.choose(&NAMESPACES).into(),
                    ..Default::default()
                }),
            })
            .collect();
        ProcessorMessage {
            client_id,
            payload: Some(Payload::BatchRequest(BatchRequest {
                batch_id: format!("b{}", self.batches),
                requests,
            })),
        }
    }

    async fn send(&mut self, slot: usize, message: ProcessorMessage) {
        self.send_bytes(slot, &message.encode_to_vec()).await;
    }

    /// Sends `bytes` as one message and models what the handler makes of it.
    async fn send_bytes(&mut self, slot: usize, bytes: &[u8]) {
        let Some(stream) = self.slots[slot].as_mut().filter(|s| !s.ended) else {
            return;
        };
        if stream.body.is_none() {
            return;
        }
        let decoded = ProcessorMessage::decode(bytes);
        if bytes.len() > MAX_MESSAGE_SIZE {
            stream.oversized = true;
        } else if stream.modelled() {
            match decoded {
                Err(_) => stream.garbled = true,
                Ok(message) => match (&stream.registration, message.payload) {
                    // Messages with a payload before the registration are ignored.
                    (None, Some(_)) => {}
                    (None, None) => stream.registration = Some(message.client_id),
                    (Some(_), Some(Payload::BatchRequest(batch)))
                        if stream.waiting.iter().any(|w| w.batch_id == batch.batch_id) =>
                    {
                        // Answers are told apart by batch id: a second batch with the id of
                        // one still waiting makes them ambiguous.
                        stream.ambiguous = true;
                    }
                    (Some(registered), Some(Payload::BatchRequest(batch))) => {
                        let sent = expected(registered, &message.client_id, &batch);
                        stream.waiting.push(sent);
                        self.report.sent += 1;
                    }
                    (Some(_), _) => {}
                },
            }
        }
        let registration = stream.registration.clone();
        let hidden = stream.garbled && registration.is_none();
        write(stream, frame(bytes)).await;
        self.hidden_registration |= hidden;
        // Registering an id that another stream holds replaces one of them, whichever the
        // handler reads first.
        if let Some(id) = registration.filter(|id| !id.is_empty()) {
            let holders: Vec<usize> = (0..SLOTS)
                .filter(|&other| {
                    self.slots[other]
                        .as_ref()
                        .is_some_and(|s| s.registration.as_deref() == Some(id.as_str()))
                })
                .collect();
            if holders.len() > 1 {
                for other in holders {
                    if let Some(stream) = self.slots[other].as_mut() {
                        stream.replaced = true;
                    }
                }
            }
        }
    }

    /// Takes everything the slot's stream has sent so far and checks it.
    fn read(&mut self, slot: usize) {
        let shutting_down = self.shutdown.is_some();
        let hidden_registration = self.hidden_registration;
        let report = &mut self.report;
        let Some(stream) = self.slots[slot].as_mut() else {
            return;
        };
        if let Some(call) = &mut stream.call {
            let Some(joined) = call.now_or_never() else {
                return;
            };
            stream.call = None;
            match joined.expect("the stream_batches task panicked") {
                Ok(response) => {
                    report.registered += usize::from(stream.registration.is_some());
                    stream.outbound = Some(response.into_inner());
                }
                Err(status) => {
                    report.failed += 1;
                    check_refusal(stream, &status, shutting_down);
                    stream.ended = true;
                    return;
                }
            }
        }
        while let Some(outbound) = &mut stream.outbound {
            let Some(item) = outbound.next().now_or_never() else {
                return;
            };
            match item {
                Some(Ok(message)) => check_message(stream, message, report),
                Some(Err(status)) => {
                    report.failed += 1;
                    // Tonic ends the response with the first error.
                    check_end(stream, &status, hidden_registration);
                    stream.outbound = None;
                    stream.ended = true;
                }
                None => {
                    if stream.modelled() && !stream.replaced && !stream.disturbed {
                        assert!(
                            stream.waiting.is_empty(),
                            "the stream ended with batches unanswered: {:?}",
                            stream.waiting
                        );
                        report.complete += 1;
                    }
                    stream.outbound = None;
                    stream.ended = true;
                }
            }
        }
    }

    /// Closes every client's side, then waits until every stream has ended.
    async fn finish(&mut self) {
        for stream in self.slots.iter_mut().flatten() {
            stream.body = None;
        }
        for _ in 0..200 {
            for slot in 0..SLOTS {
                self.read(slot);
            }
            if self.slots.iter().flatten().all(|stream| stream.ended) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for (slot, stream) in self.slots.iter().enumerate() {
            if let Some(stream) = stream {
                assert!(
                    stream.ended,
                    "stream {slot} did not end 4 s after its client closed its side"
                );
            }
        }
        if let Some(shutdown) = self.shutdown.take() {
            shutdown.await.expect("the shutdown task panicked");
        }
    }
}

async fn write(stream: &mut Stream, bytes: Bytes) {
    if let Some(body) = &mut stream.body {
        // Fails only once the handler stopped reading, which the reads check.
        let _ = body.send_data(bytes).await;
    }
}

fn registration(client_id: &str) -> ProcessorMessage {
    ProcessorMessage {
        client_id: client_id.into(),
        payload: None,
    }
}

/// A stream refused before its response began.
fn check_refusal(stream: &Stream, status: &Status, shutting_down: bool) {
    let allowed = match status.code() {
        Code::InvalidArgument => stream.registration.as_deref() == Some(""),
        Code::ResourceExhausted => stream.registration.is_some(),
        // Tonic's code for a message beyond the limit.
        Code::OutOfRange => stream.oversized,
        Code::DeadlineExceeded => status.message().starts_with("no registration within"),
        Code::Unavailable => shutting_down,
        _ => false,
    };
    assert!(allowed || stream.garbled, "unexpected refusal: {status:?}");
}

/// A stream that ended with an error.
fn check_end(stream: &Stream, status: &Status, hidden_registration: bool) {
    let allowed = match status.code() {
        Code::AlreadyExists => stream.replaced || hidden_registration,
        Code::Unavailable => stream.disturbed,
        Code::OutOfRange => stream.oversized,
        _ => false,
    };
    assert!(allowed || stream.garbled, "unexpected end: {status:?}");
}

/// One message from the handler.
fn check_message(stream: &mut Stream, message: ProcessorMessage, report: &mut Report) {
    match stream.registration.as_deref() {
        Some(registered) => {
            assert_eq!(message.client_id, registered, "a message under another id");
        }
        // Bytes written outside the script's model may have held a registration.
        None => assert!(stream.garbled, "messages only after a registration"),
    }
    let batch = match message.payload {
        Some(Payload::Pull(pull)) => {
            assert_eq!(pull.message, "pull");
            report.pulls += 1;
            return;
        }
        Some(Payload::BatchResponse(batch)) => batch,
        other => panic!("the processor sent {other:?}"),
    };
    for answer in &batch.responses {
        assert!(answer.result.is_some(), "an answer without a result");
    }
    if !stream.modelled() {
        return;
    }
    let request_ids: Vec<&str> = batch
        .responses
        .iter()
        .map(|w| w.request_id.as_str())
        .collect();
    let position = stream
        .waiting
        .iter()
        .position(|sent| sent.batch_id == batch.batch_id)
        .unwrap_or_else(|| panic!("an answer to no batch waiting on this stream: {batch:?}"));
    let sent = &stream.waiting[position];
    assert_eq!(sent.request_ids, request_ids, "answers out of order");
    if !refused_as_too_many(sent, &batch)
        && let Err(misfit) = fits(sent, &batch)
    {
        panic!("{misfit}: {batch:?}");
    }
    stream.waiting.remove(position);
    report.answered += 1;
}

/// Whether `batch` refuses `sent` whole for the client's batches in flight.
fn refused_as_too_many(sent: &Sent, batch: &BatchResponse) -> bool {
    !sent.mismatched
        && batch
            .responses
            .iter()
            .all(|w| refused_with(w, Code::ResourceExhausted, "too many batches in flight"))
}

/// Whether `batch` answers every request of `sent` as it calls for.
fn fits(sent: &Sent, batch: &BatchResponse) -> Result<(), String> {
    for (answer, expected) in batch.responses.iter().zip(&sent.expected) {
        let right = match (&answer.result, expected) {
            (Some(response_wrapper::Result::Response(response)), Expected::Allocated(name)) => {
                response.game_server_name == *name
            }
            (Some(response_wrapper::Result::Error(status)), Expected::Refused(code)) => {
                Code::from_i32(status.code) == *code
            }
            _ => false,
        };
        if !right {
            return Err(format!(
                "expected {expected:?}, answered {:?}",
                answer.result
            ));
        }
    }
    Ok(())
}

fn refused_with(answer: &ResponseWrapper, code: Code, message: &str) -> bool {
    matches!(
        &answer.result,
        Some(response_wrapper::Result::Error(status))
            if Code::from_i32(status.code) == code && status.message.starts_with(message)
    )
}

/// A script: open a stream, send `messages` (encoded protocol messages) on it, read, close.
pub(crate) fn seed(messages: &[&[u8]]) -> Vec<u8> {
    let op = |op| weighted_byte(&OPS, op);
    let mut writer = Writer::default();
    // Opened without a registration of its own: the messages bring theirs.
    writer.byte(op(Op::Open)).byte(0).byte(99);
    for message in messages {
        writer.byte(op(Op::Message)).byte(0).chunk(message);
        writer.byte(op(Op::Sleep)).byte(0).byte(3);
        writer.byte(op(Op::Read)).byte(0);
    }
    writer.byte(op(Op::Sleep)).byte(0).byte(4);
    writer.byte(op(Op::Read)).byte(0);
    writer.byte(op(Op::CloseSend)).byte(0);
    writer.finish()
}
