//! Encoding and decoding cost of realistic processor batches.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use agones_processor::proto::{
    AllocationRequest, AllocationResponse, BatchRequest, BatchResponse, GameServerSelector,
    MetaPatch, ProcessorMessage, RequestWrapper, ResponseWrapper,
    allocation_response::{GameServerMetadata, GameServerStatusAddress, GameServerStatusPort},
    processor_message::Payload,
    response_wrapper,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;

fn request(i: usize) -> AllocationRequest {
    AllocationRequest {
        namespace: "default".into(),
        game_server_selectors: vec![GameServerSelector {
            match_labels: [
                ("mode".into(), "ctf".into()),
                ("region".into(), "eu-west".into()),
            ]
            .into(),
            ..Default::default()
        }],
        metadata: Some(MetaPatch {
            labels: [("match".into(), format!("m-{i}"))].into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn response(i: usize) -> AllocationResponse {
    AllocationResponse {
        game_server_name: format!("gs-node-3-{i:04}"),
        ports: vec![GameServerStatusPort {
            name: "default".into(),
            port: 7000 + i as i32,
        }],
        address: "10.0.3.17".into(),
        addresses: vec![GameServerStatusAddress {
            r#type: "InternalIP".into(),
            address: "10.0.3.17".into(),
        }],
        node_name: "node-3".into(),
        source: "local".into(),
        metadata: Some(GameServerMetadata {
            labels: [
                ("mode".into(), "ctf".into()),
                ("match".into(), format!("m-{i}")),
            ]
            .into(),
            annotations: [(
                "agones.dev/last-allocated".into(),
                "2026-12-04T10:11:12.123456789Z".into(),
            )]
            .into(),
        }),
        ..Default::default()
    }
}

fn batch_request(size: usize) -> ProcessorMessage {
    let requests = (0..size)
        .map(|i| RequestWrapper {
            request_id: i.to_string(),
            request: Some(request(i)),
        })
        .collect();
    ProcessorMessage {
        client_id: "allocator-0".into(),
        payload: Some(Payload::BatchRequest(BatchRequest {
            batch_id: "7".into(),
            requests,
        })),
    }
}

fn batch_response(size: usize) -> ProcessorMessage {
    let responses = (0..size)
        .map(|i| ResponseWrapper {
            request_id: i.to_string(),
            result: Some(response_wrapper::Result::Response(response(i))),
        })
        .collect();
    ProcessorMessage {
        client_id: "allocator-0".into(),
        payload: Some(Payload::BatchResponse(BatchResponse {
            batch_id: "7".into(),
            responses,
        })),
    }
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for size in [100, 1000] {
        for (kind, message) in [
            ("batch_request", batch_request(size)),
            ("batch_response", batch_response(size)),
        ] {
            let bytes = message.encode_to_vec();
            group.throughput(Throughput::Elements(size as u64));
            group.bench_with_input(
                BenchmarkId::new(format!("encode_{kind}"), size),
                &message,
                |b, m| {
                    let mut buffer = Vec::with_capacity(bytes.len());
                    b.iter(|| {
                        buffer.clear();
                        m.encode(&mut buffer).unwrap();
                        black_box(&buffer);
                    })
                },
            );
            group.bench_with_input(
                BenchmarkId::new(format!("decode_{kind}"), size),
                &bytes,
                |b, bytes| {
                    b.iter(|| black_box(ProcessorMessage::decode(bytes.as_slice()).unwrap()))
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
