//! Freshness: noticing that recovery points were deleted from the vault or that the vault was
//! rolled back to an older state.
//!
//! Each recovery point records, inside its sealed part, a per-machine `sequence` (1 + the
//! highest sequence among the machine's recovery points when the backup started) and its
//! `predecessors` (the ids of the recovery points that held that highest sequence). Nobody
//! without the machine's keys can forge either. Two things are compared:
//!
//! - the vault with itself: a predecessor that is no longer in the vault was deleted, and a
//!   recovery point whose sequence is not above its predecessors' was not made by the rules;
//! - the vault with the embedder's local high-water mark ([`Freshness`]): the newest recovery
//!   point this machine wrote or saw. A vault whose highest sequence is lower has lost its
//!   newest recovery points or was replaced by an older copy — which the vault alone cannot
//!   show, since an old copy is self-consistent.
//!
//! Recovery points this machine forgot itself are recorded in [`Freshness::forgotten`] and are
//! not reported, and neither are points with a sealed tombstone (soft-deleted, or purged after
//! their window, by this machine or an admin host; see `tombstone.rs` and
//! [`assess_accounting`]); without a mark, missing predecessors are not reported at all, since a forget
//! and a deletion by someone else look the same in the vault. Where the mark is kept is the embedder's choice; the engine only updates it.
//! Recovery points written before sequences existed have sequence 0 and no predecessors: they
//! are never reported and never count as the newest.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::id::Id;
use crate::retention::ForgetReport;
use crate::snapshot::RecoveryPoint;

/// The local high-water mark of one machine: kept by the embedder between runs (as JSON, for
/// instance), updated by the engine, compared with the vault by [`assess`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freshness {
    /// The highest sequence among the recovery points this machine wrote or saw.
    #[serde(default)]
    pub newest_sequence: u64,
    /// The recovery point that had it.
    #[serde(default)]
    pub newest_id: Option<Id>,
    /// Recovery points this machine forgot (deliberately removed) that a present recovery
    /// point still names as a predecessor.
    #[serde(default)]
    pub forgotten: Vec<Id>,
}

impl Freshness {
    /// Raises the mark to the newest recovery point in `rps` (never lowers it: a vault that
    /// went back must go on being reported), and drops forgotten ids no present recovery
    /// point names any more, so the list does not grow without bound.
    pub fn observe(&mut self, rps: &[(Id, RecoveryPoint)]) {
        if let Some((id, rp)) = rps.iter().max_by_key(|(_, rp)| rp.sequence) {
            self.wrote(*id, rp.sequence);
        }
        let named: HashSet<&Id> = rps.iter().flat_map(|(_, rp)| &rp.predecessors).collect();
        self.forgotten.retain(|id| named.contains(id));
    }

    /// Records a recovery point this machine wrote (or saw) with `sequence`.
    pub fn wrote(&mut self, id: Id, sequence: u64) {
        if sequence > self.newest_sequence {
            self.newest_sequence = sequence;
            self.newest_id = Some(id);
        }
    }

    /// Records the recovery points a (not dry) [`Repository::forget`](crate::Repository::forget)
    /// run deleted.
    pub fn forgot_in(&mut self, report: &ForgetReport) {
        if report.dry_run {
            return;
        }
        let gone = report.groups.iter().flat_map(|g| &g.points);
        let gone = gone.filter(|p| !p.verdict.is_keep());
        self.forgot(gone.filter_map(|p| Id::from_hex(&p.id).ok()));
    }

    /// Records recovery points this machine removed on purpose, so they are not reported.
    pub fn forgot(&mut self, ids: impl IntoIterator<Item = Id>) {
        for id in ids {
            if !self.forgotten.contains(&id) {
                self.forgotten.push(id);
            }
        }
    }
}

/// A sign that the vault lost recovery points or went back to an older state.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FreshnessFinding {
    /// `missing` is named as a predecessor by `named_by` but is not in the vault, and this
    /// machine did not forget it.
    Disappeared {
        /// The recovery point that is gone.
        missing: Id,
        /// A present recovery point that names it.
        named_by: Id,
    },
    /// The vault's highest sequence is below the one this machine wrote or saw.
    RolledBack {
        /// The local mark.
        local_sequence: u64,
        /// The recovery point that had it.
        local_id: Option<Id>,
        /// The vault's highest sequence (0: none with a sequence).
        vault_sequence: u64,
        /// The recovery point that has it.
        vault_id: Option<Id>,
    },
    /// `id` has a sequence not above that of its predecessor `predecessor`.
    SequenceBackwards {
        /// The recovery point.
        id: Id,
        /// Its sequence.
        sequence: u64,
        /// Its predecessor.
        predecessor: Id,
        /// The predecessor's sequence.
        predecessor_sequence: u64,
    },
}

