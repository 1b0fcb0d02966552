//! The sequential half of the backup pipeline: walk the sources in name order, decide per entry
//! (file-type rules, unchanged-file shortcut), read and chunk what must be read, hash each chunk
//! and hand only blobs the vault lacks to the workers, and build a tree blob per directory.
//!
//! Chunking and keyed BLAKE3 run here, on one thread, because both are several times faster
//! than zstd and knowing every id in order keeps file content lists trivial; the expensive
//! steps (compress, seal, write) run on the worker pool.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::Sender;
use rbackup_chunker::Chunker;
use rbackup_crypto::BlobId;
use rustix::fd::{AsFd, BorrowedFd};
use serde_bytes::ByteBuf;
use tokio::runtime::Handle;

use super::excludes::Excludes;
use super::links::HardLinks;
use super::open::{self, OpenError};
use super::packer::BlobJob;
use super::{BeforeOpen, Cancel};
use crate::classify::{self, Decision, FileClass, LinkMode, Probe};
use crate::error::{EngineError, InternalFailure, Result};
use crate::filescache::{Generation, GenerationWriter, Stamp};
use crate::index::Index;
use crate::pack::BlobKind;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::report::{BackupReport, Skipped};
use crate::tree::{Node, NodeKind, Tree};

/// A file whose stat changes while we read it is read again this many times at most.
const READ_ATTEMPTS: usize = 3;

/// The sources as a trie of path components from `/`.
#[derive(Debug, Default)]
pub(crate) struct SourceTrie {
    source: bool,
    children: BTreeMap<Vec<u8>, SourceTrie>,
}

impl SourceTrie {
    pub(crate) fn new(paths: &[PathBuf]) -> SourceTrie {
        let mut root = SourceTrie::default();
        for p in paths {
            let mut node = &mut root;
            for c in p.components().skip(1) {
                node = node
                    .children
                    .entry(c.as_os_str().as_bytes().to_vec())
                    .or_default();
            }
            node.source = true;
        }
        root
    }
}

pub(crate) struct Walker<'a> {
    pub repo: &'a Repository,
    pub handle: Handle,
    pub index: &'a Index,
    pub chunker: Chunker,
    pub tx: Sender<BlobJob>,
    pub excludes: Excludes,
    pub progress: Arc<dyn Progress>,
    pub report: BackupReport,
    pub sent: super::sent::Sent,
    pub root_dev: Option<(u32, u32)>,
    pub before_open: Option<BeforeOpen>,
    pub cancel: Cancel,
    pub links: LinkMode,
    pub hard_links: HardLinks,
    /// The parent recovery point's files cache generation, if it is there.
    pub prior: Option<Generation>,
    /// This run's generation, written as trees are stored.
    pub next: Option<GenerationWriter>,
}

/// The parent's listing of a directory, with the files-cache stamps of its nodes (`None`: no
/// sound record, so no node of it can be reused without reading, unless the tree is an old one
/// that carries its own stamps).
pub(crate) struct Prior {
    tree: Tree,
    stamps: Option<Vec<Option<Stamp>>>,
}

/// A parent's node and its files-cache stamp.
type PriorNode<'a> = (&'a Node, Option<Stamp>);

impl Prior {
    fn node(&self, name: &[u8]) -> Option<PriorNode<'_>> {
        let i = self.tree.position(name)?;
        let stamp = self.stamps.as_ref().and_then(|s| s[i]);
        Some((&self.tree.nodes[i], stamp))
    }
}

/// A walked entry: its node, and the stamp to record for it (files whose content was
/// read or reused from a verified parent).
type Walked = (Node, Option<Stamp>);

/// The workers went away: the real error is theirs.
pub(crate) fn aborted() -> EngineError {
    EngineError::internal("backup walk", InternalFailure::StageStopped)
}

