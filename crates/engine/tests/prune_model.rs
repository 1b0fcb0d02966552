//! Model-based test of backups, forget and prune on a `memory://` vault. Proptest generates
//! sequences of operations: backups of a small tree that evolves (files added, changed,
//! deleted, contents shared between files and versions so deduplication links the recovery
//! points), forget of some points, prunes (each carries out the decisions that became ripe,
//! then decides anew), moves of the vault's manual clock past the grace period or past lease
//! expiry, killed backups that leave a lease behind, and one backup at a time that is paused
//! after it took its lease and loaded its index, and released later, across prunes and clock
//! moves. The model is a map from recovery point to the tree it must hold; after every step
//! the vault's recovery points are exactly the model's, and each restores byte for byte.
//!
//! Time only moves by [`ManualClock::advance`], and after each move the test waits until the
//! paused backup's lease refresher has reacted ([`ManualClock::settled`]), so whether that
//! backup's lease survives is decided, not raced: moves of at most a third of the lease TTL
//! (the refresh period) never cost it its lease, and a move past the TTL always does, after
//! which the backup must refuse to commit.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use rbackup_engine::crypto::Passphrase;
use rbackup_engine::{
    BackupOptions, LeaseKind, ManualClock, PruneOptions, Repository, RestoreOptions,
    RetentionPolicy, Unlock,
};
use support::{Paused, Tree, manual_clock, noise, register_on, snapshot, start_paused};

/// Lease TTL of the test's repository handle; leases refresh every third of it.
const TTL: Duration = Duration::from_secs(120);
/// Prune grace period: shorter than the TTL, so a killed backup's lease can still hold a ripe
/// decision back.
const GRACE: Duration = Duration::from_secs(90);
/// Paths of the files the tree may hold (some nested, so trees have subtrees).
const NAMES: [&str; 6] = ["a.txt", "b.bin", "d/c.bin", "d/e/f.bin", "g.bin", "d/h.txt"];
/// Jobs (forget groups); one of them takes most backups, so forget has points to drop.
const JOBS: usize = 2;

/// File sizes (each file is one chunk): with few seeds and sizes, contents recur across files
/// and versions, so a backup often holds blobs that only forgotten points held before.
const SIZES: [usize; 4] = [0, 3 << 10, 17 << 10, 40 << 10];
const SEEDS: u64 = 6;

#[derive(Clone, Debug)]
enum Edit {
    /// Sets a file to `noise(len, seed)`.
    Put {
        file: usize,
        seed: u64,
        len: usize,
    },
    Delete {
        file: usize,
    },
}

#[derive(Clone, Debug)]
enum Op {
    Backup {
        job: usize,
        edits: Vec<Edit>,
    },
    /// Starts a backup of its own folder, holding an edited copy of an earlier version of
    /// the main folder (`back` versions ago: likely held only by forgotten points by the time
    /// a prune decides), and pauses it. Nothing happens while another backup is paused.
    StartPaused {
        job: usize,
        back: usize,
        edits: Vec<Edit>,
    },
    FinishPaused,
    Forget {
        job: Option<usize>,
        keep: u32,
    },
    Prune {
        repack_threshold: f64,
    },
    /// Moves time by up to the TTL (a paused backup keeps its lease).
    Tick {
        secs: u64,
    },
    PastGrace,
    PastLeaseExpiry,
    /// A backup killed right after taking its lease.
    KilledBackup,
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => (0..NAMES.len(), 0..SEEDS, prop::sample::select(&SIZES[..]))
            .prop_map(|(file, seed, len)| Edit::Put { file, seed, len }),
        1 => (0..NAMES.len()).prop_map(|file| Edit::Delete { file }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let edits = || prop::collection::vec(edit(), 0..4);
    prop_oneof![
        5 => (prop_oneof![3 => Just(0usize), 1 => Just(1usize)], edits())
            .prop_map(|(job, edits)| Op::Backup { job, edits }),
        2 => (0..JOBS, 1..5usize, edits())
            .prop_map(|(job, back, edits)| Op::StartPaused { job, back, edits }),
        3 => Just(Op::FinishPaused),
        3 => (prop::option::of(0..JOBS), prop_oneof![3 => Just(1u32), 1 => Just(2u32)])
            .prop_map(|(job, keep)| Op::Forget { job, keep }),
        5 => prop_oneof![Just(0.3), Just(0.0), Just(0.95)]
            .prop_map(|repack_threshold| Op::Prune { repack_threshold }),
        1 => (1..=TTL.as_secs()).prop_map(|secs| Op::Tick { secs }),
        3 => Just(Op::PastGrace),
        1 => Just(Op::PastLeaseExpiry),
        1 => Just(Op::KilledBackup),
    ]
}

/// What a recovery point must hold.
#[derive(Debug)]
struct Point {
    dir: PathBuf,
    tree: Tree,
    job: usize,
    /// Clock reading when its backup started (the point's time).
    started: Duration,
}

struct Running {
    paused: Paused,
    point: Point,
    /// The clock moved past its lease's expiry: it must not commit.
    lease_lost: bool,
}

struct Harness {
    work: tempfile::TempDir,
    repo: Repository,
    clock: Arc<ManualClock>,
    /// The main source folder's files, and the next modification time to give a written file.
    files: Tree,
    /// Earlier versions of `files`, oldest first.
    history: Vec<Tree>,
    mtime: u64,
    points: BTreeMap<String, Point>,
    running: Option<Running>,
}

fn job_name(job: usize) -> String {
    format!("job{job}")
}

impl Harness {
    async fn new() -> Harness {
        let work = tempfile::tempdir().unwrap();
        let store = rbackup_engine::store::open("memory://", &Default::default()).unwrap();
        let pass = Passphrase::new("model test passphrase").unwrap();
        let clock = manual_clock();
        let (vault, machine, keys) = register_on(store, "memory://", &pass, clock.clone()).await;
        let cache = work.path().join("cache");
        let mut repo = Repository::open(&vault, &machine, Unlock::Keys(keys), Some(&cache))
            .await
            .unwrap();
        repo.set_lease_ttl(TTL);
        for dir in ["src", "paused"] {
            std::fs::create_dir_all(work.path().join(dir)).unwrap();
        }
        Harness {
            work,
            repo,
            clock,
            files: Tree::new(),
            history: Vec::new(),
            mtime: 0,
            points: BTreeMap::new(),
            running: None,
        }
    }

