//! The bench corpus: generating it once per seed, and the manifest (every path with its type
//! and content hash) that restores are checked against. Used by the bench and its report.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use walkdir::WalkDir;

use crate::r#gen::{self, GENERATOR_VERSION, GenOptions};
use crate::util::{human_bytes, secs};

/// The corpus as the bench sees it.
#[derive(Debug)]
pub struct Corpus {
    /// Generator options it was made with.
    pub opts: GenOptions,
    /// Absolute path of `mixed/`.
    pub mixed: PathBuf,
    /// Every file of `mixed/` with its hash: what a restore must reproduce.
    pub manifest: Manifest,
    /// Absolute paths of `versions/v1..vN`.
    pub versions: Vec<PathBuf>,
    /// Bytes of each version.
    pub version_bytes: Vec<u64>,
    /// Real releases of a public project (`--releases`), when measured.
    pub releases: Option<crate::bench_releases::Releases>,
    /// Many tiny files (`--small-files`), when measured.
    pub small: Option<crate::bench_small::SmallFiles>,
}

/// Generates the corpus once per seed/size/versions/generator and reads it all (which both
/// warms the page cache and records the hashes restores are checked against).
pub fn prepare_corpus(work: &Path, opts: GenOptions) -> Result<Corpus> {
    let key = format!(
        "seed{}-{}B-v{}-g{GENERATOR_VERSION}",
        opts.seed, opts.size, opts.versions
    );
    let dir = work.join("corpus").join(key);
    let done = dir.join(".complete");
    if !done.exists() {
        if dir.exists() {
            fs::remove_dir_all(&dir)
                .with_context(|| format!("removing partial {}", dir.display()))?;
        }
        eprintln!("generating corpus in {}", dir.display());
        let t = Instant::now();
        let parts = r#gen::generate(&dir, &opts)?;
        r#gen::print_summary(&parts);
        eprintln!("generated in {}", secs(t.elapsed()));
        fs::write(&done, "").context("marking the corpus complete")?;
    } else {
        eprintln!("using cached corpus {}", dir.display());
    }
    let t = Instant::now();
    let mixed = dir.join("mixed");
    let manifest = Manifest::of(&mixed)?;
    let versions: Vec<PathBuf> = (1..=opts.versions)
        .map(|v| dir.join(format!("versions/v{v}")))
        .collect();
    let version_bytes = versions
        .iter()
        .map(|v| Manifest::of(v).map(|m| m.bytes))
        .collect::<Result<Vec<_>>>()?;
    eprintln!(
        "mixed: {} files, {}; versions: {}; read (cache warm) in {}",
        manifest.files,
        human_bytes(manifest.bytes),
        version_bytes
            .iter()
            .map(|b| human_bytes(*b))
            .collect::<Vec<_>>()
            .join(", "),
        secs(t.elapsed())
    );
    Ok(Corpus {
        opts,
        mixed,
        manifest,
        versions,
        version_bytes,
        releases: None,
        small: None,
    })
}

/// One entry of a tree, as far as a restore must reproduce it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Dir,
    File { len: u64, hash: [u8; 32] },
    Symlink(PathBuf),
}

/// Every path under a root (relative to it) with its type and content hash.
#[derive(Debug, Default)]
pub struct Manifest {
    entries: BTreeMap<PathBuf, Entry>,
    /// Number of regular files.
    pub files: u64,
    /// Total bytes of the regular files.
    pub bytes: u64,
}

impl Manifest {
    /// Reads the whole tree under `root`.
    pub fn of(root: &Path) -> Result<Self> {
        let mut m = Manifest::default();
        for e in WalkDir::new(root).min_depth(1) {
            let e = e.with_context(|| format!("walking {}", root.display()))?;
            let rel = e
                .path()
                .strip_prefix(root)
                .unwrap_or(e.path())
                .to_path_buf();
            let ft = e.file_type();
            let entry = if ft.is_dir() {
                Entry::Dir
            } else if ft.is_symlink() {
                Entry::Symlink(fs::read_link(e.path())?)
            } else {
                let mut h = blake3::Hasher::new();
                let f = fs::File::open(e.path())
                    .with_context(|| format!("opening {}", e.path().display()))?;
                h.update_reader(f)
                    .with_context(|| format!("reading {}", e.path().display()))?;
                let len = e.metadata()?.len();
                m.files += 1;
                m.bytes += len;
                Entry::File {
                    len,
                    hash: *h.finalize().as_bytes(),
                }
            };
            m.entries.insert(rel, entry);
        }
        Ok(m)
    }

