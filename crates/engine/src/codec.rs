//! How structured objects become bytes: CBOR (self-describing, so fields can be added without
//! a format break), zstd, then AES-256-GCM under a metadata subkey whose associated data names
//! the object's kind and name, so an index file cannot be passed off as a recovery point or moved
//! to another name. The few plain objects (vault.json, machine.json, key files) are pretty JSON.

use rbackup_crypto::MasterKeys;
use rbackup_store::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{CorruptReason, EngineError, Result};

/// Version byte at the start of every sealed metadata plaintext.
const META_VERSION: u8 = 1;

pub(crate) fn to_cbor<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail and our types always serialize.
    #[allow(clippy::expect_used)]
    ciborium::into_writer(value, &mut out).expect("CBOR encoding into memory");
    out
}

pub(crate) fn from_cbor<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    ciborium::from_reader(bytes).map_err(|e| EngineError::corrupt(what, e))
}

/// A plain object's bytes: pretty JSON, for people reading the vault.
pub(crate) fn json<T: Serialize>(value: &T) -> Bytes {
    // Our metadata types always serialize.
    #[allow(clippy::expect_used)]
    let v = serde_json::to_vec_pretty(value).expect("JSON encoding");
    Bytes::from(v)
}

fn ad(kind: &str, name: &str) -> Vec<u8> {
    format!("rbackup meta v1/{kind}/{name}").into_bytes()
}

/// Seals `value` as the metadata object `kind/name`.
pub(crate) fn seal_meta<T: Serialize>(
    keys: &MasterKeys,
    kind: &str,
    name: &str,
    value: &T,
) -> Vec<u8> {
    let cbor = to_cbor(value);
    let mut plain = Vec::with_capacity(cbor.len() / 2 + 16);
    plain.push(META_VERSION);
    // zstd into memory only fails on allocation failure.
    #[allow(clippy::expect_used)]
    let compressed = zstd::bulk::compress(&cbor, 3).expect("zstd compression into memory");
    plain.extend_from_slice(&compressed);
    keys.meta_key(kind).seal(&ad(kind, name), &plain)
}

/// Opens a metadata object sealed by [`seal_meta`].
pub(crate) fn open_meta<T: DeserializeOwned>(
    keys: &MasterKeys,
    kind: &str,
    name: &str,
    sealed: &[u8],
) -> Result<T> {
    let what = format!("{kind}/{name}");
    let plain = keys
        .meta_key(kind)
        .open(&ad(kind, name), sealed)
        .map_err(|e| EngineError::corrupt(&what, e))?;
    let (&version, body) = plain
        .split_first()
        .ok_or_else(|| EngineError::corrupt(&what, CorruptReason::Empty))?;
    if version != META_VERSION {
        return Err(EngineError::UnsupportedFormat {
            what,
            found: version.into(),
            supported: META_VERSION.into(),
        });
    }
    let cbor = zstd::stream::decode_all(body)
        .map_err(|e| EngineError::corrupt(&what, CorruptReason::Decompress(e)))?;
    from_cbor(&cbor, &what)
}
