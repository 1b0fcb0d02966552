//! The local files cache: the inode number and status change time each file had when a backup
//! stored its content, kept on this machine instead of in the tree blobs.
//!
//! Trees hold only what restore needs, so a directory that is the same in two places or two
//! runs (a source tree extracted afresh, a copy) gives the same tree blob and deduplicates.
//! Change detection still needs inode and ctime: a file may keep its size and mtime while its
//! content changes, but not its ctime. The unchanged-file shortcut therefore needs both the
//! parent tree's node (same size and mtime) and a record here saying that, when that node's
//! content was read (or itself reused), the file had the inode and ctime it has now.
//!
//! One generation file per recovery point, `<recovery point id>.fc`, is written by the backup
//! that makes the point; the next backup reads the generation of its parent. Inside, one block
//! per directory, keyed by a hash of the directory's path and of the tree blob stored for it,
//! with one stamp per node of that tree, in the tree's order. Because the key names the tree,
//! a block can only ever describe the very nodes it is looked up for: a block from another
//! point, another path or another tree is simply not found. Blocks are sealed (AES-GCM under a
//! metadata subkey, with the vault, machine and key as associated data), so a block written
//! under other keys or for another machine does not open, and a flipped byte is caught. The
//! block table is read into memory (44 bytes per directory); blocks are read one directory at
//! a time, as the walk reaches it, so a million files never sit in memory at once.
//!
//! Everything here is best effort and fails towards reading: a missing, foreign, truncated or
//! tampered generation only means the files are read again.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rbackup_crypto::{BlobId, MasterKeys, SEAL_OVERHEAD};

use crate::id::{Id, random_bytes};

/// First bytes of a generation file, and its last bytes (after the table).
const MAGIC: &[u8; 8] = b"RBFCACHE";
/// The purpose of the metadata subkey that seals blocks.
const KEY_PURPOSE: &str = "files-cache";
/// One table row: key, offset, length.
const ROW: usize = 32 + 8 + 4;
/// Trailer: table offset, row count, magic.
const TRAILER: usize = 8 + 8 + 8;
/// One stamp in a block: present flag, inode, ctime.
const STAMP: usize = 1 + 8 + 8;
/// A tree blob is at most `MAX_BLOB_BYTES` and a node takes well over 17 bytes of it, so no
/// honest block is larger than this; a longer one is not read at all.
const MAX_BLOCK: u64 = crate::layout::MAX_BLOB_BYTES + SEAL_OVERHEAD as u64;
/// Name of a generation file.
const SUFFIX: &str = ".fc";

/// What identifies a file's inode version: a write or attribute change moves the ctime, and
/// a replaced file has another inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub ino: u64,
    pub ctime_ns: i64,
}

/// Where generations live and the key that seals them.
#[derive(Clone)]
pub(crate) struct FilesCacheDir {
    dir: PathBuf,
    keys: Arc<MasterKeys>,
    vault: String,
    machine: String,
}

impl FilesCacheDir {
    pub(crate) fn new(
        dir: PathBuf,
        keys: Arc<MasterKeys>,
        vault: &str,
        machine: &str,
    ) -> FilesCacheDir {
        FilesCacheDir {
            dir,
            keys,
            vault: vault.into(),
            machine: machine.into(),
        }
    }

    fn ad(&self, key: &[u8; 32]) -> Vec<u8> {
        let mut ad = format!("rbackup files cache v1/{}/{}/", self.vault, self.machine);
        ad.push_str(&hex::encode(key));
        ad.into_bytes()
    }

    fn generation(&self, rp: &Id) -> PathBuf {
        self.dir.join(format!("{}{SUFFIX}", rp.to_hex()))
    }

