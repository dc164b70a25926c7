//! The in-memory fleet allocator, the crate's embedded default.
//!
//! - `game_server`: the model of a game server;
//! - `request`: request normalisation (defaults, deprecated fields);
//! - `validate`: the rules a request must meet;
//! - `select`: matching and ordering of candidates;
//! - `nodes`: per-node counts used by Packed ordering;
//! - `demo`: a generated fleet for examples, tests and benchmarks.

mod demo;
mod game_server;
mod nodes;
mod request;
mod select;
#[cfg(test)]
mod test_support;
mod validate;

pub use demo::demo_fleet;
pub use game_server::{Address, Counter, GameServer, GameServerState, List, Players, Port};
