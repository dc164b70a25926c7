//! Choosing a game server: which ones a selector matches and in which order they are tried.

use std::cmp::Ordering;

use rand::Rng;
use rand::seq::IndexedRandom;

use std::collections::BTreeMap;

use super::game_server::{GameServer, GameServerState};
#[cfg(test)]
use super::index::Room;
use super::index::{Entry, NamespaceIndex, Narrowed};
#[cfg(test)]
use super::nodes::NodeCounts;
use super::request::{Normalized, PriorityKey};
use crate::proto::GameServerSelector;
use crate::proto::allocation_request::SchedulingStrategy;
use crate::proto::{game_server_selector, priority};

/// Whether a game server may be allocated at all: Ready or Allocated, and not being deleted.
pub(crate) fn is_candidate(game_server: &GameServer) -> bool {
    !game_server.deleting
        && matches!(
            game_server.state,
            GameServerState::Ready | GameServerState::Allocated
        )
}

/// Whether a selector matches a game server: labels, state, players, counters and lists.
pub(crate) fn matches(selector: &GameServerSelector, game_server: &GameServer) -> bool {
    let labels = selector
        .match_labels
        .iter()
        .all(|(key, value)| game_server.labels.get(key) == Some(value));
    if !labels {
        return false;
    }

    let state = match selector.game_server_state() {
        game_server_selector::GameServerState::Ready => GameServerState::Ready,
        game_server_selector::GameServerState::Allocated => GameServerState::Allocated,
    };
    if game_server.state != state {
        return false;
    }

    // A zero maximum means the selector does not filter on players at all.
    if let Some(wanted) = &selector.players
        && wanted.max_available != 0
        && let Some(players) = &game_server.players
    {
        let available = i128::from(players.available());
        let range = i128::from(wanted.min_available)..=i128::from(wanted.max_available);
        if !range.contains(&available) {
            return false;
        }
    }

    let counters = selector.counters.iter().all(|(name, wanted)| {
        game_server.counters.get(name).is_some_and(|counter| {
            within(
                counter.available(),
                wanted.min_available,
                wanted.max_available,
            ) && within(counter.count, wanted.min_count, wanted.max_count)
        })
    });
    if !counters {
        return false;
    }

    selector.lists.iter().all(|(name, wanted)| {
        game_server.lists.get(name).is_some_and(|list| {
            within(list.available(), wanted.min_available, wanted.max_available)
                && (wanted.contains_value.is_empty()
                    || list.values.contains(&wanted.contains_value))
        })
    })
}

/// `min <= value <= max`, where a zero `max` means no upper bound.
fn within(value: i64, min: i64, max: i64) -> bool {
    value >= min && (max == 0 || value <= max)
}

/// The room left in the counter or list a priority names, if the game server has it.
fn priority_available(game_server: &GameServer, priority: &PriorityKey<'_>) -> Option<i64> {
    match priority.kind {
        priority::Type::Counter => game_server
            .counters
            .get(priority.key)
            .map(|counter| counter.available()),
        priority::Type::List => game_server
            .lists
            .get(priority.key)
            .map(|list| list.available()),
    }
}

