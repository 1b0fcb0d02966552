//! The index: which pack holds each blob, at which offset.
//!
//! Index files (`index/<id>`) are immutable; each backup adds files for the packs it wrote
//! (every [`crate::backup`] flush, not only at the end, so an interrupted run keeps most of its
//! work). The in-memory [`Index`] is the union of all of them.

use std::collections::{HashMap, HashSet};

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

/// How many leading bytes of a blob id the in-memory index keys on.
///
/// 160 bits: among 10⁹ blobs the chance that two share a key is about 10⁻³⁰, and ids are keyed
/// hashes, so nobody without the id key can aim at a collision. Nothing trusts the key alone:
/// every read checks the content against the full 256-bit id (so a collision would show as a
/// damaged blob, never as wrong data), and `check` works from the index files' full ids.
const KEY_LEN: usize = 20;
type Key = [u8; KEY_LEN];

fn key_of(id: &BlobId) -> Key {
    let mut k = [0u8; KEY_LEN];
    k.copy_from_slice(&id.0[..KEY_LEN]);
    k
}

/// One blob in 40 bytes (a `HashMap<BlobId, Location>` took about 100 with its load factor):
/// the key, then the location in five words. The top bit of `len` is the kind (tree); `within`
/// is `NONE` for a lone blob. What does not fit (a pack past 4 GiB) goes to `Index::wide`.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
struct Entry {
    key: Key,
    pack: u32,
    offset: u32,
    len: u32,
    raw_len: u32,
    within: u32,
}

const _: () = assert!(std::mem::size_of::<Entry>() == 40);
const TREE_BIT: u32 = 1 << 31;
const NONE: u32 = u32::MAX;

impl Entry {
    fn new(key: Key, at: &Location) -> Option<Entry> {
        let offset = u32::try_from(at.offset).ok()?;
        let within = match at.within {
            Some(w) if w == NONE => return None,
            Some(w) => w,
            None => NONE,
        };
        if at.len & TREE_BIT != 0 {
            return None;
        }
        let tree = if at.kind == BlobKind::Tree {
            TREE_BIT
        } else {
            0
        };
        Some(Entry {
            key,
            pack: at.pack,
            offset,
            len: at.len | tree,
            raw_len: at.raw_len,
            within,
        })
    }

    fn location(&self) -> Location {
        Location {
            pack: self.pack,
            kind: if self.len & TREE_BIT != 0 {
                BlobKind::Tree
            } else {
                BlobKind::Data
            },
            offset: u64::from(self.offset),
            len: self.len & !TREE_BIT,
            raw_len: self.raw_len,
            within: (self.within != NONE).then_some(self.within),
        }
    }
}

