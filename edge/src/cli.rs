//! The `edge` command line: `edge serve`, and `edge ports get|list` to read the store back
//! while the server is stopped.

use crate::auth::{self, KeyPair, SigningKey, Verifier};
use crate::config::{Config, Overrides};
use crate::control::{Reply, Request};
use crate::server::Server;
use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use edge_tasks::ports::{self, ListQuery, Port};
use edge_tasks::store::StoreOptions;
use edge_tasks::Store;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::info;

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
    /// Read sea ports from the store (while the server is stopped).
    #[command(subcommand)]
    Ports(PortsCommand),
    /// Mint, revoke and manage tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Check the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Generate or show certificates.
    #[command(subcommand)]
    Certs(CertsCommand),
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

#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// (Re)generate the dev server certificate in the certs dir for localhost, 127.0.0.1, ::1,
    /// `tls.names` and every --name, signed by the dev CA (generated if missing, or anew with
    /// --new-ca). A running server picks the new certificate up within seconds.
    Dev {
        /// An extra DNS name or IP address (repeatable), e.g. --name edge.home.arpa.
        #[arg(long = "name")]
        names: Vec<String>,
        /// Also replace the CA (clients must then trust the new ca.pem).
        #[arg(long)]
        new_ca: bool,
    },
    /// Print the subject, names and expiry of the certificate the config uses (and of the
    /// dev CA, for dev certificates).
    Show,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Load the file, the EDGE_* environment and the flags, validate the result (and the
    /// configured certificate and token key files), and print the effective configuration.
    Check,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
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

#[derive(Debug, Subcommand)]
enum PortsCommand {
    /// Print one port as JSON.
    Get {
        /// The UN/LOCODE, e.g. AEAJM.
        code: String,
    },
    /// List ports in key order, one page at a time.
    List {
        /// Only ports of this country (e.g. "United Arab Emirates"; case-insensitive).
        #[arg(long)]
        country: Option<String>,
        /// Ports per page (1-1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Start after this key (the `next` of the previous page).
        #[arg(long)]
        after: Option<String>,
        /// Print the page as JSON: {"items":[{"key":..,"port":{..}}],"next":..}.
        #[arg(long)]
        json: bool,
    },
}

/// Parses the command line and runs the command.
pub fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let (listen, admin_listen) = match &cli.command {
        Command::Serve {
            listen,
            admin_listen,
        } => (*listen, *admin_listen),
        Command::Ports(_)
        | Command::Token(_)
        | Command::Config(_)
        | Command::Certs(_)
        | Command::Backup { .. }
        | Command::Status { .. } => (None, None),
    };
    let overrides = Overrides {
        config: cli.global.config,
        listen,
        data_dir: cli.global.data_dir,
        certs_dir: cli.global.certs_dir,
        admin_listen,
    };
    let config = Config::load(&overrides)?;
    match cli.command {
        Command::Serve { .. } => serve(&config, cli.global.log_format),
        Command::Ports(command) => read_ports(&config, command),
        Command::Token(command) => token(&config, command),
        Command::Config(ConfigCommand::Check) => check_config(&config),
        Command::Status { json } => status(&config, json),
        Command::Certs(command) => certs(&config, command),
        Command::Backup { path } => backup(&config, &path),
    }
}

fn backup(config: &Config, path: &Path) -> anyhow::Result<ExitCode> {
    if !config.store_path().is_file() {
        bail!(
            "no store at {}: nothing to back up (pass --data-dir)",
            config.store_path().display()
        );
    }
    // The server may run in another directory: it gets an absolute path.
    let path = std::path::absolute(path)
        .with_context(|| format!("cannot use the path {}", path.display()))?;
    let reply = control(config, &Request::Backup { path })?;
    let report = reply
        .backup
        .ok_or_else(|| anyhow::anyhow!("the backup did not say what it wrote"))?;
    println!(
        "wrote {} ({} entries, {:.1} MB)",
        report.path.display(),
        report.entries,
        report.bytes as f64 / 1e6
    );
    Ok(ExitCode::SUCCESS)
}

