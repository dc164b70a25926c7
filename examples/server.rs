//! Serves the processor over an in-memory fleet until Ctrl-C.
//!
//! ```text
//! cargo run --example server -- --addr 127.0.0.1:9090 --nodes 8 --per-node 40 --pull-interval 200ms
//! cargo run --example server -- --fleet examples/fleet.yaml
//! ```
#![allow(clippy::print_stdout)]

use std::{net::SocketAddr, time::Duration};

use agones_processor::{
    allocator::{Fleet, demo_fleet},
    server::ProcessorHandler,
};

#[path = "stacks/logging.rs"]
mod logging;
use clap::Parser;

/// Serves the allocation processor over a generated in-memory fleet.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9090")]
    addr: SocketAddr,
    /// Nodes in the fleet.
    #[arg(long, default_value_t = 8)]
    nodes: usize,
    /// Game servers per node.
    #[arg(long, default_value_t = 40)]
    per_node: usize,
    /// A JSON or YAML fleet file (such as `examples/fleet.yaml`) instead of a generated fleet.
    #[arg(long)]
    fleet: Option<std::path::PathBuf>,
    /// How often every client is pulled.
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    pull_interval: Duration,
    /// HTTP status whose gRPC code answers requests no game server matched.
    #[arg(long, default_value_t = 429)]
    unallocated_status: u16,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    logging::init("info");
    let args = Args::parse();

    let fleet = match &args.fleet {
        Some(path) => Fleet::from_file(path)?,
        None => Fleet::new(demo_fleet(args.nodes, args.per_node)),
    };
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let processor = ProcessorHandler::builder(fleet.clone())
        .pull_interval(args.pull_interval)
        .unallocated_http_status(args.unallocated_status)
        .health_reporter(health_reporter)
        .build();

    println!(
        "processor on {} over {} game servers, pulling every {:?}; Ctrl-C stops",
        args.addr,
        fleet.len(),
        args.pull_interval
    );
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(processor.clone().into_server())
        .serve_with_shutdown(args.addr, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    println!(
        "stopped after {} batches, {} requests",
        processor.batches_received(),
        processor.requests_received()
    );
    Ok(())
}
