//! The store's single writer: one thread that applies every job's changes and commits them in
//! groups.
//!
//! redb runs one write transaction at a time, and a durable commit costs an fsync. So instead
//! of each job opening its own transaction, jobs [`submit`](crate::Store::submit) changes and
//! get a [`Ticket`]. The writer takes every change queued at that moment, applies them in
//! submission order in one transaction, commits once, and only then answers each ticket. Many
//! small jobs share one fsync, and a big job decodes its next batch while the writer stores
//! the last one.
//!
//! A big change (a job's batch of thousands of records: [`Change::weight`] of at least
//! [`HEAVY`]) does not make small ones wait for it: small changes queued with it commit first,
//! and a big change that can be applied in parts ([`Change::apply_part`]) stops when small
//! changes arrived (it asks [`Interrupt::requested`] every few records; each part runs at
//! least [`MIN_PART`]) to let them in. What it wrote so far is committed without an
//! fsync (durable with the small changes' commit), the small changes commit, and the big one
//! goes on in a new transaction. Alone, a big change still commits once, in one transaction:
//! parts cost nothing unless someone is waiting. So a one-record job beside a 1M-record upload
//! waits milliseconds, not the upload's batch commit (hundreds of ms).
//!
//! A change that fails is answered with its error and the group is retried without it, so one
//! bad change never fails the others. A failed commit fails every change of the group. A panic
//! (a bug) while applying a change or committing counts as such a failure: it is answered with
//! [`StoreError::Panicked`] and the writer goes on, instead of failing every later write. (If
//! redb itself is left broken, the next groups fail with its errors: still answered, never
//! left waiting.)

use crate::store::StoreError;
use redb::{Database, Durability, WriteTransaction};
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Changes committed together, at most.
const MAX_GROUP: usize = 1024;

/// A heavy change applies at least this long before small changes may interrupt it, so that a
/// stream of small jobs slows a big upload down but never stops it. (Each interruption costs
/// the writer an fsync of what the part wrote; shorter parts make small jobs quicker and big
/// uploads slower beside them.)
pub const MIN_PART: Duration = Duration::from_millis(2);

/// A change whose [`Change::weight`] is at least this is heavy: it never shares a transaction
/// with small changes, which commit before it and, when it comes in parts, between its parts.
pub const HEAVY: usize = 64 * 1024;

/// A change to make in the writer's next transaction.
pub trait Change: Send + 'static {
    /// What the change reports once committed (e.g. counts).
    type Output: Send + 'static;

    /// Makes the change in `txn`. It may be called again in a fresh transaction (when another
    /// change of the same group failed), so it must not use itself up.
    fn apply(&mut self, txn: &WriteTransaction) -> Result<Self::Output, StoreError>;

    /// Makes the change in a transaction of the PostgreSQL store, which commits it (see
    /// [`crate::store::postgres`]). It may be called again in a fresh transaction (when the
    /// database asked to retry: a serialization failure), so it must not use itself up. The
    /// default refuses: the change works with redb only so far.
    fn apply_postgres<'a>(&'a mut self, txn: &'a PgTransaction<'_>) -> PgFuture<'a, Self::Output> {
        let _ = txn;
        Box::pin(std::future::ready(Err(StoreError::NotOnPostgres)))
    }

    /// About how many bytes the change writes; from [`HEAVY`] on, it is applied alone, with
    /// [`Change::apply_part`]. Most changes are small (the default, 0).
    fn weight(&self) -> usize {
        0
    }

    /// For a heavy change: makes the next part of it, going on where the last call stopped,
    /// until it is done or `interrupt` asks it to stop (ask every few records: it is cheap).
    /// Between two calls the writer commits `txn` without an fsync and passes a new
    /// transaction to the next call. Returns the output once the change is all applied.
    ///
    /// A call that fails ends the change: it is answered with the error and never called
    /// again. The parts committed before it stay in the store (none of them was reported), so
    /// a change in parts must be one whose parts may stand alone, such as records upserted by
    /// key. The default applies the whole change at once.
    fn apply_part(
        &mut self,
        txn: &WriteTransaction,
        interrupt: &mut Interrupt<'_>,
    ) -> Result<Part<Self::Output>, StoreError> {
        let _ = interrupt;
        self.apply(txn).map(Part::Done)
    }
}

