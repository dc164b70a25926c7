//! The client's own cost per call, without a network.
//!
//! Each iteration spawns `batch` calls through a client's whole stack (timeout, buffer, batching
//! queue), each in a task as callers make them, waits until all of them are queued, then plays
//! the processor: takes them with one pull, as the driver does, and answers the batch at once,
//! as a processor with a no-op allocator would; the calls then resolve. The time per element is
//! the client's cost per call at that batch size, task included: everything but gRPC and the
//! protobuf codec (see `benches/codec.rs` and `benches/e2e.rs` for those). Requests and
//! responses are small, since the client moves them without looking inside. The runtime has one
//! thread, so the figures are free of cross-thread wakeups.
//!
//! ```text
//! cargo bench --bench client
//! ```
#![allow(missing_docs)]

use std::{cell::RefCell, hint::black_box, time::Duration};

use agones_processor::{
    AllocationRequest, AllocationResponse, ProcessorClient,
    client::StreamHarness,
    proto::{BatchRequest, BatchResponse, ResponseWrapper, response_wrapper},
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// `batch` calls, each in a task of its own as callers make them, pulled as one batch and
/// answered.
async fn round(client: &ProcessorClient, processor: &RefCell<StreamHarness>, batch: usize) {
    let request = AllocationRequest {
        namespace: "default".into(),
        ..Default::default()
    };
    let calls: Vec<_> = (0..batch)
        .map(|_| tokio::spawn(client.clone().allocate_owned(request.clone())))
        .collect();
    // The calls reach the queue as the runtime runs them and the buffer's worker; a processor
    // pulling before all of them are there would take them in several smaller batches.
    while client.stats().queued < batch {
        tokio::task::yield_now().await;
    }
    {
        let mut processor = processor.borrow_mut();
        let pulled = processor.pull().expect("the calls are queued");
        assert_eq!(pulled.requests.len(), batch);
        processor.answer(answer(pulled));
    }
    for call in calls {
        black_box(call.await.expect("no panic").expect("answered"));
    }
}

/// What a processor with a no-op allocator answers.
fn answer(batch: BatchRequest) -> BatchResponse {
    BatchResponse {
        batch_id: batch.batch_id,
        responses: batch
            .requests
            .into_iter()
            .map(|wrapper| ResponseWrapper {
                request_id: wrapper.request_id,
                result: Some(response_wrapper::Result::Response(
                    AllocationResponse::default(),
                )),
            })
            .collect(),
    }
}

fn client_call(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut group = c.benchmark_group("client_call");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for batch in [1, 10, 100, 1000] {
        // Inside the runtime: the client's buffer spawns its worker there.
        let (client, processor) = runtime.block_on(async {
            ProcessorClient::builder("http://127.0.0.1:9")
                .max_batch_size(batch)
                .build_detached()
                .expect("a valid address")
        });
        let processor = RefCell::new(processor);
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(BenchmarkId::new("batch", batch), |b| {
            b.to_async(&runtime)
                .iter(|| round(&client, &processor, batch));
        });
    }
    group.finish();
}

criterion_group!(benches, client_call);
criterion_main!(benches);
