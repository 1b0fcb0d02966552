//! Before anything is read: the sources, their size against the limits, the parent, the
//! staging area, and the index this backup deduplicates against (B2–B4 of the lease order in
//! ARCHITECTURE.md), with the packs of interrupted runs adopted into it.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use rbackup_crypto::BlobId;
use std::sync::Arc;

use super::adopt::Adopted;
use super::excludes::Excludes;
use super::{
    BackupOptions, MAX_SOURCE_BYTES, check_cache_space, check_recovery_point_limit, choose_parent,
    normalize_sources, prescan,
};
use crate::error::{EngineError, Result};
use crate::filescache::FilesCacheDir;
use crate::id::Id;
use crate::index::Index;
use crate::lock::Lease;
use crate::repo::Repository;
use crate::snapshot::RecoveryPoint;
use crate::tree::Tree;
use crate::workdir::WorkDir;

/// What one backup works from.
pub(super) struct Plan {
    pub paths: Vec<PathBuf>,
    /// The sources as the recovery point records them.
    pub path_strings: Vec<String>,
    pub excludes: Excludes,
    /// Files and bytes under the sources (from the prescan).
    pub files: u64,
    pub bytes: u64,
    pub parent: Option<(Id, RecoveryPoint)>,
    /// The new recovery point's sequence and predecessors (see `freshness.rs`), from the
    /// recovery points present when the backup started: a backup running beside this one
    /// may get the same sequence, which is harmless (both name the same predecessors).
    pub sequence: u64,
    pub predecessors: Vec<Id>,
    /// The id the new recovery point will have (its files cache generation is named by it).
    pub rp_id: Id,
    /// The parent's root tree and its id, when `index` holds it (a doomed root is not used).
    pub parent_root: Option<(BlobId, Tree)>,
    /// This machine's files cache, when the backup has a cache dir.
    pub files_cache: Option<FilesCacheDir>,
    /// The recovery points whose files cache generations outlive this backup: the newest of
    /// each job and paths but this backup's own (see `choose_parent`).
    pub keep_generations: HashSet<Id>,
    /// Where packs are staged before upload; removed when the plan is dropped.
    pub staging: WorkDir,
    /// Staging bytes allowed (the 5% cache rule), or unlimited.
    pub budget_bytes: u64,
    /// The index without the packs a pending prune will delete: the only one this backup
    /// deduplicates against and reads the parent's trees from.
    pub index: Arc<Index>,
    /// The packs of interrupted runs taken into `index` (see `adopt.rs`).
    pub adopted: Adopted,
}

impl Repository {
    pub(super) async fn plan_backup(&self, opts: &BackupOptions, lease: &Lease) -> Result<Plan> {
        let paths = normalize_sources(&opts.paths)?;
        let excludes = Excludes::new(&opts.excludes)?;
        let (files, bytes) = {
            let (p, e) = (paths.clone(), excludes.clone());
            tokio::task::spawn_blocking(move || prescan(&p, &e))
                .await
                .map_err(|e| EngineError::join("backup prescan", e))?
        };
        if bytes > MAX_SOURCE_BYTES {
            return Err(EngineError::SourceTooLarge {
                bytes,
                max: MAX_SOURCE_BYTES,
            });
        }
        opts.progress.total(files, bytes);
        let rps = self.recovery_points().await?;
        check_recovery_point_limit(rps.len())?;
        let path_strings: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        let parent = choose_parent(&rps, &path_strings, opts.job.as_deref());
        let (sequence, predecessors) = crate::freshness::next_in_line(&rps);
        let role = crate::error::ScratchFolder::Cache;
        let staging = match &opts.cache_dir {
            Some(dir) => WorkDir::create(dir, "staging", role, 0)?,
            None => WorkDir::private_temp("staging", role)?,
        };
        let budget_bytes = if opts.cache_rule {
            let cache_dir = opts.cache_dir.clone().unwrap_or_else(std::env::temp_dir);
            check_cache_space(&cache_dir, bytes)?
        } else {
            u64::MAX
        };
        // B2–B4: list the prune markers, load the index without the packs they doom, and
        // rewrite the lease honouring them (see prune.rs).
        let (mut index, named) = self.load_index_for_backup(lease).await?;
        // Then the packs a killed run left unindexed, except those the markers name.
        let adopted = self.adopt_unindexed(&mut index, &named, lease).await?;
        let index = Arc::new(index);
        let parent_root = match &parent {
            Some((_, rp)) if index.contains(&rp.tree) => {
                Some((rp.tree, self.load_tree(&index, &rp.tree).await?))
            }
            _ => None,
        };
        let files_cache = match &opts.cache_dir {
            Some(dir) => Some(FilesCacheDir::new(
                crate::cache::files_cache_dir(dir, &self.vault_id, &self.machine)?,
                self.keys.clone(),
                &self.vault_id,
                &self.machine,
            )),
            None => None,
        };
        let keep_generations = newest_per_job(&rps, &path_strings, opts.job.as_deref());
        Ok(Plan {
            paths,
            path_strings,
            excludes,
            files,
            bytes,
            parent,
            sequence,
            predecessors,
            rp_id: Id::random(),
            parent_root,
            files_cache,
            keep_generations,
            staging,
            budget_bytes,
            index,
            adopted,
        })
    }
}

/// The newest recovery point of each job and paths, the ones a later backup takes as parent,
/// leaving out the group this backup joins (its own point becomes that group's newest).
fn newest_per_job(rps: &[(Id, RecoveryPoint)], paths: &[String], job: Option<&str>) -> HashSet<Id> {
    let mut newest: HashMap<(&[String], Option<&str>), Id> = HashMap::new();
    for (id, rp) in rps {
        newest.insert((&rp.paths, rp.job.as_deref()), *id); // oldest first: the last one stays
    }
    newest.remove(&(paths, job));
    newest.into_values().collect()
}
