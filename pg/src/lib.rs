//! A PostgreSQL connection pool for edge's store.
//!
//! Every connection lives on a small tokio runtime of this crate's own ([`Pg`] owns it), and
//! all work on the database runs there: synchronous code (a job's thread, the CLI) waits for it
//! with [`Pg::block`], and background loops run there ([`Pg::spawn`]). So a caller that blocks its own
//! runtime's thread while it waits (as the store's synchronous API does) never stalls the
//! connection it waits on.
//!
//! TLS goes through rustls with the system's root certificates plus the configured CA files;
//! the URL's `sslmode` decides whether it is used (`disable`, `prefer`: the default, `require`).
//! When the database cannot be reached, operations fail at once with
//! [`PgError::Unavailable`], and the pool connects again on the next operation once it is back.
//!
//! # Layout
//! - [`cluster`]: a throwaway PostgreSQL server for tests and benchmarks.
//! - [`Pg`]: the pool and its runtime; [`PgOptions`] how to open it.
//! - [`PgError`]: what failed, with the database named and no password shown.

pub mod cluster;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use rustls::RootCertStore;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use deadpool_postgres::Object as Client;
pub use tokio_postgres;

/// How to open the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgOptions {
    /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=...` (or libpq's `key=value` form).
    pub url: String,
    /// PEM files of certificate authorities to trust besides the system's (a private CA).
    pub ca_files: Vec<PathBuf>,
    /// Connections kept at most.
    pub pool_size: usize,
    /// How long connecting (and waiting for a free connection) may take before an operation
    /// fails as unavailable.
    pub connect_timeout: Duration,
}

impl PgOptions {
    /// Options with the defaults: 16 connections, 5 s to connect.
    pub fn new(url: impl Into<String>) -> PgOptions {
        PgOptions {
            url: url.into(),
            ca_files: Vec::new(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// What failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// The URL does not parse.
    #[error("the store URL is not a PostgreSQL connection string ({0}); write it as postgres://USER:PASSWORD@HOST:PORT/DATABASE")]
    Url(String),
    /// A CA file could not be read.
    #[error("cannot read the CA file {path} for the PostgreSQL store: {message}")]
    Ca {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The runtime could not start.
    #[error("cannot start the PostgreSQL store's threads: {0}")]
    Runtime(std::io::Error),
    /// The database cannot be reached (down, refusing, restarting, a lost connection).
    #[error("the PostgreSQL store {target} is unavailable: {message}")]
    Unavailable {
        /// The database, as `postgres://user@host:port/dbname`.
        target: String,
        /// Why.
        message: String,
    },
    /// A statement failed.
    #[error("PostgreSQL {operation} failed: {message}")]
    Query {
        /// What was being done.
        operation: &'static str,
        /// Why: the database's message (with its SQLSTATE), or the client's.
        message: String,
        /// The error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The pool is closing (the store was dropped while an operation waited).
    #[error("the PostgreSQL store is closing")]
    Closed,
}

impl PgError {
    /// Whether the database was away (rather than a statement wrong): an operation may work
    /// again later, unchanged.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, PgError::Unavailable { .. })
    }
}

/// The pool, its runtime, and the database's name for messages. Cheap to clone.
#[derive(Clone)]
pub struct Pg {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pg")
            .field("target", &self.inner.target)
            .finish_non_exhaustive()
    }
}

struct Inner {
    /// Whether the last attempt to reach the database worked.
    reachable: std::sync::atomic::AtomicBool,
    /// Whether a check of the database runs (see [`Pg::is_reachable`]).
    checking: std::sync::atomic::AtomicBool,
    pool: Pool,
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    target: String,
    runtime: Background,
}

/// The runtime, stopped without waiting when the last clone of [`Pg`] goes (which may be on
/// another runtime's thread, where waiting is not allowed).
struct Background(Option<tokio::runtime::Runtime>);

