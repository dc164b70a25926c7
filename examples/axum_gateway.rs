//! An HTTP gateway in front of a processor: `POST /gameserverallocation` with the allocation
//! request as JSON (proto3 JSON mapping, as Agones' REST endpoint), answered with the
//! allocation response as JSON, or with the HTTP status of the gRPC error and a body
//! `{"code", "message"}`.
//!
//! ```text
//! cargo run --example server -- --addr 127.0.0.1:9090
//! cargo run --example axum_gateway -- --listen 127.0.0.1:8080 --processor http://127.0.0.1:9090
//! curl -d '{"namespace":"default","gameServerSelectors":[{"matchLabels":{"mode":"ctf"}}]}' \
//!     http://127.0.0.1:8080/gameserverallocation
//! ```
#![allow(clippy::print_stdout)]

use std::{net::SocketAddr, time::Duration};

use agones_processor::ProcessorClient;
use clap::Parser;
use tokio::net::TcpListener;

#[path = "stacks/gateway.rs"]
mod gateway;
#[path = "stacks/logging.rs"]
mod logging;

/// Serves `POST /gameserverallocation` through a processor client.
#[derive(Debug, Parser)]
struct Args {
    /// Address the HTTP gateway listens on.
    #[arg(long, default_value = "127.0.0.1:8080")]
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
    let listener = TcpListener::bind(args.listen).await?;
    println!(
        "gateway on http://{}{} -> processor {} (client id {})",
        listener.local_addr()?,
        gateway::ALLOCATION_PATH,
        args.processor,
        client.client_id()
    );
    axum::serve(listener, gateway::router(client))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
