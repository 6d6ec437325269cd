//! The `edge` binary: a thin shell around [`edge::cli`].

use std::process::ExitCode;

fn main() -> ExitCode {
    match edge::cli::run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("edge: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
