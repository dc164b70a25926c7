//! Arbitrary allocation requests against a fleet whose counters, lists and player counts sit at the edges of their ranges.
//!
//! The checks live in `tests/support/sequences/`, shared with the property tests.

#![no_main]

#[allow(dead_code)]
#[path = "../../tests/support/sequences/mod.rs"]
mod sequences;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = sequences::wire::check_allocate(data);
});
