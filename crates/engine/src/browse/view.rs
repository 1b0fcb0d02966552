//! Random access to a machine's recovery points for a reader that stays open (a file-system
//! view such as the command line's `mount`): the index is loaded once, a directory is listed
//! with its names checked, and a file is read at any offset through a bounded cache of
//! verified blobs.
//!
//! A file's content blobs are placed by the plain lengths the index records, so a read at an
//! offset fetches only the blobs that cover it, never the file from its start; each blob read
//! is checked against its id (as every read is) and against the length it was placed by.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rbackup_beneath::Name;
use rbackup_crypto::BlobId;
use tokio::sync::Semaphore;

use crate::error::{CorruptReason, EngineError, Result};
use crate::index::Index;
use crate::repo::Repository;
use crate::tree::{MAX_SYMLINK_TARGET, Node, NodeKind};

/// The most one [`Browser::read_at`] hands out; a longer request gets this much (a short
/// read, which callers of `read` must expect anyway).
pub const MAX_READ: usize = 16 << 20;

/// Blob fetches in flight at once: each holds one blob (and its sealed copy) until it is in
/// the cache, so this and the largest blob bound what reads hold beyond the cache.
const FETCHES: usize = 2;

/// The longest content blob placed: the chunker's largest chunk. A longer recorded length is
/// not a blob any backup wrote, and fetching it would break the memory bound.
const MAX_CONTENT_BLOB: u64 = rbackup_chunker::MAX_SIZE_MAX as u64;

/// One machine's repository opened for browsing, with its index and blob cache; cheap to
/// clone (the clones share both). Made by [`Repository::browser`].
#[derive(Clone, Debug)]
pub struct Browser {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    repo: Repository,
    index: Index,
    cache: Mutex<BlobCache>,
    /// One gate per blob being fetched, so that reads of one blob at once fetch it once.
    inflight: Mutex<HashMap<BlobId, Arc<tokio::sync::Mutex<()>>>>,
    fetches: Semaphore,
    /// Blobs fetched from the vault so far.
    fetched: AtomicU64,
}

/// A directory's entries, as [`Browser::list`] returns them.
#[derive(Clone, Debug, Default)]
pub struct DirListing {
    /// The entries whose names are plain names (no `/`, not `.` or `..`, no NUL, at most 255
    /// bytes), sorted by name, each name once.
    pub entries: Vec<Node>,
    /// Entries passed over, with why (`/dir/"name": refused name: ...`).
    pub refused: Vec<String>,
}

/// A file of a recovery point opened for reads at any offset ([`Browser::read_at`]).
#[derive(Clone, Debug)]
pub struct RandomFile {
    path: PathBuf,
    size: u64,
    /// Where each content blob lies in the file, in order; none overlap, none is empty.
    extents: Vec<Extent>,
    /// From this offset on the content cannot be placed, with why.
    broken: Option<(u64, Broken)>,
}

#[derive(Clone, Copy, Debug)]
struct Extent {
    start: u64,
    len: u32,
    blob: BlobId,
}

impl Extent {
    fn end(&self) -> u64 {
        self.start + u64::from(self.len)
    }
}

#[derive(Clone, Copy, Debug)]
enum Broken {
    NotIndexed(BlobId),
    PastSize(BlobId),
    TooLarge(BlobId, u64),
    Segments,
}

impl Broken {
    fn error(&self, path: &Path) -> EngineError {
        let blob = |id: &BlobId| format!("file content blob {id} of {}", path.display());
        match self {
            Broken::NotIndexed(id) => EngineError::corrupt(blob(id), CorruptReason::NotIndexed),
            Broken::PastSize(id) => EngineError::corrupt(blob(id), CorruptReason::ContentPastSize),
            Broken::TooLarge(id, len) => EngineError::corrupt(
                blob(id),
                CorruptReason::BlobTooLarge {
                    len: *len,
                    max: MAX_CONTENT_BLOB,
                },
            ),
            Broken::Segments => EngineError::corrupt(
                path.display().to_string(),
                CorruptReason::SegmentsOutOfOrder,
            ),
        }
    }
}

