//! What the loopback tests of the stacked examples share: a processor over a small fleet, and
//! processor clients.

mod processor;

use std::{net::SocketAddr, time::Duration};

use agones_processor::{
    AllocationRequest, ProcessorClient,
    allocator::{Fleet, demo_fleet},
    proto::GameServerSelector,
    server::ProcessorHandler,
};
use tokio::{net::TcpListener, task::JoinHandle};

/// A processor over a fleet of 2 nodes with 10 game servers each, on an ephemeral loopback
/// port, serving until the returned task is aborted.
pub(crate) async fn start_processor() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let builder = ProcessorHandler::builder(Fleet::new(demo_fleet(2, 10)))
        .pull_interval(Duration::from_millis(20));
    let (_processor, task) = processor::serve_until(builder, listener, std::future::pending());
    (address, task)
}

/// A loopback address nobody listens on: bound to find a free port, then released.
pub(crate) async fn unreachable_processor() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// A client of the processor at `address` whose calls give up after `allocation_timeout`.
pub(crate) fn client(address: SocketAddr, allocation_timeout: Duration) -> ProcessorClient {
    ProcessorClient::builder(format!("http://{address}"))
        .allocation_timeout(allocation_timeout)
        .reconnect_interval(Duration::from_millis(100))
        .spawn()
        .unwrap()
}

/// A request for a game server in a mode no game server of the fleet has.
pub(crate) fn impossible_request() -> AllocationRequest {
    AllocationRequest {
        namespace: "default".into(),
        game_server_selectors: vec![GameServerSelector {
            match_labels: [("mode".to_owned(), "no-such-mode".to_owned())].into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}