impl Background {
    fn handle(&self) -> &tokio::runtime::Handle {
        self.0
            .as_ref()
            .expect("the runtime is taken only when dropped")
            .handle()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl Pg {
    /// Opens the pool and checks that the database answers, so that a wrong URL or a database
    /// that is down is reported at start, naming the database.
    pub fn connect(options: &PgOptions) -> Result<Pg, PgError> {
        let mut config: tokio_postgres::Config = options
            .url
            .parse()
            .map_err(|e: tokio_postgres::Error| PgError::Url(e.to_string()))?;
        config
            .connect_timeout(options.connect_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        if config.get_application_name().is_none() {
            config.application_name("edge");
        }
        let target = describe(&config);
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_config(&options.ca_files)?);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("edge-pg")
            .enable_all()
            .build()
            .map_err(PgError::Runtime)?;
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(options.connect_timeout * 2))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|e| PgError::Url(e.to_string()))?;
        let pg = Pg {
            inner: Arc::new(Inner {
                reachable: std::sync::atomic::AtomicBool::new(true),
                checking: std::sync::atomic::AtomicBool::new(false),
                pool,
                config,
                tls,
                target,
                runtime: Background(Some(runtime)),
            }),
        };
        pg.block(|pg| async move {
            let client = pg.client().await?;
            client
                .simple_query("SELECT 1")
                .await
                .map_err(pg.query("the first query"))?;
            Ok::<(), PgError>(())
        })?;
        Ok(pg)
    }

    /// The database, as `postgres://user@host:port/dbname` (never the password).
    pub fn target(&self) -> &str {
        &self.inner.target
    }

    /// Runs `work` on the pool's runtime and waits for it, blocking this thread. For
    /// synchronous code: it may be called from any thread (another runtime's too: the work
    /// does not need that runtime to progress), but never from a future that `work` runs.
    pub fn block<T, E, F, Fut>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<PgError> + Send + 'static,
        F: FnOnce(Pg) -> Fut,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let (send, answer) = std::sync::mpsc::sync_channel(1);
        let future = work(self.clone());
        self.inner.runtime.handle().spawn(async move {
            let _ = send.send(future.await);
        });
        answer.recv().unwrap_or(Err(E::from(PgError::Closed)))
    }

    /// Starts `work` on the pool's runtime without waiting for it (a background loop).
    pub fn spawn<F>(&self, work: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.inner.runtime.handle().spawn(work)
    }

    /// A connection from the pool. Only inside the futures given to [`Pg::block`] and
    /// [`Pg::spawn`], so that every connection lives on the pool's runtime.
    pub async fn client(&self) -> Result<Client, PgError> {
        let got = self
            .inner
            .pool
            .get()
            .await
            .map_err(|e| PgError::Unavailable {
                target: self.inner.target.clone(),
                message: pool_reason(&e),
            });
        self.set_reachable(got.is_ok());
        got
    }

    /// Whether the database answered the last time it was asked (for health checks; it never
    /// waits). While it is not, a check runs in the background (one at a time) so that the
    /// answer turns once the database is back, even with no work asking for it.
    pub fn is_reachable(&self) -> bool {
        use std::sync::atomic::Ordering;
        let reachable = self.inner.reachable.load(Ordering::Relaxed);
        if !reachable && !self.inner.checking.swap(true, Ordering::AcqRel) {
            let pg = self.clone();
            self.spawn(async move {
                if let Ok(client) = pg.client().await {
                    let answered = client.simple_query("SELECT 1").await;
                    pg.set_reachable(answered.is_ok());
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                pg.inner.checking.store(false, Ordering::Release);
            });
        }
        reachable
    }

    fn set_reachable(&self, reachable: bool) {
        self.inner
            .reachable
            .store(reachable, std::sync::atomic::Ordering::Relaxed);
    }

    /// A connection of its own, outside the pool, with its stream of asynchronous messages
    /// (`LISTEN`'s notifications): the connection task is spawned on the pool's runtime and
    /// forwards each notification to `notices`; it ends when the client is dropped or the
    /// connection is lost (then `notices` is closed). Only inside the pool's futures.
    pub async fn listener(
        &self,
        notices: tokio::sync::mpsc::Sender<tokio_postgres::Notification>,
    ) -> Result<tokio_postgres::Client, PgError> {
        let (client, mut connection) = self
            .inner
            .config
            .connect(self.inner.tls.clone())
            .await
            .map_err(|e| PgError::Unavailable {
                target: self.inner.target.clone(),
                message: with_causes(&e),
            })?;
        tokio::spawn(async move {
            loop {
                let message = std::future::poll_fn(|cx| connection.poll_message(cx)).await;
                match message {
                    Some(Ok(tokio_postgres::AsyncMessage::Notification(notice))) => {
                        if notices.send(notice).await.is_err() {
                            return;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::debug!("the PostgreSQL listener's connection ended: {e}");
                        return;
                    }
                    None => return,
                }
            }
        });
        Ok(client)
    }

    /// Maps a statement's error: the database being away is [`PgError::Unavailable`], any
    /// other failure [`PgError::Query`] with `operation`.
    pub fn query(&self, operation: &'static str) -> impl Fn(tokio_postgres::Error) -> PgError {
        let target = self.inner.target.clone();
        let pg = self.clone();
        move |source| {
            if connection_lost(&source) {
                pg.set_reachable(false);
                PgError::Unavailable {
                    target: target.clone(),
                    message: with_causes(&source),
                }
            } else {
                let message = match source.as_db_error() {
                    Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
                    None => with_causes(&source),
                };
                PgError::Query {
                    operation,
                    message,
                    source,
                }
            }
        }
    }
}

/// Whether an error means the connection or the server went away, rather than a statement
/// the server refused.
fn connection_lost(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    match error.code() {
        // Class 08: connection exception; 57P01-03: the server shuts down or starts.
        Some(code) => {
            let code = code.code();
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
        }
        // No SQLSTATE: an I/O error or the connection's end.
        None => std::error::Error::source(error)
            .is_some_and(|source| source.downcast_ref::<std::io::Error>().is_some()),
    }
}

/// An error with its causes: `error performing TLS handshake: invalid peer certificate:
/// UnknownIssuer`.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn pool_reason(error: &deadpool_postgres::PoolError) -> String {
    match error {
        deadpool_postgres::PoolError::Backend(e) => with_causes(e),
        deadpool_postgres::PoolError::Timeout(_) => {
            "no connection within the connect timeout (is PostgreSQL running and reachable?)".into()
        }
        other => other.to_string(),
    }
}

