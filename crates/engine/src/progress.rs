//! Progress callbacks, so the CLI can draw bars and an embedding program can do what it likes.

use std::path::Path;

/// Receives progress from a running backup or restore. All methods have empty defaults, and
/// they are called from worker threads, so implementations must be cheap and thread-safe.
pub trait Progress: Send + Sync {
    /// The totals, once known (after the pre-scan of the sources, or from the recovery point).
    fn total(&self, _files: u64, _bytes: u64) {}
    /// A file is being processed.
    fn file(&self, _path: &Path) {}
    /// `n` more bytes processed (read, reused unchanged, or restored).
    fn bytes(&self, _n: u64) {}
    /// One more file done.
    fn file_done(&self) {}
}

/// Progress that goes nowhere.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}
