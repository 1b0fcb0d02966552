//! The blobs one backup has sent to the packers: what makes a blob that appears twice in one
//! run (a copied file, a repeated chunk) stored once.
//!
//! It holds one entry per new blob, so for a million small files it was the biggest thing in a
//! first backup: a `HashSet<BlobId>` took about 69 MB there (32-byte ids in a table of 2²¹
//! buckets). This set keys on the first 20 bytes of the id, as the in-memory index does (see
//! `index.rs` for why 160 bits are enough and why nothing trusts the key alone), and keeps
//! them in one sorted vector, searched by bisection, plus a small hash set of recent inserts
//! that is merged in, in place, whenever it reaches a quarter of the sorted part: about 25
//! bytes a blob, and a merge costs amortised O(1) moves per insert.

use std::collections::HashSet;

use rbackup_crypto::BlobId;

const KEY_LEN: usize = 20;
type Key = [u8; KEY_LEN];

/// Recent inserts kept in the hash set before the first merge.
const RECENT_MIN: usize = 1 << 14;

/// A set of blob ids, compact for millions of them.
#[derive(Debug, Default)]
pub(crate) struct Sent {
    sorted: Vec<Key>,
    recent: HashSet<Key>,
}

fn key_of(id: &BlobId) -> Key {
    let mut k = [0u8; KEY_LEN];
    k.copy_from_slice(&id.0[..KEY_LEN]);
    k
}

impl Sent {
    pub(crate) fn contains(&self, id: &BlobId) -> bool {
        let k = key_of(id);
        self.recent.contains(&k) || self.sorted.binary_search(&k).is_ok()
    }

    /// Adds `id`; false if it was there already.
    pub(crate) fn insert(&mut self, id: BlobId) -> bool {
        let k = key_of(&id);
        if self.sorted.binary_search(&k).is_ok() || !self.recent.insert(k) {
            return false;
        }
        if self.recent.len() >= RECENT_MIN.max(self.sorted.len() / 4) {
            self.merge();
        }
        true
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.sorted.len() + self.recent.len()
    }

    /// Moves the recent keys into the sorted vector: they are sorted, appended, and the two
    /// runs merged from the back, so no second copy of the vector is ever held.
    fn merge(&mut self) {
        let mut new: Vec<Key> = self.recent.drain().collect();
        new.sort_unstable();
        let old = self.sorted.len();
        self.sorted.reserve_exact(new.len());
        self.sorted.extend_from_slice(&new);
        // sorted = [old keys | new keys]; fill from the end with the larger of the two heads.
        let (mut i, mut j, mut out) = (old, new.len(), self.sorted.len());
        while j > 0 {
            out -= 1;
            if i > 0 && self.sorted[i - 1] > new[j - 1] {
                self.sorted[out] = self.sorted[i - 1];
                i -= 1;
            } else {
                self.sorted[out] = new[j - 1];
                j -= 1;
            }
        }
        self.recent = HashSet::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> BlobId {
        // Spread the numbers over the key bytes, as hashes are.
        let h = blake3::hash(&n.to_le_bytes());
        BlobId(*h.as_bytes())
    }

    #[test]
    fn finds_every_insert_across_merges_and_refuses_repeats() {
        let mut s = Sent::default();
        let n = 100_000;
        for i in 0..n {
            assert!(s.insert(id(i)), "{i} new");
            if i % 7 == 0 {
                assert!(!s.insert(id(i / 2)), "{} again", i / 2);
            }
        }
        assert_eq!(s.len(), n as usize);
        assert!(
            s.sorted.windows(2).all(|w| w[0] < w[1]),
            "sorted, no repeats"
        );
        assert!((0..n).all(|i| s.contains(&id(i))));
        assert!((n..n + 10_000).all(|i| !s.contains(&id(i))));
        // About 25 bytes a blob, against the 60-odd of a HashSet<BlobId>.
        let bytes = s.sorted.capacity() * KEY_LEN + s.recent.capacity() * (KEY_LEN + 1);
        assert!(bytes < n as usize * 32, "{} B a blob", bytes / n as usize);
    }
}
