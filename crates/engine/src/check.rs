//! `check`: is every recovery point restorable, and can the machine be unlocked? The plain
//! objects first (key files and their copies, `machine.json`), then structure (index files, packs present at
//! their size, recovery points and every reachable tree decrypt, every file's blobs indexed);
//! with `read_data`, every pack is read whole, its header compared with the index and every
//! blob decrypted and verified against its id, and damage is reported with the files it hits.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use futures::StreamExt;
use rbackup_crypto::BlobId;

use crate::codec::json;
use crate::error::Result;
use crate::id::Id;
use crate::index::{self, Index};
use crate::keyfiles::KeyFileState;
use crate::layout::{self, FORMAT_VERSION, MachineMarker, get_bounded, limits, pack_rel};
use crate::pack;
use crate::repo::Repository;
use crate::report::{CheckOptions, CheckReport};
use crate::snapshot::RecoveryPoint;
use crate::tree::NodeKind;

impl Repository {
    /// Checks the repository; problems are collected in the report, not returned as errors.
    /// Without a local mark: see [`Repository::check_with`].
    pub async fn check(&self, read_data: bool) -> Result<CheckReport> {
        self.check_with(CheckOptions::new(read_data)).await
    }

    /// [`Repository::check`], and the recovery points compared with each other and with the
    /// embedder's local mark (see [`crate::assess`]); the raised mark is in the report.
    pub async fn check_with(&self, opts: CheckOptions) -> Result<CheckReport> {
        let mut report = CheckReport::default();
        self.check_plain_objects(&mut report).await?;
        let (index, listed) = self.check_index(&mut report).await?;
        self.check_packs(&index, &mut report).await?;
        let rps = self.check_recovery_points(&mut report).await?;
        // Soft-deleted points are checked like the others (they are restorable); their
        // tombstones account for the purged ones, and one that does not open is an error.
        let (tombs, unreadable) = self.tombstones().await?;
        let stored: HashSet<&Id> = rps.iter().map(|(id, _)| id).collect();
        report.soft_deleted = tombs.iter().filter(|(id, _)| stored.contains(id)).count() as u64;
        report.errors.extend(unreadable);
        let deleted: HashSet<Id> = tombs.iter().map(|(id, _)| *id).collect();
        report.freshness =
            crate::freshness::assess_accounting(&rps, &deleted, opts.freshness.as_ref());
        let mut mark = opts.freshness.unwrap_or_default();
        mark.observe(&rps);
        report.freshness_mark = mark;
        let roots: Vec<(Id, BlobId)> = rps.iter().map(|(id, rp)| (*id, rp.tree)).collect();
        let damaged: HashSet<BlobId> = if opts.read_data {
            self.read_all_packs(group_by_pack(&index, listed), &mut report)
                .await
        } else {
            HashSet::new()
        };
        self.check_trees(&index, &roots, &damaged, &mut report)
            .await;
        Ok(report)
    }

    /// The objects under the machine that are not sealed: each key file and its copy (see
    /// `keyfiles.rs`), and `machine.json`, which must be exactly what registration wrote for
    /// the sealed config's creation time.
    async fn check_plain_objects(&self, report: &mut CheckReport) -> Result<()> {
        for issue in self.key_file_issues().await? {
            let text = match issue.state {
                KeyFileState::Damaged => "is damaged",
                KeyFileState::Missing => "is missing",
                KeyFileState::NoIntegrityRecord => {
                    report.key_files.push(issue);
                    continue;
                }
            };
            let (path, detail) = (&issue.path, &issue.detail);
            report
                .errors
                .push(format!("key file {path} {text}: {detail}"));
            report.key_files.push(issue);
        }
        let path = self.path(layout::MACHINE_JSON);
        let marker = MachineMarker {
            format: FORMAT_VERSION,
            machine_id: self.machine.clone(),
            created: self.config.created.clone(),
        };
        let max = limits(layout::MACHINE_JSON).stored;
        match get_bounded(&*self.store, &path, max).await {
            Ok(b) if b == json(&marker) => {}
            Ok(b) => report.errors.push(format!(
                "{path} is damaged: it is not the record of this machine's sealed config \
                 (machine {}, created {}); found {:?}",
                marker.machine_id,
                marker.created,
                String::from_utf8_lossy(&b[..b.len().min(200)])
            )),
            Err(e) => report.errors.push(format!("{path}: {e}")),
        }
        Ok(())
    }

