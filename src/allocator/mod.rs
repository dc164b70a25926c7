//! Allocator services: what the processor runs each request through.
//!
//! An allocator is any `tower::Service<AllocationRequest, Response = AllocationResponse>` whose
//! error converts into a [`BoxError`](tower::BoxError). [`AllocationError`] is the error an
//! allocator uses to say that nothing matched or that the request is invalid.
//!
//! A batch allocator sees a whole batch at once and returns one [`BatchOutcome`] per request;
//! [`ConcurrentBatch`] runs a per-request allocator as one.
//!
//! [`Fleet`] is the embedded allocator: an in-memory fleet of [`GameServer`]s that chooses the
//! game server Agones would choose for each request. [`demo_fleet`] generates a fleet to try it.

mod batch;
mod error;
mod fleet;

pub use batch::{BatchFuture, BatchOutcome, ConcurrentBatch, ConcurrentBatchLayer};
pub use error::AllocationError;
pub use fleet::{
    ActionTarget, ActionWarning, Address, Allocation, Counter, Fleet, FleetFileError, GameServer,
    GameServerState, List, Players, Port, demo_fleet, parse_fleet_json, parse_fleet_yaml,
    read_fleet_file,
};