impl RandomFile {
    /// The file's size as the recovery point records it.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// How many content blobs are placed.
    pub fn blobs(&self) -> usize {
        self.extents.len()
    }

    /// Where the piece of the file that starts at `pos` ends: the end of the blob that covers
    /// `pos`, or, in a hole, the next blob's start but at most `hole` bytes on; never past the
    /// file's size. What a sequential reader reads next, one blob at a time.
    pub(crate) fn piece_end(&self, pos: u64, hole: u64) -> u64 {
        let i = self.extents.partition_point(|e| e.end() <= pos);
        let end = match self.extents.get(i) {
            Some(e) if e.start <= pos => e.end(),
            Some(e) => e.start.min(pos.saturating_add(hole)),
            None => pos.saturating_add(hole),
        };
        end.min(self.size)
    }
}

/// Decrypted blobs, least recently used first out, at most `max` bytes of them.
#[derive(Debug, Default)]
struct BlobCache {
    max: usize,
    bytes: usize,
    tick: u64,
    blobs: HashMap<BlobId, (Arc<Vec<u8>>, u64)>,
    order: BTreeMap<u64, BlobId>,
}

impl BlobCache {
    fn get(&mut self, id: &BlobId) -> Option<Arc<Vec<u8>>> {
        let (data, used) = self.blobs.get_mut(id)?;
        self.order.remove(used);
        self.tick += 1;
        *used = self.tick;
        self.order.insert(self.tick, *id);
        Some(data.clone())
    }

    fn put(&mut self, id: BlobId, data: Arc<Vec<u8>>) {
        if data.len() > self.max || self.blobs.contains_key(&id) {
            return;
        }
        self.tick += 1;
        self.bytes += data.len();
        self.blobs.insert(id, (data, self.tick));
        self.order.insert(self.tick, id);
        while self.bytes > self.max {
            let Some((_, old)) = self.order.pop_first() else {
                break;
            };
            if let Some((d, _)) = self.blobs.remove(&old) {
                self.bytes -= d.len();
            }
        }
    }
}

/// A lock whose holder cannot leave its data half-written (every change is whole).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Repository {
    /// Opens this repository for browsing: loads the index once and keeps at most
    /// `cache_bytes` of decrypted blobs for [`Browser::read_at`].
    pub async fn browser(&self, cache_bytes: usize) -> Result<Browser> {
        Ok(self.browser_over(self.load_index().await?, cache_bytes))
    }

    /// A [`Browser`] over an index already loaded.
    pub(crate) fn browser_over(&self, index: Index, cache_bytes: usize) -> Browser {
        Browser {
            inner: Arc::new(Inner {
                repo: self.clone(),
                index,
                cache: Mutex::new(BlobCache {
                    max: cache_bytes,
                    ..BlobCache::default()
                }),
                inflight: Mutex::default(),
                fetches: Semaphore::new(FETCHES),
                fetched: AtomicU64::new(0),
            }),
        }
    }
}

impl Browser {
    /// The repository browsed.
    pub fn repository(&self) -> &Repository {
        &self.inner.repo
    }

    /// Bytes of decrypted blobs held in the cache now.
    pub fn cached_bytes(&self) -> usize {
        lock(&self.inner.cache).bytes
    }

    /// How many blobs reads have fetched from the vault (not found in the cache) so far.
    pub fn blobs_fetched(&self) -> u64 {
        self.inner.fetched.load(Ordering::Relaxed)
    }

    /// The entries of the directory at `dir` (absolute; only used to name refusals) whose
    /// tree is `tree` (a recovery point's root tree for `/`). Entries whose names are not plain
    /// names, names met twice and symlinks with an overlong target are refused, not listed.
    pub async fn list(&self, dir: &Path, tree: &BlobId) -> Result<DirListing> {
        let tree = self.inner.repo.load_tree(&self.inner.index, tree).await?;
        let mut out = DirListing::default();
        for node in tree.nodes {
            let why = match Name::new(node.name_os()) {
                Err(why) => Some(format!("refused name: {why}")),
                Ok(_) if out.entries.last().is_some_and(|p| p.name >= node.name) => {
                    Some("refused: listed twice or out of order".to_string())
                }
                Ok(_)
                    if node.kind == NodeKind::Symlink
                        && node
                            .target
                            .as_ref()
                            .is_none_or(|t| t.len() > MAX_SYMLINK_TARGET || t.is_empty()) =>
                {
                    Some("refused: a symlink without a target or with one too long".into())
                }
                Ok(_) => None,
            };
            match why {
                None => out.entries.push(node),
                Some(why) => out.refused.push(super::refusal(dir, &node.name, &why)),
            }
        }
        Ok(out)
    }

