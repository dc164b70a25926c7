//! The processor client against a scripted processor that the test drives message by message,
//! over real gRPC on 127.0.0.1.
//!
//! These run on the real clock: a paused clock moves whenever every task waits, including
//! while bytes cross the loopback interface, which would fire keepalive and allocation timeouts
//! in the middle of an exchange. Nothing here waits for a fixed time; waits are for events.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering::SeqCst},
    },
    time::Duration,
};

use agones_processor::{
    AllocationRequest, AllocationResponse, HEALTH_SERVICE_NAME, ProcessorClient,
    client::Error,
    proto::{
        BatchRequest, BatchResponse, ProcessorMessage, PullRequest, ResponseWrapper,
        processor_message::Payload,
        processor_server::{Processor, ProcessorServer},
        response_wrapper,
    },
};
use tokio::{net::TcpListener, sync::mpsc, task::JoinHandle};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming, codegen::http};
use tonic_health::ServingStatus;

/// A processor that hands every registered stream to the test.
struct Scripted {
    streams: mpsc::UnboundedSender<Stream>,
}

/// One registered client stream, driven by the test.
struct Stream {
    client_id: String,
    inbound: Streaming<ProcessorMessage>,
    outbound: mpsc::Sender<Result<ProcessorMessage, Status>>,
}

#[tonic::async_trait]
impl Processor for Scripted {
    type StreamBatchesStream = ReceiverStream<Result<ProcessorMessage, Status>>;

