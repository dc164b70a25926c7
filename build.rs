//! Generates the protocol types and the gRPC client and server code from `proto/`, and with the
//! `json` feature their serde implementations in the proto3 JSON mapping.
//!
//! The `.proto` files are parsed by `protox`, a protobuf compiler written in Rust, so building
//! the crate needs no system `protoc`.

use std::error::Error;

#[cfg(feature = "json")]
use prost_types::{
    DescriptorProto, FileDescriptorSet,
    field_descriptor_proto::{Label, Type},
};

const PROTOS: [&str; 2] = [
    "proto/allocation/allocation.proto",
    "proto/allocation/processor.proto",
];

#[cfg(feature = "json")]
/// The file whose messages get JSON support: the allocation request and response with
/// everything they contain. The stream messages of `processor.proto` are left out; they embed
/// `google.rpc.Status`, which `tonic-types` provides without serde implementations, and they
/// never travel as JSON.
const JSON_PROTO: &str = "proto/allocation/allocation.proto";

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto");

    // `.` resolves `proto/allocation/allocation.proto` as processor.proto imports it;
    // `proto` resolves `google/rpc/status.proto`.
    let descriptors = protox::compile(PROTOS, [".", "proto"])?;

    #[cfg(feature = "json")]
    generate_json(&descriptors)?;

    tonic_prost_build::configure()
        // google.rpc.Status is taken from tonic-types rather than generated again.
        .extern_path(".google.rpc.Status", "::tonic_types::Status")
        // Ordered maps encode their entries sorted by key, as other deterministic encoders do,
        // and keep label and annotation listings stable.
        .btree_map(".")
        .compile_fds(descriptors)?;
    Ok(())
}

#[cfg(feature = "json")]
/// Writes `allocation.serde.rs`: serde implementations for the messages of [`JSON_PROTO`].
fn generate_json(descriptors: &FileDescriptorSet) -> Result<(), Box<dyn Error>> {
    let mut builder = pbjson_build::Builder::new();
    let mut prefixes = Vec::new();
    for file in &descriptors.file {
        let mut file = file.clone();
        for message in &mut file.message_type {
            wrappers_as_optional_scalars(message);
        }
        if file.name() == JSON_PROTO {
            let package = file.package();
            let messages = file.message_type.iter().map(|m| m.name());
            let enums = file.enum_type.iter().map(|e| e.name());
            prefixes.extend(
                messages
                    .chain(enums)
                    .map(|name| format!(".{package}.{name}")),
            );
        }
        builder.register_file_descriptor(file);
    }
    builder
        .btree_map(["."])
        // Agones' REST endpoint discards fields it does not know; so does this mapping, which
        // also lets requests written for newer Agones versions through.
        .ignore_unknown_fields()
        .build(&prefixes)?;
    Ok(())
}

#[cfg(feature = "json")]
/// Describes every `google.protobuf` wrapper field as a proto3 `optional` scalar, in the copy
/// of the descriptors that pbjson-build reads.
///
/// prost generates a wrapper field as an `Option` of the wrapped scalar (`Option<i64>` for
/// `Int64Value`), and the proto3 JSON mapping writes a wrapper as its bare value, 64-bit
/// integers as strings. An `optional` scalar has exactly that Rust type and that JSON form, so
/// pbjson-build generates the right code for it, while the gRPC types stay unchanged.
fn wrappers_as_optional_scalars(message: &mut DescriptorProto) {
    for field in &mut message.field {
        let wrapped = match field.type_name() {
            ".google.protobuf.DoubleValue" => Type::Double,
            ".google.protobuf.FloatValue" => Type::Float,
            ".google.protobuf.Int64Value" => Type::Int64,
            ".google.protobuf.UInt64Value" => Type::Uint64,
            ".google.protobuf.Int32Value" => Type::Int32,
            ".google.protobuf.UInt32Value" => Type::Uint32,
            ".google.protobuf.BoolValue" => Type::Bool,
            ".google.protobuf.StringValue" => Type::String,
            ".google.protobuf.BytesValue" => Type::Bytes,
            _ => continue,
        };
        if field.label() == Label::Repeated {
            continue;
        }
        field.type_name = None;
        field.set_type(wrapped);
        field.proto3_optional = Some(true);
    }
    for nested in &mut message.nested_type {
        wrappers_as_optional_scalars(nested);
    }
}
