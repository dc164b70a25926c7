//! An allocator front end: a gRPC `allocation.AllocationService/Allocate` server that game
//! backends call, forwarding every request to the processor through a processor client, and
//! returning the client's errors as `tonic::Status`.
//!
//! ```text
//! cargo run --example server -- --addr 127.0.0.1:9090
//! cargo run --example tonic_frontend -- --listen 127.0.0.1:9443 --processor http://127.0.0.1:9090
//! ```
#![allow(clippy::print_stdout)]

use std::{net::SocketAddr, time::Duration};

use agones_processor::ProcessorClient;
use clap::Parser;

#[path = "stacks/frontend.rs"]
mod frontend;
#[path = "stacks/logging.rs"]
mod logging;

/// Serves `AllocationService/Allocate` through a processor client.
#[derive(Debug, Parser)]
struct Args {
    /// Address the gRPC front end listens on.
    #[arg(long, default_value = "127.0.0.1:9443")]
    listen: SocketAddr,
    /// Address of the processor.
    #[arg(long, default_value = "http://127.0.0.1:9090")]
    processor: String,
    /// How long a call may wait for the processor's answer.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    allocation_timeout: Duration,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    logging::init("info");
    let args = Args::parse();

    let client = ProcessorClient::builder(args.processor.clone())
        .allocation_timeout(args.allocation_timeout)
        .spawn()?;
    println!(
        "front end on {} (allocation.AllocationService/Allocate) -> processor {} (client id {})",
        args.listen,
        args.processor,
        client.client_id()
    );
    tonic::transport::Server::builder()
        .add_service(frontend::Frontend::server(client))
        .serve_with_shutdown(args.listen, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
