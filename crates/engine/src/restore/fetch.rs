//! Reading blobs for a restore: pack by pack on several threads, neighbouring blobs merged into
//! one ranged read, every blob decrypted and checked against its id before it is written.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use tokio::runtime::Handle;

use super::plan::{BlobRead, Plan};
use super::stage::Stage;
use super::stop::{Stop, fs_cause, io_cause};
use crate::index::Index;
use crate::layout::pack_rel;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::report::FailureCause;

/// Reads of neighbouring blobs are merged when the gap is at most this...
const MERGE_GAP: u64 = 256 << 10;
/// ...and the merged read stays under this, which bounds a worker's memory.
const MAX_READ: u64 = 8 << 20;

/// Everything the fetch threads share.
pub(crate) struct Fetch {
    pub repo: Repository,
    pub handle: Handle,
    pub index: Arc<Index>,
    pub plan: Arc<Plan>,
    pub stage: Arc<Stage>,
    pub throttle: Option<rbackup_throttle::Throttle>,
    pub progress: Arc<dyn Progress>,
    pub stop: Arc<Stop>,
}

/// Why a file's data could not be staged, in words and by kind.
pub(crate) type Failure = (String, FailureCause);

impl Fetch {
    /// Fetches every pack's blobs on `threads` threads, until done or [`Stop`]ped; returns
    /// the files that failed, with why.
    pub(crate) fn run(&self, threads: usize) -> HashMap<usize, Failure> {
        let failures = Mutex::new(HashMap::new());
        let queue = Mutex::new(self.plan.packs.iter());
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    let mut files = OpenFiles::default();
                    while !self.stop.is_set() {
                        let next = queue.lock().unwrap_or_else(|p| p.into_inner()).next();
                        let Some((&pack, reads)) = next else { break };
                        for (file, reason) in self.pack(pack, reads, &mut files) {
                            failures
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .entry(file)
                                .or_insert(reason);
                        }
                    }
                });
            }
        });
        failures.into_inner().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads one pack's blobs in merged ranges and writes them to the staged files.
    fn pack(&self, pack: u32, reads: &[BlobRead], files: &mut OpenFiles) -> Vec<(usize, Failure)> {
        let pack_id = self.index.pack_id(pack);
        let key = self.repo.keys.pack_key(&pack_id.0);
        let path = self.repo.path(&pack_rel(&pack_id));
        let mut failed = Vec::new();
        for group in merge_reads(reads) {
            if self.stop.is_set() {
                break;
            }
            let start = group[0].offset;
            let end = group
                .iter()
                .map(|r| r.offset + u64::from(r.len))
                .max()
                .unwrap_or(start);
            if let Some(t) = &self.throttle {
                t.acquire_blocking(end - start);
            }
            let bytes = match self
                .handle
                .block_on(self.repo.store.get_range(&path, Some(start..end)))
            {
                Ok(b) => b,
                Err(e) => {
                    let reason = (
                        format!("cannot read pack {}: {e}", pack_id.to_hex()),
                        FailureCause::VaultUnreadable,
                    );
                    failed.extend(
                        group
                            .iter()
                            .flat_map(|r| r.targets.iter().map(|t| (t.file, reason.clone()))),
                    );
                    continue;
                }
            };
            let mut units = crate::bundle::Units::new(&self.repo.keys, &key);
            for r in group {
                let lo = (r.offset - start) as usize;
                let sealed = bytes.get(lo..lo + r.len as usize).unwrap_or_default();
                let result = units
                    .open(&r.id, &r.slot(), sealed)
                    .map_err(|e| {
                        let why =
                            format!("blob {} in pack {} is damaged: {e}", r.id, pack_id.to_hex());
                        (why, FailureCause::VaultData)
                    })
                    .and_then(|content| {
                        for t in &r.targets {
                            files.write_at(
                                &self.stage,
                                t.file,
                                self.plan.files[t.file].meta.size,
                                t.offset,
                                &content,
                            )?;
                        }
                        Ok(content.len() as u64 * r.targets.len() as u64)
                    });
                match result {
                    Ok(n) => self.progress.bytes(n),
                    Err(reason) => {
                        self.stop.note(reason.1, self.stage.label());
                        failed.extend(r.targets.iter().map(|t| (t.file, reason.clone())))
                    }
                }
            }
        }
        failed
    }
}

/// The last few staged files a worker wrote to, kept open: consecutive blobs usually belong to
/// the same file, and opening it for every blob costs more than the write.
#[derive(Default)]
struct OpenFiles {
    open: Vec<(usize, File)>,
}

impl OpenFiles {
    const KEEP: usize = 16;

    fn write_at(
        &mut self,
        stage: &Stage,
        file: usize,
        size: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<(), Failure> {
        let pos = match self.open.iter().position(|(f, _)| *f == file) {
            Some(p) => p,
            None => {
                let f = stage
                    .open(file, size)
                    .map_err(|e| (format!("cannot stage: {e}"), fs_cause(&e)))?;
                if self.open.len() == Self::KEEP {
                    self.open.remove(0);
                }
                self.open.push((file, f));
                self.open.len() - 1
            }
        };
        self.open[pos]
            .1
            .write_all_at(data, offset)
            // The path is only built for an error message: this runs once per blob written.
            .map_err(|e| {
                let path = stage.path_of(file);
                (
                    format!("cannot write {}: {e}", path.display()),
                    io_cause(&e),
                )
            })
    }
}

/// Groups reads (sorted by offset) into ranges worth one request each.
fn merge_reads(reads: &[BlobRead]) -> Vec<&[BlobRead]> {
    let mut groups = Vec::new();
    let mut begin = 0;
    for i in 1..=reads.len() {
        let split = i == reads.len() || {
            let prev_end = reads[i - 1].offset + u64::from(reads[i - 1].len);
            let gap = reads[i].offset.saturating_sub(prev_end);
            let span = reads[i].offset + u64::from(reads[i].len) - reads[begin].offset;
            gap > MERGE_GAP || span > MAX_READ
        };
        if split {
            groups.push(&reads[begin..i]);
            begin = i;
        }
    }
    groups
}
