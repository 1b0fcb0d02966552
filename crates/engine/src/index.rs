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
}

/// All index files of a machine, merged.
#[derive(Debug, Default)]
pub(crate) struct Index {
    packs: Vec<(Id, u64)>,
    pack_numbers: HashMap<Id, u32>,
    blobs: HashMap<BlobId, Location>,
    /// Packs that hold at least one tree blob (the metadata cache keeps copies of these).
    tree_packs: std::collections::HashSet<u32>,
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
            // First writer wins: a duplicate (two runs racing) is harmless either way.
            self.blobs.entry(b.id).or_insert(Location {
                pack: number,
                kind: b.kind,
                offset: b.offset,
                len: b.len,
                raw_len: b.raw_len,
            });
        }
    }

    /// Drops the blobs of the packs `keep` rejects (packs an index file names but the vault
    /// no longer has), so a backup writes those blobs again. The packs keep their numbers
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
        self.pack_numbers.retain(|_, n| !gone.contains(n));
        self.tree_packs.retain(|n| !gone.contains(n));
        gone.len()
    }

    pub(crate) fn get(&self, id: &BlobId) -> Option<&Location> {
        self.blobs.get(id)
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
