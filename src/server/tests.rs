//! The handler over real gRPC: a tonic server on 127.0.0.1, port 0, and raw processor clients.

use std::net::SocketAddr;
use std::time::Duration;

use prost::Message as _;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Request, Status, Streaming};
use tonic_health::ServingStatus;
use tonic_health::pb::health_check_response::ServingStatus as WireServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::Health;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::{HealthReporter, HealthService};
use tower::{BoxError, Service};

use super::{Builder, HEALTH_SERVICE_NAME, ProcessorHandler};
use crate::allocator::AllocationError;
use crate::proto::processor_client::ProcessorClient;
use crate::proto::processor_message::Payload;
use crate::proto::response_wrapper::Result as Answer;
use crate::proto::{
    AllocationRequest, AllocationResponse, BatchRequest, BatchResponse, ProcessorMessage,
    PullRequest, RequestWrapper,
};

const INTERVAL: Duration = Duration::from_millis(200);

/// Allocates a game server named after the request's namespace; namespace "none" matches
/// nothing and "contended" fails with `Aborted`.
fn allocator()
-> impl Service<AllocationRequest, Response = AllocationResponse, Error = BoxError, Future: Send>
+ Clone
+ Send
+ Sync
+ 'static {
    tower::service_fn(|request: AllocationRequest| async move {
        match request.namespace.as_str() {
            "none" => Err(AllocationError::Unallocated.into()),
            "contended" => Err(Status::aborted("game server contended").into()),
            namespace => Ok(AllocationResponse {
                game_server_name: format!("gs-{namespace}"),
                ..Default::default()
            }),
        }
    })
}

/// Serves `builder`'s handler and a health service on a fresh loopback port.
async fn serve<A: Clone>(builder: Builder<A>) -> (ProcessorHandler<A>, SocketAddr)
where
    ProcessorHandler<A>: crate::proto::processor_server::Processor,
{
    let (reporter, health) = tonic_health::server::health_reporter();
    let handler = builder.health_reporter(reporter).build();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(handler.clone().into_server())
        .serve_with_incoming(super::incoming(listener));
    tokio::spawn(server);
    (handler, addr)
}

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn registration(client_id: &str) -> ProcessorMessage {
    ProcessorMessage {
        client_id: client_id.into(),
        payload: None,
    }
}

fn batch(client_id: &str, batch_id: &str, namespaces: &[&str]) -> ProcessorMessage {
    let requests = namespaces
        .iter()
        .enumerate()
        .map(|(i, namespace)| RequestWrapper {
            request_id: format!("{batch_id}-r{i}"),
            request: Some(AllocationRequest {
                namespace: (*namespace).into(),
                ..Default::default()
            }),
        })
        .collect();
    ProcessorMessage {
        client_id: client_id.into(),
        payload: Some(Payload::BatchRequest(BatchRequest {
            batch_id: batch_id.into(),
            requests,
        })),
    }
}

/// A raw processor client: what it sends and what it receives, nothing more.
struct RawClient {
    outbound: mpsc::Sender<ProcessorMessage>,
    inbound: Streaming<ProcessorMessage>,
}

impl RawClient {
    /// Opens a stream that starts with `first`.
    async fn open(addr: SocketAddr, first: Vec<ProcessorMessage>) -> Result<Self, Status> {
        let mut client = ProcessorClient::new(channel(addr).await);
        let (outbound, receiver) = mpsc::channel(16);
        // Sent before the call: the server answers with headers only once it has read the
        // registration.
        for message in first {
            outbound.send(message).await.unwrap();
        }
        let inbound = client
            .stream_batches(ReceiverStream::new(receiver))
            .await?
            .into_inner();
        Ok(Self { outbound, inbound })
    }

    async fn register(addr: SocketAddr, client_id: &str) -> Self {
        Self::open(addr, vec![registration(client_id)])
            .await
            .unwrap()
    }

    async fn send(&self, message: ProcessorMessage) {
        self.outbound.send(message).await.unwrap();
    }

    async fn next(&mut self) -> ProcessorMessage {
        self.inbound
            .message()
            .await
            .expect("stream failed")
            .expect("stream ended")
    }

    async fn next_pull(&mut self) -> (String, PullRequest) {
        loop {
            let message = self.next().await;
            if let Some(Payload::Pull(pull)) = message.payload {
                return (message.client_id, pull);
            }
        }
    }

