//! Allocation cost on large fleets: the indexed fleet against the naive reference.
//!
//! Both answer the same Packed request with a label selector over a generated fleet. The
//! indexed fleet allocates and then marks the game server Ready again, so the fleet stays the
//! same across iterations; the reference only decides (sort every candidate, scan in order),
//! which is what Agones does per batch before applying anything.
//!
//! ```text
//! cargo bench --bench fleet
//! ```
#![allow(missing_docs)]

#[path = "../tests/support/naive.rs"]
mod naive;

use std::hint::black_box;
use std::time::Duration;

use agones_processor::allocator::{Fleet, demo_fleet};
use agones_processor::proto::{AllocationRequest, GameServerSelector};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// Game servers per node in the generated fleets.
const PER_NODE: usize = 40;

fn request() -> AllocationRequest {
    let labels = [("mode", "ctf"), ("region", "eu-west")];
    AllocationRequest {
        namespace: "default".into(),
        game_server_selectors: vec![GameServerSelector {
            match_labels: labels
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
            ..GameServerSelector::default()
        }],
        ..AllocationRequest::default()
    }
}

fn packed_with_labels(c: &mut Criterion) {
    let request = request();
    let mut group = c.benchmark_group("packed_label_selector");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(1));
    for size in [1_000, 10_000, 100_000] {
        let game_servers = demo_fleet(size / PER_NODE, PER_NODE);
        let fleet = Fleet::new(game_servers.clone());
        group.bench_function(BenchmarkId::new("indexed", size), |b| {
            b.iter(|| {
                let response = fleet.allocate(black_box(&request)).expect("allocated");
                fleet.deallocate("default", &response.game_server_name);
            });
        });
        group.bench_function(BenchmarkId::new("naive", size), |b| {
            b.iter(|| naive::choose(black_box(&game_servers), black_box(&request)));
        });
    }
    group.finish();
}

criterion_group!(benches, packed_with_labels);
criterion_main!(benches);
