//! One file's bytes, read blob by blob: what `dump` streams to its output.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;

use rbackup_crypto::BlobId;

use super::{Entry, Walker, held};
use crate::error::{CorruptReason, EngineError, Result};
use crate::index::Index;
use crate::repo::Repository;
use crate::tree::NodeKind;

/// Holes of a sparse file are handed out as zeros in pieces of at most this, so a file with a
/// hole of terabytes costs no more memory than one blob.
const ZEROS: u64 = 1 << 20;

/// A file of a recovery point, read in pieces: each content blob once it has been decrypted
/// and checked against its id (as a restore checks it), and the holes of a sparse file as
/// zeros. Memory is one blob at a time, whatever the file's size.
#[derive(Debug)]
pub struct FileReader {
    repo: Repository,
    index: Arc<Index>,
    entry: Entry,
    blobs: VecDeque<BlobId>,
    /// Data segments `(offset, length)` still to fill, the current one first.
    segments: VecDeque<(u64, u64)>,
    /// Bytes of the current segment already handed out.
    used: u64,
    /// Bytes of the file handed out.
    pos: u64,
}

impl FileReader {
    /// The file's entry (size, mode, times) as the recovery point records it.
    pub fn entry(&self) -> &Entry {
        &self.entry
    }

    /// The next piece of the file, `None` at its end. An error (a blob missing, damaged or
    /// longer than the file) ends the read: what was handed out before it was sound.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        let size = self.entry.size;
        loop {
            let Some(&(start, len)) = self.segments.front() else {
                // After the last segment: the rest of the file is a hole, and no blob is left.
                if let Some(id) = self.blobs.front() {
                    return Err(past_size(id));
                }
                return Ok(self.zeros(size));
            };
            if self.pos < start {
                return Ok(self.zeros(start.min(size)));
            }
            if self.pos != start + self.used {
                let reason = CorruptReason::SegmentsOutOfOrder;
                return Err(EngineError::corrupt(
                    self.entry.path.display().to_string(),
                    reason,
                ));
            }
            if self.used >= len {
                self.segments.pop_front();
                self.used = 0;
                continue;
            }
            let Some(id) = self.blobs.pop_front() else {
                // Content shorter than the file: the rest reads as zeros, as a restore
                // (which sizes the file first) leaves it.
                self.segments.clear();
                continue;
            };
            let data = self.repo.read_blob(&self.index, &id).await?;
            let n = data.len() as u64;
            if n > len - self.used || self.pos + n > size {
                return Err(past_size(&id));
            }
            self.used += n;
            self.pos += n;
            return Ok(Some(data));
        }
    }

    /// Zeros up to `end`, at most [`ZEROS`] of them; `None` when already there.
    fn zeros(&mut self, end: u64) -> Option<Vec<u8>> {
        let n = end.saturating_sub(self.pos).min(ZEROS);
        if n == 0 {
            return None;
        }
        self.pos += n;
        Some(vec![0; n as usize])
    }
}

fn past_size(id: &BlobId) -> EngineError {
    EngineError::corrupt(
        format!("file content blob {id}"),
        CorruptReason::ContentPastSize,
    )
}

impl Repository {
    /// Opens the file at `path` (absolute) in recovery point `spec` (`latest` — the newest
    /// that holds `path` — or an id prefix) for reading with [`FileReader::next_chunk`].
    /// Anything but a regular file is refused with [`EngineError::NotAFile`].
    pub async fn open_file(&self, spec: &str, path: &Path) -> Result<FileReader> {
        let (_, rp) = self.find_recovery_point_holding(spec, &held(path)).await?;
        let index = Arc::new(self.load_index().await?);
        let node = Walker::new(self, &index, &rp).lookup(path).await?;
        let kind = node.as_ref().map_or(NodeKind::Dir, |n| n.kind);
        let Some(node) = node.filter(|n| n.kind == NodeKind::File) else {
            return Err(EngineError::NotAFile {
                path: path.into(),
                kind: kind_name(kind),
            });
        };
        // Ordinary files are one segment from 0; sparse files list theirs.
        let segments = if node.class.as_deref() == Some("sparse") {
            node.segments.iter().copied().collect()
        } else {
            VecDeque::from([(0, node.size)])
        };
        Ok(FileReader {
            repo: self.clone(),
            index,
            entry: Entry::new(path.into(), &node),
            blobs: node.content.into_iter().collect(),
            segments,
            used: 0,
            pos: 0,
        })
    }
}

/// The kind's name as the tree records it (`file`, `dir`, ...).
pub(crate) fn kind_name(kind: NodeKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{kind:?}"))
}
