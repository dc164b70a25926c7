//! Fault scenarios over real gRPC on 127.0.0.1, each with hundreds of concurrent calls from
//! several clients and a ledger that checks every call and every allocation.
//!
//! They run on the real clock with short durations: a paused clock would jump ahead while
//! bytes cross the loopback interface. They wait for events, not for fixed times, wherever
//! the event can be seen.

#[path = "support/ledger.rs"]
mod ledger;
// Included by path so that the other loopback tests, which share `support/mod.rs`, do not
// compile the proxy and its tests.
#[path = "support/processor.rs"]
mod processor;
#[path = "support/proxy.rs"]
mod proxy;

use std::{
    future::Future,
    net::SocketAddr,
    time::{Duration, Instant},
};

use agones_processor::{
    AllocationRequest, AllocationResponse, ProcessorClient,
    allocator::{Fleet, demo_fleet},
    server::{Builder, ProcessorHandler},
};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tower::{BoxError, Service};

use ledger::{Ledger, Outcome};
use proxy::Proxy;

const PULL_INTERVAL: Duration = Duration::from_millis(20);
/// Clients per scenario.
const CLIENTS: usize = 3;
/// One scenario at a time: each drives hundreds of calls against short timeouts, and two at
/// once on a small machine would starve each other's timers.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Calls per client and wave.
const CALLS: usize = 100;

/// A fleet of `hundreds` hundred game servers, about three quarters of them Ready.
fn fleet(hundreds: usize) -> Fleet {
    Fleet::new(demo_fleet(hundreds * 5, 20))
}

/// Builds a processor over `allocator` with a health reporter and whatever `configure` adds,
/// and serves it on `listener` until `stop` resolves.
fn serve<A>(
    listener: TcpListener,
    allocator: A,
    configure: impl FnOnce(Builder<A>) -> Builder<A>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> (ProcessorHandler<A>, JoinHandle<()>)
where
    A: Service<AllocationRequest, Response = AllocationResponse> + Clone + Send + Sync + 'static,
    A::Error: Into<BoxError>,
    A::Future: Send,
{
    processor::serve_until(
        configure(ProcessorHandler::builder(allocator).pull_interval(PULL_INTERVAL)),
        listener,
        stop,
    )
}

/// A listener on `address` (port 0 for a fresh one) that may bind while connections of an
/// earlier server on the same address linger.
fn listen(address: SocketAddr) -> TcpListener {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(address).unwrap();
    socket.listen(128).unwrap()
}

/// A fresh ephemeral port on 127.0.0.1.
fn loopback() -> SocketAddr {
    ([127, 0, 0, 1], 0).into()
}

/// A server in a runtime of its own, so that killing it ends its connections at once and
/// drops its tasks mid-batch, as a crashed process would.
struct ServerProcess {
    runtime: tokio::runtime::Runtime,
    address: SocketAddr,
}

impl ServerProcess {
    /// Starts a processor over `allocator` on `address`, in a new runtime.
    async fn start<A>(address: SocketAddr, allocator: A) -> Self
    where
        A: Service<AllocationRequest, Response = AllocationResponse>
            + Clone
            + Send
            + Sync
            + 'static,
        A::Error: Into<BoxError>,
        A::Future: Send,
    {
        tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let address = runtime.block_on(async move {
                let listener = listen(address);
                let address = listener.local_addr().unwrap();
                serve(listener, allocator, |b| b, std::future::pending());
                address
            });
            Self { runtime, address }
        })
        .await
        .unwrap()
    }

    /// Kills the server and waits until its sockets are closed.
    async fn kill(self) {
        let runtime = self.runtime;
        tokio::task::spawn_blocking(move || runtime.shutdown_timeout(Duration::from_secs(2)))
            .await
            .unwrap();
    }
}

/// A client of `uri` registered as `id`, reconnecting quickly.
fn client(uri: &str, id: &str, allocation_timeout: Duration) -> ProcessorClient {
    ProcessorClient::builder(uri)
        .client_id(id)
        .allocation_timeout(allocation_timeout)
        .reconnect_interval(Duration::from_millis(50))
        .max_reconnect_interval(Duration::from_millis(200))
        // Servers here pull every 20 ms; two seconds of silence is a dead link.
        .idle_timeout(Duration::from_secs(2))
        .spawn()
        .unwrap()
}

/// Starts `count` calls through `client`, each ending itself in the ledger.
fn launch(
    ledger: &Ledger,
    id: &str,
    client: &ProcessorClient,
    count: usize,
) -> Vec<JoinHandle<()>> {
    (0..count)
        .map(|_| {
            let (key, request) = ledger.open(id);
            let (ledger, client) = (ledger.clone(), client.clone());
            tokio::spawn(async move {
                let result = client.allocate_owned(request).await;
                ledger.end(&key, &result);
            })
        })
        .collect()
}

