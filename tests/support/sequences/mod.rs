//! Arbitrary inputs against the protocol code: the same checks run under proptest in
//! `tests/fuzz_sequences.rs`, on every test run, and under libFuzzer in the `fuzz/` crate.
//!
//! Every entry point takes arbitrary bytes and panics when an invariant breaks:
//!
//! - [`wire::check_decode`] and [`wire::check_allocate`]: bytes as protocol messages;
//! - [`server::run`]: bytes as a script of client messages on processor streams;
//! - [`client::run`]: bytes as a script of processor messages and calls on a client.
//!
//! [`without_panics`] also catches panics in tasks, which tokio would keep to itself.

pub(crate) mod client;
pub(crate) mod script;
pub(crate) mod seeds;
pub(crate) mod server;
pub(crate) mod wire;

use std::{cell::Cell, sync::Once};

thread_local! {
    static PANICKED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` and fails if anything panicked on this thread meanwhile, including the tasks of a
/// current-thread runtime, whose panics tokio catches and keeps in their join handles.
pub(crate) fn without_panics<R>(f: impl FnOnce() -> R) -> R {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.with(|panicked| panicked.set(true));
            previous(info);
        }));
    });
    PANICKED.with(|panicked| panicked.set(false));
    let result = f();
    assert!(
        !PANICKED.with(Cell::get),
        "a task panicked: see the message above"
    );
    result
}
