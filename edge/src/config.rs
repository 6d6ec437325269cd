//! The server's configuration: `config/edge.toml` (or `--config`), with flags and `EDGE_*`
//! environment variables over it.
//!
//! Every setting has a default, so `edge serve` runs with no file at all. Unknown keys are an
//! error that names the key. `config/edge.toml` in the repository lists every setting at its
//! default; a test keeps it equal to [`Config::default`].
//!
//! Precedence: the file, then environment variables `EDGE_<SECTION>_<KEY>` (e.g.
//! `EDGE_JOBS_MAX_RUNNING=8`; top-level keys are `EDGE_<KEY>`, e.g. `EDGE_LISTEN`), then flags.
//! An environment value is read as a TOML value (`8`, `true`, `[1, 2]`) and, if it is not
//! one, as a string. A variable that starts like a section (`EDGE_JOBS_...`) but names no
//! setting is an error, like an unknown key in the file.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Where `edge` looks for a config file when none is named.
pub const DEFAULT_CONFIG_PATH: &str = "config/edge.toml";

/// The store file's name inside the data dir.
pub const STORE_FILE: &str = "edge.redb";

/// A configuration that could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The named config file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key, or a value of the wrong type.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key (from the TOML parser).
        message: String,
    },
    /// An `EDGE_*` environment variable names no setting or has a value of the wrong type.
    #[error("invalid environment variable {name}: {message}")]
    Env {
        /// The variable.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A setting has a value that cannot work.
    #[error("invalid setting `{key}`: {message}")]
    Invalid {
        /// The setting, as `section.key`.
        key: &'static str,
        /// Why.
        message: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// UDP address to serve `edge/1` on.
    pub listen: SocketAddr,
    /// Directory of the store (`edge.redb`).
    pub data_dir: PathBuf,
    /// Directory of the generated dev certificates.
    pub certs_dir: PathBuf,
    /// Certificates.
    pub tls: TlsConfig,
    /// The redb store.
    pub store: StoreConfig,
    /// Job processing.
    pub jobs: JobsConfig,
    /// QUIC transport limits.
    pub transport: TransportConfig,
    /// Tokens.
    pub auth: AuthConfig,
    /// Per-subject limits.
    pub limits: LimitsConfig,
    /// The plain-HTTP admin listener.
    pub admin: AdminConfig,
    /// HTTP/1.1 and HTTP/2 over TCP + TLS on the same port.
    pub tcp: TcpConfig,
    /// The `ports` task.
    pub ports: PortsConfig,
    /// Signing in with a name and a password.
    pub login: LoginConfig,
    /// Job bodies read by the server: files in allowed folders, and URLs.
    pub sources: SourcesConfig,
}

/// `[sources]`: jobs whose body the server reads itself, from a file in an allowed folder or
/// from a URL, instead of the upload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesConfig {
    /// The folders jobs may read files from (none by default): a path, or a table with
    /// `path`, `name` and `watch`. A job names a file as `<name>/<path inside>`.
    pub dirs: Vec<SourceDir>,
    /// Fetch `http://` URLs too (`https` only by default).
    pub allow_http: bool,
    /// Hosts (`example.org`, `*.example.org`) and networks (`10.0.0.0/8`, `192.168.1.20`)
    /// fetched although their addresses are refused by default (loopback, private...).
    pub allow: Vec<String>,
    /// Hosts and networks never fetched, public ones too (wins over `allow`).
    pub deny: Vec<String>,
    /// The most bytes a URL's (decoded) body may have; past it the job fails (0: no limit).
    pub max_fetch_bytes: u64,
    /// Seconds to resolve, connect and finish TLS with an origin.
    pub connect_timeout_secs: u64,
    /// Seconds from a request to its response's head.
    pub first_byte_timeout_secs: u64,
    /// Seconds without a byte of the body before the fetch is given up.
    pub idle_timeout_secs: u64,
    /// Seconds one fetch may take in all, body included.
    pub total_timeout_secs: u64,
    /// PEM files of CAs trusted for URLs besides the system's roots.
    pub ca_files: Vec<PathBuf>,
    /// URLs fetched as jobs on a schedule.
    pub feeds: Vec<FeedConfig>,
}

/// A feed (`[[sources.feeds]]`): a URL fetched as a job of `task` every `every`, asking the
/// origin whether it changed first (`if_changed`), retried with backoff when it fails.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    /// The URL.
    pub url: String,
    /// The task its jobs run.
    pub task: String,
    /// How often, e.g. `"1h"`, `"15m"` (at least 1 s).
    pub every: String,
    /// Its name in logs and metrics [default: the URL].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The format [default: the answer's Content-Type, the URL's extension, else sniffed].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<edge_proto::Format>,
    /// Task parameters.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub params: serde_json::Map<String, serde_json::Value>,
    /// The subject its jobs run as [default: `feed:<name>`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Ask the origin whether it changed since the last fetch whose job was done.
    #[serde(default = "yes")]
    pub if_changed: bool,
    /// Tries after a failed fetch before waiting for the next turn.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Seconds before the first retry (doubling with each).
    #[serde(default = "default_retry_secs")]
    pub retry_secs: u64,
}

