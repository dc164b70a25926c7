//! The in-memory fleet allocator, the crate's embedded default.
//!
//! - `game_server`: the model of a game server;
//! - `demo`: a generated fleet for examples, tests and benchmarks.

mod demo;
mod game_server;

pub use demo::demo_fleet;
pub use game_server::{Address, Counter, GameServer, GameServerState, List, Players, Port};
