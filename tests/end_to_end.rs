//! The client and the server together over real gRPC on 127.0.0.1.
//!
//! These run on the real clock with short pull intervals: a paused clock would move while
//! bytes cross the loopback interface and fire timeouts mid-exchange. Timing behaviour on a
//! paused clock is tested beside the client's code.

#[path = "support/processor.rs"]
mod processor;

use std::{
    collections::HashSet,
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering::SeqCst},
    },
    time::Duration,
};

use agones_processor::{
    AllocationRequest, AllocationResponse, ProcessorClient,
    allocator::{AllocationError, Fleet, demo_fleet},
    client::Error,
    proto::GameServerSelector,
    server::ProcessorHandler,
};
use tokio::net::TcpListener;
use tonic::Code;
use tower::{BoxError, Service, service_fn};

const PULL_INTERVAL: Duration = Duration::from_millis(20);

/// Serves a processor over `allocator` on `listener` until the returned task is aborted.
fn serve<A>(
    listener: TcpListener,
    allocator: A,
) -> (ProcessorHandler<A>, tokio::task::JoinHandle<()>)
where
    A: Service<AllocationRequest, Response = AllocationResponse> + Clone + Send + Sync + 'static,
    A::Error: Into<BoxError>,
    A::Future: Send,
{
    processor::serve_until(
        ProcessorHandler::builder(allocator).pull_interval(PULL_INTERVAL),
        listener,
        std::future::pending(),
    )
}

async fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    (listener, address)
}

fn client(address: SocketAddr, id: &str) -> ProcessorClient {
    ProcessorClient::builder(format!("http://{address}"))
        .client_id(id)
        .reconnect_interval(Duration::from_millis(100))
        .spawn()
        .unwrap()
}

/// Waits until `condition` holds, for at most 30 seconds.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..3000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

/// An allocator that answers each request with a game server named after its namespace.
fn echo_allocator(
    calls: Arc<AtomicUsize>,
) -> impl Service<
    AllocationRequest,
    Response = AllocationResponse,
    Error = Infallible,
    Future = impl Future<Output = Result<AllocationResponse, Infallible>> + Send,
> + Clone
+ Send
+ Sync
+ 'static {
    service_fn(move |request: AllocationRequest| {
        calls.fetch_add(1, SeqCst);
        async move {
            Ok(AllocationResponse {
                game_server_name: request.namespace,
                ..Default::default()
            })
        }
    })
}

