//! The processor handler around allocators wrapped in `tower::ServiceBuilder` layers, driven by
//! this crate's client over real gRPC on 127.0.0.1.
//!
//! These run on the real clock with a short pull interval: a paused clock would move while
//! bytes cross the loopback interface and fire the layers' timers mid-exchange.

#[path = "support/processor.rs"]
mod processor;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use agones_processor::allocator::{BatchOutcome, ConcurrentBatch};
use agones_processor::client::Error;
use agones_processor::server::record::{OutcomeStats, RecordLayer};
use agones_processor::server::{Builder, ProcessorHandler};
use agones_processor::{AllocationRequest, AllocationResponse, ProcessorClient};
use tokio::sync::{Notify, mpsc};
use tonic::Code;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt, service_fn};

const PULL_INTERVAL: Duration = Duration::from_millis(20);

/// Serves `builder`'s handler, pulling every [`PULL_INTERVAL`], on a fresh loopback port.
async fn serve<A>(builder: Builder<A>) -> (ProcessorHandler<A>, SocketAddr)
where
    A: Clone + Send + Sync + 'static,
{
    processor::serve(builder.pull_interval(PULL_INTERVAL)).await
}

fn client(address: SocketAddr, id: &str) -> ProcessorClient {
    ProcessorClient::builder(format!("http://{address}"))
        .client_id(id)
        .reconnect_interval(Duration::from_millis(100))
        .spawn()
        .unwrap()
}

fn request(namespace: impl Into<String>) -> AllocationRequest {
    AllocationRequest {
        namespace: namespace.into(),
        ..Default::default()
    }
}

fn named(name: impl Into<String>) -> AllocationResponse {
    AllocationResponse {
        game_server_name: name.into(),
        ..Default::default()
    }
}

fn code(result: &Result<AllocationResponse, Error>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(Error::Allocation(status)) => status.code(),
        Err(other) => panic!("not an allocator's answer: {other:?}"),
    }
}

/// Counts the calls in flight and remembers the most at once.
#[derive(Clone, Default)]
struct InFlight {
    now: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

impl InFlight {
    fn enter(&self) {
        let now = self.now.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(now, SeqCst);
    }

    fn leave(&self) {
        self.now.fetch_sub(1, SeqCst);
    }
}

/// Answers with the namespace as game server name, after yielding, counting calls in flight.
fn counted_echo(
    in_flight: InFlight,
) -> impl Service<AllocationRequest, Response = AllocationResponse, Error = BoxError, Future: Send>
+ Clone
+ Send
+ Sync
+ 'static {
    service_fn(move |request: AllocationRequest| {
        let in_flight = in_flight.clone();
        async move {
            in_flight.enter();
            tokio::task::yield_now().await;
            in_flight.leave();
            Ok(named(request.namespace))
        }
    })
}

#[tokio::test]
async fn sixteen_clients_with_a_concurrency_limited_allocator_each_answered_once() {
    let in_flight = InFlight::default();
    let stats = OutcomeStats::default();
    let allocator = ServiceBuilder::new()
        .layer(RecordLayer::new(stats.clone()))
        .concurrency_limit(4)
        .service(counted_echo(in_flight.clone()));
    let (processor, address) = serve(ProcessorHandler::builder(allocator)).await;

    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..16 {
        let client = client(address, &format!("allocator-{c}"));
        for i in 0..50 {
            let client = client.clone();
            let marker = format!("c{c}-r{i}");
            tasks.spawn(async move { (marker.clone(), client.allocate(request(marker)).await) });
        }
    }
    let mut answered = HashSet::new();
    while let Some(joined) = tasks.join_next().await {
        let (marker, result) = joined.unwrap();
        let response = result.unwrap_or_else(|error| panic!("{marker}: {error}"));
        assert_eq!(
            response.game_server_name, marker,
            "each call gets its own answer"
        );
        assert!(answered.insert(marker), "answered once");
    }

    assert_eq!(answered.len(), 800);
    assert_eq!(stats.count(Code::Ok), 800, "each request allocated once");
    assert_eq!(stats.total(), 800);
    assert_eq!(processor.requests_received(), 800);
    assert_eq!(processor.answers(Code::Ok), 800);
    assert!(
        in_flight.most.load(SeqCst) <= 4,
        "the concurrency limit held"
    );
}

