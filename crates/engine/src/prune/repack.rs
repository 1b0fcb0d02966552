//! Repacking: copy the still-used blobs of wasteful packs into new packs, so the old packs can
//! be doomed. Blobs are opened with the old pack's key, verified against their ids, and sealed
//! again under the new pack's key; a lone blob's frame (compressed, padded) is reused as it
//! is, while the live members of bundles are gathered into new bundles (a bundle's dead
//! members are what the repack drops).

use std::collections::HashSet;
use std::sync::Arc;

use rbackup_crypto::{BlobId, MasterKeys};
use rbackup_store::{Bytes, PutMode};

use super::{PruneOptions, State};
use crate::bundle::{self, Bundle};
use crate::error::{CorruptReason, EngineError, Result};
use crate::id::Id;
use crate::index::{self, IndexFile, IndexPack};
use crate::layout::{self, get_bounded, limits, pack_rel};
use crate::pack::{self, BlobKind, FinishedPack, Framer, PackWriter};
use crate::repo::Repository;
use crate::workdir::WorkDir;

/// Size at which a repacked pack is closed (the backup's default).
const REPACK_TARGET: u64 = 32 << 20;

/// What repacking wrote.
#[derive(Debug, Default)]
pub(super) struct Repacked {
    pub blobs: u64,
    pub bytes: u64,
}

/// One open pack and one open bundle per blob kind, as in a backup (data and tree blobs never
/// share a pack).
#[derive(Debug)]
struct Writers {
    packs: [Option<PackWriter>; 2],
    bundles: [Bundle; 2],
    framer: Framer,
}

impl Repository {
    /// Copies `blobs` out of each pack into new packs and indexes them in a new index file.
    /// The old packs stay where they are (the caller dooms them).
    pub(super) async fn repack(
        &self,
        opts: &PruneOptions,
        state: &State,
        packs: &[(Id, HashSet<BlobId>)],
    ) -> Result<Repacked> {
        let work = match &opts.scratch_dir {
            Some(dir) => WorkDir::create(dir, "staging", crate::error::ScratchFolder::Prune, 0)?,
            None => WorkDir::private_temp("staging", crate::error::ScratchFolder::Prune)?,
        };
        let dir = work.path().to_path_buf();
        let mut writers = Writers {
            packs: [None, None],
            bundles: [Bundle::new(BlobKind::Data), Bundle::new(BlobKind::Tree)],
            framer: Framer::new(crate::backup::DEFAULT_COMPRESSION_LEVEL)?,
        };
        let mut copied: HashSet<BlobId> = HashSet::new();
        let mut done = Repacked::default();
        let mut new_packs = Vec::new();
        for (pack_id, wanted) in packs {
            let Some(listed) = state.packs.get(pack_id) else {
                continue;
            };
            let entries: Vec<pack::PackEntry> = listed
                .blobs
                .iter()
                .filter(|e| wanted.contains(&e.id) && copied.insert(e.id))
                .cloned()
                .collect();
            let (path, max) = (self.path(&pack_rel(pack_id)), limits(layout::PACKS).stored);
            let bytes = get_bounded(&*self.store, &path, max).await?;
            let (keys, dir, id) = (self.keys.clone(), dir.clone(), *pack_id);
            let (w, finished, n) = tokio::task::spawn_blocking(move || {
                copy_blobs(&keys, &dir, writers, &id, &bytes, &entries)
            })
            .await
            .map_err(|e| EngineError::join("repack", e))??;
            writers = w;
            done.blobs += n;
            for f in finished {
                new_packs.push(self.upload_repacked(f, &mut done).await?);
            }
        }
        let (keys, dir2) = (self.keys.clone(), dir.clone());
        let (writers, finished) = tokio::task::spawn_blocking(move || {
            let mut finished = Vec::new();
            for slot in 0..2 {
                writers.seal_bundle(&keys, &dir2, slot, &mut finished)?;
            }
            Ok::<_, EngineError>((writers, finished))
        })
        .await
        .map_err(|e| EngineError::join("repack", e))??;
        for f in finished {
            new_packs.push(self.upload_repacked(f, &mut done).await?);
        }
        for w in writers.packs.into_iter().flatten() {
            if !w.is_empty() {
                let f = tokio::task::spawn_blocking(move || w.finish())
                    .await
                    .map_err(|e| EngineError::join("repack", e))??;
                new_packs.push(self.upload_repacked(f, &mut done).await?);
            }
        }
        if !new_packs.is_empty() {
            // Packs first, then the index that lists them: the backup's write order.
            let name = Id::random();
            let file = IndexFile { packs: new_packs };
            let sealed = index::seal(&self.keys, &name, &file);
            self.put_immutable(&format!("{}/{}", index::KIND, name.to_hex()), sealed)
                .await?;
        }
        Ok(done)
    }

