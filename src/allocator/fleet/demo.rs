//! A generated fleet: realistic, varied and the same on every run.

use super::game_server::{Address, Counter, GameServer, GameServerState, List, Players, Port};

/// Game modes, with the players a game server of that mode holds.
const MODES: [(&str, i64); 3] = [("ctf", 16), ("deathmatch", 8), ("coop", 4)];

/// Regions; a node lives in one region.
const REGIONS: [&str; 2] = ["eu-west", "us-east"];

/// Rooms a game server can host.
const ROOMS: i64 = 4;

/// The first game server port on a node.
const FIRST_PORT: usize = 7000;

/// A deterministic fleet of `nodes * per_node` game servers for examples, tests and benchmarks.
///
/// Every game server is in namespace `default`, on node `node-<n>` (`n` from 0), and named
/// `gs-<node>-<index>` with both numbers zero-padded to the same width, so that names sort in
/// fleet order (`gs-03-017`). The result is sorted by name.
///
/// The fleet varies the way a real one does, spread by a fixed hash of the position so that
/// every size gets a similar mix:
///
/// - labels: `mode` (`ctf`, `deathmatch`, `coop`), `region` (`eu-west`, `us-east`, one per
///   node), `version` (about two thirds `1.4.2`, one third `2.0.0`) and `agones.dev/fleet`
///   (`demo`);
/// - state: about one in five `Allocated`, one in twenty `Scheduled`, the rest `Ready`;
/// - address `10.x.y.z` of the node, addresses `InternalIP` and `Hostname`, one port named
///   `default` (7000 + index on the node);
/// - players: capacity 16 (`ctf`), 8 (`deathmatch`) or 4 (`coop`); Allocated game servers have
///   some players, Ready ones none;
/// - a `rooms` counter of capacity 4 (in use on Allocated game servers only) and a `players`
///   list holding one `player-<k>` value per player, with the players' capacity.
///
/// ```
/// use agones_processor::allocator::{GameServerState, demo_fleet};
///
/// let fleet = demo_fleet(4, 25);
/// assert_eq!(fleet.len(), 100);
/// assert_eq!(fleet[0].name, "gs-00-00");
/// assert_eq!(fleet[0].node_name, "node-0");
/// let allocated = fleet
///     .iter()
///     .filter(|gs| gs.state == GameServerState::Allocated)
///     .count();
/// assert!((10..=30).contains(&allocated));
/// ```
pub fn demo_fleet(nodes: usize, per_node: usize) -> Vec<GameServer> {
    let width = digits(nodes.max(per_node).saturating_sub(1)).max(2);
    (0..nodes)
        .flat_map(|node| (0..per_node).map(move |index| (node, index)))
        .map(|(node, index)| demo_game_server(node, index, node * per_node + index, width))
        .collect()
}

/// One game server of the demo fleet; `position` is its rank in the whole fleet.
fn demo_game_server(node: usize, index: usize, position: usize, width: usize) -> GameServer {
    let hash = mix(position as u64);
    let pick = |shift: u32, modulus: u64| ((hash >> shift) % modulus) as usize;

    let (mode, player_capacity) = MODES[pick(0, 3)];
    let version = if pick(8, 3) == 0 { "2.0.0" } else { "1.4.2" };
    let state = match pick(16, 20) {
        0..=3 => GameServerState::Allocated,
        4 => GameServerState::Other("Scheduled".to_owned()),
        _ => GameServerState::Ready,
    };
    let allocated = state == GameServerState::Allocated;
    let player_count = if allocated {
        1 + pick(24, player_capacity as u64) as i64
    } else {
        0
    };
    let rooms = if allocated { 1 + pick(40, 3) as i64 } else { 0 };

    let node_name = format!("node-{node}");
    let ip = format!(
        "10.{}.{}.{}",
        (node >> 16) & 0xff,
        (node >> 8) & 0xff,
        node & 0xff
    );
    let labels = [
        ("agones.dev/fleet", "demo"),
        ("mode", mode),
        ("region", REGIONS[node % REGIONS.len()]),
        ("version", version),
    ];

    GameServer {
        name: format!("gs-{node:0width$}-{index:0width$}"),
        namespace: "default".to_owned(),
        labels: labels
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect(),
        state,
        address: ip.clone(),
        addresses: vec![
            Address {
                kind: "InternalIP".to_owned(),
                address: ip,
            },
            Address {
                kind: "Hostname".to_owned(),
                address: node_name.clone(),
            },
        ],
        node_name,
        ports: vec![Port {
            name: "default".to_owned(),
            port: i32::try_from(FIRST_PORT + index).unwrap_or(i32::MAX),
        }],
        players: Some(Players {
            count: player_count,
            capacity: player_capacity,
        }),
        counters: [(
            "rooms".to_owned(),
            Counter {
                count: rooms,
                capacity: ROOMS,
            },
        )]
        .into(),
        lists: [(
            "players".to_owned(),
            List {
                values: (0..player_count).map(|k| format!("player-{k}")).collect(),
                capacity: player_capacity,
            },
        )]
        .into(),
        ..GameServer::default()
    }
}

/// Decimal digits of a number.
fn digits(mut n: usize) -> usize {
    let mut digits = 1;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    digits
}

/// A fixed 64-bit mixing function (SplitMix64's finaliser): neighbouring positions get unrelated
/// values, with no random source involved.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_fleet_is_deterministic_and_sorted() {
        let fleet = demo_fleet(12, 120);
        assert_eq!(fleet, demo_fleet(12, 120));
        assert_eq!(fleet.len(), 12 * 120);
        assert!(fleet.windows(2).all(|pair| pair[0].name < pair[1].name));
        assert_eq!(fleet[0].name, "gs-000-000");
        assert_eq!(
            fleet.last().map(|gs| gs.node_name.as_str()),
            Some("node-11")
        );
    }

    #[test]
    fn demo_fleet_mixes_labels_and_states() {
        let fleet = demo_fleet(10, 100);
        let count = |f: &dyn Fn(&GameServer) -> bool| fleet.iter().filter(|gs| f(gs)).count();
        for mode in ["ctf", "deathmatch", "coop"] {
            assert!(count(&|gs| gs.labels["mode"] == mode) > 250, "{mode}");
        }
        assert!(count(&|gs| gs.labels["region"] == "us-east") == 500);
        assert!(count(&|gs| gs.labels["version"] == "2.0.0") > 250);
        let allocated = count(&|gs| gs.state == GameServerState::Allocated);
        assert!((150..=250).contains(&allocated), "{allocated}");
        let other = count(&|gs| matches!(gs.state, GameServerState::Other(_)));
        assert!((20..=100).contains(&other), "{other}");
    }

    #[test]
    fn demo_game_servers_are_consistent() {
        for gs in demo_fleet(3, 40) {
            let players = gs.players.expect("players tracked");
            assert!(players.count <= players.capacity);
            assert_eq!(gs.lists["players"].values.len() as i64, players.count);
            assert!(gs.counters["rooms"].count <= gs.counters["rooms"].capacity);
            assert_eq!(gs.state == GameServerState::Allocated, players.count > 0);
            assert!(gs.ports[0].port >= 7000);
            assert_eq!(gs.addresses[0].address, gs.address);
        }
    }
}
