//! The indexed fleet against the naive reference allocator, on random fleets and random
//! request sequences.

#[path = "support/naive.rs"]
mod naive;

use std::collections::{BTreeMap, HashMap};

use agones_processor::allocator::{Counter, Fleet, GameServer, GameServerState, List, Players};
use agones_processor::proto::allocation_request::SchedulingStrategy;
use agones_processor::proto::game_server_selector::GameServerState as WantedState;
use agones_processor::proto::{
    AllocationRequest, CounterAction, CounterSelector, GameServerSelector, ListAction,
    ListSelector, PlayerSelector, Priority, priority,
};
use proptest::prelude::*;

const NAMESPACES: [&str; 2] = ["default", "other"];
const NODES: [&str; 4] = ["", "n1", "n2", "n3"];

fn game_server() -> impl Strategy<Value = GameServer> {
    let players = proptest::option::of((0i64..4, 0i64..4));
    let counter = proptest::option::of((0i64..4, 0i64..4));
    let list = proptest::option::of((0usize..3, 0i64..4));
    (
        (0usize..24, 0usize..2, 0usize..4, 0u8..10, any::<bool>()),
        (0usize..3, 0usize..3),
        players,
        counter,
        list,
    )
        .prop_map(
            |((id, ns, node, state, deleting), (mode, region), players, counter, list)| {
                let mut labels = BTreeMap::new();
                if mode > 0 {
                    labels.insert("mode".to_owned(), format!("m{mode}"));
                }
                if region > 0 {
                    labels.insert("region".to_owned(), format!("r{region}"));
                }
                GameServer {
                    name: format!("gs-{id:02}"),
                    namespace: NAMESPACES[ns].to_owned(),
                    labels,
                    deleting: deleting && state == 0,
                    state: match state {
                        0..=5 => GameServerState::Ready,
                        6..=8 => GameServerState::Allocated,
                        _ => GameServerState::Other("Scheduled".into()),
                    },
                    node_name: NODES[node].to_owned(),
                    players: players.map(|(count, capacity)| Players { count, capacity }),
                    counters: counter
                        .map(|(count, capacity)| ("rooms".to_owned(), Counter { count, capacity }))
                        .into_iter()
                        .collect(),
                    lists: list
                        .map(|(len, capacity)| {
                            let values = (0..len).map(|v| format!("p{v}")).collect();
                            ("slots".to_owned(), List { values, capacity })
                        })
                        .into_iter()
                        .collect(),
                    ..GameServer::default()
                }
            },
        )
}

fn selector() -> impl Strategy<Value = GameServerSelector> {
    (
        (0usize..3, 0usize..3, 0u8..4),
        proptest::option::of((0u64..3, 0u64..3)),
        proptest::option::of((0i64..2, 0i64..3, 0i64..2, 0i64..3)),
        proptest::option::of((0i64..2, 0i64..3, 0usize..4)),
    )
        .prop_map(|((mode, region, state), players, counter, list)| {
            let mut match_labels = BTreeMap::new();
            if mode > 0 {
                match_labels.insert("mode".to_owned(), format!("m{mode}"));
            }
            if region > 0 {
                match_labels.insert("region".to_owned(), format!("r{region}"));
            }
            // Bounds stay valid: a maximum is 0 (unbounded) or at least its minimum.
            let upper = |min: i64, extra: i64| if extra == 0 { 0 } else { min + extra - 1 };
            GameServerSelector {
                match_labels,
                game_server_state: if state == 0 {
                    WantedState::Allocated as i32
                } else {
                    WantedState::Ready as i32
                },
                players: players.map(|(min, extra)| PlayerSelector {
                    min_available: if extra == 0 { 0 } else { min },
                    max_available: if extra == 0 { 0 } else { min + extra - 1 },
                }),
                counters: counter
                    .map(|(min_count, max_extra, min_available, avail_extra)| {
                        let wanted = CounterSelector {
                            min_count,
                            max_count: upper(min_count, max_extra),
                            min_available,
                            max_available: upper(min_available, avail_extra),
                        };
                        ("rooms".to_owned(), wanted)
                    })
                    .into_iter()
                    .collect(),
                lists: list
                    .map(|(min_available, extra, contains)| {
                        let wanted = ListSelector {
                            contains_value: if contains == 0 {
                                String::new()
                            } else {
                                format!("p{}", contains - 1)
                            },
                            min_available,
                            max_available: upper(min_available, extra),
                        };
                        ("slots".to_owned(), wanted)
                    })
                    .into_iter()
                    .collect(),
            }
        })
}

fn priorities(least: usize) -> impl Strategy<Value = Vec<Priority>> {
    proptest::collection::vec((any::<bool>(), any::<bool>(), 0u8..3), least..3).prop_map(|keys| {
        keys.into_iter()
            .map(|(counter, descending, key)| Priority {
                r#type: if counter {
                    priority::Type::Counter as i32
                } else {
                    priority::Type::List as i32
                },
                key: match (counter, key) {
                    (_, 0) => "absent".to_owned(),
                    (true, _) => "rooms".to_owned(),
                    (false, _) => "slots".to_owned(),
                },
                order: if descending {
                    priority::Order::Descending as i32
                } else {
                    priority::Order::Ascending as i32
                },
            })
            .collect()
    })
}

