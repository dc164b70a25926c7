//! The in-memory fleet allocator, the crate's embedded default.
//!
//! - `game_server`: the model of a game server;
//! - `request`: request normalisation (defaults, deprecated fields);
//! - `validate`: the rules a request must meet;
//! - `select`: matching and ordering of candidates;
//! - `index`: the candidates kept in Packed order per namespace, state and label;
//! - `nodes`: per-node counts used by Packed ordering;
//! - `apply`: applying an allocation and building the response;
//! - `report`: the failed counter and list actions returned to the caller;
//! - `file`: fleets from JSON or YAML files shaped like Agones `GameServer` resources;
//! - `demo`: a generated fleet for examples, tests and benchmarks.

mod apply;
mod demo;
mod file;
mod game_server;
mod index;
mod nodes;
mod report;
mod request;
mod select;
#[cfg(test)]
mod test_support;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::future::{Ready, ready};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::SystemTime;

use rand::SeedableRng;
use rand::rngs::StdRng;

pub use demo::demo_fleet;
pub use file::{FleetFileError, parse_fleet_json, parse_fleet_yaml, read_fleet_file};
pub use game_server::{Address, Counter, GameServer, GameServerState, List, Players, Port};
pub use report::{ActionTarget, ActionWarning, Allocation};

use self::index::Index;
use self::nodes::NodeCounts;
use self::request::Normalized;
use super::AllocationError;
use crate::proto::{AllocationRequest, AllocationResponse};

/// An in-memory fleet of game servers that allocates the way Agones does.
///
/// Given the same game servers and the same `AllocationRequest`, it chooses the game server
/// Agones' own allocator would choose (with Counts-and-Lists and player filtering enabled):
/// validation, selectors tried in order, Packed or Distributed ordering with priorities, the
/// metadata patch, the `agones.dev/last-allocated` annotation, counter and list actions. Counter
/// and list actions that fail do not fail the allocation, as in Agones: they are logged as
/// warnings and returned by [`Fleet::allocate_with_report`].
///
/// A `Fleet` is a cheap handle: clones share the same game servers, so the processor and
/// whatever feeds fleet changes (a watch, a test, an admin endpoint) can each hold one. Every
/// operation takes one short lock; none waits on I/O. It is a [`tower::Service`] that is always
/// ready and decides each request synchronously inside `call`, so requests called in order are
/// decided in order, each one seeing the effects of the ones before it (two requests never get
/// the same Ready game server, and a re-allocation sees the counters and lists left by the
/// previous one).
///
/// # Speed
///
/// Candidates are indexed per namespace and state: each node keeps its candidates ordered by
/// player room then name, and the nodes are ranked by their counts, both also per label pair.
/// A Packed request walks the narrowest ranking its labels allow, node group by node group
/// (the nodes tying on counts), and stops at the first group with a match. Adding, changing or
/// allocating a game server moves its node within the rankings it is in: the cost depends on
/// the node's label pairs, not on the fleet nor on the node's size. Slower paths, by design:
///
/// - Packed reads the first match of every node in the group; many nodes tie when a fleet has
///   many identical fresh nodes;
/// - Packed with priorities also walks the group's candidates that share the first match's
///   player room (priorities only rank among those);
/// - Distributed walks every candidate of the narrowest ranking;
/// - selectors filtering on players, counters or lists skip non-matching candidates one by
///   one, so a rare match costs a walk of the set.
///
/// # Player room
///
/// Agones compares player room only when both game servers track players, which is not a total
/// order when only some do; its sort then settles either way. This fleet uses a total order
/// that agrees with that rule wherever it decides: a game server that does not track players
/// counts as having unlimited room, so it comes after every one that does (on the same node
/// counts).
///
/// # Example
///
/// ```
/// use agones_processor::allocator::{AllocationError, Fleet, demo_fleet};
/// use agones_processor::proto::AllocationRequest;
///
/// let fleet = Fleet::new(demo_fleet(2, 3));
/// let request = AllocationRequest {
///     namespace: "default".into(),
///     ..AllocationRequest::default()
/// };
/// let response = fleet.allocate(&request).unwrap();
/// assert_eq!(response.source, "local");
///
/// let elsewhere = AllocationRequest {
///     namespace: "other".into(),
///     ..AllocationRequest::default()
/// };
/// assert_eq!(fleet.allocate(&elsewhere), Err(AllocationError::Unallocated));
/// ```
#[derive(Clone)]
pub struct Fleet {
    state: Arc<Mutex<State>>,
}

