//! Prune: remove the packs no recovery point needs, safely beside running backups.
//!
//! # The key design choice: two-phase deletion with honoured markers
//!
//! A backup deduplicates against the index it loaded at its start, and may keep referencing
//! blobs from it for hours before it writes its recovery point. Deleting a pack that looks
//! unused *now* could therefore break a recovery point that does not exist yet. Instead of
//! making backups and prune wait for each other, prune deletes in two phases:
//!
//! 1. **Decide.** Compute the blobs every recovery point references. Packs with none of them,
//!    and partly used packs worth repacking (after copying their used blobs into new packs,
//!    indexed at once), are *doomed*; packs in the vault that no index lists are *orphans*.
//!    Both lists go into a sealed marker `prune/<id>` stamped with the decision time.
//! 2. **Delete** (a later prune, or this one after waiting), for a marker that is *ripe*:
//!    its grace period has passed, and every live lease *honours* it. A backup reads the
//!    markers right after taking its lease and before loading its index, leaves doomed packs
//!    out of that index (so it never reuses their blobs: it stores its own copies), and
//!    records the markers it read in its lease. A live lease that does not honour the marker
//!    belongs to a backup that may still reuse doomed blobs, so the marker waits for it to
//!    finish or its lease to run out. Then the references are computed again, from every
//!    recovery point that exists now: a doomed pack holding a referenced blob with no copy
//!    outside doomed packs is kept after all. The rest are deleted in this order: write new
//!    index files for the surviving packs of every index file that lists a deleted pack,
//!    delete those old index files, delete the packs, delete the marker.
//!
//! The full argument, including the orders and what a crash at each step leaves, is in
//! ARCHITECTURE.md under "Invariants".

mod decide;
mod delete;
mod repack;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use rbackup_crypto::BlobId;
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{EngineError, Result};
use crate::id::Id;
use crate::index::{self, Index, IndexFile, IndexPack};
use crate::lock::{DEFAULT_LEASE_TTL, Lease, LeaseKind, plus};
use crate::repo::Repository;
use crate::snapshot::RecoveryPoint;
use crate::tree::NodeKind;

/// Where prune markers live in a machine's repository.
pub(crate) const KIND: &str = crate::layout::PRUNE;

/// Default grace period: a lease TTL plus five minutes for clocks and slow listings.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(DEFAULT_LEASE_TTL.as_secs() + 300);

/// A decision of phase 1 (sealed, `prune/<id>`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Marker {
    /// When the decision was made (RFC 3339).
    pub decided: String,
    /// Indexed packs to delete (unused, or repacked).
    pub doomed: Vec<Id>,
    /// Packs no index listed.
    pub orphans: Vec<Id>,
}

/// How long a store's staging file must be untouched before prune removes it: a put stages,
/// syncs and publishes within one call, so a day-old one belongs to a killed writer.
pub const STALE_STAGING: Duration = Duration::from_secs(24 * 3600);

/// How to prune.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// How long a decision waits before its packs may be deleted (on top of the lease rule).
    pub grace: Duration,
    /// A partly used pack is repacked when more than this fraction of it is unused.
    pub repack_threshold: f64,
    /// Only report what would be done.
    pub dry_run: bool,
    /// After deciding, wait until every pending decision may be carried out (grace passed,
    /// no running backup that started before it) and delete in this run. This waits as long
    /// as the longest such backup runs.
    pub wait: bool,
    /// Where repacked packs are staged (default: a private folder in the system temp dir,
    /// made for this run).
    pub scratch_dir: Option<PathBuf>,
    /// Purge every soft-deleted recovery point now, whatever is left of its window: a
    /// critical operation that needs [`PruneOptions::pin`] (used up by the run).
    pub purge_deleted_now: bool,
    /// The vault's security PIN, for [`PruneOptions::purge_deleted_now`].
    pub pin: Option<String>,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            grace: DEFAULT_GRACE,
            repack_threshold: 0.3,
            dry_run: false,
            wait: false,
            scratch_dir: None,
            purge_deleted_now: false,
            pin: None,
        }
    }
}

