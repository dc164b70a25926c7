//! Generates the protocol types and the gRPC client and server code from `proto/`.
//!
//! The `.proto` files are parsed by `protox`, a protobuf compiler written in Rust, so building
//! the crate needs no system `protoc`.

use std::error::Error;

const PROTOS: [&str; 2] = [
    "proto/allocation/allocation.proto",
    "proto/allocation/processor.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto");

    // `.` resolves `proto/allocation/allocation.proto` as processor.proto imports it;
    // `proto` resolves `google/rpc/status.proto`.
    let descriptors = protox::compile(PROTOS, [".", "proto"])?;

    tonic_prost_build::configure()
        // google.rpc.Status is taken from tonic-types rather than generated again.
        .extern_path(".google.rpc.Status", "::tonic_types::Status")
        // Ordered maps encode their entries sorted by key, as other deterministic encoders do,
        // and keep label and annotation listings stable.
        .btree_map(".")
        .compile_fds(descriptors)?;
    Ok(())
}
