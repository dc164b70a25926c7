//! Arbitrary bytes as each protocol message: what decodes re-encodes to itself, and the conversions applied to received messages do not panic.
//!
//! The checks live in `tests/support/sequences/`, shared with the property tests.

#![no_main]

#[allow(dead_code)]
#[path = "../../tests/support/sequences/mod.rs"]
mod sequences;

libfuzzer_sys::fuzz_target!(|data: &[u8]| sequences::wire::check_decode(data));
