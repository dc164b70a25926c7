//! The allocator front end of the `tonic_frontend` example: `AllocationService/Allocate`
//! answered through the processor client.
//!
//! Kept apart from the example's `main` so that `tests/tonic_frontend.rs` serves the same
//! service.

use agones_processor::{
    AllocationRequest, AllocationResponse, ProcessorClient,
    proto::allocation_service_server::{AllocationService, AllocationServiceServer},
};
use tonic::{Request, Response, Status};

/// `allocation.AllocationService` forwarding every call to a processor client.
#[derive(Debug, Clone)]
pub(crate) struct Frontend {
    client: ProcessorClient,
}

impl Frontend {
    /// The gRPC service for a front end forwarding to `client`.
    pub(crate) fn server(client: ProcessorClient) -> AllocationServiceServer<Self> {
        AllocationServiceServer::new(Self { client })
    }
}

#[tonic::async_trait]
impl AllocationService for Frontend {
    async fn allocate(
        &self,
        request: Request<AllocationRequest>,
    ) -> Result<Response<AllocationResponse>, Status> {
        // The client's error converts into the status the processor client would give:
        // the allocator's own code, DeadlineExceeded on timeout, Unavailable when the stream
        // broke or the client closed.
        let response = self.client.allocate(request.into_inner()).await?;
        Ok(Response::new(response))
    }
}