/// What a prune did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PruneReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Recovery points whose references were computed (soft-deleted ones in their window
    /// included: their data is kept).
    pub recovery_points: u64,
    /// Soft-deleted recovery points purged (their window had passed, or at once with the
    /// PIN): their data is now unreferenced.
    pub recovery_points_purged: u64,
    /// Soft-deleted recovery points still in their window, kept.
    pub soft_deleted_kept: u64,
    /// When the first of those windows ends (RFC 3339).
    pub next_purge_after: Option<String>,
    /// Tombstones of purged points removed (nothing needed them any more).
    pub tombstones_removed: u64,
    /// Blobs they reference.
    pub referenced_blobs: u64,
    /// Indexed packs deleted.
    pub packs_deleted: u64,
    /// Unindexed packs (left by killed backups) deleted.
    pub orphans_deleted: u64,
    /// Bytes of deleted packs.
    pub bytes_freed: u64,
    /// Doomed packs kept after all: a recovery point written since the decision uses them.
    pub packs_kept_in_use: u64,
    /// Index files replaced by new ones without the deleted packs.
    pub index_files_rewritten: u64,
    /// Decisions carried out (their markers removed).
    pub markers_completed: u64,
    /// Lease objects removed: superseded refreshes, and every object of a lease that was
    /// released or ran out more than the grace period ago (see `lock.rs`).
    #[serde(default)]
    pub lease_objects_removed: u64,
    /// Published retention policies replaced by newer ones, removed (see `policy.rs`).
    #[serde(default)]
    pub policy_objects_removed: u64,
    /// Staging files of killed writers, untouched for [`STALE_STAGING`], removed from the store
    /// (a local vault's staging folder; see [`Store::remove_stale_staging`]).
    ///
    /// [`Store::remove_stale_staging`]: rbackup_store::Store::remove_stale_staging
    #[serde(default)]
    pub staging_files_removed: u64,
    /// Packs newly doomed by this run's decision (unused, or repacked).
    pub packs_doomed: u64,
    /// Unindexed packs newly found.
    pub orphans_found: u64,
    /// Partly used packs whose used blobs were copied into new packs.
    pub packs_repacked: u64,
    /// Blobs copied.
    pub blobs_repacked: u64,
    /// Bytes of the new packs written by repacking.
    pub bytes_repacked: u64,
    /// Partly used packs left alone (unused fraction under the threshold).
    pub partly_used_kept: u64,
    /// Packs decided on but not yet deleted.
    pub candidates_pending: u64,
    /// Their bytes.
    pub bytes_pending: u64,
    /// Earliest time the pending packs may go (RFC 3339), if the grace is what they wait for.
    pub deletable_after: Option<String>,
    /// Leases the pending packs wait for.
    pub waiting_for: Vec<String>,
    /// Harmless findings.
    pub notes: Vec<String>,
    /// Wall time.
    pub duration_s: f64,
}

/// The vault as prune sees it: index files, their packs, stored packs, references.
struct State {
    files: Vec<(Id, IndexFile)>,
    /// Each indexed pack with its entries (first index file that lists it).
    packs: HashMap<Id, IndexPack>,
    /// Packs in the store, with their sizes.
    stored: HashMap<Id, u64>,
    used: HashSet<BlobId>,
    recovery_points: usize,
}

impl Repository {
    /// Removes data no recovery point needs (see the module docs for how this stays safe
    /// beside running backups). Deletes what earlier decisions made deletable, then decides
    /// anew; with `opts.wait`, waits until the new decision may be carried out too.
    pub async fn prune(&self, opts: PruneOptions) -> Result<PruneReport> {
        if !opts.dry_run {
            self.refuse_if_append_only("prune")?;
        }
        // Real elapsed time for the report, whatever the vault's clock says.
        let started = Instant::now();
        let lease = if opts.dry_run {
            None
        } else {
            Some(self.take_lease(LeaseKind::Exclusive, "prune").await?)
        };
        let mut report = PruneReport {
            dry_run: opts.dry_run,
            ..PruneReport::default()
        };
        let result = self.prune_leased(&opts, lease.as_ref(), &mut report).await;
        if let Some(l) = lease {
            l.release().await;
        }
        result?;
        report.notes.sort();
        report.notes.dedup();
        report.duration_s = started.elapsed().as_secs_f64();
        Ok(report)
    }

