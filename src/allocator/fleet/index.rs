//! Ordered indexes of the candidates, so that a request does not walk the whole namespace.
//!
//! The Packed order ranks candidates of one state by their node's counts first, then by player
//! room, priorities and name. The index splits that order in two:
//!
//! - per node, the node's candidates ordered by player room then name ([`Entry`]), in one set
//!   of all of them and one set per label pair;
//! - per namespace and state, the nodes ordered by their counts ([`Rank`]), in one ranking of
//!   every node with candidates and one per label pair (the nodes with a candidate carrying
//!   it).
//!
//! A request walks the ranking its labels narrow down to, node group by node group (the nodes
//! tying on counts), and merges the groups' per-node sets. When a node's counts change, only
//! the node's place in the rankings moves: a change costs the node's label pairs, not its game
//! servers, and not the fleet.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};

use super::game_server::{GameServer, GameServerState};
use super::nodes::{NodeCount, NodeCounts};
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

/// A node's place in the Packed order: more Allocated first, then more Ready.
pub(crate) type Rank = (Reverse<u64>, Reverse<u64>);

fn rank(count: NodeCount) -> Rank {
    (Reverse(count.allocated), Reverse(count.ready))
}

/// A candidate's place among the candidates of its node in the same state, priorities aside.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Entry {
    /// Candidates of tying nodes with the same room are ranked by priorities.
    pub(crate) room: Room,
    pub(crate) name: String,
}

impl Entry {
    fn of(game_server: &GameServer) -> Self {
        Self {
            room: Room::of(game_server),
            name: game_server.name.clone(),
        }
    }

    /// The smallest entry with this room: where a walk of the room starts.
    pub(crate) fn first_with(room: &Room) -> Self {
        Self {
            room: room.clone(),
            name: String::new(),
        }
    }
}

/// Maps keyed by a label pair, looked up by borrowed key and value.
type ByLabel<T> = HashMap<String, HashMap<String, T>>;

fn label<'m, T>(map: &'m ByLabel<T>, key: &str, value: &str) -> Option<&'m T> {
    map.get(key)?.get(value)
}

fn label_mut<'m, T: Default>(map: &'m mut ByLabel<T>, key: &str, value: &str) -> &'m mut T {
    map.entry(key.to_owned())
        .or_default()
        .entry(value.to_owned())
        .or_default()
}

/// Drops the entry of a label pair once `done` says it holds nothing any more.
fn label_prune<T>(map: &mut ByLabel<T>, key: &str, value: &str, done: impl Fn(&T) -> bool) {
    if let Some(values) = map.get_mut(key) {
        if values.get(value).is_some_and(done) {
            values.remove(value);
        }
        if values.is_empty() {
            map.remove(key);
        }
    }
}

/// The candidates of one node in one namespace and state.
#[derive(Debug)]
struct NodeEntries {
    /// The rank the node is filed under in the rankings.
    rank: Rank,
    all: BTreeSet<Entry>,
    by_label: ByLabel<BTreeSet<Entry>>,
}

/// Nodes in Packed order, with the number of candidates they hold between them.
#[derive(Debug, Default)]
struct Ranking {
    nodes: BTreeSet<(Rank, String)>,
    candidates: usize,
}

/// The candidates of one namespace in one state.
#[derive(Debug, Default)]
pub(crate) struct StateIndex {
    nodes: HashMap<String, NodeEntries>,
    all: Ranking,
    by_label: ByLabel<Ranking>,
}

/// A walk over the candidates a selector's labels narrow down to.
pub(crate) struct Narrowed<'i> {
    index: &'i StateIndex,
    ranking: &'i Ranking,
    /// The label pair whose per-node sets the walk reads; every candidate when `None`.
    pair: Option<(&'i str, &'i str)>,
}