    /// The next batch response, skipping pulls.
    async fn next_batch_response(&mut self) -> (String, BatchResponse) {
        loop {
            let message = self.next().await;
            match message.payload {
                Some(Payload::Pull(_)) => continue,
                Some(Payload::BatchResponse(response)) => return (message.client_id, response),
                other => panic!("unexpected message from the server: {other:?}"),
            }
        }
    }

    /// How the stream ended, skipping the messages before the end.
    async fn end(&mut self) -> Result<(), Status> {
        while self.inbound.message().await?.is_some() {}
        Ok(())
    }
}

fn game_server(answer: &Option<Answer>) -> Option<&str> {
    match answer {
        Some(Answer::Response(response)) => Some(&response.game_server_name),
        _ => None,
    }
}

fn error(answer: &Option<Answer>) -> Option<(Code, &str)> {
    match answer {
        Some(Answer::Error(status)) => Some((Code::from_i32(status.code), &status.message)),
        _ => None,
    }
}

#[tokio::test(start_paused = true)]
async fn empty_client_id_is_invalid_argument() {
    let (handler, addr) = serve(ProcessorHandler::builder(allocator())).await;

    let status = RawClient::open(addr, vec![registration("")])
        .await
        .err()
        .expect("registration refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "client id is required");
    assert!(handler.connected_clients().is_empty());
}

#[tokio::test(start_paused = true)]
async fn pulls_reach_every_registered_client() {
    let (handler, addr) = serve(ProcessorHandler::builder(allocator())).await;
    let mut a = RawClient::register(addr, "a").await;
    let mut b = RawClient::register(addr, "b").await;
    assert_eq!(handler.connected_clients(), ["a", "b"]);

    for (client, id) in [(&mut a, "a"), (&mut b, "b")] {
        let (client_id, pull) = client.next_pull().await;
        assert_eq!(client_id, id);
        assert_eq!(pull.message, "pull");
    }
}

#[tokio::test(start_paused = true)]
async fn one_batch_gets_one_answer_per_request_in_order() {
    let (handler, addr) = serve(ProcessorHandler::builder(allocator())).await;
    let mut client = RawClient::register(addr, "a").await;

    client.send(batch("a", "b1", &["x", "none", "y"])).await;
    let (client_id, response) = client.next_batch_response().await;

    assert_eq!(client_id, "a");
    assert_eq!(response.batch_id, "b1");
    let ids: Vec<_> = response
        .responses
        .iter()
        .map(|r| r.request_id.as_str())
        .collect();
    assert_eq!(ids, ["b1-r0", "b1-r1", "b1-r2"]);
    assert_eq!(game_server(&response.responses[0].result), Some("gs-x"));
    assert_eq!(
        error(&response.responses[1].result),
        Some((Code::ResourceExhausted, "no game server matched"))
    );
    assert_eq!(game_server(&response.responses[2].result), Some("gs-y"));
    assert_eq!(handler.batches_received(), 1);
    assert_eq!(handler.requests_received(), 3);
}

#[tokio::test(start_paused = true)]
async fn allocator_error_code_and_message_reach_the_answer() {
    let (_handler, addr) = serve(ProcessorHandler::builder(allocator())).await;
    let mut client = RawClient::register(addr, "a").await;

    client.send(batch("a", "b1", &["contended"])).await;
    let (_, response) = client.next_batch_response().await;

    assert_eq!(
        error(&response.responses[0].result),
        Some((Code::Aborted, "game server contended"))
    );
}

#[tokio::test(start_paused = true)]
async fn unallocated_code_comes_from_the_http_status() {
    let builder = ProcessorHandler::builder(allocator()).unallocated_http_status(503);
    let (_handler, addr) = serve(builder).await;
    let mut client = RawClient::register(addr, "a").await;

    client.send(batch("a", "b1", &["none"])).await;
    let (_, response) = client.next_batch_response().await;

    assert_eq!(
        error(&response.responses[0].result),
        Some((Code::Unavailable, "no game server matched"))
    );
}

#[tokio::test(start_paused = true)]
async fn registration_with_the_same_id_replaces_the_older_stream() {
    let (handler, addr) = serve(ProcessorHandler::builder(allocator())).await;
    let mut old = RawClient::register(addr, "a").await;
    old.next_pull().await;

    let mut new = RawClient::register(addr, "a").await;
    let status = old.end().await.expect_err("the older stream fails");
    assert_eq!(status.code(), Code::AlreadyExists);
    assert!(status.message().contains("replaced"), "{status:?}");

    // The older stream has cleaned up by now, and must not have removed the newer one.
    assert_eq!(handler.connected_clients(), ["a"]);
    new.next_pull().await;
    new.next_pull().await;
    new.send(batch("a", "b1", &["x"])).await;
    assert_eq!(new.next_batch_response().await.1.batch_id, "b1");
}

#[tokio::test(start_paused = true)]
async fn client_leaves_the_registry_when_its_stream_ends() {
    let (handler, addr) = serve(ProcessorHandler::builder(allocator())).await;
    let RawClient {
        outbound,
        mut inbound,
    } = RawClient::register(addr, "a").await;
    let mut other = RawClient::register(addr, "b").await;

    drop(outbound);
    while inbound.message().await.unwrap().is_some() {}

    assert_eq!(handler.connected_clients(), ["b"]);
    other.next_pull().await;
}

#[tokio::test(start_paused = true)]
async fn wrong_kind_messages_are_ignored() {
    let (handler, addr) = serve(ProcessorHandler::builder(allocator())).await;
    let mut client = RawClient::register(addr, "a").await;

    client
        .send(ProcessorMessage {
            client_id: "a".into(),
            payload: Some(Payload::Pull(PullRequest {
                message: "pull".into(),
            })),
        })
        .await;
    client
        .send(ProcessorMessage {
            client_id: "a".into(),
            payload: Some(Payload::BatchResponse(BatchResponse::default())),
        })
        .await;
    client.send(registration("a")).await;
    client.send(registration("someone-else")).await;
    client.send(batch("a", "b1", &["x"])).await;

    let (_, response) = client.next_batch_response().await;
    assert_eq!(response.batch_id, "b1");
    client.next_pull().await;
    assert_eq!(handler.connected_clients(), ["a"]);
    assert_eq!(handler.batches_received(), 1);
}

#[tokio::test(start_paused = true)]
async fn batch_before_registration_is_ignored() {
    let (handler, addr) = serve(ProcessorHandler::builder(allocator())).await;
    let first = vec![batch("a", "early", &["x"]), registration("a")];
    let mut client = RawClient::open(addr, first).await.unwrap();
    client.send(batch("a", "late", &["x"])).await;

    let (_, response) = client.next_batch_response().await;
    assert_eq!(response.batch_id, "late");
    assert_eq!(handler.batches_received(), 1);
}

#[tokio::test]
async fn wrapper_without_a_request_is_invalid_argument() {
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let counting = tower::service_fn(move |request: AllocationRequest| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            Ok::<_, BoxError>(AllocationResponse {
                game_server_name: format!("gs-{}", request.namespace),
                ..Default::default()
            })
        }
    });
    let (_handler, addr) = serve(ProcessorHandler::builder(counting)).await;
    let mut client = RawClient::register(addr, "a").await;
    let mut message = batch("a", "b1", &["x", "y"]);
    let Some(Payload::BatchRequest(request)) = &mut message.payload else {
        unreachable!("batch() makes a batch request");
    };
    request.requests[0].request = None;
    client.send(message).await;

    let (_, response) = client.next_batch_response().await;
    assert_eq!(
        error(&response.responses[0].result),
        Some((Code::InvalidArgument, "request is required"))
    );
    assert_eq!(game_server(&response.responses[1].result), Some("gs-y"));
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "only the present request reached the allocator"
    );
}

