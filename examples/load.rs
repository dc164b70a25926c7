//! Load generator: the processor's throughput, latency and memory under a closed-loop load,
//! side by side with the same allocator served by plain unary calls.
//!
//! ```text
//! cargo run --release --example load -- --quick
//! cargo run --release --example load -- --clients 4 --concurrency 256 --max-batch-size 1000 \
//!     --pull-interval 1ms --duration 60s
//! cargo run --release --example load -- --pull-mode adaptive --pull-interval 10ms
//! cargo run --release --example load -- --addr http://127.0.0.1:9090 --baseline none
//! ```
//!
//! Without `--addr` it starts a processor on an ephemeral 127.0.0.1 port in this process, over
//! the chosen allocator, serving both `Processor/StreamBatches` and the unary
//! `AllocationService/Allocate`. It then runs two paths one after the other, each with a
//! warm-up and the same number of callers for the same time:
//!
//! - **batched**: `--clients` processor clients, each with `--concurrency` callers that call it
//!   in a closed loop (a caller sends its next request as soon as its last one was answered);
//! - **unary** (unless `--baseline none`): as many gRPC connections, each with as many callers,
//!   calling `AllocationService/Allocate` directly.
//!
//! For each path it prints allocations per second, the latency of the allocations (p50, p90,
//! p99, max), batches per second and their mean size (batched path), failed calls by gRPC code
//! and the process's resident memory averaged over the first and the last tenth of the
//! measured time; then the ratios of the batched path to the unary one and the peak resident
//! memory of the process (`VmHWM`). In process, the memory figures include the server.
//!
//! With `--addr`, the load goes to a running processor; the allocator and pull settings are
//! then the server's, and the baseline needs it to serve `AllocationService` too.
//!
//! Exits 1 when a path allocated nothing.
#![allow(clippy::print_stdout)]

use std::{
    fmt,
    future::Future,
    net::SocketAddr,
    process::ExitCode,
    sync::{Arc, Mutex},
    time::Duration,
};

use agones_processor::{
    AllocationRequest, AllocationResponse, ProcessorClient,
    allocator::{Fleet, demo_fleet},
    proto::{
        GameServerSelector, MetaPatch,
        allocation_response::{GameServerMetadata, GameServerStatusAddress, GameServerStatusPort},
        allocation_service_client::AllocationServiceClient,
    },
    server::{
        ProcessorHandler, incoming, recommended_server,
        record::{OutcomeStats, RecordLayer},
    },
};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::{net::TcpListener, task::JoinSet, time::Instant};
use tonic::{Code, transport::Channel};
use tower::{BoxError, Service, ServiceBuilder};

#[path = "stacks/logging.rs"]
mod logging;

