//! Browsing recovery points without restoring them: list a directory ([`Repository::ls`]),
//! search every recovery point for a name or path ([`Repository::find`]), read one file's
//! bytes ([`Repository::open_file`]), compare two points ([`Repository::diff`]) and count what
//! each holds alone ([`Repository::stats`]), and, for a reader that stays open (a file-system
//! view), list any directory and read any file at any offset through a [`Browser`]
//! ([`Repository::browser`]).
//!
//! Everything here only reads. Trees are untrusted as in a restore: names that are not plain
//! names are refused (and reported), a tree that contains itself or nests deeper than the
//! restore's limit is not entered, and a walk stops with an error once it has seen far more
//! entries than the recovery point records (shared subtrees could otherwise make it
//! exponential). Blobs are read through the same verified path as every other read, so a
//! damaged or forged blob is an error, never output.

mod diff;
mod dump;
mod machines;
mod stats;
mod view;

use std::path::{Path, PathBuf};

use globset::GlobMatcher;
use rbackup_beneath::Name;
use rbackup_crypto::BlobId;

pub use diff::{Change, DiffEntry, DiffReport, DiffSummary};
pub use dump::FileReader;
pub use machines::MachineSummary;
pub use stats::{PointStats, StatsReport};
pub use view::{Browser, DirListing, MAX_READ, RandomFile};

use crate::backup::excludes;
use crate::error::{CorruptReason, EngineError, Result};
use crate::index::Index;
use crate::repo::Repository;
use crate::restore::plan::{MAX_DEPTH, max_entries};
use crate::snapshot::RecoveryPoint;
use crate::tree::{Node, NodeKind, Tree};

/// One entry of a recovery point, as `ls` and `find` show it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    /// Its absolute path in the backed-up file system.
    pub path: PathBuf,
    /// File, directory (or a kind a newer writer added).
    pub kind: NodeKind,
    /// Permission and file type bits (`st_mode`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Logical size (files).
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
}

impl Entry {
    fn new(path: PathBuf, n: &Node) -> Entry {
        Entry {
            path,
            kind: n.kind,
            mode: n.mode,
            uid: n.uid,
            gid: n.gid,
            size: n.size,
            mtime_ns: n.mtime_ns,
        }
    }
}

/// What [`Repository::ls`] found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Listing {
    /// The recovery point listed (hex id).
    pub recovery_point: String,
    /// When its backup started (RFC 3339).
    pub time: String,
    /// The entries, sorted by path.
    pub entries: Vec<Entry>,
    /// Tree entries passed over because the recovery point is unsound there, with why.
    pub refused: Vec<String>,
}

/// Which recovery points [`Repository::find`] searches.
#[non_exhaustive]
#[derive(Clone, Debug, Default)]
pub struct FindOptions {
    /// These (ids, unique prefixes or `latest`); empty: every recovery point not deleted.
    pub recovery_points: Vec<String>,
    /// Only the newest this many of them.
    pub newest: Option<usize>,
}

/// One match of [`Repository::find`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct FindHit {
    /// The recovery point it is in (hex id).
    pub recovery_point: String,
    /// When that recovery point's backup started (RFC 3339).
    pub time: String,
    /// The entry.
    pub entry: Entry,
}

/// What [`Repository::find`] found, oldest recovery point first, by path within each.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FindReport {
    /// The matches.
    pub hits: Vec<FindHit>,
    /// How many recovery points were searched.
    pub recovery_points: usize,
    /// Tree entries passed over because a recovery point is unsound there, with why.
    pub refused: Vec<String>,
}

/// A glob on names, or on the whole absolute path when it holds a `/` — the convention of a
/// backup's excludes, so the pattern that left a file out is the one that finds it.
#[derive(Clone, Debug)]
pub(crate) struct Pattern {
    glob: GlobMatcher,
    on_path: bool,
}

