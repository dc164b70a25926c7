//! Builders shared by the fleet's unit tests.

use super::game_server::{Counter, GameServer, GameServerState, List, Players};
use crate::proto::{AllocationRequest, CounterAction, GameServerSelector};

/// The namespace the builders put everything in.
pub(crate) const NAMESPACE: &str = "default";

/// A Ready game server of [`NAMESPACE`] on a node.
pub(crate) fn ready(name: &str, node: &str) -> GameServer {
    GameServer {
        name: name.to_owned(),
        namespace: NAMESPACE.to_owned(),
        node_name: node.to_owned(),
        ..GameServer::default()
    }
}

/// An Allocated game server of [`NAMESPACE`] on a node.
pub(crate) fn allocated(name: &str, node: &str) -> GameServer {
    ready(name, node).state("Allocated")
}

/// Changes to a test game server, chained.
pub(crate) trait Build {
    fn state(self, state: &str) -> Self;
    fn namespace(self, namespace: &str) -> Self;
    fn deleting(self) -> Self;
    fn label(self, key: &str, value: &str) -> Self;
    fn players(self, count: i64, capacity: i64) -> Self;
    fn counter(self, name: &str, count: i64, capacity: i64) -> Self;
    fn list(self, name: &str, values: &[&str], capacity: i64) -> Self;
}

impl Build for GameServer {
    fn state(mut self, state: &str) -> Self {
        self.state = GameServerState::from(state);
        self
    }

    fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = namespace.to_owned();
        self
    }

    fn deleting(mut self) -> Self {
        self.deleting = true;
        self
    }

    fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    fn players(mut self, count: i64, capacity: i64) -> Self {
        self.players = Some(Players { count, capacity });
        self
    }

    fn counter(mut self, name: &str, count: i64, capacity: i64) -> Self {
        self.counters
            .insert(name.to_owned(), Counter { count, capacity });
        self
    }

    fn list(mut self, name: &str, values: &[&str], capacity: i64) -> Self {
        let values = values.iter().map(|value| (*value).to_owned()).collect();
        self.lists
            .insert(name.to_owned(), List { values, capacity });
        self
    }
}

/// A request for [`NAMESPACE`] with these selectors.
pub(crate) fn request(selectors: Vec<GameServerSelector>) -> AllocationRequest {
    AllocationRequest {
        namespace: NAMESPACE.to_owned(),
        game_server_selectors: selectors,
        ..AllocationRequest::default()
    }
}

/// A selector of Ready game servers with these labels.
pub(crate) fn labels(pairs: &[(&str, &str)]) -> GameServerSelector {
    GameServerSelector {
        match_labels: pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect(),
        ..GameServerSelector::default()
    }
}

/// A request whose only content is a counter action on `rooms`.
pub(crate) fn counter_request(
    action: Option<&str>,
    amount: Option<i64>,
    capacity: Option<i64>,
) -> AllocationRequest {
    let action = CounterAction {
        action: action.map(str::to_owned),
        amount,
        capacity,
    };
    AllocationRequest {
        counters: [("rooms".to_owned(), action)].into(),
        ..AllocationRequest::default()
    }
}
