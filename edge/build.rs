//! Build-time probes for what some tests need from the machine, so that a test that cannot
//! run here is skipped visibly (`#[ignore]` with the reason, counted as skipped by nextest)
//! instead of passing without testing. With `EDGE_REQUIRE_TEST_TOOLS=1` (as `.ci/run` sets it)
//! a missing tool fails the build instead. The probes run again when their variables change;
//! after installing a tool, `touch edge/build.rs`.
//!
//! - `has_h3curl`: an HTTP/3 curl, from `EDGE_TEST_CURL` or `../shared/tools/h3curl` beside
//!   the repository; its path reaches the tests as `EDGE_TEST_CURL_PATH`.
//! - `has_pyjwt`: a Python with PyJWT and `cryptography` (`EDGE_TEST_PYTHON`, default
//!   `python3`; the tests run it as `EDGE_TEST_PYTHON_BIN`).
//! - `has_chromium`: Chromium and ChromeDriver that run (`EDGE_TEST_CHROMIUM`, default
//!   `/usr/bin/chromium`; `EDGE_TEST_CHROMEDRIVER`, default `chromedriver` on the `PATH`), for
//!   the web page's browser tests; their paths reach the tests as `EDGE_TEST_CHROMIUM_PATH`
//!   and `EDGE_TEST_CHROMEDRIVER_PATH`.
//! - `has_postgres`: a PostgreSQL server to test the PostgreSQL store against:
//!   `EDGE_TEST_PG_URL` (a superuser's URL; each test makes a database of its own there), or
//!   the server programs (`initdb`, `pg_ctl`: on the `PATH`, in `/usr/lib/postgresql/*/bin`
//!   or `EDGE_PG_BIN`) to start a throwaway server per test.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=EDGE_REQUIRE_TEST_TOOLS");
    probe_h3curl();
    probe_pyjwt();
    probe_chromium();
    probe_postgres();
}

/// Whether a missing test tool fails the build (CI), rather than skipping its tests.
fn required() -> bool {
    std::env::var("EDGE_REQUIRE_TEST_TOOLS").is_ok_and(|v| v == "1" || v == "true")
}

/// Sets `cfg(has_h3curl)` and `EDGE_TEST_CURL_PATH` when an HTTP/3 curl is at hand.
fn probe_h3curl() {
    println!("cargo::rustc-check-cfg=cfg(has_h3curl)");
    println!("cargo::rerun-if-env-changed=EDGE_TEST_CURL");
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
        None if required() => panic!(
            "no HTTP/3 curl, and EDGE_REQUIRE_TEST_TOOLS asks for the HTTP/3 tests: set \
             EDGE_TEST_CURL or provide ../shared/tools/h3curl"
        ),
        None => println!(
            "cargo::warning=no HTTP/3 curl (EDGE_TEST_CURL or ../shared/tools/h3curl): the HTTP/3 curl tests are skipped"
        ),
    }
}

/// Sets `cfg(has_pyjwt)` when a Python with PyJWT and `cryptography` is at hand, for the
/// test that mints a token with a standard JWT library.
fn probe_pyjwt() {
    println!("cargo::rustc-check-cfg=cfg(has_pyjwt)");
    println!("cargo::rerun-if-env-changed=EDGE_TEST_PYTHON");
    let python = std::env::var("EDGE_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    println!("cargo::rustc-env=EDGE_TEST_PYTHON_BIN={python}");
    let probe = Command::new(&python)
        .args(["-c", "import jwt, cryptography"])
        .output();
    if probe.as_ref().is_ok_and(|out| out.status.success()) {
        println!("cargo::rustc-cfg=has_pyjwt");
        return;
    }
    if required() {
        let why = match probe {
            Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            Err(e) => format!("cannot run it: {e}"),
        };
        panic!(
            "EDGE_REQUIRE_TEST_TOOLS asks for the PyJWT test, but `{python} -c \"import jwt, \
             cryptography\"` failed: {why}\n(pip install pyjwt cryptography; .ci/run does; \
             EDGE_TEST_PYTHON names another interpreter)"
        );
    }
    println!(
        "cargo::warning=no python3 with PyJWT and cryptography: the PyJWT token test is skipped"
    );
}

/// Sets `cfg(has_chromium)` when Chromium and ChromeDriver both run (`--version`), for the
/// tests that drive the web page in a real browser.
fn probe_chromium() {
    println!("cargo::rustc-check-cfg=cfg(has_chromium)");
    println!("cargo::rerun-if-env-changed=EDGE_TEST_CHROMIUM");
    println!("cargo::rerun-if-env-changed=EDGE_TEST_CHROMEDRIVER");
    let chosen = |var: &str, default: &str| match std::env::var(var) {
        Ok(path) if !path.is_empty() => path,
        _ => default.to_owned(),
    };
    let chromium = chosen("EDGE_TEST_CHROMIUM", "/usr/bin/chromium");
    let driver = chosen("EDGE_TEST_CHROMEDRIVER", "chromedriver");
    let runs = |program: &str| match Command::new(program).arg("--version").output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "`{program} --version` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run `{program}`: {e}")),
    };
    match runs(&chromium).and_then(|()| runs(&driver)) {
        Ok(()) => {
            println!("cargo::rustc-cfg=has_chromium");
            println!("cargo::rustc-env=EDGE_TEST_CHROMIUM_PATH={chromium}");
            println!("cargo::rustc-env=EDGE_TEST_CHROMEDRIVER_PATH={driver}");
        }
        Err(why) if required() => panic!(
            "EDGE_REQUIRE_TEST_TOOLS asks for the browser tests, but {why}\n(apt-get install \
             chromium chromium-driver; .ci/run does; EDGE_TEST_CHROMIUM and \
             EDGE_TEST_CHROMEDRIVER name others)"
        ),
        Err(why) => println!(
            "cargo::warning=no Chromium with ChromeDriver ({why}): the browser tests are skipped"
        ),
    }
}

/// Sets `cfg(has_postgres)` when the PostgreSQL store's tests can reach a server: one named
/// by `EDGE_TEST_PG_URL`, or one they start from the installed server programs.
fn probe_postgres() {
    println!("cargo::rustc-check-cfg=cfg(has_postgres)");
    println!("cargo::rerun-if-env-changed=EDGE_TEST_PG_URL");
    println!("cargo::rerun-if-env-changed=EDGE_PG_BIN");
    let url = std::env::var("EDGE_TEST_PG_URL").is_ok_and(|url| !url.is_empty());
    let programs = || {
        let mut dirs: Vec<PathBuf> = std::env::var_os("EDGE_PG_BIN")
            .map(PathBuf::from)
            .into_iter()
            .collect();
        if let Some(path) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&path));
        }
        if let Ok(versions) = std::fs::read_dir("/usr/lib/postgresql") {
            dirs.extend(
                versions
                    .filter_map(Result::ok)
                    .map(|v| v.path().join("bin")),
            );
        }
        dirs.iter()
            .any(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
    };
    if url || programs() {
        println!("cargo::rustc-cfg=has_postgres");
        return;
    }
    if required() {
        panic!(
            "EDGE_REQUIRE_TEST_TOOLS asks for the PostgreSQL store's tests, but there is no \
             EDGE_TEST_PG_URL and no initdb/pg_ctl\n(apt-get install postgresql; .ci/run does)"
        );
    }
    println!(
        "cargo::warning=no PostgreSQL (EDGE_TEST_PG_URL, or initdb and pg_ctl): the PostgreSQL store's tests are skipped"
    );
}
