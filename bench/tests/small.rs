//! CI runs the benchmark in its small mode, so that it keeps working: every stage must run
//! and check its record counts (a broken stage exits 1). The figures of a debug build on a
//! busy CI machine mean nothing and are not asserted; docs/BENCHMARKS.md has the real ones.

#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn the_small_benchmark_runs_every_stage() {
    let bench = env!("CARGO_BIN_EXE_edge-bench");
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let out = Command::new(bench)
        .args(["run", "--small", "--no-build", "--order", "sorted"])
        .args([
            "--records",
            "5000",
            "--reused-jobs",
            "200",
            "--fresh-jobs",
            "20",
        ])
        .arg("--json-out")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "edge-bench failed:\n{stdout}\n{stderr}"
    );
    for row in ["decode only", "store only", "pipeline", "edge/1"] {
        assert!(stdout.contains(row), "no `{row}` row in:\n{stdout}");
    }
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(report.is_object(), "{report}");
}
