//! Receive windows that follow the path. A fixed QUIC window caps one upload at
//! window ÷ RTT (1 MiB over a 100 ms round trip: 10 MB/s), so each connection's window
//! (QUIC `MAX_DATA`) starts at a floor and doubles while its jobs consume it faster than a
//! quarter of what it allows per round trip (quic-go's auto-tuning rule), up to a ceiling.
//! Every byte above the floor is charged against one server-wide [`Budget`], so many
//! connections cannot hold large windows at once; a connection whose jobs read nothing for a
//! while falls back to the floor. The per-stream window is generous and fixed (quinn applies
//! it to streams as they open); the connection window, which quinn lets us change at any
//! time (`Connection::set_receive_window`), is the one that is steered.
//!
//! [`Tuner`] is the arithmetic, sans-IO (the time, the RTT and the bytes read are passed in,
//! as in quinn-proto); [`ConnectionWindow`] applies it to a quinn connection.

use quinn::{Connection, VarInt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::debug;

/// A connection whose jobs read nothing for this long (or 16 round trips, if longer) goes
/// back to the floor.
const IDLE: Duration = Duration::from_secs(1);
/// How often a connection checks whether it went idle.
const TICK: Duration = Duration::from_millis(250);

/// The range every connection's window moves in (`[transport]` config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bounds {
    /// Where a window starts, and the least it is ever given (not charged to the budget).
    pub floor: u64,
    /// The most one connection's window grows to.
    pub ceiling: u64,
}

/// The server-wide budget of window bytes above the floors.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: u64,
    held: AtomicU64,
    grown: AtomicU64,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub(crate) fn new(limit: u64) -> Budget {
        Budget {
            limit,
            held: AtomicU64::new(0),
            grown: AtomicU64::new(0),
        }
    }

    /// Takes up to `want` bytes; returns how many it got (0 when the budget is spent).
    fn take(&self, want: u64) -> u64 {
        let mut held = self.held.load(Ordering::Relaxed);
        loop {
            let got = want.min(self.limit.saturating_sub(held));
            if got == 0 {
                return 0;
            }
            match self.held.compare_exchange_weak(
                held,
                held + got,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return got,
                Err(now) => held = now,
            }
        }
    }

    /// Returns `bytes` taken earlier.
    fn give_back(&self, bytes: u64) {
        if bytes > 0 {
            let _ = self
                .held
                .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |held| {
                    Some(held.saturating_sub(bytes))
                });
        }
    }

    /// Bytes held now by every connection's window above its floor.
    pub(crate) fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// The budget.
    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// How many times a connection's window grew.
    pub(crate) fn grown(&self) -> u64 {
        self.grown.load(Ordering::Relaxed)
    }
}

/// One connection's window, as arithmetic: told the bytes its jobs have read so far, the time
/// and the RTT, it says when the window should change.
#[derive(Debug, Clone)]
pub(crate) struct Tuner {
    bounds: Bounds,
    window: u64,
    /// Credit announced before the window shrank that the client may still use: QUIC cannot
    /// take credit back, so it stays charged until reads have paid it off (quinn withholds
    /// new credit for as long).
    unpaid: u64,
    /// Bytes read so far.
    read: u64,
    /// When the current measuring epoch began, and `read` then.
    epoch_start: Instant,
    epoch_read: u64,
    /// When reads last moved.
    last_read: Instant,
}

impl Tuner {
    /// A window at the floor.
    pub(crate) fn new(bounds: Bounds, now: Instant) -> Tuner {
        Tuner {
            bounds,
            window: bounds.floor,
            unpaid: 0,
            read: 0,
            epoch_start: now,
            epoch_read: 0,
            last_read: now,
        }
    }

    /// The window now.
    pub(crate) fn window(&self) -> u64 {
        self.window
    }

    /// Bytes above the floor this connection holds from the budget.
    pub(crate) fn held(&self) -> u64 {
        self.window - self.bounds.floor + self.unpaid
    }

    /// Below this many bytes read in total, [`Tuner::read`] has nothing to do (so a caller
    /// may skip it).
    pub(crate) fn next_check(&self) -> u64 {
        if self.unpaid > 0 {
            return self.read;
        }
        self.epoch_read + self.window / 2
    }

