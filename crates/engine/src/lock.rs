//! Leases: `machines/<id>/locks/<lease-id>-<seq>`, sealed objects that say "a backup (shared) or a
//! prune (exclusive) is running here until `expires`", refreshed while the holder lives.
//!
//! Leases, not locks: a holder that dies stops refreshing, and its lease simply runs out, so no
//! one ever has to "break" a lock by hand. The price is that a holder must notice when its own
//! lease ran out (a laptop suspended mid-backup) and then must not commit anything that relied
//! on it: [`Lease::ensure_held`] fails once less than a third of the TTL is left on the last
//! refresh that reached the vault, and a backup calls it right before writing its recovery
//! point. Readers of a lease compare `expires` with their own clock, so the clocks of the
//! machines that back up and prune one repository must agree to well within the TTL (they are
//! normally one and the same machine). "Their own clock" is the vault handle's (see
//! [`Vault::with_clock`](crate::Vault::with_clock)): the refresh loop waits on it too, so a
//! test's manual clock decides when leases are refreshed and when they run out.
//!
//! A shared lease also records which prune markers its holder *honours*: the markers it had
//! read before it loaded the index it deduplicates against, whose packs it therefore never
//! reuses. That is what lets prune delete beside a running backup (see `prune.rs`).
//!
//! # Chains: a lease never overwrites or deletes (append-only stores)
//!
//! A lease is a *chain* of create-only objects, `locks/<chain>-<seq>`: the first write is
//! seq 1 and every refresh (or change of `honours`) creates seq + 1; nothing is ever written
//! over. Readers take the newest object of each chain (highest seq) as the lease's state; a
//! lease written by an earlier release is one object named `locks/<chain>`, read as seq 0.
//! The object name is sealed into each object (it is the metadata name, see `codec`), so an
//! object cannot be passed off under another seq. A store that lets this machine create and
//! read but not delete or overwrite therefore serves leases fully.
//!
//! Releasing: a handle that may delete removes every object of its chain, oldest first and the
//! newest last (so a reader always finds the newest while any is left, and a newest that
//! vanishes between a listing and its read means the whole chain is released). An append-only
//! handle (see [`Repository::set_append_only`]) writes a last object marked `released` with
//! `expires` = now instead: a released lease stops counting at once, so an admin's prune need
//! not wait up to a TTL for a backup that finished. The objects stay until a delete-capable
//! [`Repository::remove_expired_leases`] (run by every prune) removes them.
//!
//! Why a superseded object can never let prune delete more than the newest one would: a
//! reader sees an older object than the newest only when its listing raced a refresh. That
//! object has an earlier `expires` (the holder's own rule, [`Lease::ensure_held`], already
//! stops relying on a lease a third of a TTL before the last expiry it wrote, exactly as with
//! one rewritten object) and an `honours` list the holder had before: `honours` is set once,
//! from empty, right after the lease is taken and before the holder loads its index, and never
//! shrinks. An older object therefore honours no more markers than the newest, so it blocks at
//! least as many.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use rbackup_store::PutMode;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::codec;
use crate::error::{EngineError, Result};
use crate::holder::Holder;
use crate::id::Id;
use crate::repo::Repository;

mod chains;
#[cfg(test)]
mod tests;

pub(crate) use chains::LeaseObject;

/// Where leases live in a machine's repository.
pub(crate) const KIND: &str = crate::layout::LOCKS;

/// How long a lease lasts without a refresh. Holders refresh every third of it.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(600);

/// What a lease protects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseKind {
    /// A backup: any number may run, beside each other and beside a prune.
    Shared,
    /// A prune: at most one at a time.
    Exclusive,
}

/// The content of a lease object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// Shared or exclusive.
    pub kind: LeaseKind,
    /// What holds it (`backup`, `prune`).
    pub purpose: String,
    /// Host name of the holder.
    pub hostname: String,
    /// Process id of the holder.
    pub pid: u32,
    /// When it was taken (RFC 3339).
    pub created: String,
    /// When it runs out unless refreshed (RFC 3339).
    pub expires: String,
    /// Prune markers whose packs the holder does not reuse (see the module docs).
    #[serde(default)]
    pub honours: Vec<Id>,
    /// The holding process, exactly (see `holder.rs`): lets the next run on this host release
    /// the lease of a killed holder instead of waiting for it to run out.
    #[serde(default)]
    pub holder: Option<Holder>,
    /// The holder is done: the lease no longer counts, whatever `expires` says (the last
    /// object of a chain released without a delete, see the module docs).
    #[serde(default)]
    pub released: bool,
}

