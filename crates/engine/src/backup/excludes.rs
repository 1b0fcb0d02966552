//! `--exclude GLOB`: a pattern with a `/` matches the whole absolute path (and everything below
//! it), one without matches any file or directory name — as restic and borg users expect.

use std::path::Path;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{EngineError, Result};

/// One pattern as excludes (and `find`, so the pattern that left a file out is the one that
/// finds it) read it: `*` stops at `/`, a trailing `/` is ignored. With a `/` it is matched
/// against the whole absolute path, without against names ([`on_path`]).
pub(crate) fn glob(pattern: &str) -> std::result::Result<Glob, globset::Error> {
    GlobBuilder::new(pattern.trim_end_matches('/'))
        .literal_separator(true)
        .build()
}

/// Whether `pattern` is matched against whole paths rather than names.
pub(crate) fn on_path(pattern: &str) -> bool {
    pattern.contains('/')
}

/// Compiled exclude patterns.
#[derive(Debug, Clone, Default)]
pub(crate) struct Excludes {
    by_path: Option<GlobSet>,
    by_name: Option<GlobSet>,
}

impl Excludes {
    pub(crate) fn new(patterns: &[String]) -> Result<Excludes> {
        let mut by_path = GlobSetBuilder::new();
        let mut by_name = GlobSetBuilder::new();
        let (mut np, mut nn) = (0, 0);
        for p in patterns {
            let glob = glob(p).map_err(|source| EngineError::BadExclude {
                pattern: Some(p.clone()),
                source,
            })?;
            if on_path(p) {
                by_path.add(glob);
                np += 1;
            } else {
                by_name.add(glob);
                nn += 1;
            }
        }
        let build = |b: GlobSetBuilder, n| -> Result<Option<GlobSet>> {
            if n == 0 {
                return Ok(None);
            }
            b.build()
                .map(Some)
                .map_err(|source| EngineError::BadExclude {
                    pattern: None,
                    source,
                })
        };
        Ok(Excludes {
            by_path: build(by_path, np)?,
            by_name: build(by_name, nn)?,
        })
    }

    /// Whether `path` (absolute) is excluded. Directories are pruned, so their content never
    /// needs testing.
    pub(crate) fn is_excluded(&self, path: &Path) -> bool {
        if let Some(set) = &self.by_path
            && set.is_match(path)
        {
            return true;
        }
        match (&self.by_name, path.file_name()) {
            (Some(set), Some(name)) => set.is_match(name),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        let ex = Excludes::new(&[
            "*.tmp".into(),
            "/home/a/cache".into(),
            "/srv/**/node_modules".into(),
        ])
        .unwrap();
        assert!(ex.is_excluded(Path::new("/x/y/z.tmp")));
        assert!(!ex.is_excluded(Path::new("/x/y/z.tmpx")));
        assert!(ex.is_excluded(Path::new("/home/a/cache")));
        assert!(!ex.is_excluded(Path::new("/home/a/cache2")));
        assert!(ex.is_excluded(Path::new("/srv/p/q/node_modules")));
        assert!(!ex.is_excluded(Path::new("/home/b/node_modules")));
        assert!(Excludes::new(&["[".into()]).is_err());
    }
}