fn yes() -> bool {
    true
}

fn default_retries() -> u32 {
    3
}

fn default_retry_secs() -> u64 {
    30
}

impl FeedConfig {
    /// Its name: given, else the URL.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.url)
    }

    /// How often it runs.
    pub fn period(&self) -> Result<std::time::Duration, String> {
        match humantime::parse_duration(&self.every) {
            Ok(period) if period >= std::time::Duration::from_secs(1) => Ok(period),
            Ok(_) => Err(format!("`every = \"{}\"` must be at least 1s", self.every)),
            Err(e) => Err(format!(
                "`every = \"{}\"`: {e} (e.g. \"1h\", \"15m\")",
                self.every
            )),
        }
    }
}

impl Default for SourcesConfig {
    fn default() -> Self {
        SourcesConfig {
            dirs: Vec::new(),
            allow_http: false,
            allow: Vec::new(),
            deny: Vec::new(),
            max_fetch_bytes: 4 * 1024 * 1024 * 1024,
            connect_timeout_secs: 10,
            first_byte_timeout_secs: 30,
            idle_timeout_secs: 30,
            total_timeout_secs: 3600,
            ca_files: Vec::new(),
            feeds: Vec::new(),
        }
    }
}

/// One folder jobs may read files from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "SourceDirForm", into = "SourceDirTable")]
pub struct SourceDir {
    /// Where it is.
    pub path: PathBuf,
    /// The name jobs use for it: the folder's own name unless given.
    pub name: String,
    /// Files that land in it become jobs by themselves.
    pub watch: Option<WatchConfig>,
}

/// A folder as the config may give it: its path alone, or a table.
#[derive(Deserialize)]
#[serde(untagged)]
enum SourceDirForm {
    Path(PathBuf),
    Table(SourceDirTable),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceDirTable {
    path: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    watch: Option<WatchConfig>,
}

impl From<SourceDirForm> for SourceDir {
    fn from(form: SourceDirForm) -> SourceDir {
        let table = match form {
            SourceDirForm::Path(path) => SourceDirTable {
                path,
                name: None,
                watch: None,
            },
            SourceDirForm::Table(table) => table,
        };
        let name = table.name.unwrap_or_else(|| {
            table
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        SourceDir {
            path: table.path,
            name,
            watch: table.watch,
        }
    }
}

impl From<SourceDir> for SourceDirTable {
    fn from(dir: SourceDir) -> SourceDirTable {
        SourceDirTable {
            path: dir.path,
            name: Some(dir.name),
            watch: dir.watch,
        }
    }
}

/// A watched folder: each file that lands in it and stays unchanged for `settle_secs` becomes
/// a job of `task`, then moves to `done/` or `failed/` inside the folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// The task its files run.
    pub task: String,
    /// How long a file must stay unchanged (size and time) before it is taken, in seconds.
    #[serde(default = "default_settle_secs")]
    pub settle_secs: u64,
    /// The format of its files (default: from each file's extension, else sniffed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<edge_proto::Format>,
    /// Task parameters for its jobs.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub params: serde_json::Map<String, serde_json::Value>,
    /// The subject its jobs run as (their owner in the job history, and the limits they count
    /// toward) [default: `watch:<folder name>`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
}

fn default_settle_secs() -> u64 {
    5
}

/// `[login]`: users who sign in with a name and a password (`POST /v1/login`, `edge user`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginConfig {
    /// Serve `POST /v1/login`.
    pub enabled: bool,
    /// How long a token from a sign-in is valid, in seconds.
    pub token_ttl_secs: u64,
    /// Failed sign-ins for one name within `failure_window_secs` that lock the name.
    pub max_failures_per_name: u32,
    /// Failed sign-ins from one address (an IPv6 /64) within `failure_window_secs` that lock
    /// the address.
    pub max_failures_per_address: u32,
    /// The window failures are counted in, in seconds.
    pub failure_window_secs: u64,
    /// How long a locked name or address is refused, in seconds.
    pub lockout_secs: u64,
    /// How long a failed sign-in waits before it is answered, in milliseconds.
    pub failure_delay_ms: u64,
}

impl Default for LoginConfig {
    fn default() -> Self {
        LoginConfig {
            enabled: true,
            token_ttl_secs: 12 * 3600,
            max_failures_per_name: 5,
            max_failures_per_address: 20,
            failure_window_secs: 900,
            lockout_secs: 900,
            failure_delay_ms: 1000,
        }
    }
}

/// `[tcp]`: HTTP/1.1 and HTTP/2 over TCP + TLS on the same address and port as QUIC, for
/// clients without HTTP/3 and networks that block UDP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpConfig {
    /// Serve TCP too.
    pub enabled: bool,
    /// The UDP port clients reach HTTP/3 on, as every TCP response's `Alt-Svc` says it
    /// (behind a router that forwards another port); 0: the port the server listens on.
    pub public_port: u16,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            enabled: true,
            public_port: 0,
        }
    }
}