    async fn stream_batches(
        &self,
        request: Request<Streaming<ProcessorMessage>>,
    ) -> Result<Response<Self::StreamBatchesStream>, Status> {
        let mut inbound = request.into_inner();
        let registration = inbound.message().await?.expect("a registration");
        assert!(
            registration.payload.is_none(),
            "the first message registers"
        );
        let (outbound, receiver) = mpsc::channel(1024);
        let stream = Stream {
            client_id: registration.client_id,
            inbound,
            outbound,
        };
        self.streams.send(stream).expect("test is listening");
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

impl Stream {
    async fn send(&self, payload: Payload) {
        let message = ProcessorMessage {
            client_id: self.client_id.clone(),
            payload: Some(payload),
        };
        self.outbound.send(Ok(message)).await.expect("stream open");
    }

    async fn pull(&self) {
        self.send(Payload::Pull(PullRequest {
            message: "pull".into(),
        }))
        .await;
    }

    /// The next batch the client sends.
    async fn batch(&mut self) -> BatchRequest {
        match self
            .inbound
            .message()
            .await
            .expect("stream ok")
            .expect("stream open")
            .payload
        {
            Some(Payload::BatchRequest(batch)) => batch,
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    /// Pulls and returns the batch the client answers with.
    async fn pull_batch(&mut self) -> BatchRequest {
        self.pull().await;
        self.batch().await
    }

    /// Answers every request of `batch` with a game server named after its namespace.
    async fn answer(&self, batch: &BatchRequest) {
        let responses = batch
            .requests
            .iter()
            .map(|wrapper| ResponseWrapper {
                request_id: wrapper.request_id.clone(),
                result: Some(response_wrapper::Result::Response(AllocationResponse {
                    game_server_name: namespace(wrapper.request.as_ref().unwrap()),
                    ..Default::default()
                })),
            })
            .collect();
        let batch_id = batch.batch_id.clone();
        self.send(Payload::BatchResponse(BatchResponse {
            batch_id,
            responses,
        }))
        .await;
    }

    /// Ends the stream with an error, as a crashing processor would.
    async fn kill(self) {
        self.outbound
            .send(Err(Status::unavailable("processor going away")))
            .await
            .unwrap();
    }
}

fn namespace(request: &AllocationRequest) -> String {
    request.namespace.clone()
}

struct Harness {
    address: SocketAddr,
    streams: mpsc::UnboundedReceiver<Stream>,
    _server: JoinHandle<()>,
}

impl Harness {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status(HEALTH_SERVICE_NAME, ServingStatus::Serving)
            .await;
        let (streams, receiver) = mpsc::unbounded_channel();
        let server = tonic::transport::Server::builder()
            .add_service(health)
            .add_service(ProcessorServer::new(Scripted { streams }))
            .serve_with_incoming(agones_processor::server::incoming(listener));
        let server = tokio::spawn(async move { server.await.unwrap() });
        Self {
            address,
            streams: receiver,
            _server: server,
        }
    }

    fn client(&self) -> agones_processor::client::Builder {
        ProcessorClient::builder(format!("http://{}", self.address))
            .client_id("allocator-0")
            .reconnect_interval(Duration::from_millis(100))
    }

    async fn stream(&mut self) -> Stream {
        self.streams.recv().await.expect("a client registers")
    }
}

fn request(namespace: impl Into<String>) -> AllocationRequest {
    AllocationRequest {
        namespace: namespace.into(),
        ..Default::default()
    }
}

/// Calls `client` in a task of its own with a request in `namespace`.
fn spawn_call(
    client: &ProcessorClient,
    namespace: String,
) -> JoinHandle<Result<AllocationResponse, Error>> {
    tokio::spawn(client.clone().allocate_owned(request(namespace)))
}

/// Starts `count` calls named `prefix-i` and waits until all are queued.
async fn start_calls(
    client: &ProcessorClient,
    prefix: &str,
    count: usize,
) -> Vec<JoinHandle<Result<AllocationResponse, Error>>> {
    let queued_before = client.stats().queued;
    let calls = (0..count)
        .map(|i| spawn_call(client, format!("{prefix}-{i}")))
        .collect();
    while client.stats().queued < queued_before + count {
        tokio::task::yield_now().await;
    }
    calls
}

fn names(batch: &BatchRequest) -> Vec<String> {
    batch
        .requests
        .iter()
        .map(|w| namespace(w.request.as_ref().unwrap()))
        .collect()
}

#[tokio::test]
async fn registers_with_its_client_id() {
    let mut harness = Harness::start().await;
    let _client = harness.client().spawn().unwrap();
    assert_eq!(harness.stream().await.client_id, "allocator-0");
}

#[tokio::test]
async fn empty_client_id_registers_a_random_uuid() {
    let mut harness = Harness::start().await;
    let client = harness.client().client_id("").spawn().unwrap();
    let id = harness.stream().await.client_id;
    assert_eq!(id, client.client_id());
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id} is a UUID");
}

#[tokio::test]
async fn each_pull_takes_at_most_max_batch_size_oldest_first() {
    let mut harness = Harness::start().await;
    let client = harness
        .client()
        .max_batch_size(10)
        .buffer_size(32)
        .spawn()
        .unwrap();
    let mut stream = harness.stream().await;

    // 25 calls: 10 fit the queue, the rest wait in the buffer until pulls make room.
    let calls: Vec<_> = (0..25)
        .map(|i| spawn_call(&client, format!("r-{i:02}")))
        .collect();
    while client.stats().queued < 10 {
        tokio::task::yield_now().await;
    }

    let mut sizes = Vec::new();
    let mut order = Vec::new();
    while order.len() < 25 {
        let batch = stream.pull_batch().await;
        sizes.push(batch.requests.len());
        order.extend(names(&batch));
        stream.answer(&batch).await;
        // Let the buffer refill the queue before the next pull.
        while client.stats().queued < (25 - order.len()).min(10) {
            tokio::task::yield_now().await;
        }
    }
    assert_eq!(sizes, [10, 10, 5]);
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(
        order[..10],
        sorted[..10],
        "the first batch holds the oldest ten"
    );
    for call in calls {
        call.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn empty_queue_sends_nothing_on_pull() {
    let mut harness = Harness::start().await;
    let client = harness.client().spawn().unwrap();
    let mut stream = harness.stream().await;

    stream.pull().await;
    let calls = start_calls(&client, "after", 1).await;
    let batch = stream.pull_batch().await;
    assert_eq!(
        names(&batch),
        ["after-0"],
        "the first pull sent no empty batch"
    );
    stream.answer(&batch).await;
    assert_eq!(
        calls
            .into_iter()
            .next()
            .unwrap()
            .await
            .unwrap()
            .unwrap()
            .game_server_name,
        "after-0"
    );
}

#[tokio::test]
async fn call_dropped_before_the_pull_is_never_sent() {
    let mut harness = Harness::start().await;
    let client = harness.client().spawn().unwrap();
    let mut stream = harness.stream().await;

    let mut calls = start_calls(&client, "r", 3).await;
    calls.remove(1).abort();
    while client.stats().queued > 2 {
        tokio::task::yield_now().await;
    }

    let batch = stream.pull_batch().await;
    assert_eq!(names(&batch), ["r-0", "r-2"]);
    assert_eq!(client.stats().abandoned, 1);
}

#[tokio::test]
async fn outer_timeout_drops_the_call_from_the_queue() {
    let mut harness = Harness::start().await;
    let client = harness.client().spawn().unwrap();
    let mut stream = harness.stream().await;

    let gave_up = tokio::time::timeout(
        Duration::from_millis(50),
        client.allocate(request("impatient")),
    )
    .await;
    assert!(gave_up.is_err(), "nobody pulled within 50ms");
    let calls = start_calls(&client, "patient", 1).await;

    let batch = stream.pull_batch().await;
    assert_eq!(names(&batch), ["patient-0"]);
    stream.answer(&batch).await;
    calls.into_iter().next().unwrap().await.unwrap().unwrap();
}

#[tokio::test]
async fn broken_stream_fails_sent_calls_at_once_and_keeps_queued_ones() {
    let mut harness = Harness::start().await;
    let timeout = Duration::from_secs(30);
    let client = harness
        .client()
        .allocation_timeout(timeout)
        .max_batch_size(2)
        .spawn()
        .unwrap();
    let mut stream = harness.stream().await;

    let sent = start_calls(&client, "sent", 2).await;
    let batch = stream.pull_batch().await;
    assert_eq!(batch.requests.len(), 2);
    let waiting = start_calls(&client, "waiting", 2).await;

    let broke = tokio::time::Instant::now();
    stream.kill().await;
    for call in sent {
        let error = call.await.unwrap().unwrap_err();
        assert!(matches!(error, Error::OutcomeUnknown), "{error:?}");
        assert_eq!(tonic::Status::from(error).code(), Code::Unavailable);
    }
    assert!(
        broke.elapsed() < timeout / 10,
        "failed well before the timeout"
    );

    let mut next = harness.stream().await;
    let batch = next.pull_batch().await;
    assert_eq!(names(&batch), ["waiting-0", "waiting-1"]);
    next.answer(&batch).await;
    for call in waiting {
        call.await.unwrap().expect("succeeds on the next stream");
    }
    assert_eq!(client.stats().connects, 2);
}

#[tokio::test]
async fn bursts_of_pulls_and_unexpected_payloads_do_not_break_the_stream() {
    let mut harness = Harness::start().await;
    let client = harness.client().spawn().unwrap();
    let mut stream = harness.stream().await;

    for _ in 0..100 {
        stream.pull().await;
    }
    stream
        .send(Payload::BatchRequest(BatchRequest::default()))
        .await;
    let unknown = ResponseWrapper {
        request_id: "no-such-request".into(),
        result: None,
    };
    stream
        .send(Payload::BatchResponse(BatchResponse {
            batch_id: "x".into(),
            responses: vec![unknown],
        }))
        .await;
    let garbage = ProcessorMessage {
        client_id: "allocator-0".into(),
        payload: None,
    };
    stream.outbound.send(Ok(garbage)).await.unwrap();

    let calls = start_calls(&client, "after-burst", 1).await;
    let batch = stream.pull_batch().await;
    assert_eq!(names(&batch), ["after-burst-0"]);
    stream.answer(&batch).await;
    calls.into_iter().next().unwrap().await.unwrap().unwrap();
    assert_eq!(client.stats().connects, 1, "the stream survived");
}

#[tokio::test]
async fn answer_with_neither_result_is_internal_and_duplicates_are_dropped() {
    let mut harness = Harness::start().await;
    let client = harness.client().spawn().unwrap();
    let mut stream = harness.stream().await;

    let calls = start_calls(&client, "r", 1).await;
    let batch = stream.pull_batch().await;
    let empty = ResponseWrapper {
        request_id: batch.requests[0].request_id.clone(),
        result: None,
    };
    let answers = BatchResponse {
        batch_id: batch.batch_id.clone(),
        responses: vec![empty],
    };
    stream.send(Payload::BatchResponse(answers)).await;
    stream.answer(&batch).await; // a duplicate answer for the same request

    let error = calls
        .into_iter()
        .next()
        .unwrap()
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(error.code(), Code::Internal, "{error}");
    assert_eq!(client.stats().answers, 1, "the duplicate was dropped");
}

#[tokio::test]
async fn allocation_errors_keep_code_and_message() {
    let mut harness = Harness::start().await;
    let client = harness.client().spawn().unwrap();
    let mut stream = harness.stream().await;

    let calls = start_calls(&client, "r", 1).await;
    let batch = stream.pull_batch().await;
    let refused = ResponseWrapper {
        request_id: batch.requests[0].request_id.clone(),
        result: Some(response_wrapper::Result::Error(tonic_types::Status {
            code: Code::ResourceExhausted as i32,
            message: "no game server matched".into(),
            details: vec![],
        })),
    };
    let answers = BatchResponse {
        batch_id: batch.batch_id,
        responses: vec![refused],
    };
    stream.send(Payload::BatchResponse(answers)).await;

    let status = tonic::Status::from(
        calls
            .into_iter()
            .next()
            .unwrap()
            .await
            .unwrap()
            .unwrap_err(),
    );
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(status.message(), "no game server matched");
}

#[tokio::test]
async fn processor_not_serving_is_not_connected_to() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(HEALTH_SERVICE_NAME, ServingStatus::NotServing)
        .await;
    let (streams, mut registered) = mpsc::unbounded_channel();
    let checks = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&checks);
    let server = tonic::transport::Server::builder()
        .layer(tower::layer::layer_fn(move |service| CountHealthChecks {
            service,
            checks: Arc::clone(&counted),
        }))
        .add_service(health)
        .add_service(ProcessorServer::new(Scripted { streams }))
        .serve_with_incoming(agones_processor::server::incoming(listener));
    tokio::spawn(server);

    let client = ProcessorClient::builder(format!("http://{address}"))
        .reconnect_interval(Duration::from_millis(10))
        .max_reconnect_interval(Duration::from_millis(20))
        .spawn()
        .unwrap();
    while checks.load(SeqCst) < 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        registered.try_recv().is_err(),
        "no stream opened while NOT_SERVING"
    );
    assert_eq!(client.stats().connects, 0);

    reporter
        .set_service_status(HEALTH_SERVICE_NAME, ServingStatus::Serving)
        .await;
    let stream = tokio::time::timeout(Duration::from_secs(10), registered.recv()).await;
    assert!(stream.unwrap().is_some(), "connects once SERVING");
}

/// Counts the health checks a server receives.
#[derive(Clone)]
struct CountHealthChecks<S> {
    service: S,
    checks: Arc<AtomicUsize>,
}

impl<S, B> tower::Service<http::Request<B>> for CountHealthChecks<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.service.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> S::Future {
        if request.uri().path() == "/grpc.health.v1.Health/Check" {
            self.checks.fetch_add(1, SeqCst);
        }
        self.service.call(request)
    }
}