/// `postgres://user@host:port/dbname`, for messages.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(name)) => name.clone(),
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("");
    let db = config.get_dbname().unwrap_or(user);
    let at = if user.is_empty() {
        String::new()
    } else {
        format!("{user}@")
    };
    format!("postgres://{at}{host}:{port}/{db}")
}

/// rustls with ring, the system's roots and `ca_files`.
fn client_config(ca_files: &[PathBuf]) -> Result<rustls::ClientConfig, PgError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::debug!("reading the system's root certificates: {error}");
    }
    roots.add_parsable_certificates(native.certs);
    for path in ca_files {
        let ca = |message: String| PgError::Ca {
            path: path.clone(),
            message,
        };
        let pem = std::fs::read(path).map_err(|e| ca(e.to_string()))?;
        let mut found = 0;
        for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
            let cert: rustls_pki_types::CertificateDer<'static> =
                cert.map_err(|e| ca(e.to_string()))?;
            roots.add(cert).map_err(|e| ca(e.to_string()))?;
            found += 1;
        }
        if found == 0 {
            return Err(ca("no PEM certificate in it".into()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_names_the_database_but_never_the_password() {
        let config: tokio_postgres::Config = "postgres://edge:secret@db.example:6543/ingest"
            .parse()
            .unwrap();
        assert_eq!(describe(&config), "postgres://edge@db.example:6543/ingest");
    }

    #[test]
    fn a_url_that_is_not_postgres_is_refused_with_the_form_to_use() {
        let err = Pg::connect(&PgOptions::new("postgres://a:b@host:notaport/db")).unwrap_err();
        assert!(matches!(err, PgError::Url(_)), "{err}");
        assert!(err.to_string().contains("postgres://USER"), "{err}");
    }

    #[test]
    fn a_database_that_is_not_there_is_unavailable_and_named_at_once() {
        // A port nothing listens on: bound, then closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut options = PgOptions::new(format!(
            "postgres://edge@127.0.0.1:{port}/edge?sslmode=disable"
        ));
        options.connect_timeout = Duration::from_secs(2);
        let started = std::time::Instant::now();
        let err = Pg::connect(&options).unwrap_err();
        assert!(err.is_unavailable(), "{err}");
        assert!(
            err.to_string()
                .contains(&format!("postgres://edge@127.0.0.1:{port}/edge")),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