impl Walker<'_> {
    /// Builds the root tree for all sources and returns its id.
    pub(crate) fn run(
        &mut self,
        trie: &SourceTrie,
        parent_root: Option<(BlobId, Tree)>,
    ) -> Result<BlobId> {
        let root = Path::new("/");
        let prior = parent_root.map(|(id, tree)| self.prior(root, &id, tree));
        let (tree, stamps) = self.virtual_dir(root, trie, prior.as_ref())?;
        self.store_tree(root, &tree, &stamps)
    }

    /// The parent's tree `tree` (blob `id`) of the directory `path`, with its stamps.
    fn prior(&self, path: &Path, id: &BlobId, tree: Tree) -> Prior {
        let stamps = self
            .prior
            .as_ref()
            .and_then(|g| g.lookup(path, id, tree.nodes.len()));
        Prior { tree, stamps }
    }

    fn virtual_dir(
        &mut self,
        real: &Path,
        trie: &SourceTrie,
        parent: Option<&Prior>,
    ) -> Result<(Tree, Vec<Option<Stamp>>)> {
        let mut nodes = Vec::new();
        let mut stamps = Vec::new();
        let source_error = |path: &Path, source| EngineError::Source {
            path: path.to_path_buf(),
            source,
        };
        let at = open::open_path(real).map_err(|e| source_error(real, e))?;
        for (name, child) in &trie.children {
            let path = real.join(OsStr::from_bytes(name));
            let parent_node = parent.and_then(|t| t.node(name));
            let probe = classify::probe_at(at.as_fd(), open::os(name), None)
                .map_err(|e| source_error(&path, e))?;
            if child.source {
                self.root_dev = Some(probe.dev);
                if let Some((n, s)) = self.entry(at.as_fd(), &path, name, probe, parent_node)? {
                    nodes.push(n);
                    stamps.push(s);
                }
            } else {
                let sub_parent = self.parent_subtree(&path, parent_node.map(|p| p.0))?;
                let (tree, sub_stamps) = self.virtual_dir(&path, child, sub_parent.as_ref())?;
                let mut node = base_node(name, &probe, NodeKind::Dir);
                node.subtree = Some(self.store_tree(&path, &tree, &sub_stamps)?);
                self.report.dirs += 1;
                nodes.push(node);
                stamps.push(None);
            }
        }
        Ok((Tree { nodes }, stamps))
    }

    /// The parent's listing of the directory `path`, whose parent node is `node`.
    fn parent_subtree(&self, path: &Path, node: Option<&Node>) -> Result<Option<Prior>> {
        match node.and_then(|n| n.subtree) {
            Some(id) if self.index.contains(&id) => {
                let tree = self.handle.block_on(self.repo.load_tree(self.index, &id))?;
                Ok(Some(self.prior(path, &id, tree)))
            }
            _ => Ok(None),
        }
    }

    /// Reports `path` as a file that should have been backed up and was not.
    pub(super) fn fail(&mut self, path: &Path, reason: impl Into<String>) {
        let skipped = Skipped::error(path.display().to_string(), reason);
        self.report.skipped.push(skipped);
    }

    /// One classified entry `name` of the open directory `at`; `path` names it in reports.
    fn entry(
        &mut self,
        at: BorrowedFd<'_>,
        path: &Path,
        name: &[u8],
        probe: Probe,
        parent: Option<PriorNode<'_>>,
    ) -> Result<Option<Walked>> {
        match classify::classify_with(&probe.attrs, self.links) {
            Decision::Skip(rule) => {
                let skipped = Skipped::by_rule(path.display().to_string(), rule);
                self.report.skipped.push(skipped);
                Ok(None)
            }
            Decision::Symlink => Ok(self.symlink(at, path, name, &probe).map(|n| (n, None))),
            Decision::Dir => {
                let dir_node = parent.map(|p| p.0).filter(|n| n.kind == NodeKind::Dir);
                let sub_parent = self.parent_subtree(path, dir_node)?;
                let here = (at, path, name);
                let Some(subtree) = self.dir(here, &probe, sub_parent.as_ref())? else {
                    return Ok(None);
                };
                let mut node = base_node(name, &probe, NodeKind::Dir);
                node.subtree = Some(subtree);
                self.report.dirs += 1;
                Ok(Some((node, None)))
            }
            Decision::File(class) if self.links == LinkMode::Store && probe.attrs.nlink > 1 => {
                if let Some(walked) = self.hard_links.further_link(name, &probe) {
                    self.report.hard_links += 1;
                    self.progress.file(path);
                    self.progress.bytes(probe.size);
                    self.progress.file_done();
                    return Ok(Some(walked));
                }
                let mut walked = self.file((at, path, name), probe, class, parent)?;
                if let Some((n, stamp)) = &mut walked {
                    self.hard_links.first_link(&probe, n, *stamp);
                }
                Ok(walked)
            }
            Decision::File(class) => self.file((at, path, name), probe, class, parent),
        }
    }

    /// Calls the test hook: the moment between classifying `path` and opening it.
    fn before_open(&self, path: &Path) {
        if let Some(hook) = &self.before_open {
            hook(path);
        }
    }

    fn dir(
        &mut self,
        here: Here<'_>,
        probe: &Probe,
        parent: Option<&Prior>,
    ) -> Result<Option<BlobId>> {
        let (at, path, name) = here;
        self.before_open(path);
        let listed = match open::open_dir(at, open::os(name), probe) {
            Ok(fd) => open::list(&fd)
                .map(|names| (fd, names))
                .map_err(OpenError::Io),
            Err(e) => Err(e),
        };
        let (fd, names) = match listed {
            Ok(l) => l,
            Err(OpenError::Changed(reason)) => {
                self.fail(path, reason);
                return Ok(None);
            }
            Err(OpenError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                self.fail(path, "vanished during the backup");
                return Ok(None);
            }
            Err(OpenError::Io(e)) => {
                self.fail(path, format!("cannot read directory: {e}"));
                return Ok(None);
            }
        };
        let mut nodes = Vec::with_capacity(names.len());
        let mut stamps = Vec::with_capacity(names.len());
        for name in names {
            let child = path.join(open::os(&name));
            if self.excludes.is_excluded(&child) {
                continue;
            }
            let probe = match classify::probe_at(fd.as_fd(), open::os(&name), self.root_dev) {
                Ok(p) => p,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.fail(&child, "vanished during the backup");
                    continue;
                }
                Err(e) => {
                    self.fail(&child, format!("cannot read attributes: {e}"));
                    continue;
                }
            };
            let parent_node = parent.and_then(|t| t.node(&name));
            if let Some((n, s)) = self.entry(fd.as_fd(), &child, &name, probe, parent_node)? {
                nodes.push(n);
                stamps.push(s);
            }
        }
        self.store_tree(path, &Tree { nodes }, &stamps).map(Some)
    }

    /// Stores the listing of the directory `path`, and records the stamps of its nodes (in
    /// the same order) in this run's files cache.
    fn store_tree(&mut self, path: &Path, tree: &Tree, stamps: &[Option<Stamp>]) -> Result<BlobId> {
        let bytes = tree.encode();
        let max = crate::layout::MAX_BLOB_BYTES;
        if bytes.len() as u64 > max {
            return Err(EngineError::DirectoryTooLarge {
                path: path.to_path_buf(),
                bytes: bytes.len() as u64,
                max,
            });
        }
        let id = self.repo.keys.blob_id(&bytes);
        self.submit(BlobKind::Tree, id, bytes)?;
        if let Some(w) = &mut self.next {
            w.add(path, &id, stamps);
        }
        Ok(id)
    }

    fn submit(&mut self, kind: BlobKind, id: BlobId, data: Vec<u8>) -> Result<()> {
        // Stopping here, between blobs, leaves the workers only what they already hold.
        if self.cancel.is_cancelled() {
            return Err(aborted());
        }
        if !self.index.contains(&id) && self.sent.insert(id) {
            self.report.blobs_new += 1;
            self.tx
                .send(BlobJob { kind, id, data })
                .map_err(|_| aborted())?;
        }
        Ok(())
    }

    fn known(&self, id: &BlobId) -> bool {
        self.index.contains(id) || self.sent.contains(id)
    }

    fn file(
        &mut self,
        here: Here<'_>,
        mut probe: Probe,
        class: FileClass,
        parent: Option<PriorNode<'_>>,
    ) -> Result<Option<Walked>> {
        let (at, path, name) = here;
        if self.cancel.is_cancelled() {
            return Err(aborted());
        }
        self.progress.file(path);
        let now = Stamp {
            ino: probe.ino,
            ctime_ns: probe.ctime_ns,
        };
        // Size and mtime from the tree, inode and ctime from the files cache (or from an old
        // tree that still carries them): a content change moves the ctime even when the mtime
        // is put back, so all four together mean the content is the one the parent read.
        let attested = |p: &Node, stamp: Option<Stamp>| {
            stamp == Some(now)
                || (p.legacy_ino, p.legacy_ctime_ns) == (Some(now.ino), Some(now.ctime_ns))
        };
        let reusable = parent.filter(|&(p, stamp)| {
            class != FileClass::Encrypted
                && p.kind == NodeKind::File
                && p.size == probe.size
                && p.mtime_ns == probe.mtime_ns
                && attested(p, stamp)
                && p.content.iter().all(|id| self.known(id))
        });
        let mut node = base_node(name, &probe, NodeKind::File);
        node.class = class.label().map(str::to_string);
        if let Some((p, _)) = reusable {
            node.content = p.content.clone();
            node.segments = p.segments.clone();
            self.report.files_unchanged += 1;
            self.progress.bytes(probe.size);
            self.progress.file_done();
            return Ok(Some((node, Some(now))));
        }
        let mut stamp = None;
        for attempt in 1..=READ_ATTEMPTS {
            self.before_open(path);
            let outcome = match self.read_file(at, name, &probe, class) {
                Ok(o) => o,
                Err(ReadError::Aborted) => return Err(aborted()),
                Err(ReadError::Changed(reason)) => {
                    self.fail(path, reason);
                    return Ok(None);
                }
                Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                    self.fail(path, "vanished during the backup");
                    return Ok(None);
                }
                Err(ReadError::Io(e)) => {
                    self.fail(path, format!("cannot read: {e}"));
                    return Ok(None);
                }
            };
            let (content, segments, after) = outcome;
            let stable = after.size == probe.size
                && after.mtime_ns == probe.mtime_ns
                && after.ctime_ns == probe.ctime_ns;
            if stable || attempt == READ_ATTEMPTS {
                if !stable {
                    self.report.warnings.push(format!(
                        "{} changed while it was read ({READ_ATTEMPTS} attempts); the last read was stored and may be inconsistent",
                        path.display()
                    ));
                }
                node = base_node(name, &after, NodeKind::File);
                node.class = class.label().map(str::to_string);
                node.content = content;
                node.segments = segments;
                // Only a read the file did not change under vouches for its content.
                stamp = stable.then_some(Stamp {
                    ino: after.ino,
                    ctime_ns: after.ctime_ns,
                });
                break;
            }
            probe = after;
        }
        if parent.is_some() {
            self.report.files_changed += 1;
        } else {
            self.report.files_new += 1;
        }
        self.progress.file_done();
        Ok(Some((node, stamp)))
    }

    /// Reads and chunks the file `name` of the open directory `at`, if it is still the file
    /// `probe` classified; returns its content ids, its data segments (sparse files) and its
    /// attributes after reading, for change detection.
    fn read_file(
        &mut self,
        at: BorrowedFd<'_>,
        name: &[u8],
        probe: &Probe,
        class: FileClass,
    ) -> Result<FileRead, ReadError> {
        let mut file = open::open_file(at, open::os(name), probe)?;
        let mut content = Vec::new();
        // For a sparse file the segments are authoritative (none at all = one big hole).
        let segments = if class == FileClass::Sparse {
            let segments = data_segments(&file, probe.size)?;
            for &(offset, len) in &segments {
                file.seek(SeekFrom::Start(offset))?;
                self.chunk_into(&mut file, len, len, &mut content)?;
            }
            segments
        } else {
            self.chunk_into(&mut file, u64::MAX, probe.size, &mut content)?;
            Vec::new()
        };
        let m = file.metadata()?;
        let mut after = *probe;
        after.size = m.size();
        after.mtime_ns = m.mtime() * 1_000_000_000 + m.mtime_nsec();
        after.ctime_ns = m.ctime() * 1_000_000_000 + m.ctime_nsec();
        after.mode = m.mode();
        after.uid = m.uid();
        after.gid = m.gid();
        Ok((content, segments, after))
    }

    fn chunk_into(
        &mut self,
        file: &mut File,
        limit: u64,
        expected: u64,
        content: &mut Vec<BlobId>,
    ) -> Result<(), ReadError> {
        let chunker = self.chunker.clone();
        for chunk in chunker.stream_sized(file.take(limit), expected) {
            let chunk = chunk?;
            let n = chunk.len() as u64;
            let id = self.repo.keys.blob_id(&chunk);
            content.push(id);
            self.report.bytes_read += n;
            self.submit(BlobKind::Data, id, chunk)
                .map_err(|_| ReadError::Aborted)?;
            self.progress.bytes(n);
        }
        Ok(())
    }
}

