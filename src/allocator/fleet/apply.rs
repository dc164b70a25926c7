//! Applying an allocation to the chosen game server, and the response that reports it.

use std::collections::HashSet;

use super::game_server::{Counter, GameServer, GameServerState, List};
use super::report::{ActionTarget, ActionWarning};
use super::request::Normalized;
use crate::proto::allocation_response::{
    CounterStatus, GameServerMetadata, GameServerStatusAddress, GameServerStatusPort, ListStatus,
};
use crate::proto::{AllocationResponse, CounterAction, ListAction};

/// The annotation that records when a game server was last allocated.
pub(crate) const LAST_ALLOCATED: &str = "agones.dev/last-allocated";

/// The largest list capacity Agones accepts.
pub(crate) const MAX_LIST_CAPACITY: i64 = 1000;

/// The `source` of a response from this cluster's own game servers.
const SOURCE: &str = "local";

/// Applies an allocation to the chosen game server and returns the actions that failed.
///
/// `allocated_at` is written to the last-allocated annotation after the metadata patch, so a
/// request cannot overwrite it.
pub(crate) fn apply(
    game_server: &mut GameServer,
    request: &Normalized<'_>,
    allocated_at: &str,
) -> Vec<ActionWarning> {
    if let Some(patch) = &request.metadata {
        let patch = patch.patch;
        game_server.labels.extend(patch.labels.clone());
        game_server.annotations.extend(patch.annotations.clone());
    }
    game_server
        .annotations
        .insert(LAST_ALLOCATED.to_owned(), allocated_at.to_owned());
    game_server.state = GameServerState::Allocated;

    let mut errors = Vec::new();
    for (name, action) in request.counters {
        let counter = game_server.counters.get_mut(name);
        errors.extend(
            apply_counter(counter, action)
                .into_iter()
                .map(|message| ActionWarning {
                    target: ActionTarget::Counter,
                    name: name.clone(),
                    message,
                }),
        );
    }
    for (name, action) in request.lists {
        let list = game_server.lists.get_mut(name);
        errors.extend(
            apply_list(list, action)
                .into_iter()
                .map(|message| ActionWarning {
                    target: ActionTarget::List,
                    name: name.clone(),
                    message,
                }),
        );
    }
    errors
}

/// Applies one counter action; returns what went wrong.
fn apply_counter(counter: Option<&mut Counter>, action: &CounterAction) -> Vec<String> {
    let change = action.action.as_deref().zip(action.amount);
    let Some(counter) = counter else {
        if action.capacity.is_some() || change.is_some() {
            return vec!["counter not found".to_owned()];
        }
        return Vec::new();
    };

    let mut errors = Vec::new();
    if let Some(capacity) = action.capacity {
        if capacity < 0 {
            errors.push(format!("capacity {capacity} is negative"));
        } else {
            counter.capacity = capacity;
            counter.count = counter.count.min(capacity);
        }
    }
    if let Some((kind, amount)) = change {
        let count = match kind {
            _ if amount < 0 => Err(format!("amount {amount} is negative")),
            "Increment" => Ok(counter.count.saturating_add(amount)),
            "Decrement" => Ok(counter.count.saturating_sub(amount)),
            other => Err(format!(
                "action {other:?} is neither Increment nor Decrement"
            )),
        };
        match count {
            Ok(count) => counter.count = count.clamp(0, counter.capacity.max(0)),
            Err(error) => errors.push(error),
        }
    }
    errors
}

/// Applies one list action; returns what went wrong.
fn apply_list(list: Option<&mut List>, action: &ListAction) -> Vec<String> {
    let Some(list) = list else {
        let acts = action.capacity.is_some()
            || !action.add_values.is_empty()
            || !action.delete_values.is_empty();
        if acts {
            return vec!["list not found".to_owned()];
        }
        return Vec::new();
    };

    let mut errors = Vec::new();
    if let Some(capacity) = action.capacity {
        if (0..=MAX_LIST_CAPACITY).contains(&capacity) {
            list.capacity = capacity;
            truncate(list);
        } else {
            errors.push(format!(
                "capacity {capacity} is outside 0..={MAX_LIST_CAPACITY}"
            ));
        }
    }
    if !action.add_values.is_empty() {
        // Duplicates already in the list collapse too: the merged list keeps first occurrences.
        let mut seen = HashSet::new();
        let merged = std::mem::take(&mut list.values)
            .into_iter()
            .chain(action.add_values.iter().cloned())
            .filter(|value| seen.insert(value.clone()))
            .collect();
        list.values = merged;
        truncate(list);
    }
    if !action.delete_values.is_empty() {
        let deleted: HashSet<&str> = action.delete_values.iter().map(String::as_str).collect();
        list.values
            .retain(|value| !deleted.contains(value.as_str()));
    }
    errors
}