    /// The generation of recovery point `rp`, if it is there and its table is sound.
    pub(crate) fn open(&self, rp: &Id) -> Option<Generation> {
        let path = self.generation(rp);
        match Generation::open(self.clone(), &path) {
            Ok(g) => Some(g),
            Err(e) => {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!("files cache {} not used: {e}", path.display());
                }
                None
            }
        }
    }

    /// Starts the generation of recovery point `rp` (written under a temporary name until
    /// [`GenerationWriter::finish`]).
    pub(crate) fn create(&self, rp: &Id) -> Option<GenerationWriter> {
        match GenerationWriter::create(self.clone(), rp) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!("cannot write files cache in {}: {e}", self.dir.display());
                None
            }
        }
    }

    /// Removes generations not named in `keep`, and temporary files of runs that died. Files
    /// written since `since` (this run's start) stay: a backup of another job beside this one
    /// may have just put its generation in place.
    pub(crate) fn retain(&self, keep: &HashSet<Id>, since: SystemTime) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let keep: HashSet<String> = keep
            .iter()
            .map(|id| format!("{}{SUFFIX}", id.to_hex()))
            .collect();
        // A temporary file may belong to a backup running beside this one: only old ones go.
        let stale = std::time::Duration::from_secs(7 * 24 * 3600);
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(modified) = e.metadata().and_then(|m| m.modified()) else {
                continue;
            };
            let remove = if name.contains(".tmp-") {
                modified.elapsed().is_ok_and(|age| age > stale)
            } else {
                !keep.contains(&name) && modified < since
            };
            if remove {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// The block key of the directory `path` whose tree blob is `tree`.
fn block_key(path: &Path, tree: &BlobId) -> [u8; 32] {
    let bytes = path.as_os_str().as_bytes();
    let mut h = blake3::Hasher::new_derive_key("rbackup files cache block key v1");
    h.update(&(bytes.len() as u64).to_le_bytes());
    h.update(bytes);
    h.update(tree.as_bytes());
    *h.finalize().as_bytes()
}

/// A generation being read: its table in memory, its blocks read on demand.
pub(crate) struct Generation {
    owner: FilesCacheDir,
    file: File,
    /// Sorted by key.
    rows: Vec<([u8; 32], u64, u32)>,
    table_at: u64,
}

fn bad(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
}

impl Generation {
    fn open(owner: FilesCacheDir, path: &Path) -> io::Result<Generation> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        if len < (MAGIC.len() + TRAILER) as u64 {
            return Err(bad("shorter than its header and trailer"));
        }
        let mut head = [0u8; 8];
        file.read_exact_at(&mut head, 0)?;
        let mut trailer = [0u8; TRAILER];
        file.read_exact_at(&mut trailer, len - TRAILER as u64)?;
        let table_at = u64::from_le_bytes(trailer[..8].try_into().unwrap_or_default());
        let count = u64::from_le_bytes(trailer[8..16].try_into().unwrap_or_default());
        if &head != MAGIC || &trailer[16..] != MAGIC {
            return Err(bad("not a files cache"));
        }
        // Bounded before anything is allocated: the table must be exactly what lies between
        // the blocks and the trailer.
        let table_len = count
            .checked_mul(ROW as u64)
            .ok_or_else(|| bad("row count"))?;
        let fits = table_at >= MAGIC.len() as u64
            && table_at.checked_add(table_len) == Some(len - TRAILER as u64);
        if !fits {
            return Err(bad("table does not fit the file"));
        }
        let mut table = vec![0u8; table_len as usize];
        file.read_exact_at(&mut table, table_at)?;
        let mut rows = Vec::with_capacity(count as usize);
        for r in table.chunks_exact(ROW) {
            let mut key = [0u8; 32];
            key.copy_from_slice(&r[..32]);
            let off = u64::from_le_bytes(r[32..40].try_into().unwrap_or_default());
            let n = u32::from_le_bytes(r[40..44].try_into().unwrap_or_default());
            rows.push((key, off, n));
        }
        if !rows.is_sorted_by(|a, b| a.0 < b.0) {
            return Err(bad("table not sorted"));
        }
        Ok(Generation {
            owner,
            file,
            rows,
            table_at,
        })
    }

    /// The stamps of the `nodes` nodes of tree `tree` at `path`, in the tree's order, if this
    /// generation has a sound block for exactly that.
    pub(crate) fn lookup(
        &self,
        path: &Path,
        tree: &BlobId,
        nodes: usize,
    ) -> Option<Vec<Option<Stamp>>> {
        let key = block_key(path, tree);
        let i = self.rows.binary_search_by(|r| r.0.cmp(&key)).ok()?;
        let (_, off, n) = self.rows[i];
        let end = off.checked_add(u64::from(n))?;
        if off < MAGIC.len() as u64 || end > self.table_at || u64::from(n) > MAX_BLOCK {
            return None;
        }
        let mut sealed = vec![0u8; n as usize];
        self.file.read_exact_at(&mut sealed, off).ok()?;
        let plain = self
            .owner
            .keys
            .meta_key(KEY_PURPOSE)
            .open(&self.owner.ad(&key), &sealed)
            .ok()?;
        let stamps = decode_block(&plain)?;
        (stamps.len() == nodes).then_some(stamps)
    }
}

