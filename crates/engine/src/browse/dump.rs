//! One file's bytes, read blob by blob: what `dump` streams to its output.

use std::path::Path;

use super::view::{Browser, RandomFile};
use super::{Entry, Walker, held};
use crate::error::{EngineError, Result};
use crate::repo::Repository;
use crate::tree::NodeKind;

/// Holes of a sparse file are handed out as zeros in pieces of at most this, so a file with a
/// hole of terabytes costs no more memory than one blob.
const ZEROS: u64 = 1 << 20;

/// A file of a recovery point, read in pieces: each content blob once it has been decrypted
/// and checked against its id (as a restore checks it), and the holes of a sparse file as
/// zeros. Memory is one blob at a time, whatever the file's size. The blobs are placed as a
/// [`Browser`] places them for reads at any offset; this reads them in order, uncached.
#[derive(Debug)]
pub struct FileReader {
    browser: Browser,
    file: RandomFile,
    entry: Entry,
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
        if self.pos >= self.file.size() {
            return Ok(None);
        }
        let end = self.file.piece_end(self.pos, ZEROS);
        let len = usize::try_from(end - self.pos).unwrap_or(usize::MAX);
        let piece = self.browser.read_at(&self.file, self.pos, len).await?;
        self.pos += piece.len() as u64;
        Ok(Some(piece))
    }
}

impl Repository {
    /// Opens the file at `path` (absolute) in recovery point `spec` (`latest` — the newest
    /// that holds `path` — or an id prefix) for reading with [`FileReader::next_chunk`].
    /// Anything but a regular file is refused with [`EngineError::NotAFile`].
    pub async fn open_file(&self, spec: &str, path: &Path) -> Result<FileReader> {
        let (_, rp) = self.find_recovery_point_holding(spec, &held(path)).await?;
        let index = self.load_index().await?;
        let node = Walker::new(self, &index, &rp).lookup(path).await?;
        let kind = node.as_ref().map_or(NodeKind::Dir, |n| n.kind);
        let Some(node) = node.filter(|n| n.kind == NodeKind::File) else {
            return Err(EngineError::NotAFile {
                path: path.into(),
                kind: kind_name(kind),
            });
        };
        let browser = self.browser_over(index, 0);
        let file = browser.open(path, &node)?;
        Ok(FileReader {
            browser,
            file,
            entry: Entry::new(path.into(), &node),
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