#[tokio::test]
async fn batch_with_another_client_id_is_refused_and_the_stream_goes_on() {
    let (handler, addr) = serve(ProcessorHandler::builder(allocator())).await;
    let mut victim = RawClient::register(addr, "victim").await;
    let mut liar = RawClient::register(addr, "liar").await;

    liar.send(batch("victim", "forged", &["x", "y"])).await;
    let (client_id, refused) = liar.next_batch_response().await;
    assert_eq!(client_id, "liar", "answered on the liar's own stream");
    assert_eq!(refused.batch_id, "forged");
    for answer in &refused.responses {
        assert_eq!(
            error(&answer.result),
            Some((
                Code::InvalidArgument,
                "batch client id differs from the stream's registered client id"
            ))
        );
    }
    assert_eq!(
        handler.batches_received(),
        0,
        "nothing reached the allocator"
    );

    // Both streams go on: the liar's next honest batch and the victim's own are answered.
    liar.send(batch("liar", "honest", &["x"])).await;
    let (_, honest) = liar.next_batch_response().await;
    assert_eq!(honest.batch_id, "honest");
    assert_eq!(game_server(&honest.responses[0].result), Some("gs-x"));
    victim.send(batch("victim", "own", &["z"])).await;
    let (_, own) = victim.next_batch_response().await;
    assert_eq!(
        own.batch_id, "own",
        "the forged batch never reached the victim"
    );
}

