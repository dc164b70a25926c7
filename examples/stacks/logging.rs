//! Logging for the examples: `RUST_LOG` when set, otherwise the example's default filter.

/// Installs a `tracing` subscriber that prints to standard output.
pub(crate) fn init(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_filter.into());
    tracing_subscriber::fmt().with_env_filter(filter).init();
}
