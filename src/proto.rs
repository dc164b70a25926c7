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

#![allow(missing_docs, unreachable_pub, clippy::all)]

tonic::include_proto!("allocation");
