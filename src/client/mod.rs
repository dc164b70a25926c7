//! The processor client: a batching `tower::Service<AllocationRequest>` fed by processor pulls.
//!
//! ```text
//! caller ─► Timeout ─► Buffer ─► Batch ─► queue ─► (pulled) ─► processor
//!                                   ▲                              │
//!                                   └──────── Driver ◄─────────────┘ answers
//! ```
//!
//! [`ProcessorClient`] is the stack users call; [`Batch`] is the batching service inside it;
//! the [`Driver`] is the background task that owns the gRPC stream. Every call ends exactly
//! once: with the processor's answer, with [`Error::Timeout`] at the allocation timeout, with
//! [`Error::OutcomeUnknown`] as soon as the stream carrying it breaks, with
//! [`Error::Closed`] when the client shuts down, with [`Error::Refused`] when the processor
//! refuses the client's credentials or id, or at once with [`Error::TooLarge`] when its
//! request cannot fit in a message. Requests not yet sent when a stream breaks wait for the
//! next one.

mod backoff;
mod batch;
mod builder;
mod driver;
mod error;
mod queue;
mod service;

pub use batch::{Batch, ResponseFuture as BatchFuture};
pub use builder::Builder;
pub use driver::Driver;
#[doc(hidden)]
pub use driver::StreamHarness;
pub use error::{BuildError, Error};
pub use service::{ClientStats, ProcessorClient, ResponseFuture};