    async fn prune_leased(
        &self,
        opts: &PruneOptions,
        lease: Option<&Lease>,
        report: &mut PruneReport,
    ) -> Result<()> {
        let own = lease.map(Lease::id);
        if opts.purge_deleted_now && !opts.dry_run {
            crate::pin::consume(&*self.store, opts.pin.as_deref(), self.clock.now()).await?;
        }
        let (purged, kept, removed, next) = self
            .purge_deleted(opts.purge_deleted_now, opts.dry_run)
            .await?;
        report.recovery_points_purged = purged.len() as u64;
        report.soft_deleted_kept = kept;
        report.tombstones_removed = removed;
        report.next_purge_after = next;
        if !opts.dry_run {
            // Leases of killed holders and the objects append-only machines leave behind.
            report.lease_objects_removed += self.remove_expired_leases(opts.grace).await?;
            report.policy_objects_removed += self.remove_superseded_policies().await?;
            report.staging_files_removed += self.store.remove_stale_staging(STALE_STAGING).await?;
            self.complete_ripe(opts, own, report).await?;
        }
        let state = self.survey(&purged).await?;
        report.recovery_points = state.recovery_points as u64;
        report.referenced_blobs = state.used.len() as u64;
        self.decide(opts, &state, report).await?;
        if opts.wait && !opts.dry_run {
            self.wait_and_complete(opts, lease, report).await?;
        }
        self.report_pending(opts, own, report).await
    }

    /// `--wait`: carries out pending decisions as they ripen, until none is left.
    async fn wait_and_complete(
        &self,
        opts: &PruneOptions,
        lease: Option<&Lease>,
        report: &mut PruneReport,
    ) -> Result<()> {
        let own = lease.map(Lease::id);
        loop {
            let markers = self.read_markers(&mut PruneReport::default()).await?;
            if markers.is_empty() {
                return Ok(());
            }
            let wait = self.ripeness(&markers, opts, own).await?.next_check;
            tracing::info!("prune: waiting {wait:?} for pending deletions to become safe");
            self.clock.sleep(wait).await;
            if let Some(l) = lease {
                l.ensure_held()?;
            }
            self.complete_ripe(opts, own, report).await?;
        }
    }

    /// The index a backup deduplicates against: every index file, less the packs doomed by
    /// the markers read *before* it (recorded in the lease, which must already exist). Also
    /// every pack those markers name (doomed or orphan): the packs a backup must not adopt.
    pub(crate) async fn load_index_for_backup(
        &self,
        lease: &Lease,
    ) -> Result<(Index, HashSet<Id>)> {
        let mut notes = PruneReport::default();
        let markers = self.read_markers(&mut notes).await?;
        let doomed: HashSet<Id> = markers.iter().flat_map(|(_, m)| m.doomed.clone()).collect();
        let named: HashSet<Id> = markers
            .iter()
            .flat_map(|(_, m)| m.doomed.iter().chain(&m.orphans).copied())
            .collect();
        let index = self.build_index(|p| !doomed.contains(p)).await?;
        lease
            .honour(markers.iter().map(|(id, _)| *id).collect())
            .await?;
        Ok((index, named))
    }

    /// The index of every index file's packs that `keep` accepts, each file merged as it is
    /// read and then dropped (all of them decoded at once take more memory than the index
    /// itself). Taken again from a new listing as [`Repository::load_index_files`] does.
    pub(crate) async fn build_index(&self, keep: impl Fn(&Id) -> bool) -> Result<Index> {
        let mut attempts = 0;
        loop {
            match self.try_build_index(&keep).await {
                Err(EngineError::Store(e)) if e.is_not_found() && attempts < 3 => attempts += 1,
                r => return r,
            }
        }
    }

