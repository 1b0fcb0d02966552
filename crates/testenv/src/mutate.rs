//! Parsers under arbitrary and mutated valid inputs, for a bounded time: the stable-toolchain
//! form of the fuzz targets in `fuzz/`, which CI runs so that a parser cannot regress silently
//! between fuzz runs.
//!
//! [`exercise`] first runs the seeds (which the caller says must be accepted) and the inputs
//! kept under `fuzz/regressions/<target>/`, then random mutations of the seeds (bit flips, set
//! bytes, insertions, removals, truncations, repeats) and random bytes until its time is up:
//! `RBACKUP_PARSER_SECS` seconds (default 3). A panic or an input that takes over two seconds
//! fails the test, shrunk to a small input and printed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// One change to an input.
#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Truncate(usize),
    Repeat(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let pos = any::<usize>();
    let byte = prop_oneof![Just(0u8), Just(0xff), Just(0x7f), Just(0x80), any::<u8>()];
    prop_oneof![
        (pos, 0u8..8).prop_map(|(p, b)| Mutation::Flip(p, b)),
        (pos, byte).prop_map(|(p, v)| Mutation::Set(p, v)),
        (pos, prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(p, b)| Mutation::Insert(p, b)),
        (pos, 1usize..32).prop_map(|(p, n)| Mutation::Remove(p, n)),
        pos.prop_map(Mutation::Truncate),
        (pos, 1usize..64).prop_map(|(p, n)| Mutation::Repeat(p, n)),
    ]
}

fn apply(mut input: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = input.len();
        let at = |p: usize, n: usize| if n == 0 { 0 } else { p % n };
        match m {
            Mutation::Flip(p, bit) if len > 0 => input[at(*p, len)] ^= 1 << bit,
            Mutation::Set(p, v) if len > 0 => input[at(*p, len)] = *v,
            Mutation::Insert(p, bytes) => {
                let p = at(*p, len + 1);
                input.splice(p..p, bytes.iter().copied());
            }
            Mutation::Remove(p, n) if len > 0 => {
                let p = at(*p, len);
                input.drain(p..(p + n).min(len));
            }
            Mutation::Truncate(p) => input.truncate(at(*p, len + 1)),
            Mutation::Repeat(p, n) if len > 0 => {
                let p = at(*p, len);
                let piece = input[p..(p + n).min(len)].to_vec();
                input.splice(p..p, piece);
            }
            _ => {}
        }
    }
    input
}

/// Inputs earlier fuzz runs found for `target`, kept so that they stay fixed.
pub fn regressions(repo_root: &Path, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = repo_root.join("fuzz/regressions").join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .map(|e| e.expect("regression dir entry").path())
        .map(|p| {
            let bytes = std::fs::read(&p).expect("read a regression input");
            (p, bytes)
        })
        .collect();
    out.sort();
    out
}

fn budget() -> Duration {
    let secs = std::env::var("RBACKUP_PARSER_SECS")
        .ok()
        .and_then(|s| s.parse().ok());
    Duration::from_secs_f64(secs.unwrap_or(3.0))
}

const SLOW: Duration = Duration::from_secs(2);

/// Runs `parse` (which returns whether it accepted the input) on `target`'s seeds, which must
/// be accepted, on its regression inputs, then on mutated and random inputs until the budget
/// is spent. Returns how many inputs ran.
pub fn exercise(
    repo_root: &Path,
    target: &str,
    seeds: Vec<Vec<u8>>,
    parse: impl Fn(&[u8]) -> bool,
) -> u64 {
    assert!(!seeds.is_empty(), "{target} has no seeds");
    for seed in &seeds {
        // Valid inputs get all the way through, so mutations of them start deep inside.
        assert!(parse(seed), "{target}: a seed was refused");
    }
    for (path, input) in regressions(repo_root, target) {
        let started = Instant::now();
        parse(&input);
        assert!(
            started.elapsed() < SLOW,
            "{}: took {:?}",
            path.display(),
            started.elapsed()
        );
    }
    let n = seeds.len();
    let inputs = prop_oneof![
        3 => (0..n, prop::collection::vec(mutation(), 1..6))
            .prop_map(move |(i, m)| apply(seeds[i].clone(), &m)),
        1 => prop::collection::vec(any::<u8>(), 0..512),
    ];
    let config = Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let (started, mut cases) = (Instant::now(), 0u64);
    while started.elapsed() < budget() {
        let result = runner.run(&inputs, |input| {
            let case = Instant::now();
            parse(&input);
            prop_assert!(case.elapsed() < SLOW, "one input took {:?}", case.elapsed());
            Ok(())
        });
        if let Err(e) = result {
            panic!("{target}: {e}");
        }
        cases += 256;
    }
    eprintln!("{target}: {cases} inputs in {:?}", started.elapsed());
    cases
}
