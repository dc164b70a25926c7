//! Starting a processor for the loopback tests: the handler a builder makes, with gRPC health,
//! served as in production (`recommended_server`, `server::incoming`).

use std::{future::Future, net::SocketAddr};

use agones_processor::server::{Builder, ProcessorHandler, incoming, recommended_server};
use tokio::{net::TcpListener, task::JoinHandle};

/// Serves the handler `builder` makes, and gRPC health, on `listener` until `stop` resolves;
/// returns the handler and the server's task.
pub(crate) fn serve_until<A>(
    builder: Builder<A>,
    listener: TcpListener,
    stop: impl Future<Output = ()> + Send + 'static,
) -> (ProcessorHandler<A>, JoinHandle<()>)
where
    A: Clone + Send + Sync + 'static,
{
    let (reporter, health) = tonic_health::server::health_reporter();
    let handler = builder.health_reporter(reporter).build();
    let server = recommended_server()
        .add_routes(handler.routes(health))
        .serve_with_incoming_shutdown(incoming(listener), stop);
    let task = tokio::spawn(async move { server.await.expect("the processor serves") });
    (handler, task)
}

/// Serves the handler `builder` makes, and gRPC health, on a fresh loopback port for the rest
/// of the test.
#[allow(dead_code)]
pub(crate) async fn serve<A>(builder: Builder<A>) -> (ProcessorHandler<A>, SocketAddr)
where
    A: Clone + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (handler, _task) = serve_until(builder, listener, std::future::pending());
    (handler, address)
}
