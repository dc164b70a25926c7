//! Tonic server settings for a processor.

use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::{Server, server::TcpIncoming};

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
/// - `TCP_NODELAY` on connections the server accepts itself (`serve`, `serve_with_shutdown`),
///   since pulls and answers are small messages that must not wait; for a listener of your
///   own, use [`incoming`].
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

/// [`recommended_server`] with TLS: the server presents the certificate of `tls` and, when
/// `tls` has a client CA, accepts only clients with a certificate signed by it (mutual TLS).
///
/// Connections accepted by `serve_with_incoming` (such as those of [`incoming`]) get TLS too.
/// To bind client ids to client certificates, see
/// [`Builder::certificate_identity`](super::Builder::certificate_identity).
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use agones_processor::server::recommended_tls_server;
/// use agones_processor::tls::ServerTls;
///
/// let tls = ServerTls::from_pem_files("processor.pem", "processor.key")?
///     .client_ca_file("clients-ca.pem")?;
/// # let service = tonic_health::server::health_reporter().1;
/// recommended_tls_server(&tls)?
///     .add_service(service)
///     .serve("0.0.0.0:9090".parse()?)
///     .await?;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// rustls refuses the configuration, for example a key that does not match its certificate.
#[cfg(feature = "tls")]
pub fn recommended_tls_server(
    tls: &crate::tls::ServerTls,
) -> Result<Server, tonic::transport::Error> {
    recommended_server().tls_config(tls.to_config())
}

/// The connections accepted on `listener`, with `TCP_NODELAY` set, for
/// `Server::serve_with_incoming`.
///
/// Tonic applies its own `tcp_nodelay` setting only to listeners it binds. Without it, Nagle's
/// algorithm holds a small message back until the previous one is acknowledged, which with
/// delayed acknowledgements adds up to some 40 ms to a pull, a batch or an answer.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use agones_processor::server::{incoming, recommended_server};
///
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// # let service = tonic_health::server::health_reporter().1;
/// recommended_server().add_service(service).serve_with_incoming(incoming(listener)).await?;
/// # Ok(())
/// # }
/// ```
pub fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt;

    use super::*;

    #[tokio::test]
    async fn accepted_connections_have_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut accepted = incoming(listener);
        let _client = tokio::net::TcpStream::connect(address).await.unwrap();
        let stream = accepted.next().await.unwrap().unwrap();
        assert!(
            stream.nodelay().unwrap(),
            "small messages must not wait for Nagle"
        );
    }
}
