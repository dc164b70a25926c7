//! The `axum_gateway` example's router over loopback: a real HTTP client, the gateway, a
//! processor client and a processor over an in-memory fleet, all on 127.0.0.1.
//!
//! Real clock, as in `end_to_end.rs`: bytes cross real sockets.

use std::{net::SocketAddr, time::Duration};

use agones_processor::{AllocationResponse, ProcessorClient};
use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::{Value, json};
use tokio::net::TcpListener;

#[path = "../examples/stacks/gateway.rs"]
mod gateway;
mod support;

/// Serves the gateway's router for `client` on an ephemeral loopback port.
async fn start_gateway(client: ProcessorClient) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = gateway::router(client);
    tokio::spawn(async move { axum::serve(listener, app).await.expect("gateway failed") });
    address
}

/// Posts `body` to the gateway's allocation path; the HTTP status and the decoded JSON body.
async fn post(gateway: SocketAddr, body: impl Into<Bytes>) -> (u16, Value) {
    let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request =
        axum::http::Request::post(format!("http://{gateway}{}", gateway::ALLOCATION_PATH))
            .header("content-type", "application/json")
            .body(Full::new(body.into()))
            .unwrap();
    let response = http.request(request).await.expect("the gateway answers");
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, "application/json");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn allocates_and_answers_in_the_json_mapping() {
    let (processor, _server) = support::start_processor().await;
    let gateway = start_gateway(support::client(processor, Duration::from_secs(10))).await;

    let request = json!({
        "namespace": "default",
        "gameServerSelectors": [{"matchLabels": {"mode": "ctf"}}, {}],
        "scheduling": "Packed",
        "metadata": {"labels": {"match": "m-1"}},
    });
    let (status, body) = post(gateway, request.to_string()).await;

    assert_eq!(status, 200, "{body}");
    assert!(
        body["gameServerName"]
            .as_str()
            .is_some_and(|name| !name.is_empty()),
        "{body}"
    );
    assert!(body["nodeName"].is_string(), "{body}");
    assert_eq!(body["metadata"]["labels"]["match"], "m-1", "{body}");
    let response: AllocationResponse = serde_json::from_value(body).unwrap();
    assert!(!response.ports.is_empty());
}

#[tokio::test]
async fn impossible_selector_is_429_with_a_grpc_error_body() {
    let (processor, _server) = support::start_processor().await;
    let gateway = start_gateway(support::client(processor, Duration::from_secs(10))).await;

    let request = serde_json::to_vec(&support::impossible_request()).unwrap();
    let (status, body) = post(gateway, request).await;

    assert_eq!(status, 429, "{body}");
    assert_eq!(
        body["code"],
        tonic::Code::ResourceExhausted as i32,
        "{body}"
    );
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn invalid_json_is_400_and_reaches_no_processor() {
    // The processor is unreachable: a request that got that far would wait for it.
    let processor = support::unreachable_processor().await;
    let gateway = start_gateway(support::client(processor, Duration::from_secs(30))).await;

    for body in [
        "{\"namespace\": ",
        "{\"scheduling\": \"Sideways\"}",
        "{\"counters\": {\"rooms\": {\"amount\": \"one\"}}}",
        "",
    ] {
        let (status, error) = post(gateway, body).await;
        assert_eq!(status, 400, "{body:?}: {error}");
        assert_eq!(
            error["code"],
            tonic::Code::InvalidArgument as i32,
            "{error}"
        );
        assert!(
            error["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("invalid request"))
        );
    }
}

#[tokio::test]
async fn unreachable_processor_is_504_at_the_allocation_timeout() {
    let processor = support::unreachable_processor().await;
    let timeout = Duration::from_millis(300);
    let gateway = start_gateway(support::client(processor, timeout)).await;

    let started = tokio::time::Instant::now();
    let (status, body) = post(gateway, "{\"namespace\": \"default\"}").await;

    assert_eq!(status, 504, "{body}");
    assert_eq!(body["code"], tonic::Code::DeadlineExceeded as i32, "{body}");
    assert!(started.elapsed() >= timeout);
}
