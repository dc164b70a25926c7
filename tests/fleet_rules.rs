//! One row per rule of ALLOCATION-SEMANTICS.md, through the public API: which game server the
//! fleet chooses, checked against the expected name and against the naive reference.

#[path = "support/naive.rs"]
mod naive;

use agones_processor::allocator::{Counter, Fleet, GameServer, GameServerState, List, Players};
use agones_processor::proto::allocation_request::SchedulingStrategy;
use agones_processor::proto::game_server_selector::GameServerState as WantedState;
use agones_processor::proto::{
    AllocationRequest, CounterAction, CounterSelector, GameServerSelector, ListSelector,
    PlayerSelector, Priority, priority,
};

fn gs(name: &str, node: &str) -> GameServer {
    GameServer {
        name: name.into(),
        namespace: "default".into(),
        node_name: node.into(),
        ..GameServer::default()
    }
}

fn allocated(name: &str, node: &str) -> GameServer {
    GameServer {
        state: GameServerState::Allocated,
        ..gs(name, node)
    }
}

fn with_players(mut game_server: GameServer, count: i64, capacity: i64) -> GameServer {
    game_server.players = Some(Players { count, capacity });
    game_server
}

fn with_counter(mut game_server: GameServer, count: i64, capacity: i64) -> GameServer {
    game_server
        .counters
        .insert("rooms".into(), Counter { count, capacity });
    game_server
}

fn with_list(mut game_server: GameServer, values: &[&str], capacity: i64) -> GameServer {
    let values = values.iter().map(|v| (*v).to_owned()).collect();
    game_server
        .lists
        .insert("slots".into(), List { values, capacity });
    game_server
}

fn with_label(mut game_server: GameServer, key: &str, value: &str) -> GameServer {
    game_server.labels.insert(key.into(), value.into());
    game_server
}

fn labels(pairs: &[(&str, &str)]) -> GameServerSelector {
    GameServerSelector {
        match_labels: pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..GameServerSelector::default()
    }
}

fn request(selectors: Vec<GameServerSelector>) -> AllocationRequest {
    AllocationRequest {
        namespace: "default".into(),
        game_server_selectors: selectors,
        ..AllocationRequest::default()
    }
}

fn rooms_priority(descending: bool) -> Priority {
    Priority {
        r#type: priority::Type::Counter as i32,
        key: "rooms".into(),
        order: if descending {
            priority::Order::Descending as i32
        } else {
            priority::Order::Ascending as i32
        },
    }
}

