//! The load generator keeps working: its quick mode runs to the end and reports every figure.
//!
//! The example is built (or found fresh) with the cargo that runs this test, in the same
//! profile, and its executable is located from cargo's build messages.

use std::{path::PathBuf, process::Command};

/// Builds `examples/load.rs` if needed and returns the path of its executable.
fn load_example() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args(["build", "--example", "load", "--message-format", "json"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    // This test's own executable lives in `<target>/<profile>/deps/`.
    let profile = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.file_name()?.to_owned()));
    if profile.is_some_and(|profile| profile == "release") {
        build.arg("--release");
    }
    let output = build.output().expect("cargo runs");
    assert!(
        output.status.success(),
        "building the load example failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    String::from_utf8(output.stdout)
        .expect("cargo prints UTF-8")
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .filter(|message| message["target"]["name"] == "load")
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .expect("cargo reports the load example's executable")
}

/// The first number on the report line that starts with `label`, within `section`.
fn figure(section: &str, label: &str) -> f64 {
    let line = section
        .lines()
        .find(|line| line.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{section}"));
    line[line.find(label).unwrap() + label.len()..]
        .split_whitespace()
        .next()
        .and_then(|word| word.trim_end_matches([',', 'x']).parse().ok())
        .unwrap_or_else(|| panic!("no number after {label:?} in {line:?}"))
}

#[test]
fn quick_run_reports_both_paths() {
    let output = Command::new(load_example())
        .arg("--quick")
        .env("RUST_LOG", "warn")
        .output()
        .expect("the load example starts");
    let report = String::from_utf8(output.stdout).expect("the report is UTF-8");
    assert!(
        output.status.success(),
        "the load example failed ({}):\n{report}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );

    let batched_at = report.find("batched (").expect("a batched section");
    let unary_at = report.find("unary (").expect("a unary section");
    let batched = &report[batched_at..unary_at];
    let unary = &report[unary_at..];

    for section in [batched, unary] {
        assert!(figure(section, "allocations/s") > 0.0, "{report}");
        let latency = section
            .lines()
            .find(|line| line.trim_start().starts_with("latency"))
            .expect("a latency line");
        for percentile in ["p50", "p90", "p99", "max"] {
            assert!(latency.contains(percentile), "{latency}");
        }
        // The no-op allocator never fails, and nothing times out in so short a run.
        assert!(
            section
                .lines()
                .any(|line| line.split_whitespace().eq(["errors", "none"])),
            "{section}"
        );
        assert!(section.contains("memory (RSS)"), "{section}");
    }
    assert!(figure(batched, "batches/s") > 0.0, "{report}");
    assert!(batched.contains("mean batch size"), "{batched}");
    assert!(figure(&report, "batched / unary        throughput") > 0.0);
    assert!(report.contains("peak memory (VmHWM)"), "{report}");
}
