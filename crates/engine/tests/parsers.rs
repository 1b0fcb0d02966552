//! Every parser of bytes from the vault, on arbitrary and on mutated valid inputs, for a
//! bounded time each (see `rbackup_testenv::mutate`): the stable form of the fuzz targets in
//! `fuzz/`, through the same entry points (`rbackup_engine::fuzz_support`).

use std::path::Path;

use rbackup_engine::fuzz_support::{TARGETS, run, seeds};

fn exercise(target: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    rbackup_testenv::mutate::exercise(&root, target, seeds(target), |input| {
        run(target, input).expect("a known target")
    });
}

macro_rules! targets {
    ($($name:ident),* $(,)?) => {
        $(#[test] fn $name() { exercise(stringify!($name)); })*

        #[test]
        fn every_fuzz_target_has_a_property_test() {
            let here = [$(stringify!($name)),*];
            assert_eq!(here.len(), TARGETS.len(), "{here:?} vs {TARGETS:?}");
            for t in TARGETS {
                assert!(here.contains(t), "fuzz target {t} has no property test here");
            }
        }
    };
}

targets!(
    pack,
    pack_header_plain,
    blob_plain,
    bundle_plain,
    meta,
    meta_plain,
    index_plain,
    recovery_point_plain,
    tree_plain,
    vault_json,
    credentials,
    key_file,
);