/// Everything behind the fleet's lock.
struct State {
    /// Game servers by namespace, then name: snapshots come out sorted.
    game_servers: BTreeMap<String, BTreeMap<String, GameServer>>,
    /// Ready and Allocated game servers per node, over every namespace.
    nodes: NodeCounts,
    /// The candidates in Packed order; see the `index` module.
    index: Index,
    len: usize,
    /// Drives the Distributed order.
    rng: StdRng,
}

impl Fleet {
    /// A fleet of these game servers; a later game server replaces an earlier one with the same
    /// namespace and name.
    ///
    /// The Distributed order is seeded from the operating system; see [`Fleet::with_seed`].
    pub fn new(game_servers: impl IntoIterator<Item = GameServer>) -> Self {
        let fleet = Self {
            state: Arc::new(Mutex::new(State {
                game_servers: BTreeMap::new(),
                nodes: NodeCounts::default(),
                index: Index::default(),
                len: 0,
                rng: StdRng::from_os_rng(),
            })),
        };
        fleet.extend(game_servers);
        fleet
    }

    /// A fleet of the game servers in a JSON or YAML file; see [`read_fleet_file`].
    ///
    /// # Errors
    ///
    /// As [`read_fleet_file`].
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self, FleetFileError> {
        read_fleet_file(path).map(Self::new)
    }

    /// Seeds the random Distributed order, so that tests get the same choices on every run.
    ///
    /// The seed applies to every clone of this fleet, which share one random generator.
    pub fn with_seed(self, seed: u64) -> Self {
        self.lock().rng = StdRng::seed_from_u64(seed);
        self
    }

    /// Adds a game server, or replaces the one with the same namespace and name, which is
    /// returned.
    pub fn insert(&self, game_server: GameServer) -> Option<GameServer> {
        self.lock().insert(game_server)
    }

    /// Adds or replaces many game servers under one lock, then rebuilds the index once.
    ///
    /// Rebuilding costs a pass over the whole fleet, which beats re-ranking node after node
    /// when loading many game servers; for a few changes, [`Fleet::insert`] is cheaper.
    pub fn extend(&self, game_servers: impl IntoIterator<Item = GameServer>) {
        let mut state = self.lock();
        for game_server in game_servers {
            state.insert_unindexed(game_server);
        }
        state.rebuild_index();
    }

    /// Removes a game server and returns it, if it was there.
    pub fn remove(&self, namespace: &str, name: &str) -> Option<GameServer> {
        self.lock().put(namespace, name, None)
    }

    /// Changes a game server in place and returns what `change` returns, or `None` when the
    /// game server is not there.
    ///
    /// The change runs under the fleet's lock, so it must be quick. Renaming the game server or
    /// moving it to another namespace is allowed: it then replaces any game server with the
    /// new namespace and name.
    pub fn update<R>(
        &self,
        namespace: &str,
        name: &str,
        change: impl FnOnce(&mut GameServer) -> R,
    ) -> Option<R> {
        let mut state = self.lock();
        let mut game_server = state.game_servers.get(namespace)?.get(name)?.clone();
        let result = change(&mut game_server);
        if game_server.namespace != namespace || game_server.name != name {
            state.put(namespace, name, None);
        }
        state.insert(game_server);
        Some(result)
    }

    /// Marks an Allocated game server Ready again, as when its session ends; returns whether
    /// it was Allocated.
    ///
    /// Labels, annotations, counters and lists are kept: Agones leaves them to the game server
    /// too.
    pub fn deallocate(&self, namespace: &str, name: &str) -> bool {
        self.update(namespace, name, |game_server| {
            let was_allocated = game_server.state == GameServerState::Allocated;
            if was_allocated {
                game_server.state = GameServerState::Ready;
            }
            was_allocated
        })
        .unwrap_or(false)
    }

    /// A copy of a game server, if it is there.
    pub fn get(&self, namespace: &str, name: &str) -> Option<GameServer> {
        self.lock().game_servers.get(namespace)?.get(name).cloned()
    }

    /// A copy of every game server, sorted by namespace then name.
    pub fn game_servers(&self) -> Vec<GameServer> {
        let mut copies = Vec::with_capacity(self.len());
        self.for_each(|game_server| copies.push(game_server.clone()));
        copies
    }

