//! The Agones allocation processor as tower middleware.

pub mod allocator;
pub mod proto;
pub mod server;
pub mod status;
