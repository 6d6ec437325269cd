//! `edge config check`: the effective configuration, validated.

use crate::auth::Verifier;
use crate::config::Config;
use anyhow::Context as _;
use clap::Subcommand;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub(super) enum ConfigCommand {
    /// Load the file, the EDGE_* environment and the flags, validate the result (and the
    /// configured certificate and token key files), and print the effective configuration.
    Check,
}

pub(super) fn check_config(config: &Config) -> anyhow::Result<ExitCode> {
    if config.tls.cert.is_some() {
        crate::tls::load_identity(&config.tls, &config.certs_dir)?;
    }
    if !config.auth.keys.is_empty() {
        Verifier::load(&config.auth, &config.certs_dir)?;
    }
    let mut shown = config.clone();
    shown.store.url = shown
        .store
        .url
        .as_deref()
        .map(crate::config::redact_password);
    print!(
        "{}",
        toml::to_string(&shown).context("cannot print the configuration")?
    );
    eprintln!("edge: the configuration is valid");
    Ok(ExitCode::SUCCESS)
}
