//! Serves the processor over an in-memory fleet until Ctrl-C.
//!
//! ```text
//! cargo run --example server -- --addr 127.0.0.1:9090 --nodes 8 --per-node 40 --pull-interval 200ms
//! cargo run --example server -- --fleet examples/fleet.yaml
//! ```
//!
//! With TLS (`--tls-cert`, `--tls-key`), mutual TLS (`--tls-ca`: the CA of client
//! certificates), client ids bound to client certificates (`--cert-identity`) and bearer
//! tokens (`--token TOKEN=ID`, or `--token TOKEN=PREFIX*` for every id with that prefix):
//!
//! ```text
//! cargo run --example server -- --tls-cert processor.pem --tls-key processor.key \
//!     --tls-ca clients-ca.pem --cert-identity
//! cargo run --example server -- --token s3cret=allocator-1 --token other=agones-allocator-*
//! ```
#![allow(clippy::print_stdout)]

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use agones_processor::{
    allocator::{Fleet, demo_fleet},
    server::{
        BearerTokenLayer, BearerTokens, CertificateIdentity, ClientIds, ProcessorHandler,
        recommended_server, recommended_tls_server,
    },
    tls::ServerTls,
};

#[path = "stacks/errors.rs"]
mod errors;
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
    /// The server's certificate chain (PEM); serves TLS, with `--tls-key`.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The server's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The CA of client certificates (PEM): requires every client to present one (mutual TLS).
    #[arg(long, requires = "tls_cert")]
    tls_ca: Option<PathBuf>,
    /// Accept a client id only when the client certificate names it (DNS or URI SAN).
    #[arg(long, requires = "tls_ca")]
    cert_identity: bool,
    /// An accepted bearer token and the client id it may register as: `TOKEN=ID`, or
    /// `TOKEN=PREFIX*` for every id starting with PREFIX. Repeatable.
    #[arg(long = "token", value_parser = parse_token)]
    tokens: Vec<(String, ClientIds)>,
}

/// `TOKEN=ID` or `TOKEN=PREFIX*`.
fn parse_token(text: &str) -> Result<(String, ClientIds), String> {
    let (token, id) = text
        .split_once('=')
        .filter(|(token, id)| !token.is_empty() && !id.is_empty())
        .ok_or("expected TOKEN=ID or TOKEN=PREFIX*")?;
    let ids = match id.strip_suffix('*') {
        Some(prefix) => ClientIds::prefix(prefix),
        None => ClientIds::exact([id]),
    };
    Ok((token.to_owned(), ids))
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            errors::report(&*error);
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    logging::init("info");
    let args = Args::parse();

    let fleet = match &args.fleet {
        Some(path) => Fleet::from_file(path)?,
        None => Fleet::new(demo_fleet(args.nodes, args.per_node)),
    };
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let mut builder = ProcessorHandler::builder(fleet.clone())
        .pull_interval(args.pull_interval)
        .unallocated_http_status(args.unallocated_status)
        .health_reporter(health_reporter);
    if args.cert_identity {
        builder = builder.certificate_identity(CertificateIdentity::new());
    }
    let processor = builder.build();

    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let tls = ServerTls::from_pem_files(cert, key)?;
            Some(match &args.tls_ca {
                Some(ca) => tls.client_ca_file(ca)?,
                None => tls,
            })
        }
        _ => None,
    };
    let server = match &tls {
        Some(tls) => recommended_tls_server(tls)?,
        None => recommended_server(),
    };
    let tokens = args
        .tokens
        .iter()
        .fold(BearerTokens::new(), |tokens, (token, ids)| {
            tokens.token(token, ids.clone())
        });
    let layer = (!tokens.is_empty()).then(|| BearerTokenLayer::new(tokens));

    println!(
        "processor on {} ({}{}) over {} game servers, pulling every {:?}; Ctrl-C stops",
        args.addr,
        match &tls {
            Some(tls) if tls.requires_client_certificate() => "mutual TLS",
            Some(_) => "TLS",
            None => "plaintext",
        },
        if layer.is_some() {
            ", bearer tokens"
        } else {
            ""
        },
        fleet.len(),
        args.pull_interval
    );
    let mut server = server.layer(tower::util::option_layer(layer));
    server
        .add_routes(processor.routes(health_service))
        .serve_with_shutdown(args.addr, {
            // Ctrl-C: stop pulling, answer the batches in flight, end the streams.
            let processor = processor.clone();
            async move {
                let _ = tokio::signal::ctrl_c().await;
                processor.shutdown(Duration::from_secs(10)).await;
            }
        })
        .await?;
    println!(
        "stopped after {} batches, {} requests",
        processor.batches_received(),
        processor.requests_received()
    );
    Ok(())
}
