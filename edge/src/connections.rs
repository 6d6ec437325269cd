//! Connection-level protection, before and around any job: caps on open connections (total
//! and per IP address), address validation (QUIC Retry) while many handshakes are in
//! progress, and closing connections that never present a valid token.

use crate::config::TransportConfig;
use crate::server::IntoVarInt;
use edge_proto::AppCode;
use quinn::{Connection, Incoming};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// What to do with a new connection attempt.
#[derive(Debug)]
pub(crate) enum Admit {
    /// Take it; the slot is held until the connection ends.
    Accept(Slot),
    /// Ask the client to prove its address first (a stateless Retry).
    Retry,
    /// Refuse it (a cap is reached); the reason is for the log.
    Refuse(&'static str),
}

/// Counts of open connections, shared by the accept loop and every connection.
#[derive(Debug)]
pub(crate) struct Connections {
    max_total: usize,
    max_per_ip: usize,
    retry_above: usize,
    open: Mutex<Open>,
    handshaking: AtomicUsize,
    refused: AtomicU64,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

impl Connections {
    /// Caps from the `[transport]` config.
    pub(crate) fn new(config: &TransportConfig) -> Arc<Connections> {
        Arc::new(Connections {
            max_total: config.max_connections,
            max_per_ip: config.max_connections_per_ip,
            retry_above: config.retry_above_handshakes,
            open: Mutex::new(Open::default()),
            handshaking: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// Decides about a new connection attempt.
    pub(crate) fn admit(self: &Arc<Self>, incoming: &Incoming) -> Admit {
        if incoming.may_retry() && self.handshaking.load(Ordering::Relaxed) >= self.retry_above {
            return Admit::Retry;
        }
        match self.admit_ip(incoming.remote_address().ip()) {
            Ok(slot) => Admit::Accept(slot),
            Err(reason) => Admit::Refuse(reason),
        }
    }

    /// Counts a connection from `ip` in (QUIC or TCP alike), or says which cap refuses it.
    pub(crate) fn admit_ip(self: &Arc<Self>, ip: std::net::IpAddr) -> Result<Slot, &'static str> {
        let ip = ip.to_canonical();
        let mut open = self
            .open
            .lock()
            .expect("the connection counts' lock is never poisoned");
        if open.total >= self.max_total {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err("the server's connection cap is reached");
        }
        let from_ip = open.per_ip.entry(ip).or_insert(0);
        if *from_ip >= self.max_per_ip {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err("this address's connection cap is reached");
        }
        *from_ip += 1;
        open.total += 1;
        Ok(Slot {
            connections: self.clone(),
            ip,
        })
    }

    /// Connections open now (or in handshake).
    pub(crate) fn open(&self) -> usize {
        self.open
            .lock()
            .expect("the connection counts' lock is never poisoned")
            .total
    }

    /// Connection attempts refused by the caps since the start.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Counts a handshake in progress until the guard drops.
    pub(crate) fn handshake(self: &Arc<Self>) -> Handshake {
        self.handshaking.fetch_add(1, Ordering::Relaxed);
        Handshake(self.clone())
    }

    fn release(&self, ip: IpAddr) {
        let mut open = self
            .open
            .lock()
            .expect("the connection counts' lock is never poisoned");
        open.total = open.total.saturating_sub(1);
        if let Some(from_ip) = open.per_ip.get_mut(&ip) {
            *from_ip -= 1;
            if *from_ip == 0 {
                open.per_ip.remove(&ip);
            }
        }
    }
}

/// One admitted connection's place under the caps; released on drop.
#[derive(Debug)]
pub(crate) struct Slot {
    connections: Arc<Connections>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.connections.release(self.ip);
    }
}

/// A handshake in progress; uncounted on drop.
#[derive(Debug)]
pub(crate) struct Handshake(Arc<Connections>);

impl Drop for Handshake {
    fn drop(&mut self) {
        self.0.handshaking.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Closes `connection` unless `authorised` is cancelled (by the first job or request with a
/// valid token) within `timeout`.
pub(crate) async fn close_unless_authorised(
    connection: Connection,
    authorised: CancellationToken,
    timeout: Duration,
) {
    tokio::select! {
        _ = authorised.cancelled() => {}
        _ = connection.closed() => {}
        _ = tokio::time::sleep(timeout) => {
            debug!("closing a connection that sent no valid token within {timeout:?}");
            let reason = format!("no job or request with a valid token within {} s", timeout.as_secs());
            connection.close(AppCode::Rejected.into_varint(), reason.as_bytes());
        }
    }
}