/// `[ports]`: the `ports` task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PortsConfig {
    /// How many of the versions jobs replaced are kept (`[ports.history_keep]`).
    pub history_keep: HistoryKeepConfig,
}

/// `[ports.history_keep]`: the change history kept per port, pruned hourly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryKeepConfig {
    /// The newest versions kept per port (0: no count limit).
    pub versions: u64,
    /// Versions replaced longer ago than this many days go (0: no age limit).
    pub days: u64,
}

impl Default for HistoryKeepConfig {
    fn default() -> Self {
        let keep = edge_tasks::task::TaskLimits::default().ports_history;
        HistoryKeepConfig {
            versions: keep.versions,
            days: keep.days,
        }
    }
}

/// `[admin]`: an optional plain-HTTP listener for `/metrics` and `/healthz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// TCP address to serve `/metrics` and `/healthz` on (plain HTTP). Unset: no listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Connections the admin listener serves at once; more wait to be accepted.
    pub max_connections: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: None,
            max_connections: 16,
        }
    }
}

/// `[limits]`: what one token subject may do, across all its connections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Jobs one subject may run at once.
    pub max_jobs_per_sub: usize,
    /// Job starts per second one subject may sustain (a token bucket).
    pub job_starts_per_sec: f64,
    /// Job starts one subject may make at once before the rate applies.
    pub job_start_burst: u32,
    /// The most body bytes one job may send; 0 means no limit.
    pub max_upload_bytes: u64,
    /// The largest `n` the `primes` task answers (a job's record, or `GET /v1/primes/{n}`).
    pub max_prime_n: u64,
    /// The bytes of blobs one token subject may keep stored (0: no limit); an upload that
    /// would pass it fails `limit_exceeded` and leaves nothing.
    pub blob_bytes_per_sub: u64,
}

impl Config {
    /// The limits task plugins enforce: `limits.max_prime_n`, `limits.blob_bytes_per_sub`,
    /// `[ports.history_keep]`.
    pub fn task_limits(&self) -> edge_tasks::task::TaskLimits {
        let keep = &self.ports.history_keep;
        edge_tasks::task::TaskLimits::default()
            .with_max_prime_n(self.limits.max_prime_n)
            .with_blob_bytes_per_sub(self.limits.blob_bytes_per_sub)
            .with_ports_history(edge_tasks::task::HistoryKeep {
                versions: keep.versions,
                days: keep.days,
            })
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_jobs_per_sub: 4,
            job_starts_per_sec: 10.0,
            job_start_burst: 20,
            max_upload_bytes: 0,
            max_prime_n: edge_tasks::primes::DEFAULT_MAX_N,
            blob_bytes_per_sub: edge_tasks::blobs::DEFAULT_BYTES_PER_SUB,
        }
    }
}

/// `[auth]`: how tokens are checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The `iss` every token must carry (and `edge token issue` writes).
    pub issuer: String,
    /// The `aud` every token must carry (and `edge token issue` writes by default).
    pub audience: String,
    /// Clock leeway for `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// A connection that has opened no job or request with a valid token within this many
    /// seconds is closed.
    pub auth_timeout_secs: u64,
    /// The keys tokens are verified with. Empty: the Ed25519 pair generated in `certs_dir`.
    pub keys: Vec<KeyConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            issuer: "edge".into(),
            audience: "edge".into(),
            leeway_secs: 30,
            auth_timeout_secs: 10,
            keys: Vec::new(),
        }
    }
}

/// One configured token key (`[[auth.keys]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// The key id tokens name in their header.
    pub kid: String,
    /// `EdDSA` (Ed25519) or `HS256`.
    pub algorithm: KeyAlgorithm,
    /// EdDSA: the verifying key (SPKI PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<PathBuf>,
    /// EdDSA: the signing key (PKCS#8 PEM), only where tokens are minted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<PathBuf>,
    /// HS256: a file holding the secret (at least 32 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// HS256: an environment variable holding the secret (at least 32 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
}

/// The algorithm of a configured token key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyAlgorithm {
    /// Ed25519 signatures (public-key: the server needs only the public half).
    EdDSA,
    /// HMAC-SHA256 with a shared secret.
    HS256,
}

/// `[tls]`: the server certificate.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain (e.g. certbot's `fullchain.pem`). Unset: dev certificates are
    /// generated in `certs_dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// PEM private key for `cert` (e.g. certbot's `privkey.pem`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// Extra DNS names or IP addresses for the generated dev certificate (besides localhost,
    /// 127.0.0.1 and ::1).
    pub names: Vec<String>,
}

