//! The FUSE operations of the mount: lookups, attributes, folder listings, symlinks and reads,
//! each answered from the engine's [`Browser`]. Operations run on fuser's worker threads and
//! wait on the command's tokio runtime for what the engine reads. Nothing here writes: the
//! mount is read-only, so the kernel refuses every change with EROFS before it reaches us,
//! and the few that could still arrive are refused the same way.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenAccMode, OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, WriteFlags,
};
use rbackup_engine::tree::{Node, NodeKind};
use rbackup_engine::{Browser, MAX_READ, RandomFile};

use super::inodes::{Inode, Kind, ROOT, Table};

/// How long the kernel may keep what it was told: nothing in a recovery point changes.
const TTL: Duration = Duration::from_secs(3600);

/// One recovery point as the mount shows it.
#[derive(Debug)]
pub struct Point {
    /// Its folder's name (`2026-12-02T10-31-05Z-1a2b3c4d`).
    pub name: OsString,
    /// When its backup started.
    pub time: SystemTime,
    /// Its root tree.
    pub tree: rbackup_engine::crypto::BlobId,
}

/// The mounted file system.
#[derive(Debug)]
pub struct Fs {
    browser: Browser,
    rt: tokio::runtime::Handle,
    points: Vec<Point>,
    table: Mutex<Table>,
    files: Mutex<HashMap<u64, Open>>,
    next_fh: AtomicU64,
    /// Owner of the top folder and the recovery point folders: whoever mounted.
    uid: u32,
    gid: u32,
}

/// An open file.
#[derive(Debug)]
struct Open {
    file: Arc<RandomFile>,
    /// `<point folder><path>`, for errors.
    shown: String,
}

/// A lock whose holder cannot leave its data half-written (every change is whole).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn time_of(ns: i64) -> SystemTime {
    let d = Duration::from_nanos(ns.unsigned_abs());
    let t = if ns < 0 {
        UNIX_EPOCH.checked_sub(d)
    } else {
        UNIX_EPOCH.checked_add(d)
    };
    t.unwrap_or(UNIX_EPOCH)
}

impl Fs {
    /// The file system of `points` (oldest first; the last is `latest`).
    pub fn new(browser: Browser, rt: tokio::runtime::Handle, points: Vec<Point>) -> Fs {
        let mut table = Table::new();
        let mut top: Vec<(OsString, Inode)> = points
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let inode = Inode {
                    parent: ROOT,
                    point: i,
                    kind: Kind::Point { tree: p.tree },
                    path: PathBuf::from("/"),
                    children: None,
                };
                (p.name.clone(), inode)
            })
            .collect();
        if let Some(last) = points.last() {
            let inode = Inode {
                parent: ROOT,
                point: points.len() - 1,
                kind: Kind::Latest {
                    target: last.name.clone(),
                },
                path: PathBuf::from("/"),
                children: None,
            };
            top.push(("latest".into(), inode));
        }
        top.sort_by(|a, b| a.0.cmp(&b.0));
        table.set_children(ROOT, top);
        Fs {
            browser,
            rt,
            points,
            table: Mutex::new(table),
            files: Mutex::default(),
            next_fh: AtomicU64::new(1),
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
        }
    }

    /// The folder name of recovery point `point`, as logs name it.
    fn point_name(&self, point: usize) -> String {
        self.points
            .get(point)
            .map_or_else(String::new, |p| p.name.to_string_lossy().into_owned())
    }

    /// `<point folder><path>` of an inode, as logs name it.
    fn shown(&self, inode: &Inode) -> String {
        format!("{}{}", self.point_name(inode.point), inode.path.display())
    }

    fn attr(&self, ino: u64, inode: &Inode) -> FileAttr {
        let point_time = self.points.get(inode.point).map(|p| p.time);
        let (kind, perm, size, uid, gid, mtime) = match &inode.kind {
            Kind::Root => {
                let newest = self.points.last().map(|p| p.time);
                (FileType::Directory, 0o555, 0, self.uid, self.gid, newest)
            }
            Kind::Point { .. } => (
                FileType::Directory,
                0o555,
                0,
                self.uid,
                self.gid,
                point_time,
            ),
            Kind::Latest { target } => (
                FileType::Symlink,
                0o777,
                target.len() as u64,
                self.uid,
                self.gid,
                point_time,
            ),
            Kind::Node(n) => {
                let kind = file_type(&inode.kind);
                let size = match n.kind {
                    NodeKind::File => n.size,
                    NodeKind::Symlink => n.target.as_ref().map_or(0, |t| t.len() as u64),
                    NodeKind::Dir => 0,
                };
                let perm = (n.mode & 0o7777) as u16;
                (kind, perm, size, n.uid, n.gid, Some(time_of(n.mtime_ns)))
            }
        };
        let mtime = mtime.unwrap_or(UNIX_EPOCH);
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: blocks(inode, size),
            atime: mtime,
            mtime,
            ctime: mtime,
            crtime: mtime,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid,
            gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// Lists folder `ino` unless it is listed already.
    fn list(&self, ino: u64) -> Result<(), Errno> {
        let (tree, path, point, shown) = {
            let t = lock(&self.table);
            let inode = t.get(ino).ok_or(Errno::ENOENT)?;
            if inode.children.is_some() {
                return Ok(());
            }
            let tree = match &inode.kind {
                Kind::Point { tree } => *tree,
                Kind::Node(n) if n.kind == NodeKind::Dir => {
                    let ancestors = t.ancestor_trees(ino);
                    self.browser
                        .subtree(&inode.path, n, &ancestors)
                        .map_err(|e| {
                            tracing::error!("{}: not shown: {e}", self.shown(inode));
                            Errno::EIO
                        })?
                }
                _ => return Err(Errno::ENOTDIR),
            };
            (tree, inode.path.clone(), inode.point, self.shown(inode))
        };
        let listing = self
            .rt
            .block_on(self.browser.list(&path, &tree))
            .map_err(|e| {
                tracing::error!("{shown}: cannot list the folder: {e}");
                Errno::EIO
            })?;
        let point_name = self.point_name(point);
        for r in &listing.refused {
            tracing::error!("{point_name}{r}");
        }
        let entries = listing
            .entries
            .into_iter()
            .map(|node| {
                let name = OsStr::from_bytes(&node.name).to_os_string();
                let inode = Inode {
                    parent: ino,
                    point,
                    path: path.join(&name),
                    kind: Kind::Node(Box::new(node)),
                    children: None,
                };
                (name, inode)
            })
            .collect();
        lock(&self.table).set_children(ino, entries);
        Ok(())
    }

    fn lookup_inner(&self, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        self.list(parent)?;
        let t = lock(&self.table);
        let dir = t.get(parent).ok_or(Errno::ENOENT)?;
        let ino = dir.child(name).ok_or(Errno::ENOENT)?;
        let inode = t.get(ino).ok_or(Errno::ENOENT)?;
        Ok(self.attr(ino, inode))
    }

    fn open_inner(&self, ino: u64, flags: OpenFlags) -> Result<u64, Errno> {
        if flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
            return Err(Errno::EROFS);
        }
        let (file, shown) = {
            let t = lock(&self.table);
            let inode = t.get(ino).ok_or(Errno::ENOENT)?;
            let node: &Node = match &inode.kind {
                Kind::Node(n) if n.kind == NodeKind::File => n,
                Kind::Node(n) if n.kind == NodeKind::Symlink => return Err(Errno::ELOOP),
                _ => return Err(Errno::EISDIR),
            };
            let shown = self.shown(inode);
            let file = self.browser.open(&inode.path, node).map_err(|e| {
                tracing::error!("{shown}: cannot open: {e}");
                Errno::EIO
            })?;
            (file, shown)
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let open = Open {
            file: Arc::new(file),
            shown,
        };
        lock(&self.files).insert(fh, open);
        Ok(fh)
    }
}

