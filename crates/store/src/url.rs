//! Vault URLs: parsing the forms people type, and printing one canonical form back.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use crate::StoreError;
use crate::key::validate_key;

/// Where a vault lives, parsed from its URL.
///
/// `parse` followed by [`to_url_string`](VaultUrl::to_url_string) gives the canonical URL, and
/// parsing the canonical URL gives the same value back, so the canonical string is what should be
/// stored in configuration files.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VaultUrl {
    /// A directory on a local (or locally mounted) file system; always absolute.
    Local(PathBuf),
    /// An in-process store; the same non-empty name gives the same store within one process,
    /// the empty name a fresh private one.
    Memory(String),
    /// Amazon S3 or an S3-compatible service.
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix inside the bucket, without leading or trailing '/' (may be empty).
        prefix: String,
    },
    /// Azure Blob Storage.
    Azure {
        /// Container name.
        container: String,
        /// Key prefix inside the container, without leading or trailing '/' (may be empty).
        prefix: String,
    },
    /// Google Cloud Storage.
    Gcs {
        /// Bucket name.
        bucket: String,
        /// Key prefix inside the bucket, without leading or trailing '/' (may be empty).
        prefix: String,
    },
}

impl VaultUrl {
    /// Parses a vault URL or a plain path.
    ///
    /// Accepted: `file:///abs/path` (also `file://localhost/abs/path`, percent-escapes decoded),
    /// plain absolute or relative paths (relative ones are made absolute against the current
    /// directory), `memory://[name]`, `s3://bucket[/prefix]`, `az://container[/prefix]` and
    /// `gs://bucket[/prefix]`. Scheme names are case-insensitive.
    pub fn parse(url: &str) -> Result<VaultUrl, StoreError> {
        let invalid = |reason: &str| StoreError::InvalidUrl {
            url: url.into(),
            reason: reason.into(),
        };
        if url.is_empty() {
            return Err(invalid("the URL is empty"));
        }
        let Some((scheme, rest)) = split_scheme(url) else {
            if let Some((word, _)) = url.split_once(':')
                && KNOWN_SCHEMES.contains(&word.to_ascii_lowercase().as_str())
            {
                return Err(invalid("the scheme must be followed by '://'"));
            }
            return parse_plain_path(url)
                .map(VaultUrl::Local)
                .map_err(|reason| invalid(&reason));
        };
        let parsed = match scheme.to_ascii_lowercase().as_str() {
            "file" => parse_file(rest).map(VaultUrl::Local),
            "memory" => parse_memory(rest).map(VaultUrl::Memory),
            "s3" => parse_cloud(rest).map(|(bucket, prefix)| VaultUrl::S3 { bucket, prefix }),
            "az" => {
                parse_cloud(rest).map(|(container, prefix)| VaultUrl::Azure { container, prefix })
            }
            "gs" => parse_cloud(rest).map(|(bucket, prefix)| VaultUrl::Gcs { bucket, prefix }),
            other => Err(format!("unknown scheme {other:?}")),
        };
        parsed.map_err(|reason| invalid(&reason))
    }

    /// The canonical URL: `file:///abs/path` (percent-encoded), `memory://name`,
    /// `s3://bucket/prefix`, `az://container/prefix`, `gs://bucket/prefix` (no trailing '/',
    /// no "/prefix" part when the prefix is empty).
    pub fn to_url_string(&self) -> String {
        let cloud = |scheme: &str, bucket: &str, prefix: &str| {
            if prefix.is_empty() {
                format!("{scheme}://{bucket}")
            } else {
                format!("{scheme}://{bucket}/{prefix}")
            }
        };
        match self {
            VaultUrl::Local(path) => {
                format!("file://{}", percent_encode(path.as_os_str().as_bytes()))
            }
            VaultUrl::Memory(name) => format!("memory://{name}"),
            VaultUrl::S3 { bucket, prefix } => cloud("s3", bucket, prefix),
            VaultUrl::Azure { container, prefix } => cloud("az", container, prefix),
            VaultUrl::Gcs { bucket, prefix } => cloud("gs", bucket, prefix),
        }
    }
}

impl std::fmt::Display for VaultUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_url_string())
    }
}

impl std::str::FromStr for VaultUrl {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        VaultUrl::parse(s)
    }
}

const KNOWN_SCHEMES: [&str; 5] = ["file", "memory", "s3", "az", "gs"];

/// Splits "scheme://rest" when the part before "://" is a syntactically valid scheme, so that a
/// relative path such as "backups/a://b" stays a path.
fn split_scheme(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let mut chars = scheme.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (first_ok && rest_ok).then_some((scheme, rest))
}

fn parse_plain_path(text: &str) -> Result<PathBuf, String> {
    if text.starts_with('~') {
        return Err("'~' is not expanded here; give the full path, e.g. /home/me/vault".into());
    }
    let path = Path::new(text);
    if path.is_absolute() {
        return Ok(normalize(path));
    }
    let cwd = std::env::current_dir().map_err(|e| {
        format!("the current directory cannot be read ({e}) to resolve a relative path; use an absolute path")
    })?;
    Ok(normalize(&cwd.join(path)))
}

fn parse_file(rest: &str) -> Result<PathBuf, String> {
    let path = if rest.starts_with('/') {
        rest
    } else {
        rest.strip_prefix("localhost").unwrap_or_default()
    };
    if !path.starts_with('/') {
        return Err(
            "file:// needs an absolute path, e.g. file:///srv/vault (three slashes); \
                    host names other than localhost are not supported"
                .into(),
        );
    }
    let bytes = percent_decode(path)?;
    if bytes.contains(&0) {
        return Err("the path contains a NUL byte".into());
    }
    Ok(normalize(Path::new(&OsString::from_vec(bytes))))
}

fn parse_memory(rest: &str) -> Result<String, String> {
    if rest.contains('/') || rest.chars().any(char::is_control) {
        return Err("a memory:// name may not contain '/' or control characters".into());
    }
    Ok(rest.to_string())
}

/// Parses "bucket[/prefix]" for the cloud schemes.
fn parse_cloud(rest: &str) -> Result<(String, String), String> {
    if rest.contains('@') {
        return Err(
            "credentials do not belong in the vault URL; give them through the \
                    environment or the credentials file"
                .into(),
        );
    }
    if rest.contains(['?', '#']) {
        return Err("query strings and fragments are not supported".into());
    }
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err("the bucket (or container) name is missing".into());
    }
    let edges_ok =
        |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let chars_ok = bucket
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'));
    if !chars_ok
        || !edges_ok(bucket.chars().next())
        || !edges_ok(bucket.chars().last())
        || bucket.len() > 222
    {
        return Err(format!(
            "bucket (or container) name {bucket:?} must be lowercase letters, digits, '.', '-' \
             or '_', starting and ending with a letter or digit"
        ));
    }
    let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
    if !prefix.is_empty() && validate_key(prefix).is_err() {
        return Err(format!(
            "prefix {prefix:?} has an empty, '.', '..' or reserved '.tmp-' segment, or a \
             control character or backslash"
        ));
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

/// Removes repeated and trailing separators and "." components, lexically (".." is kept: it
/// cannot be resolved without following symbolic links).
fn normalize(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

fn percent_decode(text: &str) -> Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            let value = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
            let Some(value) = value else {
                return Err("a '%' must be followed by two hexadecimal digits".into());
            };
            out.push(value);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn percent_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
