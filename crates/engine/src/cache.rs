//! The local cache dir: a copy of the vault's immutable metadata, and the staging area for packs.
//!
//! Index files, recovery points and tree packs never change once written, so a copy under their
//! name is valid forever; that is what lets an unchanged re-run list the vault and download
//! nothing. The cache holds only sealed bytes exactly as stored in the vault — no plaintext — so
//! losing or leaking it is no worse than leaking the vault. It holds only bytes that
//! authenticated: a copy is written after the object opened (for a tree pack, after its header
//! and every blob in it did). Writes are atomic (temp + rename) but not fsynced, so a crash or
//! another process can still leave a torn or flipped file; a cached object that fails to open is
//! evicted and fetched again from the vault once (`Repository::read_immutable`,
//! `Repository::read_blob`), so a damaged cache never makes a run fail.

use std::collections::HashSet;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{EngineError, Result};
use crate::id::random_bytes;

/// Read-through cache of immutable vault objects for one machine.
#[derive(Debug, Clone)]
pub(crate) struct MetaCache {
    root: PathBuf,
}

impl MetaCache {
    pub(crate) fn new(cache_dir: &Path, vault_id: &str, machine: &str) -> Result<MetaCache> {
        // Both names come from the vault: never let one reach a path unless it is our form.
        crate::layout::check_vault_id("vault.json", vault_id)?;
        crate::layout::check_machine_id("machine folder", machine)?;
        crate::workdir::create_checked(cache_dir, crate::error::ScratchFolder::Cache)?;
        let root = cache_dir.join("meta").join(vault_id).join(machine);
        fs::create_dir_all(&root).map_err(|e| EngineError::io(&root, e))?;
        Ok(MetaCache { root })
    }

    /// The cached copy of `rel`, unless it is missing or larger than `max` bytes (its kind's
    /// cap: a planted giant is treated as missing, and then replaced).
    pub(crate) fn read(&self, rel: &str, max: u64) -> Option<Vec<u8>> {
        let mut f = fs::File::open(self.root.join(rel)).ok()?;
        let mut out = Vec::new();
        f.by_ref().take(max + 1).read_to_end(&mut out).ok()?;
        (out.len() as u64 <= max).then_some(out)
    }

    pub(crate) fn read_range(&self, rel: &str, offset: u64, len: usize) -> Option<Vec<u8>> {
        let mut f = fs::File::open(self.root.join(rel)).ok()?;
        f.seek(SeekFrom::Start(offset)).ok()?;
        let mut buf = vec![0u8; len];
        f.read_exact(&mut buf).ok()?;
        Some(buf)
    }

    /// Best effort: a cache that cannot be written only costs downloads later.
    pub(crate) fn write(&self, rel: &str, bytes: &[u8]) {
        if let Err(e) = self.try_write(rel, bytes) {
            tracing::warn!("cannot write cache file {rel}: {e}");
        }
    }

    /// Copies a local file into the cache (a tree pack just uploaded from staging).
    pub(crate) fn copy_in(&self, rel: &str, from: &Path) {
        match fs::read(from) {
            Ok(bytes) => self.write(rel, &bytes),
            Err(e) => tracing::warn!("cannot read {} for the cache: {e}", from.display()),
        }
    }

    fn try_write(&self, rel: &str, bytes: &[u8]) -> std::io::Result<()> {
        let dest = self.root.join(rel);
        if let Some(dir) = dest.parent() {
            fs::create_dir_all(dir)?;
        }
        let tmp = dest.with_extension(format!("tmp-{}", hex::encode(random_bytes::<6>())));
        fs::write(&tmp, bytes)?;
        fs::rename(&tmp, &dest)
    }

    /// Drops one cached object (it failed to open: a flipped or torn file).
    pub(crate) fn evict(&self, rel: &str) {
        if let Err(e) = fs::remove_file(self.root.join(rel))
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("cannot evict cache file {rel}: {e}");
        }
    }

    /// Drops cached objects of `dir` whose names are not in `keep` (deleted from the vault).
    pub(crate) fn retain(&self, dir: &str, keep: &HashSet<String>) {
        let Ok(entries) = fs::read_dir(self.root.join(dir)) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// The folder of this machine's files cache (`filescache.rs`) under `cache_dir`, beside the
/// metadata cache. Unlike the metadata cache it holds data that exists nowhere else (sealed
/// under the machine's keys), but losing it only makes the next backup read every file.
pub(crate) fn files_cache_dir(cache_dir: &Path, vault_id: &str, machine: &str) -> Result<PathBuf> {
    crate::layout::check_vault_id("vault.json", vault_id)?;
    crate::layout::check_machine_id("machine folder", machine)?;
    Ok(cache_dir.join("files").join(vault_id).join(machine))
}