    /// The tree of the directory `node` at `path`, below the directories whose trees are
    /// `ancestors` (the point's root tree first): refused when it is one of them (the tree
    /// contains itself) or when it is nested deeper than a restore goes.
    pub fn subtree(&self, path: &Path, node: &Node, ancestors: &[BlobId]) -> Result<BlobId> {
        let what = || path.display().to_string();
        let sub = match (node.kind, node.subtree) {
            (NodeKind::Dir, Some(t)) => t,
            _ => return Err(EngineError::corrupt(what(), CorruptReason::NotATree)),
        };
        match super::enter_refusal(&sub, ancestors) {
            Some(reason) => Err(EngineError::corrupt(what(), reason)),
            None => Ok(sub),
        }
    }

    /// Opens the file `node` (at `path`, which names it in errors) for [`Browser::read_at`]:
    /// places its content blobs by the lengths the index records. Anything but a regular file
    /// is [`EngineError::NotAFile`]. Content that cannot be placed (a blob not indexed, past
    /// the file's size or its data segments) makes the reads from there on fail, not the open.
    pub fn open(&self, path: &Path, node: &Node) -> Result<RandomFile> {
        if node.kind != NodeKind::File {
            return Err(EngineError::NotAFile {
                path: path.into(),
                kind: super::dump::kind_name(node.kind),
            });
        }
        let size = node.size;
        let mut broken: Option<(u64, Broken)> = None;
        // Ordinary files are one segment from 0; sparse files list theirs, checked in order.
        let mut segments: Vec<(u64, u64)> = Vec::new();
        if node.class.as_deref() == Some("sparse") {
            let mut end = 0;
            for &(start, len) in &node.segments {
                match start.checked_add(len) {
                    Some(e) if start >= end && e <= size => {
                        segments.push((start, len));
                        end = e;
                    }
                    _ => {
                        broken = Some((end, Broken::Segments));
                        break;
                    }
                }
            }
        } else {
            segments.push((0, size));
        }
        let mut extents = Vec::with_capacity(node.content.len());
        let (mut seg, mut used) = (0, 0u64);
        for id in &node.content {
            let at = |seg: usize, used: u64| {
                segments
                    .get(seg)
                    .map_or_else(|| segments.last().map_or(0, |s| s.0 + s.1), |s| s.0 + used)
            };
            let Some(loc) = self.inner.index.get(id) else {
                broken = earliest(broken, (at(seg, used), Broken::NotIndexed(*id)));
                break;
            };
            let n = u64::from(loc.raw_len);
            if n > MAX_CONTENT_BLOB {
                broken = earliest(broken, (at(seg, used), Broken::TooLarge(*id, n)));
                break;
            }
            if n == 0 {
                continue;
            }
            while segments.get(seg).is_some_and(|s| used >= s.1) {
                seg += 1;
                used = 0;
            }
            match segments.get(seg) {
                Some(&(start, len)) if n <= len - used => {
                    extents.push(Extent {
                        start: start + used,
                        len: loc.raw_len,
                        blob: *id,
                    });
                    used += n;
                }
                _ => {
                    broken = earliest(broken, (at(seg, used), Broken::PastSize(*id)));
                    break;
                }
            }
        }
        Ok(RandomFile {
            path: path.into(),
            size,
            extents,
            broken,
        })
    }

