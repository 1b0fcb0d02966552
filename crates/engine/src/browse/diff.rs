//! What changed between two recovery points, as restic's `diff` shows it.

use std::path::{Path, PathBuf};

use rbackup_crypto::BlobId;

use super::{Entry, Walker};
use crate::error::Result;
use crate::repo::Repository;
use crate::tree::{Node, NodeKind};

/// How an entry differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// Only in the second point (`+`).
    Added,
    /// Only in the first point (`-`).
    Removed,
    /// Content or size differ (`M`).
    Modified,
    /// Same content, other metadata: mode, owner, group or (not for a directory)
    /// modification time (`U`).
    Metadata,
}

impl Change {
    /// restic's marker: `+`, `-`, `M` or `U`.
    pub fn marker(self) -> char {
        match self {
            Change::Added => '+',
            Change::Removed => '-',
            Change::Modified => 'M',
            Change::Metadata => 'U',
        }
    }
}

/// One difference.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DiffEntry {
    /// How it differs.
    pub change: Change,
    /// The entry as the second point has it (the first for a removal).
    pub entry: Entry,
    /// Its size in the first point, when it is there.
    pub size_before: Option<u64>,
}

/// Counts and bytes of a diff.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DiffSummary {
    /// Files and directories added.
    pub added: u64,
    /// Files and directories removed.
    pub removed: u64,
    /// Files whose content changed.
    pub modified: u64,
    /// Entries whose metadata alone changed.
    pub metadata: u64,
    /// Bytes of the files added.
    pub bytes_added: u64,
    /// Bytes of the files removed.
    pub bytes_removed: u64,
}

/// What [`Repository::diff`] found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DiffReport {
    /// The first recovery point (hex id).
    pub from: String,
    /// The second recovery point (hex id).
    pub to: String,
    /// The differences, sorted by path.
    pub changes: Vec<DiffEntry>,
    /// Their counts.
    pub summary: DiffSummary,
    /// Tree entries passed over because a recovery point is unsound there, with why.
    pub refused: Vec<String>,
}

/// A directory present in both points whose trees differ.
struct Pending {
    dir: PathBuf,
    a: BlobId,
    b: BlobId,
    ancestors: Vec<(BlobId, BlobId)>,
}

impl Repository {
    /// The differences from recovery point `a` to `b` (ids, prefixes or `latest`). Identical
    /// subtrees share one tree blob, so only the directories that changed are read.
    pub async fn diff(&self, a: &str, b: &str) -> Result<DiffReport> {
        let (ida, rpa) = self.find_recovery_point(a).await?;
        let (idb, rpb) = self.find_recovery_point(b).await?;
        let index = self.load_index().await?;
        let mut wa = Walker::new(self, &index, &rpa);
        let mut wb = Walker::new(self, &index, &rpb);
        let mut out = Vec::new();
        let mut stack = vec![Pending {
            dir: PathBuf::from("/"),
            a: rpa.tree,
            b: rpb.tree,
            ancestors: Vec::new(),
        }];
        while let Some(p) = stack.pop() {
            let mut ancestors = p.ancestors;
            ancestors.push((p.a, p.b));
            let left = wa.children(&p.dir, &p.a).await?;
            let right = wb.children(&p.dir, &p.b).await?;
            let (mut i, mut j) = (0, 0);
            while i < left.len() || j < right.len() {
                let order = match (left.get(i), right.get(j)) {
                    (Some(l), Some(r)) => l.1.name.cmp(&r.1.name),
                    (Some(_), None) => std::cmp::Ordering::Less,
                    _ => std::cmp::Ordering::Greater,
                };
                match order {
                    std::cmp::Ordering::Less => {
                        let (path, node) = &left[i];
                        gone(&mut wa, &mut out, Change::Removed, path, node).await?;
                        i += 1;
                    }
                    std::cmp::Ordering::Greater => {
                        let (path, node) = &right[j];
                        gone(&mut wb, &mut out, Change::Added, path, node).await?;
                        j += 1;
                    }
                    std::cmp::Ordering::Equal => {
                        let ((path, x), (_, y)) = (&left[i], &right[j]);
                        if x.kind != y.kind {
                            gone(&mut wa, &mut out, Change::Removed, path, x).await?;
                            gone(&mut wb, &mut out, Change::Added, path, y).await?;
                        } else if let Some(change) = compare(x, y) {
                            out.push(DiffEntry {
                                change,
                                entry: Entry::new(path.clone(), y),
                                size_before: Some(x.size),
                            });
                        }
                        if let (NodeKind::Dir, Some(sa), Some(sb)) = (y.kind, x.subtree, y.subtree)
                            && x.kind == NodeKind::Dir
                            && sa != sb
                        {
                            if ancestors.contains(&(sa, sb)) || ancestors.len() >= super::MAX_DEPTH
                            {
                                let why = "refused: the directory's trees contain themselves or nest too deep";
                                wb.refused.push(format!("{}: {why}", path.display()));
                            } else {
                                stack.push(Pending {
                                    dir: path.clone(),
                                    a: sa,
                                    b: sb,
                                    ancestors: ancestors.clone(),
                                });
                            }
                        }
                        i += 1;
                        j += 1;
                    }
                }
            }
        }
        out.sort_by(|x, y| {
            x.entry
                .path
                .cmp(&y.entry.path)
                .then(x.change.marker().cmp(&y.change.marker()))
        });
        let summary = summarize(&out);
        let mut refused = wa.refused;
        refused.extend(wb.refused);
        Ok(DiffReport {
            from: ida.to_hex(),
            to: idb.to_hex(),
            changes: out,
            summary,
            refused,
        })
    }
}