/// `[store]`: where jobs' data is kept: the embedded redb file (the default), or a PostgreSQL
/// database that several edge nodes share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `redb` (`<data_dir>/edge.redb`) or `postgres` (`url`).
    pub backend: StoreBackend,
    /// redb page cache, in MiB. redb's own default (1 GiB) would dominate the server's memory.
    pub cache_mb: u64,
    /// PostgreSQL: `postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=require` (or
    /// `EDGE_STORE_URL`). `edge config check` prints it without its password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// PostgreSQL: PEM files of certificate authorities to trust for TLS to the database,
    /// besides the system's.
    pub ca_files: Vec<PathBuf>,
    /// PostgreSQL: connections kept at most by this node.
    pub pool_size: usize,
    /// PostgreSQL: this node's name among the nodes sharing the database, stable across
    /// restarts (default: `<host name>:<data dir>`). Its cut-off jobs are marked interrupted
    /// when it starts again, and its watched folders' claims are its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// Which database `[store]` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// The embedded redb file in the data dir.
    #[default]
    Redb,
    /// A PostgreSQL database (`url`).
    Postgres,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Redb,
            cache_mb: 8,
            url: None,
            ca_files: Vec::new(),
            pool_size: 16,
            node: None,
        }
    }
}

/// `value` MiB in bytes (a setting in MiB, for the code that counts bytes).
pub(crate) fn mib(value: u64) -> usize {
    usize::try_from(value.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX)
}

/// A database URL without its password (for `edge config check` and logs).
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:****@{host}"),
        None => url.to_owned(),
    }
}

/// `[jobs]`: how jobs run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// Jobs that decode and store at the same time, server-wide. Further jobs wait (their
    /// uploads are held back by QUIC flow control).
    pub max_running: usize,
    /// Start a commit of a job's records once this many wait (and none of its commits runs).
    pub commit_records: usize,
    /// Start a commit of a job's records at least this often, in milliseconds (once the
    /// previous one returned).
    pub commit_interval_ms: u64,
    /// Memory for uncommitted records, in MiB of encoded records, shared by the running jobs
    /// (one job alone may use it all; `n` jobs get `1/n` each, at least 256 KiB). While the
    /// store writes a job's batch, its next batch grows up to its share, then the job waits.
    /// All batches together stay near twice this.
    pub batch_mib: u64,
    /// Send `progress` / `committed` events at most this often, in milliseconds.
    pub progress_interval_ms: u64,
    /// The largest record (or line) a decoder buffers; larger records are reported and skipped.
    pub max_record_bytes: usize,
    /// A client must send its job header within this many seconds of opening the stream.
    pub header_timeout_secs: u64,
    /// `record_error` events one job sends one by one; later errors are only counted (the
    /// final event has exact counts and the first few errors).
    pub max_error_events: u64,
    /// A job whose first this many records are all bad fails with `too_many_errors` (0: never).
    pub max_leading_errors: u64,
    /// From record `max_leading_errors` on, a job fails with `too_many_errors` once more than
    /// this share of its records are bad (1.0: never).
    pub max_error_rate: f64,
    /// On SIGTERM / Ctrl-C, running jobs have this many seconds to finish; then they commit
    /// what they have and end `failed` with `shutdown`.
    pub shutdown_grace_secs: u64,
    /// The slowest upload the server waits for, in bytes per second over
    /// `upload_rate_window_secs` of waiting (0: no minimum). Slower jobs end `too_slow`.
    pub min_upload_bytes_per_sec: u64,
    /// The window over which `min_upload_bytes_per_sec` is measured, in seconds.
    pub upload_rate_window_secs: u64,
    /// Keep the history of jobs that ended at most this many days ago (0: no age limit).
    pub history_keep_days: u64,
    /// Keep at most this many jobs in the history, the most recent (0: no count limit).
    pub history_keep_count: u64,
    /// How long a job cut off (connection lost, server restarted) stays resumable where its
    /// last commit ended, e.g. `24h`, `90m`, `7d`; then its state is dropped and a resume
    /// gets `resume_expired`.
    pub resume_window: String,
    /// What an atomic job (`atomic=true`: nothing kept unless all of it is) may hold until
    /// it ends, in MiB of encoded records; past it the job fails `limit_exceeded`.
    pub atomic_max_mib: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            max_running: 64,
            commit_records: 10_000,
            commit_interval_ms: 100,
            batch_mib: 12,
            progress_interval_ms: 100,
            max_record_bytes: 1024 * 1024,
            header_timeout_secs: 10,
            max_error_events: 1_000,
            max_leading_errors: 1_000,
            max_error_rate: 0.5,
            shutdown_grace_secs: 30,
            min_upload_bytes_per_sec: 1024,
            upload_rate_window_secs: 30,
            history_keep_days: 90,
            history_keep_count: 100_000,
            resume_window: "24h".into(),
            atomic_max_mib: 256,
        }
    }
}