/// What the kernel is told an inode is.
fn file_type(kind: &Kind) -> FileType {
    match kind {
        Kind::Root | Kind::Point { .. } => FileType::Directory,
        Kind::Latest { .. } => FileType::Symlink,
        Kind::Node(n) => match n.kind {
            NodeKind::File => FileType::RegularFile,
            NodeKind::Dir => FileType::Directory,
            NodeKind::Symlink => FileType::Symlink,
        },
    }
}

/// Blocks of 512 bytes a file takes: its data segments' length for a sparse file.
fn blocks(inode: &Inode, size: u64) -> u64 {
    match &inode.kind {
        Kind::Node(n) if n.class.as_deref() == Some("sparse") => n
            .segments
            .iter()
            .fold(0u64, |a, s| a.saturating_add(s.1))
            .min(size)
            .div_ceil(512),
        _ => size.div_ceil(512),
    }
}

impl Filesystem for Fs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.lookup_inner(parent.0, name) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let t = lock(&self.table);
        match t.get(ino.0) {
            Some(inode) => reply.attr(&TTL, &self.attr(ino.0, inode)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let t = lock(&self.table);
        match t.get(ino.0).map(|i| &i.kind) {
            Some(Kind::Latest { target }) => reply.data(target.as_bytes()),
            Some(Kind::Node(n)) if n.kind == NodeKind::Symlink => match &n.target {
                Some(target) => reply.data(target),
                None => reply.error(Errno::EIO),
            },
            Some(_) => reply.error(Errno::EINVAL),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.open_inner(ino.0, flags) {
            // The content never changes: the kernel may keep its pages across opens.
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let open = lock(&self.files)
            .get(&fh.0)
            .map(|o| (o.file.clone(), o.shown.clone()));
        let Some((file, shown)) = open else {
            return reply.error(Errno::EBADF);
        };
        let len = (size as usize).min(MAX_READ);
        match self.rt.block_on(self.browser.read_at(&file, offset, len)) {
            Ok(data) => reply.data(&data),
            Err(e) => {
                tracing::error!("{shown}: read of {len} bytes at {offset}: {e}");
                reply.error(Errno::EIO);
            }
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        lock(&self.files).remove(&fh.0);
        reply.ok();
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    /// No extended attributes are shown (a tree does not record them).
    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::NO_XATTR);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }

    /// SEEK_DATA and SEEK_HOLE are left to the kernel, which then takes the whole file for
    /// data (holes still read as zeros); the other seeks never reach a file system.
    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: i64,
        _whence: i32,
        reply: ReplyLseek,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.list(ino.0) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if let Err(e) = self.list(ino.0) {
            return reply.error(e);
        }
        let t = lock(&self.table);
        let Some(dir) = t.get(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let mut entries = vec![
            (ino.0, FileType::Directory, OsStr::new(".")),
            (dir.parent, FileType::Directory, OsStr::new("..")),
        ];
        for (name, child) in dir.children.iter().flatten() {
            let kind = t
                .get(*child)
                .map_or(FileType::RegularFile, |c| file_type(&c.kind));
            entries.push((*child, kind, name.as_os_str()));
        }
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, (child, kind, name)) in entries.into_iter().enumerate().skip(skip) {
            if reply.add(INodeNo(child), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }
}
