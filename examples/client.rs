//! Sends allocation requests to a running processor and counts the outcomes.
//!
//! ```text
//! cargo run --example server &
//! cargo run --example client -- --addr http://127.0.0.1:9090 --count 100 --concurrency 10
//! ```
//!
//! Over TLS, the processor's CA (`--tls-ca`), the name its certificate holds when it is not
//! the address's host (`--tls-domain`), and for mutual TLS the client's own certificate
//! (`--tls-cert`, `--tls-key`); for a processor that checks bearer tokens, `--token`:
//!
//! ```text
//! cargo run --example client -- --addr https://127.0.0.1:9090 --tls-ca processor-ca.pem \
//!     --tls-domain processor.example --tls-cert allocator-1.pem --tls-key allocator-1.key \
//!     --client-id allocator-1
//! cargo run --example client -- --token s3cret --client-id allocator-1
//! ```
//!
//! Exits 0 when every call got an answer (an allocation or an allocation error), 1 when any
//! call timed out, found the processor unavailable or was refused for its credentials.
#![allow(clippy::print_stdout)]

use std::{collections::BTreeMap, path::PathBuf, process::ExitCode, time::Duration};

use agones_processor::{AllocationRequest, ProcessorClient, client::Error, tls::ClientTls};
use clap::Parser;
use tokio::task::JoinSet;

#[path = "stacks/errors.rs"]
mod errors;
#[path = "stacks/logging.rs"]
mod logging;
use tower::ServiceExt;

/// Sends allocation requests through a processor client.
#[derive(Debug, Parser)]
struct Args {
    /// The processor's URL.
    #[arg(long, default_value = "http://127.0.0.1:9090")]
    addr: String,
    /// Requests to send.
    #[arg(long, default_value_t = 100)]
    count: usize,
    /// Calls open at once.
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
    /// Namespace of the requests.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// The client id to register with (a random UUID when empty).
    #[arg(long, default_value = "")]
    client_id: String,
    /// How long a call may take.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// The CA that signed the processor's certificate (PEM); connects with TLS, to an
    /// `https://` address.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// The name the processor's certificate must hold, if not the address's host.
    #[arg(long, requires = "tls_ca")]
    tls_domain: Option<String>,
    /// The client's certificate chain (PEM), for mutual TLS, with `--tls-key`.
    #[arg(long, requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// The client's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// A bearer token to send with every request.
    #[arg(long)]
    token: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    run().await.unwrap_or_else(|error| {
        errors::report(&*error);
        ExitCode::FAILURE
    })
}

async fn run() -> Result<ExitCode, Box<dyn std::error::Error>> {
    logging::init("warn");
    let args = Args::parse();

    let mut builder = ProcessorClient::builder(args.addr.clone())
        .client_id(args.client_id.clone())
        .allocation_timeout(args.timeout);
    if let Some(ca) = &args.tls_ca {
        let mut tls = ClientTls::from_ca_file(ca)?;
        if let Some(domain) = &args.tls_domain {
            tls = tls.domain_name(domain);
        }
        if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
            tls = tls.identity_files(cert, key)?;
        }
        builder = builder.tls(tls);
    }
    if let Some(token) = &args.token {
        builder = builder.bearer_token(token);
    }
    let client = builder.spawn()?;
    let request = AllocationRequest {
        namespace: args.namespace.clone(),
        ..Default::default()
    };

    // `concurrency` workers, each sending its share of the requests one after another.
    let workers = args.concurrency.clamp(1, args.count.max(1));
    let mut calls = JoinSet::new();
    for worker in 0..workers {
        let share = args.count / workers + usize::from(worker < args.count % workers);
        let client = client.clone();
        let request = request.clone();
        calls.spawn(async move {
            let mut results = Vec::with_capacity(share);
            for _ in 0..share {
                results.push(client.clone().oneshot(request.clone()).await);
            }
            results
        });
    }
    let mut outcomes = BTreeMap::<String, usize>::new();
    let mut unanswered = 0;
    while let Some(results) = calls.join_next().await {
        for result in results? {
            let class = match &result {
                Ok(_) => "allocated".to_owned(),
                Err(
                    error @ (Error::Timeout(_)
                    | Error::OutcomeUnknown
                    | Error::Closed
                    | Error::Refused(_)),
                ) => {
                    unanswered += 1;
                    format!("unanswered ({:?}): {error}", error.code())
                }
                Err(error) => format!("{:?}: {error}", error.code()),
            };
            *outcomes.entry(class).or_default() += 1;
        }
    }

    for (class, count) in &outcomes {
        println!("{count:>6}  {class}");
    }
    Ok(if unanswered == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