/// `[transport]`: QUIC limits. Worst-case buffered upload memory is about
/// `connection_receive_window` per connection plus `receive_window_budget` for the whole
/// server (windows grown past their start on long paths).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportConfig {
    /// Bytes a client may send on one upload stream ahead of what the server has read (the
    /// connection's window, smaller, is what bounds memory).
    pub stream_receive_window: u64,
    /// Bytes a client may send on all its streams together ahead of what the server has read,
    /// when the connection starts; the window never goes below it.
    pub connection_receive_window: u64,
    /// The most one connection's window grows to, while its jobs consume it at the rate of
    /// its round trip (long paths).
    pub connection_receive_window_max: u64,
    /// Window bytes above `connection_receive_window` that all connections together may hold.
    pub receive_window_budget: u64,
    /// Upload streams (jobs) one connection may have open at once.
    pub max_jobs_per_connection: u64,
    /// Close a connection after this many seconds without any packet.
    pub idle_timeout_secs: u64,
    /// Connections (open or in handshake) the server takes at once; more are refused.
    pub max_connections: usize,
    /// Connections one IP address may have at once; more are refused.
    pub max_connections_per_ip: usize,
    /// Above this many handshakes in progress, a new client must first prove its address
    /// (a QUIC Retry, one extra round trip) before the server does any TLS work for it.
    pub retry_above_handshakes: usize,
    /// Send a keep-alive after this many seconds without traffic (0: never).
    pub keep_alive_secs: u64,
    /// UDP receive buffer to ask the kernel for, in bytes (0: the system default).
    pub udp_receive_buffer_bytes: usize,
    /// UDP send buffer to ask the kernel for, in bytes (0: the system default).
    pub udp_send_buffer_bytes: usize,
    /// Let the kernel segment outgoing packets (GSO); turn off where it misbehaves.
    pub gso: bool,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            stream_receive_window: 16 * 1024 * 1024,
            connection_receive_window: 2 * 1024 * 1024,
            connection_receive_window_max: 8 * 1024 * 1024,
            receive_window_budget: 64 * 1024 * 1024,
            max_jobs_per_connection: 16,
            idle_timeout_secs: 30,
            max_connections: 256,
            max_connections_per_ip: 16,
            retry_above_handshakes: 32,
            keep_alive_secs: 10,
            udp_receive_buffer_bytes: 2 * 1024 * 1024,
            udp_send_buffer_bytes: 2 * 1024 * 1024,
            gso: true,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], edge_proto::DEFAULT_PORT)),
            data_dir: PathBuf::from("data"),
            certs_dir: PathBuf::from("certs"),
            tls: TlsConfig::default(),
            store: StoreConfig::default(),
            jobs: JobsConfig::default(),
            transport: TransportConfig::default(),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            admin: AdminConfig::default(),
            tcp: TcpConfig::default(),
            login: LoginConfig::default(),
            sources: SourcesConfig::default(),
            ports: PortsConfig::default(),
        }
    }
}

/// Command-line (and environment) settings that override the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config` / `EDGE_CONFIG`: the file to read (it must exist).
    pub config: Option<PathBuf>,
    /// `--listen` / `EDGE_LISTEN`.
    pub listen: Option<SocketAddr>,
    /// `--data-dir` / `EDGE_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--certs-dir` / `EDGE_CERTS_DIR`.
    pub certs_dir: Option<PathBuf>,
    /// `--admin-listen`.
    pub admin_listen: Option<SocketAddr>,
}

impl Config {
    /// Reads the config file (the named one, else `config/edge.toml` if it exists, else none)
    /// and applies the overrides over it.
    pub fn load(overrides: &Overrides) -> Result<Config, ConfigError> {
        Config::load_with_env(overrides, std::env::vars())
    }

    /// [`Config::load`] with the environment given (for tests).
    pub fn load_with_env(
        overrides: &Overrides,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let file = match &overrides.config {
            Some(path) => Some(path.as_path()),
            None if Path::new(DEFAULT_CONFIG_PATH).is_file() => {
                Some(Path::new(DEFAULT_CONFIG_PATH))
            }
            None => None,
        };
        let mut config = match file {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        config = config.with_env(env)?;
        if let Some(listen) = overrides.listen {
            config.listen = listen;
        }
        if let Some(dir) = &overrides.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(dir) = &overrides.certs_dir {
            config.certs_dir = dir.clone();
        }
        if let Some(addr) = overrides.admin_listen {
            config.admin.listen = Some(addr);
        }
        config.validate()?;
        Ok(config)
    }

    /// Reads one TOML file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    /// Applies `EDGE_<SECTION>_<KEY>` variables over this config.
    fn with_env(
        self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let settings = settings();
        let sections: Vec<String> = settings
            .iter()
            .filter_map(|s| s.key.split_once('.').map(|(section, _)| env_name(section)))
            .collect();
        let mut tree = toml::Value::try_from(&self).expect("a config always serializes to TOML");
        let mut applied = false;
        for (name, value) in env {
            // The flags' own variables (EDGE_LISTEN...) are settings too; EDGE_CONFIG names the file.
            let Some(setting) = settings.iter().find(|s| s.env == name) else {
                let in_section = sections
                    .iter()
                    .any(|section| name.starts_with(&format!("{section}_")));
                if in_section {
                    return Err(ConfigError::Env {
                        message: "no such setting (docs/CONFIG.md lists them all)".into(),
                        name,
                    });
                }
                continue;
            };
            let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(value.clone()));
            set(&mut tree, &setting.key, parsed);
            // Checked one variable at a time, so that an error names it.
            Config::deserialize(tree.clone()).map_err(|e| ConfigError::Env {
                message: format!("`{value}` does not suit `{}`: {}", setting.key, e.message()),
                name,
            })?;
            applied = true;
        }
        if !applied {
            return Ok(self);
        }
        Ok(Config::deserialize(tree).expect("checked after every variable"))
    }

