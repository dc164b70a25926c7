//! The `tonic_frontend` example's service over loopback: the generated gRPC client, the front
//! end, a processor client and a processor over an in-memory fleet, all on 127.0.0.1.
//!
//! Real clock, as in `end_to_end.rs`: bytes cross real sockets.

use std::{net::SocketAddr, time::Duration};

use agones_processor::{
    AllocationRequest, ProcessorClient, proto::allocation_service_client::AllocationServiceClient,
};
use tokio::net::TcpListener;
use tonic::{Code, transport::Channel};

#[path = "../examples/stacks/frontend.rs"]
mod frontend;
mod support;

/// Serves the front end for `client` on an ephemeral loopback port and connects to it.
async fn start_frontend(client: ProcessorClient) -> AllocationServiceClient<Channel> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address: SocketAddr = listener.local_addr().unwrap();
    let server = tonic::transport::Server::builder()
        .add_service(frontend::Frontend::server(client))
        .serve_with_incoming(agones_processor::server::incoming(listener));
    tokio::spawn(async move { server.await.expect("front end failed") });
    AllocationServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap()
}

#[tokio::test]
async fn allocates_through_the_processor() {
    let (processor, _server) = support::start_processor().await;
    let mut frontend = start_frontend(support::client(processor, Duration::from_secs(10))).await;

    let response = frontend
        .allocate(AllocationRequest {
            namespace: "default".into(),
            ..Default::default()
        })
        .await
        .expect("allocated")
        .into_inner();

    assert!(!response.game_server_name.is_empty());
    assert!(!response.node_name.is_empty());
}

#[tokio::test]
async fn impossible_selector_is_resource_exhausted() {
    let (processor, _server) = support::start_processor().await;
    let mut frontend = start_frontend(support::client(processor, Duration::from_secs(10))).await;

    let status = frontend
        .allocate(support::impossible_request())
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
}

#[tokio::test]
async fn unreachable_processor_is_deadline_exceeded_at_the_allocation_timeout() {
    let processor = support::unreachable_processor().await;
    let timeout = Duration::from_millis(300);
    let mut frontend = start_frontend(support::client(processor, timeout)).await;

    let started = tokio::time::Instant::now();
    let status = frontend
        .allocate(AllocationRequest::default())
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("allocation timeout"),
        "{status:?}"
    );
    assert!(started.elapsed() >= timeout);
}

#[tokio::test]
async fn closed_client_is_unavailable() {
    let (processor, _server) = support::start_processor().await;
    let (shutdown, signal) = tokio::sync::oneshot::channel::<()>();
    let client = ProcessorClient::builder(format!("http://{processor}"))
        .shutdown_signal(async {
            let _ = signal.await;
        })
        .spawn()
        .unwrap();
    let mut frontend = start_frontend(client).await;
    drop(shutdown);

    let status = frontend
        .allocate(AllocationRequest::default())
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}