#[tokio::test]
async fn stream_that_does_not_register_in_time_ends_with_deadline_exceeded() {
    let timeout = Duration::from_millis(200);
    let builder = ProcessorHandler::builder(allocator()).registration_timeout(timeout);
    let (handler, addr) = serve(builder).await;

    // Silent, and talking without ever registering: both end.
    for first in [vec![], vec![batch("a", "early", &["x"])]] {
        let opened = tokio::time::timeout(Duration::from_secs(10), RawClient::open(addr, first));
        let status = opened
            .await
            .expect("an unregistered stream ends")
            .err()
            .expect("with an error");
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
        assert_eq!(status.message(), "no registration within 200ms");
    }
    assert_eq!(handler.open_streams(), 0);
    assert_eq!(handler.batches_received(), 0);

    let mut client = RawClient::register(addr, "a").await;
    client.next_pull().await;
    assert_eq!(handler.open_streams(), 1);
}

/// Sends raw bytes as messages and decodes what comes back as processor messages.
#[derive(Debug, Clone, Copy)]
struct RawBytesCodec;

impl Codec for RawBytesCodec {
    type Encode = Vec<u8>;
    type Decode = ProcessorMessage;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self {
        *self
    }

    fn decoder(&mut self) -> Self {
        *self
    }
}

impl Encoder for RawBytesCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        prost::bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl Decoder for RawBytesCodec {
    type Item = ProcessorMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<ProcessorMessage>, Status> {
        ProcessorMessage::decode(src)
            .map(Some)
            .map_err(|error| Status::internal(error.to_string()))
    }
}