#[tokio::test]
async fn shutdown_signal_fails_queued_calls_and_refuses_new_ones() {
    let mut harness = Harness::start().await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let client = harness
        .client()
        .shutdown_signal(async move {
            let _ = stopped.await;
        })
        .spawn()
        .unwrap();
    let _stream = harness.stream().await;

    let calls = start_calls(&client, "r", 3).await;
    stop.send(()).unwrap();
    for call in calls {
        let error = call.await.unwrap().unwrap_err();
        assert!(matches!(error, Error::Closed), "{error:?}");
        assert_eq!(error.code(), Code::Unavailable);
    }
    let error = client.allocate(request("late")).await.unwrap_err();
    assert_eq!(error.code(), Code::Unavailable, "{error}");
}

#[tokio::test]
async fn load_shedding_refuses_at_once_when_full() {
    let mut harness = Harness::start().await;
    let client = harness
        .client()
        .max_batch_size(1)
        .buffer_size(1)
        .load_shed(true)
        .allocation_timeout(Duration::from_secs(60))
        .spawn()
        .unwrap();
    let _stream = harness.stream().await;

    // Room for three: one queued, one held by the buffer's worker, one in the buffer. Nobody
    // pulls, so the first call to end is a refused one.
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..5 {
        let client = client.clone();
        calls.spawn(async move { client.allocate(request(format!("r-{i}"))).await });
    }
    let first = tokio::time::timeout(Duration::from_secs(30), calls.join_next()).await;
    let error = first
        .expect("a call ended before its timeout")
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(matches!(error, Error::Overloaded), "{error:?}");
    assert_eq!(tonic::Status::from(error).code(), Code::ResourceExhausted);
}

