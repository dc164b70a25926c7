//! The naive reference allocator: sort every candidate, then scan in order.
//!
//! Written from ALLOCATION-SEMANTICS.md alone and sharing no code with the crate's allocator,
//! so that tests can use it as an oracle and the fleet benchmark as a baseline. It reads a
//! snapshot of the fleet and names the game server Agones would choose; it applies nothing.

use std::cmp::{Ordering, Reverse};
use std::collections::HashMap;

use agones_processor::allocator::{GameServer, GameServerState};
use agones_processor::proto::allocation_request::SchedulingStrategy;
use agones_processor::proto::game_server_selector::GameServerState as WantedState;
use agones_processor::proto::{AllocationRequest, GameServerSelector, Priority, priority};

/// The selectors a request tries, in order, after resolving the deprecated fields.
#[allow(deprecated)]
pub(crate) fn selectors(request: &AllocationRequest) -> Vec<GameServerSelector> {
    if !request.game_server_selectors.is_empty() {
        return request.game_server_selectors.clone();
    }
    let mut selectors = request.preferred_game_server_selectors.clone();
    selectors.push(
        request
            .required_game_server_selector
            .clone()
            .unwrap_or_default(),
    );
    selectors
}

/// Whether a selector matches a game server (rule "Does a selector match a game server?").
pub(crate) fn matches(selector: &GameServerSelector, gs: &GameServer) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .all(|(key, value)| gs.labels.get(key) == Some(value));
    let wanted = match selector.game_server_state() {
        WantedState::Ready => GameServerState::Ready,
        WantedState::Allocated => GameServerState::Allocated,
    };
    let players_ok = match (&selector.players, &gs.players) {
        (Some(wanted), Some(players)) if wanted.max_available != 0 => {
            let room = i128::from(players.capacity) - i128::from(players.count);
            i128::from(wanted.min_available) <= room && room <= i128::from(wanted.max_available)
        }
        _ => true,
    };
    let bounded = |value: i64, min: i64, max: i64| value >= min && (max == 0 || value <= max);
    let counters_ok = selector.counters.iter().all(|(name, wanted)| {
        gs.counters.get(name).is_some_and(|c| {
            bounded(
                c.capacity - c.count,
                wanted.min_available,
                wanted.max_available,
            ) && bounded(c.count, wanted.min_count, wanted.max_count)
        })
    });
    let lists_ok = selector.lists.iter().all(|(name, wanted)| {
        gs.lists.get(name).is_some_and(|l| {
            bounded(
                l.capacity - l.values.len() as i64,
                wanted.min_available,
                wanted.max_available,
            ) && (wanted.contains_value.is_empty() || l.values.contains(&wanted.contains_value))
        })
    });
    labels_ok && gs.state == wanted && players_ok && counters_ok && lists_ok
}

fn available(gs: &GameServer, priority: &Priority) -> Option<i64> {
    match priority.r#type() {
        priority::Type::Counter => gs.counters.get(&priority.key).map(|c| c.capacity - c.count),
        priority::Type::List => gs
            .lists
            .get(&priority.key)
            .map(|l| l.capacity - l.values.len() as i64),
    }
}

fn by_priorities(a: &GameServer, b: &GameServer, priorities: &[Priority]) -> Ordering {
    for priority in priorities {
        let descending = priority.order() == priority::Order::Descending;
        let ordering = match (available(a, priority), available(b, priority)) {
            (Some(x), Some(y)) if descending => y.cmp(&x),
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        if ordering != Ordering::Equal {
            return ordering;
        }
    }
    Ordering::Equal
}

/// The candidates of the request's namespace in the request's order; `None` for Distributed
/// without priorities, whose order is random.
pub(crate) fn ordered<'f>(
    fleet: &'f [GameServer],
    request: &AllocationRequest,
) -> Option<Vec<&'f GameServer>> {
    let mut nodes: HashMap<&str, (u64, u64)> = HashMap::new();
    for gs in fleet {
        let count = nodes.entry(gs.node_name.as_str()).or_default();
        match gs.state {
            GameServerState::Allocated => count.0 += 1,
            GameServerState::Ready => count.1 += 1,
            GameServerState::Other(_) => {}
        }
    }
    let mut candidates: Vec<&GameServer> = fleet
        .iter()
        .filter(|gs| gs.namespace == request.namespace && !gs.deleting)
        .filter(|gs| {
            matches!(
                gs.state,
                GameServerState::Ready | GameServerState::Allocated
            )
        })
        .collect();
    let priorities = &request.priorities;
    match request.scheduling() {
        SchedulingStrategy::Packed => candidates.sort_by(|a, b| {
            let node = |gs: &GameServer| {
                let (allocated, ready) = nodes
                    .get(gs.node_name.as_str())
                    .copied()
                    .unwrap_or_default();
                (Reverse(allocated), Reverse(ready))
            };
            // Not tracking players counts as unlimited room: after every tracked room.
            let room = |gs: &GameServer| {
                gs.players.map_or(i64::MAX as i128 + 1, |p| {
                    i128::from(p.capacity) - i128::from(p.count)
                })
            };
            (a.state != GameServerState::Allocated)
                .cmp(&(b.state != GameServerState::Allocated))
                .then(node(a).cmp(&node(b)))
                .then(room(a).cmp(&room(b)))
                .then_with(|| by_priorities(a, b, priorities))
                .then_with(|| a.name.cmp(&b.name))
        }),
        SchedulingStrategy::Distributed if !priorities.is_empty() => candidates
            .sort_by(|a, b| by_priorities(a, b, priorities).then_with(|| a.name.cmp(&b.name))),
        SchedulingStrategy::Distributed => return None,
    }
    Some(candidates)
}

/// The name of the game server Agones would allocate, or `None` when nothing matches; `None`
/// as well for Distributed without priorities (random: see [`ordered`]).
pub(crate) fn choose(fleet: &[GameServer], request: &AllocationRequest) -> Option<String> {
    let ordered = ordered(fleet, request)?;
    selectors(request).iter().find_map(|selector| {
        ordered
            .iter()
            .find(|gs| matches(selector, gs))
            .map(|gs| gs.name.clone())
    })
}
