//! Build-time probes for what the end-to-end tests need from the machine, so that tests that
//! cannot run here are skipped visibly (`#[ignore]`, listed as skipped) instead of passing.
//!
//! - `has_h3curl`: an HTTP/3 curl, from `EDGE_TEST_CURL` or `../shared/tools/h3curl` beside
//!   the repository; its path reaches the tests as `EDGE_TEST_CURL_PATH`. Under CI
//!   (`CI=true`) a missing curl fails the build.

use std::path::{Path, PathBuf};

fn main() {
    probe_h3curl();
}

/// Sets `cfg(has_h3curl)` and `EDGE_TEST_CURL_PATH` when an HTTP/3 curl is at hand.
fn probe_h3curl() {
    println!("cargo::rustc-check-cfg=cfg(has_h3curl)");
    println!("cargo::rerun-if-env-changed=EDGE_TEST_CURL");
    println!("cargo::rerun-if-env-changed=CI");
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
    // edge/ -> the repository -> its parent, where shared/ lies.
    let shared = manifest
        .as_deref()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .map(|parent| parent.join("shared/tools/h3curl"));
    if let Some(shared) = &shared {
        println!("cargo::rerun-if-changed={}", shared.display());
    }
    let curl = match std::env::var_os("EDGE_TEST_CURL") {
        Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
        _ => shared.filter(|path| path.is_file()),
    };
    match curl {
        Some(curl) => {
            println!("cargo::rustc-cfg=has_h3curl");
            println!("cargo::rustc-env=EDGE_TEST_CURL_PATH={}", curl.display());
        }
        None if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            panic!(
                "no HTTP/3 curl: CI must run the HTTP/3 tests. Set EDGE_TEST_CURL or provide ../shared/tools/h3curl"
            );
        }
        None => println!(
            "cargo::warning=no HTTP/3 curl (EDGE_TEST_CURL or ../shared/tools/h3curl): the HTTP/3 curl tests are ignored"
        ),
    }
}