    /// The jobs have read `read` bytes in total by `now`, over a path of round trip `rtt`.
    /// Once half the window was read in this epoch, the epoch ends; if that took less than
    /// 4 × RTT × (read ÷ window), the window, not the jobs, held the rate back: it doubles (as
    /// far as the ceiling and the budget allow). Returns the new window when it grew.
    pub(crate) fn read(
        &mut self,
        read: u64,
        now: Instant,
        rtt: Duration,
        budget: &Budget,
    ) -> Option<u64> {
        self.observe(read, now, budget);
        let in_epoch = self.read - self.epoch_read;
        if in_epoch <= self.window / 2 {
            return None;
        }
        let elapsed = now.saturating_duration_since(self.epoch_start);
        let fast = window_limited(in_epoch, self.window, elapsed, rtt);
        self.start_epoch(now);
        if !fast || self.window >= self.bounds.ceiling {
            return None;
        }
        let want = self.window.saturating_mul(2).min(self.bounds.ceiling) - self.window;
        let got = budget.take(want);
        if got == 0 {
            return None;
        }
        self.window += got;
        budget.grown.fetch_add(1, Ordering::Relaxed);
        Some(self.window)
    }

    /// At `now`, with `read` bytes read in total: a window above the floor whose jobs read
    /// nothing for [`IDLE`] (or 16 round trips) goes back to the floor. Returns the new window
    /// when it shrank.
    pub(crate) fn tick(
        &mut self,
        read: u64,
        now: Instant,
        rtt: Duration,
        budget: &Budget,
    ) -> Option<u64> {
        self.observe(read, now, budget);
        let idle = IDLE.max(rtt.saturating_mul(16));
        if self.window == self.bounds.floor || now.saturating_duration_since(self.last_read) < idle
        {
            return None;
        }
        self.unpaid += self.window - self.bounds.floor;
        self.window = self.bounds.floor;
        self.start_epoch(now);
        Some(self.window)
    }

    /// Gives everything held back to the budget (the connection is gone).
    pub(crate) fn release(&mut self, budget: &Budget) {
        budget.give_back(self.held());
        self.window = self.bounds.floor;
        self.unpaid = 0;
    }

    /// Takes in the reads since the last call: they pay off unpaid credit.
    fn observe(&mut self, read: u64, now: Instant, budget: &Budget) {
        if read <= self.read {
            return;
        }
        let paid = self.unpaid.min(read - self.read);
        self.unpaid -= paid;
        budget.give_back(paid);
        self.read = read;
        self.last_read = now;
    }

    fn start_epoch(&mut self, now: Instant) {
        self.epoch_start = now;
        self.epoch_read = self.read;
    }
}

/// Whether `read` bytes of a `window` were consumed within 4 × `rtt` × (read ÷ window): at
/// more than a quarter of the rate the window allows (window ÷ RTT), a sign that the window
/// limits the transfer. Without an RTT estimate, never.
fn window_limited(read: u64, window: u64, elapsed: Duration, rtt: Duration) -> bool {
    if rtt.is_zero() || window == 0 {
        return false;
    }
    elapsed.as_nanos().saturating_mul(u128::from(window))
        < rtt
            .as_nanos()
            .saturating_mul(4)
            .saturating_mul(u128::from(read))
}

/// One connection's window, applied: the transports report what its jobs read, the tuner
/// decides, the quinn connection is told. Dropping it gives its share back to the budget.
#[derive(Debug)]
pub(crate) struct ConnectionWindow {
    connection: Connection,
    budget: Arc<Budget>,
    tuner: Mutex<Tuner>,
    /// Bytes read so far (the fast path: no lock below `check_at`).
    read: AtomicU64,
    check_at: AtomicU64,
}

impl ConnectionWindow {
    /// The window of `connection`, starting at the floor (quinn's transport config gave it).
    pub(crate) fn new(
        connection: Connection,
        bounds: Bounds,
        budget: Arc<Budget>,
    ) -> Arc<ConnectionWindow> {
        let tuner = Tuner::new(bounds, Instant::now());
        let check_at = tuner.next_check();
        Arc::new(ConnectionWindow {
            connection,
            budget,
            tuner: Mutex::new(tuner),
            read: AtomicU64::new(0),
            check_at: AtomicU64::new(check_at),
        })
    }

