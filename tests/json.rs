//! The allocation messages in the proto3 JSON mapping, as Agones' REST endpoint speaks it.

use std::collections::BTreeMap;

use agones_processor::{
    AllocationRequest, AllocationResponse,
    proto::{
        CounterAction, GameServerSelector, ListAction, MetaPatch, PlayerSelector, Priority,
        allocation_request::SchedulingStrategy,
        allocation_response::{
            CounterStatus, GameServerMetadata, GameServerStatusAddress, GameServerStatusPort,
            ListStatus,
        },
        game_server_selector::GameServerState,
        priority::{Order, Type},
    },
};
use serde_json::json;

fn map<V: Clone>(pairs: &[(&str, V)]) -> BTreeMap<String, V> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// A request as a game backend posts it: camelCase names, enums by name, the 64-bit wrappers
/// once as strings and once as numbers, and a field this crate does not know.
#[test]
fn decodes_a_realistic_request() {
    let body = json!({
        "namespace": "default",
        "gameServerSelectors": [
            {
                "matchLabels": {"agones.dev/fleet": "ctf", "region": "eu-west"},
                "gameServerState": "ALLOCATED",
                "players": {"minAvailable": "2", "maxAvailable": 10},
                "counters": {"rooms": {"minAvailable": "1"}},
                "lists": {"players": {"containsValue": "p-17", "maxAvailable": 8}}
            },
            {"matchLabels": {"agones.dev/fleet": "ctf"}}
        ],
        "scheduling": "Distributed",
        "priorities": [{"type": "Counter", "key": "rooms", "order": "Descending"}],
        "metadata": {
            "labels": {"match": "m-42"},
            "annotations": {"allocated-by": "matchmaker-1"}
        },
        "counters": {"rooms": {"action": "Increment", "amount": "1", "capacity": 10}},
        "lists": {"players": {"addValues": ["p-17", "p-18"], "capacity": "16"}},
        "addedInALaterVersion": {"ignored": true}
    });

    let request: AllocationRequest = serde_json::from_value(body).unwrap();

    let first = GameServerSelector {
        match_labels: map(&[
            ("agones.dev/fleet", "ctf".into()),
            ("region", "eu-west".into()),
        ]),
        game_server_state: GameServerState::Allocated as i32,
        players: Some(PlayerSelector {
            min_available: 2,
            max_available: 10,
        }),
        counters: map(&[(
            "rooms",
            agones_processor::proto::CounterSelector {
                min_available: 1,
                ..Default::default()
            },
        )]),
        lists: map(&[(
            "players",
            agones_processor::proto::ListSelector {
                contains_value: "p-17".into(),
                max_available: 8,
                ..Default::default()
            },
        )]),
    };
    let expected = AllocationRequest {
        namespace: "default".into(),
        game_server_selectors: vec![
            first,
            GameServerSelector {
                match_labels: map(&[("agones.dev/fleet", "ctf".into())]),
                ..Default::default()
            },
        ],
        scheduling: SchedulingStrategy::Distributed as i32,
        priorities: vec![Priority {
            r#type: Type::Counter as i32,
            key: "rooms".into(),
            order: Order::Descending as i32,
        }],
        metadata: Some(MetaPatch {
            labels: map(&[("match", "m-42".into())]),
            annotations: map(&[("allocated-by", "matchmaker-1".into())]),
        }),
        counters: map(&[(
            "rooms",
            CounterAction {
                action: Some("Increment".into()),
                amount: Some(1),
                capacity: Some(10),
            },
        )]),
        lists: map(&[(
            "players",
            ListAction {
                add_values: vec!["p-17".into(), "p-18".into()],
                capacity: Some(16),
                delete_values: Vec::new(),
            },
        )]),
        ..Default::default()
    };
    assert_eq!(request, expected);
}

#[test]
fn decodes_enum_numbers_and_null() {
    let request: AllocationRequest = serde_json::from_value(json!({
        "namespace": "default",
        "scheduling": 1,
        "gameServerSelectors": [{"gameServerState": 1}],
        "counters": {"rooms": {"amount": null}}
    }))
    .unwrap();
    assert_eq!(request.scheduling, SchedulingStrategy::Distributed as i32);
    assert_eq!(
        request.game_server_selectors[0].game_server_state,
        GameServerState::Allocated as i32
    );
    assert_eq!(request.counters["rooms"].amount, None);
}

#[test]
fn rejects_what_the_mapping_does_not_allow() {
    let cases = [
        json!({"scheduling": "Sideways"}),
        json!({"namespace": 7}),
        json!({"counters": {"rooms": {"amount": "one"}}}),
        json!(["not", "an", "object"]),
    ];
    for body in cases {
        let decoded = serde_json::from_value::<AllocationRequest>(body.clone());
        assert!(decoded.is_err(), "{body} decoded");
    }
}

#[test]
fn encodes_a_response() {
    let response = AllocationResponse {
        game_server_name: "ctf-eu-7xk2p".into(),
        ports: vec![GameServerStatusPort {
            name: "default".into(),
            port: 7654,
        }],
        address: "10.0.3.17".into(),
        node_name: "node-3".into(),
        source: "local".into(),
        metadata: Some(GameServerMetadata {
            labels: map(&[("agones.dev/fleet", "ctf".into())]),
            annotations: map(&[("agones.dev/last-allocated", "2026-12-04T16:00:00Z".into())]),
        }),
        addresses: vec![GameServerStatusAddress {
            r#type: "InternalIP".into(),
            address: "10.0.3.17".into(),
        }],
        counters: map(&[(
            "rooms",
            CounterStatus {
                count: Some(3),
                capacity: Some(10),
            },
        )]),
        lists: map(&[(
            "players",
            ListStatus {
                values: vec!["p-17".into()],
                capacity: None,
            },
        )]),
    };

    let encoded = serde_json::to_value(&response).unwrap();

    // Int64Value wrappers are strings; an absent wrapper and empty fields are left out.
    assert_eq!(
        encoded,
        json!({
            "gameServerName": "ctf-eu-7xk2p",
            "ports": [{"name": "default", "port": 7654}],
            "address": "10.0.3.17",
            "nodeName": "node-3",
            "source": "local",
            "metadata": {
                "labels": {"agones.dev/fleet": "ctf"},
                "annotations": {"agones.dev/last-allocated": "2026-12-04T16:00:00Z"}
            },
            "addresses": [{"type": "InternalIP", "address": "10.0.3.17"}],
            "counters": {"rooms": {"count": "3", "capacity": "10"}},
            "lists": {"players": {"values": ["p-17"]}}
        })
    );
    let decoded: AllocationResponse = serde_json::from_value(encoded).unwrap();
    assert_eq!(decoded, response);
}

#[test]
fn request_round_trips_with_enums_by_name() {
    let request = AllocationRequest {
        namespace: "default".into(),
        scheduling: SchedulingStrategy::Distributed as i32,
        ..Default::default()
    };
    let encoded = serde_json::to_value(&request).unwrap();
    assert_eq!(
        encoded,
        json!({"namespace": "default", "scheduling": "Distributed"})
    );
    assert_eq!(
        serde_json::from_value::<AllocationRequest>(encoded).unwrap(),
        request
    );
}
