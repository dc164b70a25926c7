//! The protocol types and the generated gRPC code.
//!
//! Generated from `proto/allocation/*.proto` at build time. The message types are re-exported
//! at the crate root under the same names; this module also holds the generated clients and
//! servers:
//!
//! - [`processor_client::ProcessorClient`] and [`processor_server::ProcessorServer`] for
//!   `allocation.Processor/StreamBatches`;
//! - [`allocation_service_client::AllocationServiceClient`] and
//!   [`allocation_service_server::AllocationServiceServer`] for
//!   `allocation.AllocationService/Allocate`.
//!
//! `google.rpc.Status` is [`tonic_types::Status`]; `google.protobuf.Int64Value` and
//! `StringValue` fields are `Option<i64>` and `Option<String>`.
//!
//! # JSON
//!
//! With the `json` feature (on by default), [`AllocationRequest`], [`AllocationResponse`] and
//! every message and enum they contain implement `serde::Serialize` and `serde::Deserialize`
//! in the [proto3 JSON mapping](https://protobuf.dev/programming-guides/json/), the form
//! Agones' REST endpoint speaks:
//!
//! - fields by their camelCase names (`gameServerSelectors`, `matchLabels`);
//! - enums by name (`"Distributed"`, `"ALLOCATED"`); numbers are accepted when decoding;
//! - 64-bit integers, including `Int64Value` wrappers, as strings; numbers are accepted when
//!   decoding;
//! - fields holding their default value are left out;
//! - unknown fields are ignored when decoding, as Agones does.
//!
//! The stream messages ([`ProcessorMessage`] and the batches in it) have no JSON form: they
//! embed `google.rpc.Status`, which has no serde implementation, and never travel as JSON.
//!
//! ```
//! # #[cfg(feature = "json")]
//! # fn main() -> Result<(), serde_json::Error> {
//! use agones_processor::AllocationRequest;
//!
//! let request: AllocationRequest = serde_json::from_str(
//!     r#"{"namespace": "default", "scheduling": "Distributed"}"#,
//! )?;
//! assert_eq!(request.namespace, "default");
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "json"))]
//! # fn main() {}
//! ```

#![allow(missing_docs, unreachable_pub, clippy::all)]

tonic::include_proto!("allocation");

#[cfg(feature = "json")]
include!(concat!(env!("OUT_DIR"), "/allocation.serde.rs"));