impl Pattern {
    pub(crate) fn new(pattern: &str) -> Result<Pattern> {
        let glob = excludes::glob(pattern).map_err(|source| EngineError::BadPattern {
            pattern: pattern.into(),
            source,
        })?;
        Ok(Pattern {
            glob: glob.compile_matcher(),
            on_path: excludes::on_path(pattern),
        })
    }

    pub(crate) fn is_match(&self, path: &Path) -> bool {
        if self.on_path {
            return self.glob.is_match(path);
        }
        path.file_name().is_some_and(|n| self.glob.is_match(n))
    }
}

/// Trees already read by one command that walks several recovery points (`find`, `stats`):
/// successive points share most of their trees, and each read is a pack read, a decryption and
/// a decode. Keyed by blob id, so a tree is the same wherever it is met; it holds at most the
/// distinct trees of the points walked, which is the size of their metadata.
pub(crate) type TreeMemo = std::sync::Mutex<std::collections::HashMap<BlobId, Tree>>;

/// A bounded walk over one recovery point's trees.
pub(crate) struct Walker<'a> {
    repo: &'a Repository,
    index: &'a Index,
    memo: Option<&'a TreeMemo>,
    /// Entries the walk may still see (see the module docs).
    budget: u64,
    max: u64,
    root: BlobId,
    /// Entries passed over, with why.
    pub refused: Vec<String>,
}

/// The memo's map; a panic elsewhere cannot leave it half-written (inserts are whole).
fn lock(m: &TreeMemo) -> std::sync::MutexGuard<'_, std::collections::HashMap<BlobId, Tree>> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A directory still to be listed: its path, tree and the trees above it.
struct Pending {
    dir: PathBuf,
    tree: BlobId,
    ancestors: Vec<BlobId>,
}

