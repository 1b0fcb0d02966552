//! The small-files corpus: many tiny files (a mail spool, a cache, a source tree's worth of
//! stubs), where a tool's per-file costs (metadata, index entries, padding, memory per file)
//! dominate and throughput in MB/s means nothing. The bench backs it up twice (first run and
//! unchanged re-run) and reports times, peak memory and the repository's size.
//!
//! Files hold 40 to 100 bytes (70 on average) of pseudo-random text that names the file, so
//! no two are alike and dedup cannot make the corpus vanish; 1,000 files a folder.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use walkdir::WalkDir;

use crate::util::{human_bytes, secs};

/// Files per folder.
const PER_DIR: u64 = 1000;

/// The generated corpus.
#[derive(Debug)]
pub struct SmallFiles {
    /// Its root: the folder the tools back up.
    pub root: PathBuf,
    /// Number of files.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Generates `files` small files once per (count, seed) under `work`, and reads them so they
/// are in memory for every tool alike.
pub fn prepare(work: &Path, files: u64, seed: u64) -> Result<SmallFiles> {
    let dir = work.join("small").join(format!("n{files}-seed{seed}"));
    let root = dir.join("files");
    let done = dir.join(".complete");
    // The marker holds the total size; one that does not (a killed write) means regenerate.
    let recorded = fs::read_to_string(&done)
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok());
    let bytes = if let Some(bytes) = recorded {
        bytes
    } else {
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        eprintln!("generating {files} small files in {}", root.display());
        let t = Instant::now();
        let bytes = generate(&root, files, seed)?;
        eprintln!("generated in {}", secs(t.elapsed()));
        fs::write(&done, bytes.to_string()).context("marking the small files complete")?;
        bytes
    };
    warm(&root)?;
    eprintln!("small files: {files}, {}", human_bytes(bytes));
    Ok(SmallFiles { root, files, bytes })
}

/// Writes the files; returns their total size.
fn generate(root: &Path, files: u64, seed: u64) -> Result<u64> {
    let mut rng = XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut total = 0;
    let mut text = Vec::with_capacity(128);
    for i in 0..files {
        let folder = root.join(format!("d{:04}", i / PER_DIR));
        if i % PER_DIR == 0 {
            fs::create_dir_all(&folder)
                .with_context(|| format!("creating {}", folder.display()))?;
        }
        text.clear();
        write!(text, "file {i}:")?;
        let len = 40 + (rng.next() % 61) as usize;
        while text.len() < len {
            text.push(WORDS[(rng.next() % WORDS.len() as u64) as usize]);
        }
        let path = folder.join(format!("f{:03}.txt", i % PER_DIR));
        fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
        total += text.len() as u64;
    }
    Ok(total)
}

/// Letters in rough English proportion, so the files compress like text does.
const WORDS: &[u8] = b"eeeeeeettttaaaaoooiiinnnsssrrhhlldcumfpgwybvk    ";

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Reads every file, so no tool pays for a cold page or inode cache the others did not: a
/// corpus generated in an earlier run may have left memory since, and the first tool to read
/// it would then be charged for the disk (seen here: 56 s against 18 s warm).
fn warm(root: &Path) -> Result<()> {
    for e in WalkDir::new(root) {
        let e = e.with_context(|| format!("walking {}", root.display()))?;
        if e.file_type().is_file() {
            fs::read(e.path()).with_context(|| format!("reading {}", e.path().display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_small_distinct_and_repeatable() {
        let work = tempfile::tempdir().unwrap();
        let set = prepare(work.path(), 2500, 7).unwrap();
        let mut seen = std::collections::HashSet::new();
        let mut count = 0;
        for e in WalkDir::new(&set.root).min_depth(2) {
            let data = fs::read(e.unwrap().path()).unwrap();
            assert!((40..=100).contains(&data.len()), "{} bytes", data.len());
            assert!(seen.insert(data), "two files alike");
            count += 1;
        }
        assert_eq!(count, 2500);
        assert!(
            (60..=80).contains(&(set.bytes / 2500)),
            "{} B a file",
            set.bytes / 2500
        );
        // Prepared again, the corpus is reused as it is.
        let again = prepare(work.path(), 2500, 7).unwrap();
        assert_eq!(again.bytes, set.bytes);
        let other = tempfile::tempdir().unwrap();
        assert_eq!(generate(other.path(), 2500, 7).unwrap(), set.bytes);
    }
}
