//! What a restore will write: the files and directories selected from a recovery point, and
//! for each pack the blobs to read and where each one goes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use rbackup_beneath::{Name, RelPath};
use rbackup_crypto::BlobId;

use crate::error::{CorruptReason, EngineError, Result};
use crate::index::Index;
use crate::snapshot::RecoveryPoint;
use crate::tree::{Node, NodeKind, Tree};

/// What a restore gives an entry, copied out of its tree node. The node itself (its name
/// bytes, its list of content blobs, its segments) is not kept: the plan holds one of these
/// per entry of the recovery point for the whole restore, so it holds only what is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    pub size: u64,
}

impl From<&Node> for Meta {
    fn from(n: &Node) -> Meta {
        Meta {
            mode: n.mode,
            uid: n.uid,
            gid: n.gid,
            mtime_ns: n.mtime_ns,
            size: n.size,
        }
    }
}

/// One selected entry: its validated name and the directory it is in. Its path is not stored
/// but rebuilt from the chain of parents when it is needed ([`Plan::path`]): a path per entry,
/// as a `Vec` of names, costs about a kilobyte at the depth of a real source tree, and the
/// plan lives through the whole restore.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The directory holding it, as an index into [`Plan::dirs`]; `None` for the top. A
    /// directory always comes after its parent there, so the chain of parents ends.
    pub parent: Option<usize>,
    pub name: Name,
    pub meta: Meta,
}

/// Where one blob's content goes: file number and offset in it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target {
    pub file: usize,
    pub offset: u64,
}

/// One blob to read from a pack.
#[derive(Debug, Clone)]
pub(crate) struct BlobRead {
    pub id: BlobId,
    pub offset: u64,
    pub len: u32,
    pub raw_len: u32,
    pub targets: Vec<Target>,
}

/// Trees nested deeper than this are refused: no real file system comes near it (paths are
/// at most 4096 bytes, so 2048 levels of one-letter names), and the walk must not be made to
/// run without bound by a crafted recovery point.
pub(crate) const MAX_DEPTH: usize = 512;

/// How many tree entries a restore of `rp` may walk: twice what it records, and some room for
/// the directories above its source paths. An honest recovery point holds exactly its counts;
/// the bound is only there to stop a walk that would not end.
pub(crate) fn max_entries(rp: &RecoveryPoint) -> u64 {
    rp.files
        .saturating_add(rp.dirs)
        .saturating_mul(2)
        .saturating_add(64 * 1024)
}

/// An entry of a tree that the plan refused, with why; reported, and the rest goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    pub path: String,
    pub reason: String,
}

/// The whole restore.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub dirs: Vec<Entry>,
    pub files: Vec<Entry>,
    /// Pack number → blobs, sorted by offset.
    pub packs: BTreeMap<u32, Vec<BlobRead>>,
    /// Files (by number in `files`) that cannot be restored before reading anything (blob
    /// missing from the index).
    pub broken: HashMap<usize, String>,
    /// Tree entries that will not be restored because the recovery point itself is unsound
    /// there: a name that is not a plain name, a tree that refers back to itself or one nested
    /// deeper than [`MAX_DEPTH`].
    pub refused: Vec<Refused>,
    /// Bytes that will be written into the staging area.
    pub data_bytes: u64,
    pub warnings: Vec<String>,
}

/// A directory whose tree is still to be read.
struct Pending {
    /// Its path, for matching the selection and for messages.
    dir: PathBuf,
    /// Its number in [`Plan::dirs`] (`None` for the top).
    entry: Option<usize>,
    tree: BlobId,
    whole: bool,
    ancestors: Vec<BlobId>,
}

/// A selection filter: absolute paths, as components relative to `/`.
fn filters(paths: &[PathBuf]) -> Vec<PathBuf> {
    paths
        .iter()
        .map(|p| {
            p.components()
                .filter(|c| matches!(c, std::path::Component::Normal(_)))
                .collect()
        })
        .collect()
}

impl Plan {
    /// Walks the trees from `root`, read through `load`, selecting `paths` (all when empty).
    ///
    /// Identical directories share one tree blob, so a tree may be reached many times; a
    /// crafted one can make that exponential (each level listing the next twice). The walk is
    /// therefore bounded by `max_entries`, derived from the counts the recovery point records.
    pub(crate) async fn build(
        load: impl AsyncFn(&BlobId) -> Result<Tree>,
        index: &Index,
        root: &BlobId,
        paths: &[PathBuf],
        max_entries: u64,
    ) -> Result<Plan> {
        let filters = filters(paths);
        let mut seen = 0u64;
        let mut plan = Plan::default();
        let mut matched = vec![false; filters.len()];
        // Each pending directory carries the tree ids on its path from the root, to refuse a
        // tree that contains itself (and to bound the depth).
        let mut stack = vec![Pending {
            dir: PathBuf::new(),
            entry: None,
            tree: *root,
            whole: filters.is_empty(),
            ancestors: Vec::new(),
        }];
        while let Some(p) = stack.pop() {
            let tree = load(&p.tree).await?;
            seen = seen.saturating_add(tree.nodes.len() as u64);
            if seen > max_entries {
                let reason = CorruptReason::TreeLargerThanRecorded { max: max_entries };
                return Err(EngineError::corrupt(format!("tree {root}"), reason));
            }
            plan.note_case_collisions(&p.dir, &tree);
            let mut ancestors = p.ancestors;
            ancestors.push(p.tree);
            for node in tree.nodes {
                let name = match Name::new(node.name_os()) {
                    Ok(n) => n,
                    Err(why) => {
                        plan.refuse(&p.dir, &node.name, format!("refused name: {why}"));
                        continue;
                    }
                };
                let rel = p.dir.join(name.as_os_str());
                let selected = p.whole
                    || filters.iter().enumerate().any(|(i, f)| {
                        let hit = rel.starts_with(f);
                        matched[i] |= hit;
                        hit
                    });
                let ancestor =
                    !selected && filters.iter().any(|f| f.starts_with(&rel) && *f != rel);
                if !selected && !ancestor {
                    continue;
                }
                let entry = Entry {
                    parent: p.entry,
                    name,
                    meta: Meta::from(&node),
                };
                match node.kind {
                    NodeKind::Dir => {
                        if let Some(sub) = node.subtree {
                            if ancestors.contains(&sub) {
                                let why = "refused: the directory's tree contains itself";
                                plan.refuse(&p.dir, &node.name, why.into());
                                continue;
                            }
                            if ancestors.len() >= MAX_DEPTH {
                                let why = format!("refused: nested deeper than {MAX_DEPTH} levels");
                                plan.refuse(&p.dir, &node.name, why);
                                continue;
                            }
                            stack.push(Pending {
                                dir: rel,
                                entry: Some(plan.dirs.len()),
                                tree: sub,
                                whole: selected,
                                ancestors: ancestors.clone(),
                            });
                        }
                        plan.dirs.push(entry);
                    }
                    NodeKind::File if selected => plan.add_file(index, entry, &node),
                    NodeKind::File => {}
                }
            }
        }
        if let Some(i) = matched.iter().position(|m| !m) {
            return Err(EngineError::PathNotInRecoveryPoint {
                path: Path::new("/").join(&filters[i]),
            });
        }
        Ok(plan)
    }

