//! The fuzz targets: one binary per entry of `rbackup_engine::fuzz_support::TARGETS`, each
//! feeding libFuzzer's input to the engine's own parser through `fuzz_support::run`. The
//! engine's `tests/parsers.rs` runs the same entry points on stable Rust in CI.
//!
//! Run them with `cargo xtask fuzz [TARGET...] [--secs N]`, which seeds each corpus with valid
//! objects and reports executions and findings.

/// Defines the fuzz target `name` (a target of `fuzz_support::TARGETS`).
#[macro_export]
macro_rules! target {
    ($name:literal) => {
        libfuzzer_sys::fuzz_target!(|data: &[u8]| {
            let known = rbackup_engine::fuzz_support::run($name, data);
            assert!(known.is_some(), "unknown fuzz target {}", $name);
        });
    };
}