/// How two nodes of the same kind and name differ, if they do. Anything but a directory is
/// modified when anything but its metadata and change-detection fields differs (content,
/// size, segments, and whatever a newer kind records). A directory's entries are compared one
/// by one, and its own modification time is left out: it moves whenever an entry is added or
/// removed, which the diff already shows, so only its mode and owner count.
fn compare(x: &Node, y: &Node) -> Option<Change> {
    let dir = x.kind == NodeKind::Dir;
    let mtime_differs = !dir && x.mtime_ns != y.mtime_ns;
    let meta = (x.mode, x.uid, x.gid) != (y.mode, y.uid, y.gid) || mtime_differs;
    let strip = |n: &Node| Node {
        mode: 0,
        uid: 0,
        gid: 0,
        mtime_ns: 0,
        legacy_ctime_ns: None,
        legacy_ino: None,
        subtree: None,
        // Group numbers are assigned per backup run: the same links may be numbered anew.
        link_group: None,
        ..n.clone()
    };
    let content = !dir && strip(x) != strip(y);
    match (content, meta) {
        (true, _) => Some(Change::Modified),
        (false, true) => Some(Change::Metadata),
        (false, false) => None,
    }
}

/// Records `node` at `path` (and, for a directory, everything beneath it) as added or
/// removed, walking with `w`, the walker of the point that has it.
async fn gone(
    w: &mut Walker<'_>,
    out: &mut Vec<DiffEntry>,
    change: Change,
    path: &Path,
    node: &Node,
) -> Result<()> {
    let record = |out: &mut Vec<DiffEntry>, p: &Path, n: &Node| {
        out.push(DiffEntry {
            change,
            entry: Entry::new(p.into(), n),
            size_before: (change == Change::Removed).then_some(n.size),
        })
    };
    record(out, path, node);
    if node.kind == NodeKind::Dir
        && w.may_enter(path, node, &[])
        && let Some(sub) = node.subtree
    {
        w.walk(path, sub, true, |p, n| record(out, p, n)).await?;
    }
    Ok(())
}

fn summarize(changes: &[DiffEntry]) -> DiffSummary {
    let mut s = DiffSummary::default();
    for c in changes {
        let file_bytes = if c.entry.kind == NodeKind::File {
            c.entry.size
        } else {
            0
        };
        match c.change {
            Change::Added => {
                s.added += 1;
                s.bytes_added += file_bytes;
            }
            Change::Removed => {
                s.removed += 1;
                s.bytes_removed += file_bytes;
            }
            Change::Modified => s.modified += 1,
            Change::Metadata => s.metadata += 1,
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(size: u64, mtime_ns: i64) -> Node {
        Node {
            name: serde_bytes::ByteBuf::from(b"f".to_vec()),
            kind: NodeKind::File,
            mode: 0o100644,
            uid: 1,
            gid: 1,
            mtime_ns,
            legacy_ctime_ns: None,
            legacy_ino: None,
            size,
            content: Vec::new(),
            segments: Vec::new(),
            subtree: None,
            class: None,
            target: None,
            link_group: None,
        }
    }

    #[test]
    fn content_beats_metadata_and_change_detection_fields_do_not_count() {
        let a = file(10, 1);
        assert_eq!(compare(&a, &a), None);
        let moved = Node {
            legacy_ino: Some(9),
            legacy_ctime_ns: Some(6),
            ..a.clone()
        };
        assert_eq!(compare(&a, &moved), None);
        assert_eq!(compare(&a, &file(10, 2)), Some(Change::Metadata));
        assert_eq!(
            compare(
                &a,
                &Node {
                    mode: 0o100600,
                    ..a.clone()
                }
            ),
            Some(Change::Metadata)
        );
        assert_eq!(compare(&a, &file(11, 2)), Some(Change::Modified));
        let other = Node {
            content: vec![BlobId([3; 32])],
            ..a.clone()
        };
        assert_eq!(compare(&a, &other), Some(Change::Modified));
        let dir = Node {
            kind: NodeKind::Dir,
            mode: 0o40755,
            ..a.clone()
        };
        assert_eq!(
            compare(
                &dir,
                &Node {
                    mtime_ns: 9,
                    size: 3,
                    ..dir.clone()
                }
            ),
            None
        );
        assert_eq!(
            compare(
                &dir,
                &Node {
                    uid: 2,
                    ..dir.clone()
                }
            ),
            Some(Change::Metadata)
        );
    }
}