    /// Records a refused entry named `name` in the directory `dir`. The name is shown quoted
    /// and escaped: it may hold `/`, NUL or control characters, and must not read as a path.
    fn refuse(&mut self, dir: &Path, name: &[u8], reason: String) {
        let dir = Path::new("/").join(dir).display().to_string();
        let name = String::from_utf8_lossy(name);
        let path = format!("{}/{name:?}", dir.trim_end_matches('/'));
        self.refused.push(Refused { path, reason });
    }

    fn add_file(&mut self, index: &Index, entry: Entry, node: &Node) {
        let file = self.files.len();
        // Ordinary files are one segment from 0; sparse files list theirs.
        let segments = if node.class.as_deref() == Some("sparse") {
            node.segments.clone()
        } else {
            vec![(0, u64::MAX)]
        };
        let mut segs = segments.into_iter();
        let mut cur = segs.next();
        let mut used = 0u64;
        for id in &node.content {
            let Some(loc) = index.get(id) else {
                self.broken
                    .insert(file, format!("blob {id} is missing from the vault index"));
                break;
            };
            // Chunks never cross a segment boundary: move on when the current one is full.
            while let Some((_, len)) = cur {
                if used < len {
                    break;
                }
                cur = segs.next();
                used = 0;
            }
            let Some((start, _)) = cur else {
                self.broken.insert(
                    file,
                    "the recovery point lists more content than the file's size".into(),
                );
                break;
            };
            self.packs.entry(loc.pack).or_default().push(BlobRead {
                id: *id,
                offset: loc.offset,
                len: loc.len,
                raw_len: loc.raw_len,
                targets: vec![Target {
                    file,
                    offset: start + used,
                }],
            });
            self.data_bytes += u64::from(loc.raw_len);
            used += u64::from(loc.raw_len);
        }
        self.files.push(entry);
    }

    /// The path of `e` beneath the target: the validated names of its parents and its own.
    pub(crate) fn path(&self, e: &Entry) -> RelPath {
        let mut names = vec![&e.name];
        let mut up = e.parent;
        while let Some(d) = up {
            names.push(&self.dirs[d].name);
            up = self.dirs[d].parent;
        }
        names.into_iter().rev().cloned().collect()
    }

    /// How many directories `e` is beneath the target.
    pub(crate) fn depth(&self, e: &Entry) -> usize {
        std::iter::successors(e.parent, |&d| self.dirs[d].parent).count()
    }

    /// The absolute path of `e`, as reports show it.
    pub(crate) fn shown(&self, e: &Entry) -> String {
        Path::new("/")
            .join(self.path(e).to_path_buf())
            .display()
            .to_string()
    }

    /// Sorts each pack's reads by offset and merges reads of the same blob.
    pub(crate) fn finish(&mut self) {
        for reads in self.packs.values_mut() {
            reads.sort_by_key(|r| (r.offset, r.id));
            let mut merged: Vec<BlobRead> = Vec::with_capacity(reads.len());
            for r in reads.drain(..) {
                match merged.last_mut() {
                    Some(last) if last.id == r.id => last.targets.extend(r.targets),
                    _ => merged.push(r),
                }
            }
            *reads = merged;
        }
    }

    /// rbackup keeps Linux's case-sensitive names; restoring to a case-insensitive target
    /// would merge these, so say so.
    fn note_case_collisions(&mut self, dir: &Path, tree: &Tree) {
        let mut seen: HashMap<String, &[u8]> = HashMap::new();
        for n in &tree.nodes {
            let lower = String::from_utf8_lossy(&n.name).to_lowercase();
            if let Some(prev) = seen.insert(lower, &n.name) {
                self.warnings.push(format!(
                    "{} and {} differ only in case: on a case-insensitive target one would overwrite the other",
                    Path::new("/").join(dir).join(String::from_utf8_lossy(prev).as_ref()).display(),
                    Path::new("/").join(dir).join(n.name_os()).display(),
                ));
            }
        }
    }
}
