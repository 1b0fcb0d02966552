//! `delete`: removing from the target what the recovery point does not have, beneath the
//! restored paths only.
//!
//! Each directory of the plan that lies beneath a restored path is opened in the target (never
//! through a symlink) and listed; every entry the recovery point does not have there is
//! removed, a directory with all it holds, a symlink as the link itself. Directories above the
//! restored paths (`/home` for a restore of `/home/a`) are not looked at, so nothing outside
//! them is touched.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use rbackup_beneath::{Dir, Error as FsError, Name, RelPath, TreeCount};

use super::plan::Plan;

/// What the deletion removed (or, dry, would remove), and what it could not.
#[derive(Debug, Default)]
pub(crate) struct Deleted {
    pub count: TreeCount,
    pub warnings: Vec<String>,
}

/// Removes (with `dry`, measures) the entries beneath `roots` (absolute paths as backed up)
/// in `target` that `plan` does not have.
pub(crate) fn extras(plan: &Plan, target: &Dir, roots: &[PathBuf], dry: bool) -> Deleted {
    let roots: Vec<PathBuf> = roots
        .iter()
        .map(|r| r.strip_prefix("/").unwrap_or(r).to_path_buf())
        .collect();
    let in_scope = |dir: &Path| roots.iter().any(|r| dir.starts_with(r));
    let mut names: HashMap<Option<usize>, HashSet<&Name>> = HashMap::new();
    for e in plan.dirs.iter().chain(&plan.files) {
        names.entry(e.parent).or_default().insert(&e.name);
    }
    let mut scopes: Vec<(Option<usize>, RelPath)> = Vec::new();
    if in_scope(Path::new("")) {
        scopes.push((None, RelPath::new()));
    }
    for (i, d) in plan.dirs.iter().enumerate() {
        let rel = plan.path(d);
        if in_scope(&rel.to_path_buf()) {
            scopes.push((Some(i), rel));
        }
    }
    let mut out = Deleted::default();
    let none = HashSet::new();
    for (d, rel) in scopes {
        // Missing, a symlink or not a directory: the restore reported it; nothing to do here.
        let Ok(dir) = target.open_dir(&rel) else {
            continue;
        };
        let keep = names.get(&d).unwrap_or(&none);
        match dir.entries() {
            Ok(entries) => {
                for (name, _) in entries.into_iter().filter(|(n, _)| !keep.contains(n)) {
                    remove(&dir, name, dry, &mut out);
                }
            }
            Err(e) => out
                .warnings
                .push(format!("cannot look for files to delete: {e}")),
        }
    }
    out
}

fn remove(dir: &Dir, name: Name, dry: bool, out: &mut Deleted) {
    let rel = RelPath::from(name);
    let result: Result<TreeCount, FsError> = if dry {
        dir.measure_tree(&rel)
    } else {
        dir.remove_tree(&rel)
    };
    match result {
        Ok(c) => {
            out.count.files += c.files;
            out.count.dirs += c.dirs;
            out.count.bytes += c.bytes;
        }
        Err(e) => out.warnings.push(format!("not deleted: {e}")),
    }
}