    /// Loads the index, and keeps what each index file lists with its full blob ids (the
    /// in-memory index keeps a prefix only): what `--read-data` verifies.
    async fn check_index(&self, report: &mut CheckReport) -> Result<(Index, Listed)> {
        let mut index = Index::default();
        let mut listed = Listed::new();
        for id in self.list_ids(index::KIND).await? {
            let rel = format!("{}/{}", index::KIND, id.to_hex());
            let max = limits(index::KIND).stored;
            match get_bounded(&*self.store, &self.path(&rel), max).await {
                Ok(bytes) => match index::open(&self.keys, &id, &bytes) {
                    Ok(f) => {
                        for p in &f.packs {
                            let blobs = listed.entry(p.id).or_default();
                            blobs.extend(p.blobs.iter().map(|e| (e.id, e.slot())));
                        }
                        index.add_file(f)
                    }
                    Err(e) => report.errors.push(format!("index file {rel}: {e}")),
                },
                Err(e) => report.errors.push(format!("index file {rel}: {e}")),
            }
        }
        index.finish();
        report.packs = index.pack_count() as u64;
        report.blobs = index.blob_count() as u64;
        Ok((index, listed))
    }

    async fn check_packs(&self, index: &Index, report: &mut CheckReport) -> Result<()> {
        let stored = self.stored_packs().await?;
        let mut listed = HashSet::new();
        for (_, id, size) in index.packs() {
            let name = id.to_hex();
            match stored.get(&name) {
                None => {
                    report.missing_packs += 1;
                    report.errors.push(format!(
                        "pack {name} is listed in the index but missing from the vault \
                         (the next backup writes its blobs again)"
                    ))
                }
                Some(&s) if s != size => report.errors.push(format!(
                    "pack {name} has {s} bytes in the vault but the index says {size}"
                )),
                Some(_) => {}
            }
            listed.insert(name);
        }
        report.unreferenced_packs = stored.keys().filter(|k| !listed.contains(*k)).count() as u64;
        Ok(())
    }

    async fn check_recovery_points(
        &self,
        report: &mut CheckReport,
    ) -> Result<Vec<(Id, RecoveryPoint)>> {
        let mut roots = Vec::new();
        for id in self.list_ids(crate::snapshot::KIND).await? {
            let rel = format!("{}/{}", crate::snapshot::KIND, id.to_hex());
            let max = limits(crate::snapshot::KIND).stored;
            let opened = match get_bounded(&*self.store, &self.path(&rel), max).await {
                Ok(b) => crate::snapshot::open(&self.keys, &id, &b),
                Err(e) => Err(e),
            };
            match opened {
                Ok(rp) => roots.push((id, rp)),
                Err(e) => report
                    .errors
                    .push(format!("recovery point {}: {e}", id.short())),
            }
        }
        report.recovery_points = roots.len() as u64;
        Ok(roots)
    }

    /// Walks every reachable tree once; names each file whose content is missing or damaged.
    async fn check_trees(
        &self,
        index: &Index,
        roots: &[(Id, BlobId)],
        damaged: &HashSet<BlobId>,
        report: &mut CheckReport,
    ) {
        let mut seen = HashSet::new();
        for (rp, root) in roots {
            let mut stack = vec![(PathBuf::from("/"), *root)];
            while let Some((dir, id)) = stack.pop() {
                // A tree seen before was checked with all its files (file paths of shared
                // subtrees are reported once).
                if !seen.insert(id) {
                    continue;
                }
                report.trees += 1;
                let tree = match self.load_tree(index, &id).await {
                    Ok(t) => t,
                    Err(e) => {
                        report.errors.push(format!(
                            "recovery point {}: directory {}: {e}",
                            rp.short(),
                            dir.display()
                        ));
                        continue;
                    }
                };
                for n in tree.nodes {
                    let path = dir.join(n.name_os());
                    match (n.kind, n.subtree) {
                        (NodeKind::Dir, Some(sub)) => stack.push((path, sub)),
                        _ => file_problems(index, damaged, rp, &path, &n.content, report),
                    }
                }
            }
        }
    }

