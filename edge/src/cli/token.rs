//! `edge token issue|revoke|list-revoked|keygen|keys`: minting tokens, the deny-list, keys.

use super::control::control;
use crate::auth::{self, KeyPair, SigningKey, Verifier};
use crate::config::Config;
use crate::control::Request;
use anyhow::bail;
use clap::Subcommand;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub(super) enum TokenCommand {
    /// Print a new token signed with the certs dir's key (generated if there is none).
    Issue {
        /// Who the token is for (its `sub`).
        #[arg(long)]
        sub: String,
        /// Space-separated scopes: `<task>:write` (e.g. ports:write), ports:read, jobs:read, admin.
        #[arg(long)]
        scope: String,
        /// How long it is valid, e.g. 1h, 30d.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// Its audience [default: the config's `auth.audience`].
        #[arg(long)]
        aud: Option<String>,
        /// The key to sign with (a `kid` of `[auth] keys`) [default: the first that can sign].
        #[arg(long)]
        kid: Option<String>,
    },
    /// Revoke a token: its id (`jti`) goes on the store's deny-list, checked on every job and
    /// request. Works whether or not `edge serve` runs on the data dir.
    Revoke {
        /// The token's `jti`, or the whole token (then its expiry is known and the entry is
        /// pruned once the token has expired).
        token_or_jti: String,
    },
    /// List revoked token ids.
    ListRevoked {
        /// Print JSON: [{"jti":..,"revoked_at":..,"expires":..}].
        #[arg(long)]
        json: bool,
    },
    /// Write a new Ed25519 key pair, PREFIX.pem (signing, 0600) and PREFIX.pub.pem, for
    /// `[auth] keys` (e.g. to rotate keys), and print its config entry.
    Keygen {
        /// Path prefix of the two files, e.g. /etc/edge/jwt-2027.
        prefix: PathBuf,
    },
    /// List the key ids the server trusts with this config.
    Keys,
}

pub(super) fn token(config: &Config, command: TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Issue {
            sub,
            scope,
            ttl,
            aud,
            kid,
        } => {
            if sub.trim().is_empty() {
                bail!("--sub must not be empty");
            }
            let key = SigningKey::load(&config.auth, &config.certs_dir, kid.as_deref())?;
            let token = key.issue(&config.auth, &sub, &scope, ttl, aud.as_deref())?;
            println!("{token}");
        }
        TokenCommand::Revoke { token_or_jti } => {
            let (jti, expires) = match auth::unverified_id(&token_or_jti) {
                Some(id) => id,
                None if token_or_jti.contains('.') => {
                    bail!("that looks like a token but has no readable `jti` claim")
                }
                None => (token_or_jti.trim().to_owned(), None),
            };
            let reply = control(
                config,
                &Request::Revoke {
                    jti: jti.clone(),
                    expires,
                },
            )?;
            if reply.added == Some(false) {
                println!("{jti} was already revoked");
            } else {
                println!("revoked {jti}");
            }
        }
        TokenCommand::ListRevoked { json } => {
            let reply = control(config, &Request::ListRevoked)?;
            let list = reply.revoked.unwrap_or_default();
            let mut out = std::io::stdout().lock();
            if json {
                writeln!(out, "{}", serde_json::to_string(&list)?)?;
            } else {
                for entry in &list {
                    let expires = entry
                        .expires
                        .map(|at| format!("expires {}", rfc3339(at)))
                        .unwrap_or_else(|| "expiry unknown".into());
                    writeln!(
                        out,
                        "{}\trevoked {}\t{expires}",
                        entry.jti,
                        rfc3339(entry.revoked_at)
                    )?;
                }
                if list.is_empty() {
                    eprintln!("no revoked tokens");
                }
            }
        }
        TokenCommand::Keygen { prefix } => {
            let pair = KeyPair::generate_at(&prefix)?;
            let public = format!("{}.pub.pem", prefix.display());
            eprintln!(
                "wrote {0}.pem (signing key, keep it secret) and {public}",
                prefix.display()
            );
            println!(
                "{{ kid = \"{}\", algorithm = \"EdDSA\", public_key = \"{public}\", private_key = \"{}.pem\" }}",
                pair.kid,
                prefix.display()
            );
            eprintln!(
                "add that line to `keys = [...]` in [auth] (the server needs only public_key)"
            );
        }
        TokenCommand::Keys => {
            let verifier = Verifier::load(&config.auth, &config.certs_dir)?;
            for kid in verifier.kids() {
                println!("{kid}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn rfc3339(secs: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(at).to_string()
}
