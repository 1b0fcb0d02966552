//! Chunking a [`Read`] with one reusable buffer.

use std::fmt;
use std::io::{self, Read};

use crate::Chunker;

/// Smallest buffer allocation; the buffer then doubles up to its limit, so a small file never
/// pays for a `2 * max_size` allocation.
const INITIAL_BUFFER: usize = 64 << 10;

/// Streaming chunker over a reader, made by [`Chunker::stream`]: yields owned chunks in order,
/// exactly the chunks [`Chunker::chunks`] yields for the same bytes.
///
/// It holds a buffer of up to `2 * max_size` bytes. Whenever fewer than `max_size` unchunked
/// bytes remain, it moves them to the front and reads until the buffer is full or the reader
/// is exhausted, so each byte is moved at most once before it is chunked (on average much
/// less) and reads are large. `Interrupted` errors are retried; any other error is returned
/// and the next call to `next` resumes reading, losing no data. Never yields an empty chunk;
/// empty input yields nothing.
pub struct StreamChunker<R> {
    chunker: Chunker,
    reader: R,
    /// Initialised bytes; grows up to `limit`.
    buf: Vec<u8>,
    /// Size of the first buffer (see `with_size_hint`).
    initial: usize,
    limit: usize,
    /// Unchunked data is `buf[start..end]`.
    start: usize,
    end: usize,
    eof: bool,
    bytes_read: u64,
    bytes_yielded: u64,
}

impl<R> StreamChunker<R> {
    pub(crate) fn new(chunker: Chunker, reader: R) -> StreamChunker<R> {
        Self::with_size_hint(chunker, reader, INITIAL_BUFFER as u64)
    }

    /// A stream whose first buffer fits an input of about `hint` bytes. A small file then
    /// costs a buffer of its own size, not a zeroed 64 KiB one (which dominated the reading of
    /// a million tiny files). The hint only sizes the buffer: a longer input still grows it.
    pub(crate) fn with_size_hint(chunker: Chunker, reader: R, hint: u64) -> StreamChunker<R> {
        let limit = 2 * chunker.params().max_size as usize;
        // One byte more than the hint, so that reading the expected length does not fill the
        // buffer and the next read can see the end.
        let initial = hint.saturating_add(1).min(INITIAL_BUFFER as u64) as usize;
        StreamChunker {
            chunker,
            reader,
            buf: Vec::new(),
            initial,
            limit,
            start: 0,
            end: 0,
            eof: false,
            bytes_read: 0,
            bytes_yielded: 0,
        }
    }

    /// Bytes read from the reader so far; runs ahead of [`Self::bytes_yielded`] by what is
    /// buffered (at most `2 * max_size`). Equal to the input length once iteration has ended.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Total length of the chunks yielded so far.
    pub fn bytes_yielded(&self) -> u64 {
        self.bytes_yielded
    }

    /// Returns the reader. Bytes read but not yet yielded as chunks are discarded.
    pub fn into_inner(self) -> R {
        self.reader
    }
}

impl<R: Read> StreamChunker<R> {
    /// Moves the unchunked tail to the front and reads until the buffer is full or EOF.
    fn fill(&mut self) -> io::Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while self.end < self.limit && !self.eof {
            if self.end == self.buf.len() {
                let grown = (self.buf.len() * 2).max(self.initial).min(self.limit);
                self.buf.resize(grown, 0);
            }
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.end += n;
                    self.bytes_read += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl<R: Read> Iterator for StreamChunker<R> {
    type Item = io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<io::Result<Vec<u8>>> {
        // A cut needs max_size bytes of look-ahead (or the true end of input) to be the same
        // cut the slice chunker makes.
        if self.end - self.start < self.chunker.params().max_size as usize
            && !self.eof
            && let Err(e) = self.fill()
        {
            return Some(Err(e));
        }
        let pending = &self.buf[self.start..self.end];
        if pending.is_empty() {
            return None;
        }
        let len = self.chunker.cut(pending);
        let chunk = pending[..len].to_vec();
        self.start += len;
        self.bytes_yielded += len as u64;
        Some(Ok(chunk))
    }
}

impl<R> fmt::Debug for StreamChunker<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamChunker")
            .field("chunker", &self.chunker)
            .field("buffered", &(self.end - self.start))
            .field("eof", &self.eof)
            .field("bytes_read", &self.bytes_read)
            .finish_non_exhaustive()
    }
}
