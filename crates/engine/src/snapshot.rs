//! Recovery points (`snapshots/<id>`): the last thing a backup writes.

use rbackup_crypto::{BlobId, MasterKeys};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::Result;
use crate::id::Id;

pub(crate) const KIND: &str = crate::layout::SNAPSHOTS;

/// A recovery point: a root tree and what produced it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryPoint {
    /// When the backup started (RFC 3339, UTC).
    pub time: String,
    /// Host name of the machine.
    pub hostname: String,
    /// Absolute source paths, as given.
    pub paths: Vec<String>,
    /// Root tree (mirrors `/`).
    pub tree: BlobId,
    /// The recovery point this one was made incrementally against.
    #[serde(default)]
    pub parent: Option<Id>,
    /// The job that made it, if any.
    #[serde(default)]
    pub job: Option<String>,
    /// Files in the recovery point.
    pub files: u64,
    /// Directories in the recovery point.
    pub dirs: u64,
    /// Total logical size of its files.
    pub bytes: u64,
    /// Bytes this backup added to the vault.
    pub bytes_added: u64,
    /// 1 + the highest sequence among the machine's recovery points when the backup started
    /// (0: written before sequences existed). See `freshness.rs`.
    #[serde(default)]
    pub sequence: u64,
    /// The recovery points that had that highest sequence: their disappearance is noticed.
    #[serde(default)]
    pub predecessors: Vec<Id>,
}

impl RecoveryPoint {
    /// Whether `path` (absolute) is one of its source paths or beneath one: what `latest`
    /// filtered by path looks for (as restic's `--path`). Compared by components, so
    /// `/home/ab` is not beneath `/home/a`.
    pub fn holds(&self, path: &std::path::Path) -> bool {
        self.paths.iter().any(|p| path.starts_with(p))
    }
}

pub(crate) fn seal(keys: &MasterKeys, id: &Id, rp: &RecoveryPoint) -> Vec<u8> {
    codec::seal_meta(keys, KIND, &id.to_hex(), rp)
}

pub(crate) fn open(keys: &MasterKeys, id: &Id, bytes: &[u8]) -> Result<RecoveryPoint> {
    codec::open_meta(keys, KIND, &id.to_hex(), bytes)
}