/// One step of a sequence: a request, or a change fed to the fleet between requests.
#[derive(Clone, Debug)]
enum Step {
    Allocate(Box<AllocationRequest>),
    Deallocate(usize),
    Insert(Box<GameServer>),
    Remove(usize),
}

fn request(distributed: bool) -> impl Strategy<Value = AllocationRequest> {
    (
        0usize..2,
        proptest::collection::vec(selector(), 1..3),
        // Distributed is compared only with priorities: without them its order is random.
        priorities(usize::from(distributed)),
        proptest::option::of((any::<bool>(), 0i64..3)),
        proptest::option::of(0usize..4),
    )
        .prop_map(
            move |(ns, selectors, priorities, counter, add)| AllocationRequest {
                namespace: NAMESPACES[ns].to_owned(),
                scheduling: if distributed {
                    SchedulingStrategy::Distributed as i32
                } else {
                    SchedulingStrategy::Packed as i32
                },
                game_server_selectors: selectors,
                priorities,
                counters: counter
                    .map(|(increment, amount)| {
                        let action = CounterAction {
                            action: Some(if increment { "Increment" } else { "Decrement" }.into()),
                            amount: Some(amount),
                            capacity: None,
                        };
                        ("rooms".to_owned(), action)
                    })
                    .into_iter()
                    .collect(),
                lists: add
                    .map(|value| {
                        let action = ListAction {
                            add_values: vec![format!("p{value}")],
                            ..ListAction::default()
                        };
                        ("slots".to_owned(), action)
                    })
                    .into_iter()
                    .collect(),
                ..AllocationRequest::default()
            },
        )
}

fn steps(distributed: bool) -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        6 => request(distributed).prop_map(|r| Step::Allocate(Box::new(r))),
        1 => (0usize..64).prop_map(Step::Deallocate),
        1 => game_server().prop_map(|gs| Step::Insert(Box::new(gs))),
        1 => (0usize..64).prop_map(Step::Remove),
    ];
    proptest::collection::vec(step, 1..24)
}

/// Runs the steps, checking the fleet's choice against the reference before each request.
fn check(fleet: Vec<GameServer>, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let fleet = Fleet::new(fleet).with_seed(1);
    for step in steps {
        let snapshot = fleet.game_servers();
        let pick = |i: usize| snapshot.get(i % snapshot.len().max(1));
        match step {
            Step::Allocate(request) => {
                let expected = naive::choose(&snapshot, &request);
                let chosen = fleet.allocate(&request).ok().map(|r| r.game_server_name);
                prop_assert_eq!(chosen, expected, "request {:?}", request);
            }
            Step::Deallocate(i) => {
                if let Some(gs) = pick(i) {
                    fleet.deallocate(&gs.namespace, &gs.name);
                }
            }
            Step::Insert(gs) => {
                fleet.insert(*gs);
            }
            Step::Remove(i) => {
                if let Some(gs) = pick(i) {
                    fleet.remove(&gs.namespace, &gs.name);
                }
            }
        }
    }
    Ok(())
}

proptest! {
    // Explicit case counts keep CI time to a few seconds.
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn packed_agrees_with_the_naive_reference(
        fleet in proptest::collection::vec(game_server(), 0..40),
        steps in steps(false),
    ) {
        check(fleet, steps)?;
    }

    #[test]
    fn distributed_with_priorities_agrees_with_the_naive_reference(
        fleet in proptest::collection::vec(game_server(), 0..40),
        steps in steps(true),
    ) {
        check(fleet, steps)?;
    }
}

/// Rule "Distributed without priorities: a uniformly random order": the choice matches the
/// selector and spreads over the matching game servers.
#[test]
fn distributed_without_priorities_matches_and_spreads() {
    let fleet: Vec<GameServer> = (0..20)
        .map(|i| GameServer {
            name: format!("gs-{i:02}"),
            namespace: "default".into(),
            labels: [("mode".to_owned(), format!("m{}", i % 2))].into(),
            node_name: NODES[i % 4].to_owned(),
            ..GameServer::default()
        })
        .collect();
    let request = AllocationRequest {
        namespace: "default".into(),
        scheduling: SchedulingStrategy::Distributed as i32,
        game_server_selectors: vec![GameServerSelector {
            match_labels: [("mode".to_owned(), "m1".to_owned())].into(),
            ..GameServerSelector::default()
        }],
        ..AllocationRequest::default()
    };
    let mut counts: HashMap<String, usize> = HashMap::new();
    for seed in 0..400 {
        let fleet = Fleet::new(fleet.clone()).with_seed(seed);
        let chosen = fleet
            .allocate(&request)
            .expect("allocated")
            .game_server_name;
        let gs = fleet.get("default", &chosen).expect("exists");
        assert!(naive::matches(&request.game_server_selectors[0], &{
            let mut before = gs.clone();
            before.state = GameServerState::Ready;
            before
        }));
        *counts.entry(chosen).or_default() += 1;
    }
    // Ten game servers match; uniform picks give about 40 each out of 400.
    assert_eq!(counts.len(), 10, "{counts:?}");
    assert!(
        counts.values().all(|&n| (15..=70).contains(&n)),
        "{counts:?}"
    );
}
