//! The unary `AllocationService/Allocate` handler.

use std::fmt;

use tonic::{Code, Request, Response, Status};
use tower::{BoxError, Service, ServiceExt};

use crate::proto::allocation_service_server::{AllocationService, AllocationServiceServer};
use crate::proto::{AllocationRequest, AllocationResponse};
use crate::status::{grpc_code_from_http_status, rpc_status_from_error, status_from_rpc};

/// Serves `allocation.AllocationService/Allocate`: one request through the allocator, no
/// batching.
///
/// Allocator errors become a [`tonic::Status`] as batch answers do, by
/// [`rpc_status_from_error`](crate::status::rpc_status_from_error). Made by
/// [`AllocationServiceHandler::new`] or, sharing a processor's allocator and unallocated code,
/// by [`ProcessorHandler::allocation_service`](super::ProcessorHandler::allocation_service).
#[derive(Clone)]
pub struct AllocationServiceHandler<A> {
    allocator: A,
    unallocated: Code,
}

impl<A> AllocationServiceHandler<A> {
    /// A handler that runs every request through `allocator`.
    ///
    /// The unallocated code is `ResourceExhausted` (HTTP 429) until
    /// [`unallocated_http_status`](Self::unallocated_http_status) sets another.
    pub fn new(allocator: A) -> Self {
        Self::with_code(allocator, Code::ResourceExhausted)
    }

    pub(crate) fn with_code(allocator: A, unallocated: Code) -> Self {
        Self {
            allocator,
            unallocated,
        }
    }

    /// The HTTP status whose gRPC code answers a request for which no game server matched.
    ///
    /// Default: 429 (Too Many Requests), which is `ResourceExhausted`.
    pub fn unallocated_http_status(mut self, status: u16) -> Self {
        self.unallocated = grpc_code_from_http_status(status);
        self
    }

    /// The handler as a tonic service, ready for `tonic::transport::Server::add_service`.
    pub fn into_server(self) -> AllocationServiceServer<Self>
    where
        Self: AllocationService,
    {
        AllocationServiceServer::new(self)
    }

    fn status(&self, error: impl Into<BoxError>) -> Status {
        let error = error.into();
        status_from_rpc(rpc_status_from_error(&*error, self.unallocated))
    }
}

impl<A> fmt::Debug for AllocationServiceHandler<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AllocationServiceHandler")
            .field("unallocated", &self.unallocated)
            .finish_non_exhaustive()
    }
}

#[tonic::async_trait]
impl<A> AllocationService for AllocationServiceHandler<A>
where
    A: Service<AllocationRequest, Response = AllocationResponse> + Clone + Send + Sync + 'static,
    A::Error: Into<BoxError>,
    A::Future: Send,
{
    /// Allocates one game server.
    ///
    /// # Errors
    ///
    /// The allocator's error, as a status.
    async fn allocate(
        &self,
        request: Request<AllocationRequest>,
    ) -> Result<Response<AllocationResponse>, Status> {
        let mut allocator = self.allocator.clone();
        let ready = allocator
            .ready()
            .await
            .map_err(|error| self.status(error))?;
        let result = ready.call(request.into_inner()).await;
        match result {
            Ok(response) => {
                tracing::trace!(game_server = %response.game_server_name, "allocated");
                Ok(Response::new(response))
            }
            Err(error) => {
                let status = self.status(error);
                tracing::trace!(code = ?status.code(), message = status.message(), "not allocated");
                Err(status)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocator::AllocationError;

    #[tokio::test]
    async fn allocates_through_the_allocator() {
        let handler = AllocationServiceHandler::new(tower::service_fn(
            |request: AllocationRequest| async move {
                Ok::<_, AllocationError>(AllocationResponse {
                    game_server_name: format!("gs-{}", request.namespace),
                    ..Default::default()
                })
            },
        ));
        let request = AllocationRequest {
            namespace: "default".into(),
            ..Default::default()
        };
        let response = handler.allocate(Request::new(request)).await.unwrap();
        assert_eq!(response.into_inner().game_server_name, "gs-default");
    }

    #[tokio::test]
    async fn errors_map_to_status() {
        let unallocated = tower::service_fn(|_: AllocationRequest| async {
            Err::<AllocationResponse, _>(AllocationError::Unallocated)
        });
        let handler = AllocationServiceHandler::new(unallocated);
        let status = handler
            .allocate(Request::new(AllocationRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.message(), "no game server matched");

        let status = handler
            .unallocated_http_status(404)
            .allocate(Request::new(AllocationRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
    }
}
