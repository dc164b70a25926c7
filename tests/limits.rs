//! Every limit of the client and the server, over real gRPC on 127.0.0.1: going over it gives
//! a clear status to the offender alone, and everyone else keeps working.
//!
//! | limit | side | offender sees |
//! | --- | --- | --- |
//! | `max_message_size` | server | its stream ends with `OutOfRange` |
//! | `max_message_size` | client | the oversized call fails at once (`TooLarge`); batches are cut below the limit |
//! | `max_message_size` | client, inbound | the stream breaks (`OutOfRange`); calls in flight end `OutcomeUnknown`; it reconnects |
//! | `max_clients` | server | registration refused with `ResourceExhausted` |
//! | `max_batch_size` | server | requests beyond it answered `ResourceExhausted` |
//! | `max_batches_per_client` | server | further batches answered `ResourceExhausted` |
//! | `outbound_capacity` | server | pulls skipped while it does not read; answers wait |
//! | queue and `buffer_size` | client | `Overloaded` with load shedding, otherwise not ready |
//!
//! The last test opens and abandons thousands of streams and checks that nothing stays behind.
//!
//! These run on the real clock with short intervals: a paused clock would move while bytes
//! cross the loopback interface.

#[path = "support/processor.rs"]
mod processor;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use agones_processor::{
    AllocationRequest, AllocationResponse, ProcessorClient,
    client::Error,
    proto::{
        BatchRequest, ProcessorMessage, RequestWrapper, processor_client,
        processor_message::Payload, response_wrapper,
    },
    server::{Builder, ProcessorHandler},
};
use tokio::{net::TcpListener, sync::mpsc, task::JoinSet};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{
    Code, Status, Streaming,
    transport::{Channel, Endpoint},
};
use tower::{BoxError, Service, ServiceExt};

const PULL_INTERVAL: Duration = Duration::from_millis(20);
/// How long any wait for an event may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(20);

/// Allocates a game server named after the namespace. "big-N" answers with a name of N bytes;
/// "hang" never answers.
fn allocator()
-> impl Service<AllocationRequest, Response = AllocationResponse, Error = BoxError, Future: Send>
+ Clone
+ Send
+ Sync
+ 'static {
    tower::service_fn(|request: AllocationRequest| async move {
        let namespace = request.namespace;
        if namespace == "hang" {
            std::future::pending::<()>().await;
        }
        let name = match namespace.strip_prefix("big-") {
            Some(size) => "g".repeat(size.parse()?),
            None => format!("gs-{namespace}"),
        };
        Ok(AllocationResponse {
            game_server_name: name,
            ..Default::default()
        })
    })
}

type Allocator = tower::util::BoxCloneSyncService<AllocationRequest, AllocationResponse, BoxError>;

fn builder() -> Builder<Allocator> {
    ProcessorHandler::builder(tower::util::BoxCloneSyncService::new(allocator()))
        .pull_interval(PULL_INTERVAL)
}

fn client(address: SocketAddr, id: &str) -> agones_processor::client::Builder {
    ProcessorClient::builder(format!("http://{address}"))
        .client_id(id)
        .reconnect_interval(Duration::from_millis(50))
        .max_reconnect_interval(Duration::from_millis(200))
        .allocation_timeout(PATIENCE)
}

fn request(namespace: impl Into<String>) -> AllocationRequest {
    AllocationRequest {
        namespace: namespace.into(),
        ..Default::default()
    }
}

/// Allocates "ok-N" through `client` and checks the answer: the client still works.
async fn works(client: &ProcessorClient, n: usize) {
    let namespace = format!("ok-{n}");
    let response = client.allocate(request(namespace.clone())).await;
    let response = response.unwrap_or_else(|error| panic!("{}: {error}", client.client_id()));
    assert_eq!(response.game_server_name, format!("gs-{namespace}"));
}

/// Waits until `condition` holds.
async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    tokio::time::timeout(PATIENCE, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
}

/// A raw stream: what a client sends and receives, nothing more.
struct RawStream {
    outbound: mpsc::Sender<ProcessorMessage>,
    inbound: Streaming<ProcessorMessage>,
}

impl RawStream {
    /// Opens a stream on `channel` and registers it as `client_id`.
    async fn register(channel: Channel, client_id: &str) -> Result<Self, Status> {
        let (outbound, receiver) = mpsc::channel(16);
        // Sent before the call: the processor answers with headers once it has read it.
        outbound.send(registration(client_id)).await.unwrap();
        let inbound = processor_client::ProcessorClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .stream_batches(ReceiverStream::new(receiver))
            .await?
            .into_inner();
        Ok(Self { outbound, inbound })
    }

