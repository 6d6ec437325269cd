//! Probes for the tools some tests need, so that a test that cannot run says so (it is
//! ignored, with the reason, and counted as skipped) instead of passing without testing.
//! Under CI (`CI=true`) a missing tool fails the build instead.

use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    probe_pyjwt();
}

/// Whether CI runs this build (CI=true, as `.ci/run` and most CI systems set it).
fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// `cfg(has_pyjwt)`: a Python with PyJWT and `cryptography`, for the test that mints a token
/// with a standard JWT library. `EDGE_TEST_PYTHON` names the interpreter (default `python3`);
/// the test runs the same one (`EDGE_TEST_PYTHON_BIN`). The probe runs again when either
/// variable (or build.rs) changes: after installing PyJWT, `touch edge/build.rs`.
fn probe_pyjwt() {
    println!("cargo::rustc-check-cfg=cfg(has_pyjwt)");
    println!("cargo::rerun-if-env-changed=EDGE_TEST_PYTHON");
    println!("cargo::rerun-if-env-changed=CI");
    let python = std::env::var("EDGE_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    println!("cargo::rustc-env=EDGE_TEST_PYTHON_BIN={python}");
    let probe = Command::new(&python)
        .args(["-c", "import jwt, cryptography"])
        .output();
    let found = match &probe {
        Ok(out) => out.status.success(),
        Err(_) => false,
    };
    if found {
        println!("cargo::rustc-cfg=has_pyjwt");
        return;
    }
    if under_ci() {
        let why = match probe {
            Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            Err(e) => format!("cannot run it: {e}"),
        };
        panic!(
            "CI must run the PyJWT test, but `{python} -c \"import jwt, cryptography\"` failed: \
             {why}\n(pip install pyjwt cryptography; .ci/run does; EDGE_TEST_PYTHON names \
             another interpreter)"
        );
    }
    // Elsewhere the test is ignored with the reason (`cargo test` lists it as ignored).
}