pub use crate::store::PgTransaction;

/// What [`Change::apply_postgres`] returns: the change, made in the transaction.
pub type PgFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Asked by a heavy change while it applies: whether small changes wait for the writer, so
/// the change should end its part there (see [`Change::apply_part`]).
pub struct Interrupt<'a>(&'a mut dyn FnMut() -> bool);

impl<'a> Interrupt<'a> {
    /// An interrupt that asks `waiting` (used by the writer, and by tests).
    pub fn new(waiting: &'a mut dyn FnMut() -> bool) -> Interrupt<'a> {
        Interrupt(waiting)
    }

    /// Whether the change should stop here.
    pub fn requested(&mut self) -> bool {
        (self.0)()
    }
}

/// What [`Change::apply_part`] got to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part<T> {
    /// The change is all applied; its output.
    Done(T),
    /// More parts follow.
    More,
}

/// When a change must be on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    /// Durable when its ticket is answered (the group's commit is fsync'd).
    Now,
    /// Durable with the store's next durable commit; its ticket is answered without waiting
    /// for the disk. A crash before then loses it.
    WithNextCommit,
}

/// The answer to one submitted change, once its group committed: waited on by a thread
/// ([`Ticket::wait`]) or awaited by async code ([`Ticket::answer`]).
#[derive(Debug)]
pub struct Ticket<T> {
    answer: oneshot::Receiver<Result<T, StoreError>>,
}

impl<T> Ticket<T> {
    /// A ticket answered through `answer` (the PostgreSQL store's transactions).
    pub(crate) fn new(answer: oneshot::Receiver<Result<T, StoreError>>) -> Ticket<T> {
        Ticket { answer }
    }

    /// Waits until the change's group committed (or failed). Blocks the thread: never call it
    /// from async code (use [`Ticket::answer`]).
    pub fn wait(self) -> Result<T, StoreError> {
        self.answer
            .blocking_recv()
            .unwrap_or(Err(StoreError::WriterStopped))
    }

    /// Awaits the change's commit (or failure).
    pub async fn answer(self) -> Result<T, StoreError> {
        self.answer.await.unwrap_or(Err(StoreError::WriterStopped))
    }

    /// The answer if it is there, without waiting.
    pub fn try_wait(&mut self) -> Option<Result<T, StoreError>> {
        match self.answer.try_recv() {
            Ok(answer) => Some(answer),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(Err(StoreError::WriterStopped)),
        }
    }
}

/// A change with its ticket's sending end, type-erased so one queue holds every kind.
trait Queued: Send {
    fn apply(&mut self, txn: &WriteTransaction) -> Result<(), StoreError>;
    /// Whether the change is all applied (its output kept for the answer).
    fn apply_part(
        &mut self,
        txn: &WriteTransaction,
        interrupt: &mut Interrupt<'_>,
    ) -> Result<bool, StoreError>;
    fn heavy(&self) -> bool;
    fn sync(&self) -> Sync;
    fn answer(self: Box<Self>, result: Result<(), StoreError>);
}

struct Entry<C: Change> {
    change: C,
    sync: Sync,
    output: Option<C::Output>,
    reply: oneshot::Sender<Result<C::Output, StoreError>>,
}

impl<C: Change> Queued for Entry<C> {
    fn apply(&mut self, txn: &WriteTransaction) -> Result<(), StoreError> {
        self.output = Some(self.change.apply(txn)?);
        Ok(())
    }

    fn apply_part(
        &mut self,
        txn: &WriteTransaction,
        interrupt: &mut Interrupt<'_>,
    ) -> Result<bool, StoreError> {
        match self.change.apply_part(txn, interrupt)? {
            Part::Done(output) => {
                self.output = Some(output);
                Ok(true)
            }
            Part::More => Ok(false),
        }
    }

    fn heavy(&self) -> bool {
        self.change.weight() >= HEAVY
    }

    fn sync(&self) -> Sync {
        self.sync
    }

