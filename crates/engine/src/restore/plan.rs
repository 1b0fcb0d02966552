//! What a restore will write: the files and directories selected from a recovery point, and
//! for each pack the blobs to read and where each one goes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use rbackup_beneath::{Name, RelPath};
use rbackup_crypto::BlobId;

use super::links::{self, Groups, PlannedSymlink};
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
    /// For a bundle member, where its content starts in the unit's content.
    pub within: Option<u32>,
    pub targets: Vec<Target>,
}

impl BlobRead {
    /// Where the blob is in its pack (data blobs only are read this way).
    pub(crate) fn slot(&self) -> crate::pack::Slot {
        crate::pack::Slot {
            kind: crate::pack::BlobKind::Data,
            offset: self.offset,
            len: self.len,
            raw_len: self.raw_len,
            within: self.within,
        }
    }
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
    /// Symlinks to create.
    pub symlinks: Vec<PlannedSymlink>,
    /// Hard-link groups among the files: which are linked to which.
    pub links: Groups,
    /// Bytes that will be written into the staging area.
    pub data_bytes: u64,
    /// Names of one directory that differ only in case: a warning only for a target whose
    /// names fold case.
    pub case_collisions: Vec<String>,
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
                    NodeKind::File if selected => {
                        plan.links.note(plan.files.len(), &node);
                        plan.add_file(index, entry, &node);
                    }
                    NodeKind::Symlink if selected => match links::symlink_target(&node) {
                        Ok(target) => plan.symlinks.push(PlannedSymlink { entry, target }),
                        Err(why) => plan.refuse(&p.dir, &node.name, why),
                    },
                    NodeKind::File | NodeKind::Symlink => {}
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
                within: loc.within,
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

    /// Drops the reads for the files `write` says are not written (kept as the target has
    /// them), and counts only the rest in [`Plan::data_bytes`].
    pub(crate) fn only_files(&mut self, write: impl Fn(usize) -> bool) {
        self.data_bytes = 0;
        for reads in self.packs.values_mut() {
            for r in reads.iter_mut() {
                r.targets.retain(|t| write(t.file));
                self.data_bytes += u64::from(r.raw_len) * r.targets.len() as u64;
            }
            reads.retain(|r| !r.targets.is_empty());
        }
        self.packs.retain(|_, reads| !reads.is_empty());
    }

