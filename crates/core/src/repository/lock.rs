//! The repository lock: keeps two runs that must not overlap (two `pgvault backup`s, later
//! `expire` and `copy`) from working on one repository at once, without letting a crashed run
//! block the repository forever.
//!
//! # How it works
//!
//! A lock is one small plaintext JSON object, `locks/<name>` (`locks/repository`, the one lock every command that adds or removes backups takes; see docs/FORMAT.md), holding a
//! **lease**: a random token, who holds it (host, pid, command, start time) and `expires_at`.
//!
//! - **Acquire** creates the object with create-if-absent ([`Storage::put_if_absent`]). If an
//!   object is already there and its lease has not expired, acquiring fails with
//!   [`LockError::Held`], which says who holds it and until when.
//! - **Renew:** while the [`LockGuard`] lives, a background task rewrites the lease with a new
//!   `expires_at` every third of the lease time, after checking that the token is still its own.
//!   If it finds another token (the lease expired and was taken over) it stops and the guard
//!   reports the lock as lost ([`LockGuard::check`]).
//! - **Release** ([`LockGuard::release`], or as a fallback dropping the guard) stops renewing and
//!   deletes the object only if it still holds this guard's token.
//! - **Takeover:** a lease whose `expires_at` lies more than [`CLOCK_SKEW_MARGIN`] in the past
//!   belongs to a run that stopped renewing (crashed, killed, host gone). It is deleted and
//!   created again with create-if-absent; of several runs taking over at once, one creates it.
//!
//! # Limits (advisory lock)
//!
//! Object stores have no compare-and-delete, and renewal is read-check-write, so the lock is a
//! lease, not a mutex: it excludes runs that start while another is active, and a crashed run
//! holds it for at most its lease time plus the margin. Two runs that take over the same expired
//! lease in the same instant, or a holder paused (suspended VM, stopped process) for longer than
//! its lease, can overlap; the holder then finds out at its next [`LockGuard::check`]. On a store
//! without conditional create ([`CreateMode::CheckThenWrite`](crate::storage::CreateMode)),
//! acquiring is look-then-write: two runs that start within one round trip of each other can both
//! succeed. Expiry compares clocks of different hosts: keep them in sync (NTP); the margin
//! absorbs small skew. The lock object is not encrypted: it reveals host names, process ids and
//! command names, nothing of the cluster's data.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use super::layout;
use crate::storage::{PutOutcome, Storage, StorageError};

/// How far past its `expires_at` a lease must be before another run takes it over.
pub const CLOCK_SKEW_MARGIN: Duration = Duration::from_secs(60);
/// The `format` field of a lease object.
const LEASE_FORMAT: &str = "pgvault.lock";
/// How many times acquiring re-reads a lease that changed under it before giving up.
const ACQUIRE_ROUNDS: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{location}: the '{name}' lock is held by {holder}; its lease runs until {expires_at} (renewed while that run lives). Wait for it to finish. If that run is gone (crashed, host lost), the lock is taken over automatically once the lease has expired, or, once you are sure no pgvault run is active, delete the object '{key}' from the repository")]
    Held {
        location: String,
        name: String,
        key: String,
        holder: Box<LockHolder>,
        expires_at: DateTime<Utc>,
    },
    #[error("{location}: the '{name}' lock was lost: {why}. Another run may be working on the repository; the work of this run cannot be trusted to be exclusive")]
    Lost {
        location: String,
        name: String,
        why: String,
    },
    #[error("{location}: the lock object '{key}' is unreadable ({message}); if no pgvault run is active, delete it")]
    Unreadable {
        location: String,
        key: String,
        message: String,
    },
    #[error("'{0}' is not a lock name (lowercase letters, digits and '-')")]
    BadName(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Who holds a lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    pub host: String,
    pub pid: u32,
    pub command: String,
    pub started: DateTime<Utc>,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "'{}' (pid {} on host {}, started {})",
            self.command,
            self.pid,
            self.host,
            self.started.to_rfc3339()
        )
    }
}

/// The lease object's content.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Lease {
    format: String,
    token: String,
    holder: LockHolder,
    expires_at: DateTime<Utc>,
}

impl Lease {
    fn encode(&self) -> Bytes {
        // Serializing plain strings, numbers and times cannot fail.
        Bytes::from(serde_json::to_vec_pretty(self).unwrap_or_default())
    }
}