    async fn try_build_index(&self, keep: &impl Fn(&Id) -> bool) -> Result<Index> {
        let ids = self.list_ids(index::KIND).await?;
        if let Some(c) = &self.cache {
            c.retain(index::KIND, &ids.iter().map(Id::to_hex).collect());
        }
        let mut files = futures::stream::iter(ids)
            .map(|id| async move {
                let open = |b: &[u8]| index::open(&self.keys, &id, b);
                self.read_immutable(index::KIND, &id, open).await
            })
            .buffer_unordered(crate::repo::FETCH_CONCURRENCY);
        let mut index = Index::default();
        while let Some(f) = files.try_next().await? {
            for p in f.packs.into_iter().filter(|p| keep(&p.id)) {
                index.add_pack(p);
            }
        }
        index.finish();
        Ok(index)
    }

    /// Index files with their names (read through the cache, in parallel). A file that
    /// vanishes between the listing and the read was replaced by a prune (the new file was
    /// written first), so the listing is simply taken again.
    pub(crate) async fn load_index_files(&self) -> Result<Vec<(Id, IndexFile)>> {
        let mut attempts = 0;
        loop {
            match self.try_load_index_files().await {
                Err(EngineError::Store(e)) if e.is_not_found() && attempts < 3 => attempts += 1,
                r => return r,
            }
        }
    }

    async fn try_load_index_files(&self) -> Result<Vec<(Id, IndexFile)>> {
        let ids = self.list_ids(index::KIND).await?;
        if let Some(c) = &self.cache {
            c.retain(index::KIND, &ids.iter().map(Id::to_hex).collect());
        }
        futures::stream::iter(ids)
            .map(|id| async move {
                let open = |b: &[u8]| index::open(&self.keys, &id, b);
                Ok::<_, EngineError>((id, self.read_immutable(index::KIND, &id, open).await?))
            })
            .buffer_unordered(8)
            .try_collect()
            .await
    }

    /// Readable markers; unreadable ones are noted and ignored (nothing is deleted for them).
    async fn read_markers(&self, report: &mut PruneReport) -> Result<Vec<(Id, Marker)>> {
        let mut out = Vec::new();
        for id in self.list_ids(KIND).await? {
            let path = self.path(&format!("{KIND}/{}", id.to_hex()));
            let max = crate::layout::limits(KIND).stored;
            let bytes = match crate::layout::get_bounded(&*self.store, &path, max).await {
                Err(EngineError::Store(e)) if e.is_not_found() => continue, // completed meanwhile
                r => r?,
            };
            match codec::open_meta::<Marker>(&self.keys, KIND, &id.to_hex(), &bytes) {
                Ok(m) => out.push((id, m)),
                Err(e) => report.notes.push(format!(
                    "prune marker {path} cannot be read ({e}); it is ignored: delete it"
                )),
            }
        }
        Ok(out)
    }

    /// Index files, packs, stored packs and the blobs all recovery points reference: every
    /// stored one, soft-deleted ones included (their window keeps their data), less
    /// `purged` (already deleted, or only counted so in a dry run).
    async fn survey(&self, purged: &[Id]) -> Result<State> {
        let mut rps = self.stored_recovery_points().await?;
        rps.retain(|(id, _)| !purged.contains(id));
        let files = self.load_index_files().await?;
        let mut index = Index::default();
        let mut packs = HashMap::new();
        for (_, f) in &files {
            for p in &f.packs {
                packs.entry(p.id).or_insert_with(|| p.clone());
                index.add_pack(p.clone());
            }
        }
        index.finish();
        let used = self.referenced(&index, &rps).await?;
        let mut stored = HashMap::new();
        for m in self.store.list(&self.path(crate::layout::PACKS)).await? {
            let name = m.path.rsplit('/').next().unwrap_or_default();
            match Id::from_hex(name) {
                Ok(id) => {
                    stored.insert(id, m.size);
                }
                Err(_) => tracing::warn!("ignoring unexpected object {}", m.path),
            }
        }
        Ok(State {
            files,
            packs,
            stored,
            used,
            recovery_points: rps.len(),
        })
    }