    fn options(&self, dir: &Path, job: usize) -> BackupOptions {
        let mut o = BackupOptions::new([dir]);
        o.cache_dir = Some(self.work.path().join("cache"));
        o.job = Some(job_name(job));
        // Packs of one or two blobs, so prune has packs to drop, keep and repack.
        o.pack_size = 32 << 10;
        o.threads = 1;
        o.cache_rule = false;
        o
    }

    /// Makes `dir`, which holds `old`, hold `new`. Each written file gets a modification time
    /// of its own, so the backup's unchanged-file shortcut (size, times, inode) is only taken
    /// for files this test did not touch, however fast it writes.
    fn sync_dir(&mut self, dir: &Path, old: &Tree, new: &Tree) {
        for path in old.keys().filter(|p| !new.contains_key(*p)) {
            std::fs::remove_file(dir.join(path)).unwrap();
        }
        for (path, bytes) in new.iter().filter(|(p, b)| old.get(*p) != Some(*b)) {
            let full = dir.join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(&full, bytes).unwrap();
            self.mtime += 1;
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000 + self.mtime);
            let f = std::fs::File::options().write(true).open(&full).unwrap();
            f.set_modified(t).unwrap();
        }
    }

    /// Moves time by `d`. A move past the TTL is one jump, which costs a paused backup its
    /// lease; a shorter one goes in steps of at most the refresh period, after each of which
    /// the paused backup's lease refresher (the only sleeper left once the test's own leases
    /// are gone) has reacted, so the lease stays live.
    async fn advance(&mut self, d: Duration) {
        let sleepers = usize::from(self.running.is_some());
        if d > TTL {
            self.clock.advance(d);
            if let Some(r) = &mut self.running {
                r.lease_lost = true;
            }
            return self.clock.settled(sleepers).await;
        }
        let mut left = d;
        while !left.is_zero() {
            let step = left.min(TTL / 3);
            self.clock.advance(step);
            self.clock.settled(sleepers).await;
            left -= step;
        }
    }

