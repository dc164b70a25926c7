//! Decodes the messages in `tests/data/`, encoded by an implementation independent of prost
//! (see `tests/data/README.md`), and re-encodes the byte-stable ones.
#![allow(deprecated)] // r-2 uses the deprecated selector and metaPatch fields on purpose

use std::collections::BTreeMap;

use agones_processor::proto::{
    AllocationRequest, AllocationResponse, BatchRequest, BatchResponse, CounterAction,
    CounterSelector, GameServerSelector, LabelSelector, ListAction, ListSelector, MetaPatch,
    MultiClusterSetting, PlayerSelector, Priority, ProcessorMessage, PullRequest, RequestWrapper,
    ResponseWrapper,
    allocation_request::SchedulingStrategy,
    allocation_response::{
        CounterStatus, GameServerMetadata, GameServerStatusAddress, GameServerStatusPort,
        ListStatus,
    },
    game_server_selector::GameServerState,
    priority,
    processor_message::Payload,
    response_wrapper,
};
use prost::Message;

const CLIENT: &str = "allocator-7f3a";

fn vector(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn map<const N: usize>(pairs: [(&str, &str); N]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| v.to_string()).collect()
}

fn message(payload: Option<Payload>) -> ProcessorMessage {
    ProcessorMessage {
        client_id: CLIENT.into(),
        payload,
    }
}

/// Decodes `name` as `M`, checks it equals `expected`, and that encoding gives the same bytes.
fn check_stable<M: Message + Default + PartialEq + std::fmt::Debug>(name: &str, expected: M) {
    let bytes = vector(name);
    let decoded = M::decode(bytes.as_slice()).unwrap_or_else(|e| panic!("decoding {name}: {e}"));
    assert_eq!(decoded, expected, "{name} decodes to the listed values");
    assert_eq!(
        decoded.encode_to_vec(),
        bytes,
        "{name} re-encodes to the same bytes"
    );
}

fn request_r1() -> AllocationRequest {
    AllocationRequest {
        namespace: "game-eu".into(),
        multi_cluster_setting: Some(MultiClusterSetting {
            enabled: true,
            policy_selector: Some(LabelSelector {
                match_labels: map([("cluster", "eu-west")]),
            }),
        }),
        scheduling: SchedulingStrategy::Distributed as i32,
        metadata: Some(MetaPatch {
            labels: map([("match", "m-981")]),
            annotations: map([("owner", "matchmaker")]),
        }),
        game_server_selectors: vec![
            GameServerSelector {
                match_labels: map([("mode", "ctf"), ("version", "1.4.2")]),
                game_server_state: GameServerState::Allocated as i32,
                players: Some(PlayerSelector {
                    min_available: 2,
                    max_available: 8,
                }),
                counters: [(
                    "rooms".to_string(),
                    CounterSelector {
                        min_count: 1,
                        max_count: 9,
                        min_available: 1,
                        max_available: 0,
                    },
                )]
                .into(),
                lists: [(
                    "players".to_string(),
                    ListSelector {
                        contains_value: "p-17".into(),
                        min_available: 1,
                        max_available: 5,
                    },
                )]
                .into(),
            },
            GameServerSelector {
                match_labels: map([("mode", "ctf")]),
                ..Default::default()
            },
        ],
        priorities: vec![
            Priority {
                r#type: priority::Type::List as i32,
                key: "players".into(),
                order: priority::Order::Descending as i32,
            },
            Priority {
                r#type: priority::Type::Counter as i32,
                key: "rooms".into(),
                order: priority::Order::Ascending as i32,
            },
        ],
        counters: [(
            "rooms".to_string(),
            CounterAction {
                action: Some("Increment".into()),
                amount: Some(1),
                capacity: None,
            },
        )]
        .into(),
        lists: [(
            "players".to_string(),
            ListAction {
                add_values: strings(&["p-21", "p-22"]),
                capacity: Some(10),
                delete_values: strings(&["p-03"]),
            },
        )]
        .into(),
        ..Default::default()
    }
}