    /// Up to 10 differences between `self` (expected) and `other`, described for people.
    pub fn diff(&self, other: &Manifest) -> Vec<String> {
        let mut out = Vec::new();
        for (path, want) in &self.entries {
            match other.entries.get(path) {
                None => out.push(format!("missing: {}", path.display())),
                Some(got) if got != want => out.push(format!("differs: {}", path.display())),
                Some(_) => {}
            }
        }
        for path in other
            .entries
            .keys()
            .filter(|p| !self.entries.contains_key(*p))
        {
            out.push(format!("unexpected: {}", path.display()));
        }
        if out.len() > 10 {
            let more = out.len() - 10;
            out.truncate(10);
            out.push(format!("... and {more} more"));
        }
        out
    }
}

/// Makes `dst` an exact copy of `src` like `rsync -a --delete` would, but rewriting only the
/// files whose contents changed, so that unchanged files keep their mtime and inode and
/// tools can tell them apart from changed ones.
pub fn sync_tree(src: &Path, dst: &Path) -> Result<()> {
    let mut keep = BTreeSet::new();
    for e in WalkDir::new(src).min_depth(1).sort_by_file_name() {
        let e = e.with_context(|| format!("walking {}", src.display()))?;
        let rel = e.path().strip_prefix(src).unwrap_or(e.path()).to_path_buf();
        let to = dst.join(&rel);
        if e.file_type().is_dir() {
            fs::create_dir_all(&to).with_context(|| format!("creating {}", to.display()))?;
        } else if !same_contents(e.path(), &to)? {
            fs::copy(e.path(), &to).with_context(|| format!("copying to {}", to.display()))?;
        }
        keep.insert(rel);
    }
    for e in WalkDir::new(dst).min_depth(1).contents_first(true) {
        let e = e.with_context(|| format!("walking {}", dst.display()))?;
        let rel = e.path().strip_prefix(dst).unwrap_or(e.path());
        if keep.contains(rel) {
            continue;
        }
        let res = if e.file_type().is_dir() {
            fs::remove_dir(e.path())
        } else {
            fs::remove_file(e.path())
        };
        res.with_context(|| format!("removing {}", e.path().display()))?;
    }
    Ok(())
}

fn same_contents(a: &Path, b: &Path) -> Result<bool> {
    let Ok(mb) = fs::metadata(b) else {
        return Ok(false);
    };
    if fs::metadata(a)?.len() != mb.len() {
        return Ok(false);
    }
    Ok(fs::read(a)? == fs::read(b)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn write(root: &Path, rel: &str, data: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }

    #[test]
    fn sync_makes_an_exact_copy_and_keeps_unchanged_files() {
        let (a, b, dst) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        write(a.path(), "keep.txt", "same");
        write(a.path(), "dir/edit.txt", "old");
        write(a.path(), "gone/old.txt", "x");
        write(b.path(), "keep.txt", "same");
        write(b.path(), "dir/edit.txt", "new!");
        write(b.path(), "dir/sub/new.txt", "fresh");
        sync_tree(a.path(), dst.path()).unwrap();
        assert!(
            Manifest::of(a.path())
                .unwrap()
                .diff(&Manifest::of(dst.path()).unwrap())
                .is_empty()
        );
        let ino = fs::metadata(dst.path().join("keep.txt")).unwrap().ino();
        sync_tree(b.path(), dst.path()).unwrap();
        let diff = Manifest::of(b.path())
            .unwrap()
            .diff(&Manifest::of(dst.path()).unwrap());
        assert!(diff.is_empty(), "{diff:?}");
        assert_eq!(
            fs::metadata(dst.path().join("keep.txt")).unwrap().ino(),
            ino
        );
        assert!(!dst.path().join("gone").exists());
    }

    #[test]
    fn manifest_diff_finds_missing_changed_and_extra() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write(a.path(), "x/1", "one");
        write(a.path(), "x/2", "two");
        write(b.path(), "x/1", "One");
        write(b.path(), "x/3", "three");
        let diff = Manifest::of(a.path())
            .unwrap()
            .diff(&Manifest::of(b.path()).unwrap());
        assert_eq!(diff, ["differs: x/1", "missing: x/2", "unexpected: x/3"]);
    }
}