/// The repository lock (see the module documentation).
pub struct RepoLock;

impl RepoLock {
    /// Takes the lock `name` for `command` with a lease of `ttl`, renewed in the background until
    /// the returned guard is released or dropped. Must run inside a tokio runtime.
    pub async fn acquire(storage: &Storage, name: &str, ttl: Duration, command: &str) -> Result<LockGuard, LockError> {
        acquire_with_margin(storage, name, ttl, command, CLOCK_SKEW_MARGIN).await
    }
}

async fn acquire_with_margin(
    storage: &Storage,
    name: &str,
    ttl: Duration,
    command: &str,
    margin: Duration,
) -> Result<LockGuard, LockError> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(LockError::BadName(name.to_string()));
    }
    let key = layout::lock_key(name);
    let holder = LockHolder {
        host: host_name(),
        pid: std::process::id(),
        command: command.to_string(),
        started: Utc::now(),
    };
    let lease = Lease {
        format: LEASE_FORMAT.into(),
        token: uuid::Uuid::new_v4().simple().to_string(),
        holder,
        expires_at: expiry(ttl),
    };
    let ctx = Ctx {
        storage: storage.clone(),
        name: name.to_string(),
        key,
        token: lease.token.clone(),
        ttl,
    };
    let mut last_seen = None;
    for _ in 0..ACQUIRE_ROUNDS {
        let lease = Lease {
            expires_at: expiry(ttl),
            ..lease.clone()
        };
        if storage.put_if_absent(&ctx.key, lease.encode()).await? == PutOutcome::Created {
            return Ok(LockGuard::start(ctx, lease.expires_at));
        }
        let Some(current) = ctx.read().await? else {
            continue;
        };
        let takeover_from = current.expires_at.checked_add_signed(chrono_duration(margin));
        if takeover_from.is_none_or(|t| Utc::now() < t) {
            return Err(ctx.held(current));
        }
        tracing::warn!(lock = %ctx.key, holder = %current.holder, expired = %current.expires_at, "taking over an expired repository lock");
        // Delete only what was seen expired: a lease renewed or taken over meanwhile stays.
        if ctx.read().await?.is_some_and(|again| again.token == current.token) {
            storage.delete(&ctx.key).await?;
        }
        last_seen = Some(current);
    }
    match last_seen {
        Some(current) => Err(ctx.held(current)),
        None => Err(LockError::Lost {
            location: storage.to_string(),
            name: ctx.name,
            why: "the lock object kept changing while it was acquired".into(),
        }),
    }
}

/// What a guard and its renewer share.
#[derive(Clone)]
struct Ctx {
    storage: Storage,
    name: String,
    key: String,
    token: String,
    ttl: Duration,
}

impl Ctx {
    async fn read(&self) -> Result<Option<Lease>, LockError> {
        let Some(raw) = self.storage.get_opt(&self.key).await? else {
            return Ok(None);
        };
        let lease: Lease = serde_json::from_slice(&raw).map_err(|e| self.unreadable(e.to_string()))?;
        if lease.format != LEASE_FORMAT {
            return Err(self.unreadable(format!("format '{}', expected '{LEASE_FORMAT}'", lease.format)));
        }
        Ok(Some(lease))
    }

    fn unreadable(&self, message: String) -> LockError {
        LockError::Unreadable {
            location: self.storage.to_string(),
            key: self.key.clone(),
            message,
        }
    }

    fn held(&self, current: Lease) -> LockError {
        LockError::Held {
            location: self.storage.to_string(),
            name: self.name.clone(),
            key: self.key.clone(),
            holder: Box::new(current.holder),
            expires_at: current.expires_at,
        }
    }

    fn lost(&self, why: impl Into<String>) -> LockError {
        LockError::Lost {
            location: self.storage.to_string(),
            name: self.name.clone(),
            why: why.into(),
        }
    }

    /// Extends the lease if it is still ours; returns the new expiry.
    async fn renew(&self) -> Result<DateTime<Utc>, LockError> {
        let mut lease = match self.read().await? {
            Some(l) if l.token == self.token => l,
            Some(l) => return Err(self.lost(format!("it is now held by {}", l.holder))),
            None => return Err(self.lost("the lock object was deleted")),
        };
        lease.expires_at = expiry(self.ttl);
        self.storage.put(&self.key, lease.encode()).await?;
        Ok(lease.expires_at)
    }