    /// Reads every pack; returns the ids of damaged blobs.
    async fn read_all_packs(
        &self,
        packs: Vec<(Id, PackBlobs)>,
        report: &mut CheckReport,
    ) -> HashSet<BlobId> {
        let results: Vec<_> = futures::stream::iter(packs)
            .map(|(pack, blobs)| async move {
                let (path, max) = (self.path(&pack_rel(&pack)), limits(layout::PACKS).stored);
                let bytes = get_bounded(&*self.store, &path, max).await;
                tokio::task::spawn_blocking({
                    let keys = self.keys.clone();
                    move || verify_pack(&keys, &pack, bytes.map_err(|e| e.to_string()), &blobs)
                })
                .await
                .unwrap_or_else(|e| (0, vec![(None, format!("pack {}: {e}", pack.to_hex()))]))
            })
            .buffer_unordered(2)
            .collect()
            .await;
        let mut damaged = HashSet::new();
        for (read, problems) in results {
            report.blobs_read += read;
            for (blob, msg) in problems {
                damaged.extend(blob);
                report.errors.push(msg);
            }
        }
        damaged
    }
}

type PackBlobs = Vec<(BlobId, pack::Slot)>;

/// Full entries of each pack, as the index files list them.
type Listed = HashMap<Id, PackBlobs>;

/// The blobs to verify in each pack: each blob where the index reads it from (a second copy
/// elsewhere is not what a restore reads, so its damage is not the blob's).
fn group_by_pack(index: &Index, listed: Listed) -> Vec<(Id, PackBlobs)> {
    listed
        .into_iter()
        .filter_map(|(pack, mut blobs)| {
            blobs.retain(|(id, at)| {
                index
                    .get(id)
                    .is_some_and(|l| index.pack_id(l.pack) == pack && l.offset == at.offset)
            });
            blobs.sort_by_key(|(id, at)| (at.offset, *id));
            blobs.dedup();
            (!blobs.is_empty()).then_some((pack, blobs))
        })
        .collect()
}

/// Verifies one pack; returns blobs verified and problems (with the damaged blob, if one).
fn verify_pack(
    keys: &rbackup_crypto::MasterKeys,
    pack: &Id,
    bytes: std::result::Result<rbackup_store::Bytes, String>,
    blobs: &PackBlobs,
) -> (u64, Vec<(Option<BlobId>, String)>) {
    let name = pack.to_hex();
    let bytes = match bytes {
        Ok(b) => b,
        Err(e) => {
            return (
                0,
                blobs
                    .iter()
                    .map(|b| (Some(b.0), format!("pack {name}: {e}")))
                    .collect(),
            );
        }
    };
    let mut problems = Vec::new();
    match pack::read_header(keys, pack, &bytes) {
        Ok(header) => {
            let in_header: HashSet<(BlobId, u64)> =
                header.iter().map(|e| (e.id, e.offset)).collect();
            for b in blobs {
                if !in_header.contains(&(b.0, b.1.offset)) {
                    problems.push((
                        None,
                        format!(
                            "pack {name}: blob {} is in the index but not in the pack header",
                            b.0
                        ),
                    ));
                }
            }
        }
        Err(e) => problems.push((None, e.to_string())),
    }
    let key = keys.pack_key(&pack.0);
    let mut read = 0;
    // `group_by_pack` sorted the blobs by offset, so a bundle's members come together.
    let mut units = crate::bundle::Units::new(keys, &key);
    for (id, at) in blobs {
        let sealed = bytes
            .get(at.offset as usize..(at.offset + u64::from(at.len)) as usize)
            .unwrap_or_default();
        let result = units.open(id, at, sealed);
        match result {
            Ok(_) => read += 1,
            Err(e) => problems.push((Some(*id), format!("pack {name}: blob {id} is damaged: {e}"))),
        }
    }
    (read, problems)
}

fn file_problems(
    index: &Index,
    damaged: &HashSet<BlobId>,
    rp: &Id,
    path: &Path,
    content: &[BlobId],
    report: &mut CheckReport,
) {
    if let Some(id) = content.iter().find(|id| !index.contains(id)) {
        report.errors.push(format!(
            "recovery point {}: {} needs blob {id}, which is in no index",
            rp.short(),
            path.display()
        ));
    } else if content.iter().any(|id| damaged.contains(id)) {
        report.errors.push(format!(
            "recovery point {}: {} cannot be restored intact (damaged data)",
            rp.short(),
            path.display()
        ));
    }
}
