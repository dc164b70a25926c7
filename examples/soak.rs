//! A soak run: the whole stack under load, with a fault every few seconds, and a ledger.
//!
//! ```text
//! cargo run --release --example soak -- --duration 10m
//! cargo run --example soak -- --duration 20s      # what CI runs
//! ```
//!
//! A processor serves an in-memory fleet behind a fault-injecting TCP proxy on 127.0.0.1;
//! several clients keep a fixed number of calls open each. Every `--fault-every`, the next
//! fault of a fixed rotation hits the connections: cut them, black-hole them (nothing passes,
//! nothing closes), delay every byte for a while, half-close them (the client reads the end
//! of the stream, the server does not), restart the processor (a new one on another port,
//! the old one shut down). Sessions end as soon as their call does, so the fleet never
//! runs out.
//!
//! The ledger checks, for every call: it ended (no call hangs past its timeout); an answer
//! names the game server the allocator allocated for that very request; no game server is
//! held by two calls at once. It also counts the outcomes and the allocations whose answer
//! was lost. The process's memory is sampled every second. Exits 1 when a check fails.
#![allow(clippy::print_stdout)]

#[path = "stacks/logging.rs"]
mod logging;
// Shared with the fault tests, which use more of it.
#[allow(dead_code)]
#[path = "../tests/support/proxy.rs"]
mod proxy;

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    process::ExitCode,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use agones_processor::{
    AllocationRequest, AllocationResponse, ProcessorClient,
    allocator::{Fleet, demo_fleet},
    client::Error,
    proto::MetaPatch,
    server::{self, ProcessorHandler},
};
use clap::Parser;
use tokio::{net::TcpListener, sync::oneshot, task::JoinSet};
use tower::service_fn;

use proxy::Proxy;

/// The metadata label that carries a call's ledger key to the allocator.
const KEY_LABEL: &str = "soak-key";

/// Runs the processor and its clients under load with periodic faults.
#[derive(Debug, Parser)]
struct Args {
    /// How long to keep the load on.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Processor clients, as allocator replicas.
    #[arg(long, default_value_t = 3)]
    clients: usize,
    /// Calls each client keeps open.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Time between two faults.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    fault_every: Duration,
    /// How often the processor pulls each client.
    #[arg(long, default_value = "10ms", value_parser = humantime::parse_duration)]
    pull_interval: Duration,
    /// The clients' allocation timeout.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// The faults, in the order they are injected.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Cut,
    BlackHole,
    Delay,
    HalfClose,
    Restart,
}

const ROTATION: [Fault; 5] = [
    Fault::Cut,
    Fault::BlackHole,
    Fault::Delay,
    Fault::HalfClose,
    Fault::Restart,
];

/// What the allocator did and what the callers saw.
#[derive(Debug, Default)]
struct Books {
    /// Game servers allocated per call key, until the call ends.
    allocated: HashMap<u64, String>,
    /// Game servers held by a call that has not ended, with its key.
    held: HashMap<String, u64>,
    /// Calls by outcome.
    outcomes: BTreeMap<String, u64>,
    /// Calls that did not get the answer for a game server allocated for them.
    answer_lost: u64,
    /// Broken invariants, described.
    violations: Vec<String>,
}

#[derive(Debug, Clone, Default)]
struct Ledger(Arc<Mutex<Books>>);

impl Ledger {
    fn books(&self) -> MutexGuard<'_, Books> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records an allocation for `key`.
    fn allocated(&self, key: u64, game_server: &str) {
        let mut books = self.books();
        if let Some(holder) = books.held.insert(game_server.to_owned(), key) {
            books.violations.push(format!(
                "{game_server} given to call {key} while call {holder} held it"
            ));
        }
        books.allocated.insert(key, game_server.to_owned());
    }

