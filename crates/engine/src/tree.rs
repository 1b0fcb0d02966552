//! Tree blobs: one per directory, listing its entries with their metadata.
//!
//! A recovery point's root tree mirrors the file system from `/`: a source `/home/a/x` is found
//! at `home` → `a` → `x`, which is what lets restore recreate it at `TARGET/home/a/x` and lets
//! the next backup find the parent's node for any path by walking the same names.

use rbackup_crypto::BlobId;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::codec;
use crate::error::Result;

/// What a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link ([`crate::LinkMode::Store`]): its target is [`Node::target`].
    Symlink,
}

/// The longest symlink target stored or restored: Linux's `PATH_MAX` less its NUL.
pub const MAX_SYMLINK_TARGET: usize = 4095;

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// File name as raw bytes (Linux names need not be UTF-8).
    pub name: ByteBuf,
    /// File or directory.
    pub kind: NodeKind,
    /// Permission bits and file type bits (`st_mode`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Inode and status change time, only in trees written before they moved to the local files
    /// cache (`filescache.rs`): read so that such a tree still serves as a parent, never written
    /// (they differ on every copy of a file, so identical directories gave different trees).
    #[serde(default, rename = "ctime_ns", skip_serializing)]
    pub legacy_ctime_ns: Option<i64>,
    /// See [`Node::legacy_ctime_ns`].
    #[serde(default, rename = "ino", skip_serializing)]
    pub legacy_ino: Option<u64>,
    /// Logical size in bytes (files).
    pub size: u64,
    /// Content blobs in order (files).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<BlobId>,
    /// Data segments `(offset, length)` of a sparse file; the content blobs fill them in order
    /// and everything else is a hole. Empty for ordinary files, whose single segment is the
    /// whole file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<(u64, u64)>,
    /// The tree blob of a directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<BlobId>,
    /// File-type rule that applied (e.g. "encrypted", "compressed", "sparse").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// A symlink's target, as raw bytes (at most [`MAX_SYMLINK_TARGET`]; a restore refuses a
    /// longer one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<ByteBuf>,
    /// Files with the same number here were links to one file when backed up
    /// ([`crate::LinkMode::Store`]); numbers mean something only within one recovery point.
    /// Each such node still lists its own content, so a reader that ignores the group sees an
    /// ordinary file; a restore links the later ones to the first one it restores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_group: Option<u64>,
}

impl Node {
    /// The name as a path component.
    pub fn name_os(&self) -> &std::ffi::OsStr {
        use std::os::unix::ffi::OsStrExt;
        std::ffi::OsStr::from_bytes(&self.name)
    }
}

/// A directory listing, sorted by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    /// Entries sorted by `name`.
    pub nodes: Vec<Node>,
}

impl Tree {
    /// Finds an entry by name (binary search: nodes are sorted).
    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.position(name).map(|i| &self.nodes[i])
    }

    /// The index of the entry `name` in [`Tree::nodes`].
    pub fn position(&self, name: &[u8]) -> Option<usize> {
        self.nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        codec::to_cbor(self)
    }

    pub(crate) fn decode(bytes: &[u8], id: &BlobId) -> Result<Tree> {
        codec::from_cbor(bytes, &format!("tree {id}"))
    }
}
