//! The game server model: the part of an Agones `GameServer` the allocator reads and writes.

use std::collections::BTreeMap;
use std::fmt;

/// A game server as the allocator sees it.
///
/// Plain data: build one with struct syntax and [`Default`], hand it to a
/// [`Fleet`](super::Fleet), read it back with [`Fleet::get`](super::Fleet::get). The default
/// value is a `Ready` game server with empty name, namespace and node.
///
/// ```
/// use agones_processor::allocator::{GameServer, GameServerState};
///
/// let game_server = GameServer {
///     name: "gs-1".into(),
///     namespace: "default".into(),
///     node_name: "node-0".into(),
///     ..GameServer::default()
/// };
/// assert_eq!(game_server.state, GameServerState::Ready);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GameServer {
    /// The name, unique within the namespace.
    pub name: String,
    /// The Kubernetes namespace; only requests for this namespace can allocate it.
    pub namespace: String,
    /// Labels, matched by selectors and patched by allocations.
    pub labels: BTreeMap<String, String>,
    /// Annotations, patched by allocations.
    pub annotations: BTreeMap<String, String>,
    /// Whether the game server has a deletion timestamp: it is never allocated, but it still
    /// counts on its node when Packed ordering ranks nodes.
    pub deleting: bool,
    /// The lifecycle state; only `Ready` and `Allocated` game servers can be allocated.
    pub state: GameServerState,
    /// The node the game server runs on; an empty name is a node like any other.
    pub node_name: String,
    /// The address clients connect to.
    pub address: String,
    /// Every address of the node, by kind.
    pub addresses: Vec<Address>,
    /// The exposed ports.
    pub ports: Vec<Port>,
    /// Player tracking, when the game server tracks players.
    pub players: Option<Players>,
    /// Counters by name.
    pub counters: BTreeMap<String, Counter>,
    /// Lists by name.
    pub lists: BTreeMap<String, List>,
}

/// The lifecycle state of a [`GameServer`].
///
/// Agones has many states; only two matter to allocation, every other one is kept by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum GameServerState {
    /// Ready to be allocated. The default.
    #[default]
    Ready,
    /// Allocated; a selector for `Allocated` game servers can allocate it again.
    Allocated,
    /// Any other state, such as `Scheduled` or `Shutdown`; never allocated.
    Other(String),
}

impl GameServerState {
    /// The state's name as Agones spells it (`Ready`, `Allocated`, or the other state's name).
    pub fn as_str(&self) -> &str {
        match self {
            Self::Ready => "Ready",
            Self::Allocated => "Allocated",
            Self::Other(name) => name,
        }
    }
}

impl fmt::Display for GameServerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for GameServerState {
    /// Parses a state name: `Ready` and `Allocated` are recognised, anything else is
    /// [`GameServerState::Other`].
    fn from(name: &str) -> Self {
        match name {
            "Ready" => Self::Ready,
            "Allocated" => Self::Allocated,
            other => Self::Other(other.to_owned()),
        }
    }
}

/// One address of a game server's node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Address {
    /// The address type, such as `InternalIP`, `ExternalIP` or `Hostname`.
    pub kind: String,
    /// The address itself.
    pub address: String,
}

/// A port a game server exposes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Port {
    /// The port's name.
    pub name: String,
    /// The port number on the node.
    pub port: i32,
}

/// Player tracking of a game server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Players {
    /// Players connected.
    pub count: i64,
    /// Players the game server can hold.
    pub capacity: i64,
}

impl Players {
    /// The room left: `capacity - count`.
    pub fn available(&self) -> i64 {
        self.capacity.saturating_sub(self.count)
    }
}

/// A counter of a game server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// The current count.
    pub count: i64,
    /// The highest count allowed.
    pub capacity: i64,
}

impl Counter {
    /// The room left: `capacity - count`.
    pub fn available(&self) -> i64 {
        self.capacity.saturating_sub(self.count)
    }
}

/// A list of a game server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct List {
    /// The values, in order.
    pub values: Vec<String>,
    /// The most values allowed.
    pub capacity: i64,
}

impl List {
    /// The room left: `capacity - len(values)`.
    pub fn available(&self) -> i64 {
        let len = i64::try_from(self.values.len()).unwrap_or(i64::MAX);
        self.capacity.saturating_sub(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_round_trip() {
        for name in ["Ready", "Allocated", "Scheduled", "Shutdown"] {
            assert_eq!(GameServerState::from(name).as_str(), name);
        }
        assert_eq!(GameServerState::from("Ready"), GameServerState::Ready);
        assert_eq!(
            GameServerState::from("Scheduled"),
            GameServerState::Other("Scheduled".into())
        );
    }

    #[test]
    fn available_is_capacity_minus_use() {
        let players = Players {
            count: 3,
            capacity: 10,
        };
        assert_eq!(players.available(), 7);
        let counter = Counter {
            count: 5,
            capacity: 4,
        };
        assert_eq!(counter.available(), -1);
        let list = List {
            values: vec!["a".into(), "b".into()],
            capacity: 5,
        };
        assert_eq!(list.available(), 3);
    }
}
