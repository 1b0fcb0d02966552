//! Soft delete: a forgotten recovery point is not removed but marked, by a sealed tombstone
//! `deleted/<rp-id>` that records who deleted it, when and why. Listing leaves tombstoned
//! points out; prune reclaims their data only once the vault's soft-delete window
//! (`vault.json` `soft_delete_days`, 14 by default) has passed since the deletion, by deleting
//! the recovery point object — its packs are then unreferenced and go as any other.
//!
//! A tombstone is sealed with the machine's keys under its kind and the point's id, like every
//! other metadata object: nobody without the keys can write one, and one cannot be moved to
//! another point. One that does not open (forged, damaged, or unreadable just now) hides
//! nothing: the point is listed as not deleted, the problem is logged and `check` reports it.
//!
//! Tombstones are written create-only, so a machine whose store credentials cannot delete or
//! overwrite can still forget. Bringing a point back ([`Repository::undelete`]) removes its
//! tombstone, which needs delete-capable credentials: an append-only machine asks whoever
//! runs retention (an admin host) to do it. (A create-only "undeleted" record would let the
//! machine do it alone, but then the state of a point would be the last of a series of
//! records, ordered by times the store does not authenticate, and a second forget of the same
//! point would need yet another name; one object per deleted point keeps it simple.)
//!
//! After the purge the tombstone stays, so freshness (`freshness.rs`) can tell a purged point
//! from one a store attacker deleted: a predecessor with a tombstone is accounted for, and
//! undelete and restore can say the point was purged. Prune removes a purged point's
//! tombstone once nothing needs it any more: one more window has passed, no remaining
//! recovery point names it as a predecessor, and a remaining one has a higher sequence (so
//! the local mark cannot be the purged point either). Tombstones are a few hundred bytes, so
//! this bounds their number by what two windows of forgets write.

use std::collections::{HashMap, HashSet};

use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use rbackup_store::{PutMode, StoreError};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{EngineError, Result};
use crate::id::Id;
use crate::layout;
use crate::repo::Repository;
use crate::snapshot::{self, RecoveryPoint};

pub(crate) const KIND: &str = layout::DELETED;

/// Who did something to the vault: the process's host and user, and whether it opened the
/// machine as that machine or from elsewhere (an admin host, with the machine's passphrase).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The kernel's host name.
    pub hostname: String,
    /// The user name (`$USER`, else `$LOGNAME`, else the uid's name in `/etc/passwd`, else
    /// `uid N`).
    pub user: String,
    /// The machine itself, when it was the opener; `None` for an admin host.
    pub machine: Option<String>,
}

impl Actor {
    /// This process, as machine `machine` (`None`: as an admin host).
    pub fn current(machine: Option<&str>) -> Actor {
        let hostname = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        let uid = rustix::process::getuid().as_raw();
        let user = ["USER", "LOGNAME"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
            .or_else(|| passwd_name(uid))
            .unwrap_or_else(|| format!("uid {uid}"));
        Actor {
            hostname,
            user,
            machine: machine.map(str::to_string),
        }
    }
}

/// The name of `uid` in `/etc/passwd` (services and cron jobs often run without `$USER`).
fn passwd_name(uid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id = fields.nth(1)?;
        (id.parse() == Ok(uid) && !name.is_empty()).then(|| name.to_string())
    })
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.machine {
            Some(m) => write!(f, "{}@{} (machine {m})", self.user, self.hostname),
            None => write!(f, "{}@{} (admin host)", self.user, self.hostname),
        }
    }
}

/// `deleted/<rp-id>`, sealed. It repeats what a listing shows of the point, so a purged
/// point can still be named.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Tombstone {
    /// RFC 3339.
    pub deleted_at: String,
    pub deleted_by: Actor,
    /// The policy that forgot it (`keep last 3`) or `manual`.
    pub reason: String,
    /// The point's own time, paths, job and sequence.
    pub time: String,
    pub paths: Vec<String>,
    pub job: Option<String>,
    pub sequence: u64,
}

