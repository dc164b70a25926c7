//! Throughput end to end over loopback gRPC: processor clients, a processor and a no-op
//! allocator in one process, by max batch size and number of clients.
//!
//! Each client has as many callers as its max batch size, so that one pull can fill a batch;
//! callers call in a closed loop until the iterations are done. The processor pulls every
//! client every millisecond (fixed pulling). The time per element is the wall time per
//! allocation, so criterion's throughput is allocations per second; on a machine with few cores
//! the clients and the processor share them.
//!
//! ```text
//! cargo bench --bench e2e
//! ```
#![allow(missing_docs)]

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use agones_processor::{
    AllocationRequest, AllocationResponse, ProcessorClient,
    server::{ProcessorHandler, incoming, recommended_server},
};
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use tokio::{net::TcpListener, task::JoinSet};
use tower::BoxError;

const PULL_INTERVAL: Duration = Duration::from_millis(1);

/// A processor with a no-op allocator and its clients.
struct Setup {
    clients: Vec<ProcessorClient>,
    callers_per_client: usize,
    server: tokio::task::JoinHandle<()>,
}

impl Setup {
    async fn start(clients: usize, max_batch_size: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let address: SocketAddr = listener.local_addr().expect("bound");
        let noop = tower::service_fn(|_: AllocationRequest| {
            std::future::ready(Ok::<_, BoxError>(AllocationResponse::default()))
        });
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        let processor = ProcessorHandler::builder(noop)
            .pull_interval(PULL_INTERVAL)
            .max_batch_size(max_batch_size)
            .health_reporter(health_reporter)
            .build();
        let serve = recommended_server()
            .add_routes(processor.routes(health_service))
            .serve_with_incoming(incoming(listener));
        let server = tokio::spawn(async move { serve.await.expect("the processor serves") });

        let clients: Vec<ProcessorClient> = (0..clients)
            .map(|index| {
                ProcessorClient::builder(format!("http://{address}"))
                    .client_id(format!("bench-{index}"))
                    .max_batch_size(max_batch_size)
                    .reconnect_interval(Duration::from_millis(50))
                    .spawn()
                    .expect("a valid address")
            })
            .collect();
        while clients.iter().any(|client| client.stats().connects == 0) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Self {
            clients,
            callers_per_client: max_batch_size,
            server,
        }
    }

    /// Makes `iterations` allocations through every client's callers; returns the wall time.
    async fn run(&self, iterations: u64) -> Duration {
        let remaining = Arc::new(AtomicU64::new(iterations));
        let callers = (self.clients.len() * self.callers_per_client).min(iterations as usize);
        let request = AllocationRequest {
            namespace: "default".into(),
            ..Default::default()
        };
        let started = Instant::now();
        let mut tasks = JoinSet::new();
        for client in self.clients.iter().cycle().take(callers) {
            let client = client.clone();
            let remaining = Arc::clone(&remaining);
            let request = request.clone();
            tasks.spawn(async move {
                while remaining
                    .fetch_update(Relaxed, Relaxed, |left| left.checked_sub(1))
                    .is_ok()
                {
                    client
                        .allocate(request.clone())
                        .await
                        .expect("the no-op allocator answers");
                }
            });
        }
        while let Some(caller) = tasks.join_next().await {
            caller.expect("callers do not panic");
        }
        started.elapsed()
    }
}

fn e2e(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut group = c.benchmark_group("e2e_noop");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(1));
    for clients in [1, 4, 16] {
        for max_batch_size in [10, 100, 1000] {
            let setup = runtime.block_on(Setup::start(clients, max_batch_size));
            let id = BenchmarkId::new(format!("clients_{clients}"), max_batch_size);
            group.bench_function(id, |b| {
                b.to_async(&runtime)
                    .iter_custom(|iterations| setup.run(iterations));
            });
            setup.server.abort();
        }
    }
    group.finish();
}

criterion_group!(benches, e2e);
criterion_main!(benches);
