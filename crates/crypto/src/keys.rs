//! The master keys of a repository and the subkeys derived from them.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::{BlobId, CryptoError, Malformed, SealKey, fill_random};

/// Length of [`MasterKeys::to_secret_bytes`]: data key, id key, chunker key.
pub const MASTER_KEYS_LEN: usize = 96;

/// BLAKE3 `derive_key` context for per-pack keys. Contexts are fixed, unique strings, as
/// BLAKE3 requires; the version lets a future format derive different keys.
const PACK_KEY_CONTEXT: &str = "rbackup pack key v1";

/// BLAKE3 `derive_key` context for metadata keys.
const META_KEY_CONTEXT: &str = "rbackup meta key v1";

/// The three independent 256-bit keys of a repository.
///
/// - the *data key* never encrypts anything itself; pack and metadata subkeys are derived
///   from it, which keeps every AES-GCM key far below its random-nonce message limit;
/// - the *id key* keys the BLAKE3 hash that names blobs;
/// - the *chunker key* seeds the chunker's gear table.
///
/// Zeroized on drop; `Debug` prints `[redacted]`. Deliberately not `Clone`: share it by
/// reference or `Arc` so exactly one copy of the master secret lives in memory.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct MasterKeys {
    data: [u8; 32],
    id: [u8; 32],
    chunker: [u8; 32],
}

impl MasterKeys {
    /// Fresh random keys from the OS RNG.
    ///
    /// # Panics
    ///
    /// Only if the OS RNG fails (see the crate docs).
    pub fn generate() -> MasterKeys {
        let mut keys = MasterKeys {
            data: [0; 32],
            id: [0; 32],
            chunker: [0; 32],
        };
        fill_random(&mut keys.data);
        fill_random(&mut keys.id);
        fill_random(&mut keys.chunker);
        keys
    }

    /// The id of a blob: keyed BLAKE3 of its plaintext under the id key, so that only holders
    /// of the keys can test whether a vault contains some known content.
    pub fn blob_id(&self, plaintext: &[u8]) -> BlobId {
        BlobId(*blake3::keyed_hash(&self.id, plaintext).as_bytes())
    }

    /// The key that seeds the chunker's gear table.
    pub fn chunker_key(&self) -> &[u8; 32] {
        &self.chunker
    }

    /// The key that seals the blobs of one pack:
    /// BLAKE3 `derive_key("rbackup pack key v1", data_key || pack_id)`.
    pub fn pack_key(&self, pack_id: &[u8; 32]) -> SealKey {
        self.derive(PACK_KEY_CONTEXT, pack_id)
    }

    /// The key that seals metadata objects of one purpose (`"index"`, `"snapshot"`,
    /// `"config"`, ...): BLAKE3 `derive_key("rbackup meta key v1", data_key || purpose)`.
    ///
    /// Objects of different purposes cannot be opened with each other's key, which stops a
    /// hostile store from passing off one kind of object as another.
    pub fn meta_key(&self, purpose: &str) -> SealKey {
        self.derive(META_KEY_CONTEXT, purpose.as_bytes())
    }

    /// A keyed BLAKE3 of `message` under `derive_key(context, data_key)`: proves that a
    /// holder of these keys wrote `message` (key files carry one, see [`crate::KeyFile`]).
    pub(crate) fn mac(&self, context: &str, message: &[u8]) -> [u8; 32] {
        let mut key = Zeroizing::new(blake3::derive_key(context, &self.data));
        let mac = *blake3::keyed_hash(&key, message).as_bytes();
        key.zeroize();
        mac
    }

    /// The data key always comes first and is of fixed length, so `data_key || suffix` is an
    /// unambiguous encoding of the suffix.
    fn derive(&self, context: &str, suffix: &[u8]) -> SealKey {
        let mut hasher = blake3::Hasher::new_derive_key(context);
        hasher.update(&self.data);
        hasher.update(suffix);
        let key = Zeroizing::new(*hasher.finalize().as_bytes());
        // The hasher's chaining value depends on the data key.
        hasher.zeroize();
        SealKey::from_raw(key)
    }

    /// The 96 secret bytes (data, id, chunker key), e.g. to keep a local key file readable
    /// only by its owner, or to wrap them under a passphrase ([`crate::KeyFile`]).
    pub fn to_secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(MASTER_KEYS_LEN));
        out.extend_from_slice(&self.data);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&self.chunker);
        out
    }

    /// The inverse of [`MasterKeys::to_secret_bytes`].
    ///
    /// # Errors
    ///
    /// [`CryptoError::Malformed`] unless `b` is exactly [`MASTER_KEYS_LEN`] bytes.
    pub fn from_secret_bytes(b: &[u8]) -> Result<MasterKeys, CryptoError> {
        let Some((data, rest)) = b.split_first_chunk::<32>() else {
            return Err(bad_len(b.len()));
        };
        let Some((id, rest)) = rest.split_first_chunk::<32>() else {
            return Err(bad_len(b.len()));
        };
        let Ok(chunker) = <&[u8; 32]>::try_from(rest) else {
            return Err(bad_len(b.len()));
        };
        Ok(MasterKeys {
            data: *data,
            id: *id,
            chunker: *chunker,
        })
    }
}

fn bad_len(got: usize) -> CryptoError {
    Malformed::Length {
        what: "master key material",
        got,
        expected: MASTER_KEYS_LEN,
    }
    .into()
}

impl fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKeys([redacted])")
    }
}
