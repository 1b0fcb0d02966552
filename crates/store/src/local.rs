//! [`LocalStore`]: a vault in a local directory, written with std::fs for durability.
//!
//! Every put stages the data in a file in one staging folder at the store root,
//! [`STAGING_DIR`] (a `.tmp-` name, which no key can have and listing never shows), fsyncs
//! it, publishes it in one atomic step (rename for `Overwrite`, hard link for `Create`), then
//! fsyncs the destination directory. A crash therefore leaves either the old state or the new
//! object, plus at worst a stray staging file, which listing never shows.
//!
//! Staging outside the destination directory is what lets a vault's folders be append-only
//! (`chattr +a`, which allows new entries but no unlink and no rename over an entry): a `Create`
//! only adds a name to the destination directory, and the staging name is removed from the
//! staging folder, which is not append-only. An `Overwrite` (a rename over an existing name)
//! and a delete are then refused by the kernel with EPERM, reported as
//! [`StoreError::OperationRefused`] (as a cloud store's append-only credentials are) saying
//! the folder does not allow it. When the staging
//! folder is on another file system than the destination (a mount inside the vault), the
//! data is staged again beside the destination, as before.

use std::fs::{self, File};
use std::io::{self, BufReader, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rbackup_throttle::{Throttle, ThrottledReader};

use crate::error::{is_missing, join_error};
use crate::key::{TEMP_PREFIX, normalize_prefix, valid_segment, validate_key};
use crate::{ObjectMeta, PutMode, RefusedOperation, Store, StoreError, VaultUrl};

/// The staging folder at the root of a local store (see the module docs).
pub const STAGING_DIR: &str = ".tmp-staging";

/// A vault stored as files under a local directory; keys map to relative file paths.
///
/// Blocking file-system calls run on tokio's blocking thread pool, so a tokio runtime must be
/// running. Unlike a bucket, a directory cannot hold both an object `a` and objects `a/...`:
/// a put that would need both fails with [`StoreError::Io`]. Unix only. Ranged reads use positioned reads on an open file, so a read sees one version of
/// an object even while it is being overwritten.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store rooted at `root`, which must be absolute. Does no I/O: the directory is created
    /// by the first put.
    pub fn new(root: impl Into<PathBuf>) -> Result<LocalStore, StoreError> {
        let root = root.into();
        if !root.is_absolute() {
            return Err(StoreError::InvalidUrl {
                url: root.display().to_string(),
                reason: "a local vault path must be absolute".into(),
            });
        }
        Ok(LocalStore { root })
    }

    /// The vault's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the folders that objects under each of `prefixes` (keys of folders, such as
    /// `machines/<id>/packs/00`) are written into, and the staging folder, fsyncing each new
    /// entry; returns the folders of `prefixes` as paths. A put creates missing folders
    /// itself, but a folder created inside an append-only folder is not append-only: whoever
    /// protects a vault's folders with `chattr +a` creates them all first with this.
    pub fn create_folders(&self, prefixes: &[String]) -> Result<Vec<PathBuf>, StoreError> {
        let mut out = Vec::new();
        for prefix in prefixes {
            let dir = self.file_for(prefix)?;
            ensure_dir(&dir)
                .map_err(|e| StoreError::from_write_io(&dir.display().to_string(), e))?;
            out.push(dir);
        }
        let staging = self.root.join(STAGING_DIR);
        ensure_dir(&staging)
            .map_err(|e| StoreError::from_write_io(&staging.display().to_string(), e))?;
        Ok(out)
    }

    fn file_for(&self, key: &str) -> Result<PathBuf, StoreError> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }
}

/// Runs `f` on the blocking pool, mapping a panic or shutdown to an error about `key`.
async fn blocking<T, F>(key: &str, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| join_error(key, e))?
}

impl LocalStore {
    /// Names this vault in a refusal made by the blocking helpers, which know only the file.
    fn name_vault(&self, e: StoreError) -> StoreError {
        match e {
            StoreError::OperationRefused {
                url,
                path,
                operation,
                detail,
            } if url.is_empty() => StoreError::OperationRefused {
                url: self.describe(),
                path,
                operation,
                detail,
            },
            e => e,
        }
    }
}

