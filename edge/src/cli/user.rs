//! `edge user add|passwd|scope|rm|list`: people who sign in with a name and a password
//! (`POST /v1/login`, the web page). Passwords are read without echo on a terminal (twice),
//! else as the first line of standard input; they are hashed here (Argon2id) and only the
//! hash goes to the store, through a running server's control socket or directly.

use super::control::control;
use super::token::{check_scopes, rfc3339};
use crate::auth::password;
use crate::config::Config;
use crate::control::Request;
use anyhow::{bail, Context};
use clap::Subcommand;
use edge_tasks::Registry;
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub(super) enum UserCommand {
    /// Add a user; the password is asked for (or read from standard input).
    Add {
        /// The name they sign in with (the `sub` of their tokens).
        name: String,
        /// Space-separated scopes their tokens carry, as for `edge token issue`.
        #[arg(long)]
        scope: String,
        /// Add the user even with scopes this server does not know.
        #[arg(long)]
        allow_unknown_scope: bool,
    },
    /// Change a user's password; the tokens they hold end.
    Passwd {
        /// The user.
        name: String,
    },
    /// Change a user's scopes; the tokens they hold end.
    Scope {
        /// The user.
        name: String,
        /// The new space-separated scopes.
        scope: String,
        /// Accept scopes this server does not know.
        #[arg(long)]
        allow_unknown_scope: bool,
    },
    /// Remove a user; the tokens they hold end.
    Rm {
        /// The user.
        name: String,
    },
    /// List the users.
    List {
        /// Print JSON: [{"name","scope","created","changed"}] (times in seconds since the
        /// epoch).
        #[arg(long)]
        json: bool,
    },
}

pub(super) fn user(
    config: &Config,
    registry: &Registry,
    command: UserCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        UserCommand::Add {
            name,
            scope,
            allow_unknown_scope,
        } => {
            edge_tasks::users::check_name(&name).map_err(anyhow::Error::msg)?;
            if !allow_unknown_scope {
                check_scopes(&scope, registry)?;
            }
            let hash = password::hash(&read_password(&name)?)?;
            control(
                config,
                &Request::UserAdd {
                    name: name.clone(),
                    hash,
                    scope,
                },
            )?;
            println!("added {name}");
        }
        UserCommand::Passwd { name } => {
            let hash = password::hash(&read_password(&name)?)?;
            control(
                config,
                &Request::UserPasswd {
                    name: name.clone(),
                    hash,
                },
            )?;
            println!("changed the password of {name}; the tokens they held no longer work");
        }
        UserCommand::Scope {
            name,
            scope,
            allow_unknown_scope,
        } => {
            if !allow_unknown_scope {
                check_scopes(&scope, registry)?;
            }
            control(
                config,
                &Request::UserScope {
                    name: name.clone(),
                    scope,
                },
            )?;
            println!("changed the scopes of {name}; the tokens they held no longer work");
        }
        UserCommand::Rm { name } => {
            control(config, &Request::UserRemove { name: name.clone() })?;
            println!("removed {name}; the tokens they held no longer work");
        }
        UserCommand::List { json } => {
            let users = control(config, &Request::UserList)?
                .users
                .unwrap_or_default();
            let mut out = std::io::stdout().lock();
            if json {
                writeln!(out, "{}", serde_json::to_string(&users)?)?;
            } else {
                for user in &users {
                    writeln!(
                        out,
                        "{}\t{}\tadded {}\tpassword changed {}",
                        user.name,
                        user.scope,
                        rfc3339(user.created),
                        rfc3339(user.changed)
                    )?;
                }
                if users.is_empty() {
                    eprintln!("no users (edge user add NAME --scope \"...\")");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The new password: asked twice without echo on a terminal, else the first line of
/// standard input (without its line ending).
fn read_password(name: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        let password = line.trim_end_matches(['\n', '\r']).to_owned();
        if password.is_empty() {
            bail!("no password on standard input (one line: the password)");
        }
        return Ok(password);
    }
    let first = rpassword::prompt_password(format!("password for {name}: "))
        .context("cannot read the password")?;
    let again = rpassword::prompt_password("again: ").context("cannot read the password")?;
    if first != again {
        bail!("the two passwords differ; nothing changed");
    }
    Ok(first)
}
