//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::io::{self, Read};

use rbackup_chunker::ChunkerParams;

/// The KAT input generator: xorshift64 (13, 7, 17) from `seed`, each state written as 8
/// little-endian bytes, truncated to `len`, each byte ANDed with `byte_mask`.
pub fn xorshift_bytes(seed: u64, len: usize, byte_mask: u8) -> Vec<u8> {
    let mut x = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend(x.to_le_bytes().iter().map(|b| b & byte_mask));
    }
    out.truncate(len);
    out
}

/// Small parameters so that property tests see many chunks in a few KiB.
pub const SMALL: ChunkerParams = ChunkerParams {
    min_size: 64,
    avg_size: 256,
    max_size: 1024,
};

pub fn key(byte: u8) -> [u8; 32] {
    std::array::from_fn(|i| byte.wrapping_add(i as u8))
}

/// A reader that hands out 1..=max_step bytes per call (pseudo-randomly), returns
/// `Interrupted` every fifth call, and optionally one other error at a given offset.
pub struct ShortReader<'a> {
    pub data: &'a [u8],
    pub pos: usize,
    state: u64,
    max_step: usize,
    calls: u64,
    pub fail_at: Option<usize>,
}

impl<'a> ShortReader<'a> {
    pub fn new(data: &'a [u8], seed: u64, max_step: usize) -> Self {
        ShortReader {
            data,
            pos: 0,
            state: seed | 1,
            max_step: max_step.max(1),
            calls: 0,
            fail_at: None,
        }
    }
}

impl Read for ShortReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.calls += 1;
        if self.calls.is_multiple_of(5) {
            return Err(io::Error::from(io::ErrorKind::Interrupted));
        }
        if self.fail_at.is_some_and(|at| self.pos >= at) {
            self.fail_at = None;
            return Err(io::Error::other("injected failure"));
        }
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let step = 1 + (self.state % self.max_step as u64) as usize;
        let n = step.min(buf.len()).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