    /// Parses TOML text; the error message names the offending key.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }

    /// How long a cut-off job stays resumable (`jobs.resume_window`; checked by
    /// [`Config::validate`], the default if it does not parse).
    pub fn resume_window(&self) -> std::time::Duration {
        humantime::parse_duration(&self.jobs.resume_window)
            .unwrap_or(edge_tasks::resume::DEFAULT_WINDOW)
    }

    /// The store file: `<data_dir>/edge.redb`.
    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join(STORE_FILE)
    }

    /// This node's name in a shared store: `[store] node`, else `<host name>:<data dir>`
    /// (the data dir made absolute, so that it is the same whatever the working directory).
    pub fn node_name(&self) -> String {
        if let Some(node) = self.store.node.as_deref().filter(|n| !n.is_empty()) {
            return node.to_owned();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "localhost".into());
        let dir = std::path::absolute(&self.data_dir).unwrap_or_else(|_| self.data_dir.clone());
        format!("{host}:{}", dir.display())
    }

    /// Opens the configured store with `registry`'s plugins: the redb file, or the PostgreSQL
    /// database (blocking: it connects and sets the tables up).
    pub fn open_store(
        &self,
        registry: edge_tasks::Registry,
    ) -> Result<edge_tasks::Store, edge_tasks::store::OpenError> {
        match self.store.backend {
            StoreBackend::Redb => {
                let options = edge_tasks::store::StoreOptions {
                    cache_bytes: mib(self.store.cache_mb),
                };
                edge_tasks::Store::open_with(&self.store_path(), &options, registry)
            }
            StoreBackend::Postgres => {
                let mut options =
                    edge_tasks::store::PgOptions::new(self.store.url.clone().unwrap_or_default());
                options.ca_files = self.store.ca_files.clone();
                options.pool_size = self.store.pool_size;
                edge_tasks::Store::open_postgres(&options, &self.node_name(), registry)
            }
        }
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.to_owned(),
            })
        };
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return invalid(
                "tls.cert",
                "set both `tls.cert` and `tls.key`, or neither (dev certificates)",
            );
        }
        if self.jobs.max_running == 0 {
            return invalid("jobs.max_running", "must be at least 1");
        }
        if self.jobs.commit_records == 0 {
            return invalid("jobs.commit_records", "must be at least 1");
        }
        if self.jobs.batch_mib == 0 {
            return invalid("jobs.batch_mib", "must be at least 1");
        }
        if self.jobs.max_record_bytes < 1024 {
            return invalid("jobs.max_record_bytes", "must be at least 1024");
        }
        if !(0.0..=1.0).contains(&self.jobs.max_error_rate) {
            return invalid("jobs.max_error_rate", "must be between 0.0 and 1.0");
        }
        if let Err(e) = humantime::parse_duration(&self.jobs.resume_window) {
            return Err(ConfigError::Invalid {
                key: "jobs.resume_window",
                message: format!(
                    "`{}` is not a duration ({e}); write e.g. `24h`, `90m` or `7d`",
                    self.jobs.resume_window
                ),
            });
        }
        if self.transport.max_connections == 0 || self.transport.max_connections_per_ip == 0 {
            return invalid(
                "transport.max_connections",
                "`max_connections` and `max_connections_per_ip` must be at least 1",
            );
        }
        if self.jobs.upload_rate_window_secs == 0 {
            return invalid("jobs.upload_rate_window_secs", "must be at least 1");
        }
        if !(1..=edge_tasks::primes::LARGEST_MAX_N).contains(&self.limits.max_prime_n) {
            return invalid(
                "limits.max_prime_n",
                &format!(
                    "must be from 1 to {} (the {}th prime takes minutes to find)",
                    edge_tasks::primes::LARGEST_MAX_N,
                    edge_tasks::primes::LARGEST_MAX_N
                ),
            );
        }
        if self.store.backend == StoreBackend::Postgres
            && self.store.url.as_deref().is_none_or(str::is_empty)
        {
            return invalid(
                "store.url",
                "backend = \"postgres\" needs the database's URL: url = \"postgres://USER:PASSWORD@HOST:PORT/DATABASE\" in [store], or EDGE_STORE_URL",
            );
        }
        if self.store.pool_size == 0 {
            return invalid("store.pool_size", "must be at least 1");
        }
        if self.admin.max_connections == 0 {
            return invalid("admin.max_connections", "must be at least 1");
        }
        if self.login.max_failures_per_name == 0 || self.login.max_failures_per_address == 0 {
            return invalid(
                "login.max_failures_per_name",
                "`max_failures_per_name` and `max_failures_per_address` must be at least 1",
            );
        }
        for (i, dir) in self.sources.dirs.iter().enumerate() {
            let valid = !dir.name.is_empty()
                && !dir.name.contains('/')
                && dir.name != "."
                && dir.name != "..";
            if !valid {
                return invalid(
                    "sources.dirs",
                    &format!(
                        "the folder {} needs a `name` (one path segment) that jobs call it by",
                        dir.path.display()
                    ),
                );
            }
            if !dir.path.is_absolute() {
                return invalid(
                    "sources.dirs",
                    &format!("{} must be an absolute path", dir.path.display()),
                );
            }
            if self.sources.dirs[..i].iter().any(|d| d.name == dir.name) {
                return invalid(
                    "sources.dirs",
                    &format!("two folders are named `{}`; give one a `name`", dir.name),
                );
            }
        }
        for (key, rules) in [
            ("sources.allow", &self.sources.allow),
            ("sources.deny", &self.sources.deny),
        ] {
            for rule in rules {
                if let Err(e) = rule.parse::<edge_fetch::Rule>() {
                    return invalid(key, &format!("`{rule}`: {e}"));
                }
            }
        }
        for (i, feed) in self.sources.feeds.iter().enumerate() {
            if let Err(message) = feed.period() {
                return invalid(
                    "sources.feeds",
                    &format!("feed `{}`: {message}", feed.name()),
                );
            }
            if !(feed.url.starts_with("https://") || feed.url.starts_with("http://")) {
                return invalid(
                    "sources.feeds",
                    &format!("feed `{}`: `url` must be an https:// URL", feed.name()),
                );
            }
            if self.sources.feeds[..i]
                .iter()
                .any(|f| f.name() == feed.name())
            {
                return invalid(
                    "sources.feeds",
                    &format!("two feeds are named `{}`; give one a `name`", feed.name()),
                );
            }
        }
        if self.login.token_ttl_secs == 0 {
            return invalid("login.token_ttl_secs", "must be at least 1");
        }
        if self.auth.auth_timeout_secs == 0 {
            return invalid("auth.auth_timeout_secs", "must be at least 1");
        }
        if self.transport.max_jobs_per_connection == 0 {
            return invalid("transport.max_jobs_per_connection", "must be at least 1");
        }
        if self.transport.stream_receive_window < 16 * 1024 {
            return invalid("transport.stream_receive_window", "must be at least 16384");
        }
        if self.transport.connection_receive_window < 16 * 1024
            || self.transport.connection_receive_window_max
                < self.transport.connection_receive_window
        {
            return invalid(
                "transport.connection_receive_window",
                "must be at least 16384 and at most `connection_receive_window_max`",
            );
        }
        Ok(())
    }
}

