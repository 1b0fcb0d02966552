//! The mount's inodes: the top folder, one folder per recovery point, `latest`, and the
//! entries of the recovery points, numbered as they are first listed. An inode is kept for the
//! mount's life (the kernel's `forget` is not acted on), so the table holds the metadata of the
//! folders looked at, as `find` holds the trees it walked; a file's content is never kept here.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use rbackup_engine::crypto::BlobId;
use rbackup_engine::tree::Node;

/// The top folder's inode number (FUSE's root).
pub const ROOT: u64 = 1;

/// What an inode is.
#[derive(Debug)]
pub enum Kind {
    /// The top folder: the recovery point folders and `latest`.
    Root,
    /// `latest`: a symlink to the newest recovery point's folder.
    Latest { target: OsString },
    /// A recovery point's folder (its `/`).
    Point { tree: BlobId },
    /// An entry of a recovery point.
    Node(Box<Node>),
}

/// One inode.
#[derive(Debug)]
pub struct Inode {
    pub parent: u64,
    /// The recovery point it belongs to (an index into the mount's points; 0 for the top).
    pub point: usize,
    pub kind: Kind,
    /// Its absolute path within its recovery point (`/` for a point's folder): what errors
    /// and refusals name.
    pub path: PathBuf,
    /// A folder's entries once listed, sorted by name (the tree's order).
    pub children: Option<Vec<(OsString, u64)>>,
}

impl Inode {
    /// The entry `name` of a listed folder.
    pub fn child(&self, name: &OsStr) -> Option<u64> {
        let c = self.children.as_ref()?;
        c.binary_search_by(|(n, _)| n.as_os_str().cmp(name))
            .ok()
            .map(|i| c[i].1)
    }
}

/// Every inode so far, numbered from [`ROOT`].
#[derive(Debug, Default)]
pub struct Table {
    inodes: Vec<Inode>,
}

impl Table {
    /// A table holding the top folder alone.
    pub fn new() -> Table {
        let mut t = Table::default();
        t.inodes.push(Inode {
            parent: ROOT,
            point: 0,
            kind: Kind::Root,
            path: PathBuf::from("/"),
            children: None,
        });
        t
    }

    pub fn get(&self, ino: u64) -> Option<&Inode> {
        let i = usize::try_from(ino.checked_sub(1)?).ok()?;
        self.inodes.get(i)
    }

    fn get_mut(&mut self, ino: u64) -> Option<&mut Inode> {
        let i = usize::try_from(ino.checked_sub(1)?).ok()?;
        self.inodes.get_mut(i)
    }

    /// Adds an inode; its number.
    pub fn add(&mut self, inode: Inode) -> u64 {
        self.inodes.push(inode);
        self.inodes.len() as u64
    }

    /// Records the entries of folder `ino` (sorted by name) unless another reader did first.
    pub fn set_children(&mut self, ino: u64, entries: Vec<(OsString, Inode)>) {
        if self.get(ino).is_none_or(|i| i.children.is_some()) {
            return;
        }
        let children = entries
            .into_iter()
            .map(|(name, inode)| (name, self.add(inode)))
            .collect();
        if let Some(dir) = self.get_mut(ino) {
            dir.children = Some(children);
        }
    }

    /// The trees of the folders from folder `ino`'s recovery point's top down to `ino`'s
    /// parent: what a tree must not be to be entered below them.
    pub fn ancestor_trees(&self, ino: u64) -> Vec<BlobId> {
        let mut out = Vec::new();
        let mut at = self.get(ino).map(|i| i.parent);
        while let Some(p) = at.and_then(|p| self.get(p)) {
            match &p.kind {
                Kind::Point { tree } => {
                    out.push(*tree);
                    break;
                }
                Kind::Node(n) => out.extend(n.subtree),
                Kind::Root | Kind::Latest { .. } => break,
            }
            at = Some(p.parent);
        }
        out.reverse();
        out
    }
}
