//! The local control socket: `<data_dir>/edge.sock`, through which `edge token revoke`,
//! `edge token list-revoked`, `edge user ...`, `edge backup` and `edge status` reach a running
//! server. redb admits one process per file, so
//! while `edge serve` holds the store, commands that change it ask the server to do it; when
//! no server runs, the command opens the store itself and runs the same [`execute`].
//!
//! The protocol is one JSON line each way: a [`Request`], then a [`Reply`]. Only the user that
//! owns the socket may use it (mode 0600, and the peer's uid is checked).

use crate::auth::DenyList;
use edge_tasks::revocations::{self, Revoked};
use edge_tasks::users::{self, Change, UserInfo};
use edge_tasks::Store;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The socket's file name in the data dir.
pub const SOCKET_FILE: &str = "edge.sock";

/// The largest request line the server reads.
const MAX_REQUEST_BYTES: u64 = 64 * 1024;

/// How long either side waits for the other.
const TIMEOUT: Duration = Duration::from_secs(10);

/// What a command asks of the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Put a token id on the deny-list.
    Revoke {
        /// The token's `jti`.
        jti: String,
        /// The token's `exp`, when known (the entry is pruned after it).
        expires: Option<u64>,
    },
    /// List the deny-list.
    ListRevoked,
    /// The running server's figures (only a running server answers it).
    Status,
    /// Write a consistent copy of the store to `path` (absolute; it must not exist).
    Backup {
        /// The backup file.
        path: PathBuf,
    },
    /// Add a user who signs in with a password (hashed by the command: the password itself
    /// never reaches the socket).
    UserAdd {
        /// The name.
        name: String,
        /// The password's Argon2id hash (a PHC string).
        hash: String,
        /// The scopes, space-separated.
        scope: String,
    },
    /// Set a user's password hash; ends the tokens issued to the name before.
    UserPasswd {
        /// The name.
        name: String,
        /// The new hash.
        hash: String,
    },
    /// Set a user's scopes; ends the tokens issued to the name before.
    UserScope {
        /// The name.
        name: String,
        /// The scopes, space-separated.
        scope: String,
    },
    /// Remove a user; ends the tokens issued to the name before.
    UserRemove {
        /// The name.
        name: String,
    },
    /// List the users.
    UserList,
}

/// What `edge status` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Seconds since the server started.
    pub uptime_secs: u64,
    /// Jobs running now.
    pub jobs_running: i64,
    /// QUIC connections open now.
    pub connections_open: i64,
    /// Jobs started since the server started.
    pub jobs_started: u64,
    /// Records committed since the server started.
    pub records_committed: u64,
    /// Upload bytes read since the server started.
    pub bytes_received: u64,
    /// Records committed per second over the last few seconds.
    pub records_per_sec: f64,
    /// Upload bytes per second over the last few seconds.
    pub bytes_per_sec: f64,
    /// The store file's size.
    pub store_bytes: u64,
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Reply {
    /// Whether the request was carried out.
    pub ok: bool,
    /// For `revoke`: whether the id was new on the list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added: Option<bool>,
    /// For `list_revoked`: the list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Vec<Revoked>>,
    /// For `status`: the figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// For `user_list`: the users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<UserInfo>>,
    /// For `backup`: what was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<edge_tasks::store::BackupReport>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Reply {
    fn failed(error: String) -> Reply {
        Reply {
            error: Some(error),
            ..Reply::default()
        }
    }
}

/// The control socket's path for a data dir.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_FILE)
}

/// Carries out `request` on `store` (in the server, or in the command when no server runs).
pub fn execute(store: &Store, request: &Request) -> Reply {
    execute_at(store, request, crate::auth::unix_now())
}

/// [`execute`] at time `now` (seconds since the epoch).
fn execute_at(store: &Store, request: &Request, now: u64) -> Reply {
    match request {
        Request::Revoke { jti, expires } => {
            let jti = jti.trim();
            if jti.is_empty() || jti.len() > revocations::MAX_JTI_BYTES {
                return Reply::failed(format!(
                    "a token id must have 1 to {} bytes",
                    revocations::MAX_JTI_BYTES
                ));
            }
            match revocations::revoke(store, jti, *expires, now) {
                Ok(added) => Reply {
                    ok: true,
                    added: Some(added),
                    ..Reply::default()
                },
                Err(e) => Reply::failed(e.to_string()),
            }
        }
        Request::ListRevoked => match revocations::list(store) {
            Ok(list) => Reply {
                ok: true,
                revoked: Some(list),
                ..Reply::default()
            },
            Err(e) => Reply::failed(e.to_string()),
        },
        Request::Status => Reply::failed("no server is running on this data dir".into()),
        Request::Backup { path } => match store.backup(path) {
            Ok(report) => Reply {
                ok: true,
                backup: Some(report),
                ..Reply::default()
            },
            Err(e) => Reply::failed(e.to_string()),
        },
        Request::UserAdd { name, hash, scope } => {
            if let Err(why) = users::check_name(name) {
                return Reply::failed(why);
            }
            user_change(name, users::add(store, name, hash, scope, now))
        }
        Request::UserPasswd { name, hash } => {
            user_change(name, users::set_password(store, name, hash, now))
        }
        Request::UserScope { name, scope } => {
            user_change(name, users::set_scope(store, name, scope, now))
        }
        Request::UserRemove { name } => user_change(name, users::remove(store, name, now)),
        Request::UserList => match users::list(store) {
            Ok(list) => Reply {
                ok: true,
                users: Some(list),
                ..Reply::default()
            },
            Err(e) => Reply::failed(e.to_string()),
        },
    }
}

