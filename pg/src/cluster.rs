//! A throwaway PostgreSQL server for tests and benchmarks: `initdb` into a temporary folder,
//! `pg_ctl start` on 127.0.0.1 and a free port, `pg_ctl stop` when dropped.
//!
//! The programs are Debian's (`apt-get install postgresql`): found on the `PATH`, else in the
//! newest `/usr/lib/postgresql/*/bin`, or in `EDGE_PG_BIN`. PostgreSQL refuses to run as root,
//! so as root they run as the `postgres` user, who is given the folder.
//!
//! [`Database::new`] gives a test a fresh database of its own: in the server named by
//! `EDGE_TEST_PG_URL` when it is set (a superuser's URL; `.ci/run` starts one server for the
//! whole suite), else in a cluster started for it.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What went wrong starting or stopping a cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No PostgreSQL programs were found.
    #[error("no PostgreSQL server programs (initdb, pg_ctl): apt-get install postgresql, or set EDGE_PG_BIN to their folder")]
    NotInstalled,
    /// A program failed.
    #[error("{program} failed: {message}")]
    Failed {
        /// The program.
        program: String,
        /// Its output.
        message: String,
    },
    /// The folder could not be made.
    #[error("cannot prepare the cluster's folder: {0}")]
    Io(#[from] std::io::Error),
}

