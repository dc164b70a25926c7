//! Allocator services: what the processor runs each request through.
//!
//! An allocator is any `tower::Service<AllocationRequest, Response = AllocationResponse>` whose
//! error converts into a [`BoxError`](tower::BoxError). [`AllocationError`] is the error an
//! allocator uses to say that nothing matched or that the request is invalid.

mod error;
mod fleet;

pub use error::AllocationError;
pub use fleet::{Address, Counter, GameServer, GameServerState, List, Players, Port, demo_fleet};