    /// Visits every game server, sorted by namespace then name, without copying them.
    ///
    /// Allocations wait while `visit` runs over the whole fleet; keep it quick, or use
    /// [`Fleet::game_servers`] for a copy.
    pub fn for_each(&self, visit: impl FnMut(&GameServer)) {
        let state = self.lock();
        state
            .game_servers
            .values()
            .flat_map(BTreeMap::values)
            .for_each(visit);
    }

    /// The number of game servers, in every namespace and state.
    pub fn len(&self) -> usize {
        self.lock().len
    }

    /// Whether the fleet has no game server at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Allocates a game server for a request, as Agones would.
    ///
    /// On success the chosen game server is Allocated, carries the request's metadata, the
    /// `agones.dev/last-allocated` annotation and the effects of the counter and list actions,
    /// and the response describes it. Failed counter and list actions are only logged; use
    /// [`Fleet::allocate_with_report`] to get them.
    ///
    /// # Errors
    ///
    /// - [`AllocationError::InvalidArgument`] when the request breaks a validation rule; the
    ///   message names every offending field, and nothing is allocated;
    /// - [`AllocationError::Unallocated`] when no game server of the namespace matches any
    ///   selector.
    pub fn allocate(
        &self,
        request: &AllocationRequest,
    ) -> Result<AllocationResponse, AllocationError> {
        self.allocate_with_report(request)
            .map(|allocation| allocation.response)
    }

    /// Allocates like [`Fleet::allocate`], and also returns the counter and list actions that
    /// failed (the allocation stands regardless).
    ///
    /// # Errors
    ///
    /// The same as [`Fleet::allocate`].
    pub fn allocate_with_report(
        &self,
        request: &AllocationRequest,
    ) -> Result<Allocation, AllocationError> {
        let request = Normalized::new(request);
        validate::validate(&request)?;
        let allocated_at = humantime::format_rfc3339_nanos(SystemTime::now()).to_string();
        self.lock().allocate(&request, &allocated_at)
    }

    /// The state, also after a panic elsewhere while it was held.
    ///
    /// Changes under the lock are made by code that does not panic, except a caller's
    /// [`Fleet::update`] closure, which runs on a copy; so a poisoned lock still guards
    /// consistent data.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    fn insert(&mut self, game_server: GameServer) -> Option<GameServer> {
        let (namespace, name) = (game_server.namespace.clone(), game_server.name.clone());
        self.put(&namespace, &name, Some(game_server))
    }

    /// Adds or replaces a game server in the maps and counts only; the index is stale until
    /// [`State::rebuild_index`].
    fn insert_unindexed(&mut self, game_server: GameServer) {
        self.nodes.add(&game_server);
        let previous = self
            .game_servers
            .entry(game_server.namespace.clone())
            .or_default()
            .insert(game_server.name.clone(), game_server);
        match &previous {
            Some(previous) => self.nodes.remove(previous),
            None => self.len += 1,
        }
    }

    fn rebuild_index(&mut self) {
        self.index = Index::default();
        for game_server in self.game_servers.values().flat_map(BTreeMap::values) {
            self.index.add(game_server, &self.nodes);
        }
    }

    /// Puts `new` in place of the game server `namespace`/`name` (`None` removes it) and
    /// returns the one that was there, keeping node counts and the index exact.
    ///
    /// `new` must have that namespace and name.
    fn put(&mut self, namespace: &str, name: &str, new: Option<GameServer>) -> Option<GameServer> {
        let old = self
            .game_servers
            .get_mut(namespace)
            .and_then(|in_namespace| in_namespace.remove(name));
        if self
            .game_servers
            .get(namespace)
            .is_some_and(BTreeMap::is_empty)
        {
            self.game_servers.remove(namespace);
        }
        if let Some(old) = &old {
            self.index.remove(old);
            self.nodes.remove(old);
            self.len -= 1;
        }
        let old_node = old.as_ref().map(|old| old.node_name.clone());
        let new_node = new.as_ref().map(|new| new.node_name.clone());
        if let Some(new) = new {
            self.nodes.add(&new);
            self.index.add(&new, &self.nodes);
            self.len += 1;
            self.game_servers
                .entry(namespace.to_owned())
                .or_default()
                .insert(name.to_owned(), new);
        }
        // The change may have moved the counts of the nodes it touched.
        for node in old_node.iter().chain(&new_node) {
            self.index.rerank(node, &self.nodes);
        }
        old
    }

    fn allocate(
        &mut self,
        request: &Normalized<'_>,
        allocated_at: &str,
    ) -> Result<Allocation, AllocationError> {
        let (Some(index), Some(in_namespace)) = (
            self.index.namespace(request.namespace),
            self.game_servers.get(request.namespace),
        ) else {
            return Err(AllocationError::Unallocated);
        };
        let mut game_server = select::choose(index, in_namespace, request, &mut self.rng)
            .ok_or(AllocationError::Unallocated)?
            .clone();

        let warnings = apply::apply(&mut game_server, request, allocated_at);
        let response = apply::response(&game_server);

        // Agones reports these as warning events on the game server; a log line is our event.
        for warning in &warnings {
            let (namespace, name) = (&game_server.namespace, &game_server.name);
            match warning.target {
                ActionTarget::Counter => tracing::warn!(
                    namespace = %namespace,
                    game_server = %name,
                    counter = %warning.name,
                    error = %warning.message,
                    "counter action failed, the allocation stands",
                ),
                ActionTarget::List => tracing::warn!(
                    namespace = %namespace,
                    game_server = %name,
                    list = %warning.name,
                    error = %warning.message,
                    "list action failed, the allocation stands",
                ),
            }
        }
        tracing::trace!(
            namespace = %game_server.namespace,
            game_server = %game_server.name,
            node = %game_server.node_name,
            "allocated game server",
        );
        self.insert(game_server);
        Ok(Allocation { response, warnings })
    }
}

