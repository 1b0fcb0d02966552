//! Symlinks and hard links under [`LinkMode::Store`](crate::LinkMode::Store).
//!
//! A symlink is stored as a node of its own kind holding the target bytes (read with
//! `readlinkat` beneath the open parent, never followed). Its target is read again on every
//! run — it is one system call — so a changed target is always what the new recovery point
//! holds.
//!
//! A file with more than one link is read once per run: the first link met is backed up as a
//! file and remembered by `(device, inode)`; every later link to the same inode gets the same
//! content list without being read, and all of them carry one `link_group` number, which
//! restore uses to link them together again.

use std::collections::HashMap;
use std::io;
use std::path::Path;

use rbackup_crypto::BlobId;
use rustix::fd::BorrowedFd;
use serde_bytes::ByteBuf;

use super::open;
use super::walk::{Walker, base_node};
use crate::classify::Probe;
use crate::filescache::Stamp;
use crate::tree::{MAX_SYMLINK_TARGET, Node, NodeKind};

/// The hard-linked files seen so far in this run.
#[derive(Debug, Default)]
pub(crate) struct HardLinks {
    seen: HashMap<(u32, u32, u64), Seen>,
    next_group: u64,
}

/// The first link of an inode: what later links reuse, if the inode has not changed since.
#[derive(Debug)]
struct Seen {
    group: u64,
    size: u64,
    mtime_ns: i64,
    /// The ctime its content was read at; `None` when the read was not stable (then later
    /// links are read too).
    ctime_ns: Option<i64>,
    content: Vec<BlobId>,
    segments: Vec<(u64, u64)>,
    class: Option<String>,
}

impl HardLinks {
    /// The node for a further link `name` to an inode already backed up in this run, if the
    /// inode is as it was then (else it is read again, and the restore compares contents).
    pub(crate) fn further_link(&self, name: &[u8], probe: &Probe) -> Option<(Node, Option<Stamp>)> {
        let s = self.seen.get(&(probe.dev.0, probe.dev.1, probe.ino))?;
        let now = (probe.size, probe.mtime_ns, Some(probe.ctime_ns));
        if (s.size, s.mtime_ns, s.ctime_ns) != now {
            return None;
        }
        let mut node = base_node(name, probe, NodeKind::File);
        node.content = s.content.clone();
        node.segments = s.segments.clone();
        node.class = s.class.clone();
        node.link_group = Some(s.group);
        let stamp = Stamp {
            ino: probe.ino,
            ctime_ns: probe.ctime_ns,
        };
        Some((node, Some(stamp)))
    }

    /// Remembers the file `node` (the inode of `probe`) and gives it its group number.
    pub(crate) fn first_link(&mut self, probe: &Probe, node: &mut Node, stamp: Option<Stamp>) {
        let key = (probe.dev.0, probe.dev.1, probe.ino);
        let group = match self.seen.get(&key) {
            Some(s) => s.group,
            None => {
                self.next_group += 1;
                self.next_group
            }
        };
        node.link_group = Some(group);
        let seen = Seen {
            group,
            size: node.size,
            mtime_ns: node.mtime_ns,
            ctime_ns: stamp.map(|s| s.ctime_ns),
            content: node.content.clone(),
            segments: node.segments.clone(),
            class: node.class.clone(),
        };
        self.seen.insert(key, seen);
    }
}

impl Walker<'_> {
    /// The symlink `name` of the open directory `at`, as a node (`None`: reported as not
    /// backed up). Progress is not told: its file count is of regular files, as the prescan's.
    pub(super) fn symlink(
        &mut self,
        at: BorrowedFd<'_>,
        path: &Path,
        name: &[u8],
        probe: &Probe,
    ) -> Option<Node> {
        let target = match rustix::fs::readlinkat(at, open::os(name), Vec::new()) {
            Ok(t) => t.into_bytes(),
            Err(rustix::io::Errno::NOENT) => {
                self.fail(path, "vanished during the backup");
                return None;
            }
            // Not a symlink any more: it was replaced since it was classified.
            Err(rustix::io::Errno::INVAL) => {
                self.fail(path, "changed during the backup: no longer a symbolic link");
                return None;
            }
            Err(e) => {
                self.fail(path, format!("cannot read link: {}", io::Error::from(e)));
                return None;
            }
        };
        if target.len() > MAX_SYMLINK_TARGET {
            let why = format!("symbolic link target longer than {MAX_SYMLINK_TARGET} bytes");
            self.fail(path, why);
            return None;
        }
        let mut node = base_node(name, probe, NodeKind::Symlink);
        node.target = Some(ByteBuf::from(target));
        self.report.symlinks += 1;
        Some(node)
    }
}
