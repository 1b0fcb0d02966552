//! Bundles: small blobs compressed and sealed together as one unit of a pack.
//!
//! ```text
//! unit    = AES-256-GCM(pack subkey, nonce, ad = "rbackup bundle v1" | kind | offset:u64le, frame)
//! frame   = as a blob's (pack.rs), over the members' contents laid end to end
//! entry   = one per member: the unit's offset and length, the member's length, and `within`,
//!           where its content starts in the unit's decompressed content
//! ```
//!
//! Sealing every small blob alone costs a nonce, a tag, padding and a zstd frame each, and
//! compressing a 6 KiB source file alone misses what it shares with its neighbours (solid zstd
//! of a source tree is about 30% smaller than per-file zstd). A bundle pays those costs once for
//! up to [`BUNDLE_TARGET`] bytes of content, and Padmé pads the unit, so the store no longer
//! sees the size of any small file. Deduplication stays per blob: each member keeps its own
//! keyed id, the index maps it to the unit and its place inside, and reading one member reads
//! and opens only its unit.
//!
//! The unit's associated data binds the blob kind and the unit's offset in its pack (whose
//! subkey binds the pack id), so a unit cannot be moved, within a pack or to another one, or
//! read as the other kind. Members need no binding of their own: each is checked against its
//! id, a keyed hash of its content, after the unit authenticated.

use std::sync::Arc;

use rbackup_crypto::{BlobId, MasterKeys, SealKey};

use crate::error::CorruptReason;
use crate::pack::{self, BlobKind};

/// Blobs shorter than this are bundled. Chosen by measurement on source-tree releases and a
/// million tiny files (the closing figures are in ARCHITECTURE.md): almost every file of a
/// source tree is below it, while the chunker's chunks of large files (1 MiB on average, 256
/// KiB at least) are all above it and stay one unit each, so a restore of a large file never
/// reads a neighbour's bytes.
pub(crate) const SMALL_BLOB: usize = 64 * 1024;

/// Content bytes at which an open bundle is sealed. Larger bundles compress a little better;
/// this bounds what reading one small file costs (one unit of at most about this size) and the
/// memory a worker holds per open bundle.
pub(crate) const BUNDLE_TARGET: usize = 1 << 20;

/// The largest decompressed unit a reader accepts: a bound on what a hostile index or unit can
/// make a reader allocate, well above what any writer makes.
pub(crate) const MAX_BUNDLE_RAW: u64 = 16 << 20;

/// The associated data of the unit of `kind` at `offset` in its pack.
pub(crate) fn ad(kind: BlobKind, offset: u64) -> Vec<u8> {
    let mut ad = b"rbackup bundle v1".to_vec();
    ad.push(kind.code());
    ad.extend_from_slice(&offset.to_le_bytes());
    ad
}

/// An open bundle: members' contents laid end to end, not yet sealed.
#[derive(Debug)]
pub(crate) struct Bundle {
    pub kind: BlobKind,
    /// `(id, within, length)` of each member, in order.
    pub members: Vec<(BlobId, u32, u32)>,
    pub content: Vec<u8>,
}

impl Bundle {
    pub(crate) fn new(kind: BlobKind) -> Bundle {
        Bundle {
            kind,
            members: Vec::new(),
            content: Vec::new(),
        }
    }

    /// Whether a blob of `len` bytes goes into a bundle rather than a unit of its own.
    pub(crate) fn takes(len: usize) -> bool {
        len < SMALL_BLOB
    }

    /// Adds a member (shorter than [`SMALL_BLOB`]).
    pub(crate) fn push(&mut self, id: BlobId, content: &[u8]) {
        debug_assert!(Bundle::takes(content.len()));
        let within = self.content.len() as u32;
        self.members.push((id, within, content.len() as u32));
        self.content.extend_from_slice(content);
    }

