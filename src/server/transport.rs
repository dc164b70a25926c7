//! Tonic server settings for a processor.

use std::time::Duration;

use tonic::transport::Server;

/// How often the server pings a connection to check it is alive, as upstream.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a ping may go unanswered before the connection is closed, as upstream.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(30);
/// The shortest interval at which upstream lets clients ping; clients of this crate's
/// processor should not ping more often either.
pub const MIN_CLIENT_PING_INTERVAL: Duration = Duration::from_secs(10);

/// A tonic server builder with the settings upstream's processor uses, where tonic has them.
///
/// - HTTP/2 keepalive: a ping every 30 s ([`KEEPALIVE_INTERVAL`]), the connection closed when
///   one goes unanswered for 30 s ([`KEEPALIVE_TIMEOUT`]);
/// - `TCP_NODELAY`, since pulls and answers are small messages that must not wait.
///
/// Two upstream settings have no tonic equivalent and are not applied: closing connections
/// idle for a minute, and refusing clients that ping more often than every 10 s
/// ([`MIN_CLIENT_PING_INTERVAL`]).
///
/// ```
/// let server = agones_processor::server::recommended_server();
/// # drop(server);
/// ```
pub fn recommended_server() -> Server {
    Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .tcp_nodelay(true)
}
