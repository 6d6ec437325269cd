//! The `edge-client` binary as a user runs it, where no server is needed: its help. (The tests
//! against a real server are the edge package's end-to-end tests, which run this binary.)
//!
//! Having an integration test also makes every test build of the workspace build the
//! `edge-client` binary itself (cargo builds a package's binaries for its integration tests),
//! so that `cargo nextest run --workspace` leaves an up-to-date `target/debug/edge-client`
//! beside `edge` for those tests.

use std::process::Command;

#[test]
fn upload_help_lists_every_format() {
    let out = Command::new(env!("CARGO_BIN_EXE_edge-client"))
        .args(["upload", "--help"])
        .output()
        .expect("edge-client runs");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    // The option and its help, on its line or on the lines below it (clap picks by width).
    let start = help
        .find("--format")
        .unwrap_or_else(|| panic!("no --format in:\n{help}"));
    let rest = &help[start + 2..];
    let format_line = &rest[..rest.find("\n  -").unwrap_or(rest.len())];
    for format in edge_proto::Format::ALL {
        assert!(
            format_line.contains(format.as_str()),
            "`{format}` is missing from: {format_line}"
        );
    }
}