    pub(crate) fn is_full(&self) -> bool {
        self.content.len() >= BUNDLE_TARGET
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

/// Opens a sealed unit of `kind` found at `offset` in a pack sealed under `key`, and returns
/// its decompressed content (every member's bytes).
pub(crate) fn open_unit(
    key: &SealKey,
    kind: BlobKind,
    offset: u64,
    sealed: &[u8],
) -> Result<Vec<u8>, CorruptReason> {
    let frame = key.open(&ad(kind, offset), sealed)?;
    pack::unframe_bounded(&frame, MAX_BUNDLE_RAW)
}

/// Takes member `id` (`len` bytes from `within`) out of an opened unit's content and checks
/// it against its id.
pub(crate) fn member(
    keys: &MasterKeys,
    content: &[u8],
    id: &BlobId,
    within: u32,
    len: u32,
) -> Result<Vec<u8>, CorruptReason> {
    let start = within as usize;
    let bytes = start
        .checked_add(len as usize)
        .and_then(|end| content.get(start..end))
        .ok_or(CorruptReason::OutOfRange {
            offset: u64::from(within),
            len: u64::from(len),
            size: content.len() as u64,
        })?;
    if keys.blob_id(bytes) != *id {
        return Err(CorruptReason::IdMismatch);
    }
    Ok(bytes.to_vec())
}

/// Each entry's share of the stored bytes of its pack: a lone blob's unit length, a member's
/// part of its unit in proportion to its content (the shares of one unit add up to its
/// length). What prune weighs as waste and `stats` counts as stored.
pub(crate) fn shares(entries: &[pack::PackEntry]) -> Vec<u64> {
    let mut out = vec![0u64; entries.len()];
    let mut i = 0;
    while i < entries.len() {
        let e = &entries[i];
        if e.within.is_none() {
            out[i] = u64::from(e.len);
            i += 1;
            continue;
        }
        let end = i + entries[i..]
            .iter()
            .take_while(|m| m.within.is_some() && m.offset == e.offset)
            .count();
        split(u64::from(e.len), &entries[i..end], &mut out[i..end]);
        i = end;
    }
    out
}

/// Splits `len` over `members` by their content length; the rounding goes to the last one.
fn split(len: u64, members: &[pack::PackEntry], out: &mut [u64]) {
    let raw: u64 = members.iter().map(|m| u64::from(m.raw_len)).sum();
    let mut given = 0;
    for (m, share) in members.iter().zip(out.iter_mut()) {
        *share = match raw {
            0 => 0,
            _ => len * u64::from(m.raw_len) / raw,
        };
        given += *share;
    }
    if let Some(last) = out.last_mut() {
        *last += len - given;
    }
}

/// Opens the blobs of one pack in offset order, each bundle unit once for the run of its
/// members that follow one another: what restore, `check --read-data` and repack read with.
/// A unit that fails to open is not tried again for its other members (a damaged 1 MiB unit
/// would otherwise be authenticated once per member, thousands of times).
pub(crate) struct Units<'k> {
    keys: &'k MasterKeys,
    key: &'k SealKey,
    /// The last unit opened: its offset, and its content or `None` if it failed.
    last: Option<(u64, Option<Vec<u8>>)>,
}

impl<'k> Units<'k> {
    /// A reader of blobs sealed under `key`, a pack key of `keys`.
    pub(crate) fn new(keys: &'k MasterKeys, key: &'k SealKey) -> Units<'k> {
        Units {
            keys,
            key,
            last: None,
        }
    }

    /// Opens blob `id` at `at` from `sealed`, the bytes of its unit, and checks it against
    /// its id.
    pub(crate) fn open(
        &mut self,
        id: &BlobId,
        at: &pack::Slot,
        sealed: &[u8],
    ) -> Result<Vec<u8>, CorruptReason> {
        let Some(within) = at.within else {
            return pack::open_blob(self.keys, self.key, id, at, sealed);
        };
        if self.last.as_ref().is_none_or(|(o, _)| *o != at.offset) {
            let opened = open_unit(self.key, at.kind, at.offset, sealed);
            let (content, first_error) = match opened {
                Ok(c) => (Some(c), None),
                Err(e) => (None, Some(e)),
            };
            self.last = Some((at.offset, content));
            if let Some(e) = first_error {
                return Err(e);
            }
        }
        match self.last.as_ref().and_then(|(_, c)| c.as_deref()) {
            Some(content) => member(self.keys, content, id, within, at.raw_len),
            None => Err(CorruptReason::BundleDamaged),
        }
    }
}

/// A unit: its pack and its offset there.
type UnitKey = (crate::id::Id, u64);

/// The last few units opened, so reading the members of one bundle one by one (a walk over
/// trees, which are bundled in the order they were written) opens each unit once. Holds only
/// content that authenticated; bounded to [`UnitCache::UNITS`] units.
#[derive(Debug, Default)]
pub(crate) struct UnitCache {
    recent: std::sync::Mutex<std::collections::VecDeque<(UnitKey, Arc<Vec<u8>>)>>,
}