impl LeaseInfo {
    /// Whether the lease still counts at `now`. A lease whose expiry cannot be read counts:
    /// a lease is a promise not to delete, and an unreadable promise is kept.
    pub fn is_live(&self, now: Timestamp) -> bool {
        !self.released
            && self
                .expires
                .parse::<Timestamp>()
                .map_or(true, |exp| now <= exp)
    }

    /// Whether the process that holds it is provably gone (a killed holder on this host).
    pub fn holder_is_gone(&self) -> bool {
        self.holder.as_ref().is_some_and(Holder::is_gone)
    }
}

#[derive(Debug)]
struct LeaseState {
    info: LeaseInfo,
    /// The seq of the newest object written (or being written) in the chain.
    seq: u32,
    /// `expires` of the last write that reached the vault.
    valid_until: Timestamp,
    /// Set once the lease was found run out; never cleared (a prune may have acted meanwhile).
    lost: bool,
}

#[derive(Debug)]
struct Shared {
    repo: Repository,
    /// The chain's id: the lease's identity.
    id: Id,
    ttl: Duration,
    state: Mutex<LeaseState>,
    /// Serialises writes, so a slow refresh cannot supersede a newer `honours`.
    write: tokio::sync::Mutex<()>,
}

/// A lease held by this process; refreshed by a background task until released.
#[derive(Debug)]
pub struct Lease {
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
    done: bool,
}

pub(crate) fn plus(t: Timestamp, d: Duration) -> Timestamp {
    t.saturating_add(d).unwrap_or(Timestamp::MAX)
}

impl Repository {
    /// Sets how long this handle's leases last without a refresh (default
    /// [`DEFAULT_LEASE_TTL`]); they are refreshed every third of it. Short TTLs are for tests.
    pub fn set_lease_ttl(&mut self, ttl: Duration) {
        self.lease_ttl = ttl.max(Duration::from_millis(30));
    }

    /// The lease TTL of this handle.
    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl
    }

    /// Takes a lease. An exclusive lease is refused while another live exclusive lease exists
    /// (another prune); shared leases never wait for anything.
    pub async fn take_lease(&self, kind: LeaseKind, purpose: &str) -> Result<Lease> {
        // Opening the repository already ended the leases of killed holders. Only a prune
        // waits on leases, so only an exclusive lease looks again, for holders killed since
        // (a long-lived handle); a backup's start costs no second listing.
        if kind == LeaseKind::Exclusive
            && let Err(e) = self.release_dead_leases().await
        {
            tracing::warn!("cannot look for leases of killed processes: {e}");
        }
        let now = self.clock.now();
        let ttl = self.lease_ttl;
        let info = LeaseInfo {
            kind,
            purpose: purpose.into(),
            hostname: self.config.hostname.clone(),
            pid: std::process::id(),
            created: now.to_string(),
            expires: plus(now, ttl).to_string(),
            honours: Vec::new(),
            holder: Holder::current(),
            released: false,
        };
        let id = Id::random();
        let first = LeaseObject { chain: id, seq: 1 };
        let sealed = codec::seal_meta(&self.keys, KIND, &first.name(), &info);
        self.store
            .put(&self.lease_path(&first), sealed.into(), PutMode::Create)
            .await?;
        let shared = Arc::new(Shared {
            repo: self.clone(),
            id,
            ttl,
            state: Mutex::new(LeaseState {
                info,
                seq: first.seq,
                valid_until: plus(now, ttl),
                lost: false,
            }),
            write: tokio::sync::Mutex::new(()),
        });
        let lease = Lease {
            task: Some(tokio::spawn(refresh_loop(shared.clone()))),
            shared,
            done: false,
        };
        if kind == LeaseKind::Exclusive
            && let Err(e) = lease.check_no_other_exclusive().await
        {
            lease.release().await;
            return Err(e);
        }
        Ok(lease)
    }
}

async fn refresh_loop(shared: Arc<Shared>) {
    let every = shared.ttl / 3;
    loop {
        // The sleep starts after the previous write finished: a clock moved far ahead wakes
        // this once, not once per period it skipped.
        shared.repo.clock.sleep(every).await;
        if let Err(e) = write(&shared, |_| {}, false).await {
            tracing::warn!("cannot refresh lease {}: {e}", shared.id.short());
        }
    }
}

