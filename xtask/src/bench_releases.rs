//! The real-releases corpus: successive source releases of one public project, fetched from
//! PyPI as sdists, which is how the bench measures what versions of a real source tree cost
//! in a vault (the generator's versions are made up; these are not).
//!
//! Each release is downloaded once with `pip download --no-deps --no-binary :all:` and
//! unpacked without its top folder, so that every version has the same paths and a tool
//! sees one evolving tree; the unpacked trees are kept in the work dir for later runs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::bench_corpus::Manifest;
use crate::util::{self, human_bytes};

/// The default: five patch releases of Django 4.2 (about 6,700 files of 6 KiB on average,
/// most of them unchanged from one release to the next).
pub const DEFAULT_SPEC: &str = "Django==4.2.11,4.2.12,4.2.13,4.2.14,4.2.15";

/// The unpacked releases, oldest first.
#[derive(Debug)]
pub struct Releases {
    /// Project name as given.
    pub project: String,
    /// Version and unpacked tree of each release.
    pub versions: Vec<(String, PathBuf)>,
    /// Files and bytes of each release.
    pub sizes: Vec<(u64, u64)>,
}

impl Releases {
    /// Bytes of all the releases together (what the vault holds without dedup).
    pub fn total_bytes(&self) -> u64 {
        self.sizes.iter().map(|s| s.1).sum()
    }
}

/// Splits `NAME==V1,V2,...` into the name and the versions.
pub fn parse_spec(spec: &str) -> Result<(String, Vec<String>)> {
    let Some((name, versions)) = spec.split_once("==") else {
        bail!("--releases wants NAME==V1,V2,... (e.g. {DEFAULT_SPEC}), got {spec:?}");
    };
    let versions: Vec<String> = versions
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(String::from)
        .collect();
    let plain = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    };
    if !plain(name) || versions.is_empty() || !versions.iter().all(|v| plain(v)) {
        bail!("--releases wants NAME==V1,V2,... (e.g. {DEFAULT_SPEC}), got {spec:?}");
    }
    Ok((name.to_string(), versions))
}

/// Downloads and unpacks the releases of `spec` that the work dir does not have yet.
pub fn prepare(work: &Path, spec: &str) -> Result<Releases> {
    let (project, versions) = parse_spec(spec)?;
    let dir = work.join("releases").join(project.to_ascii_lowercase());
    let mut out = Releases {
        project: project.clone(),
        versions: Vec::new(),
        sizes: Vec::new(),
    };
    for version in versions {
        let tree = dir.join(&version).join("tree");
        if !dir.join(&version).join(".complete").exists() {
            fetch(&project, &version, &dir.join(&version)).with_context(|| {
                format!("fetching {project} {version} from PyPI (offline? pass --releases none)")
            })?;
        }
        let m = Manifest::of(&tree)?;
        out.sizes.push((m.files, m.bytes));
        out.versions.push((version, tree));
    }
    eprintln!(
        "releases: {project} {}",
        out.versions
            .iter()
            .zip(&out.sizes)
            .map(|((v, _), (f, b))| format!("{v} ({f} files, {})", human_bytes(*b)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(out)
}

/// One release into `dir/tree`, marked complete only once it is whole.
fn fetch(project: &str, version: &str, dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    let dl = dir.join("download");
    fs::create_dir_all(&dl).with_context(|| format!("creating {}", dl.display()))?;
    eprintln!("downloading {project}=={version} (sdist)");
    util::run(
        Command::new("python3")
            .args(["-m", "pip", "download", "--quiet", "--no-deps"])
            .args(["--no-binary", ":all:", "--dest"])
            .arg(&dl)
            .arg(format!("{project}=={version}")),
    )?;
    let archive = single_archive(&dl)?;
    let tree = dir.join("tree");
    fs::create_dir_all(&tree).with_context(|| format!("creating {}", tree.display()))?;
    util::run(
        Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(&tree)
            .arg("--strip-components=1"),
    )?;
    fs::remove_dir_all(&dl).with_context(|| format!("removing {}", dl.display()))?;
    fs::write(dir.join(".complete"), "").context("marking the release complete")
}

fn single_archive(dl: &Path) -> Result<PathBuf> {
    let found: Vec<PathBuf> = fs::read_dir(dl)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.to_string_lossy();
            n.ends_with(".tar.gz") || n.ends_with(".tar.bz2")
        })
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected one sdist in {}, found {}",
            dl.display(),
            found.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_is_a_name_and_versions() {
        let (name, versions) = parse_spec(DEFAULT_SPEC).unwrap();
        assert_eq!(name, "Django");
        assert_eq!(versions.len(), 5);
        assert_eq!(parse_spec("a==1, 2").unwrap().1, ["1", "2"]);
        for bad in ["Django", "==1", "x==", "x==1;rm", "a b==1"] {
            assert!(parse_spec(bad).is_err(), "{bad} accepted");
        }
    }
}