impl fmt::Display for FreshnessFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FreshnessFinding::Disappeared { missing, named_by } => write!(
                f,
                "recovery point {missing} disappeared from the vault (recovery point {named_by} \
                 names it as its predecessor, and this machine did not forget it)"
            ),
            FreshnessFinding::RolledBack {
                local_sequence,
                local_id,
                vault_sequence,
                vault_id,
            } => {
                let name = |id: &Option<Id>| id.map_or("-".to_string(), |i| i.to_hex());
                write!(
                    f,
                    "the vault's newest recovery point (sequence {vault_sequence}, id {}) is \
                     older than the one this machine wrote or saw (sequence {local_sequence}, \
                     id {}): recovery points were removed or the vault was rolled back",
                    name(vault_id),
                    name(local_id)
                )
            }
            FreshnessFinding::SequenceBackwards {
                id,
                sequence,
                predecessor,
                predecessor_sequence,
            } => write!(
                f,
                "sequence went backwards: recovery point {id} has sequence {sequence}, not above \
                 its predecessor {predecessor}'s {predecessor_sequence}"
            ),
        }
    }
}

/// Compares the machine's recovery points with each other and with the local mark. Without
/// a mark only [`FreshnessFinding::SequenceBackwards`] can be found: a missing predecessor may
/// be one this machine forgot. Findings are sorted so reports are stable.
pub fn assess(rps: &[(Id, RecoveryPoint)], local: Option<&Freshness>) -> Vec<FreshnessFinding> {
    assess_accounting(rps, &HashSet::new(), local)
}

/// [`assess`], with `deleted` the points that are gone from `rps` on purpose: soft-deleted or
/// purged, with a sealed tombstone that says so
/// ([`RecoveryPointListing::accounted`](crate::RecoveryPointListing::accounted)). They are
/// not reported as disappeared, whoever deleted them, nor as a rollback when the local mark
/// is one of them. A tombstone needs the machine's keys, so a store attacker cannot account
/// for what they delete.
pub fn assess_accounting(
    rps: &[(Id, RecoveryPoint)],
    deleted: &HashSet<Id>,
    local: Option<&Freshness>,
) -> Vec<FreshnessFinding> {
    let present: HashMap<&Id, &RecoveryPoint> = rps.iter().map(|(id, rp)| (id, rp)).collect();
    let mut forgotten: HashSet<&Id> = local.iter().flat_map(|l| &l.forgotten).collect();
    forgotten.extend(deleted);
    // Without a mark there is no record of what this machine forgot, so a missing
    // predecessor could be its own forget: only the vault's own consistency is checked.
    let deletions = local.is_some();
    let mut found = Vec::new();
    let mut reported = HashSet::new();
    for (id, rp) in rps {
        for p in &rp.predecessors {
            match present.get(p) {
                None if deletions && !forgotten.contains(p) && reported.insert(*p) => {
                    found.push(FreshnessFinding::Disappeared {
                        missing: *p,
                        named_by: *id,
                    })
                }
                Some(pred) if pred.sequence >= rp.sequence => {
                    found.push(FreshnessFinding::SequenceBackwards {
                        id: *id,
                        sequence: rp.sequence,
                        predecessor: *p,
                        predecessor_sequence: pred.sequence,
                    })
                }
                _ => {}
            }
        }
    }
    if let Some(l) = local {
        found.extend(rolled_back(rps, l, &forgotten));
    }
    found.sort_by_key(|f| format!("{f}"));
    found
}

/// The mark check. A mark whose recovery point this machine forgot itself says nothing: the
/// vault's highest sequence legitimately dropped.
fn rolled_back(
    rps: &[(Id, RecoveryPoint)],
    local: &Freshness,
    forgotten: &HashSet<&Id>,
) -> Option<FreshnessFinding> {
    if local
        .newest_id
        .as_ref()
        .is_some_and(|id| forgotten.contains(id))
    {
        return None;
    }
    let newest = rps.iter().max_by_key(|(_, rp)| rp.sequence);
    let vault_sequence = newest.map_or(0, |(_, rp)| rp.sequence);
    (vault_sequence < local.newest_sequence).then(|| FreshnessFinding::RolledBack {
        local_sequence: local.newest_sequence,
        local_id: local.newest_id,
        vault_sequence,
        vault_id: newest.filter(|(_, rp)| rp.sequence > 0).map(|(id, _)| *id),
    })
}

/// The sequence and predecessors of a recovery point made after `rps` (the machine's
/// recovery points when the backup started): 1 + the highest sequence, and the points that
/// have it — or, when none has a sequence yet, the newest old point, so its deletion is seen.
pub(crate) fn next_in_line(rps: &[(Id, RecoveryPoint)]) -> (u64, Vec<Id>) {
    let top = rps.iter().map(|(_, rp)| rp.sequence).max().unwrap_or(0);
    let predecessors = if top == 0 {
        rps.last().map(|(id, _)| *id).into_iter().collect()
    } else {
        rps.iter()
            .filter(|(_, rp)| rp.sequence == top)
            .map(|(id, _)| *id)
            .collect()
    };
    (top + 1, predecessors)
}
