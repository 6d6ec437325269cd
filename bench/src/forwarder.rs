//! A UDP forwarder on 127.0.0.1 that delays every datagram by a fixed time each way: a long
//! path (a client across a continent) on one machine, where the kernel has no netem.
//!
//! One client at a time: datagrams from the client's side go to the upstream server, the
//! server's answers go back to the address the client last sent from. Each direction is a
//! reader thread that stamps datagrams and a writer thread that sends each one when it is
//! due, joined by a bounded queue: past [`QUEUE_DATAGRAMS`] or [`QUEUE_BYTES`] waiting, a
//! datagram is dropped (a router's full queue). [`Forwarder::cut`] drops every datagram, both
//! ways, until it is called again (a Wi-Fi drop, a tunnel, a sleeping laptop). Dropping the
//! [`Forwarder`] stops its threads.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Datagrams waiting in one direction, at most.
pub const QUEUE_DATAGRAMS: usize = 8192;
/// Bytes waiting in one direction, at most.
pub const QUEUE_BYTES: usize = 32 * 1024 * 1024;
/// The UDP buffers asked for (the kernel caps them at `net.core.rmem_max` / `wmem_max`).
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;
/// How often a reader with nothing to read checks whether to stop.
const POLL: Duration = Duration::from_millis(50);

/// A running forwarder.
#[derive(Debug)]
pub struct Forwarder {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    cut: Arc<AtomicBool>,
    dropped: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<()>>,
}

/// What each direction shares.
struct Direction {
    stop: Arc<AtomicBool>,
    /// Drop every datagram (the path is cut).
    cut: Arc<AtomicBool>,
    dropped: Arc<AtomicUsize>,
    queued: AtomicUsize,
}

impl Forwarder {
    /// Forwards datagrams sent to [`Forwarder::addr`] to `upstream` (a 127.0.0.1 address)
    /// and back, each delayed by `one_way`: a round trip of twice that.
    pub fn start(upstream: SocketAddr, one_way: Duration) -> io::Result<Forwarder> {
        if !upstream.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the forwarder only forwards to a loopback address",
            ));
        }
        let front = udp_socket()?;
        let back = udp_socket()?;
        back.connect(upstream)?;
        let addr = front.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicUsize::new(0));
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let (front, back) = (Arc::new(front), Arc::new(back));
        let mut threads = Vec::new();
        // Client -> server.
        let up = Arc::new(Direction {
            stop: stop.clone(),
            cut: cut.clone(),
            dropped: dropped.clone(),
            queued: AtomicUsize::new(0),
        });
        let (tx, rx) = mpsc::sync_channel(QUEUE_DATAGRAMS);
        {
            let (front, up, client) = (front.clone(), up.clone(), client.clone());
            threads.push(std::thread::spawn(move || {
                read(&up, one_way, &tx, |buf| {
                    let (n, from) = front.recv_from(buf)?;
                    *lock(&client) = Some(from);
                    Ok(n)
                })
            }));
        }
        {
            let back = back.clone();
            threads.push(std::thread::spawn(move || {
                write(&up, &rx, |datagram| back.send(datagram).map(|_| ()))
            }));
        }
        // Server -> client.
        let down = Arc::new(Direction {
            stop: stop.clone(),
            cut: cut.clone(),
            dropped: dropped.clone(),
            queued: AtomicUsize::new(0),
        });
        let (tx, rx) = mpsc::sync_channel(QUEUE_DATAGRAMS);
        {
            let down = down.clone();
            threads.push(std::thread::spawn(move || {
                read(&down, one_way, &tx, |buf| back.recv(buf))
            }));
        }
        threads.push(std::thread::spawn(move || {
            write(&down, &rx, |datagram| match *lock(&client) {
                Some(to) => front.send_to(datagram, to).map(|_| ()),
                None => Ok(()),
            })
        }));
        Ok(Forwarder {
            addr,
            stop,
            cut,
            dropped,
            threads,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cuts the path (`true`: every datagram is dropped, both ways) or mends it. (For the
    /// end-to-end tests of resumed uploads, which compile this file too.)
    #[allow(dead_code)]
    pub fn cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::Relaxed);
    }

    /// Datagrams dropped because a queue was full.
    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A UDP socket on 127.0.0.1 with large buffers and a read timeout.
fn udp_socket() -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    let socket: UdpSocket = socket.into();
    socket.set_read_timeout(Some(POLL))?;
    Ok(socket)
}

/// Reads datagrams with `recv` and queues each, due `delay` after it arrived, until stopped.
fn read(
    direction: &Direction,
    delay: Duration,
    queue: &SyncSender<(Instant, Vec<u8>)>,
    mut recv: impl FnMut(&mut [u8]) -> io::Result<usize>,
) {
    let mut buf = vec![0u8; 65536];
    while !direction.stop.load(Ordering::Relaxed) {
        let n = match recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            // ICMP port unreachable and the like: the peer is not there (yet).
            Err(_) => continue,
        };
        if direction.cut.load(Ordering::Relaxed) {
            direction.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let due = Instant::now() + delay;
        if direction.queued.load(Ordering::Relaxed) + n > QUEUE_BYTES {
            direction.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        direction.queued.fetch_add(n, Ordering::Relaxed);
        match queue.try_send((due, buf[..n].to_vec())) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                direction.queued.fetch_sub(n, Ordering::Relaxed);
                direction.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => return,
        }
    }
}

/// Sends each queued datagram with `send` once it is due, until the queue ends or stop.
fn write(
    direction: &Direction,
    queue: &Receiver<(Instant, Vec<u8>)>,
    mut send: impl FnMut(&[u8]) -> io::Result<()>,
) {
    while !direction.stop.load(Ordering::Relaxed) {
        let (due, datagram) = match queue.recv_timeout(POLL) {
            Ok(next) => next,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let wait = due.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        direction
            .queued
            .fetch_sub(datagram.len(), Ordering::Relaxed);
        // A send that fails (nobody listening any more) loses the datagram, as a path would.
        let _ = send(&datagram);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_go_through_both_ways() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let forwarder =
            Forwarder::start(server.local_addr().unwrap(), Duration::from_millis(5)).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        client.send_to(b"ping", forwarder.addr()).unwrap();
        let mut buf = [0u8; 16];
        let (n, via) = server.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
        server.send_to(b"pong", via).unwrap();
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"pong"[..], forwarder.addr()));
        assert_eq!(forwarder.dropped(), 0);
    }

    #[test]
    fn a_cut_path_drops_everything_until_it_is_mended() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let forwarder = Forwarder::start(server.local_addr().unwrap(), Duration::ZERO).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        forwarder.cut(true);
        client.send_to(b"lost", forwarder.addr()).unwrap();
        let mut buf = [0u8; 16];
        assert!(
            server.recv_from(&mut buf).is_err(),
            "a cut path delivers nothing"
        );
        assert_eq!(forwarder.dropped(), 1);
        forwarder.cut(false);
        client.send_to(b"found", forwarder.addr()).unwrap();
        let (n, _) = server.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"found");
    }

    #[test]
    fn only_loopback_upstreams() {
        let err = Forwarder::start("192.0.2.1:9".parse().unwrap(), Duration::ZERO).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