#[test]
#[allow(deprecated)]
fn each_rule_chooses_as_specified() {
    let mut other_namespace = gs("a", "n1");
    other_namespace.namespace = "other".into();
    let mut deleting = gs("a", "n1");
    deleting.deleting = true;

    // (rule, fleet, request, expected game server)
    type Row = (
        &'static str,
        Vec<GameServer>,
        AllocationRequest,
        Option<&'static str>,
    );
    let rows: Vec<Row> = vec![
        (
            "normalisation: only the request's namespace",
            vec![other_namespace, gs("b", "n1")],
            request(vec![]),
            Some("b"),
        ),
        (
            "normalisation: preferred selectors then the required one",
            vec![
                with_label(gs("a", "n1"), "m", "x"),
                with_label(gs("b", "n2"), "m", "y"),
            ],
            AllocationRequest {
                preferred_game_server_selectors: vec![labels(&[("m", "z")]), labels(&[("m", "y")])],
                required_game_server_selector: Some(labels(&[("m", "x")])),
                ..request(vec![])
            },
            Some("b"),
        ),
        (
            "normalisation: absent required selector matches every Ready game server",
            vec![allocated("a", "n1"), gs("b", "n1")],
            AllocationRequest { ..request(vec![]) },
            Some("b"),
        ),
        (
            "being deleted is never allocated, but counts on its node",
            vec![deleting, gs("b", "n1"), gs("c", "n2")],
            request(vec![]),
            Some("b"),
        ),
        (
            "other states are never allocated",
            vec![GameServer {
                state: "Scheduled".into(),
                ..gs("a", "n1")
            }],
            request(vec![]),
            None,
        ),
        (
            "matching: players filter ignored when maxAvailable is 0",
            vec![with_players(gs("a", "n1"), 10, 10)],
            request(vec![GameServerSelector {
                players: Some(PlayerSelector {
                    min_available: 0,
                    max_available: 0,
                }),
                ..GameServerSelector::default()
            }]),
            Some("a"),
        ),
        (
            "matching: players room must lie in [minAvailable, maxAvailable]",
            vec![
                with_players(gs("a", "n1"), 9, 10),
                with_players(gs("b", "n1"), 5, 10),
            ],
            request(vec![GameServerSelector {
                players: Some(PlayerSelector {
                    min_available: 2,
                    max_available: 6,
                }),
                ..GameServerSelector::default()
            }]),
            Some("b"),
        ),
        (
            "matching: counter maxCount 0 means no upper bound",
            vec![with_counter(gs("a", "n1"), 900, 1000)],
            request(vec![GameServerSelector {
                counters: [(
                    "rooms".to_owned(),
                    CounterSelector {
                        min_count: 1,
                        ..CounterSelector::default()
                    },
                )]
                .into(),
                ..GameServerSelector::default()
            }]),
            Some("a"),
        ),
        (
            "matching: list containsValue",
            vec![
                with_list(gs("a", "n1"), &["x"], 4),
                with_list(gs("b", "n1"), &["y"], 4),
            ],
            request(vec![GameServerSelector {
                lists: [(
                    "slots".to_owned(),
                    ListSelector {
                        contains_value: "y".into(),
                        ..ListSelector::default()
                    },
                )]
                .into(),
                ..GameServerSelector::default()
            }]),
            Some("b"),
        ),
        (
            "packed: Allocated before Ready when the selector asks for Allocated",
            vec![
                allocated("a", "n1"),
                allocated("b", "n2"),
                allocated("c", "n2"),
            ],
            request(vec![GameServerSelector {
                game_server_state: WantedState::Allocated as i32,
                ..GameServerSelector::default()
            }]),
            Some("b"),
        ),
        (
            "packed: more Allocated on the node first",
            vec![
                gs("a", "n1"),
                gs("b", "n1"),
                gs("c", "n2"),
                allocated("z", "n2"),
            ],
            request(vec![]),
            Some("c"),
        ),
        (
            "packed: less player room first when both track players",
            vec![
                with_players(gs("a", "n1"), 1, 10),
                with_players(gs("b", "n1"), 7, 10),
            ],
            request(vec![]),
            Some("b"),
        ),
        (
            "packed: no player tracking counts as unlimited room",
            vec![gs("a", "n1"), with_players(gs("b", "n1"), 0, 10)],
            request(vec![]),
            Some("b"),
        ),
        (
            "packed: ascending priority prefers less available",
            vec![
                with_counter(gs("a", "n1"), 0, 4),
                with_counter(gs("b", "n1"), 3, 4),
            ],
            AllocationRequest {
                priorities: vec![rooms_priority(false)],
                ..request(vec![])
            },
            Some("b"),
        ),
        (
            "packed: a game server lacking the counter sorts last, descending too",
            vec![gs("a", "n1"), with_counter(gs("b", "n1"), 4, 4)],
            AllocationRequest {
                priorities: vec![rooms_priority(true)],
                ..request(vec![])
            },
            Some("b"),
        ),
        (
            "distributed with priorities: priorities then name, nodes ignored",
            vec![
                with_counter(gs("a", "n1"), 1, 4),
                with_counter(gs("b", "n2"), 0, 4),
                allocated("z", "n2"),
            ],
            AllocationRequest {
                scheduling: SchedulingStrategy::Distributed as i32,
                priorities: vec![rooms_priority(true)],
                ..request(vec![])
            },
            Some("b"),
        ),
        (
            "choosing: the first selector with a match wins",
            vec![
                with_label(gs("a", "n1"), "m", "x"),
                with_label(gs("b", "n2"), "m", "y"),
            ],
            request(vec![labels(&[("m", "y")]), labels(&[("m", "x")])]),
            Some("b"),
        ),
        (
            "choosing: no match is unallocated",
            vec![gs("a", "n1")],
            request(vec![labels(&[("m", "q")])]),
            None,
        ),
    ];
    for (rule, fleet_servers, request, expected) in rows {
        assert_eq!(
            naive::choose(&fleet_servers, &request).as_deref(),
            expected,
            "reference: {rule}"
        );
        let fleet = Fleet::new(fleet_servers);
        let chosen = fleet.allocate(&request).ok().map(|r| r.game_server_name);
        assert_eq!(chosen.as_deref(), expected, "{rule}");
    }
}

/// Rules "re-allocation" and "consistency inside one batch": an Allocated game server is
/// allocated again by an Allocated selector, and sees the counters the previous one left.
#[test]
fn reallocation_sees_the_previous_counter_actions() {
    let fleet = Fleet::new([with_counter(gs("a", "n1"), 0, 2)]);
    let session = |state: WantedState| AllocationRequest {
        counters: [(
            "rooms".to_owned(),
            CounterAction {
                action: Some("Increment".into()),
                amount: Some(1),
                capacity: None,
            },
        )]
        .into(),
        ..request(vec![GameServerSelector {
            game_server_state: state as i32,
            counters: [(
                "rooms".to_owned(),
                CounterSelector {
                    min_available: 1,
                    ..CounterSelector::default()
                },
            )]
            .into(),
            ..GameServerSelector::default()
        }])
    };
    let first = fleet.allocate(&session(WantedState::Ready)).expect("first");
    assert_eq!(first.counters["rooms"].count, Some(1));
    assert!(
        fleet.allocate(&session(WantedState::Ready)).is_err(),
        "no Ready one left"
    );
    let second = fleet
        .allocate(&session(WantedState::Allocated))
        .expect("re-allocated");
    assert_eq!(second.game_server_name, "a");
    assert_eq!(second.counters["rooms"].count, Some(2));
    assert!(
        fleet.allocate(&session(WantedState::Allocated)).is_err(),
        "full"
    );
}