/// Compares two game servers by the request's priorities; `Equal` when none decides.
///
/// A game server that has the counter or list comes first whatever the order: the order only
/// says which way the room left is compared.
pub(crate) fn compare_priorities(
    a: &GameServer,
    b: &GameServer,
    priorities: &[PriorityKey<'_>],
) -> Ordering {
    for priority in priorities {
        let ordering = match (
            priority_available(a, priority),
            priority_available(b, priority),
        ) {
            (Some(a), Some(b)) if priority.descending => b.cmp(&a),
            (Some(a), Some(b)) => a.cmp(&b),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        if ordering.is_ne() {
            return ordering;
        }
    }
    Ordering::Equal
}

/// The Packed order: `Less` means `a` is tried before `b`.
///
/// A total order: when only one of the two tracks players, the one that tracks them comes
/// first (see [`Room`]). The fleet walks its index in this order; this comparator states the
/// same order over two game servers and checks the index in tests.
#[cfg(test)]
pub(crate) fn compare_packed(
    a: &GameServer,
    b: &GameServer,
    nodes: &NodeCounts,
    priorities: &[PriorityKey<'_>],
) -> Ordering {
    let not_allocated = |game_server: &GameServer| game_server.state != GameServerState::Allocated;
    not_allocated(a)
        .cmp(&not_allocated(b))
        .then_with(|| {
            let (a, b) = (nodes.get(&a.node_name), nodes.get(&b.node_name));
            b.allocated.cmp(&a.allocated).then(b.ready.cmp(&a.ready))
        })
        .then_with(|| Room::of(a).cmp(&Room::of(b)))
        .then_with(|| compare_priorities(a, b, priorities))
        .then_with(|| a.name.cmp(&b.name))
}

/// The Distributed order when the request has priorities: priorities, then name.
pub(crate) fn compare_distributed(
    a: &GameServer,
    b: &GameServer,
    priorities: &[PriorityKey<'_>],
) -> Ordering {
    compare_priorities(a, b, priorities).then_with(|| a.name.cmp(&b.name))
}

/// Chooses the game server for a request among the candidates of its namespace.
///
/// Selectors are tried in order; for each, the first matching candidate in the request's order
/// wins. Each selector walks the narrowest part of the index its labels allow, node group by
/// node group in Packed order (a group is the nodes that tie on counts):
///
/// - Packed without priorities takes, in the first group with a match, the first match of each
///   node and keeps the smallest by player room then name;
/// - Packed with priorities also walks the group's candidates that share that player room,
///   since priorities rank only among those;
/// - Distributed walks every candidate: with priorities it keeps the first in priority then
///   name order, without them it picks uniformly among the matches, which is what walking a
///   uniformly shuffled list gives.
pub(crate) fn choose<'g>(
    index: &NamespaceIndex,
    in_namespace: &'g BTreeMap<String, GameServer>,
    request: &Normalized<'_>,
    rng: &mut impl Rng,
) -> Option<&'g GameServer> {
    let priorities = request.priorities.as_slice();
    for selector in &request.selectors {
        let selector = selector.selector.as_ref();
        let Some(narrowed) = index.for_selector(selector).narrowest(selector) else {
            continue;
        };
        let matching = |entry: &Entry| {
            in_namespace
                .get(&entry.name)
                .filter(|game_server| matches(selector, game_server))
        };
        let chosen = match request.scheduling {
            SchedulingStrategy::Packed => packed(narrowed, &matching, priorities),
            SchedulingStrategy::Distributed => {
                let candidates = narrowed
                    .nodes()
                    .flat_map(|(_, entries)| entries)
                    .filter_map(matching);
                if priorities.is_empty() {
                    candidates.collect::<Vec<_>>().choose(rng).copied()
                } else {
                    candidates.min_by(|a, b| compare_distributed(a, b, priorities))
                }
            }
        };
        if chosen.is_some() {
            return chosen;
        }
    }
    None
}

/// The first match in Packed order, walking node group by node group.
fn packed<'g>(
    narrowed: Narrowed<'_>,
    matching: &impl Fn(&Entry) -> Option<&'g GameServer>,
    priorities: &[PriorityKey<'_>],
) -> Option<&'g GameServer> {
    let mut nodes = narrowed.nodes().peekable();
    let mut group = Vec::new();
    while let Some((rank, entries)) = nodes.next() {
        group.clear();
        group.push(entries);
        while let Some((_, entries)) = nodes.next_if(|(next, _)| *next == rank) {
            group.push(entries);
        }
        // Each node's set is in room then name order, so its first match is its best.
        let Some((first, game_server)) = group
            .iter()
            .filter_map(|entries| {
                entries
                    .iter()
                    .find_map(|entry| matching(entry).map(|game_server| (entry, game_server)))
            })
            .min_by(|(a, _), (b, _)| a.cmp(b))
        else {
            continue;
        };
        if priorities.is_empty() {
            return Some(game_server);
        }
        let start = Entry::first_with(&first.room);
        return group
            .iter()
            .flat_map(|entries| {
                entries
                    .range(&start..)
                    .take_while(|entry| entry.room == first.room)
            })
            .filter_map(matching)
            .min_by(|a, b| compare_distributed(a, b, priorities));
    }
    None
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::allocator::fleet::Fleet;
    use crate::allocator::fleet::test_support::{Build, allocated, labels, ready, request};
    use crate::proto::{
        AllocationRequest, CounterSelector, ListSelector, PlayerSelector, Priority,
        game_server_selector::GameServerState as WantedState,
    };

    fn counter_selector(name: &str, bounds: [i64; 4]) -> GameServerSelector {
        let [min_count, max_count, min_available, max_available] = bounds;
        let wanted = CounterSelector {
            min_count,
            max_count,
            min_available,
            max_available,
        };
        GameServerSelector {
            counters: [(name.to_owned(), wanted)].into(),
            ..GameServerSelector::default()
        }
    }

    fn list_selector(name: &str, contains: &str, min: i64, max: i64) -> GameServerSelector {
        let wanted = ListSelector {
            contains_value: contains.to_owned(),
            min_available: min,
            max_available: max,
        };
        GameServerSelector {
            lists: [(name.to_owned(), wanted)].into(),
            ..GameServerSelector::default()
        }
    }

    fn players_selector(min: u64, max: u64) -> GameServerSelector {
        GameServerSelector {
            players: Some(PlayerSelector {
                min_available: min,
                max_available: max,
            }),
            ..GameServerSelector::default()
        }
    }

    fn allocated_selector() -> GameServerSelector {
        GameServerSelector {
            game_server_state: WantedState::Allocated as i32,
            ..GameServerSelector::default()
        }
    }

    #[test]
    fn selector_matching_rules() {
        let gs = || ready("gs", "n1");
        let rows: Vec<(&str, GameServerSelector, GameServer, bool)> = vec![
            ("empty selector matches Ready", labels(&[]), gs(), true),
            (
                "empty selector skips Allocated",
                labels(&[]),
                allocated("gs", "n1"),
                false,
            ),
            (
                "state Allocated matches Allocated",
                allocated_selector(),
                allocated("gs", "n1"),
                true,
            ),
            (
                "state Allocated skips Ready",
                allocated_selector(),
                gs(),
                false,
            ),
            (
                "other states never match",
                labels(&[]),
                gs().state("Scheduled"),
                false,
            ),
            (
                "match labels all present",
                labels(&[("a", "1"), ("b", "2")]),
                gs().label("a", "1").label("b", "2").label("c", "3"),
                true,
            ),
            (
                "match labels one missing",
                labels(&[("a", "1"), ("b", "2")]),
                gs().label("a", "1"),
                false,
            ),
            (
                "match labels value differs",
                labels(&[("a", "1")]),
                gs().label("a", "2"),
                false,
            ),
            (
                "players ignored when max is 0",
                players_selector(5, 0),
                gs().players(9, 10),
                true,
            ),
            (
                "players ignored when not tracked",
                players_selector(5, 8),
                gs(),
                true,
            ),
            (
                "players available within range",
                players_selector(2, 4),
                gs().players(6, 10),
                true,
            ),
            (
                "players available at min",
                players_selector(4, 6),
                gs().players(6, 10),
                true,
            ),
            (
                "players available below min",
                players_selector(5, 6),
                gs().players(6, 10),
                false,
            ),
            (
                "players available above max",
                players_selector(1, 3),
                gs().players(6, 10),
                false,
            ),
            (
                "counter missing",
                counter_selector("rooms", [0; 4]),
                gs(),
                false,
            ),
            (
                "counter present, no bounds",
                counter_selector("rooms", [0; 4]),
                gs().counter("rooms", 3, 4),
                true,
            ),
            (
                "counter count below minCount",
                counter_selector("rooms", [4, 0, 0, 0]),
                gs().counter("rooms", 3, 10),
                false,
            ),
            (
                "counter count above maxCount",
                counter_selector("rooms", [0, 2, 0, 0]),
                gs().counter("rooms", 3, 10),
                false,
            ),
            (
                "counter maxCount 0 is unbounded",
                counter_selector("rooms", [1, 0, 0, 0]),
                gs().counter("rooms", 300, 1000),
                true,
            ),
            (
                "counter available below minAvailable",
                counter_selector("rooms", [0, 0, 8, 0]),
                gs().counter("rooms", 3, 10),
                false,
            ),
            (
                "counter available above maxAvailable",
                counter_selector("rooms", [0, 0, 0, 6]),
                gs().counter("rooms", 3, 10),
                false,
            ),
            (
                "counter available within bounds",
                counter_selector("rooms", [3, 3, 7, 7]),
                gs().counter("rooms", 3, 10),
                true,
            ),
            (
                "list missing",
                list_selector("players", "", 0, 0),
                gs(),
                false,
            ),
            (
                "list available below minAvailable",
                list_selector("players", "", 2, 0),
                gs().list("players", &["a", "b"], 3),
                false,
            ),
            (
                "list available above maxAvailable",
                list_selector("players", "", 0, 1),
                gs().list("players", &["a"], 3),
                false,
            ),
            (
                "list available within bounds",
                list_selector("players", "", 1, 2),
                gs().list("players", &["a"], 3),
                true,
            ),
            (
                "list contains value",
                list_selector("players", "b", 0, 0),
                gs().list("players", &["a", "b"], 3),
                true,
            ),
            (
                "list lacks value",
                list_selector("players", "c", 0, 0),
                gs().list("players", &["a", "b"], 3),
                false,
            ),
        ];
        for (rule, selector, game_server, expected) in rows {
            assert_eq!(matches(&selector, &game_server), expected, "{rule}");
        }
    }

    #[test]
    fn deleting_or_other_states_are_not_candidates() {
        assert!(is_candidate(&ready("gs", "n1")));
        assert!(is_candidate(&allocated("gs", "n1")));
        assert!(!is_candidate(&ready("gs", "n1").deleting()));
        assert!(!is_candidate(&ready("gs", "n1").state("Shutdown")));
    }

    fn counted(fleet: &[GameServer]) -> NodeCounts {
        let mut nodes = NodeCounts::default();
        fleet.iter().for_each(|gs| nodes.add(gs));
        nodes
    }

    fn priority(kind: priority::Type, key: &str, descending: bool) -> PriorityKey<'_> {
        PriorityKey {
            kind,
            key,
            descending,
        }
    }

    /// The candidates in Packed order; the fixtures keep the comparator a total order.
    fn packed_order(fleet: &[GameServer], priorities: &[PriorityKey<'_>]) -> Vec<String> {
        let nodes = counted(fleet);
        let mut ordered: Vec<&GameServer> = fleet.iter().filter(|gs| is_candidate(gs)).collect();
        ordered.sort_by(|a, b| compare_packed(a, b, &nodes, priorities));
        ordered.iter().map(|gs| gs.name.clone()).collect()
    }

    #[test]
    fn packed_order_rules() {
        use priority::Type::{Counter, List};
        // (rule, fleet, priorities, expected order)
        type Row<'a> = (&'a str, Vec<GameServer>, Vec<PriorityKey<'a>>, Vec<&'a str>);
        let rows: Vec<Row<'_>> = vec![
            (
                "packed_prefers_allocated_over_ready",
                vec![ready("a", "n1"), allocated("b", "n1")],
                vec![],
                vec!["b", "a"],
            ),
            (
                "packed_prefers_node_with_more_allocated",
                vec![ready("a", "n1"), ready("b", "n2"), allocated("z", "n2")],
                vec![],
                vec!["z", "b", "a"],
            ),
            (
                "packed_prefers_node_with_more_ready_on_allocated_tie",
                vec![ready("a", "n1"), ready("b", "n2"), ready("c", "n2")],
                vec![],
                vec!["b", "c", "a"],
            ),
            (
                "packed_counts_non_candidates_on_the_node",
                vec![
                    ready("a", "n1"),
                    ready("b", "n2"),
                    ready("x", "n2").deleting(),
                    ready("y", "n1").state("Scheduled"),
                ],
                vec![],
                vec!["b", "a"],
            ),
            (
                "packed_empty_node_name_is_a_node",
                vec![ready("a", "n1"), ready("b", ""), ready("c", "")],
                vec![],
                vec!["b", "c", "a"],
            ),
            (
                "packed_interleaves_nodes_with_equal_counts",
                vec![
                    ready("a", "n1"),
                    ready("b", "n2"),
                    ready("c", "n1"),
                    ready("d", "n2"),
                ],
                vec![],
                vec!["a", "b", "c", "d"],
            ),
            (
                "packed_prefers_less_player_room_when_both_track",
                vec![
                    ready("a", "n1").players(1, 10),
                    ready("b", "n1").players(8, 10),
                ],
                vec![],
                vec!["b", "a"],
            ),
            (
                "packed_node_counts_before_player_room",
                vec![
                    ready("a", "n1").players(9, 10),
                    ready("b", "n2").players(0, 10),
                    ready("c", "n2").players(0, 10),
                ],
                vec![],
                vec!["b", "c", "a"],
            ),
            (
                "packed_player_room_before_priorities",
                vec![
                    ready("a", "n1").players(1, 10).counter("rooms", 3, 4),
                    ready("b", "n1").players(8, 10).counter("rooms", 0, 4),
                ],
                vec![priority(Counter, "rooms", false)],
                vec!["b", "a"],
            ),
            (
                "packed_ascending_counter_priority_prefers_less_available",
                vec![
                    ready("a", "n1").counter("rooms", 0, 4),
                    ready("b", "n1").counter("rooms", 3, 4),
                ],
                vec![priority(Counter, "rooms", false)],
                vec!["b", "a"],
            ),
            (
                "packed_descending_counter_priority_prefers_more_available",
                vec![
                    ready("a", "n1").counter("rooms", 3, 4),
                    ready("b", "n1").counter("rooms", 0, 4),
                ],
                vec![priority(Counter, "rooms", true)],
                vec!["b", "a"],
            ),
            (
                "packed_list_priority_uses_capacity_minus_length",
                vec![
                    ready("a", "n1").list("p", &[], 4),
                    ready("b", "n1").list("p", &["x"], 4),
                ],
                vec![priority(List, "p", false)],
                vec!["b", "a"],
            ),
            (
                "packed_priority_missing_counter_sorts_after_ascending",
                vec![ready("a", "n1"), ready("b", "n1").counter("rooms", 0, 4)],
                vec![priority(Counter, "rooms", false)],
                vec!["b", "a"],
            ),
            (
                "packed_priority_missing_counter_sorts_after_descending",
                vec![ready("a", "n1"), ready("b", "n1").counter("rooms", 0, 4)],
                vec![priority(Counter, "rooms", true)],
                vec!["b", "a"],
            ),
            (
                "packed_priority_neither_has_key_goes_to_next",
                vec![
                    ready("a", "n1").counter("x", 0, 4),
                    ready("b", "n1").counter("x", 3, 4),
                ],
                vec![
                    priority(List, "missing", false),
                    priority(Counter, "x", false),
                ],
                vec!["b", "a"],
            ),
            (
                "packed_priority_equal_goes_to_next",
                vec![
                    ready("a", "n1").counter("x", 1, 4).counter("y", 0, 4),
                    ready("b", "n1").counter("x", 1, 4).counter("y", 3, 4),
                ],
                vec![priority(Counter, "x", true), priority(Counter, "y", false)],
                vec!["b", "a"],
            ),
            (
                "packed_breaks_ties_by_name_ascending_even_when_descending",
                vec![
                    ready("b", "n1").counter("x", 1, 4),
                    ready("a", "n1").counter("x", 1, 4),
                ],
                vec![priority(Counter, "x", true)],
                vec!["a", "b"],
            ),
        ];
        for (rule, fleet, priorities, expected) in rows {
            assert_eq!(packed_order(&fleet, &priorities), expected, "{rule}");
        }
    }

    #[test]
    fn packed_puts_untracked_players_after_tracked_ones() {
        // Rule "if both track players, less room first", made total: no tracking is unlimited
        // room, so a full tracked game server still comes before an untracked one.
        let nodes = NodeCounts::default();
        let tracked = ready("b", "n1").players(0, 10);
        let untracked = ready("a", "n1");
        let ordering = compare_packed(&tracked, &untracked, &nodes, &[]);
        assert_eq!(ordering, Ordering::Less);
        let chosen = choose_name(&[untracked, tracked], &request(vec![]), 0);
        assert_eq!(chosen.as_deref(), Some("b"));
    }

    #[test]
    fn distributed_with_priorities_orders_by_priorities_then_name() {
        let rooms = [priority(priority::Type::Counter, "rooms", true)];
        let mut fleet = [
            allocated("d", "n9").counter("rooms", 3, 4),
            ready("c", "n1").counter("rooms", 0, 4),
            ready("b", "n1"),
            ready("a", "n2").counter("rooms", 0, 4),
        ];
        fleet.sort_by(|a, b| compare_distributed(a, b, &rooms));
        let names: Vec<&str> = fleet.iter().map(|gs| gs.name.as_str()).collect();
        // Neither the state nor the node matters: only priorities, then name.
        assert_eq!(names, ["a", "c", "d", "b"]);
    }

    fn choose_name(fleet: &[GameServer], request: &AllocationRequest, seed: u64) -> Option<String> {
        let fleet = Fleet::new(fleet.iter().cloned()).with_seed(seed);
        fleet
            .allocate(request)
            .ok()
            .map(|response| response.game_server_name)
    }

    #[test]
    fn selectors_tried_in_order_over_ordered_candidates() {
        // "a" is first in Packed order and matches only the second selector; the first selector
        // decides even though its match comes later in the order.
        let fleet = [
            ready("a", "n1").label("mode", "coop"),
            ready("b", "n2").label("mode", "ctf"),
            ready("c", "n2").label("mode", "ctf"),
            allocated("z", "n1"),
        ];
        let rows = [
            (
                "first selector wins over a better-ordered match",
                vec!["ctf", "coop"],
                Some("b"),
            ),
            (
                "falls back to the next selector",
                vec!["dm", "coop"],
                Some("a"),
            ),
            ("no selector matches", vec!["dm"], None),
        ];
        for (rule, modes, expected) in rows {
            let selectors = modes.iter().map(|mode| labels(&[("mode", mode)])).collect();
            let chosen = choose_name(&fleet, &request(selectors), 0);
            assert_eq!(chosen.as_deref(), expected, "{rule}");
        }
    }

    fn distributed() -> AllocationRequest {
        AllocationRequest {
            scheduling: SchedulingStrategy::Distributed as i32,
            ..request(vec![labels(&[])])
        }
    }

    #[test]
    fn distributed_is_deterministic_for_a_seed_and_varies_over_seeds() {
        let fleet: Vec<GameServer> = (0..20)
            .map(|i| ready(&format!("gs-{i:02}"), "n1"))
            .collect();
        let request = distributed();
        let mut seen = HashSet::new();
        for seed in 0..200 {
            let first = choose_name(&fleet, &request, seed);
            assert_eq!(first, choose_name(&fleet, &request, seed), "seed {seed}");
            seen.insert(first.expect("a Ready game server"));
        }
        assert!(seen.len() > 10, "only {} distinct choices", seen.len());
    }

    #[test]
    fn distributed_with_priorities_is_not_random() {
        let fleet: Vec<GameServer> = (0..10)
            .map(|i| ready(&format!("gs-{i}"), "n1").counter("rooms", i % 3, 4))
            .collect();
        let request = AllocationRequest {
            priorities: vec![Priority {
                r#type: priority::Type::Counter as i32,
                key: "rooms".into(),
                order: priority::Order::Ascending as i32,
            }],
            ..distributed()
        };
        for seed in 0..20 {
            assert_eq!(choose_name(&fleet, &request, seed).as_deref(), Some("gs-2"));
        }
    }
}
