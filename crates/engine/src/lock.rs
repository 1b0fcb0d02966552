//! Leases: `machines/<id>/locks/<lease-id>`, sealed objects that say "a backup (shared) or a
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
}

impl LeaseInfo {
    /// Whether the lease still counts at `now`. A lease whose expiry cannot be read counts:
    /// a lease is a promise not to delete, and an unreadable promise is kept.
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.expires
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
    /// `expires` of the last write that reached the vault.
    valid_until: Timestamp,
    /// Set once the lease was found run out; never cleared (a prune may have acted meanwhile).
    lost: bool,
}

#[derive(Debug)]
struct Shared {
    repo: Repository,
    id: Id,
    ttl: Duration,
    state: Mutex<LeaseState>,
    /// Serialises writes, so a slow refresh cannot overwrite a newer `honours`.
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
        if let Err(e) = self.release_dead_leases().await {
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
        };
        let id = Id::random();
        let sealed = codec::seal_meta(&self.keys, KIND, &id.to_hex(), &info);
        self.store
            .put(&self.lease_path(&id), sealed.into(), PutMode::Create)
            .await?;
        let shared = Arc::new(Shared {
            repo: self.clone(),
            id,
            ttl,
            state: Mutex::new(LeaseState {
                info,
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

    /// Every lease in the repository, live or not; `None` for one that cannot be decrypted.
    pub async fn leases(&self) -> Result<Vec<(Id, Option<LeaseInfo>)>> {
        let mut out = Vec::new();
        for id in self.list_ids(KIND).await? {
            let max = crate::layout::limits(KIND).stored;
            match crate::layout::get_bounded(&*self.store, &self.lease_path(&id), max).await {
                Ok(bytes) => {
                    let info = codec::open_meta(&self.keys, KIND, &id.to_hex(), &bytes).ok();
                    out.push((id, info));
                }
                // Released between the listing and the read.
                Err(EngineError::Store(e)) if e.is_not_found() => {}
                // Over the cap: as unreadable as one that does not decrypt.
                Err(EngineError::Corrupt { .. }) => out.push((id, None)),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Deletes the leases whose holder is provably gone (killed on this host, see
    /// `holder.rs`), so that nothing waits for them to run out; returns how many.
    pub async fn release_dead_leases(&self) -> Result<u64> {
        let mut released = 0;
        for (id, info) in self.leases().await? {
            if let Some(i) = info
                && i.holder_is_gone()
            {
                tracing::info!(
                    "releasing the lease of {} (pid {}, since {}): that process is gone",
                    i.purpose,
                    i.pid,
                    i.created
                );
                match self.store.delete(&self.lease_path(&id)).await {
                    Ok(()) => released += 1,
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(released)
    }

    pub(crate) fn lease_path(&self, id: &Id) -> String {
        self.path(&format!("{KIND}/{}", id.to_hex()))
    }
}

async fn refresh_loop(shared: Arc<Shared>) {
    let every = shared.ttl / 3;
    loop {
        // The sleep starts after the previous write finished: a clock moved far ahead wakes
        // this once, not once per period it skipped.
        shared.repo.clock.sleep(every).await;
        if let Err(e) = write(&shared, |_| {}).await {
            tracing::warn!("cannot refresh lease {}: {e}", shared.id.short());
        }
    }
}

/// Rewrites the lease with a fresh expiry (after applying `change`).
async fn write(shared: &Shared, change: impl FnOnce(&mut LeaseInfo)) -> Result<()> {
    let _guard = shared.write.lock().await;
    let (info, expires) = {
        let mut s = lock(&shared.state);
        let now = shared.repo.clock.now();
        note_if_lost(&mut s, now, shared.ttl);
        change(&mut s.info);
        let expires = plus(now, shared.ttl);
        s.info.expires = expires.to_string();
        (s.info.clone(), expires)
    };
    let sealed = codec::seal_meta(&shared.repo.keys, KIND, &shared.id.to_hex(), &info);
    shared
        .repo
        .store
        .put(
            &shared.repo.lease_path(&shared.id),
            sealed.into(),
            PutMode::Overwrite,
        )
        .await?;
    let mut s = lock(&shared.state);
    s.valid_until = s.valid_until.max(expires);
    Ok(())
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
    /// The lease's id (its object name).
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
        write(&self.shared, |info| info.honours = markers).await
    }

    /// Stops refreshing and deletes the lease. A failed delete is only logged: the lease then
    /// runs out by itself.
    pub async fn release(mut self) {
        self.stop();
        let path = self.shared.repo.lease_path(&self.shared.id);
        if let Err(e) = self.shared.repo.store.delete(&path).await {
            tracing::warn!("cannot remove lease {path}: {e}; it runs out by itself");
        }
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
        // Dropped without `release` (an error path or a cancelled task): remove it in the
        // background if a runtime is still there; otherwise it runs out by itself.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let (store, path) = (
                self.shared.repo.store.clone(),
                self.shared.repo.lease_path(&self.shared.id),
            );
            handle.spawn(async move {
                let _ = store.delete(&path).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Registration, Unlock, Vault};
    use rbackup_crypto::{KdfParams, MasterKeys, Passphrase};

    async fn memory_repo(name: &str) -> Repository {
        memory_vault(name).await.2
    }

    /// A registered machine on a new `memory://` vault: the vault, the machine's keys, and the
    /// machine opened with them.
    async fn memory_vault(name: &str) -> (Vault, MasterKeys, Repository) {
        let url = format!("memory://{name}");
        let store = rbackup_store::open(&url, &Default::default()).unwrap();
        let (vault, creds) = Vault::create(store, &url, Duration::from_secs(600))
            .await
            .unwrap();
        let pass = Passphrase::new("lease tests passphrase").unwrap();
        let reg = Registration {
            name: "t".into(),
            hostname: "t".into(),
            passphrase: &pass,
            kdf: KdfParams::fast_insecure_for_tests(),
            chunker: Default::default(),
        };
        let (machine, keys) = vault.register(&creds, reg).await.unwrap();
        // Not `Clone` by design; a test may make a second copy through the secret bytes.
        let copy = MasterKeys::from_secret_bytes(&keys.to_secret_bytes()).unwrap();
        let repo = Repository::open(&vault, &machine, Unlock::Keys(copy), None)
            .await
            .unwrap();
        (vault, keys, repo)
    }

    /// A lease left behind (not refreshed, not deleted) that names `holder`.
    async fn left_behind(repo: &Repository, holder: Holder) -> Id {
        let lease = repo.take_lease(LeaseKind::Shared, "backup").await.unwrap();
        write(&lease.shared, |i| i.holder = Some(holder))
            .await
            .unwrap();
        let id = lease.id();
        lease.abandon();
        id
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn only_the_lease_of_a_holder_gone_from_this_host_is_released() {
        let repo = memory_repo("lease-dead-holder").await;
        let me = Holder::current().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let dead = Holder { pid, ..me.clone() };
        let dead_again = dead.clone();
        let elsewhere = Holder {
            host: format!("{}-elsewhere", me.host),
            ..dead
        };
        let remote = left_behind(&repo, elsewhere).await;
        let alive = left_behind(&repo, me).await;
        // Last: taking a lease releases dead ones, so an earlier one would be gone already.
        let killed = left_behind(&repo, dead_again).await;
        assert_eq!(repo.release_dead_leases().await.unwrap(), 1);
        let mut left: Vec<Id> = repo
            .leases()
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.0)
            .collect();
        left.sort();
        let mut want = vec![remote, alive];
        want.sort();
        assert_eq!(
            left, want,
            "the killed holder's lease {killed:?} went, no other"
        );
        // Taking a lease releases dead ones first, so nothing ever waits for them.
        left_behind(
            &repo,
            Holder {
                pid,
                ..Holder::current().unwrap()
            },
        )
        .await;
        let next = repo
            .take_lease(LeaseKind::Exclusive, "prune")
            .await
            .unwrap();
        let infos = repo.leases().await.unwrap();
        assert_eq!(infos.len(), 3, "{infos:?}");
        assert!(
            infos
                .iter()
                .all(|(_, i)| !i.as_ref().unwrap().holder_is_gone())
        );
        next.release().await;
    }

    fn state(valid_for: Duration) -> (LeaseState, Timestamp) {
        let now = Timestamp::from_second(1_900_000_000).unwrap();
        let info = LeaseInfo {
            kind: LeaseKind::Shared,
            purpose: "backup".into(),
            hostname: "h".into(),
            pid: 1,
            created: now.to_string(),
            expires: plus(now, valid_for).to_string(),
            honours: Vec::new(),
            holder: None,
        };
        let s = LeaseState {
            info,
            valid_until: plus(now, valid_for),
            lost: false,
        };
        (s, now)
    }

    #[test]
    fn a_lease_is_lost_once_less_than_a_third_of_its_ttl_is_left_and_stays_lost() {
        let ttl = Duration::from_secs(60);
        let (mut s, now) = state(Duration::from_secs(45));
        note_if_lost(&mut s, now, ttl);
        assert!(!s.lost, "45 s of 60 left");
        let (mut s, now) = state(Duration::from_secs(19));
        note_if_lost(&mut s, now, ttl);
        assert!(s.lost, "19 s of 60 left");
        // A later successful refresh does not make it held again.
        s.valid_until = plus(now, ttl);
        note_if_lost(&mut s, now, ttl);
        assert!(s.lost);
    }

    #[test]
    fn liveness_follows_the_expiry_and_unreadable_counts_as_live() {
        let (s, now) = state(Duration::from_secs(10));
        assert!(s.info.is_live(now));
        assert!(!s.info.is_live(plus(now, Duration::from_secs(11))));
        let mut odd = s.info.clone();
        odd.expires = "soon".into();
        assert!(odd.is_live(plus(now, Duration::from_secs(1 << 30))));
    }

    /// Any command opens the machine first (check, restore, forget as well as backup and
    /// prune): opening it is what clears a killed holder's lease.
    #[tokio::test(flavor = "multi_thread")]
    async fn opening_the_machine_releases_the_lease_of_a_killed_holder() {
        let (vault, keys, repo) = memory_vault("lease-open-releases").await;
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let me = Holder::current().unwrap();
        let alive = left_behind(&repo, me.clone()).await;
        left_behind(&repo, Holder { pid, ..me }).await;
        assert_eq!(repo.leases().await.unwrap().len(), 2);

        let again = Repository::open(&vault, repo.machine_id(), Unlock::Keys(keys), None)
            .await
            .unwrap();
        let left: Vec<Id> = again
            .leases()
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.0)
            .collect();
        assert_eq!(left, vec![alive], "only the live holder's lease is left");
    }
}
