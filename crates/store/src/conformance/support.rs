//! Helpers for the conformance suite: failure reporting, checks, test data.

use std::fmt::Display;
use std::path::PathBuf;

use bytes::Bytes;

use super::SUITE_PREFIX;
use crate::{ObjectMeta, Store, StoreError};

/// A local file for `put_file`, removed on drop.
pub(super) struct LocalTemp(pub(super) PathBuf);

impl LocalTemp {
    pub(super) fn new(store: &dyn Store) -> LocalTemp {
        let unique =
            getrandom::u64().unwrap_or_else(|e| fail(store, format!("no randomness: {e}")));
        let name = format!("rbackup-conformance-{}-{unique:016x}", std::process::id());
        LocalTemp(std::env::temp_dir().join(name))
    }

    pub(super) fn write(&self, store: &dyn Store, data: &[u8]) {
        if let Err(e) = std::fs::write(&self.0, data) {
            fail(
                store,
                format!("cannot write local test file {}: {e}", self.0.display()),
            );
        }
    }
}

impl Drop for LocalTemp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The aspect's own prefix, emptied of anything an earlier interrupted run left there.
pub(super) async fn fresh(store: &dyn Store, aspect: &str) -> String {
    let prefix = format!("{SUITE_PREFIX}/{aspect}");
    clear(store, &prefix).await;
    prefix
}

pub(super) async fn clear(store: &dyn Store, prefix: &str) {
    for meta in ok(store, "list for cleanup", store.list(prefix).await) {
        ok(store, "delete for cleanup", store.delete(&meta.path).await);
    }
}

/// Deterministic bytes that differ by `seed`, so swapped or mixed objects are caught.
pub(super) fn pattern(len: usize, seed: u64) -> Bytes {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

pub(super) fn fail(store: &dyn Store, msg: impl Display) -> ! {
    panic!("store conformance failed for {}: {msg}", store.describe())
}

pub(super) fn check(store: &dyn Store, cond: bool, msg: impl Display) {
    if !cond {
        fail(store, msg);
    }
}

pub(super) fn ok<T>(store: &dyn Store, what: &str, result: Result<T, StoreError>) -> T {
    result.unwrap_or_else(|e| fail(store, format!("{what} failed: {e}")))
}

pub(super) fn same(store: &dyn Store, what: &str, got: &[u8], want: &[u8]) {
    if got != want {
        let first_diff = got.iter().zip(want).position(|(a, b)| a != b);
        fail(
            store,
            format!(
                "{what}: read {} bytes, expected {} (first difference at {first_diff:?})",
                got.len(),
                want.len()
            ),
        );
    }
}

pub(super) async fn check_size(store: &dyn Store, key: &str, size: u64) {
    let meta = ok(store, "head", store.head(key).await);
    let want = ObjectMeta {
        path: key.to_string(),
        size,
    };
    check(
        store,
        meta == want,
        format!("head({key}) = {meta:?}, expected {want:?}"),
    );
}

pub(super) fn expect_listing(
    store: &dyn Store,
    what: &str,
    mut got: Vec<ObjectMeta>,
    want: &[(&str, u64)],
) {
    got.sort_by(|a, b| a.path.cmp(&b.path));
    let mut want: Vec<ObjectMeta> = want
        .iter()
        .map(|(p, s)| ObjectMeta {
            path: p.to_string(),
            size: *s,
        })
        .collect();
    want.sort_by(|a, b| a.path.cmp(&b.path));
    check(
        store,
        got == want,
        format!("list({what}) = {got:?}, expected {want:?}"),
    );
}

pub(super) fn expect_not_found<T: std::fmt::Debug>(
    store: &dyn Store,
    key: &str,
    what: &str,
    res: Result<T, StoreError>,
) {
    match res {
        Err(e) if e.is_not_found() => {}
        other => fail(
            store,
            format!("{what} of missing {key:?}: expected NotFound, got {other:?}"),
        ),
    }
}

pub(super) fn expect_already_exists(store: &dyn Store, key: &str, res: Result<(), StoreError>) {
    match res {
        Err(StoreError::AlreadyExists { .. }) => {}
        other => fail(
            store,
            format!("Create on existing {key:?}: expected AlreadyExists, got {other:?}"),
        ),
    }
}

pub(super) fn expect_invalid_path<T: std::fmt::Debug>(
    store: &dyn Store,
    key: &str,
    what: &str,
    res: Result<T, StoreError>,
) {
    match res {
        Err(StoreError::InvalidPath { .. }) => {}
        other => fail(
            store,
            format!("{what} with invalid key {key:?}: expected InvalidPath, got {other:?}"),
        ),
    }
}
