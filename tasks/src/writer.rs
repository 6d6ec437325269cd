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
//! A change that fails is answered with its error and the group is retried without it, so one
//! bad change never fails the others. A failed commit fails every change of the group. A panic
//! (a bug) while applying a change or committing counts as such a failure: it is answered with
//! [`StoreError::Panicked`] and the writer goes on, instead of failing every later write. (If
//! redb itself is left broken, the next groups fail with its errors: still answered, never
//! left waiting.)

use crate::store::StoreError;
use redb::{Database, Durability, WriteTransaction};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::oneshot;

/// Changes committed together, at most.
const MAX_GROUP: usize = 1024;

/// A change to make in the writer's next transaction.
pub trait Change: Send + 'static {
    /// What the change reports once committed (e.g. counts).
    type Output: Send + 'static;

    /// Makes the change in `txn`. It may be called again in a fresh transaction (when another
    /// change of the same group failed), so it must not use itself up.
    fn apply(&mut self, txn: &WriteTransaction) -> Result<Self::Output, StoreError>;
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

/// The writer thread: takes what is queued, commits it as one group, repeats until every
/// sender is gone.
fn run(db: &Database, changes: &Receiver<Box<dyn Queued>>) {
    while let Ok(first) = changes.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match changes.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        commit_group(db, group);
    }
}

/// Applies a group in one transaction and commits it; a change that fails is answered with
/// its error and the rest are tried again without it.
fn commit_group(db: &Database, mut group: Vec<Box<dyn Queued>>) {
    while !group.is_empty() {
        let txn = match catch_unwind(AssertUnwindSafe(|| begin(db, &group)))
            .map_err(panicked)
            .and_then(|begun| begun)
        {
            Ok(txn) => txn,
            Err(e) => return answer_all(group, &e),
        };
        match apply_all(&txn, &mut group) {
            Ok(()) => {
                let committed = catch_unwind(AssertUnwindSafe(|| txn.commit()))
                    .map_err(panicked)
                    .and_then(|done| done.map_err(StoreError::redb("commit")));
                return match committed {
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
        catch_unwind(AssertUnwindSafe(|| change.apply(txn)))
            .map_err(panicked)
            .and_then(|applied| applied)
            .map_err(|e| (index, e))?;
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
        let txn = store.database().begin_read().unwrap();
        let table = txn.open_table(TABLE).unwrap();
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
