//! `edge token issue|revoke|list-revoked|keygen|keys`: minting tokens, the deny-list, keys.

use super::control::control;
use crate::auth::{self, Issued, KeyPair, SigningKey, Verifier};
use crate::config::Config;
use crate::control::Request;
use anyhow::bail;
use clap::Subcommand;
use edge_tasks::Registry;
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
        /// A scope no task (and no endpoint) checks is refused, naming the known ones.
        #[arg(long)]
        scope: String,
        /// Mint the token even with scopes this server does not know (e.g. for a task another
        /// server runs).
        #[arg(long)]
        allow_unknown_scope: bool,
        /// How long it is valid, e.g. 1h, 30d.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// Its audience [default: the config's `auth.audience`].
        #[arg(long)]
        aud: Option<String>,
        /// The key to sign with (a `kid` of `[auth] keys`) [default: the first that can sign].
        #[arg(long)]
        kid: Option<String>,
        /// Print JSON: {"token", "jti", "sub", "scopes", "aud", "kid", "exp", "expires"}
        /// (`exp` in seconds since the epoch, `expires` in RFC 3339).
        #[arg(long)]
        json: bool,
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

pub(super) fn token(
    config: &Config,
    registry: &Registry,
    command: TokenCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Issue {
            sub,
            scope,
            allow_unknown_scope,
            ttl,
            aud,
            kid,
            json,
        } => {
            if sub.trim().is_empty() {
                bail!("--sub must not be empty");
            }
            if !allow_unknown_scope {
                check_scopes(&scope, registry)?;
            }
            let key = SigningKey::load(&config.auth, &config.certs_dir, kid.as_deref())?;
            let issued = key.mint(&config.auth, &sub, &scope, ttl, aud.as_deref())?;
            if json {
                println!("{}", issued_json(&issued));
            } else {
                println!("{}", issued.token);
            }
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

/// Refuses a scope that no plugin of `registry` and no endpoint checks (a typo such as
/// `port:write` would make a token that allows nothing), naming the known ones.
pub(super) fn check_scopes(scope: &str, registry: &Registry) -> anyhow::Result<()> {
    let known = auth::known_scopes(registry);
    let unknown: Vec<&str> = scope
        .split_whitespace()
        .filter(|s| !known.iter().any(|k| k == s))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    let quoted = |list: &mut dyn Iterator<Item = &str>| {
        list.map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    bail!(
        "unknown scope{} {}: this server knows {} (pass --allow-unknown-scope to mint it anyway)",
        if unknown.len() == 1 { "" } else { "s" },
        quoted(&mut unknown.iter().copied()),
        quoted(&mut known.iter().map(String::as_str)),
    )
}

/// `edge token issue --json`: the token and what it says, for scripts and for a note of who
/// got which `jti`.
fn issued_json(issued: &Issued) -> serde_json::Value {
    let claims = &issued.claims;
    serde_json::json!({
        "token": issued.token,
        "jti": claims.jti,
        "sub": claims.sub,
        "scopes": claims.scope.split_whitespace().collect::<Vec<_>>(),
        "aud": claims.aud,
        "kid": issued.kid,
        "exp": claims.exp,
        "expires": rfc3339(claims.exp),
    })
}

pub(super) fn rfc3339(secs: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(at).to_string()
}
