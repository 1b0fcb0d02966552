//! The running backup: the walker reads and chunks the sources on a blocking thread, packer
//! workers compress and seal blobs into staged packs, uploaders put the packs into the vault
//! and collect their index entries. Channels between the stages are bounded, and so is the
//! staging space (`Budget`), so a slow vault slows the walk instead of filling the disk.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use rbackup_chunker::Chunker;
use rbackup_crypto::BlobId;
use tokio::runtime::Handle;

use super::packer::{self, BlobJob, Budget, IndexCollector, PackerConfig};
use super::plan::Plan;
use super::walk::{SourceTrie, Walker};
use super::{BackupOptions, first_error, join_all};
use crate::error::{EngineError, InternalFailure, Result};
use crate::filescache::GenerationWriter;
use crate::repo::Repository;
use crate::report::BackupReport;

/// What the pipeline produced: the new root tree (`None` when the run was cancelled), the
/// walker's counts, and what the uploaders collected (index entries not yet flushed, packs
/// and bytes written).
pub(super) struct Ran {
    pub root: Option<BlobId>,
    pub report: BackupReport,
    pub collector: Arc<tokio::sync::Mutex<IndexCollector>>,
    pub budget: Arc<Budget>,
    /// This run's files cache generation, to be put in place once the recovery point is.
    pub files: Option<GenerationWriter>,
}

/// The packer workers and uploaders, started; the walker (or a copy) feeds them through
/// `blobs`, and drops it to make them finish.
pub(crate) struct Stages {
    pub blobs: Sender<BlobJob>,
    pub workers: Vec<JoinHandle<Result<()>>>,
    pub uploaders: Vec<JoinHandle<Result<()>>>,
    pub budget: Arc<Budget>,
    pub collector: Arc<tokio::sync::Mutex<IndexCollector>>,
}

/// How [`Repository::start_stages`] sizes the stages.
pub(crate) struct StageSettings {
    pub threads: usize,
    /// Uploads in flight asked for (0: the store's hint).
    pub uploads: usize,
    pub budget_bytes: u64,
    pub staging: std::path::PathBuf,
    pub pack_size: u64,
    pub level: i32,
    pub throttle: Option<rbackup_throttle::Throttle>,
}

impl Stages {
    /// Drops the feed, lets the workers flush their packs and the uploaders finish, and joins
    /// them all, returning every stage's result (look at none before all have ended).
    pub(crate) async fn finish(
        self,
    ) -> (
        Vec<Result<()>>,
        Arc<Budget>,
        Arc<tokio::sync::Mutex<IndexCollector>>,
    ) {
        drop(self.blobs);
        let mut results = join_all(self.workers).await;
        results.extend(join_all(self.uploaders).await);
        (results, self.budget, self.collector)
    }
}

impl Repository {
    /// Runs walk → pack → upload to the end and joins every thread before looking at any
    /// result.
    pub(super) async fn run_pipeline(&self, opts: &BackupOptions, plan: &Plan) -> Result<Ran> {
        let threads = match opts.threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let chunker = Chunker::new(self.keys.chunker_key(), self.config.chunker)
            .map_err(|e| EngineError::corrupt("machine config", e))?;
        let stages = self.start_stages(StageSettings {
            threads,
            uploads: opts.uploads,
            budget_bytes: plan.budget_bytes,
            staging: plan.staging.path().to_path_buf(),
            pack_size: opts.pack_size,
            level: opts.compression_level,
            throttle: opts.throttle.clone(),
        });
        let handle = Handle::current();

        let walked = {
            let (repo, idx, progress) = (self.clone(), plan.index.clone(), opts.progress.clone());
            let (before_open, cancel) = (opts.before_open.clone(), opts.cancel.clone());
            let links = opts.links;
            let trie = SourceTrie::new(&plan.paths);
            let (blob_tx, excludes) = (stages.blobs, plan.excludes.clone());
            let parent_root = plan.parent_root.clone();
            let (prior, next) = match &plan.files_cache {
                Some(fc) => {
                    let parent = plan.parent.as_ref().map(|(id, _)| id);
                    (parent.and_then(|id| fc.open(id)), fc.create(&plan.rp_id))
                }
                None => (None, None),
            };
            tokio::task::spawn_blocking(move || {
                let mut w = Walker {
                    repo: &repo,
                    handle,
                    index: &idx,
                    chunker,
                    tx: blob_tx,
                    excludes,
                    progress,
                    report: BackupReport::default(),
                    sent: super::sent::Sent::default(),
                    root_dev: None,
                    before_open,
                    cancel,
                    links,
                    hard_links: Default::default(),
                    prior,
                    next,
                };
                let root = w.run(&trie, parent_root);
                (root, w.report, w.next)
            })
            .await
            .map_err(|e| EngineError::join("backup walk", e))?
        };
        // The walker dropped its sender: workers drain, flush their packs and stop; then the
        // uploaders stop. Join everything before looking at any result.
        let worker_results = join_all(stages.workers).await;
        let uploader_results = join_all(stages.uploaders).await;
        let (root, report, files) = walked;
        let root = first_error(root, worker_results.into_iter().chain(uploader_results));
        let cancelled = opts.cancel.is_cancelled();
        let root = match root {
            Ok(r) if !cancelled => Some(r),
            Ok(_) => None,
            // A stop makes each stage see "the next stage stopped": that is the stop itself.
            Err(EngineError::Internal {
                failure: InternalFailure::StageStopped,
                ..
            }) if cancelled => None,
            Err(e) => return Err(e),
        };
        // A cancelled run's generation is dropped, which removes it.
        let files = files.filter(|_| root.is_some());
        Ok(Ran {
            root,
            report,
            collector: stages.collector,
            budget: stages.budget,
            files,
        })
    }

    /// Starts the packer workers and the uploaders.
    pub(crate) fn start_stages(&self, s: StageSettings) -> Stages {
        let (threads, uploads) = (s.threads.max(1), self.in_flight(s.uploads));
        let budget = Arc::new(Budget::new(s.budget_bytes));
        // Every worker's open pack and every upload can hold a pack at once within the budget.
        let pack_target = s
            .pack_size
            .min((s.budget_bytes / (threads + uploads) as u64).max(1 << 20));
        let cfg = PackerConfig {
            keys: self.keys.clone(),
            staging: s.staging,
            pack_target,
            level: s.level,
            budget: budget.clone(),
        };
        let (blob_tx, blob_rx) = crossbeam_channel::bounded(threads * 2);
        let (pack_tx, pack_rx) = crossbeam_channel::bounded(2);
        let collector = Arc::new(tokio::sync::Mutex::new(IndexCollector::new(
            self.clock.now_instant(),
        )));
        let handle = Handle::current();

        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (cfg, rx, tx) = (cfg.clone(), blob_rx.clone(), pack_tx.clone());
                std::thread::spawn(move || packer::worker(cfg, rx, tx))
            })
            .collect();
        drop((blob_rx, pack_tx));
        let uploaders: Vec<_> = (0..uploads)
            .map(|_| {
                let (repo, h, rx) = (self.clone(), handle.clone(), pack_rx.clone());
                let (b, c, t) = (budget.clone(), collector.clone(), s.throttle.clone());
                std::thread::spawn(move || packer::uploader(repo, h, rx, b, c, t))
            })
            .collect();
        drop(pack_rx);
        Stages {
            blobs: blob_tx,
            workers,
            uploaders,
            budget,
            collector,
        }
    }
}
