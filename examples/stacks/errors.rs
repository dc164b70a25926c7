//! How the examples print an error: with its sources, which often hold the reason.

/// Prints `error` and each of its sources to standard error, on one line.
pub(crate) fn report(error: &dyn std::error::Error) {
    let mut text = format!("error: {error}");
    let mut source = error.source();
    while let Some(error) = source {
        text.push_str(&format!(": {error}"));
        source = error.source();
    }
    eprintln!("{text}");
}
