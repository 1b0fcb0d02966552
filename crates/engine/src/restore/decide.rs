//! What a restore does with what the target already holds, decided before anything is read
//! or staged: each file is new, overwrites what is there, or leaves it ([`Overwrite`]). Only
//! what will be written is fetched, staged and counted against the target's free space.

use std::collections::HashMap;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use rbackup_beneath::{Access, Dir, FileKind, RelPath};
use rbackup_crypto::{BlobId, MasterKeys};

use super::plan::Plan;
use crate::error::{EngineError, Result, SpacePlace};

/// What a restore does with a file that already exists in the target (restic's choices).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overwrite {
    /// Replace it (the default, as restic's). A directory where a file goes is still left
    /// alone and reported.
    #[default]
    Always,
    /// Replace it unless it is a regular file with the backed-up content. Of the same size
    /// and modification time, it is taken as unchanged without reading (the test a backup
    /// uses to reuse a file); of the same size only, it is read and each stretch compared with
    /// its blob id, and when all match only its metadata is set (restic's `if-changed`).
    IfChanged,
    /// Leave whatever is there.
    Never,
}

/// The decision for one file of the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Nothing is at its name: written.
    New,
    /// Something is: written over it.
    Overwrite,
    /// Something is and stays: nothing is written.
    Keep,
    /// A file with the same content is there: only its metadata is set.
    Refresh,
    /// Of the same size but another mtime: its content is to be compared
    /// ([`compare_contents`] turns it into `Refresh` or `Overwrite`).
    Compare,
}

impl Decision {
    /// Whether the file's data is fetched and written.
    pub(crate) fn writes(self) -> bool {
        matches!(
            self,
            Decision::New | Decision::Overwrite | Decision::Compare
        )
    }
}

/// Decides every file of `plan` against `target` (`None`: it does not exist yet, so every
/// file is new). A name that cannot be looked at (a symlink or a file in the way of its
/// directory) is decided `New`: placing it reports what stands in the way.
pub(crate) fn decide(plan: &Plan, target: Option<&Dir>, how: Overwrite) -> Vec<Decision> {
    let Some(target) = target else {
        return vec![Decision::New; plan.files.len()];
    };
    // Files come in tree order: keep the current parent open (or known missing).
    let mut parent: Option<(Option<usize>, Option<Dir>)> = None;
    plan.files
        .iter()
        .map(|f| {
            if parent.as_ref().is_none_or(|(p, _)| *p != f.parent) {
                let rel = f
                    .parent
                    .map_or_else(RelPath::new, |d| plan.path(&plan.dirs[d]));
                parent = Some((f.parent, target.open_dir(&rel).ok()));
            }
            let Some((_, Some(dir))) = &parent else {
                return Decision::New;
            };
            match dir.stat(&RelPath::from(f.name.clone())) {
                Err(_) => Decision::New,
                Ok(_) if how == Overwrite::Never => Decision::Keep,
                Ok(has)
                    if how == Overwrite::IfChanged
                        && has.kind == FileKind::File
                        && has.size == f.meta.size =>
                {
                    match has.mtime_ns == f.meta.mtime_ns {
                        true => Decision::Keep,
                        false => Decision::Compare,
                    }
                }
                Ok(_) => Decision::Overwrite,
            }
        })
        .collect()
}

/// Reads every file decided [`Decision::Compare`] in `target` and checks each stretch of it
/// against the id of the blob the recovery point has there: all the same, it is `Refresh`ed,
/// else `Overwrite`n. Only files the blobs cover without gaps are compared (a sparse file's
/// holes would need reading as well); the others are overwritten.
pub(crate) fn compare_contents(
    plan: &Plan,
    target: &Dir,
    keys: &MasterKeys,
    decisions: &mut [Decision],
) {
    let mut blobs: HashMap<usize, Vec<(u64, u32, BlobId)>> = HashMap::new();
    for read in plan.packs.values().flatten() {
        for t in read
            .targets
            .iter()
            .filter(|t| decisions[t.file] == Decision::Compare)
        {
            blobs
                .entry(t.file)
                .or_default()
                .push((t.offset, read.raw_len, read.id));
        }
    }
    for (f, d) in decisions.iter_mut().enumerate() {
        if *d == Decision::Compare {
            let stretches = blobs.remove(&f).unwrap_or_default();
            *d = match same_content(plan, f, target, keys, stretches) {
                true => Decision::Refresh,
                false => Decision::Overwrite,
            };
        }
    }
}

fn same_content(
    plan: &Plan,
    f: usize,
    target: &Dir,
    keys: &MasterKeys,
    mut stretches: Vec<(u64, u32, BlobId)>,
) -> bool {
    stretches.sort_by_key(|s| s.0);
    let mut end = 0;
    for &(offset, len, _) in &stretches {
        if offset != end {
            return false;
        }
        end += u64::from(len);
    }
    if end != plan.files[f].meta.size {
        return false;
    }
    let Ok(file) = target.open_file(&plan.path(&plan.files[f]), Access::Read) else {
        return false;
    };
    let mut buf = Vec::new();
    stretches.into_iter().all(|(offset, len, id)| {
        buf.resize(len as usize, 0);
        file.read_exact_at(&mut buf, offset).is_ok() && keys.blob_id(&buf) == id
    })
}

/// Bytes each file of the plan will be given from the vault (holes take none).
pub(crate) fn data_per_file(plan: &Plan) -> Vec<u64> {
    let mut bytes = vec![0u64; plan.files.len()];
    for read in plan.packs.values().flatten() {
        for t in &read.targets {
            bytes[t.file] += u64::from(read.raw_len);
        }
    }
    bytes
}

/// Refuses a restore whose files will not fit in the target, when the target is on another
/// file system than the recovery folder (on the same one, files are moved by rename and the
/// recovery folder's check covers them). `data` is [`data_per_file`] of the files that will be
/// written; each is counted in whole blocks. `target` is the target if it exists; else the
/// nearest existing folder above it is looked at, which is where it will be made.
pub(crate) fn check_target_space(
    target_path: &Path,
    target: Option<&Dir>,
    recovery_dir: &Path,
    data: impl Iterator<Item = u64>,
) -> Result<()> {
    let existing = target_path
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    let dev = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.dev())
            .map_err(|e| EngineError::io(p, e))
    };
    if dev(existing)? == dev(recovery_dir)? {
        return Ok(());
    }
    let space = match target {
        Some(dir) => dir.space()?,
        None => Dir::open(existing)?.space()?,
    };
    let block = space.block_size;
    let needed = data
        .map(|b| b.div_ceil(block).saturating_mul(block))
        .sum::<u64>();
    if needed > space.free {
        return Err(EngineError::NoSpace {
            place: SpacePlace::Target,
            path: target_path.to_path_buf(),
            needed,
            available: space.free,
        });
    }
    Ok(())
}

/// Whether the case collisions the plan found matter: only on a target whose names fold
/// case. A dry run probes without writing (`may_write` false). A target that does not exist
/// yet, or cannot be probed, is assumed to fold (the warning is then given rather than
/// missed).
pub(crate) fn folds_case(target: Option<&Dir>, may_write: bool) -> bool {
    let Some(target) = target else {
        return true;
    };
    match target.folds_case(may_write) {
        Ok(Some(folds)) => folds,
        Ok(None) => true,
        Err(e) => {
            tracing::debug!("case probe: {e}");
            true
        }
    }
}
