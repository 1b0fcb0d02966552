//! Adoption: a killed backup leaves packs in the vault that no index file lists (it uploaded
//! them but died before their index was written). The next backup takes them into the index
//! before it deduplicates, so the killed run's work is not uploaded again.
//!
//! Only a pack whose header authenticates is adopted: the header is read with two ranged
//! reads (the trailer, then the sealed header it points at), opened with this machine's pack
//! key for that pack id, and its entries must tile the pack exactly up to the header. A pack
//! that fails any of this (truncated, forged, another machine's) is left alone: it is an
//! orphan, and prune removes it.
//!
//! Packs a prune marker names (doomed or orphan) are never adopted: the marker's deletion may
//! already be under way. The caller passes the marker set it read *before* the listing, which
//! is what makes this safe beside a prune (the rule is spelled out in ARCHITECTURE.md,
//! "Invariants").
//!
//! A backup running beside this one may have uploaded a pack it has not indexed yet; that
//! pack is adopted too, and both runs index it. That is harmless: the index keeps the first
//! entry for a blob, and prune's rewrite keeps one entry per pack. Every run lists the packs
//! once for this (about one list request per thousand packs on a cloud store).

use std::collections::HashSet;

use futures::{StreamExt, TryStreamExt};

use crate::error::{CorruptReason, EngineError, Result};
use crate::id::Id;
use crate::index::{self, Index, IndexFile, IndexPack};
use crate::layout::pack_rel;
use crate::lock::Lease;
use crate::pack::{self, PACK_TRAILER_LEN, PackEntry};
use crate::repo::Repository;

/// A sealed header larger than this is not read: real headers hold about 100 bytes per blob,
/// so this is far above any pack the packer writes.
const MAX_HEADER_BYTES: u64 = 16 << 20;

/// Headers fetched at once.
const PARALLEL_READS: usize = 8;

/// What adoption took into the index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Adopted {
    /// Packs adopted.
    pub packs: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Bytes of the index file written for them.
    pub index_bytes: u64,
    /// Unindexed packs left alone (header missing, not authentic, or not tiling the pack).
    pub refused: u64,
    /// Packs index files name that the vault no longer has (their entries were dropped).
    pub missing: u64,
}

impl Repository {
    /// Adopts every stored pack that `index` lacks and no marker in `pending` names: writes
    /// one index file for them (under `lease`, checked right before) and adds them to `index`.
    pub(crate) async fn adopt_unindexed(
        &self,
        index: &mut Index,
        pending: &HashSet<Id>,
        lease: &Lease,
    ) -> Result<Adopted> {
        let stored: Vec<(Id, u64)> = self
            .store
            .list(&self.path(crate::layout::PACKS))
            .await?
            .into_iter()
            .filter_map(|m| Some((Id::from_hex(m.path.rsplit('/').next()?).ok()?, m.size)))
            .collect();
        // The same listing shows index entries whose pack is gone: dropped, so their blobs
        // are written again instead of a recovery point referring to missing data.
        let present: HashSet<Id> = stored.iter().map(|(id, _)| *id).collect();
        let missing = index.drop_packs(|id| present.contains(id)) as u64;
        if missing > 0 {
            tracing::warn!(
                "{missing} pack(s) named by index files are missing from the vault; \
                 their blobs are written again"
            );
        }
        let candidates: Vec<(Id, u64)> = stored
            .into_iter()
            .filter(|(id, _)| !index.has_pack(id) && !pending.contains(id))
            .collect();
        if candidates.is_empty() {
            return Ok(Adopted {
                missing,
                ..Adopted::default()
            });
        }
        let read: Vec<Option<IndexPack>> = futures::stream::iter(candidates)
            .map(|(id, size)| self.authentic_pack(id, size))
            .buffer_unordered(PARALLEL_READS)
            .try_collect()
            .await?;
        let refused = read.iter().filter(|p| p.is_none()).count() as u64;
        let packs: Vec<IndexPack> = read.into_iter().flatten().collect();
        let mut adopted = Adopted {
            packs: packs.len() as u64,
            bytes: packs.iter().map(|p| p.size).sum(),
            index_bytes: 0,
            refused,
            missing,
        };
        if packs.is_empty() {
            return Ok(adopted);
        }
        let name = Id::random();
        let file = IndexFile { packs };
        let sealed = index::seal(&self.keys, &name, &file);
        adopted.index_bytes = sealed.len() as u64;
        // A lapsed lease means a prune may have decided on these packs without waiting for us.
        lease.ensure_held()?;
        self.put_immutable(&format!("{}/{}", index::KIND, name.to_hex()), sealed)
            .await?;
        tracing::info!(
            "adopted {} packs ({} bytes) that an interrupted backup left unindexed",
            adopted.packs,
            adopted.bytes
        );
        index.add_file(file);
        index.finish();
        Ok(adopted)
    }

