//! The main job, end to end on one machine: a processor over an in-memory fleet, three
//! allocator replicas as clients, and a mixed stream of allocation requests from all of them.
//!
//! ```text
//! cargo run --example quickstart
//! cargo run --example quickstart -- --requests-per-client 1000 --pull-interval 50ms
//! cargo run --example quickstart -- --fleet examples/fleet.yaml --requests-per-client 5
//! ```
//!
//! Exits non-zero if any call went unanswered or a Ready game server was handed out twice.
#![allow(clippy::print_stdout)]

use std::{
    collections::{BTreeMap, HashMap},
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use agones_processor::{
    AllocationRequest, HEALTH_SERVICE_NAME, ProcessorClient,
    allocator::{Fleet, demo_fleet},
    client::Error,
    proto::{
        GameServerSelector, MetaPatch, allocation_request::SchedulingStrategy,
        game_server_selector::GameServerState,
    },
    server::ProcessorHandler,
};
use clap::Parser;
use tokio::{net::TcpListener, sync::Semaphore, task::JoinSet};

#[path = "stacks/logging.rs"]
mod logging;

/// Runs a processor and three clients over an in-memory fleet and prints what happened.
#[derive(Debug, Parser)]
struct Args {
    /// Allocator replicas connected to the processor.
    #[arg(long, default_value_t = 3)]
    clients: usize,
    /// Requests each client sends.
    #[arg(long, default_value_t = 200)]
    requests_per_client: usize,
    /// Calls each client keeps open at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Nodes in the fleet.
    #[arg(long, default_value_t = 8)]
    nodes: usize,
    /// Game servers per node.
    #[arg(long, default_value_t = 40)]
    per_node: usize,
    /// A JSON or YAML fleet file (such as `examples/fleet.yaml`) instead of a generated fleet.
    #[arg(long)]
    fleet: Option<std::path::PathBuf>,
    /// How often the processor pulls every client.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pull_interval: Duration,
}

/// How one call ended.
#[derive(Debug)]
struct Outcome {
    kind: &'static str,
    wanted_ready: bool,
    latency: Duration,
    result: Result<(String, String), Error>,
}

#[tokio::main]
async fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    logging::init("warn");
    let args = Args::parse();

    // The processor, serving the embedded fleet allocator on an ephemeral loopback port.
    let fleet = match &args.fleet {
        Some(path) => Fleet::from_file(path)?,
        None => Fleet::new(demo_fleet(args.nodes, args.per_node)),
    };
    let initially = summarize_states(&fleet);
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let processor = ProcessorHandler::builder(fleet.clone())
        .pull_interval(args.pull_interval)
        .health_reporter(health_reporter)
        .build();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(processor.clone().into_server())
            .serve_with_incoming(agones_processor::server::incoming(listener)),
    );
    println!(
        "processor on {address} (health service {HEALTH_SERVICE_NAME:?}), pulling every {:?}",
        args.pull_interval
    );
    println!(
        "fleet: {} game servers on {} nodes, {} Ready, {} Allocated, {} other",
        fleet.len(),
        // Counted from the fleet, which may come from a file rather than `--nodes`.
        fleet
            .game_servers()
            .iter()
            .map(|gs| gs.node_name.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        initially.0,
        initially.1,
        initially.2
    );

    // The allocator replicas, all sending at once.
    let started = Instant::now();
    let mut replicas = JoinSet::new();
    let mut clients = Vec::new();
    for replica in 0..args.clients {
        let client = ProcessorClient::builder(format!("http://{address}"))
            .client_id(format!("allocator-{replica}"))
            .allocation_timeout(Duration::from_secs(10))
            .spawn()?;
        clients.push(client.clone());
        replicas.spawn(run_replica(
            client,
            replica,
            args.requests_per_client,
            args.concurrency,
        ));
    }
    let mut outcomes = Vec::new();
    while let Some(replica) = replicas.join_next().await {
        outcomes.extend(replica?);
    }
    let elapsed = started.elapsed();

    let sent = args.clients * args.requests_per_client;
    let lost = sent - outcomes.len();
    let double = ready_servers_handed_out_twice(&outcomes);
    report(&outcomes, sent, elapsed, &processor, &clients);
    let finally = summarize_states(&fleet);
    println!(
        "fleet after: {} Ready, {} Allocated, {} other",
        finally.0, finally.1, finally.2
    );

    server.abort();
    if lost > 0 || !double.is_empty() {
        println!("FAILED: {lost} calls lost, Ready game servers allocated twice: {double:?}");
        return Ok(ExitCode::FAILURE);
    }
    println!("ok: every call answered exactly once, no Ready game server allocated twice");
    Ok(ExitCode::SUCCESS)
}

/// Sends `count` requests of mixed kinds through one client, `concurrency` at a time.
async fn run_replica(
    client: ProcessorClient,
    replica: usize,
    count: usize,
    concurrency: usize,
) -> Vec<Outcome> {
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut calls = JoinSet::new();
    for i in 0..count {
        let permit = Arc::clone(&permits)
            .acquire_owned()
            .await
            .expect("never closed");
        let client = client.clone();
        let (kind, wanted_ready, request) = mixed_request(replica, i);
        calls.spawn(async move {
            let started = Instant::now();
            let result = client
                .allocate(request)
                .await
                .map(|response| (response.game_server_name, response.node_name));
            drop(permit);
            Outcome {
                kind,
                wanted_ready,
                latency: started.elapsed(),
                result,
            }
        });
    }
    calls.join_all().await
}