fn certs(config: &Config, command: CertsCommand) -> anyhow::Result<ExitCode> {
    let dev = crate::tls::DevPaths::new(&config.certs_dir);
    if let CertsCommand::Dev { names, new_ca } = command {
        if config.tls.cert.is_some() {
            eprintln!(
                "edge: note: the config uses {} (tls.cert), not the dev certificate",
                config
                    .tls
                    .cert
                    .as_deref()
                    .unwrap_or(Path::new(""))
                    .display()
            );
        }
        if new_ca {
            for path in [&dev.ca_cert, &dev.ca_key] {
                match std::fs::remove_file(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => bail!("cannot remove {}: {e}", path.display()),
                }
            }
        }
        let mut all = config.tls.names.clone();
        all.extend(names);
        crate::tls::generate_dev(&dev, &all)?;
        println!("wrote {}", dev.server_cert.display());
    }
    let mut out = std::io::stdout().lock();
    let (cert, ca) = match &config.tls.cert {
        Some(cert) => (cert.clone(), None),
        None => (dev.server_cert.clone(), Some(dev.ca_cert.clone())),
    };
    for (what, path) in std::iter::once(("certificate", cert)).chain(ca.map(|ca| ("dev CA", ca))) {
        let chain = crate::tls::load_chain(&path)?;
        let info = crate::certs::CertInfo::of(&chain[0])
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        writeln!(out, "{what}: {}", path.display())?;
        writeln!(out, "  subject  {}", info.subject)?;
        writeln!(out, "  issuer   {}", info.issuer)?;
        if !info.names.is_empty() {
            writeln!(out, "  names    {}", info.names.join(", "))?;
        }
        writeln!(out, "  expires  {} ({} days)", info.expires, info.days_left)?;
        if let Some(warning) = info.warning() {
            writeln!(out, "  warning  {warning}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn status(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let Some(reply) = crate::control::send(&config.data_dir, &Request::Status)? else {
        eprintln!(
            "edge: no server is running on {} (no answer on {})",
            config.data_dir.display(),
            crate::control::socket_path(&config.data_dir).display()
        );
        return Ok(ExitCode::from(1));
    };
    let Some(status) = reply.status else {
        bail!(
            "{}",
            reply
                .error
                .unwrap_or_else(|| "the server sent no status".into())
        );
    };
    if json {
        println!("{}", serde_json::to_string(&status)?);
        return Ok(ExitCode::SUCCESS);
    }
    let uptime = humantime::format_duration(Duration::from_secs(status.uptime_secs));
    println!("uptime        {uptime}");
    println!("connections   {}", status.connections_open);
    println!(
        "jobs running  {} ({} started)",
        status.jobs_running, status.jobs_started
    );
    println!(
        "committed     {} records, {:.0} records/s now",
        status.records_committed, status.records_per_sec
    );
    println!(
        "received      {:.1} MB, {:.2} MB/s now",
        status.bytes_received as f64 / 1e6,
        status.bytes_per_sec / 1e6
    );
    println!("store         {:.1} MB", status.store_bytes as f64 / 1e6);
    Ok(ExitCode::SUCCESS)
}

fn check_config(config: &Config) -> anyhow::Result<ExitCode> {
    if config.tls.cert.is_some() {
        crate::tls::load_identity(&config.tls, &config.certs_dir)?;
    }
    if !config.auth.keys.is_empty() {
        Verifier::load(&config.auth, &config.certs_dir)?;
    }
    print!(
        "{}",
        toml::to_string(config).context("cannot print the configuration")?
    );
    eprintln!("edge: the configuration is valid");
    Ok(ExitCode::SUCCESS)
}

fn token(config: &Config, command: TokenCommand) -> anyhow::Result<ExitCode> {
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

/// Carries out a store request through the running server's control socket, or on the store
/// directly when no server runs on the data dir.
fn control(config: &Config, request: &Request) -> anyhow::Result<Reply> {
    let reply = match crate::control::send(&config.data_dir, request)? {
        Some(reply) => reply,
        None => {
            std::fs::create_dir_all(&config.data_dir).with_context(|| {
                format!("cannot create the data dir {}", config.data_dir.display())
            })?;
            let store = Store::open(&config.store_path(), &StoreOptions::default()).map_err(
                |e| match e {
                    edge_tasks::StoreError::InUse { path } => anyhow::anyhow!(
                        "the store {} is in use, but no server answers on {}: stop the process \
                         holding the store and try again",
                        path.display(),
                        crate::control::socket_path(&config.data_dir).display()
                    ),
                    e => e.into(),
                },
            )?;
            crate::control::execute(&store, request)
        }
    };
    match reply.error {
        Some(error) if !reply.ok => bail!("{error}"),
        _ => Ok(reply),
    }
}

fn rfc3339(secs: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(at).to_string()
}

fn serve(config: &Config, log_format: LogFormat) -> anyhow::Result<ExitCode> {
    crate::logging::init(log_format == LogFormat::Json);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("edge")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let server = Server::bind(config)?;
        let addr = server.local_addr();
        if let Some(ca) = server.dev_ca() {
            info!(
                "using dev certificates; clients trust them with the CA {} (edge-client --ca {0})",
                ca.display()
            );
        }
        info!(store = %config.store_path().display(), "store open");
        if let Some(admin) = server.admin_addr() {
            info!("admin listener on http://{admin} (/metrics, /healthz)");
        }
        let shutdown = CancellationToken::new();
        tokio::spawn(on_signal(shutdown.clone()));
        tokio::spawn(reload_on_sighup(server.certificates()));
        announce(addr);
        server.run(shutdown).await;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The one line scripts wait for.
fn announce(addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "edge listening on {addr}");
    let _ = out.flush();
}

/// Cancels `shutdown` on Ctrl-C or SIGTERM.
async fn on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let ctrl_c = tokio::signal::ctrl_c();
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
    info!("signal received");
    shutdown.cancel();
}

/// Reloads the certificate on every SIGHUP.
async fn reload_on_sighup(certificates: std::sync::Arc<crate::certs::Certificates>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        return;
    };
    while hangups.recv().await.is_some() {
        certificates.reload_and_log("SIGHUP");
    }
}

fn read_ports(config: &Config, command: PortsCommand) -> anyhow::Result<ExitCode> {
    let path = config.store_path();
    if !path.is_file() {
        bail!(
            "no store at {}: run `edge serve` and upload ports first, or pass --data-dir",
            path.display()
        );
    }
    let store = Store::open(&path, &StoreOptions::default())?;
    let mut out = std::io::stdout().lock();
    match command {
        PortsCommand::Get { code } => match ports::get(&store, &code)? {
            Some(port) => {
                writeln!(out, "{}", serde_json::to_string_pretty(&port)?)?;
                Ok(ExitCode::SUCCESS)
            }
            None => {
                eprintln!("edge: no port `{code}` in {}", path.display());
                Ok(ExitCode::from(1))
            }
        },
        PortsCommand::List {
            country,
            limit,
            after,
            json,
        } => {
            let query = ListQuery {
                country: country.as_deref(),
                after: after.as_deref(),
                limit,
            };
            let page = ports::list(&store, &query)?;
            if json {
                let items: Vec<_> = page
                    .items
                    .iter()
                    .map(|(key, port)| serde_json::json!({"key": key, "port": port}))
                    .collect();
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"items": items, "next": page.next})
                )?;
            } else {
                for (key, port) in &page.items {
                    writeln!(out, "{}", port_line(key, port))?;
                }
                if let Some(next) = &page.next {
                    eprintln!("more: --after {next}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn port_line(key: &str, port: &Port) -> String {
    let country = port.country.as_deref().unwrap_or("-");
    match port.coordinates {
        Some([lon, lat]) => format!("{key}\t{}\t{country}\t{lon},{lat}", port.name),
        None => format!("{key}\t{}\t{country}\t-", port.name),
    }
}
