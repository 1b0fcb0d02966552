//! The index: which pack holds each blob, at which offset.
//!
//! Index files (`index/<id>`) are immutable; each backup adds files for the packs it wrote
//! (every [`crate::backup`] flush, not only at the end, so an interrupted run keeps most of its
//! work). The in-memory [`Index`] is the union of all of them.

use std::collections::HashMap;

use rbackup_crypto::{BlobId, MasterKeys};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::Result;
use crate::id::Id;
use crate::pack::{BlobKind, PackEntry};

pub(crate) const KIND: &str = crate::layout::INDEX;

/// One index file's content.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct IndexFile {
    pub packs: Vec<IndexPack>,
}

/// One pack as listed in an index file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct IndexPack {
    pub id: Id,
    pub size: u64,
    pub blobs: Vec<PackEntry>,
}

/// Where a blob lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Location {
    pub pack: u32,
    pub kind: BlobKind,
    pub offset: u64,
    pub len: u32,
    pub raw_len: u32,
    /// For a bundle member, where its content starts in the unit's content.
    pub within: Option<u32>,
}

impl Location {
    /// Where the blob is within its pack.
    pub(crate) fn slot(&self) -> crate::pack::Slot {
        crate::pack::Slot {
            kind: self.kind,
            offset: self.offset,
            len: self.len,
            raw_len: self.raw_len,
            within: self.within,
        }
    }
}

/// All index files of a machine, merged.
#[derive(Debug, Default)]
pub(crate) struct Index {
    packs: Vec<(Id, u64)>,
    pack_numbers: HashMap<Id, u32>,
    blobs: HashMap<BlobId, Location>,
    /// Packs that hold at least one tree blob (the metadata cache keeps copies of these).
    tree_packs: std::collections::HashSet<u32>,
    /// Second copies of blobs (two runs racing, or blobs written again after their pack went
    /// missing): used when the first copy's pack is dropped. Empty in the common case.
    spare: HashMap<BlobId, Vec<Location>>,
    /// The content bytes of each bundle unit, by pack and offset: what a member's share of
    /// its unit is weighed against. One entry per bundle, not per blob.
    unit_raw: HashMap<(u32, u64), u64>,
}

impl Index {
    pub(crate) fn add_file(&mut self, file: IndexFile) {
        for pack in file.packs {
            self.add_pack(pack);
        }
    }