/// Drops the values beyond the list's capacity.
fn truncate(list: &mut List) {
    let capacity = usize::try_from(list.capacity).unwrap_or(0);
    list.values.truncate(capacity);
}

/// The response for a game server that has just been allocated.
pub(crate) fn response(game_server: &GameServer) -> AllocationResponse {
    AllocationResponse {
        game_server_name: game_server.name.clone(),
        ports: game_server
            .ports
            .iter()
            .map(|port| GameServerStatusPort {
                name: port.name.clone(),
                port: port.port,
            })
            .collect(),
        address: game_server.address.clone(),
        node_name: game_server.node_name.clone(),
        source: SOURCE.to_owned(),
        metadata: Some(GameServerMetadata {
            labels: game_server.labels.clone(),
            annotations: game_server.annotations.clone(),
        }),
        addresses: game_server
            .addresses
            .iter()
            .map(|address| GameServerStatusAddress {
                r#type: address.kind.clone(),
                address: address.address.clone(),
            })
            .collect(),
        counters: game_server
            .counters
            .iter()
            .map(|(name, counter)| {
                let status = CounterStatus {
                    count: Some(counter.count),
                    capacity: Some(counter.capacity),
                };
                (name.clone(), status)
            })
            .collect(),
        lists: game_server
            .lists
            .iter()
            .map(|(name, list)| {
                let status = ListStatus {
                    values: list.values.clone(),
                    capacity: Some(list.capacity),
                };
                (name.clone(), status)
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::allocator::fleet::game_server::{Address, Port};
    use crate::allocator::fleet::test_support::{Build, allocated, counter_request, ready};
    use crate::proto::{AllocationRequest, MetaPatch};

    const NOW: &str = "2025-01-02T03:04:05.123456789Z";

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn run(game_server: &mut GameServer, request: &AllocationRequest) -> Vec<ActionWarning> {
        apply(game_server, &Normalized::new(request), NOW)
    }

    #[test]
    fn metadata_merged_and_last_allocated_set_after_it() {
        let mut gs = ready("gs", "n1").label("mode", "ctf").label("keep", "1");
        gs.annotations = map(&[("note", "old")]);
        let request = AllocationRequest {
            metadata: Some(MetaPatch {
                labels: map(&[("mode", "coop"), ("new", "2")]),
                annotations: map(&[("note", "new"), (LAST_ALLOCATED, "forged")]),
            }),
            ..AllocationRequest::default()
        };
        assert!(run(&mut gs, &request).is_empty());
        assert_eq!(
            gs.labels,
            map(&[("keep", "1"), ("mode", "coop"), ("new", "2")])
        );
        assert_eq!(
            gs.annotations,
            map(&[(LAST_ALLOCATED, NOW), ("note", "new")])
        );
        assert_eq!(gs.state, GameServerState::Allocated);
    }

    #[test]
    fn last_allocated_set_even_when_already_allocated() {
        let mut gs = allocated("gs", "n1");
        gs.annotations = map(&[(LAST_ALLOCATED, "2020-01-01T00:00:00Z")]);
        run(&mut gs, &AllocationRequest::default());
        assert_eq!(gs.annotations[LAST_ALLOCATED], NOW);
        assert_eq!(gs.state, GameServerState::Allocated);
    }

    #[test]
    fn counter_action_rules() {
        let inc = Some("Increment");
        let dec = Some("Decrement");
        // (rule, action, amount, capacity, before (count, capacity), after, error contains)
        type Row<'a> = (
            &'a str,
            Option<&'a str>,
            Option<i64>,
            Option<i64>,
            Option<(i64, i64)>,
            Option<(i64, i64)>,
            Option<&'a str>,
        );
        let rows: Vec<Row<'_>> = vec![
            (
                "increment",
                inc,
                Some(2),
                None,
                Some((1, 10)),
                Some((3, 10)),
                None,
            ),
            (
                "increment clamps to capacity",
                inc,
                Some(20),
                None,
                Some((1, 10)),
                Some((10, 10)),
                None,
            ),
            (
                "increment saturates",
                inc,
                Some(i64::MAX),
                None,
                Some((1, 10)),
                Some((10, 10)),
                None,
            ),
            (
                "decrement",
                dec,
                Some(2),
                None,
                Some((5, 10)),
                Some((3, 10)),
                None,
            ),
            (
                "decrement clamps to zero",
                dec,
                Some(9),
                None,
                Some((5, 10)),
                Some((0, 10)),
                None,
            ),
            (
                "capacity replaces capacity",
                None,
                None,
                Some(20),
                Some((5, 10)),
                Some((5, 20)),
                None,
            ),
            (
                "capacity clamps count down",
                None,
                None,
                Some(3),
                Some((5, 10)),
                Some((3, 3)),
                None,
            ),
            (
                "capacity applies before action",
                inc,
                Some(5),
                Some(6),
                Some((4, 10)),
                Some((6, 6)),
                None,
            ),
            (
                "negative capacity is an error",
                inc,
                Some(1),
                Some(-1),
                Some((4, 10)),
                Some((5, 10)),
                Some("capacity -1 is negative"),
            ),
            (
                "unknown action is an error",
                Some("Double"),
                Some(1),
                None,
                Some((4, 10)),
                Some((4, 10)),
                Some("neither Increment nor Decrement"),
            ),
            (
                "negative amount is an error",
                inc,
                Some(-1),
                None,
                Some((4, 10)),
                Some((4, 10)),
                Some("amount -1 is negative"),
            ),
            (
                "action without amount does nothing",
                inc,
                None,
                None,
                Some((4, 10)),
                Some((4, 10)),
                None,
            ),
            (
                "missing counter is an error",
                inc,
                Some(1),
                None,
                None,
                None,
                Some("counter not found"),
            ),
            (
                "empty action on missing counter is fine",
                None,
                None,
                None,
                None,
                None,
                None,
            ),
        ];
        for (rule, action, amount, capacity, before, after, error) in rows {
            let mut gs = ready("gs", "n1");
            if let Some((count, capacity)) = before {
                gs = gs.counter("rooms", count, capacity);
            }
            let errors = run(&mut gs, &counter_request(action, amount, capacity));
            let state = gs.counters.get("rooms").map(|c| (c.count, c.capacity));
            assert_eq!(state, after, "{rule}");
            match error {
                None => assert!(errors.is_empty(), "{rule}: {errors:?}"),
                Some(expected) => {
                    assert_eq!(errors.len(), 1, "{rule}: {errors:?}");
                    assert_eq!(errors[0].target, ActionTarget::Counter, "{rule}");
                    assert_eq!(errors[0].name, "rooms", "{rule}");
                    assert!(errors[0].message.contains(expected), "{rule}: {errors:?}");
                }
            }
        }
    }

    #[test]
    fn list_action_rules() {
        // (rule, capacity, add, delete, before (values, capacity), after, error contains)
        type Row<'a> = (
            &'a str,
            Option<i64>,
            &'a [&'a str],
            &'a [&'a str],
            Option<(&'a [&'a str], i64)>,
            Option<(&'a [&'a str], i64)>,
            Option<&'a str>,
        );
        let rows: Vec<Row<'_>> = vec![
            (
                "add appends in order",
                None,
                &["c", "b"],
                &[],
                Some((&["a"], 10)),
                Some((&["a", "c", "b"], 10)),
                None,
            ),
            (
                "add skips present values",
                None,
                &["b", "a", "c", "c"],
                &[],
                Some((&["a", "b"], 10)),
                Some((&["a", "b", "c"], 10)),
                None,
            ),
            (
                "add collapses old duplicates",
                None,
                &["c"],
                &[],
                Some((&["a", "b", "a"], 10)),
                Some((&["a", "b", "c"], 10)),
                None,
            ),
            (
                "add truncates to capacity",
                None,
                &["c", "d"],
                &[],
                Some((&["a", "b"], 3)),
                Some((&["a", "b", "c"], 3)),
                None,
            ),
            (
                "capacity replaces capacity",
                Some(5),
                &[],
                &[],
                Some((&["a"], 2)),
                Some((&["a"], 5)),
                None,
            ),
            (
                "capacity truncates values",
                Some(1),
                &[],
                &[],
                Some((&["a", "b"], 2)),
                Some((&["a"], 1)),
                None,
            ),
            (
                "capacity 0 empties",
                Some(0),
                &[],
                &[],
                Some((&["a", "b"], 2)),
                Some((&[], 0)),
                None,
            ),
            (
                "capacity 1000 allowed",
                Some(1000),
                &[],
                &[],
                Some((&[], 2)),
                Some((&[], 1000)),
                None,
            ),
            (
                "capacity above 1000 is an error",
                Some(1001),
                &["b"],
                &[],
                Some((&["a"], 2)),
                Some((&["a", "b"], 2)),
                Some("capacity 1001 is outside 0..=1000"),
            ),
            (
                "negative capacity is an error",
                Some(-1),
                &[],
                &[],
                Some((&["a"], 2)),
                Some((&["a"], 2)),
                Some("capacity -1 is outside"),
            ),
            (
                "capacity applies before add",
                Some(2),
                &["c"],
                &[],
                Some((&["a", "b"], 5)),
                Some((&["a", "b"], 2)),
                None,
            ),
            (
                "delete removes every occurrence, ignores missing",
                None,
                &[],
                &["a", "z"],
                Some((&["a", "b", "a", "c", "c"], 10)),
                Some((&["b", "c", "c"], 10)),
                None,
            ),
            (
                "add then delete",
                None,
                &["x", "y"],
                &["x", "a"],
                Some((&["a", "b"], 10)),
                Some((&["b", "y"], 10)),
                None,
            ),
            (
                "delete frees no room for a truncated add",
                None,
                &["c"],
                &["a"],
                Some((&["a", "b"], 2)),
                Some((&["b"], 2)),
                None,
            ),
            (
                "missing list is an error",
                None,
                &["a"],
                &[],
                None,
                None,
                Some("list not found"),
            ),
            (
                "empty action on missing list is fine",
                None,
                &[],
                &[],
                None,
                None,
                None,
            ),
        ];
        for (rule, capacity, add, delete, before, after, error) in rows {
            let mut gs = ready("gs", "n1");
            if let Some((values, capacity)) = before {
                gs = gs.list("players", values, capacity);
            }
            let action = ListAction {
                add_values: add.iter().map(|v| (*v).to_owned()).collect(),
                capacity,
                delete_values: delete.iter().map(|v| (*v).to_owned()).collect(),
            };
            let request = AllocationRequest {
                lists: [("players".to_owned(), action)].into(),
                ..AllocationRequest::default()
            };
            let errors = run(&mut gs, &request);
            let expected = after.map(|(values, capacity)| {
                let values: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
                (values, capacity)
            });
            let state = gs
                .lists
                .get("players")
                .map(|list| (list.values.clone(), list.capacity));
            assert_eq!(state, expected, "{rule}");
            match error {
                None => assert!(errors.is_empty(), "{rule}: {errors:?}"),
                Some(expected) => {
                    assert_eq!(errors.len(), 1, "{rule}: {errors:?}");
                    assert_eq!(errors[0].target, ActionTarget::List, "{rule}");
                    assert!(errors[0].message.contains(expected), "{rule}: {errors:?}");
                }
            }
        }
    }

    #[test]
    fn action_errors_are_collected_and_other_actions_still_apply() {
        let mut gs = ready("gs", "n1").counter("rooms", 1, 4);
        let request = AllocationRequest {
            counters: [
                (
                    "missing".to_owned(),
                    CounterAction {
                        capacity: Some(3),
                        ..CounterAction::default()
                    },
                ),
                (
                    "rooms".to_owned(),
                    CounterAction {
                        action: Some("Increment".into()),
                        amount: Some(1),
                        capacity: None,
                    },
                ),
            ]
            .into(),
            lists: [(
                "gone".to_owned(),
                ListAction {
                    add_values: vec!["a".into()],
                    ..ListAction::default()
                },
            )]
            .into(),
            ..AllocationRequest::default()
        };
        let errors = run(&mut gs, &request);
        let names: Vec<&str> = errors.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["missing", "gone"]);
        assert_eq!(gs.counters["rooms"].count, 2);
        assert_eq!(gs.state, GameServerState::Allocated);
    }

    #[test]
    fn response_reports_the_game_server_after_the_allocation() {
        let mut gs = ready("gs-1", "node-7")
            .label("mode", "ctf")
            .counter("rooms", 1, 4)
            .list("players", &["p1"], 8);
        gs.address = "10.0.0.7".into();
        gs.addresses = vec![Address {
            kind: "InternalIP".into(),
            address: "10.0.0.7".into(),
        }];
        gs.ports = vec![Port {
            name: "default".into(),
            port: 7001,
        }];
        let request = AllocationRequest {
            counters: [(
                "rooms".to_owned(),
                CounterAction {
                    action: Some("Increment".into()),
                    amount: Some(2),
                    capacity: None,
                },
            )]
            .into(),
            lists: [(
                "players".to_owned(),
                ListAction {
                    add_values: vec!["p2".into()],
                    ..ListAction::default()
                },
            )]
            .into(),
            ..AllocationRequest::default()
        };
        run(&mut gs, &request);

        let response = response(&gs);
        assert_eq!(response.game_server_name, "gs-1");
        assert_eq!(response.node_name, "node-7");
        assert_eq!(response.address, "10.0.0.7");
        assert_eq!(response.source, "local");
        assert_eq!(
            response.ports,
            [GameServerStatusPort {
                name: "default".into(),
                port: 7001
            }]
        );
        assert_eq!(
            response.addresses,
            [GameServerStatusAddress {
                r#type: "InternalIP".into(),
                address: "10.0.0.7".into()
            }]
        );
        let metadata = response.metadata.expect("metadata");
        assert_eq!(metadata.labels, map(&[("mode", "ctf")]));
        assert_eq!(metadata.annotations, map(&[(LAST_ALLOCATED, NOW)]));
        assert_eq!(
            response.counters["rooms"],
            CounterStatus {
                count: Some(3),
                capacity: Some(4)
            }
        );
        assert_eq!(
            response.lists["players"],
            ListStatus {
                values: vec!["p1".into(), "p2".into()],
                capacity: Some(8)
            }
        );
    }
}