/// One setting: its key (`section.key`), its environment variable and its meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// `section.key`, or `key` at the top level.
    pub key: String,
    /// `EDGE_SECTION_KEY`.
    pub env: String,
}

/// Every setting (including those without a default, such as `tls.cert`).
pub fn settings() -> Vec<Setting> {
    const OPTIONAL: [&str; 5] = [
        "tls.cert",
        "tls.key",
        "admin.listen",
        "store.url",
        "store.node",
    ];
    let defaults = toml::Value::try_from(Config::default()).expect("the defaults serialize");
    let mut keys: Vec<String> = Vec::new();
    collect_keys(&defaults, "", &mut keys);
    keys.extend(OPTIONAL.iter().map(|k| (*k).to_owned()));
    keys.into_iter()
        .map(|key| Setting {
            env: env_name(&key),
            key,
        })
        .collect()
}

fn collect_keys(value: &toml::Value, prefix: &str, keys: &mut Vec<String>) {
    if let toml::Value::Table(table) = value {
        for (k, v) in table {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(_) => collect_keys(v, &key, keys),
                _ => keys.push(key),
            }
        }
    }
}

/// `jobs.max_running` -> `EDGE_JOBS_MAX_RUNNING`.
fn env_name(key: &str) -> String {
    format!("EDGE_{}", key.replace('.', "_").to_ascii_uppercase())
}