    /// The pack's index entry from its header, or `None` (with a warning) when the header
    /// does not authenticate or does not describe the pack. Only store failures are errors;
    /// a pack deleted since the listing is `None`.
    async fn authentic_pack(&self, id: Id, size: u64) -> Result<Option<IndexPack>> {
        match self.read_pack_header(&id, size).await {
            Ok(blobs) => Ok(Some(IndexPack { id, size, blobs })),
            Err(EngineError::Store(e)) if e.is_not_found() => Ok(None),
            Err(EngineError::Store(e)) => Err(EngineError::Store(e)),
            Err(e) => {
                tracing::warn!("unindexed pack {} is not adopted: {e}", id.to_hex());
                Ok(None)
            }
        }
    }

    /// Reads and authenticates the header of the stored pack `id` of `size` bytes.
    async fn read_pack_header(&self, id: &Id, size: u64) -> Result<Vec<PackEntry>> {
        let what = format!("pack {}", id.to_hex());
        let key = self.path(&pack_rel(id));
        if size < PACK_TRAILER_LEN {
            return Err(EngineError::corrupt(&what, CorruptReason::MissingTrailer));
        }
        let end = size - PACK_TRAILER_LEN;
        let trailer = self.store.get_range(&key, Some(end..size)).await?;
        let start = pack::header_start(id, size, &trailer)?;
        if end - start > MAX_HEADER_BYTES {
            let (size, max) = (end - start, MAX_HEADER_BYTES);
            return Err(EngineError::corrupt(
                &what,
                CorruptReason::TooLarge { size, max },
            ));
        }
        let sealed = self.store.get_range(&key, Some(start..end)).await?;
        let entries = pack::open_header(&self.keys, id, &sealed)?;
        check_tiling(&what, &entries, start)?;
        Ok(entries)
    }
}

/// The entries must cover the bytes before the header exactly, in order, with no blob over
/// the plain-length cap: the shape every pack the packer writes has.
pub(crate) fn check_tiling(what: &str, entries: &[PackEntry], header_start: u64) -> Result<()> {
    let mut covered = 0u64;
    for unit in pack::units(entries) {
        let e = &unit[0];
        if e.offset != covered || e.len == 0 || unit.iter().any(|m| m.len != e.len) {
            return Err(EngineError::corrupt(
                what,
                CorruptReason::Gap { at: covered },
            ));
        }
        let max = crate::layout::MAX_BLOB_BYTES;
        if let Some(m) = unit.iter().find(|m| u64::from(m.raw_len) > max) {
            let len = u64::from(m.raw_len);
            return Err(EngineError::corrupt(
                what,
                CorruptReason::BlobTooLarge { len, max },
            ));
        }
        covered += u64::from(e.len);
    }
    if covered != header_start || entries.is_empty() {
        return Err(EngineError::corrupt(
            what,
            CorruptReason::Gap { at: covered },
        ));
    }
    Ok(())
}
