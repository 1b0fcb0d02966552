//! What each recovery point holds, and what the vault stores for all of them.

use std::collections::{HashMap, HashSet};

use rbackup_crypto::BlobId;

use super::{TreeMemo, Walker};
use crate::error::Result;
use crate::id::Id;
use crate::index::Index;
use crate::repo::Repository;
use crate::snapshot::RecoveryPoint;

/// One recovery point's figures.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PointStats {
    /// Its id (hex).
    pub recovery_point: String,
    /// When its backup started (RFC 3339).
    pub time: String,
    /// Files it holds.
    pub files: u64,
    /// Logical size of its files.
    pub logical_bytes: u64,
    /// Blobs (content and trees) it references.
    pub blobs: u64,
    /// Stored bytes of the blobs that no other stored recovery point references: about what
    /// forgetting it (and pruning) gives back.
    pub unique_bytes: u64,
}

/// What [`Repository::stats`] found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StatsReport {
    /// The recovery points asked for (all that are not deleted when none was named).
    pub points: Vec<PointStats>,
    /// Recovery points not deleted.
    pub recovery_points: u64,
    /// Logical size of every recovery point not deleted, added up.
    pub logical_bytes: u64,
    /// Bytes of packs the vault stores for this machine.
    pub stored_bytes: u64,
    /// Packs stored.
    pub packs: u64,
    /// `logical_bytes / stored_bytes`: how much deduplication and compression save (`None`
    /// while nothing is stored).
    pub dedup_ratio: Option<f64>,
}

impl Repository {
    /// Figures for the recovery points `specs` (ids, prefixes or `latest`; empty: every point
    /// not deleted) and for the machine's whole repository. Every stored point's trees are
    /// read, soft-deleted ones included (their data stays until they are purged), to know
    /// which blobs each point alone references.
    pub async fn stats(&self, specs: &[String]) -> Result<StatsReport> {
        let live = self.recovery_points().await?;
        let mut chosen: Vec<Id> = Vec::new();
        for spec in specs {
            let (id, _) = self.find_recovery_point(spec).await?;
            if !chosen.contains(&id) {
                chosen.push(id);
            }
        }
        if specs.is_empty() {
            chosen = live.iter().map(|(id, _)| *id).collect();
        }
        let stored = self.stored_recovery_points().await?;
        let index = self.load_index().await?;
        // Blob -> (how many points reference it, the last one that did).
        let mut refs: HashMap<BlobId, (u32, usize)> = HashMap::new();
        let mut counts = Vec::with_capacity(stored.len());
        let memo = TreeMemo::default();
        for (n, (_, rp)) in stored.iter().enumerate() {
            let blobs = self.blobs_of(&index, rp, &memo).await?;
            counts.push(blobs.len() as u64);
            for b in blobs {
                let e = refs.entry(b).or_insert((0, n));
                e.0 += 1;
                e.1 = n;
            }
        }
        let mut unique = vec![0u64; stored.len()];
        for (blob, (count, owner)) in &refs {
            if *count == 1 {
                unique[*owner] += index.get(blob).map_or(0, |l| index.stored_share(&l));
            }
        }
        let points = chosen
            .iter()
            .filter_map(|id| stored.iter().position(|(i, _)| i == id))
            .map(|n| {
                let (id, rp) = &stored[n];
                PointStats {
                    recovery_point: id.to_hex(),
                    time: rp.time.clone(),
                    files: rp.files,
                    logical_bytes: rp.bytes,
                    blobs: counts[n],
                    unique_bytes: unique[n],
                }
            })
            .collect();
        let packs = self.store.list(&self.path(crate::layout::PACKS)).await?;
        let stored_bytes: u64 = packs.iter().map(|m| m.size).sum();
        let logical_bytes: u64 = live.iter().map(|(_, rp)| rp.bytes).sum();
        Ok(StatsReport {
            points,
            recovery_points: live.len() as u64,
            logical_bytes,
            stored_bytes,
            packs: packs.len() as u64,
            dedup_ratio: (stored_bytes > 0).then(|| logical_bytes as f64 / stored_bytes as f64),
        })
    }

    /// Every blob `rp` references: its trees and their files' content. A tree is visited once
    /// per point however often it is shared, which also ends a tree that contains itself, and
    /// read once per command (`memo`).
    async fn blobs_of(
        &self,
        index: &Index,
        rp: &RecoveryPoint,
        memo: &TreeMemo,
    ) -> Result<HashSet<BlobId>> {
        let mut walker = Walker::new(self, index, rp).with_memo(memo);
        let mut blobs = HashSet::new();
        let mut stack = vec![rp.tree];
        while let Some(id) = stack.pop() {
            if !blobs.insert(id) {
                continue;
            }
            for node in walker.tree(&id).await?.nodes {
                blobs.extend(node.content.iter().copied());
                if let Some(sub) = node.subtree
                    && !blobs.contains(&sub)
                {
                    stack.push(sub);
                }
            }
        }
        Ok(blobs)
    }
}