impl fmt::Debug for Fleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Fleet");
        // The game servers themselves would flood a log line; their number is what helps. A
        // lock held elsewhere is not waited for, so formatting can never deadlock.
        if let Ok(state) = self.state.try_lock() {
            debug
                .field("game_servers", &state.len)
                .field("namespaces", &state.game_servers.len());
        }
        debug.finish_non_exhaustive()
    }
}

impl tower::Service<AllocationRequest> for Fleet {
    type Response = AllocationResponse;
    type Error = AllocationError;
    type Future = Ready<Result<AllocationResponse, AllocationError>>;

    /// Always ready: a fleet has no capacity to reserve.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    /// Decides the request before returning, so calls made in order are decided in order.
    fn call(&mut self, request: AllocationRequest) -> Self::Future {
        ready(self.allocate(&request))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::Duration;

    use tower::Service;

    use super::apply::LAST_ALLOCATED;
    use super::test_support::{Build, NAMESPACE, allocated, labels, ready, request};
    use super::*;
    use crate::proto::allocation_request::SchedulingStrategy;
    use crate::proto::game_server_selector::GameServerState as WantedState;
    use crate::proto::{CounterAction, GameServerSelector, ListAction, MetaPatch};

    fn any() -> AllocationRequest {
        request(vec![])
    }

    fn allocated_selector() -> GameServerSelector {
        GameServerSelector {
            game_server_state: WantedState::Allocated as i32,
            ..GameServerSelector::default()
        }
    }

    /// Checks the kept node counts and index against ones built from scratch.
    fn assert_node_counts_exact(fleet: &Fleet) {
        let mut recounted = NodeCounts::default();
        let game_servers = fleet.game_servers();
        game_servers.iter().for_each(|gs| recounted.add(gs));
        let mut rebuilt = Index::default();
        game_servers
            .iter()
            .for_each(|gs| rebuilt.add(gs, &recounted));
        let state = fleet.lock();
        assert_eq!(state.nodes, recounted);
        assert_eq!(state.index.facts(), rebuilt.facts());
    }

    /// One change to a fleet, as the property test below draws them.
    #[derive(Clone, Debug)]
    enum Change {
        Insert {
            name: usize,
            node: usize,
            state: usize,
            label: Option<usize>,
            players: Option<i64>,
        },
        Remove(usize),
        Deallocate(usize),
        Allocate(Option<usize>),
    }

    fn change() -> impl proptest::strategy::Strategy<Value = Change> {
        use proptest::prelude::*;
        prop_oneof![
            3 => (0..12usize, 0..4usize, 0..4usize, proptest::option::of(0..3usize),
                proptest::option::of(0..4i64))
                .prop_map(|(name, node, state, label, players)| Change::Insert {
                    name, node, state, label, players,
                }),
            1 => (0..12usize).prop_map(Change::Remove),
            1 => (0..12usize).prop_map(Change::Deallocate),
            2 => proptest::option::of(0..3usize).prop_map(Change::Allocate),
        ]
    }

    proptest::proptest! {
        /// Whatever the changes, the index holds exactly what a rebuild from scratch holds.
        #[test]
        fn index_stays_exact_under_changes(changes in proptest::collection::vec(change(), 1..40)) {
            const STATES: [&str; 4] = ["Ready", "Allocated", "Scheduled", "Ready"];
            let fleet = Fleet::new([]).with_seed(7);
            for change in changes {
                match change {
                    Change::Insert { name, node, state, label, players } => {
                        let mut gs = ready(&format!("gs-{name}"), &format!("n{node}"))
                            .state(STATES[state]);
                        if let Some(label) = label {
                            gs = gs.label("mode", &format!("m{label}"));
                        }
                        if let Some(count) = players {
                            gs = gs.players(count, 4);
                        }
                        fleet.insert(gs);
                    }
                    Change::Remove(name) => {
                        fleet.remove(NAMESPACE, &format!("gs-{name}"));
                    }
                    Change::Deallocate(name) => {
                        fleet.deallocate(NAMESPACE, &format!("gs-{name}"));
                    }
                    Change::Allocate(label) => {
                        let pairs = label.map(|label| ("mode", format!("m{label}")));
                        let selector = labels(&pairs.iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>());
                        let _ = fleet.allocate(&request(vec![selector]));
                    }
                }
                assert_node_counts_exact(&fleet);
            }
        }
    }

    fn name(result: Result<AllocationResponse, AllocationError>) -> String {
        result.expect("allocated").game_server_name
    }

    #[test]
    fn insert_replace_remove_get_and_sorted_snapshot() {
        let fleet = Fleet::new([ready("b", "n1"), ready("a", "n1").namespace("z")]);
        assert_eq!(fleet.len(), 2);
        assert!(!fleet.is_empty());

        assert_eq!(fleet.insert(ready("c", "n2")), None);
        let replaced = fleet.insert(allocated("b", "n2"));
        assert_eq!(replaced, Some(ready("b", "n1")));
        assert_eq!(fleet.len(), 3);
        assert_eq!(fleet.get(NAMESPACE, "b"), Some(allocated("b", "n2")));
        assert_eq!(fleet.get("z", "b"), None);

        let names: Vec<(String, String)> = fleet
            .game_servers()
            .into_iter()
            .map(|gs| (gs.namespace, gs.name))
            .collect();
        let expected = [(NAMESPACE, "b"), (NAMESPACE, "c"), ("z", "a")];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(ns, n)| ((*ns).to_owned(), (*n).to_owned()))
            .collect();
        assert_eq!(names, expected);

        assert_eq!(
            fleet.remove("z", "a").map(|gs| gs.name),
            Some("a".to_owned())
        );
        assert_eq!(fleet.remove("z", "a"), None);
        assert_eq!(fleet.len(), 2);
        assert_node_counts_exact(&fleet);

        let fleet = Fleet::new([]);
        assert!(fleet.is_empty());
        assert_eq!(fleet.allocate(&any()), Err(AllocationError::Unallocated));
    }