    pub(crate) fn add_pack(&mut self, pack: IndexPack) {
        let number = match self.pack_numbers.get(&pack.id) {
            Some(&n) => n,
            None => {
                let n = self.packs.len() as u32;
                self.packs.push((pack.id, pack.size));
                self.pack_numbers.insert(pack.id, n);
                n
            }
        };
        for b in pack.blobs {
            if b.kind == BlobKind::Tree {
                self.tree_packs.insert(number);
            }
            if b.within.is_some() {
                *self.unit_raw.entry((number, b.offset)).or_default() += u64::from(b.raw_len);
            }
            let at = Location {
                pack: number,
                kind: b.kind,
                offset: b.offset,
                len: b.len,
                raw_len: b.raw_len,
                within: b.within,
            };
            // First writer wins; another copy is kept aside in case its pack is dropped.
            match self.blobs.entry(b.id) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(at);
                }
                std::collections::hash_map::Entry::Occupied(o) if o.get().pack != number => {
                    self.spare.entry(b.id).or_default().push(at);
                }
                std::collections::hash_map::Entry::Occupied(_) => {}
            }
        }
    }

    /// Drops the blobs of the packs `keep` rejects (packs an index file names but the vault
    /// no longer has): a blob with a copy in another pack is then read from there, one
    /// without is no longer known, so a backup writes it again. The packs keep their numbers
    /// (`packs()` still lists them) but [`Index::has_pack`] no longer knows them. Returns
    /// how many packs were dropped.
    pub(crate) fn drop_packs(&mut self, keep: impl Fn(&Id) -> bool) -> usize {
        let gone: std::collections::HashSet<u32> = self
            .pack_numbers
            .iter()
            .filter(|(id, _)| !keep(id))
            .map(|(_, n)| *n)
            .collect();
        if gone.is_empty() {
            return 0;
        }
        self.blobs.retain(|_, l| !gone.contains(&l.pack));
        for (id, spares) in std::mem::take(&mut self.spare) {
            let mut live = spares.into_iter().filter(|l| !gone.contains(&l.pack));
            if let Some(first) = live.next() {
                let rest: Vec<Location> = match self.blobs.entry(id) {
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(first);
                        live.collect()
                    }
                    std::collections::hash_map::Entry::Occupied(_) => {
                        std::iter::once(first).chain(live).collect()
                    }
                };
                if !rest.is_empty() {
                    self.spare.insert(id, rest);
                }
            }
        }
        self.pack_numbers.retain(|_, n| !gone.contains(n));
        self.tree_packs.retain(|n| !gone.contains(n));
        gone.len()
    }

    pub(crate) fn get(&self, id: &BlobId) -> Option<&Location> {
        self.blobs.get(id)
    }

    /// The stored bytes that `at` accounts for: its unit's length, or for a bundle member its
    /// part of the unit in proportion to its content.
    pub(crate) fn stored_share(&self, at: &Location) -> u64 {
        let len = u64::from(at.len);
        match (at.within, self.unit_raw.get(&(at.pack, at.offset))) {
            (Some(_), Some(&raw)) if raw > 0 => len * u64::from(at.raw_len) / raw,
            _ => len,
        }
    }

    pub(crate) fn contains(&self, id: &BlobId) -> bool {
        self.blobs.contains_key(id)
    }

    pub(crate) fn has_pack(&self, id: &Id) -> bool {
        self.pack_numbers.contains_key(id)
    }

    pub(crate) fn pack_id(&self, number: u32) -> Id {
        self.packs[number as usize].0
    }

    pub(crate) fn is_tree_pack(&self, number: u32) -> bool {
        self.tree_packs.contains(&number)
    }

    pub(crate) fn pack_count(&self) -> usize {
        self.packs.len()
    }

    pub(crate) fn blob_count(&self) -> usize {
        self.blobs.len()
    }

    pub(crate) fn blob_ids(&self) -> impl Iterator<Item = &BlobId> {
        self.blobs.keys()
    }

    pub(crate) fn packs(&self) -> impl Iterator<Item = (u32, Id, u64)> + '_ {
        self.packs
            .iter()
            .enumerate()
            .map(|(n, (id, size))| (n as u32, *id, *size))
    }
}

pub(crate) fn seal(keys: &MasterKeys, name: &Id, file: &IndexFile) -> Vec<u8> {
    codec::seal_meta(keys, KIND, &name.to_hex(), file)
}

pub(crate) fn open(keys: &MasterKeys, name: &Id, bytes: &[u8]) -> Result<IndexFile> {
    codec::open_meta(keys, KIND, &name.to_hex(), bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(n: u8, blobs: &[u8]) -> IndexPack {
        let entry = |b: u8| PackEntry {
            kind: BlobKind::Data,
            id: BlobId([b; 32]),
            offset: u64::from(b) * 10,
            len: 10,
            raw_len: 10,
            within: None,
        };
        IndexPack {
            id: Id([n; 32]),
            size: 100,
            blobs: blobs.iter().map(|&b| entry(b)).collect(),
        }
    }

    #[test]
    fn a_dropped_pack_leaves_its_blobs_read_from_their_other_copy_whatever_the_order() {
        for gone_first in [true, false] {
            let (gone, other) = (pack(1, &[7, 8]), pack(2, &[7]));
            let mut index = Index::default();
            let packs = if gone_first {
                [gone, other]
            } else {
                [other, gone]
            };
            for p in packs {
                index.add_pack(p);
            }
            assert_eq!(index.drop_packs(|id| *id != Id([1; 32])), 1);
            let at = index.get(&BlobId([7; 32])).expect("the other copy");
            assert_eq!(
                index.pack_id(at.pack),
                Id([2; 32]),
                "gone first: {gone_first}"
            );
            assert!(
                !index.contains(&BlobId([8; 32])),
                "no copy left: written again"
            );
            assert!(!index.has_pack(&Id([1; 32])) && index.has_pack(&Id([2; 32])));
        }
    }
}
