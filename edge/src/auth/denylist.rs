//! Revoked token ids in memory: every job and request checks the deny-list without touching
//! the store, so authorisation never blocks the async runtime. The store
//! (`edge_tasks::revocations`) is the durable copy: the list is loaded from it at start, a
//! revocation through the control socket is committed there before it is added here (and
//! before it is acknowledged), and what the server learns here (a revoked token's expiry, once
//! the token is presented) is written back off the runtime by [`keep`].
//!
//! The list holds only tokens that can still verify: an entry goes once its token has expired
//! (its `exp` plus the leeway), here and in the store. Entries revoked by id alone keep
//! until their token is presented (and its expiry learned). New revocations past
//! [`MAX_REVOKED`] entries are refused.

use crate::shutdown::Shutdown;
use edge_tasks::revocations::{self, Revoked};
use edge_tasks::{Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The most revoked tokens the server keeps (beyond it, `edge token revoke` is refused).
pub const MAX_REVOKED: usize = 100_000;

/// How often expired entries are dropped.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// The deny-list.
#[derive(Debug, Default)]
pub struct DenyList {
    inner: Mutex<Inner>,
    /// Wakes [`keep`] when an expiry was learned.
    learned: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Inner {
    /// Revoked ids -> the token's `exp`, 0 while not known.
    entries: HashMap<String, u64>,
    /// Expiries learned for entries revoked by id alone, not yet in the store.
    pending: Vec<(String, u64)>,
    /// Subjects (users whose password changed, or who were removed) -> the second up to which
    /// their tokens' `iat` is refused.
    subjects: HashMap<String, u64>,
}

impl DenyList {
    /// An empty list.
    pub fn new() -> DenyList {
        DenyList::default()
    }

    /// The store's list (call once at start; blocking).
    pub fn load(store: &Store) -> Result<DenyList, StoreError> {
        let list = DenyList::new();
        list.reload(store)?;
        Ok(list)
    }

    /// Adds what the store holds and this list does not (what other nodes sharing the store
    /// revoked). Blocking.
    pub fn reload(&self, store: &Store) -> Result<(), StoreError> {
        let revoked = revocations::list(store)?;
        let subjects = edge_tasks::users::revoked_subjects(store)?;
        for Revoked { jti, expires, .. } in revoked {
            self.insert(&jti, expires);
        }
        for (sub, at) in subjects {
            self.revoke_subject(&sub, at);
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the map whole (every update is one insert or
        // remove), so a poisoned lock is used as it is.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the token `jti` (which expires at `exp`) is revoked. Never blocks on I/O. A
    /// revoked token's expiry, unknown until now, is remembered (and later written to the
    /// store, so the entry can be pruned there too).
    pub fn is_revoked(&self, jti: &str, exp: u64) -> bool {
        let mut inner = self.lock();
        let Some(known) = inner.entries.get_mut(jti) else {
            return false;
        };
        if *known == 0 && exp != 0 {
            *known = exp;
            inner.pending.push((jti.to_owned(), exp));
            drop(inner);
            self.learned.notify_one();
        }
        true
    }

    /// Whether the tokens of `sub` issued at `iat` are revoked: the user changed their
    /// password, or was removed, in that second or after. (`iat` counts whole seconds, so a
    /// token of the very second of a change is refused too; a sign-in waits for the next.)
    pub fn is_subject_revoked(&self, sub: &str, iat: u64) -> bool {
        self.lock().subjects.get(sub).is_some_and(|at| iat <= *at)
    }

    /// Refuses the tokens of `sub` issued up to `at`, in seconds (call once the store has it).
    pub fn revoke_subject(&self, sub: &str, at: u64) {
        let mut inner = self.lock();
        let entry = inner.subjects.entry(sub.to_owned()).or_insert(0);
        *entry = (*entry).max(at);
    }

    /// Adds `jti` (call once the store has it, so that it is durable first).
    pub fn insert(&self, jti: &str, expires: Option<u64>) {
        let mut inner = self.lock();
        let entry = inner.entries.entry(jti.to_owned()).or_insert(0);
        if *entry == 0 {
            *entry = expires.unwrap_or(0);
        }
    }

    /// Whether a new entry `jti` would be refused: the list is full.
    pub fn refuses(&self, jti: &str) -> bool {
        let inner = self.lock();
        inner.entries.len() >= MAX_REVOKED && !inner.entries.contains_key(jti)
    }

    /// How many ids are on the list.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops the entries of tokens that expired before `before`; returns how many.
    pub fn prune(&self, before: u64) -> usize {
        let mut inner = self.lock();
        let was = inner.entries.len();
        inner
            .entries
            .retain(|_, expires| *expires == 0 || *expires >= before);
        was - inner.entries.len()
    }

    /// Writes the learned expiries to the store (blocking: call off the runtime).
    pub fn persist_learned(&self, store: &Store) -> Result<usize, StoreError> {
        let pending = std::mem::take(&mut self.lock().pending);
        if pending.is_empty() {
            return Ok(0);
        }
        match revocations::learn_expiries(store, &pending) {
            Ok(n) => Ok(n),
            Err(e) => {
                // Kept for the next try.
                self.lock().pending.extend(pending);
                Err(e)
            }
        }
    }
}

/// Keeps the store's copy in step until the server drains: writes learned expiries (soon after they
/// are learned, and once more at shutdown) and drops expired entries (every minute), here and
/// in the store. Store work runs on the blocking pool.
pub(crate) async fn keep(list: Arc<DenyList>, store: Store, leeway: u64, shutdown: Shutdown) {
    let mut prune = tokio::time::interval(PRUNE_INTERVAL);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    prune.tick().await;
    loop {
        let pruning = tokio::select! {
            _ = shutdown.draining() => {
                sync(list.clone(), store.clone(), None).await;
                return;
            }
            _ = list.learned.notified() => false,
            _ = prune.tick() => true,
        };
        let before = pruning.then(|| super::unix_now().saturating_sub(leeway));
        sync(list.clone(), store.clone(), before).await;
    }
}

/// How often a node sharing its store reloads the deny-list even without an announcement
/// (one lost while the listening connection was down).
const RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// For a store other nodes share (PostgreSQL): reloads the deny-list whenever another node
/// announces a revocation (within milliseconds), and every [`RELOAD_INTERVAL`] anyway, until
/// the server drains. Nothing to do for redb.
pub(crate) async fn follow(list: Arc<DenyList>, store: Store, shutdown: Shutdown) {
    let Some(mut announced) = revocations::announcements(&store) else {
        return;
    };
    let mut every = tokio::time::interval(RELOAD_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.draining() => return,
            signal = announced.recv() => {
                if signal.is_none() {
                    return;
                }
            }
            _ = every.tick() => {}
        }
        let (list, store) = (list.clone(), store.clone());
        match tokio::task::spawn_blocking(move || list.reload(&store)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("cannot reload the deny-list from the store: {e}"),
            Err(e) => tracing::warn!("the deny-list reload failed: {e}"),
        }
    }
}

/// One round of [`keep`]: learned expiries, then (with `before`) pruning.
async fn sync(list: Arc<DenyList>, store: Store, before: Option<u64>) {
    let done = tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
        list.persist_learned(&store)?;
        if let Some(before) = before {
            let dropped = list.prune(before);
            revocations::prune(&store, before)?;
            if dropped > 0 {
                tracing::debug!(dropped, "expired tokens left the deny-list");
            }
        }
        Ok(())
    })
    .await;
    match done {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("cannot update the deny-list in the store: {e}"),
        Err(e) => tracing::warn!("the deny-list update failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_tasks::store::StoreOptions;

    #[test]
    fn the_list_answers_from_memory_and_learns_expiries_for_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("edge.redb"), &StoreOptions::default()).unwrap();
        revocations::revoke(&store, "by-token", Some(5_000), 10).unwrap();
        revocations::revoke(&store, "by-id", None, 10).unwrap();
        let list = DenyList::load(&store).unwrap();
        assert_eq!(list.len(), 2);
        assert!(list.is_revoked("by-token", 5_000));
        assert!(!list.is_revoked("other", 5_000));

        // Presented: its expiry is learned, and written to the store.
        assert!(list.is_revoked("by-id", 3_000));
        assert_eq!(list.persist_learned(&store).unwrap(), 1);
        assert_eq!(list.persist_learned(&store).unwrap(), 0, "written once");
        let stored = revocations::lookup(&store, "by-id").unwrap().unwrap();
        assert_eq!(stored.expires, Some(3_000));

        // Added after the store has it.
        revocations::revoke(&store, "later", None, 20).unwrap();
        list.insert("later", None);
        assert!(list.is_revoked("later", 9_000));

        // Expired tokens leave the list.
        assert_eq!(list.prune(4_000), 1);
        assert!(!list.is_revoked("by-id", 3_000));
        assert!(list.is_revoked("by-token", 5_000));
        assert_eq!(list.len(), 2);
    }

    #[test]
    fn a_full_list_refuses_new_ids_only() {
        let list = DenyList::new();
        for i in 0..MAX_REVOKED {
            list.insert(&i.to_string(), Some(10));
        }
        assert!(list.refuses("new"));
        assert!(!list.refuses("7"), "an id already there is no new entry");
        list.prune(11);
        assert!(list.is_empty());
        assert!(!list.refuses("new"));
    }
}
