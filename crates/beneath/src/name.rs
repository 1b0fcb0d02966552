//! Validated names and relative paths.
//!
//! A [`Name`] is one directory entry name as the kernel would store it: never empty, `.` or
//! `..`, no `/`, no NUL, at most [`Name::MAX_LEN`] bytes. A [`RelPath`] is a sequence of names
//! and can only be built from them, so a path handed to a [`Dir`](crate::Dir) operation cannot
//! be absolute, cannot climb with `..` and cannot smuggle a separator inside one component.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// Why a name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    #[error("the name is empty")]
    Empty,
    #[error("the name is `.`")]
    Dot,
    #[error("the name is `..`")]
    DotDot,
    #[error("the name contains `/`")]
    Slash,
    #[error("the name contains a NUL byte")]
    Nul,
    #[error("the name is {0} bytes long, more than {max}", max = Name::MAX_LEN)]
    TooLong(usize),
}

/// One validated directory entry name.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(OsString);

impl Name {
    /// Linux's `NAME_MAX`: no file system it supports stores a longer entry name.
    pub const MAX_LEN: usize = 255;

    /// Validates `name`.
    pub fn new(name: &OsStr) -> Result<Name, NameError> {
        let b = name.as_bytes();
        match b {
            [] => Err(NameError::Empty),
            b"." => Err(NameError::Dot),
            b".." => Err(NameError::DotDot),
            _ if b.contains(&b'/') => Err(NameError::Slash),
            _ if b.contains(&0) => Err(NameError::Nul),
            _ if b.len() > Self::MAX_LEN => Err(NameError::TooLong(b.len())),
            _ => Ok(Name(name.to_owned())),
        }
    }

    pub fn as_os_str(&self) -> &OsStr {
        &self.0
    }
}

impl TryFrom<&str> for Name {
    type Error = NameError;
    fn try_from(s: &str) -> Result<Name, NameError> {
        Name::new(OsStr::new(s))
    }
}

impl TryFrom<&OsStr> for Name {
    type Error = NameError;
    fn try_from(s: &OsStr) -> Result<Name, NameError> {
        Name::new(s)
    }
}

impl AsRef<OsStr> for Name {
    fn as_ref(&self) -> &OsStr {
        &self.0
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&Path::new(&self.0).display(), f)
    }
}

/// Why a relative path was refused: which component (counted from 0) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelPathError {
    #[error("the path is absolute")]
    Absolute,
    #[error("component {index}: {reason}")]
    Component { index: usize, reason: NameError },
}

/// A path relative to a directory, made of validated names only. The empty path names the
/// directory itself.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelPath(Vec<Name>);

impl RelPath {
    /// The empty path: the directory itself.
    pub fn new() -> RelPath {
        RelPath(Vec::new())
    }

    /// Parses a `/`-separated relative path strictly: no leading `/`, and no empty, `.` or
    /// `..` component anywhere (so `a//b` and `a/./b` are refused, not normalised: a name
    /// read from a recovery point that needs normalising is a name that was tampered with).
    pub fn parse(path: impl AsRef<OsStr>) -> Result<RelPath, RelPathError> {
        let b = path.as_ref().as_bytes();
        if b.first() == Some(&b'/') {
            return Err(RelPathError::Absolute);
        }
        if b.is_empty() {
            return Ok(RelPath::new());
        }
        b.split(|c| *c == b'/')
            .enumerate()
            .map(|(index, part)| {
                Name::new(OsStr::from_bytes(part))
                    .map_err(|reason| RelPathError::Component { index, reason })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(RelPath)
    }

    pub fn push(&mut self, name: Name) {
        self.0.push(name);
    }

    /// This path with `name` appended.
    pub fn join(&self, name: &Name) -> RelPath {
        let mut p = self.clone();
        p.push(name.clone());
        p
    }

    pub fn names(&self) -> &[Name] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The parent's components and the last name, or `None` for the empty path.
    pub fn split_last(&self) -> Option<(&[Name], &Name)> {
        self.0.split_last().map(|(last, parent)| (parent, last))
    }

    /// The path as the kernel takes it: names joined by `/`, `.` for the empty path.
    pub(crate) fn to_os_string(&self) -> OsString {
        join(&self.0)
    }

    /// For messages: the path as a `PathBuf` (`.` when empty).
    pub fn to_path_buf(&self) -> PathBuf {
        PathBuf::from(self.to_os_string())
    }
}

/// Names joined by `/`, `.` when there are none.
pub(crate) fn join(names: &[Name]) -> OsString {
    if names.is_empty() {
        return OsString::from(".");
    }
    let mut out = Vec::new();
    for (i, n) in names.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(n.0.as_bytes());
    }
    OsString::from_vec(out)
}

impl From<Name> for RelPath {
    fn from(n: Name) -> RelPath {
        RelPath(vec![n])
    }
}

impl FromIterator<Name> for RelPath {
    fn from_iter<I: IntoIterator<Item = Name>>(iter: I) -> RelPath {
        RelPath(iter.into_iter().collect())
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_os_string(), f)
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.to_path_buf().display(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        let bad: [(&[u8], NameError); 6] = [
            (b"", NameError::Empty),
            (b".", NameError::Dot),
            (b"..", NameError::DotDot),
            (b"a/b", NameError::Slash),
            (b"a\0b", NameError::Nul),
            (&[b'x'; 256], NameError::TooLong(256)),
        ];
        for (name, why) in bad {
            assert_eq!(Name::new(OsStr::from_bytes(name)), Err(why), "{name:?}");
        }
        for good in [&b"..."[..], b".hidden", b"a b", &[b'x'; 255], b"\xff\xfe"] {
            assert!(Name::new(OsStr::from_bytes(good)).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn paths_are_parsed_strictly() {
        let p = RelPath::parse("a/b/c").unwrap();
        assert_eq!(p.names().len(), 3);
        assert_eq!(p.to_path_buf(), PathBuf::from("a/b/c"));
        assert!(RelPath::parse("").unwrap().is_empty());
        assert_eq!(RelPath::parse("/etc"), Err(RelPathError::Absolute));
        for (bad, index, reason) in [
            ("a/../b", 1, NameError::DotDot),
            ("a//b", 1, NameError::Empty),
            ("./a", 0, NameError::Dot),
            ("a/", 1, NameError::Empty),
            ("a/b\0", 1, NameError::Nul),
        ] {
            assert_eq!(
                RelPath::parse(bad),
                Err(RelPathError::Component { index, reason }),
                "{bad:?}"
            );
        }
    }
}