    fn answer(self: Box<Self>, result: Result<(), StoreError>) {
        let Entry {
            change,
            output,
            reply,
            ..
        } = *self;
        // Dropped before the answer, so that the submitter may take back what it shared.
        drop(change);
        let answer =
            result.map(|()| output.expect("a change is answered Ok only after it was applied"));
        // The submitter may have gone (its job ended); nobody is left to tell.
        let _ = reply.send(answer);
    }
}

/// The writer thread and the way to it. Dropping it stops the thread once the queue is done.
///
/// The queue has no fixed bound: what waits in it is bounded by the jobs, each of which has
/// at most one batch and one history entry waiting for its answer.
#[derive(Debug)]
pub(crate) struct Writer {
    queue: Option<Sender<Box<dyn Queued>>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer thread for `db`.
    pub(crate) fn start(db: Arc<Database>) -> Result<Writer, std::io::Error> {
        let (queue, changes) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("edge-store-writer".into())
            .spawn(move || run(&db, &changes))?;
        Ok(Writer {
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    /// Queues a change; never waits.
    pub(crate) fn submit<C: Change>(&self, change: C, sync: Sync) -> Ticket<C::Output> {
        let (reply, answer) = oneshot::channel();
        let entry = Box::new(Entry {
            change,
            sync,
            output: None,
            reply,
        });
        if let Some(queue) = &self.queue {
            // On failure the entry (and its reply end) is dropped: the ticket says so.
            let _ = queue.send(entry);
        }
        Ticket { answer }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.queue.take();
        if let Some(thread) = self.thread.take() {
            // A panic in the writer was already reported to every waiting ticket.
            let _ = thread.join();
        }
    }
}

/// The writer thread: takes what is queued, commits the small changes as one group, then
/// each heavy change alone (letting small changes in between its parts); repeats until every
/// sender is gone.
fn run(db: &Database, changes: &Receiver<Box<dyn Queued>>) {
    let mut heavy = VecDeque::new();
    loop {
        if heavy.is_empty() {
            match changes.recv() {
                Ok(first) if first.heavy() => heavy.push_back(first),
                Ok(first) => commit_small(db, vec![first], changes, &mut heavy),
                Err(_) => return,
            }
        }
        commit_small(db, Vec::new(), changes, &mut heavy);
        if let Some(change) = heavy.pop_front() {
            apply_heavy(db, change, changes, &mut heavy);
        }
    }
}

/// Takes every change queued now: the small ones into `small` (in submission order), the heavy
/// ones behind those already waiting.
fn take_queued(
    changes: &Receiver<Box<dyn Queued>>,
    small: &mut Vec<Box<dyn Queued>>,
    heavy: &mut VecDeque<Box<dyn Queued>>,
) {
    while small.len() < MAX_GROUP {
        match changes.try_recv() {
            Ok(next) if next.heavy() => heavy.push_back(next),
            Ok(next) => small.push(next),
            Err(_) => break,
        }
    }
}

/// Commits `small` and the small changes queued now as one group (nothing if there are none);
/// heavy ones found in the queue wait in `heavy`.
fn commit_small(
    db: &Database,
    mut small: Vec<Box<dyn Queued>>,
    changes: &Receiver<Box<dyn Queued>>,
    heavy: &mut VecDeque<Box<dyn Queued>>,
) {
    take_queued(changes, &mut small, heavy);
    if !small.is_empty() {
        commit_group(db, small);
    }
}

/// Applies one heavy change in one transaction, unless small changes arrive meanwhile: then
/// the change stops its part, the transaction so far is committed (without an fsync), the
/// small changes commit, and the change goes on in a new transaction. The last part's commit
/// answers the change.
fn apply_heavy(
    db: &Database,
    mut change: Box<dyn Queued>,
    changes: &Receiver<Box<dyn Queued>>,
    heavy: &mut VecDeque<Box<dyn Queued>>,
) {
    loop {
        let txn = match guarded(|| begin(db, std::slice::from_ref(&change))) {
            Ok(txn) => txn,
            Err(e) => return change.answer(Err(e)),
        };
        let mut small = Vec::new();
        let earliest = Instant::now() + MIN_PART;
        let mut waiting = || {
            if Instant::now() < earliest {
                return false;
            }
            take_queued(changes, &mut small, heavy);
            !small.is_empty()
        };
        let applied = guarded(|| change.apply_part(&txn, &mut Interrupt::new(&mut waiting)));
        match applied {
            // Dropping the transaction aborts its part; earlier parts stay (see `apply_part`).
            Err(e) => {
                drop(txn);
                change.answer(Err(e));
                return commit_small(db, small, changes, heavy);
            }
            Ok(true) => {
                change.answer(commit(txn));
                return commit_small(db, small, changes, heavy);
            }
            Ok(false) => {}
        }
        // What the change wrote so far becomes durable with the small changes' commit.
        let parted = guarded(|| {
            let mut txn = txn;
            txn.set_durability(Durability::None)
                .map_err(|e| StoreError::redb("set durability")(redb::Error::from(e)))?;
            Ok(txn)
        })
        .and_then(commit);
        commit_small(db, small, changes, heavy);
        if let Err(e) = parted {
            return change.answer(Err(e));
        }
    }
}

/// Runs `f`, turning a panic (a bug) into an error.
fn guarded<T>(f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    catch_unwind(AssertUnwindSafe(f))
        .map_err(panicked)
        .and_then(|result| result)
}

/// Commits `txn`.
fn commit(txn: WriteTransaction) -> Result<(), StoreError> {
    guarded(|| txn.commit().map_err(StoreError::redb("commit")))
}

/// Applies a group in one transaction and commits it; a change that fails is answered with
/// its error and the rest are tried again without it.
fn commit_group(db: &Database, mut group: Vec<Box<dyn Queued>>) {
    while !group.is_empty() {
        let txn = match guarded(|| begin(db, &group)) {
            Ok(txn) => txn,
            Err(e) => return answer_all(group, &e),
        };
        match apply_all(&txn, &mut group) {
            Ok(()) => {
                return match commit(txn) {
                    Ok(()) => group.into_iter().for_each(|change| change.answer(Ok(()))),
                    Err(e) => answer_all(group, &e),
                };
            }
            Err((index, e)) => {
                // Dropping the transaction aborts it; nothing of the group was written.
                drop(txn);
                group.remove(index).answer(Err(e));
            }
        }
    }
}

/// A write transaction for `group`: fsync'd if any change needs it, quick-repair on (see
/// [`crate::Store::write`]).
fn begin(db: &Database, group: &[Box<dyn Queued>]) -> Result<WriteTransaction, StoreError> {
    let mut txn = crate::store::begin_write(db)?;
    if group
        .iter()
        .all(|change| change.sync() == Sync::WithNextCommit)
    {
        txn.set_durability(Durability::None)
            .map_err(|e| StoreError::redb("set durability")(redb::Error::from(e)))?;
    }
    Ok(txn)
}

/// Applies every change in order; on the first failure, its index and error.
fn apply_all(
    txn: &WriteTransaction,
    group: &mut [Box<dyn Queued>],
) -> Result<(), (usize, StoreError)> {
    for (index, change) in group.iter_mut().enumerate() {
        // A change that panicked is dropped from the group like one that failed; the
        // transaction it may have half-written is aborted by the caller.
        guarded(|| change.apply(txn)).map_err(|e| (index, e))?;
    }
    Ok(())
}

/// A caught panic as an error (the panic hook has already printed it, with its location).
fn panicked(payload: Box<dyn std::any::Any + Send>) -> StoreError {
    let message = payload
        .downcast_ref::<&str>()
        .map(|m| (*m).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    tracing::error!(%message, "a store write panicked; it was dropped and the writer goes on");
    StoreError::Panicked { message }
}

/// Answers every change of a group that could not be committed.
fn answer_all(group: Vec<Box<dyn Queued>>, error: &StoreError) {
    let message = error.to_string();
    for change in group {
        change.answer(Err(StoreError::GroupCommit {
            message: message.clone(),
        }));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreOptions};
    use redb::{ReadableDatabase, ReadableTable, TableDefinition};
    use std::sync::mpsc::Receiver;

    const TABLE: TableDefinition<u64, u64> = TableDefinition::new("writer_test");

    /// Writes `key -> value`; fails when `fail` is set. With a gate, it first says it is
    /// being applied, then waits to be let through.
    struct Put {
        key: u64,
        value: u64,
        fail: bool,
        panic: bool,
        gate: Option<(mpsc::Sender<()>, Receiver<()>)>,
        applied: u32,
    }

    impl Put {
        fn new(key: u64, value: u64) -> Put {
            Put {
                key,
                value,
                fail: false,
                panic: false,
                gate: None,
                applied: 0,
            }
        }
    }

    impl Change for Put {
        type Output = u32;

        fn apply(&mut self, txn: &WriteTransaction) -> Result<u32, StoreError> {
            if let Some((entered, gate)) = self.gate.take() {
                entered.send(()).unwrap();
                gate.recv().unwrap();
            }
            self.applied += 1;
            let mut table = txn.open_table(TABLE).map_err(StoreError::redb("open"))?;
            if self.panic {
                // Half-written, then a bug.
                table.insert(self.key, self.value).unwrap();
                panic!("planted panic");
            }
            drop(table);
            if self.fail {
                return Err(StoreError::Corrupt {
                    key: self.key.to_string(),
                    message: "planted failure".into(),
                });
            }
            let mut table = txn.open_table(TABLE).map_err(StoreError::redb("open"))?;
            table
                .insert(self.key, self.value)
                .map_err(StoreError::redb("insert"))?;
            Ok(self.applied)
        }
    }

    fn stored(store: &Store) -> Vec<(u64, u64)> {
        let txn = store.database().unwrap().begin_read().unwrap();
        let table = match txn.open_table(TABLE) {
            Err(redb::TableError::TableDoesNotExist(_)) => return Vec::new(),
            table => table.unwrap(),
        };
        table
            .iter()
            .unwrap()
            .map(|e| {
                let (k, v) = e.unwrap();
                (k.value(), v.value())
            })
            .collect()
    }

    /// Submits a change that holds the writer (alone in its group) until the returned
    /// sender is used.
    fn hold_writer(store: &Store) -> (Ticket<u32>, mpsc::Sender<()>) {
        let (entered_tx, entered) = mpsc::channel();
        let (open, gate) = mpsc::channel();
        let ticket = store.submit(
            Put {
                gate: Some((entered_tx, gate)),
                ..Put::new(100, 100)
            },
            Sync::Now,
        );
        entered.recv().unwrap();
        (ticket, open)
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("edge.redb"), &StoreOptions::default()).unwrap();
        (dir, store)
    }

    #[test]
    fn changes_queued_together_commit_together_in_submission_order() {
        let (_dir, store) = store();
        // The first change holds the writer until the others are queued behind it.
        let (first, open) = hold_writer(&store);
        let queued: Vec<_> = (1..=50)
            .map(|i| store.submit(Put::new(i % 10, i), Sync::Now))
            .collect();
        open.send(()).unwrap();
        assert_eq!(first.wait().unwrap(), 1);
        for ticket in queued {
            ticket.wait().unwrap();
        }
        // Later submissions of a key win.
        let mut expected: Vec<(u64, u64)> = (0..10).map(|k| (k, 40 + k)).collect();
        expected[0] = (0, 50);
        expected.push((100, 100));
        assert_eq!(stored(&store), expected);
    }

    #[test]
    fn a_failing_change_fails_alone_and_the_rest_of_its_group_commits() {
        let (_dir, store) = store();
        let (blocker, open) = hold_writer(&store);
        let good = store.submit(Put::new(1, 1), Sync::Now);
        let bad = store.submit(
            Put {
                fail: true,
                ..Put::new(2, 2)
            },
            Sync::Now,
        );
        let lazy = store.submit(Put::new(3, 3), Sync::WithNextCommit);
        open.send(()).unwrap();
        // The blocker was a group of its own; the three queued behind it made one group,
        // tried twice: up to the bad change, then without it.
        assert_eq!(blocker.wait().unwrap(), 1);
        assert_eq!(good.wait().unwrap(), 2);
        let error = bad.wait().unwrap_err();
        assert!(error.to_string().contains("planted failure"), "{error}");
        assert_eq!(lazy.wait().unwrap(), 1);
        assert_eq!(stored(&store), [(1, 1), (3, 3), (100, 100)]);
    }

    #[test]
    fn a_panicking_change_fails_alone_and_the_writer_goes_on() {
        let (_dir, store) = store();
        let (blocker, open) = hold_writer(&store);
        let good = store.submit(Put::new(1, 1), Sync::Now);
        let buggy = store.submit(
            Put {
                panic: true,
                ..Put::new(2, 2)
            },
            Sync::Now,
        );
        let after = store.submit(Put::new(3, 3), Sync::Now);
        open.send(()).unwrap();
        assert_eq!(blocker.wait().unwrap(), 1);
        let error = buggy.wait().unwrap_err();
        assert!(
            matches!(&error, StoreError::Panicked { message } if message == "planted panic"),
            "{error}"
        );
        assert!(
            error.to_string().contains("not reported as committed"),
            "{error}"
        );
        assert_eq!(good.wait().unwrap(), 2);
        assert_eq!(after.wait().unwrap(), 1);
        // The panicking change's own insert was rolled back with its transaction.
        assert_eq!(stored(&store), [(1, 1), (3, 3), (100, 100)]);
        // Later writes still go through.
        store.submit(Put::new(4, 4), Sync::Now).wait().unwrap();
        assert_eq!(stored(&store).len(), 4);
    }

    #[test]
    fn submitters_on_many_threads_all_get_their_answer() {
        let (_dir, store) = store();
        std::thread::scope(|scope| {
            for thread in 0..8u64 {
                let store = store.clone();
                scope.spawn(move || {
                    for i in 0..50 {
                        let key = thread * 1000 + i;
                        store.submit(Put::new(key, key), Sync::Now).wait().unwrap();
                    }
                });
            }
        });
        assert_eq!(stored(&store).len(), 400);
    }

    /// A heavy change that writes `key + i -> value` in part `i` of `parts`. Before each part
    /// listed in `gates`, it says so and waits to be let through; part `fail_at` fails.
    struct Parts {
        key: u64,
        value: u64,
        parts: u64,
        done: u64,
        fail_at: Option<u64>,
        gates: std::collections::HashMap<u64, (mpsc::Sender<()>, Receiver<()>)>,
    }

    impl Parts {
        fn new(key: u64, parts: u64) -> Parts {
            Parts {
                key,
                value: 1,
                parts,
                done: 0,
                fail_at: None,
                gates: Default::default(),
            }
        }

        /// A gate before part `part`: the receiver hears when the part is about to run, the
        /// sender lets it run.
        fn gate(&mut self, part: u64) -> (Receiver<()>, mpsc::Sender<()>) {
            let (entered_tx, entered) = mpsc::channel();
            let (open, gate) = mpsc::channel();
            self.gates.insert(part, (entered_tx, gate));
            (entered, open)
        }
    }

    impl Change for Parts {
        type Output = u64;

        fn apply(&mut self, _: &WriteTransaction) -> Result<u64, StoreError> {
            unreachable!("a heavy change is applied in parts")
        }

        fn weight(&self) -> usize {
            HEAVY
        }

        fn apply_part(
            &mut self,
            txn: &WriteTransaction,
            interrupt: &mut Interrupt<'_>,
        ) -> Result<Part<u64>, StoreError> {
            while self.done < self.parts {
                if let Some((entered, gate)) = self.gates.remove(&self.done) {
                    entered.send(()).unwrap();
                    gate.recv().unwrap();
                }
                if self.fail_at == Some(self.done) {
                    return Err(StoreError::Corrupt {
                        key: self.done.to_string(),
                        message: "planted failure".into(),
                    });
                }
                let mut table = txn.open_table(TABLE).map_err(StoreError::redb("open"))?;
                table
                    .insert(self.key + self.done, self.value)
                    .map_err(StoreError::redb("insert"))?;
                self.done += 1;
                if self.done < self.parts && interrupt.requested() {
                    return Ok(Part::More);
                }
            }
            Ok(Part::Done(self.done))
        }
    }

    #[test]
    fn a_small_change_commits_between_the_parts_of_a_heavy_one() {
        let (_dir, store) = store();
        let mut heavy = Parts::new(1000, 4);
        let (at_1, open_1) = heavy.gate(1);
        let (at_3, open_3) = heavy.gate(3);
        let heavy = store.submit(heavy, Sync::Now);
        at_1.recv().unwrap();
        // Part 0 is written; the small change arrives while part 1 runs.
        let small = store.submit(Put::new(1, 1), Sync::Now);
        // A part runs at least MIN_PART before it asks who waits; on a fast machine part 1
        // would otherwise end before that and the heavy change would not stop for the small one.
        std::thread::sleep(MIN_PART);
        open_1.send(()).unwrap();
        // Parts 0 and 1 were committed (without an fsync) to let the small change in; it is
        // answered while the heavy change still waits before its part 3.
        at_3.recv().unwrap();
        assert_eq!(small.wait().unwrap(), 1);
        assert_eq!(stored(&store), [(1, 1), (1000, 1), (1001, 1)]);
        open_3.send(()).unwrap();
        assert_eq!(heavy.wait().unwrap(), 4);
        assert_eq!(
            stored(&store),
            [(1, 1), (1000, 1), (1001, 1), (1002, 1), (1003, 1)]
        );
    }

    #[test]
    fn a_heavy_change_alone_commits_once_at_its_end() {
        let (_dir, store) = store();
        let mut heavy = Parts::new(1000, 4);
        let (at_3, open_3) = heavy.gate(3);
        let heavy = store.submit(heavy, Sync::Now);
        at_3.recv().unwrap();
        // Nobody waited: its first three parts are in one open transaction, unseen.
        assert_eq!(stored(&store), []);
        open_3.send(()).unwrap();
        assert_eq!(heavy.wait().unwrap(), 4);
        assert_eq!(stored(&store).len(), 4);
    }

    #[test]
    fn small_changes_queued_with_a_heavy_one_commit_first() {
        let (_dir, store) = store();
        let (blocker, open) = hold_writer(&store);
        let mut heavy = Parts::new(1000, 2);
        let (at_1, open_1) = heavy.gate(1);
        let heavy = store.submit(heavy, Sync::Now);
        let small = store.submit(Put::new(1, 1), Sync::Now);
        open.send(()).unwrap();
        blocker.wait().unwrap();
        // Submitted after the heavy change, committed before it began.
        assert_eq!(small.wait().unwrap(), 1);
        at_1.recv().unwrap();
        assert_eq!(stored(&store), [(1, 1), (100, 100)]);
        open_1.send(()).unwrap();
        heavy.wait().unwrap();
    }

    #[test]
    fn a_heavy_change_that_fails_in_a_part_fails_alone_and_keeps_the_parts_committed() {
        let (_dir, store) = store();
        let mut heavy = Parts::new(1000, 4);
        heavy.fail_at = Some(2);
        let (at_1, open_1) = heavy.gate(1);
        let heavy = store.submit(heavy, Sync::Now);
        at_1.recv().unwrap();
        let small = store.submit(Put::new(1, 1), Sync::Now);
        std::thread::sleep(MIN_PART); // past the part's minimum run, as above
        open_1.send(()).unwrap();
        let error = heavy.wait().unwrap_err();
        assert!(error.to_string().contains("planted failure"), "{error}");
        assert_eq!(small.wait().unwrap(), 1);
        // Parts 0 and 1 were committed to let the small change in; part 2 failed, and part 3
        // never ran. The heavy change reported none of it.
        assert_eq!(stored(&store), [(1, 1), (1000, 1), (1001, 1)]);
        store.submit(Put::new(2, 2), Sync::Now).wait().unwrap();
        assert_eq!(stored(&store).len(), 4);
    }

    #[test]
    fn the_file_closes_when_the_last_clone_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.redb");
        let store = Store::open(&path, &StoreOptions::default()).unwrap();
        let clone = store.clone();
        let ticket = clone.submit(Put::new(7, 7), Sync::WithNextCommit);
        drop(store);
        ticket.wait().unwrap();
        drop(clone);
        let reopened = Store::open(&path, &StoreOptions::default()).unwrap();
        assert_eq!(stored(&reopened), [(7, 7)]);
    }
}