/// A soft-deleted (or purged) recovery point, as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedPoint {
    /// Recovery point id (hex).
    pub id: String,
    /// When its backup started (RFC 3339).
    pub time: String,
    /// Its source paths.
    pub paths: Vec<String>,
    /// Its job, if any.
    pub job: Option<String>,
    /// When it was deleted (RFC 3339).
    pub deleted_at: String,
    /// Who deleted it.
    pub deleted_by: Actor,
    /// Why: the retention policy that forgot it, or `manual`.
    pub reason: String,
    /// When its window ends and a prune may reclaim its data (RFC 3339).
    pub purge_after: String,
    /// Its data was reclaimed: only the tombstone is left, it cannot be restored.
    pub purged: bool,
}

impl DeletedPoint {
    /// Whole days left in the window at `now` (0 once it has passed).
    pub fn days_left(&self, now: Timestamp) -> i64 {
        let Ok(end) = self.purge_after.parse::<Timestamp>() else {
            return 0;
        };
        let secs = end.duration_since(now).as_secs();
        if secs <= 0 {
            0
        } else {
            (secs + 86_399) / 86_400
        }
    }
}

/// A machine's recovery points, the deleted ones apart.
#[derive(Clone, Debug, Default)]
pub struct RecoveryPointListing {
    /// Points not deleted, oldest first.
    pub live: Vec<(Id, RecoveryPoint)>,
    /// Points soft-deleted or purged, oldest deletion first.
    pub deleted: Vec<DeletedPoint>,
    /// Tombstones that do not open (forged or damaged), each with the problem: their points
    /// are in `live`.
    pub unreadable_tombstones: Vec<String>,
}

impl RecoveryPointListing {
    /// Ids of every point with a readable tombstone: gone from the list on purpose.
    pub fn accounted(&self) -> HashSet<Id> {
        let ids = self.deleted.iter().filter_map(|d| Id::from_hex(&d.id).ok());
        ids.collect()
    }
}

/// `deleted_at` plus the window; `None` when the time does not parse (never purged).
pub(crate) fn purge_after(deleted_at: &str, days: u32) -> Option<Timestamp> {
    let t: Timestamp = deleted_at.parse().ok()?;
    t.checked_add(SignedDuration::from_hours(24 * i64::from(days)))
        .ok()
}

fn rel(id: &Id) -> String {
    format!("{KIND}/{}", id.to_hex())
}

impl Repository {
    /// Recovery points that are not deleted, oldest first: what listing, `latest`, retention
    /// and freshness see. (It reads no `vault.json`: an unchanged backup downloads nothing.)
    pub async fn recovery_points(&self) -> Result<Vec<(Id, RecoveryPoint)>> {
        Ok(self.split_points().await?.live)
    }

    /// Every recovery point, with the soft-deleted and purged ones apart.
    pub async fn recovery_point_listing(&self) -> Result<RecoveryPointListing> {
        let split = self.split_points().await?;
        let days = crate::pin::read_meta(&*self.store).await?.soft_delete_days;
        let mut deleted: Vec<DeletedPoint> = split
            .tombs
            .iter()
            .map(|(id, t)| deleted_point(id, t, days, !split.stored.contains(id)))
            .collect();
        deleted.sort_by(|a, b| a.deleted_at.cmp(&b.deleted_at).then(a.id.cmp(&b.id)));
        Ok(RecoveryPointListing {
            live: split.live,
            deleted,
            unreadable_tombstones: split.unreadable,
        })
    }

    async fn split_points(&self) -> Result<Split> {
        let stored = self.stored_recovery_points().await?;
        let (tombs, unreadable) = self.tombstones().await?;
        let ids: HashSet<Id> = stored.iter().map(|(id, _)| *id).collect();
        let tombstoned: HashSet<&Id> = tombs.iter().map(|(id, _)| id).collect();
        let live = stored
            .into_iter()
            .filter(|(id, _)| !tombstoned.contains(id))
            .collect();
        Ok(Split {
            live,
            stored: ids,
            tombs,
            unreadable,
        })
    }

