//! The `edge` command line: `edge serve`, the admin commands, and `edge <task> get|list` to
//! read a plugin's items back from the store while the server is stopped.
//!
//! # Layout
//! - this module: the commands and their dispatch.
//! - `serve`: `edge serve`.
//! - `token`, `certs`, `config`: `edge token ...`, `edge certs ...`, `edge config check`.
//! - `user`: `edge user ...`, the users who sign in with a password.
//! - `store`: `edge store copy`, a redb store into a PostgreSQL one.
//! - `control`: `edge backup`, `edge status`, and the control socket every store command uses.
//! - `read`: `edge <task> get|list`, made from the plugins' read endpoints.

mod certs;
mod config;
mod control;
mod read;
mod serve;
mod store;
mod token;
mod user;

use crate::config::{Config, Overrides};
use certs::CertsCommand;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use config::ConfigCommand;
use edge_tasks::Registry;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use store::StoreCommand;
use token::TokenCommand;
use user::UserCommand;

/// edge: a TLS-first QUIC ingest server.
#[derive(Debug, Parser)]
#[command(name = "edge", version, about)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Settings every command shares.
#[derive(Debug, Args)]
struct GlobalArgs {
    /// Config file [default: config/edge.toml if it exists].
    #[arg(long, env = "EDGE_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Directory of the store (edge.redb) [default: data].
    #[arg(long, env = "EDGE_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Directory of the generated dev certificates [default: certs].
    #[arg(long, env = "EDGE_CERTS_DIR", global = true)]
    certs_dir: Option<PathBuf>,
    /// Log format: `human` (colours on a terminal) or `json` (one JSON object per line).
    /// RUST_LOG filters, e.g. RUST_LOG=edge=debug.
    #[arg(long, env = "EDGE_LOG_FORMAT", global = true, default_value = "human")]
    log_format: LogFormat,
}

impl GlobalArgs {
    /// The config overrides these settings (and a command's own) make.
    fn overrides(self, listen: Option<SocketAddr>, admin_listen: Option<SocketAddr>) -> Overrides {
        Overrides {
            config: self.config,
            listen,
            data_dir: self.data_dir,
            certs_dir: self.certs_dir,
            admin_listen,
        }
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// For people: one line per event, with colours on a terminal.
    Human,
    /// For machines: one JSON object per line, with the span fields (conn, job, sub).
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// UDP address to listen on [default: 127.0.0.1:4433].
        #[arg(long, env = "EDGE_LISTEN")]
        listen: Option<SocketAddr>,
        /// Serve /metrics and /healthz over plain HTTP on this TCP address, e.g. 127.0.0.1:9464
        /// [default: none; config `admin.listen`].
        #[arg(long)]
        admin_listen: Option<SocketAddr>,
    },
    /// Mint, revoke and manage tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage the users who sign in with a name and a password (the web page, POST /v1/login).
    #[command(subcommand)]
    User(UserCommand),
    /// Check the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Generate or show certificates.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Move the store's data: `edge store copy --from redb:data --to postgres://...`.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Write a consistent copy of the store (a snapshot) to PATH, a new file; works while
    /// `edge serve` runs on the data dir (through its control socket) or not.
    Backup {
        /// The backup file, e.g. /var/backups/edge-2026-11-27.redb.
        path: PathBuf,
    },
    /// Show the running server's uptime, jobs, rates and store size (through the control
    /// socket in the data dir).
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Parses the command line and runs the command.
pub fn run() -> anyhow::Result<ExitCode> {
    let registry = Registry::builtin();
    let matches = Cli::command()
        .subcommands(read::commands(&registry))
        .get_matches();
    if let Some((task, args)) = matches.subcommand() {
        if registry.find(task).is_some_and(|p| p.reads.is_some()) {
            let global = GlobalArgs::from_arg_matches(&matches)?;
            let config = Config::load(&global.overrides(None, None))?;
            return read::run(&config, &registry, task, args);
        }
    }
    let cli = Cli::from_arg_matches(&matches)?;
    let (listen, admin_listen) = match &cli.command {
        Command::Serve {
            listen,
            admin_listen,
        } => (*listen, *admin_listen),
        Command::Token(_)
        | Command::User(_)
        | Command::Config(_)
        | Command::Certs(_)
        | Command::Backup { .. }
        | Command::Store(_)
        | Command::Status { .. } => (None, None),
    };
    let log_format = cli.global.log_format;
    let config = Config::load(&cli.global.overrides(listen, admin_listen))?;
    match cli.command {
        Command::Serve { .. } => serve::serve(&config, log_format),
        Command::Token(command) => token::token(&config, &registry, command),
        Command::User(command) => user::user(&config, &registry, command),
        Command::Config(ConfigCommand::Check) => config::check_config(&config),
        Command::Status { json } => control::status(&config, json),
        Command::Certs(command) => certs::certs(&config, command),
        Command::Backup { path } => control::backup(&config, &path),
        Command::Store(command) => store::store(&config, &registry, command),
    }
}