    /// Every tree and content blob reachable from the recovery points. A tree that cannot be
    /// read stops the prune: deciding on a partial view could delete what a point needs.
    async fn referenced(
        &self,
        index: &Index,
        rps: &[(Id, RecoveryPoint)],
    ) -> Result<HashSet<BlobId>> {
        let mut used = HashSet::new();
        let mut stack: Vec<BlobId> = rps.iter().map(|(_, rp)| rp.tree).collect();
        while let Some(id) = stack.pop() {
            if !used.insert(id) {
                continue;
            }
            let tree = self
                .load_tree(index, &id)
                .await
                .map_err(|e| EngineError::PruneStopped {
                    tree: id,
                    source: Box::new(e),
                })?;
            for n in tree.nodes {
                match (n.kind, n.subtree) {
                    (NodeKind::Dir, Some(sub)) => stack.push(sub),
                    _ => used.extend(n.content),
                }
            }
        }
        Ok(used)
    }

    /// Which markers may be carried out now, and when to look again.
    async fn ripeness(
        &self,
        markers: &[(Id, Marker)],
        opts: &PruneOptions,
        own: Option<Id>,
    ) -> Result<Ripeness> {
        let now = self.clock.now();
        let leases = self.leases().await?;
        let mut r = Ripeness {
            ripe: Vec::new(),
            next_check: self.lease_ttl / 3,
            not_before: None,
            waiting_for: Vec::new(),
        };
        for (id, m) in markers {
            // An unreadable decision time counts as "now": it waits a full grace period.
            let decided = m.decided.parse::<Timestamp>().unwrap_or(now);
            let due = plus(decided, opts.grace);
            let blockers: Vec<String> = leases
                .iter()
                .filter(|(lid, _)| Some(*lid) != own)
                .filter_map(|(lid, info)| match info {
                    None => Some(format!("unreadable lease {} (delete it)", lid.to_hex())),
                    // A killed holder on this host cannot reuse anything any more.
                    Some(i) if i.holder_is_gone() => None,
                    Some(i) if i.is_live(now) && !i.honours.contains(id) => Some(format!(
                        "{} on {} (pid {}, since {}, lease runs out at {})",
                        i.purpose, i.hostname, i.pid, i.created, i.expires
                    )),
                    Some(_) => None,
                })
                .collect();
            if due <= now && blockers.is_empty() {
                r.ripe.push(*id);
                continue;
            }
            if due > now {
                r.not_before = Some(r.not_before.map_or(due, |t: Timestamp| t.max(due)));
                let left = Duration::try_from(due.duration_since(now)).unwrap_or_default();
                r.next_check = r.next_check.min(left + Duration::from_millis(10));
            }
            r.waiting_for.extend(blockers);
        }
        r.waiting_for.sort();
        r.waiting_for.dedup();
        r.next_check = r.next_check.max(Duration::from_millis(10));
        Ok(r)
    }

    async fn report_pending(
        &self,
        opts: &PruneOptions,
        own: Option<Id>,
        report: &mut PruneReport,
    ) -> Result<()> {
        let markers = self.read_markers(&mut PruneReport::default()).await?;
        let stored: HashMap<Id, u64> = self
            .store
            .list(&self.path(crate::layout::PACKS))
            .await?
            .into_iter()
            .filter_map(|m| Some((Id::from_hex(m.path.rsplit('/').next()?).ok()?, m.size)))
            .collect();
        let pending: HashSet<Id> = markers
            .iter()
            .flat_map(|(_, m)| m.doomed.iter().chain(&m.orphans).copied())
            .filter(|id| stored.contains_key(id))
            .collect();
        report.candidates_pending = pending.len() as u64;
        report.bytes_pending = pending.iter().filter_map(|id| stored.get(id)).sum();
        let r = self.ripeness(&markers, opts, own).await?;
        report.deletable_after = r.not_before.map(|t| t.to_string());
        report.waiting_for = r.waiting_for;
        Ok(())
    }
}

struct Ripeness {
    ripe: Vec<Id>,
    next_check: Duration,
    not_before: Option<Timestamp>,
    waiting_for: Vec<String>,
}
