//! A local user flipping a directory and a symlink to the outside back and forth while files
//! are created beneath: every creation either lands in the real directory or is refused;
//! nothing ever lands outside.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::{Fixture, rel};
use rbackup_beneath::Error;
use rustix::fs::{CWD, RenameFlags};

/// At least this many creations, and on until both outcomes were seen this often each (on
/// a loaded machine the flipper may sit in one state for a whole time slice), within a bound.
const ITERATIONS: usize = 3000;
const EACH_OUTCOME: usize = 20;
const TIME_BOUND: std::time::Duration = std::time::Duration::from_secs(30);

both_modes! {
    fn swapping_a_directory_and_a_symlink_never_leaks(resolve: Resolve) {
        let fx = Fixture::new();
        fs::create_dir_all(fx.base.join("d/sub")).unwrap();
        symlink(&fx.decoy, fx.base.join("d.other")).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flips = Arc::new(AtomicU64::new(0));
        let flipper = {
            let (stop, flips) = (stop.clone(), flips.clone());
            let (a, b) = (fx.base.join("d"), fx.base.join("d.other"));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    rustix::fs::renameat_with(CWD, &a, CWD, &b, RenameFlags::EXCHANGE).unwrap();
                    // Hand the core over now and then, so the creator meets both states even
                    // when both threads share one core.
                    if flips.fetch_add(1, Ordering::Relaxed) % 64 == 0 {
                        std::thread::yield_now();
                    }
                }
            })
        };
        let dir = fx.dir(resolve);
        let (mut created, mut refused) = (Vec::new(), 0);
        let started = std::time::Instant::now();
        for i in 0.. {
            let seen_both = created.len() >= EACH_OUTCOME && refused >= EACH_OUTCOME;
            if i >= ITERATIONS && (seen_both || started.elapsed() > TIME_BOUND) {
                break;
            }
            let name = format!("f{i}");
            let res = match i % 3 {
                0 => dir.create_file(&rel(&format!("d/sub/{name}"))).map(drop),
                1 => dir.create_dir_all(&rel(&format!("d/sub/{name}")), 0o700).map(drop),
                _ => dir.create_tmpfile(&rel("d/sub"))
                    .and_then(|t| t.publish(&dir, &rel(&format!("d/sub/{name}"))))
                    .map(drop),
            };
            match res {
                Ok(()) => created.push(name),
                Err(Error::Symlink { .. }) => refused += 1,
                Err(e) => panic!("unexpected: {e}"),
            }
        }
        stop.store(true, Ordering::Relaxed);
        flipper.join().unwrap();
        fx.assert_decoy_unchanged();
        // Whichever name the real directory ended under, every success is in it.
        let real = ["d", "d.other"]
            .iter()
            .map(|n| fx.base.join(n))
            .find(|p| p.symlink_metadata().unwrap().is_dir())
            .unwrap();
        for name in &created {
            assert!(real.join("sub").join(name).symlink_metadata().is_ok(), "{name} is missing");
        }
        assert_eq!(fs::read_dir(real.join("sub")).unwrap().count(), created.len());
        // The race was really run: both outcomes happened, many times each.
        let counts = format!("created {}, refused {refused}, flips {flips:?}", created.len());
        assert!(created.len() >= EACH_OUTCOME && refused >= EACH_OUTCOME, "{counts}");
    }
}