type FileRead = (Vec<BlobId>, Vec<(u64, u64)>, Probe);

/// An entry being walked: its open parent directory, its path (for reports and excludes) and
/// its name in the parent.
type Here<'a> = (BorrowedFd<'a>, &'a Path, &'a [u8]);

enum ReadError {
    Io(io::Error),
    /// Not the file classified: the reason it was skipped.
    Changed(String),
    Aborted,
}

impl From<OpenError> for ReadError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Changed(reason) => ReadError::Changed(reason),
            OpenError::Io(e) => ReadError::Io(e),
        }
    }
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// The data segments of a sparse file, from SEEK_DATA / SEEK_HOLE.
pub(crate) fn data_segments(file: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    use rustix::fs::{SeekFrom as RSeek, seek};
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let start = match seek(file, RSeek::Data(pos)) {
            Ok(s) => s,
            Err(rustix::io::Errno::NXIO) => break, // only a hole remains
            Err(e) => return Err(e.into()),
        };
        let end = seek(file, RSeek::Hole(start))?.min(size);
        if end > start {
            out.push((start, end - start));
        }
        pos = end;
    }
    Ok(out)
}

pub(crate) fn base_node(name: &[u8], p: &Probe, kind: NodeKind) -> Node {
    Node {
        name: ByteBuf::from(name.to_vec()),
        kind,
        mode: p.mode,
        uid: p.uid,
        gid: p.gid,
        mtime_ns: p.mtime_ns,
        legacy_ctime_ns: None,
        legacy_ino: None,
        size: if kind == NodeKind::File { p.size } else { 0 },
        content: Vec::new(),
        segments: Vec::new(),
        subtree: None,
        class: None,
        target: None,
        link_group: None,
    }
}
