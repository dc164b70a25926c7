//! Fleets from files: the shipped sample, a large `kubectl`-shaped list, and precise errors.

use std::fmt::Write as _;

use agones_processor::allocator::{
    Fleet, FleetFileError, GameServerState, parse_fleet_json, read_fleet_file,
};
use agones_processor::proto::AllocationRequest;

#[test]
fn sample_fleet_file_loads_and_allocates() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/fleet.yaml");
    let fleet = Fleet::from_file(path).expect("sample loads");
    assert_eq!(fleet.len(), 12);
    let request = AllocationRequest {
        namespace: "default".into(),
        ..AllocationRequest::default()
    };
    let response = fleet.allocate(&request).expect("a Ready game server");
    assert!(response.game_server_name.starts_with("sample-"));
    assert!(response.counters.contains_key("rooms"));
}

/// `kubectl get gameservers -o json` for `count` game servers, with fields the allocator
/// ignores, as the real output has.
fn kubectl_list(count: usize) -> String {
    let mut text = String::from(r#"{"apiVersion": "v1", "kind": "List", "items": ["#);
    for i in 0..count {
        if i > 0 {
            text.push(',');
        }
        let state = if i % 5 == 0 { "Allocated" } else { "Ready" };
        write!(
            text,
            r#"{{"apiVersion": "agones.dev/v1", "kind": "GameServer",
              "metadata": {{"name": "gs-{i:05}", "namespace": "default", "uid": "u{i}",
                "labels": {{"agones.dev/fleet": "big", "mode": "m{m}"}},
                "annotations": {{"agones.dev/sdk-version": "1.50.0"}},
                "ownerReferences": [{{"kind": "GameServerSet", "name": "big-x"}}]}},
              "spec": {{"container": "simple-game-server", "ports": [{{"containerPort": 7654}}]}},
              "status": {{"state": "{state}", "nodeName": "node-{n}", "address": "10.0.0.{a}",
                "addresses": [{{"type": "InternalIP", "address": "10.0.0.{a}"}}],
                "ports": [{{"name": "default", "port": {p}}}],
                "players": {{"count": 0, "capacity": 10}},
                "counters": {{"rooms": {{"count": 0, "capacity": 4}}}},
                "lists": {{"players": {{"capacity": 10, "values": []}}}},
                "reservedUntil": null}}}}"#,
            m = i % 3,
            n = i % 100,
            a = i % 250,
            p = 7000 + i % 1000,
        )
        .expect("writes to a string");
    }
    text.push_str("]}");
    text
}

#[test]
fn ten_thousand_entry_kubectl_list_loads() {
    let game_servers = parse_fleet_json(&kubectl_list(10_000)).expect("loads");
    assert_eq!(game_servers.len(), 10_000);
    assert_eq!(game_servers[5].state, GameServerState::Allocated);
    assert_eq!(game_servers[9_999].node_name, "node-99");
    let fleet = Fleet::new(game_servers);
    assert_eq!(fleet.len(), 10_000);
}

#[test]
fn malformed_file_names_entry_and_field() {
    let directory = std::env::temp_dir().join(format!("fleet-file-{}", std::process::id()));
    std::fs::create_dir_all(&directory).expect("temp dir");
    let path = directory.join("bad.yaml");
    let yaml = "
items:
  - metadata: {name: fine}
    status: {state: Ready}
  - metadata: {name: broken}
    status:
      state: Ready
      players: {count: many, capacity: 10}
";
    std::fs::write(&path, yaml).expect("written");
    let error = read_fleet_file(&path).expect_err("malformed");
    std::fs::remove_dir_all(&directory).expect("cleaned up");
    match &error {
        FleetFileError::Entry {
            index, name, field, ..
        } => {
            assert_eq!(*index, 1);
            assert_eq!(name.as_deref(), Some("broken"));
            assert_eq!(field, "status.players.count");
        }
        other => panic!("expected an entry error, got {other:?}"),
    }
    assert_eq!(
        error.to_string(),
        "entry 1 (broken): status.players.count: expected an integer"
    );
}