    /// Checks and records the end of call `key`; returns the game server to free, if any.
    fn ended(&self, key: u64, result: &Result<AllocationResponse, Error>) -> Option<String> {
        let mut books = self.books();
        let allocated = books.allocated.remove(&key);
        let outcome = match result {
            Ok(response) => {
                if allocated.as_deref() != Some(&response.game_server_name) {
                    let violation = format!(
                        "call {key} was answered {} but allocated {allocated:?}",
                        response.game_server_name
                    );
                    books.violations.push(violation);
                }
                "allocated".to_owned()
            }
            Err(error) => {
                books.answer_lost += u64::from(allocated.is_some());
                match error {
                    Error::Allocation(status) => format!("refused {:?}", status.code()),
                    Error::Timeout(_) => "timeout".to_owned(),
                    Error::OutcomeUnknown => "outcome unknown".to_owned(),
                    Error::Overloaded => "overloaded".to_owned(),
                    Error::Closed => "closed".to_owned(),
                    other => format!("{other}"),
                }
            }
        };
        *books.outcomes.entry(outcome).or_default() += 1;
        if let Some(game_server) = &allocated {
            books.held.remove(game_server);
        }
        allocated
    }
}

/// A processor serving `fleet` on a fresh loopback port until told to stop.
struct Processor {
    address: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Processor {
    async fn start(fleet: &Fleet, ledger: &Ledger, pull_interval: Duration) -> Self {
        let (fleet, ledger) = (fleet.clone(), ledger.clone());
        // Decides at once, as the fleet does, and records the decision under the call's key.
        let allocator = service_fn(move |request: AllocationRequest| {
            let result = fleet.allocate(&request);
            if let (Ok(response), Some(key)) = (&result, key_of(&request)) {
                ledger.allocated(key, &response.game_server_name);
            }
            std::future::ready(result)
        });
        let (reporter, health) = tonic_health::server::health_reporter();
        let processor = ProcessorHandler::builder(allocator)
            .pull_interval(pull_interval)
            .health_reporter(reporter)
            .build();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = server::recommended_server()
            .add_routes(processor.routes(health))
            .serve_with_incoming_shutdown(server::incoming(listener), async {
                let _ = stopped.await;
            });
        let task = tokio::spawn(async move {
            if let Err(error) = serving.await {
                eprintln!("processor failed: {error}");
            }
        });
        Self {
            address,
            stop,
            task,
        }
    }

    /// Shuts the processor down, waiting at most a second for its connections to close (a
    /// black-holed one never would).
    async fn stop(mut self) {
        let _ = self.stop.send(());
        if tokio::time::timeout(Duration::from_secs(1), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

fn key_of(request: &AllocationRequest) -> Option<u64> {
    request
        .metadata
        .as_ref()?
        .labels
        .get(KEY_LABEL)?
        .parse()
        .ok()
}

fn request(key: u64) -> AllocationRequest {
    AllocationRequest {
        namespace: "default".into(),
        metadata: Some(MetaPatch {
            labels: [(KEY_LABEL.to_owned(), key.to_string())].into(),
            ..MetaPatch::default()
        }),
        ..AllocationRequest::default()
    }
}

/// The resident and peak memory of this process, in bytes, where the system tells.
fn memory() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        let line = status.lines().find(|line| line.starts_with(name))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
}

#[tokio::main]
async fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    logging::init("error");
    let args = Args::parse();
    let callers = args.clients * args.concurrency;
    // Room for every open call twice over, on nodes of 20.
    let fleet = Fleet::new(demo_fleet((callers / 5).max(4), 20));
    let ledger = Ledger::default();

    let mut processor = Processor::start(&fleet, &ledger, args.pull_interval).await;
    let proxy = Proxy::start(processor.address).await;
    println!(
        "soak: {:?}, {} clients x {} calls, a fault every {:?} (cut, black hole, delay, half close, restart)",
        args.duration, args.clients, args.concurrency, args.fault_every
    );

    let started = Instant::now();
    let deadline = started + args.duration;
    let mut callers_set = JoinSet::new();
    let next_key = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for index in 0..args.clients {
        let client = ProcessorClient::builder(proxy.uri())
            .client_id(format!("soak-{index}"))
            .allocation_timeout(args.timeout)
            .reconnect_interval(Duration::from_millis(50))
            .max_reconnect_interval(Duration::from_millis(500))
            .idle_timeout(Duration::from_secs(1))
            .spawn()?;
        for _ in 0..args.concurrency {
            let (client, ledger, fleet) = (client.clone(), ledger.clone(), fleet.clone());
            let next_key = Arc::clone(&next_key);
            callers_set.spawn(async move {
                while Instant::now() < deadline {
                    let key = next_key.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let result = client.allocate(request(key)).await;
                    // The session ends with the call: the game server is Ready again.
                    if let Some(game_server) = ledger.ended(key, &result) {
                        fleet.deallocate("default", &game_server);
                    }
                    if result.is_err() {
                        // A failing stack is not hammered in a tight loop.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            });
        }
    }

    let sampler = tokio::spawn(async move {
        let mut samples = Vec::new();
        while Instant::now() < deadline {
            if let Some((resident, _)) = memory() {
                samples.push(resident);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        samples
    });

    let mut injected = BTreeMap::<String, usize>::new();
    for fault in ROTATION.iter().cycle() {
        tokio::time::sleep(args.fault_every).await;
        if Instant::now() + args.fault_every / 2 >= deadline {
            break;
        }
        let at = started.elapsed();
        match fault {
            Fault::Cut => proxy.cut(),
            Fault::BlackHole => proxy.black_hole(),
            Fault::HalfClose => proxy.half_close(),
            Fault::Delay => {
                proxy.set_delay(Duration::from_millis(30));
                tokio::time::sleep(args.fault_every / 2).await;
                proxy.set_delay(Duration::ZERO);
            }
            Fault::Restart => {
                let next = Processor::start(&fleet, &ledger, args.pull_interval).await;
                proxy.set_upstream(next.address);
                let old = std::mem::replace(&mut processor, next);
                proxy.cut();
                old.stop().await;
            }
        }
        println!("{:>6.1}s  {fault:?}", at.as_secs_f64());
        *injected.entry(format!("{fault:?}")).or_default() += 1;
    }

    // Every call ends within its timeout, plus the time to notice a dead connection.
    let mut hung = 0;
    let grace = args.timeout + Duration::from_secs(5);
    let ended = tokio::time::timeout(grace, async {
        while callers_set.join_next().await.is_some() {}
    })
    .await;
    if ended.is_err() {
        hung = callers_set.len();
        callers_set.abort_all();
    }
    let samples = sampler.await?;
    let accepted = proxy.accepted();
    drop(proxy);
    processor.stop().await;

    let books = ledger.books();
    let calls: u64 = books.outcomes.values().sum();
    println!();
    println!("faults       {injected:?}");
    println!("connections  {accepted} accepted by the proxy");
    println!(
        "calls        {calls} in {:.1}s ({:.0}/s)",
        started.elapsed().as_secs_f64(),
        calls as f64 / args.duration.as_secs_f64()
    );
    for (outcome, count) in &books.outcomes {
        println!("  {outcome:<24} {count}");
    }
    println!(
        "answer lost  {} allocated without their caller learning it",
        books.answer_lost
    );
    println!(
        "late         {} allocated after their caller had ended",
        books.allocated.len()
    );
    if samples.len() >= 10 {
        let tenth = samples.len() / 10;
        let mean = |part: &[u64]| part.iter().sum::<u64>() as f64 / part.len() as f64;
        println!(
            "memory       first tenth {}, last tenth {}, peak {}",
            mib(mean(&samples[..tenth])),
            mib(mean(&samples[samples.len() - tenth..])),
            memory().map_or("unavailable".to_owned(), |(_, peak)| mib(peak as f64)),
        );
    }

    let mut failed = false;
    if hung > 0 {
        println!("FAIL: {hung} callers still waiting {grace:?} after the end");
        failed = true;
    }
    for violation in &books.violations {
        println!("FAIL: {violation}");
        failed = true;
    }
    if calls == 0 {
        println!("FAIL: no call ended");
        failed = true;
    }
    if failed {
        return Ok(ExitCode::FAILURE);
    }
    println!(
        "ok: every call ended, every answer named its own allocation, no game server held twice"
    );
    Ok(ExitCode::SUCCESS)
}