fn request(namespace: impl Into<String>) -> AllocationRequest {
    AllocationRequest {
        namespace: namespace.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn concurrent_calls_from_several_clients_are_each_answered_once() {
    let calls = Arc::new(AtomicUsize::new(0));
    let (listener, address) = listen().await;
    let (processor, _server) = serve(listener, echo_allocator(Arc::clone(&calls)));

    let clients: Vec<_> = (0..3)
        .map(|i| client(address, &format!("allocator-{i}")))
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for (c, client) in clients.iter().enumerate() {
        for i in 0..200 {
            let client = client.clone();
            let marker = format!("c{c}-r{i}");
            tasks.spawn(async move { (marker.clone(), client.allocate(request(marker)).await) });
        }
    }
    let mut answered = HashSet::new();
    while let Some(joined) = tasks.join_next().await {
        let (marker, result) = joined.unwrap();
        let response = result.unwrap_or_else(|e| panic!("{marker}: {e}"));
        assert_eq!(
            response.game_server_name, marker,
            "each call gets its own answer"
        );
        assert!(answered.insert(marker), "answered once");
    }
    assert_eq!(answered.len(), 600);
    assert_eq!(calls.load(SeqCst), 600, "each request allocated once");
    assert_eq!(processor.requests_received(), 600);
    for client in &clients {
        let stats = client.stats();
        assert_eq!((stats.answers, stats.queued, stats.in_flight), (200, 0, 0));
        assert!(stats.batches_sent < 200, "requests travel in batches");
    }
}

#[tokio::test]
async fn allocator_error_reaches_the_caller_with_code_and_message() {
    let allocator = service_fn(|_: AllocationRequest| async {
        Err::<AllocationResponse, _>(tonic::Status::aborted("game server contended"))
    });
    let (listener, address) = listen().await;
    let (_processor, _server) = serve(listener, allocator);

    let error = client(address, "allocator-0")
        .allocate(request("default"))
        .await
        .unwrap_err();
    let Error::Allocation(status) = &error else {
        panic!("unexpected {error:?}")
    };
    assert_eq!(status.code(), Code::Aborted);
    assert_eq!(status.message(), "game server contended");
    assert_eq!(tonic::Status::from(error).code(), Code::Aborted);
}

#[tokio::test]
async fn impossible_selector_is_resource_exhausted() {
    let fleet = Fleet::new(demo_fleet(2, 10));
    let (listener, address) = listen().await;
    let (_processor, _server) = serve(listener, fleet);

    let mut impossible = request("default");
    impossible.game_server_selectors = vec![GameServerSelector {
        match_labels: [("mode".to_owned(), "no-such-mode".to_owned())].into(),
        ..Default::default()
    }];
    let client = client(address, "allocator-0");
    let error = client.allocate(impossible).await.unwrap_err();
    assert_eq!(error.code(), Code::ResourceExhausted, "{error}");

    let allocated = client.allocate(request("default")).await.unwrap();
    assert!(
        !allocated.game_server_name.is_empty(),
        "a satisfiable request still allocates"
    );
}

#[tokio::test]
async fn unanswered_call_ends_with_deadline_exceeded_at_the_allocation_timeout() {
    let received = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&received);
    let never_answers = service_fn(move |_: AllocationRequest| {
        seen.fetch_add(1, SeqCst);
        std::future::pending::<Result<AllocationResponse, AllocationError>>()
    });
    let (listener, address) = listen().await;
    let (_processor, _server) = serve(listener, never_answers);

    let timeout = Duration::from_millis(500);
    let client = ProcessorClient::builder(format!("http://{address}"))
        .allocation_timeout(timeout)
        .spawn()
        .unwrap();
    let started = tokio::time::Instant::now();
    let error = client.allocate(request("default")).await.unwrap_err();

    assert!(
        matches!(error, Error::Timeout(t) if t == timeout),
        "{error:?}"
    );
    assert_eq!(tonic::Status::from(error).code(), Code::DeadlineExceeded);
    assert!(started.elapsed() >= timeout, "not before the timeout");
    assert_eq!(
        received.load(SeqCst),
        1,
        "the request reached the allocator"
    );
}

#[tokio::test]
async fn pulls_reach_every_registered_client() {
    let (listener, address) = listen().await;
    let (processor, _server) = serve(listener, echo_allocator(Arc::default()));
    let clients: Vec<_> = (0..3)
        .map(|i| client(address, &format!("allocator-{i}")))
        .collect();

    eventually("every client is pulled repeatedly", || {
        clients.iter().all(|c| c.stats().pulls >= 3)
    })
    .await;
    let mut registered = processor.connected_clients();
    registered.sort();
    assert_eq!(registered, ["allocator-0", "allocator-1", "allocator-2"]);
}

/// A server in a runtime of its own, so that stopping it ends its connections at once, as a
/// crashed process would.
struct ServerProcess {
    runtime: tokio::runtime::Runtime,
    address: SocketAddr,
}

impl ServerProcess {
    /// Starts a processor over a small fleet on `address`.
    fn start(address: SocketAddr) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime.block_on(async {
            // Reusing the address lets the restarted server bind while connections of the
            // stopped one linger in TIME_WAIT.
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.set_reuseaddr(true).unwrap();
            socket.bind(address).unwrap();
            socket.listen(128).unwrap()
        });
        let address = listener.local_addr().unwrap();
        runtime.spawn(async move {
            let fleet = Fleet::new(demo_fleet(2, 10));
            let (_processor, server) = serve(listener, fleet);
            let _ = server.await;
        });
        Self { runtime, address }
    }

    /// Stops the server and waits until its sockets are closed.
    async fn kill(self) {
        let runtime = self.runtime;
        tokio::task::spawn_blocking(move || runtime.shutdown_timeout(Duration::from_secs(5)))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn client_reconnects_after_the_server_restarts() {
    let server = tokio::task::spawn_blocking(|| ServerProcess::start(([127, 0, 0, 1], 0).into()))
        .await
        .unwrap();
    let address = server.address;
    let client = client(address, "allocator-0");
    client
        .allocate(request("default"))
        .await
        .expect("first server allocates");
    assert_eq!(client.stats().connects, 1);

    server.kill().await;
    let restarted = tokio::task::spawn_blocking(move || ServerProcess::start(address))
        .await
        .unwrap();
    let response =
        tokio::time::timeout(Duration::from_secs(20), client.allocate(request("default")))
            .await
            .expect("answered after the restart")
            .expect("the restarted server allocates");
    assert!(!response.game_server_name.is_empty());
    assert_eq!(client.stats().connects, 2);
    restarted.kill().await;
}

#[tokio::test]
async fn requests_of_one_batch_never_share_a_ready_game_server() {
    use agones_processor::proto::{
        BatchRequest, ProcessorMessage, RequestWrapper, processor_client,
        processor_message::Payload, response_wrapper,
    };

    let fleet = Fleet::new(demo_fleet(2, 10));
    let (listener, address) = listen().await;
    let (_processor, _server) = serve(listener, fleet.clone());

    // A raw stream, so that all the requests surely travel in one batch.
    let mut raw = processor_client::ProcessorClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    let (outbound, receiver) = tokio::sync::mpsc::channel(4);
    let message = |payload| ProcessorMessage {
        client_id: "raw".into(),
        payload,
    };
    outbound.send(message(None)).await.unwrap();
    let mut inbound = raw
        .stream_batches(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .unwrap()
        .into_inner();
    let ready = fleet
        .game_servers()
        .iter()
        .filter(|gs| gs.state == agones_processor::allocator::GameServerState::Ready)
        .count();
    let requests = (0..ready + 2)
        .map(|i| RequestWrapper {
            request_id: i.to_string(),
            request: Some(request("default")),
        })
        .collect();
    let batch = BatchRequest {
        batch_id: "b-1".into(),
        requests,
    };
    outbound
        .send(message(Some(Payload::BatchRequest(batch))))
        .await
        .unwrap();

    let answers = loop {
        match inbound.message().await.unwrap().unwrap().payload {
            Some(Payload::BatchResponse(answers)) => break answers,
            _ => continue, // pulls
        }
    };
    assert_eq!(answers.batch_id, "b-1");
    assert_eq!(answers.responses.len(), ready + 2, "one answer per request");
    let mut names = HashSet::new();
    let mut unallocated = 0;
    for answer in answers.responses {
        match answer.result {
            Some(response_wrapper::Result::Response(response)) => {
                assert!(
                    names.insert(response.game_server_name),
                    "a Ready server given twice"
                );
            }
            Some(response_wrapper::Result::Error(status)) => {
                assert_eq!(status.code, Code::ResourceExhausted as i32);
                unallocated += 1;
            }
            None => panic!("an answer with neither result"),
        }
    }
    assert_eq!(
        (names.len(), unallocated),
        (ready, 2),
        "every Ready server once, then none"
    );
}