    #[test]
    fn update_deallocate_and_for_each_keep_the_index_exact() {
        let fleet = Fleet::new([ready("a", "n1"), ready("b", "n2"), ready("c", "n2")]);
        assert_eq!(name(fleet.allocate(&any())), "b");

        // Rule "mark Ready again": the game server is a candidate again, keeping its metadata.
        assert!(fleet.deallocate(NAMESPACE, "b"));
        assert!(!fleet.deallocate(NAMESPACE, "b"), "already Ready");
        assert!(!fleet.deallocate(NAMESPACE, "missing"));
        let b = fleet.get(NAMESPACE, "b").expect("b");
        assert_eq!(b.state, GameServerState::Ready);
        assert!(b.annotations.contains_key(LAST_ALLOCATED));
        assert_node_counts_exact(&fleet);

        // Moving "a" to the busiest node changes which game server Packed picks first.
        let moved = fleet.update(NAMESPACE, "a", |gs| {
            gs.node_name = "n3".into();
            gs.state = GameServerState::Allocated;
        });
        assert_eq!(moved, Some(()));
        assert_eq!(fleet.update(NAMESPACE, "missing", |_| ()), None);
        fleet.insert(ready("d", "n3"));
        assert_node_counts_exact(&fleet);
        assert_eq!(name(fleet.allocate(&any())), "d");

        // Renaming through update replaces the old entry.
        fleet.update(NAMESPACE, "c", |gs| gs.name = "e".into());
        assert_eq!(fleet.get(NAMESPACE, "c"), None);
        assert!(fleet.get(NAMESPACE, "e").is_some());

        let mut visited = Vec::new();
        fleet.for_each(|gs| visited.push(gs.name.clone()));
        assert_eq!(visited, ["a", "b", "d", "e"]);
        assert_node_counts_exact(&fleet);
    }