    async fn upload_repacked(&self, f: FinishedPack, done: &mut Repacked) -> Result<IndexPack> {
        let rel = pack_rel(&f.id);
        self.store
            .put_file(&self.path(&rel), &f.path, PutMode::Create)
            .await?;
        if let Some(c) = &self.cache
            && f.entries.iter().any(|e| e.kind == BlobKind::Tree)
        {
            c.copy_in(&rel, &f.path);
        }
        let _ = std::fs::remove_file(&f.path);
        done.bytes += f.size;
        Ok(IndexPack {
            id: f.id,
            size: f.size,
            blobs: f.entries,
        })
    }
}

/// Opens, verifies and re-seals `entries` of one old pack; returns the writers, the packs
/// that filled up, and how many blobs were copied.
fn copy_blobs(
    keys: &Arc<MasterKeys>,
    dir: &std::path::Path,
    mut writers: Writers,
    pack_id: &Id,
    bytes: &Bytes,
    entries: &[pack::PackEntry],
) -> Result<(Writers, Vec<FinishedPack>, u64)> {
    let key = keys.pack_key(&pack_id.0);
    let mut finished = Vec::new();
    let mut n = 0;
    let mut units = bundle::Units::new(keys, &key);
    for e in entries {
        let what = || format!("blob {} in pack {}", e.id, pack_id.to_hex());
        let sealed = bytes
            .get(e.offset as usize..(e.offset + u64::from(e.len)) as usize)
            .ok_or_else(|| {
                let (offset, len, size) = (e.offset, u64::from(e.len), bytes.len() as u64);
                EngineError::corrupt(what(), CorruptReason::OutOfRange { offset, len, size })
            })?;
        let slot = e.kind.code() as usize;
        n += 1;
        if e.within.is_some() {
            let member = units
                .open(&e.id, &e.slot(), sealed)
                .map_err(|err| EngineError::corrupt(what(), err))?;
            writers.bundles[slot].push(e.id, &member);
            if writers.bundles[slot].is_full() {
                writers.seal_bundle(keys, dir, slot, &mut finished)?;
            }
            continue;
        }
        // A lone blob keeps its frame (compressed, padded): opened and verified, not redone.
        let frame = key
            .open_blob(&e.id, e.kind.code(), sealed)
            .map_err(|err| EngineError::corrupt(what(), err))?;
        let content = pack::unframe(&frame, e.raw_len as usize)
            .map_err(|err| EngineError::corrupt(what(), err))?;
        if keys.blob_id(&content) != e.id {
            return Err(EngineError::corrupt(what(), CorruptReason::IdMismatch));
        }
        writers.add(keys, dir, slot, &mut finished, |w| {
            w.add(e.kind, e.id, &frame, e.raw_len)
        })?;
    }
    Ok((writers, finished, n))
}

impl Writers {
    /// Seals the open bundle of `slot`, if any, into that slot's pack.
    fn seal_bundle(
        &mut self,
        keys: &MasterKeys,
        dir: &std::path::Path,
        slot: usize,
        finished: &mut Vec<FinishedPack>,
    ) -> Result<()> {
        if self.bundles[slot].is_empty() {
            return Ok(());
        }
        let kind = self.bundles[slot].kind;
        let b = std::mem::replace(&mut self.bundles[slot], Bundle::new(kind));
        let frame = self.framer.frame(&b.content, true);
        self.add(keys, dir, slot, finished, |w| {
            w.add_bundle_frame(&b, &frame)
        })
    }

    /// Adds one unit with `add` to the pack of `slot`, closing the pack when it is full.
    fn add(
        &mut self,
        keys: &MasterKeys,
        dir: &std::path::Path,
        slot: usize,
        finished: &mut Vec<FinishedPack>,
        add: impl FnOnce(&mut PackWriter) -> Result<u64>,
    ) -> Result<()> {
        let w = match &mut self.packs[slot] {
            Some(w) => w,
            none => none.insert(PackWriter::create(keys, dir)?),
        };
        add(w)?;
        if w.len() >= REPACK_TARGET
            && let Some(full) = self.packs[slot].take()
        {
            finished.push(full.finish()?);
        }
        Ok(())
    }
}
