//! Arbitrary inputs against the protocol code, on every test run: the checks of the fuzz
//! targets in `fuzz/` (see the README's Fuzzing section), fed by proptest with fresh random
//! bytes each run, for a bounded number of cases.
//!
//! - wire messages: arbitrary bytes decode, re-encode and convert without panicking, and
//!   arbitrary allocation requests allocate from a fleet at the edges of its value ranges;
//! - the server: arbitrary sequences of client messages on up to three streams, with
//!   shutdown and leadership changes, against the real handler on a paused clock;
//! - the client: arbitrary sequences of calls, pulls, answers and stream breaks against the
//!   driver's message handling.
//!
//! The invariants are listed in each module of `tests/support/sequences/`. A failing case is
//! printed as its bytes; replay it with the matching fuzz target or as a fixed test below.

#[path = "support/sequences/mod.rs"]
mod sequences;

use std::path::Path;

use proptest::{collection::vec, prelude::*};
use sequences::{client, seeds, server, wire, without_panics};

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_decode_and_round_trip(data in vec(any::<u8>(), 0..600)) {
        wire::check_decode(&data);
    }

    #[test]
    fn any_requests_allocate_or_are_refused(data in vec(any::<u8>(), 0..600)) {
        wire::check_allocate(&data);
    }

    #[test]
    fn the_client_handles_any_message_sequence(data in vec(any::<u8>(), 0..400)) {
        without_panics(|| client::run(&data));
    }
}

proptest! {
    // Each case runs a processor on a paused clock: a few milliseconds of real time.
    #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

    #[test]
    fn the_server_handles_any_message_sequence(data in vec(any::<u8>(), 0..400)) {
        without_panics(|| server::run(&data));
    }
}

/// Every seed of the fuzz corpus passes and gets where it was written to get, and the seed
/// files in `fuzz/seeds/` are the ones built from the wire vectors. With `WRITE_FUZZ_SEEDS=1`
/// the files are written instead.
#[test]
fn fuzz_seeds_pass_and_match_their_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let write = std::env::var_os("WRITE_FUZZ_SEEDS").is_some();
    for target in seeds::TARGETS {
        let directory = root.join(target);
        if write {
            std::fs::create_dir_all(&directory).unwrap();
        }
        for (name, bytes) in seeds::seeds(target) {
            without_panics(|| reaches(target, name, &bytes));
            let path = directory.join(name);
            if write {
                std::fs::write(&path, &bytes).unwrap();
            } else {
                let stored = std::fs::read(&path)
                    .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
                assert!(
                    stored == bytes,
                    "{} is stale: run WRITE_FUZZ_SEEDS=1 cargo test --test fuzz_sequences",
                    path.display()
                );
            }
        }
    }
}

/// Runs a seed and checks that it got past the first obstacles.
fn reaches(target: &str, name: &str, bytes: &[u8]) {
    match target {
        "decode" => wire::check_decode(bytes),
        "allocate" => assert!(wire::check_allocate(bytes) > 0, "{name} allocated nothing"),
        "server_sequence" => {
            let report = server::run(bytes);
            assert!(report.answered >= 1, "{name}: {report:?}");
            assert!(report.complete >= 1, "{name}: {report:?}");
        }
        "client_sequence" => {
            let report = client::run(bytes);
            assert!(report.batches >= 1, "{name}: {report:?}");
            assert!(report.answered >= 1, "{name}: {report:?}");
        }
        other => panic!("no fuzz target {other}"),
    }
}

/// Every input the fuzz targets once failed on (`tests/data/fuzz-regressions/<target>/`)
/// passes.
#[test]
fn fuzz_regressions_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz-regressions");
    let mut replayed = 0;
    for target in seeds::TARGETS {
        let Ok(entries) = std::fs::read_dir(root.join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            eprintln!("replaying {}", path.display());
            without_panics(|| match target {
                "decode" => wire::check_decode(&bytes),
                "allocate" => {
                    wire::check_allocate(&bytes);
                }
                "server_sequence" => {
                    server::run(&bytes);
                }
                "client_sequence" => {
                    client::run(&bytes);
                }
                other => panic!("no fuzz target {other}"),
            });
            replayed += 1;
        }
    }
    assert!(replayed > 0, "the regressions are found");
}