    #[test]
    fn clones_share_the_fleet() {
        let fleet = Fleet::new([ready("a", "n1")]);
        let clone = fleet.clone();
        clone.allocate(&any()).expect("allocated");
        assert_eq!(fleet.allocate(&any()), Err(AllocationError::Unallocated));
        assert!(format!("{fleet:?}").contains("game_servers: 1"));
    }

    #[test]
    fn two_requests_never_get_the_same_ready_game_server() {
        for scheduling in [SchedulingStrategy::Packed, SchedulingStrategy::Distributed] {
            let fleet = Fleet::new(demo_fleet(3, 10)).with_seed(7);
            let ready_count = fleet
                .game_servers()
                .iter()
                .filter(|gs| gs.state == GameServerState::Ready)
                .count();
            let request = AllocationRequest {
                scheduling: scheduling as i32,
                ..any()
            };
            let mut names = HashSet::new();
            for _ in 0..ready_count {
                assert!(
                    names.insert(name(fleet.allocate(&request))),
                    "{scheduling:?}"
                );
            }
            assert_eq!(fleet.allocate(&request), Err(AllocationError::Unallocated));
            assert_node_counts_exact(&fleet);
        }
    }

    #[test]
    fn only_the_request_namespace_is_searched() {
        let fleet = Fleet::new([
            allocated("busy", "n1").namespace("other"),
            ready("a", "n1").namespace("other"),
            ready("b", "n2"),
        ]);
        assert_eq!(name(fleet.allocate(&any())), "b");
        assert_eq!(fleet.allocate(&any()), Err(AllocationError::Unallocated));
        let unknown = AllocationRequest {
            namespace: "nowhere".into(),
            ..any()
        };
        assert_eq!(fleet.allocate(&unknown), Err(AllocationError::Unallocated));
        assert_eq!(
            fleet.get("other", "a").map(|gs| gs.state),
            Some(GameServerState::Ready)
        );
    }

    #[test]
    fn node_counts_span_namespaces() {
        // n2 hosts Allocated game servers of another namespace, so Packed prefers it even
        // though the request's namespace has nothing allocated anywhere.
        let fleet = Fleet::new([
            ready("a", "n1"),
            ready("b", "n1"),
            ready("c", "n2"),
            allocated("x", "n2").namespace("other"),
        ]);
        assert_eq!(name(fleet.allocate(&any())), "c");
        // Now n2 has two Allocated; n1 wins only once n2 has no Ready game server left.
        assert_eq!(name(fleet.allocate(&any())), "a");
    }

    #[test]
    fn deleting_server_counted_but_never_allocated() {
        let fleet = Fleet::new([
            ready("a", "n1"),
            ready("b", "n2"),
            allocated("c", "n2").deleting(),
            ready("d", "n2").deleting(),
        ]);
        let n2 = fleet.lock().nodes.get("n2");
        assert_eq!(
            n2,
            nodes::NodeCount {
                ready: 2,
                allocated: 1
            }
        );
        let again = request(vec![allocated_selector(), labels(&[])]);
        assert_eq!(
            name(fleet.allocate(&again)),
            "b",
            "n2 ranks first, c and d are skipped"
        );
        assert_eq!(name(fleet.allocate(&any())), "a");
        assert_eq!(fleet.allocate(&any()), Err(AllocationError::Unallocated));
        assert_eq!(
            fleet.get(NAMESPACE, "d").map(|gs| gs.state),
            Some(GameServerState::Ready)
        );
    }

