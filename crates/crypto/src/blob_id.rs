//! Blob ids: keyed BLAKE3 of a blob's plaintext.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::{CryptoError, Malformed};

/// Id of a blob: the keyed BLAKE3 hash of its plaintext (see [`crate::MasterKeys::blob_id`]).
///
/// Serialized as a 64-digit lowercase hex string in human-readable formats (JSON, TOML) and
/// as 32 raw bytes in binary ones (CBOR), where hex would double the size of every index.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobId(pub [u8; 32]);

impl BlobId {
    /// Lowercase hex, 64 digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits (either case).
    ///
    /// # Errors
    ///
    /// [`CryptoError::Malformed`] for any other length or a non-hex character.
    pub fn from_hex(s: &str) -> Result<BlobId, CryptoError> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|source| Malformed::Hex {
            what: format!("blob id {:?}", shorten(s)),
            source,
        })?;
        Ok(BlobId(out))
    }

    /// The 32 bytes of the id.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Keeps error messages readable when a huge string is passed as an id.
fn shorten(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}…")
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for BlobId {
    /// The first 8 bytes in hex: enough to tell ids apart in logs and test failures.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobId({}…)", hex::encode(&self.0[..8]))
    }
}

impl Serialize for BlobId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&self.to_hex())
        } else {
            serializer.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for BlobId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            deserializer.deserialize_str(BlobIdVisitor)
        } else {
            deserializer.deserialize_bytes(BlobIdVisitor)
        }
    }
}

/// Accepts every reasonable encoding (hex string, byte string, sequence of 32 bytes), so a
/// format that ignores the `deserialize_*` hint still round-trips.
struct BlobIdVisitor;

impl<'de> Visitor<'de> for BlobIdVisitor {
    type Value = BlobId;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a blob id: 64 hex digits or 32 bytes")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<BlobId, E> {
        BlobId::from_hex(v).map_err(E::custom)
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<BlobId, E> {
        <[u8; 32]>::try_from(v)
            .map(BlobId)
            .map_err(|_| E::invalid_length(v.len(), &self))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<BlobId, A::Error> {
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = seq
                .next_element()?
                .ok_or_else(|| de::Error::invalid_length(i, &self))?;
        }
        if seq.next_element::<u8>()?.is_some() {
            return Err(de::Error::invalid_length(33, &self));
        }
        Ok(BlobId(out))
    }
}