    async fn send(&self, message: ProcessorMessage) {
        self.outbound.send(message).await.unwrap();
    }

    /// The next batch response, skipping pulls; or how the stream ended.
    async fn next_answer(&mut self) -> Result<Vec<response_wrapper::Result>, Status> {
        loop {
            let message = self.inbound.message().await?;
            match message.and_then(|m| m.payload) {
                Some(Payload::Pull(_)) => continue,
                Some(Payload::BatchResponse(batch)) => {
                    return Ok(batch
                        .responses
                        .into_iter()
                        .map(|w| w.result.expect("a result"))
                        .collect());
                }
                other => panic!("unexpected from the processor: {other:?}"),
            }
        }
    }
}

async fn channel(address: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{address}"))
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
            request_id: format!("{batch_id}-{i}"),
            request: Some(request(*namespace)),
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

fn allocated(answer: &response_wrapper::Result) -> Option<&str> {
    match answer {
        response_wrapper::Result::Response(response) => Some(&response.game_server_name),
        response_wrapper::Result::Error(_) => None,
    }
}

fn refused(answer: &response_wrapper::Result) -> Option<(Code, &str)> {
    match answer {
        response_wrapper::Result::Error(status) => {
            Some((Code::from_i32(status.code), &status.message))
        }
        response_wrapper::Result::Response(_) => None,
    }
}

#[tokio::test]
async fn server_message_limit_ends_only_the_stream_that_went_over_it() {
    let limit = 16 * 1024;
    let (handler, address) = processor::serve(builder().max_message_size(limit)).await;
    let good = client(address, "good")
        .max_message_size(limit)
        .spawn()
        .unwrap();
    works(&good, 0).await;

    let mut big = RawStream::register(channel(address).await, "big")
        .await
        .unwrap();
    let oversized = "n".repeat(2 * limit);
    big.send(batch("big", "b1", &[&oversized])).await;
    let status = big.next_answer().await.expect_err("the stream ends");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("too large"), "{status:?}");

    until("the stream is gone", || {
        handler.connected_clients() == ["good"]
    })
    .await;
    works(&good, 1).await;
    assert_eq!(
        handler.batches_received(),
        2,
        "the oversized batch never arrived"
    );
}

#[tokio::test]
async fn client_refuses_a_request_beyond_its_message_limit_and_splits_batches_below_it() {
    let limit = 16 * 1024;
    let (leading, leadership) = tokio::sync::watch::channel(false);
    let (handler, address) =
        processor::serve(builder().max_message_size(limit).leadership(leadership)).await;
    let client = client(address, "splitter")
        .max_message_size(limit)
        .spawn()
        .unwrap();

    let error = client
        .allocate(request("n".repeat(limit)))
        .await
        .expect_err("too large to send");
    assert!(
        matches!(error, Error::TooLarge { limit: l, .. } if l == limit),
        "{error:?}"
    );
    assert_eq!(error.code(), Code::InvalidArgument);

    // Three requests of 6 KiB: two fit in a message of 16 KiB, the third goes in the next.
    // Nothing is pulled until all three wait, so that the first pull sees them together.
    let calls: Vec<_> = (0..3)
        .map(|i| {
            let namespace = format!("{i}-{}", "n".repeat(6 * 1024));
            tokio::spawn(client.clone().allocate_owned(request(namespace)))
        })
        .collect();
    until("three calls wait", || client.stats().queued == 3).await;
    leading.send_replace(true);
    for (i, call) in calls.into_iter().enumerate() {
        let response = call.await.unwrap().expect("allocated");
        assert!(response.game_server_name.starts_with(&format!("gs-{i}-")));
    }
    assert_eq!(client.stats().batches_sent, 2);
    assert_eq!(handler.batches_received(), 2);
    works(&client, 0).await;
}

#[tokio::test]
async fn client_message_limit_breaks_its_own_stream_and_it_reconnects() {
    let (_handler, address) = processor::serve(builder()).await;
    let small = client(address, "small")
        .max_message_size(8 * 1024)
        .spawn()
        .unwrap();
    let other = client(address, "other").spawn().unwrap();
    works(&small, 0).await;

    // The answer is larger than the small client accepts: its stream breaks, and whether the
    // request was allocated is unknown to it.
    let error = small
        .allocate(request(format!("big-{}", 16 * 1024)))
        .await
        .expect_err("the answer is too large");
    assert!(matches!(error, Error::OutcomeUnknown), "{error:?}");

    works(&other, 1).await;
    let answer = other.allocate(request(format!("big-{}", 16 * 1024))).await;
    assert_eq!(answer.unwrap().game_server_name.len(), 16 * 1024);
    works(&small, 2).await;
    assert!(small.stats().connects >= 2, "the small client reconnected");
    assert_eq!(other.stats().connects, 1, "the other kept its stream");
}