impl<'i> Narrowed<'i> {
    /// The per-node sets, in Packed order of their nodes, with each node's rank.
    pub(crate) fn nodes(&self) -> impl Iterator<Item = (Rank, &'i BTreeSet<Entry>)> + use<'i> {
        let (index, pair) = (self.index, self.pair);
        self.ranking.nodes.iter().filter_map(move |(rank, node)| {
            let entries = index.nodes.get(node)?;
            let set = match pair {
                Some((key, value)) => label(&entries.by_label, key, value)?,
                None => &entries.all,
            };
            Some((*rank, set))
        })
    }
}

impl StateIndex {
    /// The narrowest walk that sees every candidate carrying the selector's labels; `None`
    /// when some label pair is on no candidate at all.
    pub(crate) fn narrowest<'i>(
        &'i self,
        selector: &'i GameServerSelector,
    ) -> Option<Narrowed<'i>> {
        let mut narrowed = Narrowed {
            index: self,
            ranking: &self.all,
            pair: None,
        };
        for (key, value) in &selector.match_labels {
            let ranking = label(&self.by_label, key, value)?;
            if ranking.candidates < narrowed.ranking.candidates {
                narrowed.ranking = ranking;
                narrowed.pair = Some((key, value));
            }
        }
        Some(narrowed)
    }

    /// Adds a candidate; a node new to this index is filed under `rank`. Returns whether the
    /// node is new.
    fn add(&mut self, game_server: &GameServer, rank: Rank) -> bool {
        let entry = Entry::of(game_server);
        let node_name = &game_server.node_name;
        let mut is_new = false;
        let node = self.nodes.entry(node_name.clone()).or_insert_with(|| {
            is_new = true;
            NodeEntries {
                rank,
                all: BTreeSet::new(),
                by_label: ByLabel::default(),
            }
        });
        if is_new {
            self.all.nodes.insert((rank, node_name.clone()));
        }
        if node.all.insert(entry.clone()) {
            self.all.candidates += 1;
        }
        for (key, value) in &game_server.labels {
            let set = label_mut(&mut node.by_label, key, value);
            let ranking = label_mut(&mut self.by_label, key, value);
            if set.is_empty() {
                ranking.nodes.insert((node.rank, node_name.clone()));
            }
            if set.insert(entry.clone()) {
                ranking.candidates += 1;
            }
        }
        is_new
    }

    /// Takes a candidate out, as it was added. Returns whether its node is now gone from this
    /// index.
    fn remove(&mut self, game_server: &GameServer) -> bool {
        let entry = Entry::of(game_server);
        let node_name = &game_server.node_name;
        let Some(node) = self.nodes.get_mut(node_name) else {
            return false;
        };
        let filed = (node.rank, node_name.clone());
        if node.all.remove(&entry) {
            self.all.candidates -= 1;
        }
        for (key, value) in &game_server.labels {
            let Some(set) = node
                .by_label
                .get_mut(key)
                .and_then(|values| values.get_mut(value))
            else {
                continue;
            };
            if !set.remove(&entry) {
                continue;
            }
            label_prune(&mut node.by_label, key, value, BTreeSet::is_empty);
            if let Some(ranking) = self.by_label.get_mut(key).and_then(|v| v.get_mut(value)) {
                ranking.candidates -= 1;
                if label(&node.by_label, key, value).is_none() {
                    ranking.nodes.remove(&filed);
                }
            }
            label_prune(&mut self.by_label, key, value, |ranking| {
                ranking.nodes.is_empty()
            });
        }
        if !node.all.is_empty() {
            return false;
        }
        self.nodes.remove(node_name);
        self.all.nodes.remove(&filed);
        true
    }

    /// Files a node under a new rank in every ranking that holds it.
    fn rerank(&mut self, node_name: &str, rank: Rank) {
        let Some(node) = self.nodes.get_mut(node_name) else {
            return;
        };
        if node.rank == rank {
            return;
        }
        let old = (node.rank, node_name.to_owned());
        node.rank = rank;
        // The filed name moves to its new place: no copy of it per ranking.
        let refile = |ranking: &mut Ranking| {
            if let Some((_, name)) = ranking.nodes.take(&old) {
                ranking.nodes.insert((rank, name));
            }
        };
        refile(&mut self.all);
        for (key, values) in &node.by_label {
            for value in values.keys() {
                if let Some(ranking) = self.by_label.get_mut(key).and_then(|v| v.get_mut(value)) {
                    refile(ranking);
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// The two states a candidate can be in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    Ready,
    Allocated,
}

impl Kind {
    fn of(state: &GameServerState) -> Self {
        match state {
            GameServerState::Allocated => Self::Allocated,
            _ => Self::Ready,
        }
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

    fn get_mut(&mut self, kind: Kind) -> &mut StateIndex {
        match kind {
            Kind::Ready => &mut self.ready,
            Kind::Allocated => &mut self.allocated,
        }
    }

    fn is_empty(&self) -> bool {
        self.ready.is_empty() && self.allocated.is_empty()
    }
}

/// Every candidate of the fleet, indexed by namespace, state, node and label.
#[derive(Debug, Default)]
pub(crate) struct Index {
    namespaces: HashMap<String, NamespaceIndex>,
    /// Per node, the namespaces and states it has candidates in: the indexes to re-rank when
    /// its counts change.
    homes: HashMap<String, BTreeSet<(String, Kind)>>,
}

impl Index {
    /// The index of a namespace, if it has any candidate.
    pub(crate) fn namespace(&self, namespace: &str) -> Option<&NamespaceIndex> {
        self.namespaces.get(namespace)
    }

    /// Indexes a game server, if it is a candidate; a node new to its namespace and state is
    /// ranked by the current counts.
    pub(crate) fn add(&mut self, game_server: &GameServer, nodes: &NodeCounts) {
        if !select::is_candidate(game_server) {
            return;
        }
        let kind = Kind::of(&game_server.state);
        let node_rank = rank(nodes.get(&game_server.node_name));
        let namespace = self
            .namespaces
            .entry(game_server.namespace.clone())
            .or_default();
        if namespace.get_mut(kind).add(game_server, node_rank) {
            self.homes
                .entry(game_server.node_name.clone())
                .or_default()
                .insert((game_server.namespace.clone(), kind));
        }
    }

    /// Takes a game server out, as it was indexed.
    pub(crate) fn remove(&mut self, game_server: &GameServer) {
        if !select::is_candidate(game_server) {
            return;
        }
        let kind = Kind::of(&game_server.state);
        let Some(namespace) = self.namespaces.get_mut(&game_server.namespace) else {
            return;
        };
        if namespace.get_mut(kind).remove(game_server)
            && let Some(homes) = self.homes.get_mut(&game_server.node_name)
        {
            homes.remove(&(game_server.namespace.clone(), kind));
            if homes.is_empty() {
                self.homes.remove(&game_server.node_name);
            }
        }
        if namespace.is_empty() {
            self.namespaces.remove(&game_server.namespace);
        }
    }

    /// Re-ranks a node whose counts may have changed, in every namespace and state.
    pub(crate) fn rerank(&mut self, node: &str, nodes: &NodeCounts) {
        let Some(homes) = self.homes.get(node) else {
            return;
        };
        let node_rank = rank(nodes.get(node));
        for (namespace, kind) in homes {
            if let Some(index) = self.namespaces.get_mut(namespace) {
                index.get_mut(*kind).rerank(node, node_rank);
            }
        }
    }
}

#[cfg(test)]
impl Index {
    /// Every fact the index holds, one line each, sorted: equal for equal indexes whatever
    /// the order of the changes that built them.
    pub(crate) fn facts(&self) -> BTreeSet<String> {
        let mut facts = BTreeSet::new();
        for (node, homes) in &self.homes {
            for (namespace, kind) in homes {
                facts.insert(format!("home {node} {namespace} {kind:?}"));
            }
        }
        for (namespace, index) in &self.namespaces {
            for (kind, index) in [
                (Kind::Ready, &index.ready),
                (Kind::Allocated, &index.allocated),
            ] {
                let at = format!("{namespace} {kind:?}");
                let ranking = |facts: &mut BTreeSet<String>, name: &str, ranking: &Ranking| {
                    facts.insert(format!("{at} {name} candidates {}", ranking.candidates));
                    for (rank, node) in &ranking.nodes {
                        facts.insert(format!("{at} {name} ranks {node} at {rank:?}"));
                    }
                };
                ranking(&mut facts, "all", &index.all);
                for (key, values) in &index.by_label {
                    for (value, pair) in values {
                        ranking(&mut facts, &format!("{key}={value}"), pair);
                    }
                }
                for (node, entries) in &index.nodes {
                    facts.insert(format!("{at} node {node} filed at {:?}", entries.rank));
                    for entry in &entries.all {
                        facts.insert(format!("{at} node {node} holds {entry:?}"));
                    }
                    for (key, values) in &entries.by_label {
                        for (value, set) in values {
                            for entry in set {
                                facts.insert(format!("{at} node {node} {key}={value} {entry:?}"));
                            }
                        }
                    }
                }
            }
        }
        facts
    }
}