/// One client per [`CLIENTS`], with ids `allocator-0`, `allocator-1`, ...
fn clients(uri: &str, allocation_timeout: Duration) -> Vec<ProcessorClient> {
    (0..CLIENTS)
        .map(|c| client(uri, &format!("allocator-{c}"), allocation_timeout))
        .collect()
}

/// `count` calls through each of `clients`, recorded in the ledger under each client's id.
fn launch_all(ledger: &Ledger, clients: &[ProcessorClient], count: usize) -> Vec<JoinHandle<()>> {
    clients
        .iter()
        .flat_map(|client| launch(ledger, client.client_id(), client, count))
        .collect()
}

/// Makes `count` calls through `client` and drops them once the client queued them all; the
/// caller ensures the client has no stream to send them on meanwhile.
async fn drop_unsent(ledger: &Ledger, id: &str, client: &ProcessorClient, count: usize) {
    let queued_before = client.stats().queued;
    let mut calls = Vec::new();
    for _ in 0..count {
        let (key, request) = ledger.open(id);
        let call = tokio::spawn(client.clone().allocate_owned(request));
        calls.push((key, call));
    }
    eventually("the dropped calls are queued", || {
        client.stats().queued >= queued_before + count
    })
    .await;
    for (key, call) in calls {
        call.abort();
        match call.await {
            Err(error) if error.is_cancelled() => ledger.end_with(&key, Outcome::DroppedUnsent),
            Err(error) => panic!("{error}"),
            Ok(result) => ledger.end(&key, &result),
        }
    }
}

/// Waits for every call task.
async fn join(calls: Vec<JoinHandle<()>>) {
    for call in calls {
        call.await.expect("a call task failed");
    }
}

/// Waits until `condition` holds, for at most 10 seconds.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Logs the counts where `cargo test -- --nocapture` shows them.
fn report(scenario: &str, counts: &std::collections::BTreeMap<String, usize>) {
    eprintln!("{scenario}: {counts:?}");
}

