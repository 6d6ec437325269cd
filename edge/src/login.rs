//! Signing in with a name and a password (`POST /v1/login`): the user's password is checked
//! against its Argon2id hash, and a short-lived token with the user's scopes is minted, as
//! `edge token issue` would. Failures are slowed, and counted per name and per address: past
//! `login.max_failures_per_name` (or `..._per_address`) within `login.failure_window_secs`,
//! every attempt for that name (or from that address) is refused for `login.lockout_secs`,
//! right password or not. An unknown name is answered exactly as a wrong password, after the
//! same work, so that the two cannot be told apart.

use crate::auth::{password, unix_now, DenyList, Issued, SigningKey};
use crate::config::{AuthConfig, LoginConfig};
use edge_tasks::users::{self, StoredUser};
use edge_tasks::Store;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Names and addresses whose failures are tracked at once, at most; past it, sign-ins are
/// refused until entries expire (memory stays bounded whatever an attacker sends).
const MAX_TRACKED: usize = 10_000;

/// Password checks run at once, at most (each takes 19 MiB and tens of milliseconds of CPU).
const CONCURRENT_CHECKS: usize = 2;

/// Why a sign-in did not give a token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum LoginError {
    /// Wrong name or password (which of them is not said).
    #[error("wrong name or password")]
    Wrong,
    /// Too many failures for this name or from this address.
    #[error(
        "too many failed sign-ins for this name or from this address; try again in {retry_after} s"
    )]
    Locked {
        /// Seconds until the lock ends.
        retry_after: u64,
    },
    /// Sign-in is off (`login.enabled`).
    #[error("signing in with a password is off on this server (login.enabled)")]
    Off,
    /// The server has no key to sign tokens with, or is shutting down.
    #[error("{0}")]
    Unavailable(String),
    /// The store could not be read.
    #[error("cannot read the users: {0}")]
    Store(String),
}

/// The server's sign-in desk.
pub(crate) struct Login {
    config: LoginConfig,
    auth: AuthConfig,
    /// The key tokens are minted with, or why there is none.
    key: Result<SigningKey, String>,
    failures: Mutex<HashMap<Counted, Tally>>,
    checks: Semaphore,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("config", &self.config)
            .field("can_sign", &self.key.is_ok())
            .finish_non_exhaustive()
    }
}

