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
    seal_raw_meta(keys, kind, name, &plain)
}

/// Seals an already encoded plaintext (version byte, zstd body) as `kind/name`.
pub(crate) fn seal_raw_meta(keys: &MasterKeys, kind: &str, name: &str, plain: &[u8]) -> Vec<u8> {
    keys.meta_key(kind).seal(&ad(kind, name), plain)
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
    let cbor = decompress_bounded(body, crate::layout::limits(kind).plain)
        .map_err(|reason| EngineError::corrupt(&what, reason))?;
    from_cbor(&cbor, &what)
}

/// zstd-decompresses `body`, refusing it once it passes `max` bytes: the input is at most its
/// kind's stored cap, but a few KiB of zstd can claim gigabytes. Only `max + 1` bytes are ever
/// produced, whatever the frame header says.
pub(crate) fn decompress_bounded(
    body: &[u8],
    max: u64,
) -> std::result::Result<Vec<u8>, CorruptReason> {
    use std::io::Read;
    let decoder = zstd::stream::read::Decoder::new(body).map_err(CorruptReason::Decompress)?;
    let mut out = Vec::new();
    decoder
        .take(max.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(CorruptReason::Decompress)?;
    if out.len() as u64 > max {
        return Err(CorruptReason::DecompressedTooLarge { max });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{CONFIG, limits};

    #[test]
    fn sealed_metadata_round_trips() {
        let keys = MasterKeys::generate();
        let sealed = seal_meta(&keys, CONFIG, "m", &vec![7u32; 100]);
        let back: Vec<u32> = open_meta(&keys, CONFIG, "m", &sealed).unwrap();
        assert_eq!(back, vec![7u32; 100]);
    }

    #[test]
    fn a_zstd_bomb_is_refused_at_the_kinds_plain_cap() {
        let keys = MasterKeys::generate();
        let max = limits(CONFIG).plain;
        // A few KiB that decompress to twice the cap: authentic, but not something we write.
        let bomb = zstd::bulk::compress(&vec![0u8; 2 * max as usize], 19).unwrap();
        assert!(bomb.len() < 4096, "{}", bomb.len());
        let mut plain = vec![META_VERSION];
        plain.extend_from_slice(&bomb);
        let sealed = keys.meta_key(CONFIG).seal(&ad(CONFIG, "m"), &plain);
        let err = open_meta::<Vec<u32>>(&keys, CONFIG, "m", &sealed).unwrap_err();
        assert!(
            matches!(
                &err,
                EngineError::Corrupt { reason: CorruptReason::DecompressedTooLarge { max: m }, .. }
                    if *m == max
            ),
            "{err}"
        );
        // Exactly at the cap is allowed (and then fails only as CBOR).
        assert_eq!(
            decompress_bounded(&zstd::bulk::compress(&vec![0u8; 1000], 3).unwrap(), 1000)
                .unwrap()
                .len(),
            1000
        );
        assert!(
            decompress_bounded(&zstd::bulk::compress(&vec![0u8; 1001], 3).unwrap(), 1000).is_err()
        );
    }
}