    #[test]
    fn node_counts_follow_state_changes() {
        let fleet = Fleet::new(demo_fleet(4, 8).into_iter().chain([
            ready("gs-extra", "node-1").namespace("other"),
            ready("gs-gone", "node-9").deleting(),
        ]));
        for _ in 0..5 {
            fleet.allocate(&any()).expect("allocated");
        }
        fleet.insert(ready("gs-00-00", "node-3"));
        fleet.insert(ready("gs-00-01", "node-0").state("Shutdown"));
        fleet.remove("other", "gs-extra");
        fleet.remove(NAMESPACE, "gs-gone");
        fleet
            .allocate(&request(vec![allocated_selector()]))
            .expect("re-allocated");
        assert_node_counts_exact(&fleet);
    }

    #[test]
    #[allow(deprecated)]
    fn deprecated_selectors_fallback_order() {
        let fleet = Fleet::new([
            ready("a", "n1").label("mode", "coop"),
            ready("b", "n1").label("mode", "ctf"),
            ready("c", "n1").label("mode", "dm"),
        ]);
        let deprecated = |required: Option<GameServerSelector>| AllocationRequest {
            preferred_game_server_selectors: vec![
                labels(&[("mode", "none")]),
                labels(&[("mode", "dm")]),
                labels(&[("mode", "ctf")]),
            ],
            required_game_server_selector: required,
            ..any()
        };
        let rows = [
            (
                "first matching preferred selector wins",
                Some(labels(&[])),
                "c",
            ),
            ("next preferred selector", Some(labels(&[])), "b"),
            (
                "then the required selector",
                Some(labels(&[("mode", "coop")])),
                "a",
            ),
        ];
        for (rule, required, expected) in rows {
            assert_eq!(
                name(fleet.allocate(&deprecated(required))),
                expected,
                "{rule}"
            );
        }
        fleet.insert(ready("d", "n1"));
        assert_eq!(
            name(fleet.allocate(&deprecated(None))),
            "d",
            "absent required = empty"
        );
    }

    #[test]
    fn metadata_in_response_and_last_allocated_annotation() {
        let fleet = Fleet::new([ready("a", "n1").label("mode", "ctf")]);
        let request = AllocationRequest {
            metadata: Some(MetaPatch {
                labels: [("player".to_owned(), "p1".to_owned())].into(),
                ..MetaPatch::default()
            }),
            ..any()
        };
        let before = SystemTime::now();
        let response = fleet.allocate(&request).expect("allocated");
        let metadata = response.metadata.expect("metadata");
        assert_eq!(
            metadata.labels.get("player").map(String::as_str),
            Some("p1")
        );
        assert_eq!(metadata.labels.get("mode").map(String::as_str), Some("ctf"));

        let stamp = &metadata.annotations[LAST_ALLOCATED];
        let parsed = humantime::parse_rfc3339(stamp).expect("RFC 3339");
        assert!(parsed + Duration::from_millis(1) >= before);
        let fraction = stamp.split('.').nth(1).expect("fractional seconds");
        assert_eq!(fraction.len(), "123456789Z".len(), "nanoseconds in {stamp}");

        let stored = fleet.get(NAMESPACE, "a").expect("stored");
        assert_eq!(stored.state, GameServerState::Allocated);
        assert_eq!(stored.annotations[LAST_ALLOCATED], *stamp);
    }

    #[test]
    fn reallocation_sees_previous_counter_and_list_changes() {
        let fleet =
            Fleet::new([allocated("a", "n1")
                .counter("rooms", 0, 2)
                .list("players", &[], 10)]);
        let request = |player: &str| AllocationRequest {
            counters: [(
                "rooms".to_owned(),
                CounterAction {
                    action: Some("Increment".into()),
                    amount: Some(1),
                    capacity: None,
                },
            )]
            .into(),
            lists: [(
                "players".to_owned(),
                ListAction {
                    add_values: vec![player.to_owned()],
                    ..ListAction::default()
                },
            )]
            .into(),
            game_server_selectors: vec![GameServerSelector {
                game_server_state: WantedState::Allocated as i32,
                counters: [(
                    "rooms".to_owned(),
                    crate::proto::CounterSelector {
                        min_available: 1,
                        ..Default::default()
                    },
                )]
                .into(),
                ..GameServerSelector::default()
            }],
            ..any()
        };
        let first = fleet.allocate(&request("p1")).expect("first");
        assert_eq!(first.counters["rooms"].count, Some(1));
        let second = fleet.allocate(&request("p2")).expect("second");
        assert_eq!(second.counters["rooms"].count, Some(2));
        assert_eq!(second.lists["players"].values, ["p1", "p2"]);
        // Full now: the counter selector no longer matches.
        assert_eq!(
            fleet.allocate(&request("p3")),
            Err(AllocationError::Unallocated)
        );
    }