#[async_trait]
impl Store for LocalStore {
    async fn put(&self, path: &str, data: Bytes, mode: PutMode) -> Result<(), StoreError> {
        let dest = self.file_for(path)?;
        let key = path.to_string();
        let staging = self.root.join(STAGING_DIR);
        blocking(path, move || {
            put_blocking(&key, &dest, &staging, mode, |file| {
                file.write_all(&data)
                    .map_err(|e| StoreError::from_write_io(&dest.display().to_string(), e))
            })
        })
        .await
        .map_err(|e| self.name_vault(e))
    }

    async fn get_range(&self, path: &str, range: Option<Range<u64>>) -> Result<Bytes, StoreError> {
        let file = self.file_for(path)?;
        let key = path.to_string();
        blocking(path, move || read_range(&key, &file, range)).await
    }

    async fn head(&self, path: &str) -> Result<ObjectMeta, StoreError> {
        let file = self.file_for(path)?;
        let key = path.to_string();
        blocking(path, move || {
            let meta = fs::metadata(&file)
                .map_err(|e| StoreError::from_read_io(&key, &file.display().to_string(), e))?;
            if !meta.is_file() {
                return Err(StoreError::NotFound { path: key });
            }
            Ok(ObjectMeta {
                path: key,
                size: meta.len(),
            })
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let prefix = normalize_prefix(prefix)?.to_string();
        let root = self.root.clone();
        let label = prefix.clone();
        blocking(&label, move || list_blocking(&root, &prefix)).await
    }

    async fn delete(&self, path: &str) -> Result<(), StoreError> {
        let file = self.file_for(path)?;
        blocking(path, move || delete_blocking(&file))
            .await
            .map_err(|e| self.name_vault(e))
    }

    fn describe(&self) -> String {
        VaultUrl::Local(self.root.clone()).to_url_string()
    }

    async fn remove_stale_staging(&self, older_than: Duration) -> Result<u64, StoreError> {
        let staging = self.root.join(STAGING_DIR);
        blocking(STAGING_DIR, move || remove_stale(&staging, older_than))
            .await
            .map_err(|e| self.name_vault(e))
    }

    async fn put_file(&self, path: &str, local: &Path, mode: PutMode) -> Result<(), StoreError> {
        self.copy_in(path, local, mode, None).await
    }

    /// Paces the copy into the staging file (the disk is this store's wire).
    async fn put_file_throttled(
        &self,
        path: &str,
        local: &Path,
        mode: PutMode,
        throttle: &Throttle,
    ) -> Result<(), StoreError> {
        self.copy_in(path, local, mode, Some(throttle.clone()))
            .await
    }
}

impl LocalStore {
    /// Copies `local` in as `path`, through `throttle` if given.
    async fn copy_in(
        &self,
        path: &str,
        local: &Path,
        mode: PutMode,
        throttle: Option<Throttle>,
    ) -> Result<(), StoreError> {
        let dest = self.file_for(path)?;
        let key = path.to_string();
        let local = local.to_path_buf();
        let staging = self.root.join(STAGING_DIR);
        blocking(path, move || {
            let mut source = File::open(&local).map_err(|source| StoreError::Io {
                path: local.display().to_string(),
                source,
            })?;
            put_blocking(&key, &dest, &staging, mode, |file| {
                // Unthrottled, std::io::copy uses copy_file_range/sendfile between files on
                // Linux, so the pack never passes through user-space buffers. Throttled, it
                // goes through one bounded buffer, read in pieces the throttle paces.
                let copied = match throttle {
                    None => io::copy(&mut source, file),
                    Some(t) => {
                        let paced = ThrottledReader::new(source, t);
                        io::copy(&mut BufReader::with_capacity(COPY_BUFFER, paced), file)
                    }
                };
                copied.map(drop).map_err(|e| {
                    let what = format!("{} (copying from {})", dest.display(), local.display());
                    StoreError::from_write_io(&what, e)
                })
            })
        })
        .await
        .map_err(|e| self.name_vault(e))
    }
}

/// Buffer of a throttled copy; each read is further capped at the throttle's piece size.
const COPY_BUFFER: usize = 256 * 1024;

/// A staging file that is removed when dropped unless it was renamed into place.
struct Staged {
    path: PathBuf,
    keep: bool,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.keep {
            // Best effort: a leftover staging file is invisible to listing and harmless.
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Stages data written by `fill` in `staging` (or, if that folder cannot be made, beside
/// `dest`), fsyncs it, publishes it per `mode`, and fsyncs the destination directory.
fn put_blocking(
    key: &str,
    dest: &Path,
    staging: &Path,
    mode: PutMode,
    fill: impl FnOnce(&mut File) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let dir = dest
        .parent()
        .ok_or_else(|| StoreError::InvalidPath { path: key.into() })?;
    let dir_err = |e| StoreError::from_write_io(&dir.display().to_string(), e);
    ensure_dir(dir).map_err(dir_err)?;
    let (mut file, mut staged) = match ensure_dir(staging).and_then(|()| create_staged(staging)) {
        Ok(s) => s,
        Err(_) => create_staged(dir).map_err(dir_err)?,
    };
    let staged_err = |e| StoreError::from_write_io(&dest.display().to_string(), e);
    fill(&mut file)?;
    file.sync_all().map_err(staged_err)?;
    drop(file);
    // Either way the staging name is unlinked (after a hard link) before the directory
    // fsync covers the new entry.
    match publish(key, &mut staged, dest, mode) {
        Err(StoreError::Io { source, .. }) if is_cross_device(&source) => {
            // The staging folder is on another file system: stage again beside `dest`.
            let mut beside = restage(&staged, dir).map_err(dir_err)?;
            drop(staged);
            publish(key, &mut beside, dest, mode)?;
            drop(beside);
        }
        r => {
            r?;
            drop(staged);
        }
    }
    fsync_dir(dir).map_err(dir_err)
}

fn publish(key: &str, staged: &mut Staged, dest: &Path, mode: PutMode) -> Result<(), StoreError> {
    match mode {
        PutMode::Overwrite => {
            fs::rename(&staged.path, dest)
                .map_err(|e| refused_or(dest, e, RefusedOperation::Overwrite))?;
            staged.keep = true;
            Ok(())
        }
        PutMode::Create => publish_exclusive(key, staged, dest),
    }
}

fn is_cross_device(e: &io::Error) -> bool {
    rustix::io::Errno::from_io_error(e) == Some(rustix::io::Errno::XDEV)
}

/// A copy of `staged` in `dir`, fsynced.
fn restage(staged: &Staged, dir: &Path) -> io::Result<Staged> {
    let (mut file, copy) = create_staged(dir)?;
    io::copy(&mut File::open(&staged.path)?, &mut file)?;
    file.sync_all()?;
    Ok(copy)
}

/// Removes the staging files in `staging` not modified for `older_than`: a writer stages,
/// fsyncs and links within one put, so a file that old belongs to a killed writer. Only names
/// this store gives staging files are touched.
fn remove_stale(staging: &Path, older_than: Duration) -> Result<u64, StoreError> {
    let entries = match fs::read_dir(staging) {
        Ok(e) => e,
        Err(e) if is_missing(&e) => return Ok(0),
        Err(e) => return Err(StoreError::from_write_io(&staging.display().to_string(), e)),
    };
    let cutoff = std::time::SystemTime::now()
        .checked_sub(older_than)
        .unwrap_or(std::time::UNIX_EPOCH);
    let mut removed = 0;
    for entry in entries.flatten() {
        let staged = entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX);
        let Ok(meta) = entry.metadata() else { continue }; // gone meanwhile
        let stale = meta.modified().is_ok_and(|t| t < cutoff);
        if staged && meta.is_file() && stale {
            delete_blocking(&entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Maps an error changing the entry `path`: EPERM there means an append-only or immutable
/// folder (or file), which allows no deletes or overwrites: the same
/// [`StoreError::OperationRefused`] a cloud store gives for append-only credentials (its
/// vault URL is filled in by [`LocalStore::name_vault`]). Anything else as usual.
fn refused_or(path: &Path, e: io::Error, operation: RefusedOperation) -> StoreError {
    if rustix::io::Errno::from_io_error(&e) == Some(rustix::io::Errno::PERM) {
        let what = match operation {
            RefusedOperation::Delete => "deletes",
            _ => "overwrites",
        };
        return StoreError::OperationRefused {
            url: String::new(),
            path: path.display().to_string(),
            operation,
            detail: format!(
                "the vault folder does not allow {what}: it is append-only or immutable, \
                 chattr +a / +i; {e}"
            ),
        };
    }
    StoreError::from_write_io(&path.display().to_string(), e)
}

/// Publishes the staged file as `dest` only if `dest` does not exist, atomically.
///
/// A hard link fails with EEXIST if the name is taken, and the kernel decides that in one step.
/// File systems without hard links (FAT, exFAT) refuse with EPERM or EOPNOTSUPP; for them,
/// `renameat2(RENAME_NOREPLACE)` gives the same guarantee.
fn publish_exclusive(key: &str, staged: &mut Staged, dest: &Path) -> Result<(), StoreError> {
    let exists = || StoreError::AlreadyExists { path: key.into() };
    let link_err = match fs::hard_link(&staged.path, dest) {
        Ok(()) => return Ok(()), // dropping `staged` unlinks the temporary name
        // A directory of that name holds other objects; it is not an object to protect.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dest.is_dir() => {
            let msg = format!("{} is a directory holding other objects", dest.display());
            let e = io::Error::new(io::ErrorKind::IsADirectory, msg);
            return Err(StoreError::from_write_io(&dest.display().to_string(), e));
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(exists()),
        Err(e) => e,
    };
    use rustix::io::Errno;
    let unsupported = [Errno::PERM, Errno::OPNOTSUPP, Errno::NOSYS];
    if !Errno::from_io_error(&link_err).is_some_and(|e| unsupported.contains(&e)) {
        return Err(StoreError::from_write_io(
            &dest.display().to_string(),
            link_err,
        ));
    }
    match rename_noreplace(key, staged, dest) {
        Ok(()) => Ok(()),
        Err(e @ StoreError::AlreadyExists { .. }) => Err(e),
        // Neither primitive works here: report the link error, which is the more familiar one.
        Err(_) => Err(StoreError::from_write_io(
            &dest.display().to_string(),
            link_err,
        )),
    }
}

/// Renames the staged file to `dest` unless `dest` exists, in one step.
fn rename_noreplace(key: &str, staged: &mut Staged, dest: &Path) -> Result<(), StoreError> {
    let flags = rustix::fs::RenameFlags::NOREPLACE;
    match rustix::fs::renameat_with(rustix::fs::CWD, &staged.path, rustix::fs::CWD, dest, flags) {
        Ok(()) => {
            staged.keep = true;
            Ok(())
        }
        Err(rustix::io::Errno::EXIST) => Err(StoreError::AlreadyExists { path: key.into() }),
        Err(e) => Err(StoreError::from_write_io(
            &dest.display().to_string(),
            e.into(),
        )),
    }
}

/// Creates a new, uniquely named staging file in `dir` (O_EXCL, so never someone else's).
fn create_staged(dir: &Path) -> io::Result<(File, Staged)> {
    let mut attempts = 0;
    loop {
        let path = dir.join(format!("{TEMP_PREFIX}{:016x}", random_u64()));
        match File::options().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((file, Staged { path, keep: false })),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 8 => attempts += 1,
            Err(e) => return Err(e),
        }
    }
}

fn random_u64() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        // No OS randomness (should not happen on Linux): time and pid are unique enough,
        // and create_new retries on the rare collision anyway.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        nanos ^ (u64::from(std::process::id()) << 32)
    })
}

/// Creates `dir` and any missing ancestors, fsyncing each parent so the new entries survive a
/// crash (create_dir_all does not, and reports a file in the way as "already exists").
fn ensure_dir(dir: &Path) -> io::Result<()> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => {
            let msg = format!("{} exists but is not a directory", dir.display());
            return Err(io::Error::new(io::ErrorKind::NotADirectory, msg));
        }
        // ENOTDIR: a file further up is in the way; the walk up finds and names it.
        Err(e) if is_missing(&e) => {}
        Err(e) => return Err(e),
    }
    let parent = dir
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the root directory is missing"))?;
    ensure_dir(parent)?;
    match fs::create_dir(dir) {
        Ok(()) => fsync_dir(parent),
        // Another writer created it in the meantime.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn read_range(key: &str, path: &Path, range: Option<Range<u64>>) -> Result<Bytes, StoreError> {
    let shown = path.display().to_string();
    let read_err = |e| StoreError::from_read_io(key, &shown, e);
    let file = File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(StoreError::NotFound { path: key.into() });
    }
    let size = meta.len();
    let range = range.unwrap_or(0..size);
    if range.start > range.end || range.end > size {
        return Err(StoreError::InvalidRange {
            path: key.into(),
            start: range.start,
            end: range.end,
            size,
        });
    }
    let len = usize::try_from(range.end - range.start).map_err(|_| StoreError::Io {
        path: shown.clone(),
        source: io::Error::other("the requested range does not fit in memory"),
    })?;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, range.start)
        .map_err(read_err)?;
    Ok(Bytes::from(buf))
}

fn list_blocking(root: &Path, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
    let mut out = Vec::new();
    let mut pending = vec![(root.join(prefix), prefix.to_string())];
    while let Some((dir, dir_key)) = pending.pop() {
        let shown = dir.display().to_string();
        let list_err = |e| StoreError::from_write_io(&shown, e);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            // A missing prefix, or a prefix that is an object itself, lists nothing.
            Err(e) if is_missing(&e) => continue,
            Err(e) => return Err(list_err(e)),
        };
        for entry in entries {
            let entry = entry.map_err(list_err)?;
            let name = entry.file_name();
            // Staging files, and names that no key could produce, are not objects.
            let Some(name) = name.to_str().filter(|n| valid_segment(n)) else {
                continue;
            };
            let key = if dir_key.is_empty() {
                name.to_string()
            } else {
                format!("{dir_key}/{name}")
            };
            let kind = entry.file_type().map_err(list_err)?;
            if kind.is_dir() {
                pending.push((entry.path(), key));
            } else if kind.is_file() {
                match entry.metadata() {
                    Ok(meta) => out.push(ObjectMeta {
                        path: key,
                        size: meta.len(),
                    }),
                    Err(e) if is_missing(&e) => {} // deleted while listing
                    Err(e) => return Err(list_err(e)),
                }
            }
        }
    }
    Ok(out)
}

