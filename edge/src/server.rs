//! The QUIC endpoint: binds the UDP port, accepts connections, dispatches them by ALPN, and
//! shuts everything down through one cancellation token.

use crate::auth::{self, DenyList, KeyError, Verifier};
use crate::config::Config;
use crate::connections::{self, Admit, Connections};
use crate::limits::Limits;
use crate::service::Service;
use crate::shutdown::Shutdown;
use crate::tls::{self, TlsError};
use edge_proto::{AppCode, ALPN_EDGE, ALPN_H3};
use edge_tasks::pipeline::{CommitObserver, Settings};
use edge_tasks::{OpenError, Registry, StoreError};
use quinn::crypto::rustls::{HandshakeData, QuicServerConfig};
use quinn::{Connection, Endpoint, Incoming, VarInt};
use std::future::Future as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

/// How long shutdown waits for running jobs to commit and tell their clients.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long shutdown waits for closed connections to be acknowledged.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the server could not start. The messages leave the OS error out: it is the `source`,
/// which `edge` prints after them (`{:#}`), once.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The certificate could not be loaded or generated.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The store could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The store failed while starting up.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The token keys could not be loaded or generated.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The data dir could not be created.
    #[error("cannot create the data dir {path}")]
    DataDir {
        /// The dir.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The QUIC stateless-reset key could not be read or made.
    #[error(transparent)]
    ResetKey(#[from] crate::reset_key::ResetKeyError),
    /// `[sources]` cannot be used (a CA file...).
    #[error("{0}")]
    Sources(String),
    /// A folder of `sources.dirs` is not there.
    #[error("sources.dirs: {path} is not a folder this server can open (create it, or remove it from the config)")]
    SourceDir {
        /// The folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TCP port (HTTP/1.1 and HTTP/2) could not be bound beside the UDP one.
    #[error("cannot listen on TCP {addr} beside QUIC (free the port, or set tcp.enabled = false)")]
    Tcp {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The admin listener's TCP port could not be bound.
    #[error("cannot listen for admin requests on {addr} (set admin.listen / --admin-listen)")]
    Admin {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The UDP socket could not be bound.
    #[error("cannot listen on {addr} (is another server using the port? set --listen)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A bound, ready server.
#[derive(Debug)]
pub struct Server {
    /// One endpoint per address: `listen`, and the other loopback address when `listen` is
    /// a loopback one.
    endpoints: Vec<Endpoint>,
    service: Arc<Service>,
    connections: Arc<Connections>,
    control: Option<crate::control::Listener>,
    admin: Option<crate::admin::Admin>,
    admin_addr: Option<SocketAddr>,
    /// HTTP/1.1 and HTTP/2 over TCP + TLS on the same port, unless `tcp.enabled` is off.
    tcp: Option<crate::tcp::TcpServer>,
    dev_ca: Option<PathBuf>,
    retention: edge_tasks::history::Retention,
    /// `auth.leeway_secs`: revoked tokens leave the deny-list this long after they expire.
    leeway: u64,
}

impl Server {
    /// Opens the store, loads (or generates) the certificate and binds the UDP port, with the
    /// built-in task plugins. Must be called inside a tokio runtime.
    pub fn bind(config: &Config) -> Result<Server, ServeError> {
        Server::bind_with(config, Registry::builtin())
    }

    /// [`Server::bind`] with the task plugins of `registry` (the built-in ones and more).
    pub fn bind_with(config: &Config, registry: Registry) -> Result<Server, ServeError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| ServeError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        for dir in &config.sources.dirs {
            std::fs::read_dir(&dir.path).map_err(|source| ServeError::SourceDir {
                path: dir.path.clone(),
                source,
            })?;
        }
        let store = config.open_store(registry)?;
        info!(store = %store.describe(), node = store.node(), "store open");
        let interrupted = edge_tasks::history::mark_interrupted(&store)?;
        if interrupted > 0 {
            warn!(
                interrupted,
                "jobs cut off when the server last stopped are marked interrupted in the history"
            );
        }
        let control = match crate::control::Listener::bind(&config.data_dir) {
            Ok(listener) => Some(listener),
            Err(e) => {
                warn!(
                    "cannot open the control socket in {}: {e}; `edge token revoke` will need \
                     the server stopped",
                    config.data_dir.display()
                );
                None
            }
        };
        let admin = match config.admin.listen {
            Some(addr) => Some(
                crate::admin::Admin::bind(addr, config.admin.max_connections)
                    .map_err(|source| ServeError::Admin { addr, source })?,
            ),
            None => None,
        };
        let admin_addr = admin.as_ref().and_then(|a| a.local_addr().ok());
        let certificates = crate::certs::Certificates::load(&config.tls, &config.certs_dir)?;
        let info = certificates.info();
        info!(subject = %info.subject, names = ?info.names, expires = %info.expires, "certificate loaded");
        if let Some(warning) = info.warning() {
            warn!("{warning}");
        }
        let auth = Verifier::load(&config.auth, &config.certs_dir)?;
        info!(keys = ?auth.kids(), "token keys loaded");
        let pruned = edge_tasks::revocations::prune(
            &store,
            auth::unix_now().saturating_sub(config.auth.leeway_secs),
        )?;
        if pruned > 0 {
            info!(
                pruned,
                "revoked tokens that have expired were removed from the deny-list"
            );
        }
        let revoked = Arc::new(DenyList::load(&store)?);
        let dev_ca = certificates.dev_ca();
        let crypto = tls::server_crypto(certificates.clone(), &[ALPN_EDGE, ALPN_H3])?;
        let crypto = QuicServerConfig::try_from(crypto)
            .expect("a TLS 1.3 config with the ring provider always suits QUIC");
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server_config.transport_config(Arc::new(transport(config)));
        // TCP takes the same port as UDP: with an ephemeral port, a port free on UDP but
        // taken on TCP is given up and another one tried.
        let (sockets, tcp_listener) = bind_both(config)?;
        let mut endpoints = Vec::new();
        // Kept in the data dir, so that clients of a restarted server believe its resets.
        let endpoint_config = crate::reset_key::endpoint_config(&config.data_dir)?;
        for socket in sockets {
            let addr = socket.local_addr().unwrap_or(config.listen);
            let endpoint = Endpoint::new(
                endpoint_config.clone(),
                Some(server_config.clone()),
                socket,
                Arc::new(quinn::TokioRuntime),
            )
            .map_err(|source| ServeError::Bind { addr, source })?;
            endpoints.push(endpoint);
        }
        let connections = Connections::new(&config.transport);
        let window_budget = Arc::new(crate::window::Budget::new(
            config.transport.receive_window_budget,
        ));
        let metrics = Arc::new(crate::metrics::Metrics::new(
            config.store_path(),
            connections.clone(),
            window_budget.clone(),
        ));
        let service = Service {
            store,
            task_limits: config.task_limits(),
            auth,
            revoked,
            limits: Limits::new(config.limits.clone()),
            job_slots: Semaphore::new(config.jobs.max_running),
            settings: settings(config, &metrics),
            header_timeout: Duration::from_secs(config.jobs.header_timeout_secs),
            auth_timeout: Duration::from_secs(config.auth.auth_timeout_secs),
            grace: Duration::from_secs(config.jobs.shutdown_grace_secs),
            metrics,
            certificates,
            pace: crate::jobs::Pace {
                min_bytes_per_sec: config.jobs.min_upload_bytes_per_sec,
                window: Duration::from_secs(config.jobs.upload_rate_window_secs),
            },
            window_bounds: crate::window::Bounds {
                floor: config.transport.connection_receive_window,
                ceiling: config.transport.connection_receive_window_max,
            },
            window_budget,
            feeds: Arc::new(crate::watch::Feeds::default()),
            login: login_desk(config),
            sources: crate::sources::Sources::new(&config.sources).map_err(ServeError::Sources)?,
            attached: Arc::default(),
            resume_window: config.resume_window(),
        };
        let tcp = match tcp_listener {
            Some(listener) => {
                let port = match config.tcp.public_port {
                    0 => endpoints
                        .first()
                        .and_then(|e| e.local_addr().ok())
                        .map_or(config.listen.port(), |a| a.port()),
                    port => port,
                };
                let tls = crate::tcp::tls_config(service.certificates.clone())
                    .map_err(|e| ServeError::Tls(TlsError::from(e)))?;
                Some(crate::tcp::TcpServer {
                    listener: tokio::net::TcpListener::from_std(listener).map_err(|source| {
                        ServeError::Tcp {
                            addr: config.listen,
                            source,
                        }
                    })?,
                    tls: Arc::new(tls),
                    alt_svc: http::HeaderValue::from_str(&format!("h3=\":{port}\"; ma=86400"))
                        .expect("a port makes a valid header value"),
                })
            }
            None => None,
        };
        Ok(Server {
            endpoints,
            service: Arc::new(service),
            connections,
            control,
            admin,
            admin_addr,
            tcp,
            dev_ca,
            retention: edge_tasks::history::Retention::new(
                config.jobs.history_keep_days,
                config.jobs.history_keep_count,
            ),
            leeway: config.auth.leeway_secs,
        })
    }

    /// The address the server listens on (with the real port when bound to port 0): the
    /// configured `listen`.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addrs()[0]
    }

    /// Every address the server listens on: `listen` first, then the other loopback address
    /// when `listen` is a loopback one (and the machine has it).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.endpoints
            .iter()
            .map(|endpoint| {
                endpoint
                    .local_addr()
                    .expect("a bound endpoint always has a local address")
            })
            .collect()
    }

    /// The server certificate, to reload it (SIGHUP).
    pub fn certificates(&self) -> Arc<crate::certs::Certificates> {
        self.service.certificates.clone()
    }

    /// The admin listener's address, when there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The dev CA clients must trust, when the server uses generated certificates.
    pub fn dev_ca(&self) -> Option<&PathBuf> {
        self.dev_ca.as_ref()
    }

    /// Serves until `shutdown` is cancelled, then drains: no new connections or jobs (HTTP/3
    /// GOAWAY; running `edge/1` jobs get a `draining` event), running jobs have the grace
    /// period (`jobs.shutdown_grace_secs`) to finish; those still running then commit what
    /// they have and end `failed` with `shutdown`. Every connection is closed with
    /// [`AppCode::Shutdown`] before it returns.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let shutdown = Shutdown::new(shutdown);
        let helpers = TaskTracker::new();
        if let Some(control) = self.control.take() {
            let store = self.service.store.clone();
            let metrics = self.service.metrics.clone();
            let revoked = self.service.revoked.clone();
            helpers.spawn(control.serve(store, metrics, revoked, shutdown.clone()));
        }
        helpers.spawn(edge_tasks::history::prune_periodically(
            self.service.store.clone(),
            self.retention,
            shutdown.draining_token().cancelled_owned(),
        ));
        helpers.spawn(crate::prune::prune_plugins_periodically(
            self.service.context(),
            shutdown.draining_token(),
        ));
        helpers.spawn(crate::prune::expire_cursors_periodically(
            self.service.store.clone(),
            self.service.resume_window,
            shutdown.draining_token(),
        ));
        helpers.spawn(crate::metrics::keep_database_size(
            self.service.metrics.clone(),
            self.service.store.clone(),
            shutdown.clone(),
        ));
        helpers.spawn(crate::auth::follow_deny_list(
            self.service.revoked.clone(),
            self.service.store.clone(),
            shutdown.clone(),
        ));
        helpers.spawn(crate::auth::keep_deny_list(
            self.service.revoked.clone(),
            self.service.store.clone(),
            self.leeway,
            shutdown.clone(),
        ));
        let admin = self.admin.take().map(|admin| {
            let service = self.service.clone();
            tokio::spawn(admin.serve(service, shutdown.clone()))
        });

        let watcher = tokio::spawn(watch_certificates(self.service.certificates.clone()));
        let connections = TaskTracker::new();
        // Watched folders' and feeds' jobs drain like the others.
        connections.spawn(crate::sources::watch::watch_folders(
            self.service.clone(),
            shutdown.clone(),
        ));
        connections.spawn(crate::sources::feeds::run_feeds(
            self.service.clone(),
            self.service.sources.feeds.clone(),
            shutdown.clone(),
        ));
        // TCP's requests drain like QUIC's: its task ends once their jobs have.
        if let Some(tcp) = self.tcp.take() {
            let caps = self.connections.clone();
            connections.spawn(tcp.serve(self.service.clone(), caps, shutdown.clone()));
        }
        loop {
            let incoming = tokio::select! {
                _ = shutdown.draining() => break,
                incoming = accept_any(&self.endpoints) => incoming,
            };
            let Some(incoming) = incoming else { break };
            let remote = incoming.remote_address();
            let slot = match self.connections.admit(&incoming) {
                Admit::Accept(slot) => slot,
                Admit::Retry => {
                    if let Err(e) = incoming.retry() {
                        e.into_incoming().refuse();
                    }
                    continue;
                }
                Admit::Refuse(reason) => {
                    debug!(%remote, "connection refused: {reason}");
                    incoming.refuse();
                    continue;
                }
            };
            let handshake = self.connections.handshake();
            let span = tracing::info_span!("conn", %remote);
            let service = self.service.clone();
            let accepted = accept(incoming, handshake, service, shutdown.clone());
            connections.spawn(
                async move {
                    accepted.await;
                    drop(slot);
                }
                .instrument(span),
            );
        }
        let grace = self.service.grace;
        info!("shutting down: no new connections or jobs; running jobs have {grace:?} to finish");
        for endpoint in &self.endpoints {
            endpoint.set_server_config(None);
        }
        connections.close();
        if tokio::time::timeout(grace, connections.wait())
            .await
            .is_err()
        {
            warn!("jobs still running after {grace:?}: they commit what they have and end");
            shutdown.abort();
            if tokio::time::timeout(DRAIN_TIMEOUT, connections.wait())
                .await
                .is_err()
            {
                warn!("jobs did not end within {DRAIN_TIMEOUT:?}; closing connections anyway");
            }
        }
        for endpoint in &self.endpoints {
            endpoint.close(AppCode::Shutdown.into_varint(), b"server shutting down");
        }
        let idle = async {
            for endpoint in &self.endpoints {
                endpoint.wait_idle().await;
            }
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, idle).await;
        if let Some(admin) = admin {
            admin.abort();
            let _ = admin.await;
        }
        watcher.abort();
        // The control socket's task holds the store: when `run` returns, the store is closed
        // (a caller may open it at once, as `edge ports` or the tests do).
        helpers.close();
        helpers.wait().await;
        info!("stopped");
    }
}

/// The next connection attempt on any of `endpoints`; `None` once one of them is closed.
async fn accept_any(endpoints: &[Endpoint]) -> Option<Incoming> {
    let mut accepts: Vec<_> = endpoints
        .iter()
        .map(|endpoint| Box::pin(endpoint.accept()))
        .collect();
    std::future::poll_fn(|cx| {
        for accept in &mut accepts {
            if let std::task::Poll::Ready(incoming) = accept.as_mut().poll(cx) {
                return std::task::Poll::Ready(incoming);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// How often the certificate files are checked for changes (renewals).
const CERT_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// Reloads the certificate when its files change, and repeats an expiry warning daily.
async fn watch_certificates(certificates: Arc<crate::certs::Certificates>) {
    let mut warned = std::time::Instant::now();
    loop {
        tokio::time::sleep(CERT_CHECK_INTERVAL).await;
        if certificates.changed_on_disk() {
            certificates.reload_and_log("the files changed");
        }
        if warned.elapsed() >= Duration::from_secs(24 * 3600) {
            warned = std::time::Instant::now();
            if let Some(warning) = certificates.info().warning() {
                warn!("{warning}");
            }
        }
    }
}

/// Extension to turn our application codes into QUIC varints.
pub(crate) trait IntoVarInt {
    /// The code as a QUIC varint.
    fn into_varint(self) -> VarInt;
}

impl IntoVarInt for AppCode {
    fn into_varint(self) -> VarInt {
        VarInt::from_u32(self.value())
    }
}

async fn accept(
    incoming: Incoming,
    handshake: connections::Handshake,
    service: Arc<Service>,
    shutdown: Shutdown,
) {
    let connection = match incoming.await {
        Ok(connection) => connection,
        Err(e) => {
            debug!("handshake failed: {e}");
            return;
        }
    };
    drop(handshake);
    let authorised = CancellationToken::new();
    tokio::spawn(connections::close_unless_authorised(
        connection.clone(),
        authorised.clone(),
        service.auth_timeout,
    ));
    let window = crate::window::ConnectionWindow::new(
        connection.clone(),
        service.window_bounds,
        service.window_budget.clone(),
    );
    tokio::spawn(window.clone().watch().in_current_span());
    match alpn(&connection).as_deref() {
        Some(ALPN_EDGE) => {
            crate::edge1::serve(connection, service, window, authorised, shutdown).await
        }
        Some(ALPN_H3) => {
            crate::http3::serve(connection, service, window, authorised, shutdown).await
        }
        _ => connection.close(AppCode::ProtocolError.into_varint(), b"unsupported ALPN"),
    }
}

fn alpn(connection: &Connection) -> Option<Vec<u8>> {
    let data = connection.handshake_data()?;
    data.downcast::<HandshakeData>().ok()?.protocol
}

/// How many times a pair of loopback sockets on an ephemeral port is tried when the port the
/// first got is taken on the other address.
const EPHEMERAL_PAIR_TRIES: usize = 8;

/// The other loopback address on the same port, for a loopback `addr`: a client told
/// `localhost` may try `::1` or `127.0.0.1` first (curl tries `::1`), and should reach the
/// server either way.
fn loopback_companion(addr: SocketAddr) -> Option<SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr};
    match addr {
        SocketAddr::V4(v4) if v4.ip().is_loopback() => {
            Some(SocketAddr::from((Ipv6Addr::LOCALHOST, v4.port())))
        }
        SocketAddr::V6(v6) if v6.ip().is_loopback() => {
            Some(SocketAddr::from((Ipv4Addr::LOCALHOST, v6.port())))
        }
        _ => None,
    }
}

/// The UDP sockets to serve on, and the TCP listener on the first one's address and port
/// (when `tcp.enabled`).
fn bind_both(
    config: &Config,
) -> Result<(Vec<std::net::UdpSocket>, Option<std::net::TcpListener>), ServeError> {
    let mut tries = 0;
    loop {
        tries += 1;
        let sockets = udp_sockets(config)?;
        if !config.tcp.enabled {
            return Ok((sockets, None));
        }
        let addr = sockets
            .first()
            .and_then(|s| s.local_addr().ok())
            .unwrap_or(config.listen);
        match crate::tcp::bind(addr) {
            Ok(listener) => return Ok((sockets, Some(listener))),
            Err(_) if config.listen.port() == 0 && tries < 16 => continue,
            Err(source) => return Err(ServeError::Tcp { addr, source }),
        }
    }
}

/// The UDP sockets to serve on: `listen`, and for a loopback `listen` the other loopback
/// address on the same port. A machine without that address (no IPv6) serves on `listen`
/// alone; so does one where another program holds that port there, with a warning.
fn udp_sockets(config: &Config) -> Result<Vec<std::net::UdpSocket>, ServeError> {
    let listen = config.listen;
    let bind = |addr: SocketAddr| {
        udp_socket(addr, &config.transport).map_err(|source| ServeError::Bind { addr, source })
    };
    let Some(companion) = loopback_companion(listen) else {
        return Ok(vec![bind(listen)?]);
    };
    let mut tries = 0;
    loop {
        tries += 1;
        let first = bind(listen)?;
        let port = first
            .local_addr()
            .map_err(|source| ServeError::Bind {
                addr: listen,
                source,
            })?
            .port();
        let other = SocketAddr::new(companion.ip(), port);
        match udp_socket(other, &config.transport) {
            Ok(second) => {
                info!(
                    "also listening on {other}, so that `localhost` reaches the server whichever                      address a client tries first"
                );
                return Ok(vec![first, second]);
            }
            // An ephemeral port that happens to be taken on the other address: another pair.
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && listen.port() == 0
                    && tries < EPHEMERAL_PAIR_TRIES =>
            {
                continue
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                warn!(
                    "not listening on {other} as well as {listen}: another program uses that                      port there ({e}); clients that try {} first for `localhost` reach it                      instead",
                    other.ip()
                );
                return Ok(vec![first]);
            }
            Err(e) => {
                debug!("not listening on {other} as well as {listen}: {e}");
                return Ok(vec![first]);
            }
        }
    }
}

/// A UDP socket on `addr`, with the configured buffer sizes; warns when the kernel grants less
/// (its `net.core.rmem_max` / `wmem_max` cap them).
fn udp_socket(
    addr: SocketAddr,
    t: &crate::config::TransportConfig,
) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        // `[::]` also takes IPv4, as the default std socket would.
        let _ = socket.set_only_v6(false);
    }
    ask_buffer(
        "receive",
        "rmem_max",
        t.udp_receive_buffer_bytes,
        |size| socket.set_recv_buffer_size(size),
        || socket.recv_buffer_size(),
    );
    ask_buffer(
        "send",
        "wmem_max",
        t.udp_send_buffer_bytes,
        |size| socket.set_send_buffer_size(size),
        || socket.send_buffer_size(),
    );
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Asks the kernel for a `requested`-byte UDP buffer (0: leave the default) and warns, naming
/// the sysctl that caps it, when it grants less.
fn ask_buffer(
    what: &str,
    sysctl: &str,
    requested: usize,
    set: impl FnOnce(usize) -> std::io::Result<()>,
    get: impl FnOnce() -> std::io::Result<usize>,
) {
    if requested == 0 {
        return;
    }
    let _ = set(requested);
    // Linux reports twice the size it was given (for its own bookkeeping).
    let granted = get().unwrap_or(0);
    if granted < requested {
        warn!(
            requested,
            granted,
            "the kernel grants a smaller UDP {what} buffer than asked for (transport.udp_{what}_buffer_bytes): \
             fast transfers may lose packets. Raise its cap: sysctl -w net.core.{sysctl}={requested} \
             (and put it in /etc/sysctl.d/)"
        );
    }
}

fn transport(config: &Config) -> quinn::TransportConfig {
    let t = &config.transport;
    let mut transport = quinn::TransportConfig::default();
    transport
        .stream_receive_window(varint(t.stream_receive_window))
        // Where every connection's window starts; `window::ConnectionWindow` steers it.
        .receive_window(varint(t.connection_receive_window))
        .max_concurrent_uni_streams(varint(t.max_jobs_per_connection))
        // HTTP/3 requests are bidirectional streams; `edge/1` refuses any.
        .max_concurrent_bidi_streams(varint(t.max_jobs_per_connection))
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(Duration::from_secs(t.idle_timeout_secs))
                .unwrap_or(quinn::IdleTimeout::from(VarInt::from_u32(30_000))),
        ))
        // Keeps connections (and NAT mappings) alive while a job waits for a slot and
        // nothing else moves.
        .keep_alive_interval(
            (t.keep_alive_secs > 0).then(|| Duration::from_secs(t.keep_alive_secs)),
        )
        .enable_segmentation_offload(t.gso);
    transport
}

fn settings(config: &Config, metrics: &Arc<crate::metrics::Metrics>) -> Settings {
    let jobs = &config.jobs;
    let metrics = metrics.clone();
    Settings {
        commit_records: jobs.commit_records,
        commit_interval: Duration::from_millis(jobs.commit_interval_ms),
        batch: edge_tasks::pipeline::BatchBudget::new(crate::config::mib(jobs.batch_mib)),
        progress_interval: Duration::from_millis(jobs.progress_interval_ms),
        limits: edge_tasks::decode::Limits {
            max_record_bytes: jobs.max_record_bytes,
            ..edge_tasks::decode::Limits::default()
        },
        max_error_events: jobs.max_error_events,
        max_leading_errors: jobs.max_leading_errors,
        max_error_rate: jobs.max_error_rate,
        on_commit: CommitObserver::new(move |took| metrics.commit_took(took)),
        clock: edge_tasks::pipeline::Clock::real(),
        atomic_max_bytes: crate::config::mib(jobs.atomic_max_mib),
    }
}

fn varint(value: u64) -> VarInt {
    VarInt::from_u64(value).unwrap_or(VarInt::MAX)
}

/// The sign-in desk, with the key tokens are minted with (the same `edge token issue` uses),
/// or why there is none (then `POST /v1/login` says so).
fn login_desk(config: &Config) -> crate::login::Login {
    let key = crate::auth::SigningKey::load(&config.auth, &config.certs_dir, None)
        .map_err(|e| e.to_string());
    if let (true, Err(why)) = (config.login.enabled, &key) {
        warn!("signing in with a password is unavailable: {why}");
    }
    crate::login::Login::new(config.login.clone(), config.auth.clone(), key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_loopback_address_gets_the_other_loopback_address() {
        let addr = |text: &str| text.parse::<SocketAddr>().expect("a test address");
        assert_eq!(
            loopback_companion(addr("127.0.0.1:4433")),
            Some(addr("[::1]:4433"))
        );
        assert_eq!(
            loopback_companion(addr("[::1]:9")),
            Some(addr("127.0.0.1:9"))
        );
        for public in [
            "0.0.0.0:4433",
            "[::]:4433",
            "192.168.1.20:4433",
            "[2001:db8::1]:4433",
        ] {
            assert_eq!(loopback_companion(addr(public)), None, "{public}");
        }
    }
}