    /// Deletes the lease if it still carries our token; returns whether it did.
    async fn release(&self) -> Result<bool, LockError> {
        match self.read().await? {
            Some(l) if l.token == self.token => {
                self.storage.delete(&self.key).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// The renewer's view of the lease, read by [`LockGuard::check`].
struct State {
    expires_at: DateTime<Utc>,
    lost: Option<String>,
}

/// A held repository lock. Release it with [`LockGuard::release`]; dropping it stops the renewal
/// and deletes the lease in the background where a runtime is still running (otherwise the lease
/// simply expires).
pub struct LockGuard {
    ctx: Ctx,
    state: Arc<Mutex<State>>,
    renewer: Option<JoinHandle<()>>,
}

impl LockGuard {
    fn start(ctx: Ctx, expires_at: DateTime<Utc>) -> LockGuard {
        let state = Arc::new(Mutex::new(State { expires_at, lost: None }));
        let renewer = tokio::spawn(renew_loop(ctx.clone(), state.clone()));
        LockGuard {
            ctx,
            state,
            renewer: Some(renewer),
        }
    }

    /// The lease's token (what identifies this holder in the lock object).
    pub fn token(&self) -> &str {
        &self.ctx.token
    }

    /// Whether the lock is still held: not taken over, and renewed before it expired. Call it
    /// before a step that must be exclusive (e.g. writing a backup's catalog).
    pub fn check(&self) -> Result<(), LockError> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(why) = &state.lost {
            return Err(self.ctx.lost(why.clone()));
        }
        if Utc::now() >= state.expires_at {
            return Err(self.ctx.lost(format!(
                "its lease expired at {} before it could be renewed",
                state.expires_at
            )));
        }
        Ok(())
    }

    /// Stops renewing and deletes the lease if it is still this guard's.
    pub async fn release(mut self) -> Result<(), LockError> {
        if let Some(r) = self.renewer.take() {
            r.abort();
            let _ = r.await;
        }
        if !self.ctx.release().await? {
            tracing::warn!(lock = %self.ctx.key, "the repository lock was no longer ours; left it in place");
        }
        Ok(())
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let Some(r) = self.renewer.take() else { return };
        r.abort();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let ctx = self.ctx.clone();
            handle.spawn(async move {
                if let Err(e) = ctx.release().await {
                    tracing::warn!(lock = %ctx.key, "cannot release the repository lock: {e}; it expires on its own");
                }
            });
        }
    }
}

async fn renew_loop(ctx: Ctx, state: Arc<Mutex<State>>) {
    let every = (ctx.ttl / 3).max(Duration::from_millis(50));
    loop {
        tokio::time::sleep(every).await;
        let result = ctx.renew().await;
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(expires_at) => s.expires_at = expires_at,
            Err(LockError::Lost { why, .. }) => {
                tracing::error!(lock = %ctx.key, "repository lock lost: {why}");
                s.lost = Some(why);
                return;
            }
            // A store that is briefly down: try again at the next tick; `check` reports the
            // lock lost once the lease runs out unrenewed.
            Err(e) => tracing::warn!(lock = %ctx.key, "cannot renew the repository lock: {e}"),
        }
    }
}

fn expiry(ttl: Duration) -> DateTime<Utc> {
    Utc::now()
        .checked_add_signed(chrono_duration(ttl))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// This machine's host name, for the holder information.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(600);

    async fn plant(storage: &Storage, name: &str, token: &str, expires_at: DateTime<Utc>) {
        let holder = LockHolder {
            host: "elsewhere".into(),
            pid: 4242,
            command: "pgvault backup".into(),
            started: Utc::now(),
        };
        let lease = Lease {
            format: LEASE_FORMAT.into(),
            token: token.into(),
            holder,
            expires_at,
        };
        storage.put(&layout::lock_key(name), lease.encode()).await.unwrap();
    }

    async fn token_in_store(storage: &Storage, name: &str) -> Option<String> {
        let raw = storage.get_opt(&layout::lock_key(name)).await.unwrap()?;
        Some(serde_json::from_slice::<Lease>(&raw).unwrap().token)
    }

    #[tokio::test]
    async fn second_acquire_fails_and_names_the_holder() {
        let s = Storage::memory();
        let first = RepoLock::acquire(&s, "backup", TTL, "pgvault backup").await.unwrap();
        let err = RepoLock::acquire(&s, "backup", TTL, "pgvault backup --full")
            .await
            .err()
            .unwrap();
        match &err {
            LockError::Held { holder, .. } => {
                assert_eq!(holder.command, "pgvault backup");
                assert_eq!(holder.pid, std::process::id());
            }
            other => panic!("expected Held, got {other}"),
        }
        let text = err.to_string();
        assert!(
            text.contains("pgvault backup") && text.contains("locks/backup") && text.contains("Wait"),
            "{text}"
        );
        // Another lock name is independent.
        let other = RepoLock::acquire(&s, "expire", TTL, "pgvault expire").await.unwrap();
        first.check().unwrap();
        first.release().await.unwrap();
        other.release().await.unwrap();
        assert_eq!(token_in_store(&s, "backup").await, None, "release deletes the lease");
        RepoLock::acquire(&s, "backup", TTL, "pgvault backup")
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over_a_live_one_is_not() {
        let s = Storage::memory();
        plant(&s, "backup", "crashed", Utc::now() - chrono::Duration::hours(2)).await;
        let g = RepoLock::acquire(&s, "backup", TTL, "pgvault backup").await.unwrap();
        assert_eq!(token_in_store(&s, "backup").await.as_deref(), Some(g.token()));
        g.release().await.unwrap();

        // Expired, but within the clock-skew margin: still held.
        plant(&s, "backup", "recent", Utc::now() - chrono::Duration::seconds(5)).await;
        let err = RepoLock::acquire(&s, "backup", TTL, "pgvault backup")
            .await
            .err()
            .unwrap();
        assert!(matches!(err, LockError::Held { .. }), "{err}");
        assert_eq!(token_in_store(&s, "backup").await.as_deref(), Some("recent"));
    }

    #[tokio::test]
    async fn release_by_the_wrong_token_does_not_delete() {
        let s = Storage::memory();
        let g = RepoLock::acquire(&s, "backup", TTL, "pgvault backup").await.unwrap();
        // The lease was taken over by another run (e.g. this one was paused past its expiry).
        plant(&s, "backup", "someone-else", Utc::now() + chrono::Duration::hours(1)).await;
        g.release().await.unwrap();
        assert_eq!(token_in_store(&s, "backup").await.as_deref(), Some("someone-else"));
    }

    #[tokio::test]
    async fn renewal_keeps_the_lease_and_notices_a_takeover() {
        let s = Storage::memory();
        let ttl = Duration::from_millis(300);
        let g = acquire_with_margin(&s, "backup", ttl, "pgvault backup", Duration::ZERO)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        g.check().unwrap();
        let err = acquire_with_margin(&s, "backup", ttl, "other", Duration::ZERO)
            .await
            .err()
            .unwrap();
        assert!(
            matches!(err, LockError::Held { .. }),
            "a renewed lease must not be taken over: {err}"
        );

        plant(&s, "backup", "thief", Utc::now() + chrono::Duration::hours(1)).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(matches!(g.check(), Err(LockError::Lost { .. })));
        drop(g);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            token_in_store(&s, "backup").await.as_deref(),
            Some("thief"),
            "a lost lease is never deleted"
        );
    }

    #[tokio::test]
    async fn dropping_the_guard_releases_in_the_background() {
        let s = Storage::memory();
        drop(RepoLock::acquire(&s, "backup", TTL, "pgvault backup").await.unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(token_in_store(&s, "backup").await, None);
    }

    #[tokio::test]
    async fn bad_names_and_unreadable_leases_are_errors() {
        let s = Storage::memory();
        assert!(matches!(
            RepoLock::acquire(&s, "../x", TTL, "c").await,
            Err(LockError::BadName(_))
        ));
        s.put(&layout::lock_key("backup"), Bytes::from_static(b"garbage"))
            .await
            .unwrap();
        let err = RepoLock::acquire(&s, "backup", TTL, "c").await.err().unwrap();
        assert!(matches!(err, LockError::Unreadable { .. }), "{err}");
    }
}