#[tokio::test(start_paused = true)]
async fn garbage_ends_only_its_own_stream() {
    let (handler, addr) = serve(ProcessorHandler::builder(allocator())).await;
    let mut other = RawClient::register(addr, "other").await;

    let mut grpc = tonic::client::Grpc::new(channel(addr).await);
    grpc.ready().await.unwrap();
    let (outbound, receiver) = mpsc::channel(4);
    outbound
        .send(registration("garbled").encode_to_vec())
        .await
        .unwrap();
    let path = PathAndQuery::from_static("/allocation.Processor/StreamBatches");
    let request = Request::new(ReceiverStream::new(receiver));
    let mut inbound = grpc
        .streaming(request, path, RawBytesCodec)
        .await
        .unwrap()
        .into_inner();
    // A varint that never ends: no protobuf message decodes from it.
    outbound.send(vec![0xff; 11]).await.unwrap();

    let status = loop {
        match inbound.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the garbled stream ended without an error"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert_eq!(handler.connected_clients(), ["other"]);
    other.next_pull().await;
    other.send(batch("other", "b1", &["x"])).await;
    assert_eq!(other.next_batch_response().await.1.batch_id, "b1");
}

#[tokio::test(start_paused = true)]
async fn health_is_serving_over_grpc() {
    let (_handler, addr) = serve(ProcessorHandler::builder(allocator())).await;
    let mut health = HealthClient::new(channel(addr).await);
    let request = || HealthCheckRequest {
        service: HEALTH_SERVICE_NAME.into(),
    };

    // The pull loop reports as soon as it first runs; until then the service is unknown.
    let status = loop {
        match health.check(request()).await {
            Ok(response) => break response.into_inner().status(),
            Err(status) if status.code() == Code::NotFound => {
                tokio::time::sleep(INTERVAL).await;
            }
            Err(status) => panic!("health check failed: {status:?}"),
        }
    };
    assert_eq!(status, WireServingStatus::Serving);
}

#[tokio::test(start_paused = true)]
async fn health_follows_the_pull_loop() {
    let reporter = HealthReporter::new();
    reporter
        .set_service_status(HEALTH_SERVICE_NAME, ServingStatus::NotServing)
        .await;
    let service = HealthService::from_health_reporter(reporter.clone());
    let request = Request::new(HealthCheckRequest {
        service: HEALTH_SERVICE_NAME.into(),
    });
    let mut statuses = service.watch(request).await.unwrap().into_inner();
    assert_eq!(
        next_status(&mut statuses).await,
        WireServingStatus::NotServing
    );

    let handler = ProcessorHandler::builder(allocator())
        .health_reporter(reporter)
        .build();
    assert_eq!(next_status(&mut statuses).await, WireServingStatus::Serving);

    // Only the last clone stops the loop.
    let clone = handler.clone();
    drop(handler);
    tokio::time::sleep(INTERVAL * 3).await;
    let check = Request::new(HealthCheckRequest {
        service: HEALTH_SERVICE_NAME.into(),
    });
    let status = service.check(check).await.unwrap().into_inner().status();
    assert_eq!(status, WireServingStatus::Serving);
    drop(clone);
    assert_eq!(
        next_status(&mut statuses).await,
        WireServingStatus::NotServing
    );
}

async fn next_status(
    statuses: &mut (impl Stream<Item = Result<HealthCheckResponse, Status>> + Unpin),
) -> WireServingStatus {
    statuses.next().await.unwrap().unwrap().status()
}

async fn health_check(addr: SocketAddr) -> WireServingStatus {
    let mut health = HealthClient::new(channel(addr).await);
    let request = HealthCheckRequest {
        service: HEALTH_SERVICE_NAME.into(),
    };
    match health.check(request).await {
        Ok(response) => response.into_inner().status(),
        Err(status) if status.code() == Code::NotFound => WireServingStatus::Unknown,
        Err(status) => panic!("health check failed: {status:?}"),
    }
}

/// Checks health every pull interval until it reports `wanted`.
async fn wait_for_health(addr: SocketAddr, wanted: WireServingStatus) {
    while health_check(addr).await != wanted {
        tokio::time::sleep(INTERVAL).await;
    }
}

/// A batch whose requests have the given ids, all in namespace "x".
fn batch_with_ids(client_id: &str, batch_id: &str, ids: &[&str]) -> ProcessorMessage {
    let mut message = batch(client_id, batch_id, &vec!["x"; ids.len()]);
    if let Some(Payload::BatchRequest(batch)) = &mut message.payload {
        for (wrapper, id) in batch.requests.iter_mut().zip(ids) {
            wrapper.request_id = (*id).into();
        }
    }
    message
}

#[tokio::test(start_paused = true)]
async fn batch_rules_answer_every_request_in_the_same_response() {
    let builder = ProcessorHandler::builder(allocator()).max_batch_size(5);
    let (handler, addr) = serve(builder).await;
    let mut client = RawClient::register(addr, "a").await;

    let ids = ["r1", "r2", "r1", "", "r3", "r4", "r5"];
    client.send(batch_with_ids("a", "b1", &ids)).await;
    let (_, response) = client.next_batch_response().await;

    let got: Vec<_> = response
        .responses
        .iter()
        .map(|r| r.request_id.as_str())
        .collect();
    assert_eq!(got, ids);
    let codes: Vec<_> = response
        .responses
        .iter()
        .map(|r| error(&r.result).map_or(Code::Ok, |(code, _)| code))
        .collect();
    use Code::{InvalidArgument as Invalid, Ok, ResourceExhausted as Exhausted};
    assert_eq!(codes, [Ok, Ok, Invalid, Invalid, Ok, Exhausted, Exhausted]);
    assert_eq!(handler.answers(Code::Ok), 3);
    assert_eq!(handler.answers(Code::InvalidArgument), 2);
    assert_eq!(handler.answers(Code::ResourceExhausted), 2);
}

#[tokio::test(start_paused = true)]
async fn clients_beyond_the_limit_are_refused() {
    let (handler, addr) = serve(ProcessorHandler::builder(allocator()).max_clients(1)).await;
    let _a = RawClient::register(addr, "a").await;

    let status = RawClient::open(addr, vec![registration("b")])
        .await
        .err()
        .expect("a second client id is refused");
    assert_eq!(status.code(), Code::ResourceExhausted);
    let mut again = RawClient::register(addr, "a").await;
    again.next_pull().await;
    assert_eq!(handler.connected_clients(), ["a"]);
}

/// Names its game server with `namespace.len()` bytes when the namespace starts with "big".
fn big_allocator()
-> impl Service<AllocationRequest, Response = AllocationResponse, Error = BoxError, Future: Send>
+ Clone
+ Send
+ Sync
+ 'static {
    tower::service_fn(|request: AllocationRequest| async move {
        let name = if request.namespace.starts_with("big") {
            "g".repeat(256 * 1024)
        } else {
            format!("gs-{}", request.namespace)
        };
        Ok(AllocationResponse {
            game_server_name: name,
            ..Default::default()
        })
    })
}

