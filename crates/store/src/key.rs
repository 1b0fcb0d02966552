//! Object key rules, shared by every backend so a vault is portable between them.

use crate::StoreError;

/// Leading characters of the local backend's staging files. Keys may not use it, so a staged
/// file can never be mistaken for an object (or hide one) when listing.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";

/// Checks `key` against the key rules documented on [`Store`](crate::Store).
pub(crate) fn validate_key(key: &str) -> Result<(), StoreError> {
    let bad = || StoreError::InvalidPath { path: key.into() };
    if key.is_empty() || key.starts_with('/') || key.ends_with('/') {
        return Err(bad());
    }
    if key.split('/').all(valid_segment) {
        Ok(())
    } else {
        Err(bad())
    }
}

/// Whether one '/'-free piece of a key (a file or directory name) obeys the key rules.
pub(crate) fn valid_segment(segment: &str) -> bool {
    let reserved = segment.starts_with(TEMP_PREFIX);
    let bad_char = segment
        .chars()
        .any(|c| c.is_control() || c == '\\' || c == '/');
    !(segment.is_empty() || segment == "." || segment == ".." || reserved || bad_char)
}

/// Checks a listing prefix and returns it without a trailing '/'. The empty prefix (the whole
/// store) is allowed; one trailing '/' is tolerated because "dir/" is how people write it.
pub(crate) fn normalize_prefix(prefix: &str) -> Result<&str, StoreError> {
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    if trimmed.is_empty() {
        if prefix.is_empty() {
            return Ok("");
        }
        return Err(StoreError::InvalidPath {
            path: prefix.into(),
        });
    }
    validate_key(trimmed).map_err(|_| StoreError::InvalidPath {
        path: prefix.into(),
    })?;
    Ok(trimmed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        for good in [
            "a",
            "machines/ab12/packs/3f/3f0a",
            "x.y-z_1",
            "a/b.c/d",
            "é/ü",
        ] {
            assert!(validate_key(good).is_ok(), "{good}");
        }
        let bad = [
            "",
            "/a",
            "a/",
            "a//b",
            "../a",
            "a/../b",
            "a/./b",
            ".",
            "a\\b",
            "a\nb",
            ".tmp-x",
            "a/.tmp-1234",
        ];
        for key in bad {
            assert!(
                matches!(validate_key(key), Err(StoreError::InvalidPath { .. })),
                "{key:?}"
            );
        }
    }

    #[test]
    fn prefixes() {
        assert_eq!(normalize_prefix("").ok(), Some(""));
        assert_eq!(normalize_prefix("a/b/").ok(), Some("a/b"));
        assert_eq!(normalize_prefix("a/b").ok(), Some("a/b"));
        for bad in ["/", "//", "/a", "a//", "a/../b"] {
            assert!(normalize_prefix(bad).is_err(), "{bad:?}");
        }
    }
}