/// The folder of the PostgreSQL server programs, if they are installed.
pub fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("EDGE_PG_BIN").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
    });
    if on_path.is_some() {
        return on_path;
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// A running PostgreSQL server in a temporary folder, stopped and removed when dropped.
#[derive(Debug)]
pub struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    /// Whether commits wait for the disk (benchmarks), or not (tests).
    durable: bool,
    /// Whether it serves TLS (with the certificate given to [`Cluster::start_tls`]).
    tls: bool,
    /// As root, the `postgres` user's ids, to run the programs as.
    user: Option<(u32, u32)>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// `initdb` and `pg_ctl start` (about a second), trusting local connections, with
    /// `fsync` off (a test server: nothing in it outlives the test).
    pub fn start() -> Result<Cluster, ClusterError> {
        Cluster::start_with(false)
    }

    /// [`Cluster::start`] with `fsync`, `full_page_writes` and `synchronous_commit` on, as
    /// a real server commits (for benchmarks beside redb, which syncs every commit).
    pub fn start_durable() -> Result<Cluster, ClusterError> {
        Cluster::start_with(true)
    }

    /// [`Cluster::start`] serving TLS with `cert` and `key` (PEM files; copied into the
    /// cluster's folder, the key readable by the server's user only).
    pub fn start_tls(cert: &Path, key: &Path) -> Result<Cluster, ClusterError> {
        let mut cluster = Cluster::start_with(false)?;
        for (from, name) in [(cert, "server.crt"), (key, "server.key")] {
            let to = cluster.data.join(name);
            std::fs::copy(from, &to)?;
            std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            if let Some((uid, gid)) = cluster.user {
                std::os::unix::fs::chown(&to, Some(uid), Some(gid))?;
            }
        }
        cluster.stop()?;
        cluster.tls = true;
        cluster.start_again()?;
        Ok(cluster)
    }

    fn start_with(durable: bool) -> Result<Cluster, ClusterError> {
        let bin = bin_dir().ok_or(ClusterError::NotInstalled)?;
        let dir = tempfile::Builder::new().prefix("edge-pg-").tempdir()?;
        let user = if is_root() { postgres_user() } else { None };
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
        }
        let data = dir.path().join("data");
        let port = free_port()?;
        let cluster = Cluster {
            bin,
            data,
            port,
            durable,
            tls: false,
            user,
            _dir: dir,
        };
        cluster.run(
            "initdb",
            &[
                "-D".as_ref(),
                cluster.data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--auth=trust".as_ref(),
                "--no-sync".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--locale=C".as_ref(),
            ],
        )?;
        cluster.start_again()?;
        Ok(cluster)
    }

    /// Starts the server again after [`Cluster::stop`] (on the same port).
    pub fn start_again(&self) -> Result<(), ClusterError> {
        let sync = if self.durable {
            ""
        } else {
            "-c fsync=off -c full_page_writes=off "
        };
        let tls = if self.tls {
            "-c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key "
        } else {
            ""
        };
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories='' {sync}{tls}\
             -c max_connections=200",
            self.port
        );
        let log = self.data.with_file_name("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                self.data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-o".as_ref(),
                options.as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                "30".as_ref(),
                "start".as_ref(),
            ],
        )
    }

    /// Stops the server at once (`-m immediate`: as a crash would, connections cut).
    pub fn stop(&self) -> Result<(), ClusterError> {
        self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                self.data.as_os_str(),
                "-m".as_ref(),
                "immediate".as_ref(),
                "-w".as_ref(),
                "stop".as_ref(),
            ],
        )
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Makes the database `name` (an identifier) and returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String, ClusterError> {
        create_database(&self.url("postgres"), name)?;
        Ok(self.url(name))
    }

    /// The superuser's URL for `database` (without TLS; see [`Cluster::tls_url`]).
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{database}?sslmode=disable",
            self.port
        )
    }

    /// The superuser's URL for `database` over TLS (`sslmode=require`: the certificate and
    /// its names are checked all the same).
    pub fn tls_url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{database}?sslmode=require",
            self.port
        )
    }

    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) -> Result<(), ClusterError> {
        let mut command = Command::new(self.bin.join(program));
        command
            .args(args)
            .stdin(Stdio::null())
            .env("LC_ALL", "C")
            .current_dir(self.data.parent().unwrap_or(Path::new("/")));
        if let Some((uid, gid)) = self.user {
            command.uid(uid).gid(gid);
        }
        let out = command.output().map_err(|e| ClusterError::Failed {
            program: program.into(),
            message: e.to_string(),
        })?;
        if out.status.success() {
            return Ok(());
        }
        let log =
            std::fs::read_to_string(self.data.with_file_name("server.log")).unwrap_or_default();
        Err(ClusterError::Failed {
            program: program.into(),
            message: format!(
                "{}{}{log}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.data.join("postmaster.pid").exists() {
            let _ = self.stop();
        }
    }
}

/// A fresh database for one test: in `EDGE_TEST_PG_URL`'s server when set, else in a cluster
/// of its own. Dropped with the cluster (or left in the shared server, which `.ci/run` throws
/// away at the end).
#[derive(Debug)]
pub struct Database {
    url: String,
    cluster: Option<Cluster>,
}

impl Database {
    /// Makes the database.
    pub fn new() -> Result<Database, ClusterError> {
        if let Ok(admin) = std::env::var("EDGE_TEST_PG_URL") {
            if !admin.is_empty() {
                let name = format!("edge_test_{}_{}", std::process::id(), unique());
                create_database(&admin, &name)?;
                return Ok(Database {
                    url: with_database(&admin, &name),
                    cluster: None,
                });
            }
        }
        let cluster = Cluster::start()?;
        let url = cluster.url("postgres");
        Ok(Database {
            url,
            cluster: Some(cluster),
        })
    }

    /// Its URL (a superuser's).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The cluster it is in, when it has one of its own.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }
}

/// `CREATE DATABASE name`, in a short tokio-postgres session on a thread of its own (so that
/// it works from async tests as well as from plain code).
fn create_database(admin: &str, name: &str) -> Result<(), ClusterError> {
    let failed = |message: String| ClusterError::Failed {
        program: "CREATE DATABASE".into(),
        message,
    };
    let (admin, name) = (admin.to_owned(), name.to_owned());
    let session = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
                .await
                .map_err(|e| failed(format!("{admin}: {e}")))?;
            let connection = tokio::spawn(connection);
            client
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .map_err(|e| failed(e.to_string()))?;
            drop(client);
            let _ = connection.await;
            Ok(())
        })
    });
    session
        .join()
        .unwrap_or_else(|_| Err(failed("the session's thread panicked".into())))
}

/// `url` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let base = match base.rfind('/') {
        Some(slash) if base[..slash].contains("//") && slash > base.find("//").unwrap_or(0) + 1 => {
            &base[..slash]
        }
        _ => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    u64::from(nanos) * 1000 + NEXT.fetch_add(1, Ordering::Relaxed)
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn is_root() -> bool {
    // The effective uid, read from /proc (no libc call needed).
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1))
                .map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// The `postgres` user's uid and gid, from `/etc/passwd`.
fn postgres_user() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.first() == Some(&"postgres") && fields.len() > 3)
            .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_gets_another_database() {
        assert_eq!(
            with_database(
                "postgres://postgres@127.0.0.1:5/postgres?sslmode=disable",
                "x"
            ),
            "postgres://postgres@127.0.0.1:5/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5", "x"),
            "postgres://postgres@127.0.0.1:5/x"
        );
    }
}