/// Runs processor clients against a processor in a closed loop and reports throughput,
/// latency and memory, next to plain unary calls of the same allocator.
#[derive(Debug, Parser)]
struct Args {
    /// A running processor's URL (such as `http://127.0.0.1:9090`) instead of one in process.
    #[arg(long, conflicts_with = "serve")]
    addr: Option<String>,
    /// Only serve: start the processor on this address, with the allocator and pull settings
    /// given, until Ctrl-C, for a load run from another process with `--addr`.
    #[arg(long)]
    serve: Option<SocketAddr>,
    /// Processor clients, and connections of the unary baseline [default: 4, 2 with --quick].
    #[arg(long)]
    clients: Option<usize>,
    /// Callers per client, each with one call open at a time [default: 256, 16 with --quick].
    #[arg(long)]
    concurrency: Option<usize>,
    /// Most requests per batch, for the clients and the in-process server
    /// [default: 1000, 100 with --quick].
    #[arg(long)]
    max_batch_size: Option<usize>,
    /// Measured time per path [default: 10s, 500ms with --quick].
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Unmeasured load before each path's measured time [default: 1s, 100ms with --quick].
    #[arg(long, value_parser = humantime::parse_duration)]
    warm_up: Option<Duration>,
    /// How often the in-process server pulls every client.
    #[arg(long, default_value = "1ms", value_parser = humantime::parse_duration, conflicts_with = "addr")]
    pull_interval: Duration,
    /// Fixed: pull every interval. Adaptive: also pull a client again as soon as its batch is
    /// answered.
    #[arg(long, value_enum, default_value_t = PullMode::Fixed, conflicts_with = "addr")]
    pull_mode: PullMode,
    /// The in-process server's allocator.
    #[arg(long, value_enum, default_value_t = AllocatorKind::Noop, conflicts_with = "addr")]
    allocator: AllocatorKind,
    /// Realistic: requests with a selector and a label to add, no-op responses the size of the
    /// fleet's. Minimal: only a namespace and a game server name, to see the processor's own
    /// cost apart from building and encoding messages.
    #[arg(long, value_enum, default_value_t = Messages::Realistic)]
    messages: Messages,
    /// Whether to also measure plain unary `AllocationService/Allocate` calls.
    #[arg(long, value_enum, default_value_t = Baseline::Unary)]
    baseline: Baseline,
    /// Mean pause of each caller between two calls, drawn at random between zero and twice
    /// this, so that calls arrive at any moment between two pulls as they do from independent
    /// users; zero for a closed loop at full speed.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pause: Duration,
    /// A short run with small numbers (about 1 to 2 seconds), to check that everything works.
    #[arg(long)]
    quick: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PullMode {
    Fixed,
    Adaptive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AllocatorKind {
    /// Answers every request at once with the same response.
    Noop,
    /// The in-memory fleet, sized for the callers; callers mark each game server they get
    /// Ready again, so it never runs out.
    Fleet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Messages {
    Realistic,
    Minimal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Baseline {
    None,
    Unary,
}

/// The run's numbers, after `--quick` and the defaults.
#[derive(Debug, Clone, Copy)]
struct Settings {
    clients: usize,
    concurrency: usize,
    max_batch_size: usize,
    duration: Duration,
    warm_up: Duration,
    pause: Duration,
}

impl Settings {
    fn new(args: &Args) -> Self {
        let pick = |value: Option<usize>, normal: usize, quick: usize| {
            value
                .unwrap_or(if args.quick { quick } else { normal })
                .max(1)
        };
        let duration = |value: Option<Duration>, normal: u64, quick: u64| {
            value.unwrap_or(Duration::from_millis(if args.quick {
                quick
            } else {
                normal
            }))
        };
        Self {
            clients: pick(args.clients, 4, 2),
            concurrency: pick(args.concurrency, 256, 16),
            max_batch_size: pick(args.max_batch_size, 1000, 100),
            duration: duration(args.duration, 10_000, 500).max(Duration::from_millis(10)),
            warm_up: duration(args.warm_up, 1_000, 100),
            pause: args.pause,
        }
    }

    fn callers(&self) -> usize {
        self.clients * self.concurrency
    }
}

#[tokio::main]
async fn main() -> Result<ExitCode, BoxError> {
    logging::init("warn");
    let args = Args::parse();
    let settings = Settings::new(&args);

    if let Some(address) = args.serve {
        return serve_only(address, &args, &settings).await;
    }
    let server = match &args.addr {
        Some(_) => None,
        None => {
            let local: SocketAddr = ([127, 0, 0, 1], 0).into();
            Some(InProcess::start(local, Recycle::ByCallers, &args, &settings).await?)
        }
    };
    let address = match (&args.addr, &server) {
        (Some(addr), _) => addr.clone(),
        (None, Some(server)) => format!("http://{}", server.address),
        (None, None) => unreachable!("a server is started without --addr"),
    };
    describe(&args, &settings, &address);

    let phases = if args.baseline == Baseline::Unary {
        2
    } else {
        1
    };
    let progress = progress_bar(phases * (settings.warm_up + settings.duration));
    let recycle = server.as_ref().and_then(|server| server.fleet.clone());
    let request = request(args.messages);

    let batched = run_batched(
        &address,
        &settings,
        &request,
        recycle.clone(),
        server.as_ref(),
        &progress,
    )
    .await?;
    let unary = match args.baseline {
        Baseline::Unary => Some(
            run_unary(
                &address,
                &settings,
                &request,
                recycle,
                server.as_ref(),
                &progress,
            )
            .await?,
        ),
        Baseline::None => None,
    };
    progress.finish_and_clear();

    print!("{batched}");
    if let Some(unary) = &unary {
        print!("{unary}");
        print_ratios(&batched, unary);
    }
    if args.quick {
        println!("quick mode: small numbers to check that everything works; not a measurement");
    }
    match memory_kib("VmHWM") {
        Some(peak) => println!("peak memory (VmHWM)    {}", mib(peak)),
        None => println!("peak memory (VmHWM)    unavailable"),
    }

    let idle = batched.allocated == 0 || unary.as_ref().is_some_and(|unary| unary.allocated == 0);
    Ok(if idle {
        println!("FAILED: a path allocated nothing");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Serves until Ctrl-C, then prints what was served.
async fn serve_only(
    address: SocketAddr,
    args: &Args,
    settings: &Settings,
) -> Result<ExitCode, BoxError> {
    let server = InProcess::start(address, Recycle::ByServer, args, settings).await?;
    println!(
        "processor at http://{}: {:?} allocator, {:?} pulls every {:?}, {:?} messages; \
         Ctrl-C stops",
        server.address, args.allocator, args.pull_mode, args.pull_interval, args.messages
    );
    tokio::signal::ctrl_c().await?;
    let counters = (server.counters)();
    println!(
        "served {} batches ({} requests), {} allocator calls",
        counters.batches, counters.requests, counters.allocator_calls
    );
    Ok(ExitCode::SUCCESS)
}

fn describe(args: &Args, settings: &Settings, address: &str) {
    match &args.addr {
        Some(_) => println!("processor at {address}"),
        None => println!(
            "processor in process at {address}: {:?} allocator, {:?} pulls every {:?}, \
             {:?} messages",
            args.allocator, args.pull_mode, args.pull_interval, args.messages
        ),
    }
    println!(
        "{} clients x {} callers = {} callers, max batch size {}; \
         warm-up {:?}, measured {:?} per path",
        settings.clients,
        settings.concurrency,
        settings.callers(),
        settings.max_batch_size,
        settings.warm_up,
        settings.duration,
    );
    if !settings.pause.is_zero() {
        println!(
            "callers pause between calls for a random time up to {:?} (mean {:?})",
            settings.pause * 2,
            settings.pause
        );
    }
}

/// A progress bar for runs long enough to want one; hidden when standard error is not a
/// terminal.
fn progress_bar(total: Duration) -> ProgressBar {
    if total < Duration::from_secs(3) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total.as_millis() as u64);
    let style = ProgressStyle::with_template("{msg:>8} [{bar:40}] {elapsed} / {duration}")
        .expect("a valid template")
        .progress_chars("=> ");
    bar.set_style(style);
    bar
}

/// The request every caller sends: a Packed request for a capture-the-flag game server with a
/// label to add, as a game backend sends it, or only its namespace.
fn request(messages: Messages) -> AllocationRequest {
    if messages == Messages::Minimal {
        return AllocationRequest {
            namespace: "default".into(),
            ..Default::default()
        };
    }
    AllocationRequest {
        namespace: "default".into(),
        game_server_selectors: vec![GameServerSelector {
            match_labels: [("mode".to_owned(), "ctf".to_owned())].into(),
            ..Default::default()
        }],
        metadata: Some(MetaPatch {
            labels: [("match".to_owned(), "load".to_owned())].into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What the no-op allocator answers: a response of the size the fleet gives, or only a game
/// server name.
fn fixed_response(messages: Messages) -> AllocationResponse {
    if messages == Messages::Minimal {
        return AllocationResponse {
            game_server_name: "gs-03-017".into(),
            ..Default::default()
        };
    }
    AllocationResponse {
        game_server_name: "gs-03-017".into(),
        ports: vec![GameServerStatusPort {
            name: "default".into(),
            port: 7017,
        }],
        address: "10.0.3.17".into(),
        addresses: vec![GameServerStatusAddress {
            r#type: "InternalIP".into(),
            address: "10.0.3.17".into(),
        }],
        node_name: "node-3".into(),
        source: "local".into(),
        metadata: Some(GameServerMetadata {
            labels: [
                ("mode".to_owned(), "ctf".to_owned()),
                ("match".to_owned(), "load".to_owned()),
            ]
            .into(),
            annotations: [(
                "agones.dev/last-allocated".to_owned(),
                "2026-12-04T10:11:12.123456789Z".to_owned(),
            )]
            .into(),
        }),
        ..Default::default()
    }
}

/// Who marks the fleet's game servers Ready again, so that it never runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recycle {
    /// The callers in this process, when their call returns: sessions of no length.
    ByCallers,
    /// The server, right after allocating, for callers in another process.
    ByServer,
}

/// The processor started in this process, and what it counts.
struct InProcess {
    address: SocketAddr,
    counters: Box<dyn Fn() -> ServerCounters + Send + Sync>,
    /// The fleet, with `--allocator fleet`, so that callers can mark game servers Ready again.
    fleet: Option<Fleet>,
}

/// The in-process server's counters at one moment.
#[derive(Debug, Clone, Copy, Default)]
struct ServerCounters {
    batches: u64,
    requests: u64,
    pulls_sent: u64,
    pulls_skipped: u64,
    /// Calls of the allocator, from either path, and their summed latency.
    allocator_calls: u64,
    allocator_nanos: u128,
}

impl InProcess {
    async fn start(
        address: SocketAddr,
        recycle: Recycle,
        args: &Args,
        settings: &Settings,
    ) -> Result<Self, BoxError> {
        let outcomes = OutcomeStats::default();
        let record = RecordLayer::new(outcomes.clone());
        match args.allocator {
            AllocatorKind::Noop => {
                let response = fixed_response(args.messages);
                let noop = tower::service_fn(move |_: AllocationRequest| {
                    std::future::ready(Ok::<_, BoxError>(response.clone()))
                });
                let allocator = ServiceBuilder::new().layer(record).service(noop);
                Self::serve(address, allocator, outcomes, None, args, settings).await
            }
            AllocatorKind::Fleet => {
                // About a quarter of the demo fleet is Ready for capture the flag: ten game
                // servers per caller leave two or three of those each, so allocations find one
                // even while every caller holds one.
                let nodes = settings.callers().div_ceil(4).max(8);
                let fleet = Fleet::new(demo_fleet(nodes, 40));
                if recycle == Recycle::ByCallers {
                    let allocator = ServiceBuilder::new().layer(record).service(fleet.clone());
                    return Self::serve(address, allocator, outcomes, Some(fleet), args, settings)
                        .await;
                }
                let recycling = tower::service_fn(move |request: AllocationRequest| {
                    let allocated = fleet.allocate(&request);
                    if let Ok(response) = &allocated {
                        fleet.deallocate(&request.namespace, &response.game_server_name);
                    }
                    std::future::ready(allocated)
                });
                let allocator = ServiceBuilder::new().layer(record).service(recycling);
                Self::serve(address, allocator, outcomes, None, args, settings).await
            }
        }
    }

    async fn serve<A>(
        address: SocketAddr,
        allocator: A,
        outcomes: OutcomeStats,
        fleet: Option<Fleet>,
        args: &Args,
        settings: &Settings,
    ) -> Result<Self, BoxError>
    where
        A: Service<AllocationRequest, Response = AllocationResponse>
            + Clone
            + Send
            + Sync
            + 'static,
        A::Error: Into<BoxError>,
        A::Future: Send + 'static,
    {
        let listener = TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        let processor = ProcessorHandler::builder(allocator)
            .pull_interval(args.pull_interval)
            .adaptive_pulling(args.pull_mode == PullMode::Adaptive)
            .max_batch_size(settings.max_batch_size)
            .max_clients(settings.clients.max(1_000))
            .health_reporter(health_reporter)
            .build();
        let server = recommended_server()
            .add_routes(processor.routes(health_service))
            .add_service(processor.allocation_service().into_server())
            .serve_with_incoming(incoming(listener));
        tokio::spawn(async move {
            if let Err(error) = server.await {
                tracing::error!(%error, "processor failed");
            }
        });
        let counters = Box::new(move || ServerCounters {
            batches: processor.batches_received(),
            requests: processor.requests_received(),
            pulls_sent: processor.pulls_sent(),
            pulls_skipped: processor.pulls_skipped(),
            allocator_calls: outcomes.total(),
            allocator_nanos: outcomes.mean_latency().as_nanos() * u128::from(outcomes.total()),
        });
        Ok(Self {
            address,
            counters,
            fleet,
        })
    }
}

/// One way of calling the allocator: through the processor or by unary calls.
trait Caller: Clone + Send + 'static {
    fn allocate(
        &self,
        request: AllocationRequest,
    ) -> impl Future<Output = Result<AllocationResponse, Code>> + Send;
}

#[derive(Clone)]
struct Batched(ProcessorClient);

impl Caller for Batched {
    fn allocate(
        &self,
        request: AllocationRequest,
    ) -> impl Future<Output = Result<AllocationResponse, Code>> + Send {
        let client = self.0.clone();
        async move {
            client
                .allocate_owned(request)
                .await
                .map_err(|error| error.code())
        }
    }
}

#[derive(Clone)]
struct Unary(AllocationServiceClient<Channel>);

impl Caller for Unary {
    fn allocate(
        &self,
        request: AllocationRequest,
    ) -> impl Future<Output = Result<AllocationResponse, Code>> + Send {
        let mut client = self.0.clone();
        async move {
            client
                .allocate(request)
                .await
                .map(tonic::Response::into_inner)
                .map_err(|status| status.code())
        }
    }
}

/// When the measured time of a path starts and ends.
#[derive(Debug, Clone, Copy)]
struct Window {
    from: Instant,
    until: Instant,
}

impl Window {
    fn contains(&self, instant: Instant) -> bool {
        (self.from..=self.until).contains(&instant)
    }
}

/// Latencies of allocations in microseconds, shared by the callers of one client.
type Latencies = Arc<Mutex<Histogram<u64>>>;

fn latencies() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

/// What one caller saw in the measured time.
#[derive(Debug, Default)]
struct Tally {
    allocated: u64,
    errors: [u64; 17],
}

/// Calls in a closed loop, with the given mean pause between calls, until the window ends;
/// counts the calls that ended inside it.
async fn call_in_a_loop<C: Caller>(
    caller: C,
    request: AllocationRequest,
    window: Window,
    latencies: Latencies,
    recycle: Option<Fleet>,
    pause: Duration,
) -> Tally {
    let mut tally = Tally::default();
    loop {
        if !pause.is_zero() {
            let nanos = rand::random_range(0..=pause.as_nanos() as u64 * 2);
            tokio::time::sleep(Duration::from_nanos(nanos)).await;
        }
        let started = Instant::now();
        if started >= window.until {
            return tally;
        }
        let result = caller.allocate(request.clone()).await;
        let finished = Instant::now();
        let counted = window.contains(finished);
        match result {
            Ok(response) => {
                if let Some(fleet) = &recycle {
                    // The session ends at once: the game server is Ready for the next caller.
                    fleet.deallocate(&request.namespace, &response.game_server_name);
                }
                if counted {
                    tally.allocated += 1;
                    let micros = (finished - started).as_micros() as u64;
                    latencies
                        .lock()
                        .expect("never poisoned")
                        .saturating_record(micros.max(1));
                }
            }
            Err(code) if counted => tally.errors[code as usize] += 1,
            Err(_) => {}
        }
    }
}

/// The figures of one path.
struct PathReport {
    name: &'static str,
    window: Duration,
    allocated: u64,
    errors: [u64; 17],
    latencies: Histogram<u64>,
    /// Batches sent by the clients in the window and the requests in them (batched path).
    batches: Option<(u64, u64)>,
    /// The in-process server's counters over the window.
    server: Option<ServerCounters>,
    /// Mean resident memory in each tenth of the window, in KiB; `None` without samples.
    memory: Vec<Option<u64>>,
    /// CPU time of the whole process (every thread, user and system) over the window.
    cpu: Option<Duration>,
}

impl PathReport {
    fn per_second(&self, count: u64) -> f64 {
        count as f64 / self.window.as_secs_f64()
    }

    fn throughput(&self) -> f64 {
        self.per_second(self.allocated)
    }

    fn percentile(&self, quantile: f64) -> Duration {
        Duration::from_micros(self.latencies.value_at_quantile(quantile))
    }
}

impl fmt::Display for PathReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.name)?;
        writeln!(
            f,
            "  allocations/s        {:.0} ({} in {:.2?})",
            self.throughput(),
            self.allocated,
            self.window
        )?;
        if self.latencies.is_empty() {
            writeln!(f, "  latency              none measured")?;
        } else {
            writeln!(
                f,
                "  latency              p50 {}  p90 {}  p99 {}  max {}",
                millis(self.percentile(0.50)),
                millis(self.percentile(0.90)),
                millis(self.percentile(0.99)),
                millis(Duration::from_micros(self.latencies.max())),
            )?;
        }
        if let Some((batches, requests)) = self.batches {
            let mean = if batches == 0 {
                0.0
            } else {
                requests as f64 / batches as f64
            };
            writeln!(
                f,
                "  batches/s            {:.0}, mean batch size {mean:.1}",
                self.per_second(batches)
            )?;
        }
        if let Some(server) = &self.server {
            let mean = if server.allocator_calls == 0 {
                Duration::ZERO
            } else {
                Duration::from_nanos(
                    (server.allocator_nanos / u128::from(server.allocator_calls)) as u64,
                )
            };
            if self.batches.is_some() {
                writeln!(
                    f,
                    "  server               {} batches received ({} requests), {} pulls sent, \
                     {} skipped",
                    server.batches, server.requests, server.pulls_sent, server.pulls_skipped,
                )?;
            }
            writeln!(
                f,
                "  allocator            {} calls, mean {mean:.1?}",
                server.allocator_calls
            )?;
        }
        let errors: Vec<String> = self
            .errors
            .iter()
            .enumerate()
            .filter(|(_, count)| **count > 0)
            .map(|(code, count)| format!("{:?} {count}", Code::from_i32(code as i32)))
            .collect();
        if errors.is_empty() {
            writeln!(f, "  errors               none")?;
        } else {
            writeln!(f, "  errors               {}", errors.join(", "))?;
        }
        match self.cpu {
            Some(cpu) => {
                let per_allocation = if self.allocated == 0 {
                    Duration::ZERO
                } else {
                    cpu / u32::try_from(self.allocated).unwrap_or(u32::MAX)
                };
                writeln!(
                    f,
                    "  cpu                  {:.2} cores busy, {:.1} µs per allocation",
                    cpu.as_secs_f64() / self.window.as_secs_f64(),
                    per_allocation.as_secs_f64() * 1e6,
                )?;
            }
            None => writeln!(f, "  cpu                  unavailable")?,
        }
        match (self.memory.first(), self.memory.last()) {
            (Some(Some(first)), Some(Some(last))) => {
                writeln!(
                    f,
                    "  memory (RSS)         first tenth {}, last tenth {} ({:+.1} %)",
                    mib(*first),
                    mib(*last),
                    (*last as f64 - *first as f64) * 100.0 / (*first).max(1) as f64
                )?;
                let tenths: Vec<String> = self
                    .memory
                    .iter()
                    .map(|kib| {
                        kib.map_or_else(
                            || "-".to_owned(),
                            |kib| format!("{:.1}", kib as f64 / 1024.0),
                        )
                    })
                    .collect();
                writeln!(f, "  memory by tenth      {} MiB", tenths.join(" "))
            }
            _ => writeln!(f, "  memory (RSS)         unavailable"),
        }
    }
}

fn print_ratios(batched: &PathReport, unary: &PathReport) {
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            format!("{:.2}x", a / b)
        } else {
            "n/a".to_owned()
        }
    };
    let latency = |report: &PathReport, quantile| report.percentile(quantile).as_secs_f64();
    println!(
        "batched / unary        throughput {}  p50 {}  p99 {}",
        ratio(batched.throughput(), unary.throughput()),
        ratio(latency(batched, 0.50), latency(unary, 0.50)),
        ratio(latency(batched, 0.99), latency(unary, 0.99)),
    );
    let added = |quantile| (latency(batched, quantile) - latency(unary, quantile)) * 1e3;
    println!(
        "batched - unary        p50 {:+.2} ms  p99 {:+.2} ms",
        added(0.50),
        added(0.99)
    );
}

fn millis(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1e3)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`); `None` where there is none.
fn memory_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

/// The CPU time the process has used so far, every thread, user and system, from
/// `/proc/self/stat`; `None` where there is none.
fn cpu_time() -> Option<Duration> {
    /// The unit of `/proc/<pid>/stat` times on Linux, whatever the kernel's own tick rate.
    const TICKS_PER_SECOND: u64 = 100;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name, in parentheses, may hold spaces: fields are counted after it.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // `utime` and `stime` are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND))
}

/// Runs the batched path: processor clients with their callers.
async fn run_batched(
    address: &str,
    settings: &Settings,
    request: &AllocationRequest,
    recycle: Option<Fleet>,
    server: Option<&InProcess>,
    progress: &ProgressBar,
) -> Result<PathReport, BoxError> {
    let mut clients = Vec::with_capacity(settings.clients);
    for index in 0..settings.clients {
        let client = ProcessorClient::builder(address.to_owned())
            .client_id(format!("load-{index}"))
            .max_batch_size(settings.max_batch_size)
            .buffer_size(settings.concurrency.max(1024))
            .reconnect_interval(Duration::from_millis(100))
            .spawn()?;
        clients.push(client);
    }
    // Every client has its stream before the clock starts.
    let connected = async {
        while clients.iter().any(|client| client.stats().connects == 0) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), connected)
        .await
        .map_err(|_| format!("no stream to the processor at {address} within 10 s"))?;

    let batches = {
        let clients = clients.clone();
        move || {
            clients.iter().fold((0, 0), |(batches, requests), client| {
                let stats = client.stats();
                (batches + stats.batches_sent, requests + stats.requests_sent)
            })
        }
    };
    let callers = clients.into_iter().map(Batched).collect();
    Ok(run_path(
        "batched (Processor/StreamBatches)",
        callers,
        settings,
        request,
        recycle,
        server,
        progress,
        Some(Box::new(batches)),
    )
    .await)
}

/// Runs the baseline: plain unary calls, one connection per client.
async fn run_unary(
    address: &str,
    settings: &Settings,
    request: &AllocationRequest,
    recycle: Option<Fleet>,
    server: Option<&InProcess>,
    progress: &ProgressBar,
) -> Result<PathReport, BoxError> {
    let mut callers = Vec::with_capacity(settings.clients);
    for _ in 0..settings.clients {
        let channel = tonic::transport::Endpoint::from_shared(address.to_owned())?
            .tcp_nodelay(true)
            .connect()
            .await?;
        callers.push(Unary(AllocationServiceClient::new(channel)));
    }
    Ok(run_path(
        "unary (AllocationService/Allocate)",
        callers,
        settings,
        request,
        recycle,
        server,
        progress,
        None,
    )
    .await)
}

/// Client-side batch counters: batches and requests sent so far.
type BatchCounter = Box<dyn Fn() -> (u64, u64) + Send>;

/// Runs `concurrency` callers per entry of `callers` through a warm-up and the measured time,
/// sampling memory and counters meanwhile.
#[allow(clippy::too_many_arguments)]
async fn run_path<C: Caller>(
    name: &'static str,
    callers: Vec<C>,
    settings: &Settings,
    request: &AllocationRequest,
    recycle: Option<Fleet>,
    server: Option<&InProcess>,
    progress: &ProgressBar,
    batches: Option<BatchCounter>,
) -> PathReport {
    let started = Instant::now();
    let window = Window {
        from: started + settings.warm_up,
        until: started + settings.warm_up + settings.duration,
    };
    let histograms: Vec<Latencies> = callers
        .iter()
        .map(|_| Arc::new(Mutex::new(latencies())))
        .collect();
    let mut tasks = JoinSet::new();
    for (caller, histogram) in callers.iter().zip(&histograms) {
        for _ in 0..settings.concurrency {
            tasks.spawn(call_in_a_loop(
                caller.clone(),
                request.clone(),
                window,
                Arc::clone(histogram),
                recycle.clone(),
                settings.pause,
            ));
        }
    }

    // Warm-up, then counters at the start of the window.
    progress.set_message(name.split(' ').next().unwrap_or(name).to_owned());
    let offset = progress.position();
    let tick =
        (settings.duration / 100).clamp(Duration::from_millis(10), Duration::from_millis(100));
    while Instant::now() < window.from {
        tokio::time::sleep_until((Instant::now() + tick).min(window.from)).await;
        progress.set_position(offset + started.elapsed().as_millis() as u64);
    }
    let server_before = server.map(|server| (server.counters)());
    let cpu_before = cpu_time();
    let batches_before = batches.as_ref().map(|count| count());

    // Memory samples through the window.
    let mut samples = Vec::with_capacity(128);
    while Instant::now() < window.until {
        tokio::time::sleep_until((Instant::now() + tick).min(window.until)).await;
        let now = Instant::now();
        if let Some(rss) = memory_kib("VmRSS") {
            samples.push((now - window.from, rss));
        }
        progress.set_position(offset + started.elapsed().as_millis() as u64);
    }
    let server_after = server.map(|server| (server.counters)());
    let cpu_after = cpu_time();
    let batches_after = batches.as_ref().map(|count| count());

    let mut tally = Tally::default();
    while let Some(caller) = tasks.join_next().await {
        let caller = caller.expect("callers do not panic");
        tally.allocated += caller.allocated;
        for (total, count) in tally.errors.iter_mut().zip(caller.errors) {
            *total += count;
        }
    }
    let mut merged = latencies();
    for histogram in histograms {
        merged
            .add(&*histogram.lock().expect("never poisoned"))
            .expect("same bounds");
    }

    PathReport {
        name,
        window: settings.duration,
        allocated: tally.allocated,
        errors: tally.errors,
        latencies: merged,
        batches: batches_before
            .zip(batches_after)
            .map(|(before, after)| (after.0 - before.0, after.1 - before.1)),
        server: server_before
            .zip(server_after)
            .map(|(before, after)| ServerCounters {
                batches: after.batches - before.batches,
                requests: after.requests - before.requests,
                pulls_sent: after.pulls_sent - before.pulls_sent,
                pulls_skipped: after.pulls_skipped - before.pulls_skipped,
                allocator_calls: after.allocator_calls - before.allocator_calls,
                allocator_nanos: after.allocator_nanos.saturating_sub(before.allocator_nanos),
            }),
        memory: tenths(&samples, settings.duration),
        cpu: cpu_before
            .zip(cpu_after)
            .map(|(before, after)| after.saturating_sub(before)),
    }
}

/// Mean resident memory over each tenth of the window.
fn tenths(samples: &[(Duration, u64)], window: Duration) -> Vec<Option<u64>> {
    let mut sums = [(0_u64, 0_u64); 10];
    for (at, rss) in samples {
        let tenth = ((at.as_secs_f64() / window.as_secs_f64() * 10.0) as usize).min(9);
        sums[tenth].0 += rss;
        sums[tenth].1 += 1;
    }
    sums.iter()
        .map(|(sum, count)| (*count > 0).then(|| sum / count))
        .collect()
}