/// Sets `key` (`section.key`) in a TOML tree.
fn set(tree: &mut toml::Value, key: &str, value: toml::Value) {
    let mut node = tree;
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        let toml::Value::Table(table) = node else {
            return;
        };
        if parts.peek().is_none() {
            table.insert(part.to_owned(), value);
            return;
        }
        node = table
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_example_lists_every_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/edge.toml");
        let shipped = Config::from_file(&path).expect("config/edge.toml parses");
        assert_eq!(
            shipped,
            Config::default(),
            "config/edge.toml must show the code's defaults"
        );
        // Every key of the defaults appears in the file (commented or not), so none is undocumented.
        let text = std::fs::read_to_string(&path).unwrap();
        for setting in settings() {
            let key = setting.key.rsplit('.').next().unwrap();
            assert!(
                text.contains(&format!("{key} =")),
                "config/edge.toml does not mention `{}`",
                setting.key
            );
        }
    }

    #[test]
    fn docs_config_lists_every_setting_with_its_variable_and_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/CONFIG.md");
        let text = std::fs::read_to_string(&path).expect("docs/CONFIG.md exists");
        let defaults = toml::Value::try_from(Config::default()).unwrap();
        for setting in settings() {
            let row = text
                .lines()
                .find(|line| line.starts_with(&format!("| `{}` |", setting.key)))
                .unwrap_or_else(|| panic!("docs/CONFIG.md has no row for `{}`", setting.key));
            assert!(row.contains(&format!("`{}`", setting.env)), "{row}");
            let default = setting
                .key
                .split('.')
                .try_fold(&defaults, |node, part| node.get(part));
            if let Some(default) = default {
                let shown = match default {
                    toml::Value::String(s) => format!("`\"{s}\"`"),
                    other => format!("`{other}`"),
                };
                assert!(
                    row.contains(&shown),
                    "`{}`: its default {shown} is not in: {row}",
                    setting.key
                );
            }
        }
    }

    #[test]
    fn the_environment_overrides_the_file_and_flags_override_both() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("edge.toml");
        std::fs::write(
            &file,
            "data_dir = \"from-file\"\n[jobs]\nmax_running = 2\ncommit_records = 5\n",
        )
        .unwrap();
        let overrides = Overrides {
            config: Some(file.clone()),
            data_dir: Some("from-flag".into()),
            ..Overrides::default()
        };
        let env = [
            ("EDGE_JOBS_MAX_RUNNING", "8"),
            ("EDGE_DATA_DIR", "from-env"),
            ("EDGE_AUTH_ISSUER", "home"),
            ("EDGE_TRANSPORT_MAX_CONNECTIONS_PER_IP", "4"),
            ("EDGE_TOKEN", "not a setting, not a section: ignored"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let config = Config::load_with_env(&overrides, env).unwrap();
        assert_eq!(config.jobs.max_running, 8, "env over file");
        assert_eq!(
            config.jobs.commit_records, 5,
            "the file where env is silent"
        );
        assert_eq!(config.data_dir, PathBuf::from("from-flag"), "flag over env");
        assert_eq!(config.auth.issuer, "home", "a bare word is a string");
        assert_eq!(config.transport.max_connections_per_ip, 4);

        let typo = [("EDGE_JOBS_MAX_RUNING".to_owned(), "8".to_owned())];
        let err = Config::load_with_env(&overrides, typo)
            .unwrap_err()
            .to_string();
        assert!(err.contains("EDGE_JOBS_MAX_RUNING"), "{err}");
        let wrong = [("EDGE_JOBS_MAX_RUNNING".to_owned(), "many".to_owned())];
        let err = Config::load_with_env(&overrides, wrong)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("EDGE_JOBS_MAX_RUNNING") && err.contains("jobs.max_running"),
            "{err}"
        );
    }

    #[test]
    fn the_home_server_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/home-server.toml");
        let config = Config::from_file(&path).expect("config/home-server.toml parses");
        config.validate().expect("and is valid");
        assert!(config.tls.cert.is_some(), "it uses a real certificate");
        assert_ne!(
            config.listen.ip().to_string(),
            "127.0.0.1",
            "it listens publicly"
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::from_toml("listen = \"127.0.0.1:1\"\nlisen = 3\n").unwrap_err();
        assert!(err.contains("lisen"), "{err}");
        let err = Config::from_toml("[jobs]\ncommit_every = 3\n").unwrap_err();
        assert!(err.contains("commit_every"), "{err}");
    }

    #[test]
    fn overrides_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("edge.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9\"\ndata_dir = \"from-file\"\n",
        )
        .unwrap();
        let overrides = Overrides {
            config: Some(file.clone()),
            data_dir: Some("from-flag".into()),
            ..Overrides::default()
        };
        let config = Config::load(&overrides).unwrap();
        assert_eq!(config.listen, "127.0.0.1:9".parse().unwrap());
        assert_eq!(config.data_dir, PathBuf::from("from-flag"));
    }

    #[test]
    fn a_named_file_must_exist() {
        let overrides = Overrides {
            config: Some("/nonexistent/edge.toml".into()),
            ..Overrides::default()
        };
        let err = Config::load(&overrides).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/edge.toml"), "{err}");
    }

    #[test]
    fn half_a_certificate_is_refused() {
        let config = Config {
            tls: TlsConfig {
                cert: Some("a.pem".into()),
                ..TlsConfig::default()
            },
            ..Config::default()
        };
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("tls.key"));
    }
}