fn request_r2() -> AllocationRequest {
    AllocationRequest {
        namespace: "default".into(),
        required_game_server_selector: Some(GameServerSelector {
            match_labels: map([("mode", "deathmatch")]),
            ..Default::default()
        }),
        preferred_game_server_selectors: vec![GameServerSelector {
            match_labels: map([("version", "2.0.0")]),
            ..Default::default()
        }],
        meta_patch: Some(MetaPatch {
            labels: map([("legacy", "yes")]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn response_r1() -> AllocationResponse {
    AllocationResponse {
        game_server_name: "ctf-7x2kq".into(),
        ports: vec![
            GameServerStatusPort {
                name: "default".into(),
                port: 7654,
            },
            GameServerStatusPort {
                name: "query".into(),
                port: 7655,
            },
        ],
        address: "10.0.3.17".into(),
        addresses: vec![
            GameServerStatusAddress {
                r#type: "InternalIP".into(),
                address: "10.0.3.17".into(),
            },
            GameServerStatusAddress {
                r#type: "Hostname".into(),
                address: "node-b".into(),
            },
        ],
        node_name: "node-b".into(),
        source: "local".into(),
        metadata: Some(GameServerMetadata {
            labels: map([("match", "m-981"), ("mode", "ctf")]),
            annotations: map([(
                "agones.dev/last-allocated",
                "2026-12-04T10:11:12.123456789Z",
            )]),
        }),
        // The count is present and zero, which differs from an absent count.
        counters: [(
            "rooms".to_string(),
            CounterStatus {
                count: Some(0),
                capacity: Some(10),
            },
        )]
        .into(),
        lists: [(
            "players".to_string(),
            ListStatus {
                values: strings(&["p-17", "p-21", "p-22"]),
                capacity: Some(10),
            },
        )]
        .into(),
    }
}

#[test]
fn registration() {
    check_stable("registration.bin", message(None));
}

#[test]
fn pull() {
    check_stable(
        "pull.bin",
        message(Some(Payload::Pull(PullRequest {
            message: "pull".into(),
        }))),
    );
}

#[test]
fn unknown_field_is_skipped() {
    let bytes = vector("unknown_field.bin");
    let decoded = ProcessorMessage::decode(bytes.as_slice()).expect("decodes");
    assert_eq!(
        decoded.encode_to_vec(),
        vector("pull.bin"),
        "same as pull.bin without field 99"
    );
}

#[test]
fn batch_request() {
    let wrap = |id: &str, request| RequestWrapper {
        request_id: id.into(),
        request: Some(request),
    };
    check_stable(
        "batch_request.bin",
        message(Some(Payload::BatchRequest(BatchRequest {
            batch_id: "b-42".into(),
            requests: vec![
                wrap("r-1", request_r1()),
                wrap("r-2", request_r2()),
                wrap("r-3", AllocationRequest::default()),
            ],
        }))),
    );
}

#[test]
fn batch_request_keeps_an_empty_request_present() {
    let decoded = ProcessorMessage::decode(vector("batch_request.bin").as_slice()).unwrap();
    let Some(Payload::BatchRequest(batch)) = decoded.payload else {
        panic!("not a batch")
    };
    assert!(
        batch.requests[2].request.is_some(),
        "r-3's request is present though empty"
    );
}

#[test]
fn batch_response() {
    let answers = vec![
        ResponseWrapper {
            request_id: "r-1".into(),
            result: Some(response_wrapper::Result::Response(response_r1())),
        },
        ResponseWrapper {
            request_id: "r-2".into(),
            result: Some(response_wrapper::Result::Error(tonic_types::Status {
                code: tonic::Code::ResourceExhausted as i32,
                message: "no game server matched".into(),
                details: vec![],
            })),
        },
        ResponseWrapper {
            request_id: "r-3".into(),
            result: None,
        },
    ];
    check_stable(
        "batch_response.bin",
        message(Some(Payload::BatchResponse(BatchResponse {
            batch_id: "b-42".into(),
            responses: answers,
        }))),
    );
}

#[test]
fn allocation_request() {
    check_stable("allocation_request.bin", request_r1());
}

#[test]
fn allocation_response() {
    check_stable("allocation_response.bin", response_r1());
}