    async fn run(&mut self, op: Op) {
        match op {
            Op::Backup { job, edits } => {
                let new = edited(&self.files, &edits);
                let (src, old) = (self.work.path().join("src"), self.files.clone());
                self.sync_dir(&src, &old, &new);
                self.history.push(old);
                self.files = new.clone();
                self.advance(Duration::from_secs(1)).await;
                let started = self.clock.elapsed();
                let report = self.repo.backup(self.options(&src, job)).await.unwrap();
                let point = Point {
                    dir: src,
                    tree: new,
                    job,
                    started,
                };
                self.points.insert(report.recovery_point.unwrap(), point);
            }
            Op::StartPaused { job, back, edits } => {
                if self.running.is_some() {
                    return;
                }
                // The folder of the last paused backup, edited: a later paused backup of the
                // same job has the earlier one as its parent.
                let dir = self.work.path().join("paused");
                let old = snapshot(&dir);
                let base = match self.history.len().checked_sub(back) {
                    Some(i) if back > 0 => &self.history[i],
                    _ => &self.files,
                };
                let new = edited(base, &edits);
                self.sync_dir(&dir, &old, &new);
                self.advance(Duration::from_secs(1)).await;
                let started = self.clock.elapsed();
                let paused = start_paused(&self.repo, self.options(&dir, job)).await;
                let point = Point {
                    dir,
                    tree: new,
                    job,
                    started,
                };
                self.running = Some(Running {
                    paused,
                    point,
                    lease_lost: false,
                });
            }
            Op::FinishPaused => {
                let Some(r) = self.running.take() else { return };
                match (r.paused.finish().await, r.lease_lost) {
                    (Ok(report), false) => {
                        self.points.insert(report.recovery_point.unwrap(), r.point);
                    }
                    (Err(e), true) => assert!(e.to_string().contains("lease"), "{e}"),
                    (result, lost) => panic!("lease lost: {lost}, backup: {result:?}"),
                }
            }
            Op::Forget { job, keep } => {
                let expected = self.model_forget(job, keep);
                let policy = RetentionPolicy {
                    keep_last: Some(keep),
                    ..Default::default()
                };
                let name = job.map(job_name);
                let f = self
                    .repo
                    .forget(&policy, name.as_deref(), false)
                    .await
                    .unwrap();
                assert_eq!(f.forgotten, expected.len() as u64, "{f:?}");
                for id in expected {
                    self.points.remove(&id);
                }
            }
            Op::Prune { repack_threshold } => {
                let mut opts = PruneOptions::default();
                opts.grace = GRACE;
                opts.repack_threshold = repack_threshold;
                self.repo.prune(opts).await.unwrap();
            }
            Op::Tick { secs } => self.advance(Duration::from_secs(secs)).await,
            Op::PastGrace => self.advance(GRACE + Duration::from_secs(1)).await,
            Op::PastLeaseExpiry => self.advance(TTL + Duration::from_secs(1)).await,
            Op::KilledBackup => {
                let lease = self.repo.take_lease(LeaseKind::Shared, "backup").await;
                lease.unwrap().abandon();
            }
        }
    }

    /// The points `keep_last(keep)` forgets: in each job's group (or only `job`'s), all but
    /// the `keep` newest.
    fn model_forget(&self, job: Option<usize>, keep: u32) -> Vec<String> {
        let mut out = Vec::new();
        for j in (0..JOBS).filter(|j| job.is_none_or(|only| only == *j)) {
            let mut group: Vec<(&String, &Point)> =
                self.points.iter().filter(|(_, p)| p.job == j).collect();
            group.sort_by_key(|(_, p)| std::cmp::Reverse(p.started));
            out.extend(
                group
                    .iter()
                    .skip(keep as usize)
                    .map(|(id, _)| (*id).clone()),
            );
        }
        out
    }

    /// The vault holds exactly the model's recovery points, and each restores exactly.
    async fn check(&mut self) {
        let ids: BTreeSet<String> = support::point_ids(&self.repo).await.into_iter().collect();
        assert_eq!(ids, self.points.keys().cloned().collect::<BTreeSet<_>>());
        for (id, point) in &self.points {
            let target = self.work.path().join("restored");
            let recovery = self.work.path().join("recovery");
            let mut o = RestoreOptions::new(id, &target, &recovery);
            o.threads = 1;
            self.repo.restore(o).await.unwrap();
            let back = target.join(point.dir.strip_prefix("/").unwrap());
            assert_eq!(snapshot(&back), point.tree, "recovery point {id} restored");
            std::fs::remove_dir_all(&target).unwrap();
        }
    }
}

/// `files` after `edits`; a tree never becomes empty (a paused backup waits at its first file).
fn edited(files: &Tree, edits: &[Edit]) -> Tree {
    let mut t = files.clone();
    for e in edits {
        match *e {
            Edit::Put { file, seed, len } => {
                t.insert(PathBuf::from(NAMES[file]), noise(len, seed));
            }
            Edit::Delete { file } if t.len() > 1 => {
                t.remove(Path::new(NAMES[file]));
            }
            Edit::Delete { .. } => {}
        }
    }
    if t.is_empty() {
        t.insert(PathBuf::from(NAMES[0]), b"first".to_vec());
    }
    t
}

async fn run_case(ops: Vec<Op>) {
    let mut h = Harness::new().await;
    for op in ops {
        h.run(op).await;
        h.check().await;
    }
    // Let a paused backup finish and killed backups' leases run out; then a prune carries
    // out every decision and decides anew, and the next one, past the grace period, carries
    // that out: nothing is left to delete, and everything is still intact.
    h.run(Op::FinishPaused).await;
    h.advance(TTL + Duration::from_secs(1)).await;
    let mut opts = PruneOptions::default();
    opts.grace = GRACE;
    h.repo.prune(opts.clone()).await.unwrap();
    h.advance(GRACE + Duration::from_secs(1)).await;
    let last = h.repo.prune(opts).await.unwrap();
    assert_eq!(
        (last.packs_doomed, last.candidates_pending),
        (0, 0),
        "{last:?}"
    );
    h.check().await;
    let c = h.repo.check(true).await.unwrap();
    assert!(c.ok(), "check --read-data: {:?}", c.errors);
    assert_eq!(c.unreferenced_packs, 0, "{:?}", c.errors);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 10,
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_recovery_point_restores_exactly_through_backups_forgets_and_prunes(
        ops in prop::collection::vec(op(), 8..32)
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run_case(ops));
    }
}