    /// A job on this connection read `bytes` of its body.
    pub(crate) fn consumed(&self, bytes: usize) {
        let read = self.read.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64;
        if read < self.check_at.load(Ordering::Relaxed) {
            return;
        }
        let rtt = self.connection.rtt();
        self.steer(|tuner, budget| tuner.read(read, Instant::now(), rtt, budget));
    }

    /// Checks now and then, until the connection closes, whether it went idle.
    pub(crate) async fn watch(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.connection.closed() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
            let read = self.read.load(Ordering::Relaxed);
            let rtt = self.connection.rtt();
            self.steer(|tuner, budget| tuner.tick(read, Instant::now(), rtt, budget));
        }
    }

    fn steer(&self, decide: impl FnOnce(&mut Tuner, &Budget) -> Option<u64>) {
        let mut tuner = self.lock();
        let before = tuner.window();
        if let Some(window) = decide(&mut tuner, &self.budget) {
            debug!(
                from = before,
                to = window,
                rtt_ms = self.connection.rtt().as_secs_f64() * 1e3,
                held = self.budget.held(),
                "receive window changed"
            );
            self.connection
                .set_receive_window(VarInt::from_u64(window).unwrap_or(VarInt::MAX));
        }
        self.check_at.store(tuner.next_check(), Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tuner> {
        self.tuner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for ConnectionWindow {
    fn drop(&mut self) {
        let budget = self.budget.clone();
        self.lock().release(&budget);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;
    const BOUNDS: Bounds = Bounds {
        floor: 2 * MIB,
        ceiling: 16 * MIB,
    };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A tuner and the time it started.
    fn tuner() -> (Tuner, Instant) {
        let t0 = Instant::now();
        (Tuner::new(BOUNDS, t0), t0)
    }

    #[test]
    fn a_window_limited_transfer_doubles_the_window_up_to_the_ceiling() {
        let (mut tuner, t0) = tuner();
        let budget = Budget::new(64 * MIB);
        let rtt = ms(100);
        // A window-limited sender delivers one window per round trip.
        let (mut now, mut read) = (t0, 0);
        let mut windows = Vec::new();
        for _ in 0..6 {
            now += rtt;
            read += tuner.window();
            if let Some(w) = tuner.read(read, now, rtt, &budget) {
                windows.push(w);
            }
        }
        assert_eq!(windows, [4 * MIB, 8 * MIB, 16 * MIB]);
        assert_eq!(tuner.held(), 14 * MIB);
        assert_eq!(budget.held(), 14 * MIB);
        assert_eq!(budget.grown(), 3);
    }

    #[test]
    fn a_job_slower_than_its_window_keeps_the_floor() {
        let (mut tuner, t0) = tuner();
        let budget = Budget::new(64 * MIB);
        let rtt = ms(100);
        // 2 MB/s through a 2 MiB window over 100 ms: the window allows 20 MB/s.
        let (mut now, mut read) = (t0, 0);
        for _ in 0..50 {
            now += ms(100);
            read += 200_000;
            assert_eq!(tuner.read(read, now, rtt, &budget), None);
        }
        assert_eq!(tuner.window(), BOUNDS.floor);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn nothing_is_decided_before_half_the_window_is_read() {
        let (mut tuner, t0) = tuner();
        let budget = Budget::new(64 * MIB);
        assert_eq!(tuner.next_check(), MIB);
        // Fast, but only half a window: too early to tell.
        assert_eq!(tuner.read(MIB, t0 + ms(1), ms(100), &budget), None);
        assert_eq!(
            tuner.read(MIB + 1, t0 + ms(2), ms(100), &budget),
            Some(4 * MIB)
        );
        assert_eq!(tuner.next_check(), MIB + 1 + 2 * MIB);
    }

    #[test]
    fn without_an_rtt_the_window_never_grows() {
        let (mut tuner, t0) = tuner();
        let budget = Budget::new(64 * MIB);
        assert_eq!(
            tuner.read(2 * MIB, t0 + ms(1), Duration::ZERO, &budget),
            None
        );
    }

    #[test]
    fn growth_is_charged_against_the_budget_and_stops_when_it_is_spent() {
        let budget = Budget::new(3 * MIB);
        let (mut a, t0) = tuner();
        let mut b = a.clone();
        let rtt = ms(50);
        // a takes 2 MiB (2 -> 4), b the last 1 MiB (2 -> 3), then nothing is left.
        assert_eq!(a.read(2 * MIB, t0 + ms(10), rtt, &budget), Some(4 * MIB));
        assert_eq!(b.read(2 * MIB, t0 + ms(10), rtt, &budget), Some(3 * MIB));
        assert_eq!(a.read(6 * MIB, t0 + ms(20), rtt, &budget), None);
        assert_eq!(budget.held(), 3 * MIB);
        // a closes: its share is free for b.
        a.release(&budget);
        assert_eq!(budget.held(), MIB);
        assert_eq!(b.read(5 * MIB, t0 + ms(30), rtt, &budget), Some(5 * MIB));
        assert_eq!(budget.held(), 3 * MIB);
        b.release(&budget);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn an_idle_connection_falls_back_to_the_floor_and_pays_back_as_it_reads() {
        let (mut tuner, t0) = tuner();
        let budget = Budget::new(64 * MIB);
        let rtt = ms(20);
        assert_eq!(
            tuner.read(2 * MIB, t0 + ms(10), rtt, &budget),
            Some(4 * MIB)
        );
        // Reads moving: no shrink.
        assert_eq!(tuner.tick(3 * MIB, t0 + ms(500), rtt, &budget), None);
        // Less than IDLE since the last read: no shrink.
        assert_eq!(tuner.tick(3 * MIB, t0 + ms(1400), rtt, &budget), None);
        // A second without reads: back to the floor; the credit already announced stays
        // charged until it is read.
        assert_eq!(
            tuner.tick(3 * MIB, t0 + ms(1600), rtt, &budget),
            Some(2 * MIB)
        );
        assert_eq!(tuner.window(), BOUNDS.floor);
        assert_eq!(budget.held(), 2 * MIB);
        assert_eq!(
            tuner.next_check(),
            3 * MIB,
            "unpaid credit: every read counts"
        );
        tuner.tick(3 * MIB + MIB / 2, t0 + ms(1700), rtt, &budget);
        assert_eq!(budget.held(), 3 * MIB / 2);
        assert_eq!(tuner.tick(6 * MIB, t0 + ms(1800), rtt, &budget), None);
        assert_eq!(budget.held(), 0);
        assert_eq!(tuner.held(), 0);
    }

    #[test]
    fn long_round_trips_wait_longer_before_calling_a_connection_idle() {
        let (mut tuner, t0) = tuner();
        let budget = Budget::new(64 * MIB);
        let rtt = ms(100);
        assert_eq!(
            tuner.read(2 * MIB, t0 + ms(10), rtt, &budget),
            Some(4 * MIB)
        );
        // 16 round trips of 100 ms: 1.6 s.
        assert_eq!(tuner.tick(2 * MIB, t0 + ms(1500), rtt, &budget), None);
        assert_eq!(
            tuner.tick(2 * MIB, t0 + ms(1700), rtt, &budget),
            Some(2 * MIB)
        );
    }

    #[test]
    fn the_window_limited_test_is_quic_gos() {
        // Half a window in 2 RTT is the boundary.
        assert!(!window_limited(MIB, 2 * MIB, ms(200), ms(100)));
        assert!(window_limited(MIB, 2 * MIB, ms(199), ms(100)));
        // A whole window in 4 RTT is the boundary.
        assert!(!window_limited(2 * MIB, 2 * MIB, ms(400), ms(100)));
        assert!(window_limited(2 * MIB, 2 * MIB, ms(399), ms(100)));
    }

    #[test]
    fn the_budget_never_goes_over_or_under() {
        let budget = Budget::new(10);
        assert_eq!(budget.take(4), 4);
        assert_eq!(budget.take(8), 6);
        assert_eq!(budget.take(1), 0);
        budget.give_back(20);
        assert_eq!(budget.held(), 0);
        assert_eq!(budget.limit(), 10);
    }
}