/// Writes the chain's next object with a fresh expiry (after applying `change`); with
/// `released`, the last one, which says the lease no longer counts.
async fn write(shared: &Shared, change: impl FnOnce(&mut LeaseInfo), released: bool) -> Result<()> {
    let _guard = shared.write.lock().await;
    let (info, object, expires) = {
        let mut s = lock(&shared.state);
        let now = shared.repo.clock.now();
        note_if_lost(&mut s, now, shared.ttl);
        change(&mut s.info);
        let expires = if released { now } else { plus(now, shared.ttl) };
        s.info.expires = expires.to_string();
        s.info.released = released;
        // Taken even if the put fails: a put that failed may still have landed.
        // (At u32::MAX the create finds the name taken and fails: 27,000 years of refreshes.)
        s.seq = s.seq.saturating_add(1);
        let object = LeaseObject {
            chain: shared.id,
            seq: s.seq,
        };
        (s.info.clone(), object, expires)
    };
    let sealed = codec::seal_meta(&shared.repo.keys, KIND, &object.name(), &info);
    shared
        .repo
        .store
        .put(
            &shared.repo.lease_path(&object),
            sealed.into(),
            PutMode::Create,
        )
        .await?;
    if !released {
        let mut s = lock(&shared.state);
        s.valid_until = s.valid_until.max(expires);
    }
    Ok(())
}

/// Ends the lease in the vault: deletes its chain, or (append-only, or if a delete is
/// refused) writes its released object. A failure is only logged: the lease then runs out by
/// itself.
async fn finish(shared: &Shared) {
    let repo = &shared.repo;
    if !repo.append_only {
        // After any write in flight, so that its object is among those deleted.
        let _guard = shared.write.lock().await;
        let last = lock(&shared.state).seq;
        match repo.delete_chain(shared.id, 1..=last).await {
            Ok(_) => return,
            Err(e) => tracing::warn!(
                "cannot remove lease {}: {e}; marking it released instead",
                shared.id.short()
            ),
        }
    }
    if let Err(e) = write(shared, |_| {}, true).await {
        tracing::warn!(
            "cannot release lease {}: {e}; it runs out by itself",
            shared.id.short()
        );
    }
}

fn lock(m: &Mutex<LeaseState>) -> std::sync::MutexGuard<'_, LeaseState> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A holder must stop relying on its lease while a third of the TTL is still left, so that
/// what it does next (one put) finishes before anyone else may consider the lease gone.
fn note_if_lost(s: &mut LeaseState, now: Timestamp, ttl: Duration) {
    if plus(now, ttl / 3) > s.valid_until {
        s.lost = true;
    }
}

impl Lease {
    /// The lease's id (its chain: every object of the lease is named after it).
    pub fn id(&self) -> Id {
        self.shared.id
    }

    /// What the lease says now.
    pub fn info(&self) -> LeaseInfo {
        lock(&self.shared.state).info.clone()
    }

    /// Fails if the lease ran out (or is about to) since the last refresh that reached the
    /// vault: whoever relied on it must not commit (a prune may have removed what it used).
    pub fn ensure_held(&self) -> Result<()> {
        let mut s = lock(&self.shared.state);
        note_if_lost(&mut s, self.shared.repo.clock.now(), self.shared.ttl);
        if s.lost {
            return Err(EngineError::LeaseLost {
                purpose: s.info.purpose.clone(),
                ttl: self.shared.ttl,
            });
        }
        Ok(())
    }

    /// Records the prune markers whose packs the holder will not reuse, and writes the lease.
    pub(crate) async fn honour(&self, markers: Vec<Id>) -> Result<()> {
        write(&self.shared, |info| info.honours = markers, false).await
    }

    /// Stops refreshing and ends the lease in the vault: its objects are deleted, or on an
    /// append-only handle a released object is written (see the module docs). A failure is
    /// only logged: the lease then runs out by itself.
    pub async fn release(mut self) {
        self.stop();
        finish(&self.shared).await;
    }

    /// Stops refreshing and leaves the lease in the vault to run out, as a killed process
    /// would (for tests, and for handing a repository over without a delete).
    pub fn abandon(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.done = true;
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    async fn check_no_other_exclusive(&self) -> Result<()> {
        let now = self.shared.repo.clock.now();
        for (id, info) in self.shared.repo.leases().await? {
            if id == self.shared.id {
                continue;
            }
            if let Some(i) = info
                && i.kind == LeaseKind::Exclusive
                && i.is_live(now)
            {
                return Err(EngineError::RepositoryBusy {
                    holder: Box::new(i),
                });
            }
        }
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.stop();
        // Dropped without `release` (an error path or a cancelled task): end it in the
        // background if a runtime is still there; otherwise it runs out by itself.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let shared = self.shared.clone();
            handle.spawn(async move { finish(&shared).await });
        }
    }
}
