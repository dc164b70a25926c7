//! Ready and Allocated game servers per node, the counts Packed ordering ranks nodes by.

use std::collections::HashMap;

use super::game_server::{GameServer, GameServerState};

/// How many Ready and Allocated game servers one node holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct NodeCount {
    pub(crate) ready: u64,
    pub(crate) allocated: u64,
}

/// Counts per node name over every namespace.
///
/// Kept up to date as game servers are added, replaced, removed and allocated, so that a request
/// does not have to walk the whole fleet to rank nodes. Game servers being deleted count too:
/// they still occupy their node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct NodeCounts {
    nodes: HashMap<String, NodeCount>,
}

impl NodeCounts {
    /// The counts of a node; a node without Ready or Allocated game servers has zero of each.
    pub(crate) fn get(&self, node_name: &str) -> NodeCount {
        self.nodes.get(node_name).copied().unwrap_or_default()
    }

    /// Counts a game server that joined the fleet or changed state.
    pub(crate) fn add(&mut self, game_server: &GameServer) {
        let (ready, allocated) = match game_server.state {
            GameServerState::Ready => (1, 0),
            GameServerState::Allocated => (0, 1),
            GameServerState::Other(_) => return,
        };
        let count = self.nodes.entry(game_server.node_name.clone()).or_default();
        count.ready += ready;
        count.allocated += allocated;
    }

    /// Uncounts a game server that left the fleet or is about to change state.
    pub(crate) fn remove(&mut self, game_server: &GameServer) {
        let Some(count) = self.nodes.get_mut(&game_server.node_name) else {
            return;
        };
        match game_server.state {
            GameServerState::Ready => count.ready = count.ready.saturating_sub(1),
            GameServerState::Allocated => count.allocated = count.allocated.saturating_sub(1),
            GameServerState::Other(_) => return,
        }
        // Drop empty nodes so that a fleet whose nodes come and go does not grow without bound.
        if *count == NodeCount::default() {
            self.nodes.remove(&game_server.node_name);
        }
    }

    /// The number of nodes with at least one Ready or Allocated game server.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(node: &str, state: &str, deleting: bool) -> GameServer {
        GameServer {
            node_name: node.into(),
            state: state.into(),
            deleting,
            ..GameServer::default()
        }
    }

    #[test]
    fn node_counts_only_ready_and_allocated_including_deleting() {
        let mut counts = NodeCounts::default();
        counts.add(&on("n1", "Ready", false));
        counts.add(&on("n1", "Ready", true));
        counts.add(&on("n1", "Allocated", false));
        counts.add(&on("n1", "Scheduled", false));
        counts.add(&on("", "Allocated", false));
        assert_eq!(
            counts.get("n1"),
            NodeCount {
                ready: 2,
                allocated: 1
            }
        );
        assert_eq!(counts.get("").allocated, 1);
        assert_eq!(counts.get("unknown"), NodeCount::default());
    }

    #[test]
    fn node_counts_drop_empty_nodes() {
        let mut counts = NodeCounts::default();
        let game_server = on("n1", "Ready", false);
        counts.add(&game_server);
        counts.remove(&game_server);
        assert_eq!(counts.len(), 0);
        counts.remove(&game_server);
        assert_eq!(counts.get("n1"), NodeCount::default());
    }
}