    #[test]
    fn action_errors_do_not_fail_the_allocation() {
        let fleet = Fleet::new([ready("a", "n1")]);
        let request = AllocationRequest {
            counters: [(
                "missing".to_owned(),
                CounterAction {
                    action: Some("Increment".into()),
                    amount: Some(1),
                    capacity: None,
                },
            )]
            .into(),
            lists: [(
                "missing".to_owned(),
                ListAction {
                    capacity: Some(5000),
                    ..ListAction::default()
                },
            )]
            .into(),
            ..any()
        };
        let log = CapturedLog::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let result = tracing::subscriber::with_default(subscriber, || fleet.allocate(&request));

        let response = result.expect("allocated regardless");
        assert_eq!(response.game_server_name, "a");

        // The same errors reach the caller of the API.
        fleet.deallocate(NAMESPACE, "a");
        let report = fleet.allocate_with_report(&request).expect("allocated");
        let warnings: Vec<String> = report.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            warnings,
            [
                "counter \"missing\": counter not found",
                "list \"missing\": list not found"
            ]
        );
        assert!(response.counters.is_empty() && response.lists.is_empty());
        let log = log.text();
        for expected in [
            "WARN",
            "game_server=a",
            "counter=missing",
            "list=missing",
            "counter not found",
            "list not found",
        ] {
            assert!(log.contains(expected), "{expected} in {log}");
        }
    }

    /// Log output collected by a test subscriber.
    #[derive(Clone, Default)]
    struct CapturedLog(Arc<Mutex<Vec<u8>>>);

    impl CapturedLog {
        fn text(&self) -> String {
            let bytes = self.0.lock().expect("log lock").clone();
            String::from_utf8(bytes).expect("UTF-8 log")
        }
    }

    impl std::io::Write for CapturedLog {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("log lock").extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn invalid_request_allocates_nothing() {
        let fleet = Fleet::new([ready("a", "n1")]);
        let request = AllocationRequest {
            metadata: Some(MetaPatch {
                labels: [("bad key".to_owned(), "v".to_owned())].into(),
                ..MetaPatch::default()
            }),
            ..any()
        };
        match fleet.allocate(&request) {
            Err(AllocationError::InvalidArgument(message)) => {
                assert!(message.starts_with("metadata.labels"), "{message}");
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
        assert_eq!(fleet.get(NAMESPACE, "a"), Some(ready("a", "n1")));
    }

    #[test]
    fn distributed_seeded_determinism_and_variety() {
        let distributed = AllocationRequest {
            scheduling: SchedulingStrategy::Distributed as i32,
            ..any()
        };
        let sequence = |seed: u64| -> Vec<String> {
            let fleet = Fleet::new(demo_fleet(4, 10)).with_seed(seed);
            (0..5).map(|_| name(fleet.allocate(&distributed))).collect()
        };
        assert_eq!(sequence(42), sequence(42));
        let firsts: HashSet<String> = (0..50).map(|seed| sequence(seed).remove(0)).collect();
        assert!(
            firsts.len() > 10,
            "only {} distinct first choices",
            firsts.len()
        );
    }

    #[test]
    fn packed_fills_the_fullest_node_first() {
        let fleet = Fleet::new([
            ready("a", "n1"),
            ready("b", "n1"),
            ready("c", "n2"),
            ready("d", "n2"),
            ready("e", "n2"),
        ]);
        let order: Vec<String> = (0..5).map(|_| name(fleet.allocate(&any()))).collect();
        assert_eq!(order, ["c", "d", "e", "a", "b"]);
    }

    #[test]
    fn service_decides_calls_in_order() {
        let mut fleet = Fleet::new([ready("a", "n1"), ready("b", "n1")]);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert_eq!(fleet.poll_ready(&mut cx), Poll::Ready(Ok(())));
        let first = fleet.call(any());
        let second = fleet.call(any());
        let third = fleet.call(any());
        // Decided at call time: awaiting in reverse order changes nothing.
        assert_eq!(third.into_inner(), Err(AllocationError::Unallocated));
        assert_eq!(name(second.into_inner()), "b");
        assert_eq!(name(first.into_inner()), "a");
    }
}