#[tokio::test]
async fn clients_beyond_max_clients_are_refused_alone() {
    let (handler, address) = processor::serve(builder().max_clients(2)).await;
    let a = client(address, "a").spawn().unwrap();
    let b = client(address, "b").spawn().unwrap();
    works(&a, 0).await;
    works(&b, 0).await;

    let status = RawStream::register(channel(address).await, "c")
        .await
        .err()
        .expect("a third client id is refused");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(status.message(), "too many clients connected");
    works(&a, 1).await;
    works(&b, 1).await;

    // Room again once a client leaves.
    drop(b);
    until("b is gone", || handler.connected_clients() == ["a"]).await;
    let mut c = RawStream::register(channel(address).await, "c")
        .await
        .unwrap();
    c.send(batch("c", "b1", &["x"])).await;
    assert_eq!(allocated(&c.next_answer().await.unwrap()[0]), Some("gs-x"));
}

#[tokio::test]
async fn requests_beyond_max_batch_size_are_refused_in_their_own_batch() {
    let (_handler, address) = processor::serve(builder().max_batch_size(2)).await;
    let other = client(address, "other").max_batch_size(2).spawn().unwrap();

    let mut big = RawStream::register(channel(address).await, "big")
        .await
        .unwrap();
    big.send(batch("big", "b1", &["w", "x", "y", "z"])).await;
    let answers = big.next_answer().await.unwrap();
    assert_eq!(allocated(&answers[0]), Some("gs-w"));
    assert_eq!(allocated(&answers[1]), Some("gs-x"));
    for answer in &answers[2..] {
        assert_eq!(
            refused(answer),
            Some((Code::ResourceExhausted, "batch holds more than 2 requests"))
        );
    }

    // The same stream goes on, and so does everyone else.
    big.send(batch("big", "b2", &["v"])).await;
    assert_eq!(
        allocated(&big.next_answer().await.unwrap()[0]),
        Some("gs-v")
    );
    for i in 0..10 {
        works(&other, i).await;
    }
}

#[tokio::test]
async fn batches_beyond_max_batches_per_client_are_refused_while_others_allocate() {
    let (_handler, address) = processor::serve(builder().max_batches_per_client(2)).await;
    let other = client(address, "other").spawn().unwrap();

    let mut flood = RawStream::register(channel(address).await, "flood")
        .await
        .unwrap();
    for batch_id in ["b1", "b2", "b3"] {
        flood
            .send(batch("flood", batch_id, &["hang", "hang"]))
            .await;
    }
    let answers = flood.next_answer().await.unwrap();
    assert_eq!(answers.len(), 2);
    for answer in &answers {
        assert_eq!(
            refused(answer),
            Some((
                Code::ResourceExhausted,
                "too many batches in flight for this client"
            ))
        );
    }
    for i in 0..10 {
        works(&other, i).await;
    }
}

#[tokio::test]
async fn a_client_that_does_not_read_fills_only_its_own_outbound_queue() {
    let (handler, address) = processor::serve(
        builder()
            .pull_interval(Duration::from_millis(2))
            .outbound_capacity(2),
    )
    .await;
    let other = client(address, "other").spawn().unwrap();

    // A receive window of 256 bytes: a few pulls fill it, then the processor's queue fills.
    let narrow = Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .initial_stream_window_size(256)
        .initial_connection_window_size(256)
        .connect()
        .await
        .unwrap();
    let mut stuck = RawStream::register(narrow, "stuck").await.unwrap();
    stuck.send(batch("stuck", "b1", &["x"])).await;
    let skipped = handler.pulls_skipped();
    until("pulls to the stuck client are skipped", || {
        handler.pulls_skipped() > skipped + 10
    })
    .await;
    for i in 0..10 {
        works(&other, i).await;
    }
    assert_eq!(handler.connected_clients(), ["other", "stuck"]);

    // Once it reads, the answer that waited for room arrives: nothing was lost.
    let answers = stuck.next_answer().await.unwrap();
    assert_eq!(allocated(&answers[0]), Some("gs-x"));
    stuck.send(batch("stuck", "b2", &["y"])).await;
    assert_eq!(
        allocated(&stuck.next_answer().await.unwrap()[0]),
        Some("gs-y")
    );
}