impl<'a> Walker<'a> {
    pub(crate) fn new(repo: &'a Repository, index: &'a Index, rp: &RecoveryPoint) -> Walker<'a> {
        let max = max_entries(rp);
        Walker {
            repo,
            index,
            memo: None,
            budget: max,
            max,
            root: rp.tree,
            refused: Vec::new(),
        }
    }

    /// Shares the trees read with other walkers of the same command (see [`TreeMemo`]).
    pub(crate) fn with_memo(mut self, memo: &'a TreeMemo) -> Self {
        self.memo = Some(memo);
        self
    }

    /// Loads a tree (from the memo when another point's walk read it), charging its entries to
    /// this walk's budget either way.
    pub(crate) async fn tree(&mut self, id: &BlobId) -> Result<Tree> {
        let known = self.memo.and_then(|m| lock(m).get(id).cloned());
        let tree = match known {
            Some(t) => t,
            None => {
                let t = self.repo.load_tree(self.index, id).await?;
                if let Some(m) = self.memo {
                    lock(m).insert(*id, t.clone());
                }
                t
            }
        };
        let n = tree.nodes.len() as u64;
        if n > self.budget {
            let reason = CorruptReason::TreeLargerThanRecorded { max: self.max };
            return Err(EngineError::corrupt(format!("tree {}", self.root), reason));
        }
        self.budget -= n;
        Ok(tree)
    }

    /// The nodes of a tree whose names are plain names, joined to `dir`; the others are
    /// refused. A crafted name (`..`, one holding `/`) must never become a path.
    pub(crate) async fn children(
        &mut self,
        dir: &Path,
        id: &BlobId,
    ) -> Result<Vec<(PathBuf, Node)>> {
        let tree = self.tree(id).await?;
        let mut out = Vec::with_capacity(tree.nodes.len());
        for node in tree.nodes {
            match Name::new(node.name_os()) {
                Ok(name) => out.push((dir.join(name.as_os_str()), node)),
                Err(why) => self.refuse(dir, &node.name, &format!("refused name: {why}")),
            }
        }
        Ok(out)
    }

    fn refuse(&mut self, dir: &Path, name: &[u8], why: &str) {
        self.refused.push(refusal(dir, name, why));
    }

    /// Whether the directory `node` at `path`, below the trees `ancestors`, may be entered;
    /// a refusal is recorded.
    pub(crate) fn may_enter(&mut self, path: &Path, node: &Node, ancestors: &[BlobId]) -> bool {
        let Some(sub) = node.subtree else {
            return false;
        };
        match enter_refusal(&sub, ancestors) {
            None => true,
            Some(reason) => {
                let dir = path.parent().unwrap_or(Path::new("/"));
                self.refuse(dir, &node.name, &format!("refused: {reason}"));
                false
            }
        }
    }

    /// The node at `path` (absolute; `None` for `/`, which has no node), or
    /// [`EngineError::PathNotInRecoveryPoint`].
    pub(crate) async fn lookup(&mut self, path: &Path) -> Result<Option<Node>> {
        let missing = || EngineError::PathNotInRecoveryPoint { path: path.into() };
        let mut tree = self.root;
        let mut found = None;
        let mut depth = 0;
        for c in path.components() {
            let name = match c {
                std::path::Component::Normal(name) => name,
                // `..` is not followed: the path is asked for as it was backed up.
                std::path::Component::ParentDir => return Err(missing()),
                _ => continue,
            };
            if let Some(node) = found.take() {
                tree = dir_tree(&node).ok_or_else(missing)?;
            }
            depth += 1;
            if depth > MAX_DEPTH {
                return Err(missing());
            }
            use std::os::unix::ffi::OsStrExt;
            let t = self.tree(&tree).await?;
            let node = t.find(name.as_bytes()).cloned().ok_or_else(missing)?;
            found = Some(node);
        }
        Ok(found)
    }

    /// Every entry below the directory `dir` whose tree is `tree` (only its own entries unless
    /// `recursive`), passed to `visit`.
    pub(crate) async fn walk(
        &mut self,
        dir: &Path,
        tree: BlobId,
        recursive: bool,
        mut visit: impl FnMut(&Path, &Node),
    ) -> Result<()> {
        let mut stack = vec![Pending {
            dir: dir.into(),
            tree,
            ancestors: Vec::new(),
        }];
        while let Some(p) = stack.pop() {
            let mut ancestors = p.ancestors;
            ancestors.push(p.tree);
            for (path, node) in self.children(&p.dir, &p.tree).await? {
                visit(&path, &node);
                if recursive
                    && node.kind == NodeKind::Dir
                    && self.may_enter(&path, &node, &ancestors)
                    && let Some(tree) = node.subtree
                {
                    stack.push(Pending {
                        dir: path,
                        tree,
                        ancestors: ancestors.clone(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// How a refused entry `name` of the directory `dir` is reported: `/dir/"name": why`.
fn refusal(dir: &Path, name: &[u8], why: &str) -> String {
    let dir = dir.display().to_string();
    let name = String::from_utf8_lossy(name);
    format!("{}/{name:?}: {why}", dir.trim_end_matches('/'))
}

/// Why the directory whose tree is `sub`, below the trees `ancestors`, must not be entered:
/// it contains itself, or it is nested deeper than a restore goes.
fn enter_refusal(sub: &BlobId, ancestors: &[BlobId]) -> Option<CorruptReason> {
    if ancestors.contains(sub) {
        Some(CorruptReason::TreeContainsItself)
    } else if ancestors.len() >= MAX_DEPTH {
        Some(CorruptReason::NestedTooDeep { max: MAX_DEPTH })
    } else {
        None
    }
}

/// The tree of a directory node.
fn dir_tree(node: &Node) -> Option<BlobId> {
    (node.kind == NodeKind::Dir)
        .then_some(node.subtree)
        .flatten()
}

impl Repository {
    /// Lists `path` (absolute; `/` for the top) in recovery point `spec` (`latest` — the
    /// newest that holds `path` — or an id prefix): a directory's entries (with `recursive`,
    /// everything beneath it), or the one entry of anything else.
    pub async fn ls(&self, spec: &str, path: &Path, recursive: bool) -> Result<Listing> {
        let (id, rp) = self.find_recovery_point_holding(spec, &held(path)).await?;
        let index = self.load_index().await?;
        let mut walker = Walker::new(self, &index, &rp);
        let mut entries = Vec::new();
        let tree = match walker.lookup(path).await? {
            None => Some(rp.tree),
            Some(node) => match dir_tree(&node) {
                Some(t) => Some(t),
                None => {
                    entries.push(Entry::new(path.into(), &node));
                    None
                }
            },
        };
        if let Some(tree) = tree {
            let dir = Path::new("/").join(path);
            walker
                .walk(&dir, tree, recursive, |p, n| {
                    entries.push(Entry::new(p.into(), n))
                })
                .await?;
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Listing {
            recovery_point: id.to_hex(),
            time: rp.time,
            entries,
            refused: walker.refused,
        })
    }

    /// Every entry matching `pattern` in the recovery points `opts` names. The pattern is a
    /// glob on names, or on the whole absolute path when it holds a `/` (`**` spans folders),
    /// as a backup's excludes are; an invalid one is [`EngineError::BadPattern`].
    pub async fn find(&self, pattern: &str, opts: &FindOptions) -> Result<FindReport> {
        let pattern = Pattern::new(pattern)?;
        let mut points = if opts.recovery_points.is_empty() {
            self.recovery_points().await?
        } else {
            let mut v = Vec::new();
            for spec in &opts.recovery_points {
                let hit = self.find_recovery_point(spec).await?;
                if !v.iter().any(|(id, _)| *id == hit.0) {
                    v.push(hit);
                }
            }
            v.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
            v
        };
        if let Some(n) = opts.newest {
            points.drain(..points.len().saturating_sub(n));
        }
        let index = self.load_index().await?;
        let memo = TreeMemo::default();
        let (mut hits, mut refused) = (Vec::new(), Vec::new());
        for (id, rp) in &points {
            let mut walker = Walker::new(self, &index, rp).with_memo(&memo);
            let mut found = Vec::new();
            walker
                .walk(Path::new("/"), rp.tree, true, |p, n| {
                    if pattern.is_match(p) {
                        found.push(Entry::new(p.into(), n));
                    }
                })
                .await?;
            found.sort_by(|a, b| a.path.cmp(&b.path));
            hits.extend(found.into_iter().map(|entry| FindHit {
                recovery_point: id.to_hex(),
                time: rp.time.clone(),
                entry,
            }));
            refused.extend(walker.refused);
        }
        Ok(FindReport {
            hits,
            recovery_points: points.len(),
            refused,
        })
    }
}

/// The paths `latest` must hold for a lookup of `path`: none for `/`.
fn held(path: &Path) -> Vec<&Path> {
    if path
        .components()
        .any(|c| matches!(c, std::path::Component::Normal(_)))
    {
        vec![path]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_names_or_whole_paths() {
        let name = Pattern::new("*.txt").unwrap();
        assert!(name.is_match(Path::new("/home/a/notes.txt")));
        assert!(!name.is_match(Path::new("/home/a.txt/notes")));
        let path = Pattern::new("/home/*/notes.txt").unwrap();
        assert!(path.is_match(Path::new("/home/a/notes.txt")));
        assert!(!path.is_match(Path::new("/home/a/b/notes.txt")));
        assert!(
            Pattern::new("/home/**/notes.txt")
                .unwrap()
                .is_match(Path::new("/home/a/b/notes.txt"))
        );
        assert!(matches!(
            Pattern::new("["),
            Err(EngineError::BadPattern { .. })
        ));
    }

    #[test]
    fn only_a_path_below_the_top_filters_latest() {
        assert!(held(Path::new("/")).is_empty());
        assert_eq!(held(Path::new("/home/a")), [Path::new("/home/a")]);
    }
}
