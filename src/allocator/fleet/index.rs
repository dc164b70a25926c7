//! Ordered indexes of the candidates, so that a request does not walk the whole namespace.
//!
//! Each namespace keeps, per allocatable state, one ordered set of every candidate and one per
//! label pair, all keyed by the Packed order (node counts, player room, name). A selector walks
//! the smallest set its labels allow, in order, and stops at the first match; without
//! priorities that match is the answer.
//!
//! A key depends on its node's counts, which change whenever a game server on that node joins,
//! leaves or changes state. The fleet therefore takes every candidate of the touched nodes out
//! of the index before a change and puts them back after it: a change costs the number of
//! game servers on the node, not the size of the fleet.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::game_server::{GameServer, GameServerState};
use super::nodes::NodeCounts;
use super::select;
use crate::proto::GameServerSelector;
use crate::proto::game_server_selector;

/// The player room step of the Packed order, as a total order.
///
/// A game server that does not track players has no limit on players, so it sorts after every
/// game server that does; this agrees with "less room first" whenever both track players.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Room {
    Tracked(i64),
    Untracked,
}

impl Room {
    pub(crate) fn of(game_server: &GameServer) -> Self {
        match &game_server.players {
            Some(players) => Self::Tracked(players.available()),
            None => Self::Untracked,
        }
    }
}

/// A candidate's place in the Packed order among candidates of the same state, priorities
/// aside: node counts, player room, then name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct PackedKey {
    /// Everything before the priorities; candidates sharing it are ranked by priorities.
    pub(crate) prefix: (Reverse<u64>, Reverse<u64>, Room),
    pub(crate) name: String,
}

impl PackedKey {
    pub(crate) fn of(game_server: &GameServer, nodes: &NodeCounts) -> Self {
        let node = nodes.get(&game_server.node_name);
        Self {
            prefix: (
                Reverse(node.allocated),
                Reverse(node.ready),
                Room::of(game_server),
            ),
            name: game_server.name.clone(),
        }
    }
}

/// The candidates of one namespace in one state.
#[derive(Debug, Default)]
pub(crate) struct StateIndex {
    pub(crate) all: BTreeSet<PackedKey>,
    by_label: HashMap<(String, String), BTreeSet<PackedKey>>,
}

impl StateIndex {
    /// The smallest set that holds every candidate carrying the selector's labels; `None` when
    /// some label pair is on no candidate at all.
    pub(crate) fn narrowest(&self, selector: &GameServerSelector) -> Option<&BTreeSet<PackedKey>> {
        let mut narrowest = &self.all;
        for (key, value) in &selector.match_labels {
            // The lookup needs an owned pair; selectors carry few labels, so this stays cheap.
            let set = self.by_label.get(&(key.clone(), value.clone()))?;
            if set.len() < narrowest.len() {
                narrowest = set;
            }
        }
        Some(narrowest)
    }

    fn add(&mut self, game_server: &GameServer, key: &PackedKey) {
        self.all.insert(key.clone());
        for (label, value) in &game_server.labels {
            self.by_label
                .entry((label.clone(), value.clone()))
                .or_default()
                .insert(key.clone());
        }
    }

    fn remove(&mut self, game_server: &GameServer, key: &PackedKey) {
        self.all.remove(key);
        for (label, value) in &game_server.labels {
            let pair = (label.clone(), value.clone());
            if let Some(set) = self.by_label.get_mut(&pair) {
                set.remove(key);
                if set.is_empty() {
                    self.by_label.remove(&pair);
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.all.is_empty()
    }
}

/// The candidates of one namespace, by state.
#[derive(Debug, Default)]
pub(crate) struct NamespaceIndex {
    ready: StateIndex,
    allocated: StateIndex,
}

impl NamespaceIndex {
    /// The candidates in the state a selector asks for.
    pub(crate) fn for_selector(&self, selector: &GameServerSelector) -> &StateIndex {
        match selector.game_server_state() {
            game_server_selector::GameServerState::Ready => &self.ready,
            game_server_selector::GameServerState::Allocated => &self.allocated,
        }
    }

    fn for_state(&mut self, state: &GameServerState) -> &mut StateIndex {
        match state {
            GameServerState::Allocated => &mut self.allocated,
            _ => &mut self.ready,
        }
    }
}

/// Every candidate of the fleet, indexed by namespace and by node.
#[derive(Debug, Default)]
pub(crate) struct Index {
    namespaces: HashMap<String, NamespaceIndex>,
    /// Candidates per node, as (namespace, name): the ones to re-key when the node's counts
    /// change.
    members: HashMap<String, BTreeSet<(String, String)>>,
}

impl Index {
    /// The index of a namespace, if it has any candidate.
    pub(crate) fn namespace(&self, namespace: &str) -> Option<&NamespaceIndex> {
        self.namespaces.get(namespace)
    }

    /// The candidates on a node.
    pub(crate) fn members(&self, node: &str) -> Vec<(String, String)> {
        self.members
            .get(node)
            .map(|members| members.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Indexes a game server under the current node counts, if it is a candidate.
    pub(crate) fn add(&mut self, game_server: &GameServer, nodes: &NodeCounts) {
        if !select::is_candidate(game_server) {
            return;
        }
        let key = PackedKey::of(game_server, nodes);
        self.namespaces
            .entry(game_server.namespace.clone())
            .or_default()
            .for_state(&game_server.state)
            .add(game_server, &key);
        self.members
            .entry(game_server.node_name.clone())
            .or_default()
            .insert((game_server.namespace.clone(), game_server.name.clone()));
    }

    /// Takes a game server out; the node counts must be the ones it was indexed under.
    pub(crate) fn remove(&mut self, game_server: &GameServer, nodes: &NodeCounts) {
        if !select::is_candidate(game_server) {
            return;
        }
        let key = PackedKey::of(game_server, nodes);
        if let Some(namespace) = self.namespaces.get_mut(&game_server.namespace) {
            namespace
                .for_state(&game_server.state)
                .remove(game_server, &key);
            if namespace.ready.is_empty() && namespace.allocated.is_empty() {
                self.namespaces.remove(&game_server.namespace);
            }
        }
        if let Some(members) = self.members.get_mut(&game_server.node_name) {
            members.remove(&(game_server.namespace.clone(), game_server.name.clone()));
            if members.is_empty() {
                self.members.remove(&game_server.node_name);
            }
        }
    }
}

/// Looks up the game server a key names.
pub(crate) fn resolve<'g>(
    in_namespace: &'g BTreeMap<String, GameServer>,
    key: &PackedKey,
) -> Option<&'g GameServer> {
    in_namespace.get(&key.name)
}