#[tokio::test]
async fn a_full_client_sheds_or_waits_alone() {
    let (_handler, address) = processor::serve(builder()).await;
    let other = client(address, "other").spawn().unwrap();
    // Nothing listens here, so nothing is ever pulled: the queue and the buffer fill.
    let nowhere = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let shedding = client(nowhere, "shedding")
        .max_batch_size(2)
        .buffer_size(2)
        .load_shed(true)
        .spawn()
        .unwrap();

    let mut calls = JoinSet::new();
    for i in 0..10 {
        calls.spawn(shedding.clone().allocate_owned(request(format!("s-{i}"))));
    }
    let mut overloaded = 0;
    while let Ok(Some(result)) =
        tokio::time::timeout(Duration::from_millis(500), calls.join_next()).await
    {
        let error = result.unwrap().expect_err("nothing is ever pulled");
        assert!(matches!(error, Error::Overloaded), "{error:?}");
        assert_eq!(error.code(), Code::ResourceExhausted);
        overloaded += 1;
    }
    // At most two in the queue, two in the buffer and one in the hands of the buffer's worker;
    // which calls get a place depends on when that worker runs.
    assert!((5..10).contains(&overloaded), "{overloaded} shed");
    assert_eq!(shedding.stats().queued, 2);
    assert_eq!(calls.len(), 10 - overloaded, "the rest still wait");
    works(&other, 0).await;

    // Without load shedding, a full client is not ready.
    let waiting = client(nowhere, "waiting")
        .max_batch_size(1)
        .buffer_size(1)
        .spawn()
        .unwrap();
    let mut held = Vec::new();
    for i in 0..10 {
        let mut handle = waiting.clone();
        match tokio::time::timeout(Duration::from_millis(200), handle.ready()).await {
            Ok(ready) => {
                ready.unwrap();
                held.push(handle.call(request(format!("w-{i}"))));
            }
            Err(_) => break,
        }
    }
    // One in the queue, one in the buffer, one in the hands of its worker.
    assert!(
        (1..=3).contains(&held.len()),
        "{} calls made: the client stays ready while full",
        held.len()
    );
    works(&other, 1).await;
    drop(calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_abandoned_streams_leave_nothing_behind() {
    const WAVES: usize = 12;
    const PER_WAVE: usize = 250;
    const CONNECTIONS: usize = 8;

    let (handler, address) = processor::serve(builder()).await;
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        channels.push(channel(address).await);
    }
    let other = client(address, "other").spawn().unwrap();
    works(&other, 0).await;
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();

    for wave in 0..WAVES {
        let release = Arc::new(tokio::sync::Notify::new());
        let mut streams = JoinSet::new();
        for i in 0..PER_WAVE {
            let channel = channels[i % CONNECTIONS].clone();
            let release = release.clone();
            let id = format!("abandoned-{wave}-{i}");
            streams.spawn(abandon(channel, id, i % 4, release));
        }
        // Every stream has reached the processor, registered or not, before all are dropped.
        until("the wave's streams are open", || {
            handler.open_streams() == PER_WAVE + 1
        })
        .await;
        release.notify_waiters();
        while let Some(joined) = streams.join_next().await {
            joined.unwrap();
        }
        // The next wave counts its own streams only once this one's are gone.
        until("the wave's streams are gone", || {
            handler.open_streams() == 1
        })
        .await;
    }

    until("every abandoned stream is gone", || {
        handler.open_streams() == 1 && handler.connected_clients() == ["other"]
    })
    .await;
    until("their tasks are gone", || {
        metrics.num_alive_tasks() <= baseline + 8
    })
    .await;
    works(&other, 1).await;
    let late = client(address, "late").spawn().unwrap();
    works(&late, 0).await;
}

/// Opens a stream and keeps it until `release`, then drops it: registered (`kind` 0),
/// silent (1), with a batch before any registration (2), or registered with a batch in flight
/// that is never read (3).
async fn abandon(channel: Channel, id: String, kind: usize, release: Arc<tokio::sync::Notify>) {
    let released = release.notified();
    tokio::pin!(released);
    // Registered before waiting, so that a release sent meanwhile is not missed.
    released.as_mut().enable();
    let (outbound, receiver) = mpsc::channel(4);
    match kind {
        0 | 3 => {
            outbound.send(registration(&id)).await.unwrap();
            if kind == 3 {
                outbound.send(batch(&id, "b1", &["x"])).await.unwrap();
            }
        }
        2 => outbound.send(batch(&id, "b1", &["x"])).await.unwrap(),
        _ => {}
    }
    let call = async {
        processor_client::ProcessorClient::new(channel)
            .stream_batches(ReceiverStream::new(receiver))
            .await
    };
    // Unregistered streams get no response until they register: the call itself is dropped.
    tokio::select! {
        response = call => {
            let inbound = response.expect("registered").into_inner();
            released.await;
            drop(inbound);
        }
        () = &mut released => {}
    }
    drop(outbound);
}