#[tokio::test(start_paused = true)]
async fn a_client_that_does_not_read_does_not_slow_another_clients_answers() {
    let builder = ProcessorHandler::builder(big_allocator()).outbound_capacity(2);
    let (handler, addr) = serve(builder).await;
    // Never reads: megabytes of answers pile up in the transport, then in its queue.
    let stuck = RawClient::register(addr, "stuck").await;
    for i in 0..8 {
        stuck
            .send(batch("stuck", &format!("s{i}"), &["big"; 4]))
            .await;
    }
    let mut fast = RawClient::register(addr, "fast").await;

    // Pulls go on; the stuck client's are skipped once its queue is full.
    let mut pulls = 0;
    while handler.pulls_skipped() == 0 {
        fast.next_pull().await;
        pulls += 1;
        assert!(pulls < 100, "no pull to the stuck client was ever skipped");
    }
    for i in 0..3 {
        let batch_id = format!("f{i}");
        fast.send(batch("fast", &batch_id, &["x"])).await;
        let (_, response) = fast.next_batch_response().await;
        assert_eq!(response.batch_id, batch_id);
        assert_eq!(game_server(&response.responses[0].result), Some("gs-x"));
    }
    assert_eq!(handler.connected_clients(), ["fast", "stuck"]);
}

#[tokio::test(start_paused = true)]
async fn leadership_gates_pulls_and_health() {
    let (leading, leadership) = tokio::sync::watch::channel(false);
    let builder = ProcessorHandler::builder(allocator()).leadership(leadership);
    let (handler, addr) = serve(builder).await;
    let mut client = RawClient::register(addr, "a").await;

    // Not leading: no pulls, NOT_SERVING.
    wait_for_health(addr, WireServingStatus::NotServing).await;
    tokio::time::sleep(INTERVAL * 5).await;
    assert_eq!(handler.pulls_sent(), 0);

    // Leading: pulls and SERVING, reported before the first pull.
    leading.send_replace(true);
    client.next_pull().await;
    assert_eq!(health_check(addr).await, WireServingStatus::Serving);

    // Not leading again.
    leading.send_replace(false);
    wait_for_health(addr, WireServingStatus::NotServing).await;
    let sent = handler.pulls_sent();
    tokio::time::sleep(INTERVAL * 5).await;
    assert_eq!(handler.pulls_sent(), sent);
}

type MockAllocator = tower_test::mock::Mock<AllocationRequest, AllocationResponse>;
type MockHandle = tower_test::mock::Handle<AllocationRequest, AllocationResponse>;

#[tokio::test(start_paused = true)]
async fn losing_leadership_keeps_answering_batches_in_progress() {
    let (allocator, mut calls): (MockAllocator, MockHandle) = tower_test::mock::pair();
    let (leading, leadership) = tokio::sync::watch::channel(true);
    let builder = ProcessorHandler::builder(allocator).leadership(leadership);
    let (_handler, addr) = serve(builder).await;
    let mut client = RawClient::register(addr, "a").await;
    client.next_pull().await;

    client.send(batch("a", "b1", &["x"])).await;
    let (_, reply) = calls.next_request().await.unwrap();
    leading.send_replace(false);
    wait_for_health(addr, WireServingStatus::NotServing).await;
    reply.send_response(AllocationResponse {
        game_server_name: "gs-late".into(),
        ..Default::default()
    });

    let (_, response) = client.next_batch_response().await;
    assert_eq!(game_server(&response.responses[0].result), Some("gs-late"));
}