    /// The readable tombstones, and a message for each one that is not.
    pub(crate) async fn tombstones(&self) -> Result<(Vec<(Id, Tombstone)>, Vec<String>)> {
        let ids = self.list_ids(KIND).await?;
        if let Some(c) = &self.cache {
            c.retain(KIND, &ids.iter().map(Id::to_hex).collect());
        }
        let read: Vec<_> = futures::stream::iter(ids)
            .map(|id| async move {
                let open =
                    |b: &[u8]| codec::open_meta::<Tombstone>(&self.keys, KIND, &id.to_hex(), b);
                (id, self.read_immutable(KIND, &id, open).await)
            })
            .buffer_unordered(crate::repo::FETCH_CONCURRENCY)
            .collect()
            .await;
        let (mut ok, mut bad) = (Vec::new(), Vec::new());
        for (id, r) in read {
            match r {
                Ok(t) => ok.push((id, t)),
                // Removed between the listing and the read: undeleted meanwhile.
                Err(EngineError::Store(e)) if e.is_not_found() => {}
                Err(e) => {
                    let msg = format!(
                        "tombstone {} cannot be read ({e}); recovery point {} is treated as not \
                         deleted",
                        self.path(&rel(&id)),
                        id.short()
                    );
                    tracing::warn!("{msg}");
                    bad.push(msg);
                }
            }
        }
        ok.sort_by_key(|(id, _)| *id);
        bad.sort();
        Ok((ok, bad))
    }

    /// Soft-deletes `points` (taken from a listing): writes a tombstone for each, recording
    /// `actor` and `reason`. Create-only, so it works with credentials that cannot delete.
    pub async fn soft_delete(
        &self,
        points: &[(Id, RecoveryPoint)],
        reason: &str,
        actor: &Actor,
    ) -> Result<()> {
        let now = self.clock.now().to_string();
        for (id, rp) in points {
            let t = Tombstone {
                deleted_at: now.clone(),
                deleted_by: actor.clone(),
                reason: reason.into(),
                time: rp.time.clone(),
                paths: rp.paths.clone(),
                job: rp.job.clone(),
                sequence: rp.sequence,
            };
            let sealed = codec::seal_meta(&self.keys, KIND, &id.to_hex(), &t);
            match self.put_immutable(&rel(id), sealed.clone()).await {
                // A tombstone is there that the listing could not read (else the point would
                // not have been live): a forgery's name must not block a real delete.
                Err(EngineError::Store(StoreError::AlreadyExists { .. })) => {
                    let path = self.path(&rel(id));
                    self.store
                        .put(&path, sealed.into(), PutMode::Overwrite)
                        .await?;
                }
                r => r?,
            }
        }
        Ok(())
    }

    /// Brings a soft-deleted recovery point back (`spec`: a unique prefix of its id) by
    /// removing its tombstone; returns its id. A purged one is gone for good.
    pub async fn undelete(&self, spec: &str) -> Result<Id> {
        let listing = self.recovery_point_listing().await?;
        let spec_lc = spec.to_ascii_lowercase();
        let mut hits = listing
            .deleted
            .iter()
            .filter(|d| !spec.is_empty() && d.id.starts_with(&spec_lc));
        let hit = match (hits.next(), hits.next()) {
            (Some(hit), None) => hit,
            (Some(_), Some(_)) => {
                return Err(EngineError::AmbiguousRecoveryPoint { id: spec.into() });
            }
            (None, _) => {
                let live = listing
                    .live
                    .iter()
                    .find(|(id, _)| id.to_hex().starts_with(&spec_lc));
                return Err(match live {
                    Some((id, _)) if !spec.is_empty() => {
                        EngineError::NotDeleted { id: id.to_hex() }
                    }
                    _ => EngineError::RecoveryPointNotFound { id: spec.into() },
                });
            }
        };
        if hit.purged {
            return Err(EngineError::RecoveryPointPurged {
                id: hit.id.clone(),
                deleted_at: hit.deleted_at.clone(),
            });
        }
        let id = Id::from_hex(&hit.id)?;
        self.store.delete(&self.path(&rel(&id))).await?;
        if let Some(c) = &self.cache {
            c.evict(&rel(&id));
        }
        Ok(id)
    }

