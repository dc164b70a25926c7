//! The HTTP gateway of the `axum_gateway` example: the processor client behind an axum route.
//!
//! Kept apart from the example's `main` so that `tests/axum_gateway.rs` serves the same router.

use agones_processor::{
    AllocationRequest, AllocationResponse, ProcessorClient, status::http_status_from_grpc_code,
};
use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
};
use tower::ServiceExt;

/// The path Agones' allocator serves its REST endpoint on.
pub(crate) const ALLOCATION_PATH: &str = "/gameserverallocation";

/// A router with `POST /gameserverallocation`, allocating through `client`.
///
/// The client is the router's state: each request clones it, which shares its queue and
/// stream, and calls it once as a `tower::Service`.
pub(crate) fn router(client: ProcessorClient) -> Router {
    Router::new()
        .route(ALLOCATION_PATH, post(allocate))
        .with_state(client)
}

/// Decodes the request in the proto3 JSON mapping, allocates, and encodes the answer the same
/// way.
async fn allocate(
    State(client): State<ProcessorClient>,
    body: Bytes,
) -> Result<Json<AllocationResponse>, ErrorResponse> {
    // Decoding the bytes here rather than with axum's `Json` extractor keeps every malformed
    // body a 400 with the gRPC error body, and accepts callers that omit the content type.
    let request: AllocationRequest = serde_json::from_slice(&body)
        .map_err(|error| tonic::Status::invalid_argument(format!("invalid request: {error}")))?;
    let response = client.oneshot(request).await?;
    Ok(Json(response))
}

/// An error answered as the HTTP status of its gRPC code with a body
/// `{"code": <gRPC code number>, "message": "..."}`, the shape of Agones' REST errors.
#[derive(Debug)]
pub(crate) struct ErrorResponse(tonic::Status);

impl<E: Into<tonic::Status>> From<E> for ErrorResponse {
    fn from(error: E) -> Self {
        Self(error.into())
    }
}

impl IntoResponse for ErrorResponse {
    fn into_response(self) -> Response {
        let code = self.0.code();
        let status = StatusCode::from_u16(http_status_from_grpc_code(code))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({"code": code as i32, "message": self.0.message()});
        (status, Json(body)).into_response()
    }
}