    /// rbackup keeps Linux's case-sensitive names; restoring to a case-insensitive target
    /// would merge these, so say so.
    fn note_case_collisions(&mut self, dir: &Path, tree: &Tree) {
        let mut seen: HashMap<String, &[u8]> = HashMap::new();
        for n in &tree.nodes {
            let lower = String::from_utf8_lossy(&n.name).to_lowercase();
            if let Some(prev) = seen.insert(lower, &n.name) {
                self.case_collisions.push(format!(
                    "{} and {} differ only in case: on a case-insensitive target one would overwrite the other",
                    Path::new("/").join(dir).join(String::from_utf8_lossy(prev).as_ref()).display(),
                    Path::new("/").join(dir).join(n.name_os()).display(),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    use super::*;

    /// The system allocator, counting what each thread holds, so that a test can measure what
    /// a structure it builds retains while other tests allocate on other threads.
    struct PerThread;

    thread_local! {
        static HELD: Cell<isize> = const { Cell::new(0) };
    }

    fn held(change: isize) {
        // Allocations while the thread is being torn down are not counted (nor measured).
        let _ = HELD.try_with(|h| h.set(h.get() + change));
    }

    #[allow(unsafe_code)]
    // SAFETY: every call is passed to the system allocator unchanged; only a counter is kept.
    unsafe impl GlobalAlloc for PerThread {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: the caller's contract for `alloc` is the system allocator's.
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() {
                held(layout.size() as isize);
            }
            p
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            // SAFETY: as for `alloc`.
            let p = unsafe { System.alloc_zeroed(layout) };
            if !p.is_null() {
                held(layout.size() as isize);
            }
            p
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: `ptr` came from this allocator, that is from the system one.
            unsafe { System.dealloc(ptr, layout) };
            held(-(layout.size() as isize));
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: as for `dealloc`.
            let p = unsafe { System.realloc(ptr, layout, new_size) };
            if !p.is_null() {
                held(new_size as isize - layout.size() as isize);
            }
            p
        }
    }

    #[global_allocator]
    static ALLOC: PerThread = PerThread;

    fn node(name: &str, kind: NodeKind, subtree: Option<BlobId>) -> Node {
        Node {
            name: name.as_bytes().to_vec().into(),
            kind,
            mode: if kind == NodeKind::Dir {
                0o40755
            } else {
                0o100644
            },
            uid: 1000,
            gid: 1000,
            mtime_ns: 1_700_000_000_000_000_000,
            legacy_ctime_ns: None,
            legacy_ino: None,
            size: 0,
            content: Vec::new(),
            segments: Vec::new(),
            subtree,
            class: None,
            target: None,
            link_group: None,
        }
    }

    /// A source tree as deep as the bench's (a backup of `/home/user/...` nests a dozen
    /// levels): a chain of `depth` directories, then `leaves` directories of `files` files.
    fn deep_tree(depth: u8, leaves: u8, files: u16) -> HashMap<BlobId, Tree> {
        let mut trees = HashMap::new();
        let leaf = Tree {
            nodes: (0..files)
                .map(|i| node(&format!("source-file-{i:05}.rs"), NodeKind::File, None))
                .collect(),
        };
        trees.insert(BlobId([1; 32]), leaf);
        let mut nodes = (0..leaves)
            .map(|i| {
                node(
                    &format!("module-{i:03}"),
                    NodeKind::Dir,
                    Some(BlobId([1; 32])),
                )
            })
            .collect();
        for level in 0..depth {
            let id = BlobId([2 + level; 32]);
            trees.insert(id, Tree { nodes });
            nodes = vec![node(&format!("level-{level:02}"), NodeKind::Dir, Some(id))];
        }
        trees.insert(BlobId([0; 32]), Tree { nodes });
        trees
    }

    fn build(trees: &HashMap<BlobId, Tree>, paths: &[PathBuf]) -> Plan {
        let load = async |id: &BlobId| Ok(trees[id].clone());
        let index = Index::default();
        let fut = Plan::build(load, &index, &BlobId([0; 32]), paths, 1 << 20);
        futures::executor::block_on(fut).unwrap()
    }

    /// The plan lives through the whole restore, so what it holds per entry is what a restore
    /// of many files pays in memory. It was once ~1 KiB at this depth (a path as a `Vec` of
    /// names and the whole tree node per entry), which showed as a third more peak RSS.
    #[test]
    fn the_plan_holds_little_per_entry_whatever_the_depth() {
        let trees = deep_tree(12, 20, 100);
        let before = HELD.with(Cell::get);
        let plan = build(&trees, &[]);
        let retained = HELD.with(Cell::get) - before;
        let entries = (plan.files.len() + plan.dirs.len()) as isize;
        assert_eq!(entries, 20 * 100 + 20 + 12);
        let per_entry = retained / entries;
        assert!(
            per_entry <= 160,
            "the plan holds {per_entry} bytes per entry"
        );
    }

    #[test]
    fn paths_are_rebuilt_from_the_parents() {
        let trees = deep_tree(2, 2, 2);
        let plan = build(&trees, &[]);
        let mut files: Vec<String> = plan.files.iter().map(|f| plan.shown(f)).collect();
        files.sort();
        assert_eq!(
            files,
            [
                "/level-01/level-00/module-000/source-file-00000.rs",
                "/level-01/level-00/module-000/source-file-00001.rs",
                "/level-01/level-00/module-001/source-file-00000.rs",
                "/level-01/level-00/module-001/source-file-00001.rs",
            ]
        );
        let deepest = plan.dirs.iter().map(|d| plan.depth(d)).max();
        assert_eq!(deepest, Some(2));
        let f = &plan.files[0];
        let names = plan.path(f);
        assert_eq!(names.names().len(), 4);
        assert_eq!(names.names()[3], f.name);
    }

    #[test]
    fn a_selected_path_keeps_its_ancestors_as_parents() {
        let trees = deep_tree(2, 2, 2);
        let plan = build(&trees, &[PathBuf::from("/level-01/level-00/module-001")]);
        let dirs: Vec<String> = plan.dirs.iter().map(|d| plan.shown(d)).collect();
        assert_eq!(
            dirs,
            [
                "/level-01",
                "/level-01/level-00",
                "/level-01/level-00/module-001"
            ]
        );
        let files: Vec<String> = plan.files.iter().map(|f| plan.shown(f)).collect();
        assert_eq!(files.len(), 2);
        assert!(
            files
                .iter()
                .all(|f| f.starts_with("/level-01/level-00/module-001/"))
        );
    }
}