/// All index files of a machine, merged.
///
/// Sized for tens of millions of blobs: the entries live in one vector of 40-byte [`Entry`]s,
/// sorted by key and searched by bisection. What is added goes to the unsorted end of that
/// vector and is merged by sorting when it grows past a fraction of the sorted part, or by
/// [`Index::finish`], which every loader calls once it has added its files.
#[derive(Debug, Default)]
pub(crate) struct Index {
    packs: Vec<(Id, u64)>,
    pack_numbers: HashMap<Id, u32>,
    /// `entries[..sorted]` is sorted by key with one entry per key; the rest is in the order
    /// added.
    entries: Vec<Entry>,
    sorted: usize,
    /// Locations an [`Entry`] cannot hold. Empty for every vault this agent writes.
    wide: HashMap<BlobId, Location>,
    /// Packs that hold at least one tree blob (the metadata cache keeps copies of these).
    tree_packs: HashSet<u32>,
    /// Second copies of blobs (two runs racing, or blobs written again after their pack went
    /// missing): used when the first copy's pack is dropped. Empty in the common case.
    spare: HashMap<Key, Vec<Location>>,
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
            match Entry::new(key_of(&b.id), &at) {
                Some(e) => self.entries.push(e),
                None => {
                    self.wide.entry(b.id).or_insert(at);
                }
            }
        }
        if self.entries.len() - self.sorted > 1024 + self.sorted / 2 {
            self.finish();
        }
    }

    /// Merges what was added into the sorted entries. The first copy of a blob wins (the one
    /// in the pack seen first); a copy in another pack is kept aside in case that pack is
    /// dropped. Releases the spare capacity loading left.
    pub(crate) fn finish(&mut self) {
        if self.sorted == self.entries.len() {
            return;
        }
        self.entries
            .sort_unstable_by_key(|e| (e.key, e.pack, e.offset));
        let mut kept = 0;
        for i in 0..self.entries.len() {
            let e = self.entries[i];
            if kept > 0 && self.entries[kept - 1].key == e.key {
                if self.entries[kept - 1].pack != e.pack {
                    self.spare.entry(e.key).or_default().push(e.location());
                }
                continue;
            }
            self.entries[kept] = e;
            kept += 1;
        }
        self.entries.truncate(kept);
        self.entries.shrink_to_fit();
        self.sorted = kept;
    }

    /// Drops the blobs of the packs `keep` rejects (packs an index file names but the vault
    /// no longer has): a blob with a copy in another pack is then read from there, one
    /// without is no longer known, so a backup writes it again. The packs keep their numbers
    /// (`packs()` still lists them) but [`Index::has_pack`] no longer knows them. Returns
    /// how many packs were dropped.
    pub(crate) fn drop_packs(&mut self, keep: impl Fn(&Id) -> bool) -> usize {
        let gone: HashSet<u32> = self
            .pack_numbers
            .iter()
            .filter(|(id, _)| !keep(id))
            .map(|(_, n)| *n)
            .collect();
        if gone.is_empty() {
            return 0;
        }
        self.finish();
        self.entries.retain(|e| !gone.contains(&e.pack));
        self.sorted = self.entries.len();
        self.wide.retain(|_, l| !gone.contains(&l.pack));
        for (key, spares) in std::mem::take(&mut self.spare) {
            let mut live = spares.into_iter().filter(|l| !gone.contains(&l.pack));
            let Some(first) = live.next() else { continue };
            // Spares come from entries, so they always fit one.
            let promoted = Entry::new(key, &first).filter(|_| self.find(&key).is_none());
            let rest: Vec<Location> = if let Some(e) = promoted {
                self.entries.push(e);
                live.collect()
            } else {
                std::iter::once(first).chain(live).collect()
            };
            if !rest.is_empty() {
                self.spare.insert(key, rest);
            }
        }
        self.finish();
        self.pack_numbers.retain(|_, n| !gone.contains(n));
        self.tree_packs.retain(|n| !gone.contains(n));
        self.unit_raw.retain(|(n, _), _| !gone.contains(n));
        gone.len()
    }

    fn find(&self, key: &Key) -> Option<&Entry> {
        let sorted = &self.entries[..self.sorted];
        if let Ok(i) = sorted.binary_search_by(|e| e.key.cmp(key)) {
            return Some(&sorted[i]);
        }
        self.entries[self.sorted..].iter().find(|e| e.key == *key)
    }

    pub(crate) fn get(&self, id: &BlobId) -> Option<Location> {
        match self.find(&key_of(id)) {
            Some(e) => Some(e.location()),
            None => self.wide.get(id).copied(),
        }
    }

    pub(crate) fn contains(&self, id: &BlobId) -> bool {
        self.find(&key_of(id)).is_some() || self.wide.contains_key(id)
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

    /// Distinct blobs (after [`Index::finish`]; before it, copies count more than once).
    pub(crate) fn blob_count(&self) -> usize {
        self.entries.len() + self.wide.len()
    }

    /// Bytes the blob table takes in memory (its capacity), for the figures of the docs.
    pub(crate) fn table_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>()
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

    fn random_pack(n: u32, blobs: usize, seed: u64) -> IndexPack {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let blobs = (0..blobs)
            .map(|i| {
                let mut id = [0u8; 32];
                for b in id.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = x as u8;
                }
                PackEntry {
                    kind: if i % 5 == 0 {
                        BlobKind::Tree
                    } else {
                        BlobKind::Data
                    },
                    id: BlobId(id),
                    offset: i as u64 * 300,
                    len: 300,
                    raw_len: 280 + i as u32 % 7,
                    within: (i % 3 == 0).then_some(i as u32),
                }
            })
            .collect();
        let mut id = [0u8; 32];
        id[..4].copy_from_slice(&n.to_le_bytes());
        IndexPack {
            id: Id(id),
            size: 1 << 20,
            blobs,
        }
    }

    #[test]
    fn a_hundred_thousand_blobs_take_forty_bytes_each_and_are_all_found() {
        let packs: Vec<IndexPack> = (0..100)
            .map(|n| random_pack(n, 1000, u64::from(n) + 1))
            .collect();
        let mut index = Index::default();
        for p in packs.clone() {
            index.add_pack(p);
        }
        index.finish();
        assert_eq!(index.blob_count(), 100_000);
        assert!(
            index.table_bytes() <= 40 * index.blob_count(),
            "{}",
            index.table_bytes()
        );
        for (n, p) in packs.iter().enumerate() {
            for e in &p.blobs {
                let at = index.get(&e.id).expect("every blob is found");
                assert_eq!(index.pack_id(at.pack), p.id);
                assert_eq!(at.slot(), e.slot(), "pack {n}");
            }
        }
        let mut absent = packs[0].blobs[0].id;
        absent.0[31] ^= 1;
        absent.0[0] ^= 1;
        assert!(!index.contains(&absent));
    }

    #[test]
    fn blobs_added_after_loading_are_found_before_and_after_the_merge() {
        let mut index = Index::default();
        index.add_pack(random_pack(1, 5000, 1));
        index.finish();
        let late = random_pack(2, 10, 2);
        index.add_pack(late.clone());
        for e in &late.blobs {
            assert_eq!(index.get(&e.id).map(|l| l.slot()), Some(e.slot()));
        }
        index.finish();
        for e in &late.blobs {
            assert_eq!(index.get(&e.id).map(|l| l.slot()), Some(e.slot()));
        }
        assert_eq!(index.blob_count(), 5010);
    }

    #[test]
    fn a_location_past_what_an_entry_holds_is_kept_whole() {
        let mut p = pack(3, &[9]);
        p.blobs[0].offset = 5 << 30;
        let mut index = Index::default();
        index.add_pack(p);
        index.finish();
        let at = index.get(&BlobId([9; 32])).unwrap();
        assert_eq!(at.offset, 5 << 30);
        assert_eq!(index.blob_count(), 1);
    }

    #[test]
    fn the_same_blob_in_the_same_pack_twice_is_one_blob_without_a_spare() {
        let mut index = Index::default();
        index.add_pack(pack(1, &[7]));
        index.add_pack(pack(1, &[7]));
        index.finish();
        assert_eq!(index.blob_count(), 1);
        assert!(index.spare.is_empty());
    }
}