    /// Up to `len` bytes (at most [`MAX_READ`]) of `file` from `offset`: fewer only at its
    /// end, none past it. Only the blobs covering the range are read (from the cache when they
    /// are in it); holes of a sparse file, and the end of a file whose content stops short of
    /// its size, read as zeros. A blob missing, damaged or not of its recorded length is an
    /// error for this read only.
    pub async fn read_at(&self, file: &RandomFile, offset: u64, len: usize) -> Result<Vec<u8>> {
        let len = len.min(MAX_READ) as u64;
        let end = offset.saturating_add(len).min(file.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        if let Some((at, why)) = &file.broken
            && end > *at
        {
            return Err(why.error(&file.path));
        }
        let want = (end - offset) as usize;
        let mut out = Vec::with_capacity(want);
        let mut i = file.extents.partition_point(|e| e.end() <= offset);
        let mut pos = offset;
        while pos < end {
            let Some(e) = file.extents.get(i).filter(|e| e.start < end) else {
                break;
            };
            if pos < e.start {
                out.resize((e.start - offset) as usize, 0);
                pos = e.start;
            }
            let data = self.blob(&e.blob, e.len).await?;
            let from = (pos - e.start) as usize;
            let to = (end.min(e.end()) - e.start) as usize;
            out.extend_from_slice(&data[from..to]);
            pos = e.start + to as u64;
            i += 1;
        }
        out.resize(want, 0);
        Ok(out)
    }

    /// One content blob of recorded length `len`, from the cache or fetched (once, however
    /// many reads want it at the same time).
    async fn blob(&self, id: &BlobId, len: u32) -> Result<Arc<Vec<u8>>> {
        let inner = &*self.inner;
        if let Some(b) = lock(&inner.cache).get(id) {
            return Ok(b);
        }
        let gate = lock(&inner.inflight).entry(*id).or_default().clone();
        let result = {
            let _turn = gate.lock().await;
            let cached = lock(&inner.cache).get(id);
            match cached {
                Some(b) => Ok(b),
                None => {
                    // Never closed, so the permit is always granted.
                    let _permit = inner.fetches.acquire().await.ok();
                    self.fetch(id, len).await
                }
            }
        };
        // The last reader through removes the gate (cloning one takes the map's lock).
        let mut map = lock(&inner.inflight);
        if Arc::strong_count(&gate) == 2 {
            map.remove(id);
        }
        result
    }

    async fn fetch(&self, id: &BlobId, len: u32) -> Result<Arc<Vec<u8>>> {
        let inner = &*self.inner;
        inner.fetched.fetch_add(1, Ordering::Relaxed);
        let data = inner.repo.read_blob(&inner.index, id).await?;
        if data.len() as u64 != u64::from(len) {
            let reason = CorruptReason::LengthMismatch {
                recorded: len.into(),
                found: data.len() as u64,
            };
            return Err(EngineError::corrupt(
                format!("file content blob {id}"),
                reason,
            ));
        }
        let data = Arc::new(data);
        lock(&inner.cache).put(*id, data.clone());
        Ok(data)
    }
}

/// The one of `a` and `b` at the lower offset.
fn earliest(a: Option<(u64, Broken)>, b: (u64, Broken)) -> Option<(u64, Broken)> {
    match a {
        Some(a) if a.0 <= b.0 => Some(a),
        _ => Some(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> BlobId {
        BlobId([n; 32])
    }

    #[test]
    fn the_cache_keeps_the_recently_used_within_its_bound() {
        let mut c = BlobCache {
            max: 10,
            ..BlobCache::default()
        };
        c.put(id(1), Arc::new(vec![1; 4]));
        c.put(id(2), Arc::new(vec![2; 4]));
        assert!(c.get(&id(1)).is_some());
        c.put(id(3), Arc::new(vec![3; 4]));
        assert_eq!(c.bytes, 8);
        assert!(
            c.get(&id(2)).is_none(),
            "the least recently used goes first"
        );
        assert!(c.get(&id(1)).is_some() && c.get(&id(3)).is_some());
        c.put(id(4), Arc::new(vec![4; 11]));
        assert!(c.get(&id(4)).is_none(), "a blob over the bound is not kept");
        assert_eq!(c.bytes, 8);
    }
}