/// The `i`-th request of a replica: a rotation of the kinds a game backend sends.
fn mixed_request(replica: usize, i: usize) -> (&'static str, bool, AllocationRequest) {
    let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let selector = |pairs: &[(&str, &str)]| GameServerSelector {
        match_labels: labels(pairs),
        ..Default::default()
    };
    let match_id = format!("m-{replica}-{i}");
    let metadata = Some(MetaPatch {
        labels: labels(&[("match", &match_id)]),
        annotations: labels(&[("allocated-by", &format!("allocator-{replica}"))]),
    });
    let mut request = AllocationRequest {
        namespace: "default".into(),
        metadata,
        ..Default::default()
    };
    let kind = match i % 6 {
        0 => {
            request.game_server_selectors =
                vec![selector(&[("mode", "ctf"), ("region", "eu-west")])];
            "packed ctf eu-west"
        }
        1 => {
            request.scheduling = SchedulingStrategy::Distributed as i32;
            request.game_server_selectors = vec![selector(&[("region", "us-east")])];
            "distributed us-east"
        }
        2 => {
            // Try the newest version first, then any deathmatch server.
            request.game_server_selectors = vec![
                selector(&[("mode", "deathmatch"), ("version", "2.0.0")]),
                selector(&[("mode", "deathmatch")]),
            ];
            "deathmatch, newest first"
        }
        3 => {
            #[allow(deprecated)]
            {
                request.required_game_server_selector = Some(selector(&[("mode", "coop")]));
            }
            "coop (deprecated selector)"
        }
        4 => {
            // Join a session already running: re-allocate an Allocated ctf server.
            let mut allocated = selector(&[("mode", "ctf")]);
            allocated.game_server_state = GameServerState::Allocated as i32;
            request.game_server_selectors = vec![allocated];
            return ("join allocated ctf", false, request);
        }
        _ => {
            request.game_server_selectors = vec![selector(&[("mode", "battle-royale")])];
            "battle-royale (no such mode)"
        }
    };
    (kind, true, request)
}

/// Game servers that two successful calls asking for a Ready server both received.
fn ready_servers_handed_out_twice(outcomes: &[Outcome]) -> Vec<String> {
    let mut seen = HashMap::<&str, usize>::new();
    for outcome in outcomes.iter().filter(|o| o.wanted_ready) {
        if let Ok((name, _)) = &outcome.result {
            *seen.entry(name).or_default() += 1;
        }
    }
    seen.into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(name, _)| name.to_owned())
        .collect()
}

fn report(
    outcomes: &[Outcome],
    sent: usize,
    elapsed: Duration,
    processor: &ProcessorHandler<Fleet>,
    clients: &[ProcessorClient],
) {
    let allocated = outcomes.iter().filter(|o| o.result.is_ok()).count();
    let unallocated = outcomes
        .iter()
        .filter(|o| matches!(&o.result, Err(e) if e.code() == tonic::Code::ResourceExhausted))
        .count();
    let errors = outcomes.len() - allocated - unallocated;
    let mut latencies: Vec<Duration> = outcomes.iter().map(|o| o.latency).collect();
    latencies.sort();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };

    println!();
    println!("requests     {sent} in {elapsed:.2?}");
    println!("allocated    {allocated}");
    println!("unallocated  {unallocated}");
    println!("errors       {errors}");
    println!(
        "batches      {} received by the processor ({} requests)",
        processor.batches_received(),
        processor.requests_received()
    );
    for client in clients {
        let stats = client.stats();
        println!(
            "  {}: {} batches, {} requests sent, {} answers",
            client.client_id(),
            stats.batches_sent,
            stats.requests_sent,
            stats.answers
        );
    }
    println!(
        "latency      p50 {:.1?}, p99 {:.1?}",
        percentile(0.50),
        percentile(0.99)
    );

    println!("\nby kind                           allocated  unallocated  errors");
    let mut by_kind = BTreeMap::<&str, (usize, usize, usize)>::new();
    for outcome in outcomes {
        let row = by_kind.entry(outcome.kind).or_default();
        match &outcome.result {
            Ok(_) => row.0 += 1,
            Err(e) if e.code() == tonic::Code::ResourceExhausted => row.1 += 1,
            Err(_) => row.2 += 1,
        }
    }
    for (kind, (ok, none, failed)) in by_kind {
        println!("  {kind:<32}{ok:>9}{none:>13}{failed:>8}");
    }
    let failures = outcomes.iter().filter_map(|o| o.result.as_ref().err());
    for error in failures
        .filter(|e| e.code() != tonic::Code::ResourceExhausted)
        .take(5)
    {
        println!("  error: {error}");
    }

    println!("\ngame servers allocated per node");
    let mut per_node = BTreeMap::<&str, usize>::new();
    for outcome in outcomes {
        if let Ok((_, node)) = &outcome.result {
            *per_node.entry(node).or_default() += 1;
        }
    }
    for (node, count) in per_node {
        println!("  {node:<10}{count:>5}");
    }
}

/// Ready, Allocated and other game servers in the fleet.
fn summarize_states(fleet: &Fleet) -> (usize, usize, usize) {
    use agones_processor::allocator::GameServerState;
    let mut counts = (0, 0, 0);
    for game_server in fleet.game_servers() {
        match game_server.state {
            GameServerState::Ready => counts.0 += 1,
            GameServerState::Allocated => counts.1 += 1,
            _ => counts.2 += 1,
        }
    }
    counts
}
