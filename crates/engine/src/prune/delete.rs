//! Phase 2: carry out ripe decisions (see the parent module and ARCHITECTURE.md for the
//! conditions and the order of the steps).

use rbackup_crypto::BlobId;
use std::collections::HashSet;

use super::{KIND, PruneOptions, PruneReport, State};
use crate::error::Result;
use crate::id::Id;
use crate::index::{self, IndexFile, IndexPack};
use crate::layout::pack_rel;
use crate::repo::Repository;

impl Repository {
    /// Phase 2 for every ripe marker.
    pub(super) async fn complete_ripe(
        &self,
        opts: &PruneOptions,
        own: Option<Id>,
        report: &mut PruneReport,
    ) -> Result<()> {
        let markers = self.read_markers(report).await?;
        let ripe: HashSet<Id> = self
            .ripeness(&markers, opts, own)
            .await?
            .ripe
            .into_iter()
            .collect();
        if ripe.is_empty() {
            return Ok(());
        }
        report.lease_objects_removed += self.remove_expired_leases(opts.grace).await?;
        // Every backup that could reuse these packs has ended: its recovery point, if any, is
        // in the vault, so the references computed now are complete for them.
        let state = self.survey(&[]).await?;
        let all_doomed: HashSet<Id> = markers.iter().flat_map(|(_, m)| m.doomed.clone()).collect();
        let safe = safe_copies(&state, &all_doomed);
        let needed = |p: &IndexPack| {
            p.blobs
                .iter()
                .any(|b| state.used.contains(&b.id) && !safe.contains(&b.id))
        };
        let mut delete = HashSet::new();
        for (_, m) in markers.iter().filter(|(id, _)| ripe.contains(id)) {
            for d in &m.doomed {
                match state.packs.get(d) {
                    // Already out of every index (a crash after the rewrite): an orphan now.
                    None => {
                        delete.insert(*d);
                    }
                    Some(p) if needed(p) => report.packs_kept_in_use += 1,
                    Some(_) => {
                        delete.insert(*d);
                    }
                }
            }
            // An orphan that some index lists now was a live backup's after all.
            delete.extend(m.orphans.iter().filter(|o| !state.packs.contains_key(o)));
        }
        self.rewrite_index(&state, &delete, report).await?;
        self.delete_packs(&state, &delete, report).await?;
        for id in &ripe {
            self.store
                .delete(&self.path(&format!("{KIND}/{}", id.to_hex())))
                .await?;
            report.markers_completed += 1;
        }
        Ok(())
    }

    /// Replaces every index file that lists a pack in `delete` by one new file with the rest,
    /// written before the old ones are deleted (so no kept pack is ever unindexed).
    async fn rewrite_index(
        &self,
        state: &State,
        delete: &HashSet<Id>,
        report: &mut PruneReport,
    ) -> Result<()> {
        let touched: Vec<&(Id, IndexFile)> = state
            .files
            .iter()
            .filter(|(_, f)| f.packs.iter().any(|p| delete.contains(&p.id)))
            .collect();
        if touched.is_empty() {
            return Ok(());
        }
        let mut seen = HashSet::new();
        let survivors: Vec<IndexPack> = touched
            .iter()
            .flat_map(|(_, f)| f.packs.iter())
            .filter(|p| !delete.contains(&p.id) && seen.insert(p.id))
            .cloned()
            .collect();
        if !survivors.is_empty() {
            let name = Id::random();
            let file = IndexFile { packs: survivors };
            let sealed = index::seal(&self.keys, &name, &file);
            self.put_immutable(&format!("{}/{}", index::KIND, name.to_hex()), sealed)
                .await?;
        }
        for (id, _) in touched {
            self.store
                .delete(&self.path(&format!("{}/{}", index::KIND, id.to_hex())))
                .await?;
            report.index_files_rewritten += 1;
        }
        Ok(())
    }

    async fn delete_packs(
        &self,
        state: &State,
        delete: &HashSet<Id>,
        report: &mut PruneReport,
    ) -> Result<()> {
        for id in delete {
            let Some(size) = state.stored.get(id) else {
                continue; // deleted by an earlier, interrupted run
            };
            self.store.delete(&self.path(&pack_rel(id))).await?;
            report.bytes_freed += size;
            if state.packs.contains_key(id) {
                report.packs_deleted += 1;
            } else {
                report.orphans_deleted += 1;
            }
        }
        if let Some(c) = &self.cache {
            // Cached tree packs of deleted packs: keep only what is still stored.
            let dirs: HashSet<String> = delete
                .iter()
                .map(|id| id.to_hex()[..2].to_string())
                .collect();
            for dir in dirs {
                let keep = state
                    .stored
                    .keys()
                    .filter(|id| !delete.contains(id) && id.to_hex().starts_with(&dir))
                    .map(Id::to_hex)
                    .collect();
                c.retain(&format!("{}/{dir}", crate::layout::PACKS), &keep);
            }
        }
        Ok(())
    }
}

/// Blobs with an indexed copy in a stored pack that is not doomed: a doomed pack holding a
/// referenced blob outside this set is still needed.
fn safe_copies(state: &State, doomed: &HashSet<Id>) -> HashSet<BlobId> {
    state
        .packs
        .values()
        .filter(|p| !doomed.contains(&p.id) && state.stored.contains_key(&p.id))
        .flat_map(|p| p.blobs.iter().map(|b| b.id))
        .collect()
}