#[tokio::test]
async fn ten_thousand_callers_against_a_small_queue_each_end_once() {
    let mut harness = Harness::start().await;
    let client = harness
        .client()
        .max_batch_size(50)
        .buffer_size(100)
        .spawn()
        .unwrap();
    let mut stream = harness.stream().await;

    let calls: Vec<_> = (0..10_000)
        .map(|i| spawn_call(&client, format!("r-{i}")))
        .collect();

    let mut answered = 0;
    while answered < 10_000 {
        tokio::task::yield_now().await;
        let stats = client.stats();
        assert!(
            stats.queued <= 50,
            "the queue stays bounded: {}",
            stats.queued
        );
        let batch = stream.pull_batch().await;
        answered += batch.requests.len();
        stream.answer(&batch).await;
    }
    let mut seen = std::collections::HashSet::new();
    for (i, call) in calls.into_iter().enumerate() {
        let name = call.await.unwrap().unwrap().game_server_name;
        assert_eq!(name, format!("r-{i}"), "each call gets its own answer");
        assert!(seen.insert(name));
    }
    assert_eq!(client.stats().answers, 10_000);
}

/// A request carrying `size` bytes of annotation, to fill transport windows quickly.
fn heavy_request(namespace: String, size: usize) -> AllocationRequest {
    AllocationRequest {
        namespace,
        metadata: Some(agones_processor::proto::MetaPatch {
            annotations: [("blob".to_owned(), "x".repeat(size))].into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_processor_that_stops_reading_does_not_stop_answers() {
    let mut harness = Harness::start().await;
    let client = harness
        .client()
        .max_batch_size(100)
        .buffer_size(4096)
        .allocation_timeout(Duration::from_secs(60))
        .spawn()
        .unwrap();
    let mut stream = harness.stream().await;
    let calls: Vec<_> = (0..3000)
        .map(|i| {
            let call = client
                .clone()
                .allocate_owned(heavy_request(format!("r-{i}"), 10_000));
            tokio::spawn(call)
        })
        .collect();
    while client.stats().queued < 100 {
        tokio::task::yield_now().await;
    }
    let first = stream.pull_batch().await;

    // The processor stops reading and keeps pulling: the client's batches (1 MB each) fill
    // the transport's windows and then the client's own outbound queue.
    // Each pull waits until the client took the previous one and its queue refilled, so that
    // every pull finds a full batch; a client stuck on sending takes no more pulls.
    let refilled = |pulls| {
        let stats = client.stats();
        stats.pulls >= pulls && stats.queued >= 100
    };
    for pulled in 2..42 {
        stream.pull().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while !refilled(pulled) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    stream.answer(&first).await;

    // The answers come after all those pulls; a client that blocks on sending a batch never
    // reads them.
    let mut calls = calls.into_iter();
    for call in calls.by_ref().take(first.requests.len()) {
        let answered = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .expect("the answer is read while the processor does not read")
            .unwrap();
        assert!(answered.is_ok(), "{answered:?}");
    }
    assert!(client.stats().pulls_skipped > 0, "{:?}", client.stats());
    drop(stream);
    calls.for_each(|call| call.abort());
}
