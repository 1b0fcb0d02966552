//! The parallel half of the backup pipeline: workers that compress, seal and pack blobs, and
//! uploaders that move finished packs from the cache dir into the vault and index them.
//!
//! Each worker owns its open packs (one per blob kind), so sealing needs no lock and each pack
//! has its own subkey; a pack is finished when it reaches the target size or when the staging
//! budget runs short, which is how the cache stays within its 5% without ever failing for it.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use rbackup_crypto::{BlobId, MasterKeys};
use rbackup_store::PutMode;
use tokio::runtime::Handle;

use crate::bundle::Bundle;
use crate::error::{EngineError, InternalFailure, Result};
use crate::id::Id;
use crate::index::{self, IndexFile, IndexPack};
use crate::layout::pack_rel;
use crate::pack::{BlobKind, FinishedPack, Framer, PackWriter};
use crate::repo::Repository;

/// A blob on its way to a pack.
#[derive(Debug)]
pub(crate) struct BlobJob {
    pub kind: BlobKind,
    pub id: BlobId,
    pub data: Vec<u8>,
}

/// Bytes staged in the cache dir, bounded; waiting is back-pressure, never failure.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: u64,
    state: Mutex<(u64, u64)>, // (in use, high-water mark)
    freed: Condvar,
}

impl Budget {
    pub(crate) fn new(limit: u64) -> Budget {
        Budget {
            limit,
            state: Mutex::new((0, 0)),
            freed: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, u64)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `n` bytes if they fit. An empty budget always admits one blob, so a blob larger
    /// than the whole budget still makes progress.
    fn try_acquire(&self, n: u64) -> bool {
        let mut s = self.lock();
        if s.0 == 0 || s.0 + n <= self.limit {
            s.0 += n;
            s.1 = s.1.max(s.0);
            true
        } else {
            false
        }
    }

    fn acquire(&self, n: u64) {
        let mut s = self.lock();
        while !(s.0 == 0 || s.0 + n <= self.limit) {
            s = self.freed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        s.0 += n;
        s.1 = s.1.max(s.0);
    }

    fn release(&self, n: u64) {
        let mut s = self.lock();
        s.0 = s.0.saturating_sub(n);
        self.freed.notify_all();
    }

    pub(crate) fn high_water(&self) -> u64 {
        self.lock().1
    }
}

/// Settings shared by the workers.
#[derive(Debug, Clone)]
pub(crate) struct PackerConfig {
    pub keys: Arc<MasterKeys>,
    pub staging: PathBuf,
    pub pack_target: u64,
    pub level: i32,
    pub budget: Arc<Budget>,
}

/// Receives blobs until the channel closes; sends finished packs to the uploaders. Blobs
/// shorter than [`crate::bundle::SMALL_BLOB`] are gathered into one open bundle per kind, sealed as
/// one unit when it is full and before its pack is finished.
pub(crate) fn worker(
    cfg: PackerConfig,
    rx: Receiver<BlobJob>,
    out: Sender<FinishedPack>,
) -> Result<()> {
    let mut w = Worker {
        framer: Framer::new(cfg.level)?,
        open: [None, None],
        bundles: [Bundle::new(BlobKind::Data), Bundle::new(BlobKind::Tree)],
        cfg,
        out,
    };
    for job in rx {
        let slot = job.kind.code() as usize;
        if Bundle::takes(job.data.len()) {
            w.bundles[slot].push(job.id, &job.data);
            if w.bundles[slot].is_full() {
                w.seal_bundle(slot)?;
            }
            continue;
        }
        let frame = w.framer.frame(&job.data, true);
        let raw_len = job.data.len() as u32;
        w.put(slot, frame.len(), |p| {
            p.add(job.kind, job.id, &frame, raw_len)
        })?;
    }
    for slot in 0..2 {
        w.seal_bundle(slot)?;
    }
    for p in w.open.into_iter().flatten() {
        if !p.is_empty() {
            send(&w.out, p.finish()?)?;
        }
    }
    Ok(())
}

fn send(out: &Sender<FinishedPack>, p: FinishedPack) -> Result<()> {
    out.send(p)
        .map_err(|_| EngineError::internal("backup pack", InternalFailure::StageStopped))
}

/// One worker's state: its compressor, its open pack and open bundle per blob kind.
struct Worker {
    framer: Framer,
    open: [Option<PackWriter>; 2],
    bundles: [Bundle; 2],
    cfg: PackerConfig,
    out: Sender<FinishedPack>,
}

impl Worker {
    /// Seals the open bundle of `slot`, if it holds anything, into that slot's pack.
    fn seal_bundle(&mut self, slot: usize) -> Result<()> {
        if self.bundles[slot].is_empty() {
            return Ok(());
        }
        let kind = self.bundles[slot].kind;
        let bundle = std::mem::replace(&mut self.bundles[slot], Bundle::new(kind));
        let frame = self.framer.frame(&bundle.content, true);
        self.put(slot, frame.len(), |p| p.add_bundle_frame(&bundle, &frame))
    }

    /// Writes one unit of `frame_len` framed bytes with `add` into the pack of `slot`, within
    /// the staging budget, and ships the pack when it is full.
    fn put(
        &mut self,
        slot: usize,
        frame_len: usize,
        add: impl FnOnce(&mut PackWriter) -> Result<u64>,
    ) -> Result<()> {
        let need = (frame_len + rbackup_crypto::SEAL_OVERHEAD) as u64;
        if !self.cfg.budget.try_acquire(need) {
            // Out of budget: ship what we hold so the uploaders can free space, then wait.
            for pack in self.open.iter_mut() {
                if let Some(p) = pack.take_if(|p| !p.is_empty()) {
                    send(&self.out, p.finish()?)?;
                }
            }
            self.cfg.budget.acquire(need);
        }
        let pack = match &mut self.open[slot] {
            Some(p) => p,
            none => none.insert(PackWriter::create(&self.cfg.keys, &self.cfg.staging)?),
        };
        add(pack)?;
        if pack.len() >= self.cfg.pack_target
            && let Some(p) = self.open[slot].take()
        {
            send(&self.out, p.finish()?)?;
        }
        Ok(())
    }
}

/// Index entries of uploaded packs not yet written to an index file.
#[derive(Debug)]
pub(crate) struct IndexCollector {
    pending: Vec<IndexPack>,
    /// When the last index file was written (the vault clock's monotonic time).
    last_flush: Duration,
    pub packs: u64,
    /// Bytes of the packs uploaded.
    pub pack_bytes: u64,
    /// Bytes of the packs and index files written.
    pub bytes: u64,
    pub blobs: u64,
}

/// How many packs an index file covers before it is written mid-run: bounds what a killed run
/// loses without writing a storm of tiny index files.
const INDEX_FLUSH_PACKS: usize = 64;

/// How many blobs an index file lists at most (plus one pack's): with bundles a pack holds up
/// to hundreds of thousands of small blobs, and every reader decodes a whole index file at
/// once, so this is what bounds the memory loading an index file takes (a few MB).
const INDEX_FLUSH_BLOBS: usize = 50_000;

/// How long uploaded packs wait for their index file at most. On a slow link 64 packs take
/// hours (32 MiB packs at 1 MiB/s: 35 min); this keeps a killed run's index at most a minute
/// behind. The next run also adopts unindexed packs, but only by reading each one's header.
pub(crate) const INDEX_FLUSH_INTERVAL: Duration = Duration::from_secs(60);

impl IndexCollector {
    /// An empty collector whose flush interval starts at `now`.
    pub(crate) fn new(now: Duration) -> IndexCollector {
        IndexCollector {
            pending: Vec::new(),
            last_flush: now,
            packs: 0,
            pack_bytes: 0,
            bytes: 0,
            blobs: 0,
        }
    }

    /// Whether the pending entries are due for an index file at `now`.
    fn due(&self, now: Duration) -> bool {
        self.pending.len() >= INDEX_FLUSH_PACKS
            || self.pending.iter().map(|p| p.blobs.len()).sum::<usize>() >= INDEX_FLUSH_BLOBS
            || now.saturating_sub(self.last_flush) >= INDEX_FLUSH_INTERVAL
    }

    /// Writes pending entries as a new index file (packs are already in the vault).
    pub(crate) async fn flush(&mut self, repo: &Repository) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let file = IndexFile {
            packs: std::mem::take(&mut self.pending),
        };
        self.last_flush = repo.clock.now_instant();
        let name = Id::random();
        let sealed = index::seal(&repo.keys, &name, &file);
        self.bytes += sealed.len() as u64;
        repo.put_immutable(&format!("{}/{}", index::KIND, name.to_hex()), sealed)
            .await
    }
}

/// Uploads finished packs, then records them for the index.
pub(crate) fn uploader(
    repo: Repository,
    handle: Handle,
    rx: Receiver<FinishedPack>,
    budget: Arc<Budget>,
    collector: Arc<tokio::sync::Mutex<IndexCollector>>,
    throttle: Option<rbackup_throttle::Throttle>,
) -> Result<()> {
    for pack in rx {
        let rel = pack_rel(&pack.id);
        let key = repo.path(&rel);
        // Throttled, the store paces the bytes as it sends them, so the wire follows the rate
        // and not just the average.
        handle.block_on(match &throttle {
            Some(t) => repo
                .store
                .put_file_throttled(&key, &pack.path, PutMode::Create, t),
            None => repo.store.put_file(&key, &pack.path, PutMode::Create),
        })?;
        if let Some(cache) = &repo.cache
            && pack.entries.iter().any(|e| e.kind == BlobKind::Tree)
        {
            cache.copy_in(&rel, &pack.path);
        }
        let _ = std::fs::remove_file(&pack.path);
        // Release what the worker acquired: the sealed blobs (the header was never counted).
        budget.release(
            crate::pack::units(&pack.entries)
                .map(|u| u64::from(u[0].len))
                .sum(),
        );
        handle.block_on(async {
            let mut c = collector.lock().await;
            c.packs += 1;
            c.bytes += pack.size;
            c.pack_bytes += pack.size;
            c.blobs += pack.entries.len() as u64;
            c.pending.push(IndexPack {
                id: pack.id,
                size: pack.size,
                blobs: pack.entries,
            });
            if c.due(repo.clock.now_instant()) {
                c.flush(&repo).await?;
            }
            Ok::<_, EngineError>(())
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack() -> IndexPack {
        IndexPack {
            id: Id::random(),
            size: 1,
            blobs: Vec::new(),
        }
    }

    #[test]
    fn entries_are_due_after_64_packs_or_a_minute_whichever_comes_first() {
        let start = Duration::from_secs(1000);
        let mut c = IndexCollector::new(start);
        c.pending.push(pack());
        assert!(!c.due(start + INDEX_FLUSH_INTERVAL - Duration::from_millis(1)));
        assert!(c.due(start + INDEX_FLUSH_INTERVAL));
        while c.pending.len() < INDEX_FLUSH_PACKS {
            assert!(!c.due(start), "{} packs", c.pending.len());
            c.pending.push(pack());
        }
        assert!(c.due(start));
    }

    #[test]
    fn a_pack_of_many_small_blobs_makes_entries_due_at_once() {
        let start = Duration::from_secs(1000);
        let mut c = IndexCollector::new(start);
        let one = crate::pack::PackEntry {
            kind: BlobKind::Data,
            id: BlobId([1; 32]),
            offset: 0,
            len: 100,
            raw_len: 10,
            within: Some(0),
        };
        let mut p = pack();
        p.blobs = vec![one.clone(); INDEX_FLUSH_BLOBS - 1];
        c.pending.push(p);
        assert!(!c.due(start));
        let mut q = pack();
        q.blobs.push(one);
        c.pending.push(q);
        assert!(c.due(start));
    }
}