    /// The point a restore asks for: `latest` among the points not deleted (the newest that
    /// holds `paths` when some are given), or an id prefix
    /// among all stored points, with its deletion if it is soft-deleted. An id whose point was
    /// purged says so.
    pub(crate) async fn find_restorable(
        &self,
        spec: &str,
        paths: &[std::path::PathBuf],
    ) -> Result<(Id, RecoveryPoint, Option<DeletedPoint>)> {
        let found = self.find_recovery_point_holding(spec, paths).await;
        if spec == "latest" {
            let (id, rp) = found?;
            return Ok((id, rp, None));
        }
        let listing = self.recovery_point_listing().await?;
        let deletion = |id: &Id| {
            let hex = id.to_hex();
            listing.deleted.iter().find(|d| d.id == hex).cloned()
        };
        match found {
            Ok((id, rp)) => Ok((id, rp, deletion(&id))),
            Err(EngineError::RecoveryPointNotFound { .. }) if !spec.is_empty() => {
                let spec_lc = spec.to_ascii_lowercase();
                let purged = listing
                    .deleted
                    .iter()
                    .find(|d| d.purged && d.id.starts_with(&spec_lc));
                Err(match purged {
                    Some(d) => EngineError::RecoveryPointPurged {
                        id: d.id.clone(),
                        deleted_at: d.deleted_at.clone(),
                    },
                    None => EngineError::RecoveryPointNotFound { id: spec.into() },
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Prune's first step: deletes the recovery point objects of soft-deleted points whose
    /// window has passed at `now` (all of them with `now_all`), then the tombstones of purged
    /// points nothing needs any more (see the module docs). Returns (points purged, points
    /// still in their window, tombstones removed, the earliest end of a window still running).
    pub(crate) async fn purge_deleted(
        &self,
        now_all: bool,
        dry_run: bool,
    ) -> Result<(Vec<Id>, u64, u64, Option<String>)> {
        let now = self.clock.now();
        let days = crate::pin::read_meta(&*self.store).await?.soft_delete_days;
        let stored = self.stored_recovery_points().await?;
        let present: HashMap<Id, &RecoveryPoint> = stored.iter().map(|(i, r)| (*i, r)).collect();
        let (tombs, _) = self.tombstones().await?;
        let (mut purged, mut waiting, mut next) = (Vec::new(), 0, None::<Timestamp>);
        for (id, t) in &tombs {
            if !present.contains_key(id) {
                continue;
            }
            match purge_after(&t.deleted_at, days) {
                Some(end) if now_all || end <= now => purged.push(*id),
                end => {
                    waiting += 1;
                    if let Some(end) = end {
                        next = Some(next.map_or(end, |n| n.min(end)));
                    }
                }
            }
        }
        if dry_run {
            return Ok((purged, waiting, 0, next.map(|t| t.to_string())));
        }
        for id in &purged {
            let rel = format!("{}/{}", snapshot::KIND, id.to_hex());
            self.store.delete(&self.path(&rel)).await?;
            if let Some(c) = &self.cache {
                c.evict(&rel);
            }
        }
        let gone: HashSet<&Id> = purged.iter().collect();
        let remaining: Vec<&RecoveryPoint> = stored
            .iter()
            .filter(|(id, _)| !gone.contains(id))
            .map(|(_, rp)| rp)
            .collect();
        let named: HashSet<&Id> = remaining.iter().flat_map(|rp| &rp.predecessors).collect();
        let top = remaining.iter().map(|rp| rp.sequence).max().unwrap_or(0);
        let mut removed = 0;
        for (id, t) in &tombs {
            let is_purged = !present.contains_key(id) || gone.contains(id);
            // One more window after the purge, so undelete and restore can still say what
            // became of the point.
            let kept_until = purge_after(&t.deleted_at, days.saturating_mul(2));
            let expired = kept_until.is_some_and(|k| k <= now);
            if is_purged && expired && !named.contains(id) && top > t.sequence {
                self.store.delete(&self.path(&rel(id))).await?;
                removed += 1;
            }
        }
        Ok((purged, waiting, removed, next.map(|t| t.to_string())))
    }
}

/// The stored points split by their tombstones.
struct Split {
    /// Points without a readable tombstone.
    live: Vec<(Id, RecoveryPoint)>,
    /// Ids of every stored point.
    stored: HashSet<Id>,
    /// Readable tombstones.
    tombs: Vec<(Id, Tombstone)>,
    /// Problems with the others.
    unreadable: Vec<String>,
}

fn deleted_point(id: &Id, t: &Tombstone, days: u32, purged: bool) -> DeletedPoint {
    DeletedPoint {
        id: id.to_hex(),
        time: t.time.clone(),
        paths: t.paths.clone(),
        job: t.job.clone(),
        deleted_at: t.deleted_at.clone(),
        deleted_by: t.deleted_by.clone(),
        reason: t.reason.clone(),
        purge_after: purge_after(&t.deleted_at, days).map_or_else(String::new, |p| p.to_string()),
        purged,
    }
}
