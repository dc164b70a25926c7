//! Arbitrary sequences of calls and processor messages against the client's stream handling.
//!
//! The checks live in `tests/support/sequences/`, shared with the property tests.

#![no_main]

#[allow(dead_code)]
#[path = "../../tests/support/sequences/mod.rs"]
mod sequences;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = sequences::client::run(data);
});
