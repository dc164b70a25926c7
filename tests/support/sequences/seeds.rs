//! The seeds of the fuzz corpus, built from the wire vectors in `tests/data/`.
//!
//! `tests/fuzz_sequences.rs` runs every seed as a fixed case and checks that the seed files
//! under `fuzz/seeds/` are these.

use agones_processor::{
    AllocationRequest,
    proto::{ProcessorMessage, processor_message::Payload},
};
use prost::Message as _;

use super::{client, server};

const REGISTRATION: &[u8] = include_bytes!("../../data/registration.bin");
const PULL: &[u8] = include_bytes!("../../data/pull.bin");
const UNKNOWN_FIELD: &[u8] = include_bytes!("../../data/unknown_field.bin");
const BATCH_REQUEST: &[u8] = include_bytes!("../../data/batch_request.bin");
const BATCH_RESPONSE: &[u8] = include_bytes!("../../data/batch_response.bin");
const ALLOCATION_REQUEST: &[u8] = include_bytes!("../../data/allocation_request.bin");
const ALLOCATION_RESPONSE: &[u8] = include_bytes!("../../data/allocation_response.bin");

/// The fuzz targets.
pub(crate) const TARGETS: [&str; 4] = ["decode", "allocate", "server_sequence", "client_sequence"];

/// The seeds of `target` (one of [`TARGETS`]), by file name.
pub(crate) fn seeds(target: &str) -> Vec<(&'static str, Vec<u8>)> {
    match target {
        "decode" => {
            // The first byte chooses the message type: 0 ProcessorMessage, 6 AllocationRequest,
            // 7 AllocationResponse.
            let with = |selector: u8, bytes: &[u8]| [&[selector], bytes].concat();
            vec![
                ("registration", with(0, REGISTRATION)),
                ("pull", with(0, PULL)),
                ("unknown_field", with(0, UNKNOWN_FIELD)),
                ("batch_request", with(0, BATCH_REQUEST)),
                ("batch_response", with(0, BATCH_RESPONSE)),
                ("allocation_request", with(6, ALLOCATION_REQUEST)),
                ("allocation_response", with(7, ALLOCATION_RESPONSE)),
            ]
        }
        "allocate" => {
            // A seed byte, then length-delimited requests: the one of its own file, then the
            // three of the batch.
            let mut bytes = vec![0];
            let request = AllocationRequest::decode(ALLOCATION_REQUEST).expect("a wire vector");
            bytes.extend(request.encode_length_delimited_to_vec());
            let batch = ProcessorMessage::decode(BATCH_REQUEST).expect("a wire vector");
            let Some(Payload::BatchRequest(batch)) = batch.payload else {
                panic!("batch_request.bin holds a batch request");
            };
            for wrapper in batch.requests {
                let request = wrapper.request.unwrap_or_default();
                bytes.extend(request.encode_length_delimited_to_vec());
            }
            vec![("requests", bytes)]
        }
        "server_sequence" => vec![
            (
                "register_and_batch",
                server::seed(&[REGISTRATION, BATCH_REQUEST]),
            ),
            (
                "early_messages",
                server::seed(&[
                    UNKNOWN_FIELD,
                    BATCH_REQUEST,
                    REGISTRATION,
                    PULL,
                    BATCH_RESPONSE,
                    BATCH_REQUEST,
                ]),
            ),
        ],
        "client_sequence" => vec![
            ("pulled_and_answered", client::seed(&[])),
            (
                "every_vector",
                client::seed(&[
                    REGISTRATION,
                    PULL,
                    UNKNOWN_FIELD,
                    BATCH_REQUEST,
                    BATCH_RESPONSE,
                ]),
            ),
        ],
        other => panic!("no fuzz target {other}"),
    }
}
