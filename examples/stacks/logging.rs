//! Logging for the examples: `RUST_LOG` when set, otherwise the example's default filter.

use std::io::IsTerminal as _;

/// Installs a `tracing` subscriber that prints to standard error, in colour only on a terminal,
/// so that logs stay apart from an example's report on standard output.
pub(crate) fn init(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_filter.into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