impl UnitCache {
    const UNITS: usize = 4;

    pub(crate) fn get(&self, pack: &crate::id::Id, offset: u64) -> Option<Arc<Vec<u8>>> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent
            .iter()
            .find(|(k, _)| k == &(*pack, offset))
            .map(|(_, v)| v.clone())
    }

    pub(crate) fn put(&self, pack: crate::id::Id, offset: u64, content: Arc<Vec<u8>>) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() >= Self::UNITS {
            recent.pop_front();
        }
        recent.push_back(((pack, offset), content));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::PackEntry;

    fn entry(offset: u64, len: u32, raw_len: u32, within: Option<u32>) -> PackEntry {
        PackEntry {
            kind: BlobKind::Data,
            id: BlobId([offset as u8 ^ raw_len as u8; 32]),
            offset,
            len,
            raw_len,
            within,
        }
    }

    #[test]
    fn shares_of_a_unit_add_up_to_its_length() {
        let entries = [
            entry(0, 100, 100, None),
            entry(100, 1000, 10, Some(0)),
            entry(100, 1000, 20, Some(10)),
            entry(100, 1000, 3, Some(30)),
            entry(1100, 50, 7, Some(0)),
        ];
        let s = shares(&entries);
        assert_eq!(s[0], 100);
        assert_eq!(s[1..4].iter().sum::<u64>(), 1000);
        assert!(s[2] > s[1] && s[1] > s[3], "{s:?}");
        assert_eq!(s[4], 50);
    }

    /// A sealed data unit of the members "one" and "two", as a packer writes it at `offset`.
    fn one_two_unit(keys: &MasterKeys, key: &SealKey, offset: u64) -> Vec<u8> {
        let mut b = Bundle::new(BlobKind::Data);
        b.push(keys.blob_id(b"one"), b"one");
        b.push(keys.blob_id(b"two"), b"two");
        let frame = pack::Framer::new(3).unwrap().frame(&b.content, true);
        key.seal(&ad(BlobKind::Data, offset), &frame)
    }

    #[test]
    fn a_unit_opens_only_at_its_own_offset_and_kind() {
        let keys = MasterKeys::generate();
        let key = keys.pack_key(&[7; 32]);
        let sealed = one_two_unit(&keys, &key, 40);
        let content = open_unit(&key, BlobKind::Data, 40, &sealed).unwrap();
        let two = member(&keys, &content, &keys.blob_id(b"two"), 3, 3).unwrap();
        assert_eq!(two, b"two");
        assert!(member(&keys, &content, &keys.blob_id(b"two"), 0, 3).is_err());
        assert!(member(&keys, &content, &keys.blob_id(b"two"), 5, 3).is_err());
        assert!(open_unit(&key, BlobKind::Data, 41, &sealed).is_err());
        assert!(open_unit(&key, BlobKind::Tree, 40, &sealed).is_err());
        let other = keys.pack_key(&[8; 32]);
        assert!(open_unit(&other, BlobKind::Data, 40, &sealed).is_err());
    }

    #[test]
    fn a_damaged_unit_is_opened_once_for_all_its_members() {
        let keys = MasterKeys::generate();
        let key = keys.pack_key(&[9; 32]);
        let mut sealed = one_two_unit(&keys, &key, 0);
        let slot = |within: u32| pack::Slot {
            kind: BlobKind::Data,
            offset: 0,
            len: sealed.len() as u32,
            raw_len: 3,
            within: Some(within),
        };
        let (one, two) = (slot(0), slot(3));
        let mut units = Units::new(&keys, &key);
        assert_eq!(
            units.open(&keys.blob_id(b"two"), &two, &sealed).unwrap(),
            b"two"
        );
        assert_eq!(
            units.open(&keys.blob_id(b"one"), &one, &sealed).unwrap(),
            b"one"
        );

        sealed[20] ^= 1;
        let mut units = Units::new(&keys, &key);
        let first = units.open(&keys.blob_id(b"one"), &one, &sealed);
        assert!(matches!(first, Err(CorruptReason::Crypto(_))), "{first:?}");
        let second = units.open(&keys.blob_id(b"two"), &two, &sealed);
        assert!(
            matches!(second, Err(CorruptReason::BundleDamaged)),
            "{second:?}"
        );
    }
}
