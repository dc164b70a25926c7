//! Sends allocation requests to a running processor and counts the outcomes.
//!
//! ```text
//! cargo run --example server &
//! cargo run --example client -- --addr http://127.0.0.1:9090 --count 100 --concurrency 10
//! ```
//!
//! Exits 0 when every call got an answer (an allocation or an allocation error), 1 when any
//! call timed out or found the processor unavailable.
#![allow(clippy::print_stdout)]

use std::{collections::BTreeMap, process::ExitCode, time::Duration};

use agones_processor::{AllocationRequest, ProcessorClient, client::Error};
use clap::Parser;
use tokio::task::JoinSet;

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
}

#[tokio::main]
async fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    logging::init("warn");
    let args = Args::parse();

    let client = ProcessorClient::builder(args.addr.clone())
        .client_id(args.client_id.clone())
        .allocation_timeout(args.timeout)
        .spawn()?;
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
                Err(error @ (Error::Timeout(_) | Error::OutcomeUnknown | Error::Closed)) => {
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