fn delete_blocking(file: &Path) -> Result<(), StoreError> {
    match fs::remove_file(file) {
        Ok(()) => {}
        Err(e) if is_missing(&e) => return Ok(()),
        // A directory is not an object, so there was nothing to delete.
        Err(_) if file.is_dir() => return Ok(()),
        Err(e) => return Err(refused_or(file, e, RefusedOperation::Delete)),
    }
    match file.parent() {
        Some(dir) => {
            fsync_dir(dir).map_err(|e| StoreError::from_write_io(&file.display().to_string(), e))
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fallback for file systems without hard links (FAT) is not reached on the test
    /// machine's file systems, so its primitive is exercised directly.
    #[test]
    fn rename_noreplace_publishes_once() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("obj");
        let (mut file, mut staged) = create_staged(dir.path()).unwrap();
        file.write_all(b"first").unwrap();
        rename_noreplace("obj", &mut staged, &dest).unwrap();
        drop(staged);
        assert_eq!(fs::read(&dest).unwrap(), b"first");

        let (mut file, mut staged) = create_staged(dir.path()).unwrap();
        file.write_all(b"second").unwrap();
        let err = rename_noreplace("obj", &mut staged, &dest).unwrap_err();
        assert!(err.is_already_exists(), "{err:?}");
        let staged_path = staged.path.clone();
        drop(staged);
        assert!(!staged_path.exists(), "a refused staging file is removed");
        assert_eq!(fs::read(&dest).unwrap(), b"first");
    }
}