fn encode_block(stamps: &[Option<Stamp>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(stamps.len() * STAMP);
    for s in stamps {
        match s {
            Some(s) => {
                out.push(1);
                out.extend_from_slice(&s.ino.to_le_bytes());
                out.extend_from_slice(&s.ctime_ns.to_le_bytes());
            }
            None => out.extend_from_slice(&[0; STAMP]),
        }
    }
    out
}

fn decode_block(plain: &[u8]) -> Option<Vec<Option<Stamp>>> {
    if !plain.len().is_multiple_of(STAMP) {
        return None;
    }
    plain
        .chunks_exact(STAMP)
        .map(|c| {
            let ino = u64::from_le_bytes(c[1..9].try_into().ok()?);
            let ctime_ns = i64::from_le_bytes(c[9..17].try_into().ok()?);
            match c[0] {
                0 => Some(None),
                1 => Some(Some(Stamp { ino, ctime_ns })),
                _ => None,
            }
        })
        .collect()
}

/// A generation being written, block by block as the walk stores trees.
pub(crate) struct GenerationWriter {
    owner: FilesCacheDir,
    out: BufWriter<File>,
    tmp: PathBuf,
    dest: PathBuf,
    at: u64,
    rows: Vec<([u8; 32], u64, u32)>,
    /// A write failed: the generation is abandoned (the next run reads more, nothing else).
    failed: bool,
    /// Put in place: nothing to clean up when dropped.
    done: bool,
}

impl GenerationWriter {
    fn create(owner: FilesCacheDir, rp: &Id) -> io::Result<GenerationWriter> {
        fs::create_dir_all(&owner.dir)?;
        let dest = owner.generation(rp);
        let tmp = dest.with_extension(format!("tmp-{}", hex::encode(random_bytes::<6>())));
        let mut out = BufWriter::new(File::create(&tmp)?);
        out.write_all(MAGIC)?;
        Ok(GenerationWriter {
            owner,
            out,
            tmp,
            dest,
            at: MAGIC.len() as u64,
            rows: Vec::new(),
            failed: false,
            done: false,
        })
    }

    /// Records the stamps of the nodes of `tree`, stored for the directory `path`.
    pub(crate) fn add(&mut self, path: &Path, tree: &BlobId, stamps: &[Option<Stamp>]) {
        if self.failed {
            return;
        }
        let key = block_key(path, tree);
        let sealed = self
            .owner
            .keys
            .meta_key(KEY_PURPOSE)
            .seal(&self.owner.ad(&key), &encode_block(stamps));
        let Ok(n) = u32::try_from(sealed.len()) else {
            return;
        };
        if let Err(e) = self.out.write_all(&sealed) {
            self.fail(e);
            return;
        }
        self.rows.push((key, self.at, n));
        self.at += u64::from(n);
    }

    fn fail(&mut self, e: io::Error) {
        tracing::warn!("cannot write files cache {}: {e}", self.tmp.display());
        self.failed = true;
    }

    /// Writes the table and puts the generation in place (after its recovery point exists).
    /// A generation dropped unfinished (a cancelled or failed run) is removed.
    pub(crate) fn finish(mut self) {
        if self.failed {
            return;
        }
        match self.try_finish() {
            Ok(()) => self.done = true,
            Err(e) => self.fail(e),
        }
    }

    fn try_finish(&mut self) -> io::Result<()> {
        self.rows.sort_unstable_by_key(|r| r.0);
        // The same directory and tree met twice (a source listed under two names) gives the
        // same key: keep one row, so the table stays strictly sorted.
        self.rows.dedup_by(|a, b| a.0 == b.0);
        for (key, off, n) in &self.rows {
            self.out.write_all(key)?;
            self.out.write_all(&off.to_le_bytes())?;
            self.out.write_all(&n.to_le_bytes())?;
        }
        self.out.write_all(&self.at.to_le_bytes())?;
        self.out
            .write_all(&(self.rows.len() as u64).to_le_bytes())?;
        self.out.write_all(MAGIC)?;
        self.out.flush()?;
        fs::rename(&self.tmp, &self.dest)
    }
}

impl Drop for GenerationWriter {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(keys: Arc<MasterKeys>, root: &Path, machine: &str) -> FilesCacheDir {
        FilesCacheDir::new(root.join("files"), keys, "vault1", machine)
    }

    fn stamp(ino: u64) -> Option<Stamp> {
        Some(Stamp {
            ino,
            ctime_ns: ino as i64 * 1000,
        })
    }

    fn write_one(d: &FilesCacheDir, rp: &Id, tree: &BlobId) {
        let mut w = d.create(rp).unwrap();
        w.add(Path::new("/src"), tree, &[stamp(7), None, stamp(9)]);
        w.add(Path::new("/src/sub"), &BlobId([5; 32]), &[stamp(1)]);
        w.finish();
    }

    #[test]
    fn a_block_is_found_only_for_its_path_tree_and_node_count() {
        let t = tempfile::tempdir().unwrap();
        let d = dir(Arc::new(MasterKeys::generate()), t.path(), "m1");
        let (rp, tree) = (Id::random(), BlobId([3; 32]));
        write_one(&d, &rp, &tree);
        let g = d.open(&rp).unwrap();
        let src = Path::new("/src");
        assert_eq!(
            g.lookup(src, &tree, 3),
            Some(vec![stamp(7), None, stamp(9)])
        );
        assert_eq!(
            g.lookup(Path::new("/src/sub"), &BlobId([5; 32]), 1),
            Some(vec![stamp(1)])
        );
        assert_eq!(g.lookup(src, &BlobId([4; 32]), 3), None, "another tree");
        assert_eq!(
            g.lookup(Path::new("/other"), &tree, 3),
            None,
            "another path"
        );
        assert_eq!(g.lookup(src, &tree, 2), None, "not aligned with the tree");
        assert!(d.open(&Id::random()).is_none(), "another recovery point");
    }

    #[test]
    fn other_keys_or_another_machine_open_nothing() {
        let t = tempfile::tempdir().unwrap();
        let keys = Arc::new(MasterKeys::generate());
        let (rp, tree) = (Id::random(), BlobId([3; 32]));
        write_one(&dir(keys.clone(), t.path(), "m1"), &rp, &tree);
        let other_keys = dir(Arc::new(MasterKeys::generate()), t.path(), "m1");
        let g = other_keys.open(&rp).unwrap();
        assert_eq!(g.lookup(Path::new("/src"), &tree, 3), None);
        let other_machine = dir(keys, t.path(), "m2");
        let g = other_machine.open(&rp).unwrap();
        assert_eq!(g.lookup(Path::new("/src"), &tree, 3), None);
    }

    #[test]
    fn every_flipped_byte_or_truncation_is_a_miss_never_a_panic() {
        let t = tempfile::tempdir().unwrap();
        let d = dir(Arc::new(MasterKeys::generate()), t.path(), "m1");
        let (rp, tree) = (Id::random(), BlobId([3; 32]));
        write_one(&d, &rp, &tree);
        let path = d.generation(&rp);
        let good = fs::read(&path).unwrap();
        let src = Path::new("/src");
        for i in 0..good.len() {
            let mut bytes = good.clone();
            bytes[i] ^= 0x40;
            fs::write(&path, &bytes).unwrap();
            let found = d.open(&rp).and_then(|g| g.lookup(src, &tree, 3));
            // A flip in the other block's bytes leaves this one intact; any other is a miss.
            if let Some(s) = found {
                assert_eq!(s, vec![stamp(7), None, stamp(9)], "byte {i}");
            }
        }
        for cut in [0, 5, good.len() / 2, good.len() - 1] {
            fs::write(&path, &good[..cut]).unwrap();
            assert!(d.open(&rp).and_then(|g| g.lookup(src, &tree, 3)).is_none());
        }
    }

    #[test]
    fn retain_keeps_named_generations_and_fresh_temporaries() {
        let t = tempfile::tempdir().unwrap();
        let d = dir(Arc::new(MasterKeys::generate()), t.path(), "m1");
        let (a, b) = (Id::random(), Id::random());
        write_one(&d, &a, &BlobId([1; 32]));
        write_one(&d, &b, &BlobId([1; 32]));
        let running = d.create(&Id::random()).unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(60);
        d.retain(&HashSet::from([a]), SystemTime::UNIX_EPOCH);
        assert!(d.open(&b).is_some(), "written since the run started");
        d.retain(&HashSet::from([b]), later);
        assert!(d.open(&a).is_none());
        assert!(d.open(&b).is_some());
        assert!(
            running.tmp.exists(),
            "a running backup's file is left alone"
        );
        let tmp = running.tmp.clone();
        drop(running);
        assert!(
            !tmp.exists(),
            "an unfinished generation is removed when dropped"
        );
    }
}
