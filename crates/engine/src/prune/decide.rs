//! Phase 1: decide what to delete (see the parent module and ARCHITECTURE.md).

use std::collections::{HashMap, HashSet};

use rbackup_crypto::BlobId;
use rbackup_store::PutMode;

use super::{KIND, Marker, PruneOptions, PruneReport, State};
use crate::codec;
use crate::error::Result;
use crate::id::Id;
use crate::index::IndexPack;
use crate::repo::Repository;

impl Repository {
    /// Phase 1: doom unused packs, repack wasteful ones, record orphans, write the marker.
    pub(super) async fn decide(
        &self,
        opts: &PruneOptions,
        state: &State,
        report: &mut PruneReport,
    ) -> Result<()> {
        let markers = self.read_markers(&mut PruneReport::default()).await?;
        let pending: HashSet<Id> = markers
            .iter()
            .flat_map(|(_, m)| m.doomed.iter().chain(&m.orphans).copied())
            .collect();
        let plan = plan(state, &pending, opts.repack_threshold);
        report.partly_used_kept += plan.partly_used_kept;
        let mut doomed = plan.unused.clone();
        report.packs_repacked += plan.repack.len() as u64;
        if !opts.dry_run && !plan.repack.is_empty() {
            let done = self.repack(opts, state, &plan.repack).await?;
            report.blobs_repacked += done.blobs;
            report.bytes_repacked += done.bytes;
        }
        doomed.extend(plan.repack.iter().map(|(id, _)| *id));
        let orphans: Vec<Id> = state
            .stored
            .keys()
            .filter(|id| !state.packs.contains_key(id) && !pending.contains(id))
            .copied()
            .collect();
        report.packs_doomed += doomed.len() as u64;
        report.orphans_found += orphans.len() as u64;
        if opts.dry_run || (doomed.is_empty() && orphans.is_empty()) {
            return Ok(());
        }
        let marker = Marker {
            decided: self.clock.now().to_string(),
            doomed,
            orphans,
        };
        let id = Id::random();
        let sealed = codec::seal_meta(&self.keys, KIND, &id.to_hex(), &marker);
        self.store
            .put(
                &self.path(&format!("{KIND}/{}", id.to_hex())),
                sealed.into(),
                PutMode::Create,
            )
            .await?;
        Ok(())
    }
}

/// What phase 1 will do with the indexed packs.
struct Plan {
    unused: Vec<Id>,
    /// Packs to repack, with the blobs to copy out of each.
    repack: Vec<(Id, HashSet<BlobId>)>,
    partly_used_kept: u64,
}

/// Each referenced blob gets one *home*: among the packs holding it that are not already
/// pending, the one with the largest used fraction (so a repacked copy wins over the old
/// pack, and duplicates left by crashes are cleaned up). A pack with no home blobs is unused;
/// one whose home blobs are at most `1 - threshold` of it is repacked.
fn plan(state: &State, pending: &HashSet<Id>, threshold: f64) -> Plan {
    // A pack the index lists but the vault no longer has holds nothing: it must never be
    // chosen as a blob's home (the copy a later backup wrote would then look unused and be
    // deleted), and its index entries go with the doomed packs'.
    let (candidates, missing): (Vec<&IndexPack>, Vec<&IndexPack>) = state
        .packs
        .values()
        .filter(|p| !pending.contains(&p.id))
        .partition(|p| state.stored.contains_key(&p.id));
    // A bundle member weighs its part of its unit: a bundle with one live member out of a
    // hundred is mostly waste.
    let shares: HashMap<Id, Vec<u64>> = candidates
        .iter()
        .map(|p| (p.id, crate::bundle::shares(&p.blobs)))
        .collect();
    let weighed = |p: &IndexPack, keep: &dyn Fn(&BlobId) -> bool| -> u64 {
        p.blobs
            .iter()
            .zip(&shares[&p.id])
            .filter(|(b, _)| keep(&b.id))
            .map(|(_, s)| *s)
            .sum()
    };
    let total = |p: &IndexPack| weighed(p, &|_| true).max(1);
    let fraction: HashMap<Id, f64> = candidates
        .iter()
        .map(|p| {
            let used = weighed(p, &|id| state.used.contains(id));
            (p.id, used as f64 / total(p) as f64)
        })
        .collect();
    let mut home: HashMap<BlobId, Id> = HashMap::new();
    for p in &candidates {
        for b in p.blobs.iter().filter(|b| state.used.contains(&b.id)) {
            let better = |cur: &Id| (fraction[&p.id], p.id) > (fraction[cur], *cur);
            if home.get(&b.id).is_none_or(better) {
                home.insert(b.id, p.id);
            }
        }
    }
    let mut out = Plan {
        unused: Vec::new(),
        repack: Vec::new(),
        partly_used_kept: 0,
    };
    for p in candidates {
        let mine: HashSet<BlobId> = p
            .blobs
            .iter()
            .filter(|b| home.get(&b.id) == Some(&p.id))
            .map(|b| b.id)
            .collect();
        let used = weighed(p, &|id| mine.contains(id));
        if mine.is_empty() {
            out.unused.push(p.id);
        } else if 1.0 - used as f64 / total(p) as f64 > threshold {
            out.repack.push((p.id, mine));
        } else if used < total(p) {
            out.partly_used_kept += 1;
        }
    }
    out.unused.extend(missing.iter().map(|p| p.id));
    out.unused.sort();
    out.repack.sort_by_key(|(id, _)| *id);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::{BlobKind, PackEntry};

    fn pack(id: u8, blobs: &[u8]) -> IndexPack {
        let blobs = blobs
            .iter()
            .enumerate()
            .map(|(i, b)| PackEntry {
                kind: BlobKind::Data,
                id: BlobId([*b; 32]),
                offset: i as u64 * 100,
                len: 100,
                raw_len: 90,
                within: None,
            })
            .collect();
        IndexPack {
            id: Id([id; 32]),
            size: 1000,
            blobs,
        }
    }

    /// The vault lost pack 1; a later backup wrote its used blob again into pack 2 (beside one
    /// more used blob and one unused). Pack 1 is the better "home" by fraction used (its only
    /// blob is used), but it holds nothing: chosen, it would make pack 2 look two-thirds
    /// wasted and be repacked without blob 7 — the one copy left. It must be doomed instead.
    #[test]
    fn a_pack_missing_from_the_vault_is_doomed_never_a_blobs_home() {
        let (lost, rewritten) = (pack(1, &[7]), pack(2, &[7, 8, 9]));
        let state = State {
            files: Vec::new(),
            packs: [(lost.id, lost.clone()), (rewritten.id, rewritten.clone())].into(),
            stored: [(rewritten.id, 1000)].into(),
            used: [BlobId([7; 32]), BlobId([8; 32])].into(),
            recovery_points: 1,
        };
        let plan = plan(&state, &HashSet::new(), 0.5);
        assert_eq!(plan.unused, vec![lost.id]);
        assert!(plan.repack.is_empty());
    }
}