/// The reply to a change of user `name`.
fn user_change(name: &str, change: Result<Change, edge_tasks::StoreError>) -> Reply {
    match change {
        Ok(Change::Done) => Reply {
            ok: true,
            ..Reply::default()
        },
        Ok(Change::Exists) => Reply::failed(format!(
            "there is a user `{name}` already (`edge user passwd {name}` changes the password)"
        )),
        Ok(Change::Missing) => Reply::failed(format!(
            "there is no user `{name}` (`edge user list` lists them)"
        )),
        Err(e) => Reply::failed(e.to_string()),
    }
}

/// [`execute`] in the running server, which keeps the deny-list in memory too: a revocation
/// is committed to the store (durable), then put on the list (in effect at once), and only
/// then acknowledged; a listing first writes the expiries the server has learned.
fn execute_in_server(store: &Store, revoked: &DenyList, request: &Request) -> Reply {
    match request {
        Request::Revoke { jti, expires } => {
            let jti = jti.trim();
            if revoked.refuses(jti) {
                return Reply::failed(format!(
                    "the deny-list holds {} revoked tokens, the most it keeps: revoke with whole \
                     tokens (so that entries leave once their tokens expire) or rotate the key",
                    crate::auth::MAX_REVOKED
                ));
            }
            let reply = execute(store, request);
            if reply.ok {
                revoked.insert(jti, *expires);
            }
            reply
        }
        Request::ListRevoked => {
            if let Err(e) = revoked.persist_learned(store) {
                tracing::warn!("cannot update the deny-list in the store: {e}");
            }
            execute(store, request)
        }
        // The name's tokens end in memory too, once the store holds the change.
        Request::UserPasswd { name, .. }
        | Request::UserScope { name, .. }
        | Request::UserRemove { name } => {
            let now = crate::auth::unix_now();
            let reply = execute_at(store, request, now);
            if reply.ok {
                revoked.revoke_subject(name, now);
            }
            reply
        }
        _ => execute(store, request),
    }
}

/// A control socket that could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// Talking to the server failed midway.
    #[error("the server's control socket {path} did not answer properly: {message}")]
    Exchange {
        /// The socket.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Sends `request` to the server running on `data_dir`. `Ok(None)`: no server listens there
/// (no socket, or a stale one), so the caller may open the store itself.
pub fn send(data_dir: &Path, request: &Request) -> Result<Option<Reply>, ControlError> {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    let path = socket_path(data_dir);
    let stream = match UnixStream::connect(&path) {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => {
            return Err(ControlError::Exchange {
                path,
                message: e.to_string(),
            })
        }
    };
    // A backup of a large store takes as long as it takes.
    let wait = match request {
        Request::Backup { .. } => Duration::from_secs(24 * 3600),
        _ => TIMEOUT,
    };
    let exchange = || -> std::io::Result<Reply> {
        stream.set_read_timeout(Some(wait))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        let mut line = serde_json::to_vec(request).expect("a control request always serializes");
        line.push(b'\n');
        (&stream).write_all(&line)?;
        let mut answer = String::new();
        BufReader::new(&stream).read_line(&mut answer)?;
        serde_json::from_str(&answer)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    };
    exchange().map(Some).map_err(|e| ControlError::Exchange {
        path,
        message: e.to_string(),
    })
}

/// The server's end of the socket; removes the socket file when dropped.
#[derive(Debug)]
pub struct Listener {
    listener: tokio::net::UnixListener,
    path: PathBuf,
    owner: u32,
}

impl Listener {
    /// Binds `<data_dir>/edge.sock`, replacing a stale socket file (the caller holds the store,
    /// so no other server uses this data dir). Must be called inside a tokio runtime.
    pub fn bind(data_dir: &Path) -> std::io::Result<Listener> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let path = socket_path(data_dir);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = tokio::net::UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        let owner = std::fs::metadata(&path)?.uid();
        Ok(Listener {
            listener,
            path,
            owner,
        })
    }

    /// The socket file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers requests until the server drains. A revocation is committed to `store` and
    /// then put on `revoked` (in effect at once) before it is acknowledged.
    pub(crate) async fn serve(
        self,
        store: Store,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
        revoked: std::sync::Arc<DenyList>,
        shutdown: crate::shutdown::Shutdown,
    ) {
        loop {
            let stream = tokio::select! {
                _ = shutdown.draining() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!("control socket: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let owner_only = stream
                .peer_cred()
                .is_ok_and(|peer| peer.uid() == self.owner);
            if !owner_only {
                tracing::warn!("control socket: refused a peer that is not the server's user");
                continue;
            }
            tokio::spawn(answer(
                stream,
                store.clone(),
                metrics.clone(),
                revoked.clone(),
            ));
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads one request from `stream`, carries it out and answers.
async fn answer(
    stream: tokio::net::UnixStream,
    store: Store,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    revoked: std::sync::Arc<DenyList>,
) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST_BYTES));
    let reply = match tokio::time::timeout(TIMEOUT, reader.read_line(&mut line)).await {
        Ok(Ok(_)) => match serde_json::from_str::<Request>(&line) {
            Ok(Request::Status) => Reply {
                ok: true,
                status: Some(metrics.status()),
                ..Reply::default()
            },
            Ok(request) => {
                tracing::info!(?request, "control request");
                tokio::task::spawn_blocking(move || execute_in_server(&store, &revoked, &request))
                    .await
                    .unwrap_or_else(|e| Reply::failed(format!("the request failed: {e}")))
            }
            Err(e) => Reply::failed(format!("not a control request: {e}")),
        },
        Ok(Err(e)) => Reply::failed(format!("unreadable request: {e}")),
        Err(_) => return,
    };
    let mut out = serde_json::to_vec(&reply).expect("a control reply always serializes");
    out.push(b'\n');
    let _ = write.write_all(&out).await;
    let _ = write.shutdown().await;
}