#[tokio::test]
async fn timeout_layer_turns_a_hanging_call_into_deadline_exceeded() {
    let allocator = ServiceBuilder::new()
        .timeout(Duration::from_millis(200))
        .service_fn(|request: AllocationRequest| async move {
            if request.namespace == "hang" {
                std::future::pending::<()>().await;
            }
            Ok::<_, BoxError>(named(request.namespace))
        });
    let (_processor, address) = serve(ProcessorHandler::builder(allocator)).await;
    let client = client(address, "allocator-0");

    let calls = ["a", "hang", "b", "c"].map(|namespace| client.allocate(request(namespace)));
    let results = futures_util::future::join_all(calls).await;
    let codes: Vec<_> = results.iter().map(code).collect();
    assert_eq!(
        codes,
        [Code::Ok, Code::DeadlineExceeded, Code::Ok, Code::Ok]
    );
}

#[tokio::test]
async fn load_shed_answers_resource_exhausted_while_the_allocator_is_busy() {
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let allocator = ServiceBuilder::new()
        .load_shed()
        .concurrency_limit(1)
        .service_fn({
            let release = release.clone();
            move |request: AllocationRequest| {
                let (started_tx, release) = (started_tx.clone(), release.clone());
                async move {
                    if request.namespace == "slow" {
                        started_tx.send(()).unwrap();
                        release.notified().await;
                    }
                    Ok::<_, BoxError>(named(request.namespace))
                }
            }
        });
    let (_processor, address) = serve(ProcessorHandler::builder(allocator)).await;
    let client = client(address, "allocator-0");

    let slow = tokio::spawn({
        let client = client.clone();
        async move { client.allocate(request("slow")).await }
    });
    started.recv().await.unwrap();
    let shed = client.allocate(request("x")).await;
    assert_eq!(code(&shed), Code::ResourceExhausted);

    release.notify_one();
    assert_eq!(slow.await.unwrap().unwrap().game_server_name, "slow");
}

#[tokio::test]
async fn rate_limit_behind_a_buffer_spaces_calls_across_batches() {
    // `RateLimit` is not `Clone`: a buffer in front makes one limit shared by every batch.
    let allocator = ServiceBuilder::new()
        .buffer(64)
        .rate_limit(2, Duration::from_millis(300))
        .service_fn(|request: AllocationRequest| async move {
            Ok::<_, BoxError>(named(request.namespace))
        });
    let (_processor, address) = serve(ProcessorHandler::builder(allocator)).await;
    let client = client(address, "allocator-0");

    let started = Instant::now();
    let calls = (0..6).map(|i| client.allocate(request(i.to_string())));
    let results = futures_util::future::join_all(calls).await;
    assert!(results.iter().all(Result::is_ok));
    // Two per period: the fifth and sixth calls wait for the third period.
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn batch_concurrency_limit_of_one_allocates_one_batch_at_a_time() {
    let batches_in_flight = InFlight::default();
    let per_request = ConcurrentBatch::new(counted_echo(InFlight::default()), 8);
    let batch_allocator = ServiceBuilder::new()
        .concurrency_limit(1)
        .service(service_fn({
            let batches_in_flight = batches_in_flight.clone();
            move |requests: Vec<AllocationRequest>| {
                let (in_flight, per_request) = (batches_in_flight.clone(), per_request.clone());
                async move {
                    in_flight.enter();
                    let outcomes: Vec<BatchOutcome> = per_request.oneshot(requests).await?;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    in_flight.leave();
                    Ok::<_, BoxError>(outcomes)
                }
            }
        }));
    let (processor, address) = serve(ProcessorHandler::batch_builder(batch_allocator)).await;

    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..4 {
        let client = client(address, &format!("allocator-{c}"));
        for i in 0..20 {
            let client = client.clone();
            tasks.spawn(async move { client.allocate(request(format!("c{c}-{i}"))).await });
        }
    }
    while let Some(joined) = tasks.join_next().await {
        joined.unwrap().unwrap();
    }
    assert_eq!(processor.answers(Code::Ok), 80);
    assert_eq!(batches_in_flight.most.load(SeqCst), 1);
}