/// The count of `outcome`, 0 when absent.
fn count(counts: &std::collections::BTreeMap<String, usize>, outcome: &str) -> usize {
    counts.get(outcome).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_while_a_batch_is_in_flight() {
    let _serial = SERIAL.lock().await;
    let ledger = Ledger::default();
    let allocator = ledger.allocator("first", fleet(5), Duration::from_millis(300));
    let server = ServerProcess::start(loopback(), allocator).await;
    let uri = format!("http://{}", server.address);
    let timeout = Duration::from_secs(2);
    let clients = clients(&uri, timeout);

    let calls = launch_all(&ledger, &clients, CALLS);
    eventually("a batch is being allocated", || {
        ledger.allocator_calls() > 0
    })
    .await;
    let killed = Instant::now();
    server.kill().await;
    join(calls).await;

    let counts = ledger.verify();
    report("server killed", &counts);
    for (c, client) in clients.iter().enumerate() {
        let keys = ledger.keys_of(&format!("allocator-{c}"));
        let stats = client.stats();
        let unknown = keys
            .iter()
            .filter(|key| ledger.outcome(key) == Some(Outcome::Unknown))
            .count();
        // Sent and never answered: the caller learns it with the break, not at its timeout.
        // Never sent: the request waited for a pull until its timeout.
        assert_eq!(unknown as u64, stats.requests_sent - stats.answers);
        assert_eq!(
            count(&counts, "allocated"),
            0,
            "the allocator answers too late"
        );
        for key in &keys {
            if ledger.reached_allocator(key) {
                assert_eq!(ledger.outcome(key), Some(Outcome::Unknown), "{key}");
            }
        }
    }
    assert!(count(&counts, "outcome unknown") > 0);
    assert_eq!(
        count(&counts, "outcome unknown") + count(&counts, "timeout"),
        CLIENTS * CALLS
    );
    assert!(
        killed.elapsed() < timeout + Duration::from_secs(1),
        "every call ended by its timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restarted_with_new_state_at_the_same_address() {
    let _serial = SERIAL.lock().await;
    let ledger = Ledger::default();
    let first = ServerProcess::start(
        loopback(),
        ledger.allocator("first", fleet(5), Duration::ZERO),
    )
    .await;
    let address = first.address;
    let uri = format!("http://{address}");
    let clients = clients(&uri, Duration::from_secs(5));

    let calls = launch_all(&ledger, &clients, CALLS);
    join(calls).await;
    first.kill().await;

    // While the server is down, calls queue; some are dropped by their callers.
    for (c, client) in clients.iter().enumerate() {
        drop_unsent(&ledger, &format!("allocator-{c}"), client, 20).await;
    }
    let calls = launch_all(&ledger, &clients, CALLS);
    let second = ServerProcess::start(
        address,
        ledger.allocator("second", fleet(5), Duration::ZERO),
    )
    .await;
    join(calls).await;

    let counts = ledger.verify();
    report("server restarted", &counts);
    assert_eq!(count(&counts, "allocated"), 2 * CLIENTS * CALLS);
    assert_eq!(count(&counts, "dropped unsent"), CLIENTS * 20);
    assert_eq!(ledger.allocated_by("second"), CLIENTS * CALLS);
    for client in &clients {
        assert_eq!(client.stats().connects, 2);
    }
    second.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_allocator_with_short_client_timeouts() {
    let _serial = SERIAL.lock().await;
    let ledger = Ledger::default();
    let delay = Duration::from_millis(300);
    let listener = listen(loopback());
    let uri = format!("http://{}", listener.local_addr().unwrap());
    let (processor, _server) = serve(
        listener,
        ledger.allocator("only", fleet(5), delay),
        |builder| builder.batch_concurrency(1_000),
        std::future::pending(),
    );

    // The impatient client gives up before any answer can come; the others wait long enough.
    let short = Duration::from_millis(150);
    let impatient = client(&uri, "impatient", short);
    let patient: Vec<_> = (0..CLIENTS - 1)
        .map(|c| client(&uri, &format!("patient-{c}"), Duration::from_secs(3)))
        .collect();
    let mut calls = launch(&ledger, "impatient", &impatient, CALLS);
    for (c, client) in patient.iter().enumerate() {
        calls.extend(launch(&ledger, &format!("patient-{c}"), client, CALLS));
    }
    join(calls).await;

    let counts = ledger.verify();
    report("slow allocator", &counts);
    for key in ledger.keys_of("impatient") {
        assert_eq!(ledger.outcome(&key), Some(Outcome::Timeout), "{key}");
    }
    assert_eq!(count(&counts, "allocated"), (CLIENTS - 1) * CALLS);

    // Whatever the impatient client sent was allocated and its answers dropped; what it had
    // not sent when its callers gave up never reached the allocator.
    let sent = impatient.stats().requests_sent as usize;
    let reached = ledger
        .keys_of("impatient")
        .iter()
        .filter(|key| ledger.reached_allocator(key))
        .count();
    assert_eq!(reached, sent);
    eventually("the late answers arrived and were dropped", || {
        processor.answers(tonic::Code::Ok) as usize == (CLIENTS - 1) * CALLS + sent
    })
    .await;
    assert_eq!(
        impatient.stats().answers,
        0,
        "no late answer reached a caller"
    );
}

/// A client in a runtime of its own, to be killed with its calls as a crashed process would.
struct ClientProcess {
    runtime: tokio::runtime::Runtime,
    /// Kept so that the driver runs until the process dies: calls in flight hold no handle.
    _client: ProcessorClient,
    calls: Vec<(
        String,
        JoinHandle<Result<AllocationResponse, agones_processor::client::Error>>,
    )>,
}

impl ClientProcess {
    /// Starts a client registered as `id` that makes `count` calls at once.
    async fn start(ledger: &Ledger, uri: String, id: &'static str, count: usize) -> Self {
        let ledger = ledger.clone();
        tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let _entered = runtime.enter();
            let client = client(&uri, id, Duration::from_secs(5));
            let calls = (0..count)
                .map(|_| {
                    let (key, request) = ledger.open(id);
                    (key, runtime.spawn(client.clone().allocate_owned(request)))
                })
                .collect();
            Self {
                runtime,
                _client: client,
                calls,
            }
        })
        .await
        .unwrap()
    }

    /// Kills the client with its calls, records them as gone, and returns their keys.
    async fn kill(self, ledger: &Ledger) -> Vec<String> {
        let runtime = self.runtime;
        tokio::task::spawn_blocking(move || runtime.shutdown_timeout(Duration::from_secs(2)))
            .await
            .unwrap();
        let mut keys = Vec::new();
        for (key, call) in self.calls {
            match call.await {
                Err(error) if error.is_cancelled() => ledger.end_with(&key, Outcome::Gone),
                Err(error) => panic!("{error}"),
                Ok(result) => ledger.end(&key, &result),
            }
            keys.push(key);
        }
        keys
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_gone_while_its_batch_is_being_allocated() {
    let _serial = SERIAL.lock().await;
    let ledger = Ledger::default();
    let listener = listen(loopback());
    let uri = format!("http://{}", listener.local_addr().unwrap());
    let (processor, _server) = serve(
        listener,
        ledger.allocator("only", fleet(6), Duration::from_millis(300)),
        |builder| builder.batch_concurrency(1_000),
        std::future::pending(),
    );

    let gone = ClientProcess::start(&ledger, uri.clone(), "gone", CALLS).await;
    let others: Vec<_> = (0..CLIENTS - 1)
        .map(|c| client(&uri, &format!("other-{c}"), Duration::from_secs(5)))
        .collect();
    let mut calls = Vec::new();
    for (c, client) in others.iter().enumerate() {
        calls.extend(launch(&ledger, &format!("other-{c}"), client, CALLS));
    }
    eventually("a batch of the doomed client is being allocated", || {
        ledger
            .keys_of("gone")
            .iter()
            .any(|key| ledger.reached_allocator(key))
    })
    .await;
    let keys = gone.kill(&ledger).await;
    join(calls).await;

    let counts = ledger.verify();
    report("client gone", &counts);
    assert_eq!(
        count(&counts, "allocated"),
        (CLIENTS - 1) * CALLS,
        "others unaffected"
    );
    assert_eq!(count(&counts, "gone with its process"), CALLS);
    let orphans = keys
        .iter()
        .filter(|key| ledger.reached_allocator(key))
        .count();
    assert!(orphans > 0);

    eventually("the gone client is deregistered", || {
        processor.connected_clients() == ["other-0", "other-1"]
    })
    .await;
    eventually("its batches finished", || {
        processor.answers(tonic::Code::Ok) as usize == ledger.allocator_calls()
    })
    .await;
    assert!(
        processor.shutdown(Duration::from_secs(2)).await,
        "no batch or stream is left hanging"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_between_two_replicas_behind_one_address() {
    let _serial = SERIAL.lock().await;
    let ledger = Ledger::default();
    // Both replicas allocate from one fleet, as two processors of one cluster do.
    let shared = fleet(10);
    let delay = Duration::from_millis(100);
    let (lead_a, leading_a) = watch::channel(true);
    let (lead_b, leading_b) = watch::channel(false);
    let (stop_a, stopped_a) = tokio::sync::oneshot::channel::<()>();
    let listener_a = listen(loopback());
    let listener_b = listen(loopback());
    let address_b = listener_b.local_addr().unwrap();
    let proxy = Proxy::start(listener_a.local_addr().unwrap()).await;
    let (replica_a, server_a) = serve(
        listener_a,
        ledger.allocator("a", shared.clone(), delay),
        |builder| builder.leadership(leading_a),
        async move {
            let _ = stopped_a.await;
        },
    );
    let (_replica_b, _server_b) = serve(
        listener_b,
        ledger.allocator("b", shared, delay),
        |builder| builder.leadership(leading_b),
        std::future::pending(),
    );

    let clients = clients(&proxy.uri(), Duration::from_secs(4));
    let mut calls = launch_all(&ledger, &clients, CALLS);
    eventually("replica a allocates", || ledger.allocated_by("a") > 0).await;

    // The handover: a steps down, the address now leads to b, b takes the lead, and a shuts
    // down, answering its batches in flight and ending its streams.
    lead_a.send_replace(false);
    proxy.set_upstream(address_b);
    lead_b.send_replace(true);
    assert!(replica_a.shutdown(Duration::from_secs(2)).await);
    let _ = stop_a.send(());
    server_a.await.unwrap();

    calls.extend(launch_all(&ledger, &clients, CALLS));
    join(calls).await;

    let counts = ledger.verify();
    report("leadership moved", &counts);
    assert!(
        ledger.allocated_by("b") >= CLIENTS * CALLS,
        "b serves after the handover"
    );
    assert_eq!(
        count(&counts, "allocated") + count(&counts, "outcome unknown"),
        2 * CLIENTS * CALLS,
        "every call allocated, or cut off with its stream"
    );
    for client in &clients {
        assert_eq!(client.stats().connects, 2);
    }
    assert_eq!(proxy.accepted(), 2 * CLIENTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_closed_slow_link_is_replaced() {
    let _serial = SERIAL.lock().await;
    let ledger = Ledger::default();
    let listener = listen(loopback());
    let proxy = Proxy::start(listener.local_addr().unwrap()).await;
    let (_processor, _server) = serve(
        listener,
        ledger.allocator("only", fleet(10), Duration::from_millis(100)),
        |builder| builder,
        std::future::pending(),
    );
    // A slow link: every chunk waits, both ways.
    proxy.set_delay(Duration::from_millis(10));
    let clients = clients(&proxy.uri(), Duration::from_secs(3));
    let mut calls = launch_all(&ledger, &clients, CALLS);
    eventually("a batch is being allocated", || {
        ledger.allocator_calls() > 0
    })
    .await;

    // The clients read the end of their connections while batches are in flight; what they
    // write still reaches the server.
    proxy.half_close();
    eventually("every client reconnected", || {
        proxy.accepted() == 2 * CLIENTS
    })
    .await;
    calls.extend(launch_all(&ledger, &clients, CALLS));
    join(calls).await;

    let counts = ledger.verify();
    report("half-closed slow link", &counts);
    assert_eq!(count(&counts, "timeout"), 0, "the break is seen at once");
    assert!(
        count(&counts, "outcome unknown") > 0,
        "some batches were in flight"
    );
    assert_eq!(
        count(&counts, "allocated") + count(&counts, "outcome unknown"),
        2 * CLIENTS * CALLS
    );
    for client in &clients {
        assert_eq!(client.stats().connects, 2);
    }
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_holed_connection_is_detected_and_replaced() {
    let _serial = SERIAL.lock().await;
    let ledger = Ledger::default();
    let listener = listen(loopback());
    let proxy = Proxy::start(listener.local_addr().unwrap()).await;
    let (_processor, _server) = serve(
        listener,
        ledger.allocator("only", fleet(6), Duration::ZERO),
        |builder| builder,
        std::future::pending(),
    );
    let timeout = Duration::from_secs(2);
    let clients = clients(&proxy.uri(), timeout);
    let calls = launch_all(&ledger, &clients, CALLS);
    join(calls).await;

    // Nothing crosses the connections any more and nothing ends them; the calls made now can
    // only be answered over a new connection. The client should find the connection dead by
    // keepalive, or when its pulls stop while calls time out, and connect again.
    proxy.black_hole();
    let black_holed = Instant::now();
    for (c, client) in clients.iter().enumerate() {
        drop_unsent(&ledger, &format!("allocator-{c}"), client, 20).await;
    }
    let calls = launch_all(&ledger, &clients, CALLS);
    join(calls).await;
    let replaced = tokio::time::timeout(Duration::from_secs(5), async {
        while proxy.accepted() < 2 * CLIENTS {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    join(launch_all(&ledger, &clients, 10)).await;

    let counts = ledger.verify();
    report("black hole", &counts);
    assert!(
        replaced.is_ok(),
        "no client reconnected within {:?} of the black hole ({} connections)",
        black_holed.elapsed(),
        proxy.accepted()
    );
    assert_eq!(count(&counts, "dropped unsent"), CLIENTS * 20);
    assert!(
        count(&counts, "allocated") >= CLIENTS * (CALLS + 10),
        "calls after the reconnection are answered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_follow_the_leader_when_the_old_one_stays_up_as_standby() {
    let _serial = SERIAL.lock().await;
    let ledger = Ledger::default();
    let shared = fleet(10);
    let (lead_a, leading_a) = watch::channel(true);
    let (lead_b, leading_b) = watch::channel(false);
    let listener_a = listen(loopback());
    let listener_b = listen(loopback());
    let address_b = listener_b.local_addr().unwrap();
    let proxy = Proxy::start(listener_a.local_addr().unwrap()).await;
    let (_replica_a, _server_a) = serve(
        listener_a,
        ledger.allocator("a", shared.clone(), Duration::ZERO),
        |builder| builder.leadership(leading_a),
        std::future::pending(),
    );
    let (_replica_b, _server_b) = serve(
        listener_b,
        ledger.allocator("b", shared, Duration::ZERO),
        |builder| builder.leadership(leading_b),
        std::future::pending(),
    );
    let clients = clients(&proxy.uri(), Duration::from_secs(3));
    let calls = launch_all(&ledger, &clients, CALLS);
    join(calls).await;

    // As under a lease: a loses it and stays up, ready to lead again; b leads, and the
    // address leads to b.
    lead_a.send_replace(false);
    proxy.set_upstream(address_b);
    lead_b.send_replace(true);
    let calls = launch_all(&ledger, &clients, CALLS);
    join(calls).await;

    let counts = ledger.verify();
    report("leadership moved, old leader on standby", &counts);
    assert_eq!(
        ledger.allocated_by("b"),
        CLIENTS * CALLS,
        "the new leader serves the calls made after the handover"
    );
    assert_eq!(count(&counts, "allocated"), 2 * CLIENTS * CALLS);
}