// On the real clock: the shutdown's grace period is a timer, which a paused clock would fire
// while the answer crosses the loopback interface.
#[tokio::test]
async fn shutdown_delivers_in_flight_answers_before_the_streams_end() {
    let (allocator, mut calls): (MockAllocator, MockHandle) = tower_test::mock::pair();
    let builder = ProcessorHandler::builder(allocator).pull_interval(Duration::from_millis(20));
    let (handler, addr) = serve(builder).await;
    let mut client = RawClient::register(addr, "a").await;
    wait_for_health(addr, WireServingStatus::Serving).await;
    client.send(batch("a", "b1", &["x"])).await;
    let (_, reply) = calls.next_request().await.unwrap();

    let shutdown = tokio::spawn({
        let handler = handler.clone();
        async move { handler.shutdown(Duration::from_secs(30)).await }
    });
    wait_for_health(addr, WireServingStatus::NotServing).await;
    let status = RawClient::open(addr, vec![registration("late")])
        .await
        .err()
        .expect("registration refused while shutting down");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        !shutdown.is_finished(),
        "shutdown did not wait for the batch"
    );

    reply.send_response(AllocationResponse {
        game_server_name: "gs-last".into(),
        ..Default::default()
    });
    let (_, response) = client.next_batch_response().await;
    assert_eq!(game_server(&response.responses[0].result), Some("gs-last"));
    let end = client
        .end()
        .await
        .expect_err("the stream ends with a status");
    assert_eq!(end.code(), Code::Unavailable);
    assert!(
        shutdown.await.unwrap(),
        "shutdown finished within its grace period"
    );
    assert!(handler.connected_clients().is_empty());
}

#[tokio::test(start_paused = true)]
async fn adaptive_pulling_pulls_again_right_after_an_answer() {
    let interval = Duration::from_secs(3600);
    let builder = ProcessorHandler::builder(allocator())
        .pull_interval(interval)
        .adaptive_pulling(true);
    let (_handler, addr) = serve(builder).await;
    let mut client = RawClient::register(addr, "a").await;
    client.next_pull().await;

    let started = tokio::time::Instant::now();
    client.send(batch("a", "b1", &["x"])).await;
    let (_, response) = client.next_batch_response().await;
    assert_eq!(response.batch_id, "b1");
    let next = client.next().await;
    assert!(matches!(next.payload, Some(Payload::Pull(_))), "{next:?}");
    assert!(
        started.elapsed() < interval,
        "the pull waited for the next tick"
    );
}

#[tokio::test(start_paused = true)]
async fn without_adaptive_pulling_the_next_pull_waits_for_the_tick() {
    let interval = Duration::from_secs(3600);
    let builder = ProcessorHandler::builder(allocator()).pull_interval(interval);
    let (_handler, addr) = serve(builder).await;
    let mut client = RawClient::register(addr, "a").await;
    client.next_pull().await;

    let started = tokio::time::Instant::now();
    client.send(batch("a", "b1", &["x"])).await;
    client.next_batch_response().await;
    client.next_pull().await;
    assert!(started.elapsed() >= interval / 2, "{:?}", started.elapsed());
}

#[tokio::test]
async fn batches_beyond_the_per_client_limit_are_refused_without_allocating() {
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let hangs = tower::service_fn(move |_: AllocationRequest| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::future::pending::<Result<AllocationResponse, BoxError>>()
    });
    let (_handler, addr) = serve(ProcessorHandler::builder(hangs).max_batches_per_client(2)).await;
    let mut client = RawClient::register(addr, "flood").await;

    for batch_id in ["b1", "b2", "b3"] {
        client.send(batch("flood", batch_id, &["x", "y"])).await;
    }
    let (_, refused) = client.next_batch_response().await;

    assert_eq!(
        refused.batch_id, "b3",
        "the two batches in flight are still allocating"
    );
    assert_eq!(refused.responses.len(), 2, "every request answered");
    for answer in &refused.responses {
        assert_eq!(
            error(&answer.result),
            Some((
                Code::ResourceExhausted,
                "too many batches in flight for this client"
            ))
        );
    }
    // b1 and b2 reach the allocator in their own time; b3 never does.
    let reached = || calls.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(10), async {
        while reached() < 4 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the two batches in flight reach the allocator");
    assert_eq!(reached(), 4, "b3 never reached it");
}