/// What failures are counted by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Counted {
    Name(String),
    /// An IPv4 address, or the /64 an IPv6 address is in (one host often has a whole /64).
    Address(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Tally {
    failures: u32,
    since: Instant,
    locked_until: Option<Instant>,
}

impl Login {
    /// The sign-in desk; `key`: the key tokens are minted with, or why there is none.
    pub(crate) fn new(
        config: LoginConfig,
        auth: AuthConfig,
        key: Result<SigningKey, String>,
    ) -> Login {
        Login {
            config,
            auth,
            key,
            failures: Mutex::new(HashMap::new()),
            checks: Semaphore::new(CONCURRENT_CHECKS),
        }
    }

    /// Checks `name`'s `password` (from `address`) and mints the user's token.
    pub(crate) async fn sign_in(
        &self,
        store: &Store,
        revoked: &DenyList,
        name: &str,
        password: &str,
        address: IpAddr,
    ) -> Result<Issued, LoginError> {
        if !self.config.enabled {
            return Err(LoginError::Off);
        }
        let key = self.key.as_ref().map_err(|why| {
            LoginError::Unavailable(format!("this server cannot mint tokens: {why}"))
        })?;
        let counted = [
            Counted::Name(name.to_owned()),
            Counted::Address(masked(address)),
        ];
        self.check_locks(&counted)?;
        let user = self.check_password(store, name, password).await?;
        let Some(user) = user else {
            self.fail(&counted);
            tokio::time::sleep(Duration::from_millis(self.config.failure_delay_ms)).await;
            return Err(LoginError::Wrong);
        };
        self.forget(&counted[0]);
        // A change to the user in this very second ends the tokens of this second: mint in
        // the next one.
        while revoked.is_subject_revoked(name, unix_now()) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let ttl = Duration::from_secs(self.config.token_ttl_secs);
        key.mint(&self.auth, name, &user.scope, ttl, None)
            .map_err(|e| LoginError::Unavailable(e.to_string()))
    }

    /// The user, when `password` is theirs. The same work is done for an unknown name.
    async fn check_password(
        &self,
        store: &Store,
        name: &str,
        password: &str,
    ) -> Result<Option<StoredUser>, LoginError> {
        let _permit = self
            .checks
            .acquire()
            .await
            .map_err(|_| LoginError::Unavailable("the server is shutting down".into()))?;
        let (store, name, password) = (store.clone(), name.to_owned(), password.to_owned());
        let checked = tokio::task::spawn_blocking(move || {
            let user = match users::check_name(&name) {
                Ok(()) => users::get(&store, &name)?,
                Err(_) => None,
            };
            let hash = user.as_ref().map_or(password::decoy(), |u| u.hash.as_str());
            let matches = password::verify(&password, hash);
            Ok(user.filter(|_| matches))
        })
        .await;
        match checked {
            Ok(Ok(user)) => Ok(user),
            Ok(Err(e)) => Err(LoginError::Store(edge_tasks::StoreError::to_string(&e))),
            Err(e) => Err(LoginError::Store(e.to_string())),
        }
    }

    /// Refuses when the name or the address is locked (or when too much is tracked).
    fn check_locks(&self, counted: &[Counted]) -> Result<(), LoginError> {
        let now = Instant::now();
        let mut failures = self.lock();
        self.expire(&mut failures, now);
        let locked = counted
            .iter()
            .filter_map(|key| failures.get(key)?.locked_until)
            .filter(|until| *until > now)
            .max();
        if let Some(until) = locked {
            let left = until.duration_since(now).as_millis();
            let retry_after = u64::try_from(left.div_ceil(1000))
                .unwrap_or(u64::MAX)
                .max(1);
            return Err(LoginError::Locked { retry_after });
        }
        if failures.len() + counted.len() > MAX_TRACKED {
            let retry_after = self.config.failure_window_secs.max(1);
            return Err(LoginError::Locked { retry_after });
        }
        Ok(())
    }

    /// Counts a failure for each key, locking those past their limit.
    fn fail(&self, counted: &[Counted]) {
        let now = Instant::now();
        let window = Duration::from_secs(self.config.failure_window_secs);
        let lockout = Duration::from_secs(self.config.lockout_secs);
        let mut failures = self.lock();
        for key in counted {
            let limit = match key {
                Counted::Name(_) => self.config.max_failures_per_name,
                Counted::Address(_) => self.config.max_failures_per_address,
            };
            let tally = failures.entry(key.clone()).or_insert(Tally {
                failures: 0,
                since: now,
                locked_until: None,
            });
            // A new window once the last one has passed, or the lock it led to has ended.
            let lock_ended = tally.locked_until.is_some_and(|until| until <= now);
            if lock_ended || now.duration_since(tally.since) > window {
                *tally = Tally {
                    failures: 0,
                    since: now,
                    locked_until: None,
                };
            }
            tally.failures += 1;
            if tally.failures >= limit {
                tally.locked_until = Some(now + lockout);
                tracing::warn!(?key, failures = tally.failures, "sign-in locked");
            }
        }
    }

    /// Forgets the failures of `key` (a name that signed in).
    fn forget(&self, key: &Counted) {
        self.lock().remove(key);
    }

    /// Drops tallies whose window and lock have both passed.
    fn expire(&self, failures: &mut HashMap<Counted, Tally>, now: Instant) {
        let window = Duration::from_secs(self.config.failure_window_secs);
        failures.retain(|_, tally| {
            now.duration_since(tally.since) <= window
                || tally.locked_until.is_some_and(|until| until > now)
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Counted, Tally>> {
        // Every update is whole under the lock, so a poisoned map is still consistent.
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An address as failures are counted by: IPv4 as it is, IPv6 by its /64 (an IPv4-mapped one
/// as IPv4).
fn masked(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_tasks::store::StoreOptions;

    fn desk(config: LoginConfig) -> (tempfile::TempDir, Store, Login) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("edge.redb"), &StoreOptions::default()).unwrap();
        let key = crate::auth::KeyPair::load_or_generate(dir.path())
            .unwrap()
            .signing_key()
            .map_err(|e| e.to_string());
        let hash = password::hash("a good password").unwrap();
        users::add(&store, "ana", &hash, "ports:read", 1).unwrap();
        (dir, store, Login::new(config, AuthConfig::default(), key))
    }

    fn fast() -> LoginConfig {
        LoginConfig {
            failure_delay_ms: 0,
            max_failures_per_name: 3,
            max_failures_per_address: 5,
            ..LoginConfig::default()
        }
    }

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    #[tokio::test]
    async fn the_right_password_gets_a_token_with_the_users_scopes() {
        let (_dir, store, login) = desk(fast());
        let list = DenyList::new();
        let issued = login
            .sign_in(&store, &list, "ana", "a good password", HOME)
            .await
            .unwrap();
        assert_eq!(issued.claims.sub, "ana");
        assert_eq!(issued.claims.scope, "ports:read");
        assert_eq!(
            issued.claims.exp - issued.claims.iat,
            LoginConfig::default().token_ttl_secs
        );
        for (name, password) in [("ana", "a bad password"), ("bob", "a good password")] {
            let refused = login.sign_in(&store, &list, name, password, HOME).await;
            assert!(matches!(refused, Err(LoginError::Wrong)), "{refused:?}");
        }
    }

    #[tokio::test]
    async fn repeated_failures_lock_the_name_even_for_the_right_password() {
        let (_dir, store, login) = desk(fast());
        let list = DenyList::new();
        let elsewhere = |n: u8| IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, n));
        for n in 0..3 {
            let refused = login
                .sign_in(&store, &list, "ana", "wrong!!!!", elsewhere(n))
                .await;
            assert!(matches!(refused, Err(LoginError::Wrong)));
        }
        let locked = login
            .sign_in(&store, &list, "ana", "a good password", elsewhere(9))
            .await;
        assert!(
            matches!(locked, Err(LoginError::Locked { retry_after }) if retry_after > 800),
            "{locked:?}"
        );
    }

    #[tokio::test]
    async fn repeated_failures_from_one_address_lock_it_for_every_name() {
        let (_dir, store, login) = desk(fast());
        let list = DenyList::new();
        for n in 0..5 {
            let name = format!("guess{n}");
            let refused = login.sign_in(&store, &list, &name, "whatever1", HOME).await;
            assert!(matches!(refused, Err(LoginError::Wrong)));
        }
        let locked = login
            .sign_in(&store, &list, "ana", "a good password", HOME)
            .await;
        assert!(
            matches!(locked, Err(LoginError::Locked { .. })),
            "{locked:?}"
        );
        let other = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 7));
        assert!(login
            .sign_in(&store, &list, "ana", "a good password", other)
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn a_lock_ends_after_its_time() {
        let config = LoginConfig {
            lockout_secs: 1,
            failure_window_secs: 1,
            ..fast()
        };
        let (_dir, store, login) = desk(config);
        let list = DenyList::new();
        for _ in 0..3 {
            let _ = login.sign_in(&store, &list, "ana", "wrong!!!!", HOME).await;
        }
        assert!(matches!(
            login
                .sign_in(&store, &list, "ana", "a good password", HOME)
                .await,
            Err(LoginError::Locked { .. })
        ));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(login
            .sign_in(&store, &list, "ana", "a good password", HOME)
            .await
            .is_ok());
    }

    #[test]
    fn ipv6_addresses_count_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(masked(a), masked(b));
        assert_ne!(masked(a), masked(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(masked(mapped), HOME);
    }
}
