//! AES-256-GCM sealing with random nonces.

use std::fmt;

use aes_gcm::aead::{AeadInOut, KeyInit, Nonce, Tag};
use aes_gcm::{Aes256Gcm, Key};
use zeroize::{Zeroize, Zeroizing};

use crate::{BlobId, CryptoError, Malformed, NONCE_LEN, SEAL_OVERHEAD, TAG_LEN, fill_random};

/// Prefix of the associated data of every blob, so a blob can never be opened as some other
/// sealed object (or vice versa) even under the same key.
const BLOB_AD_PREFIX: &[u8; 15] = b"rbackup blob v1";

/// Length of a blob's associated data: prefix, kind byte, id.
const BLOB_AD_LEN: usize = BLOB_AD_PREFIX.len() + 1 + 32;

/// An AES-256-GCM key. Every seal draws a fresh random nonce; see the crate docs for why no
/// nonce can be supplied.
///
/// The key schedule and the raw key are zeroized on drop; `Debug` prints `[redacted]`.
#[derive(Clone)]
pub struct SealKey {
    cipher: Aes256Gcm,
    raw: Zeroizing<[u8; 32]>,
}

impl SealKey {
    /// Makes a key from 32 raw bytes (for callers that manage their own key material; within
    /// rbackup keys come from [`crate::MasterKeys`] and [`crate::KeyFile`]).
    pub fn from_raw(raw: Zeroizing<[u8; 32]>) -> SealKey {
        let key: &Key<Aes256Gcm> = (&*raw).into();
        SealKey {
            cipher: Aes256Gcm::new(key),
            raw,
        }
    }

    /// Encrypts and authenticates `plaintext` with associated data `ad`.
    ///
    /// Output layout: `nonce (12) || ciphertext || tag (16)`, i.e. `plaintext.len() +`
    /// [`SEAL_OVERHEAD`] bytes. Two seals of the same input differ.
    ///
    /// # Panics
    ///
    /// If the plaintext exceeds GCM's limit of 2^36 − 32 bytes (64 GiB), or the OS RNG fails.
    pub fn seal(&self, ad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        self.seal_into(ad, plaintext, &mut out);
        out
    }

    /// Appends the output of [`SealKey::seal`] to `out`, reusing its capacity.
    ///
    /// # Panics
    ///
    /// As [`SealKey::seal`].
    pub fn seal_into(&self, ad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);
        self.seal_with_nonce(&nonce, ad, plaintext, out);
    }

    fn seal_with_nonce(
        &self,
        nonce: &[u8; NONCE_LEN],
        ad: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) {
        assert!(
            plaintext.len() as u64 <= aes_gcm::P_MAX,
            "AES-GCM cannot seal more than 64 GiB in one message ({} bytes given)",
            plaintext.len()
        );
        out.reserve(plaintext.len() + SEAL_OVERHEAD);
        out.extend_from_slice(nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let nonce: &Nonce<Aes256Gcm> = nonce.into();
        match self
            .cipher
            .encrypt_inout_detached(nonce, ad, (&mut out[start..]).into())
        {
            Ok(tag) => out.extend_from_slice(&tag),
            // aes-gcm fails only on lengths beyond P_MAX / A_MAX (2^61 bytes of ad cannot
            // exist in memory), and P_MAX was asserted above.
            Err(_) => unreachable!("AES-GCM rejected lengths within its limits"),
        }
    }

    /// Seals with a caller-chosen nonce. Only for known-answer tests: reusing a nonce under
    /// the same key destroys GCM's security.
    #[doc(hidden)]
    pub fn seal_with_nonce_for_tests(
        &self,
        nonce: &[u8; NONCE_LEN],
        ad: &[u8],
        plaintext: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        self.seal_with_nonce(nonce, ad, plaintext, &mut out);
        out
    }

    /// The raw key, for known-answer tests of subkey derivation.
    #[doc(hidden)]
    pub fn raw_key_for_tests(&self) -> &[u8; 32] {
        &self.raw
    }

    /// Verifies and decrypts the output of [`SealKey::seal`] made with the same `ad`.
    ///
    /// # Errors
    ///
    /// [`CryptoError::Malformed`] if `sealed` is shorter than [`SEAL_OVERHEAD`];
    /// [`CryptoError::Tampered`] if authentication fails (wrong key, wrong `ad`, any change to
    /// the bytes).
    pub fn open(&self, ad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut out = Vec::new();
        self.open_into(ad, sealed, &mut out)?;
        Ok(out)
    }

    /// Like [`SealKey::open`], but appends the plaintext to `out`, reusing its capacity. On
    /// error `out` is left as it was.
    ///
    /// # Errors
    ///
    /// As [`SealKey::open`].
    pub fn open_into(
        &self,
        ad: &[u8],
        sealed: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        self.open_what(ad, sealed, out, || {
            format!("sealed data ({} bytes)", sealed.len())
        })
    }

    fn open_what(
        &self,
        ad: &[u8],
        sealed: &[u8],
        out: &mut Vec<u8>,
        what: impl FnOnce() -> String,
    ) -> Result<(), CryptoError> {
        let split = sealed
            .split_first_chunk::<NONCE_LEN>()
            .and_then(|(nonce, rest)| Some((nonce, rest.split_last_chunk::<TAG_LEN>()?)));
        let Some((nonce, (ciphertext, tag))) = split else {
            return Err(Malformed::Truncated {
                what: what(),
                got: sealed.len(),
                min: SEAL_OVERHEAD,
            }
            .into());
        };
        let nonce: &Nonce<Aes256Gcm> = nonce.into();
        let tag: &Tag<Aes256Gcm> = tag.into();
        let start = out.len();
        out.extend_from_slice(ciphertext);
        match self
            .cipher
            .decrypt_inout_detached(nonce, ad, (&mut out[start..]).into(), tag)
        {
            Ok(()) => Ok(()),
            Err(_) => {
                // aes-gcm checks the tag before decrypting, but do not rely on it.
                out[start..].zeroize();
                out.truncate(start);
                Err(CryptoError::Tampered { what: what() })
            }
        }
    }

    /// Seals a blob, binding its id and kind into the associated data
    /// (`b"rbackup blob v1" || [kind] || id`), so that a blob stored under another id, or
    /// read as another kind, fails to open.
    ///
    /// # Panics
    ///
    /// As [`SealKey::seal`].
    pub fn seal_blob(&self, id: &BlobId, kind: u8, plaintext: &[u8]) -> Vec<u8> {
        self.seal(&blob_ad(id, kind), plaintext)
    }

    /// Opens a blob sealed by [`SealKey::seal_blob`] with the same id and kind.
    ///
    /// # Errors
    ///
    /// As [`SealKey::open`], naming the blob.
    pub fn open_blob(&self, id: &BlobId, kind: u8, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut out = Vec::new();
        self.open_what(&blob_ad(id, kind), sealed, &mut out, || {
            format!("blob {id} (kind {kind}, {} bytes)", sealed.len())
        })?;
        Ok(out)
    }
}

fn blob_ad(id: &BlobId, kind: u8) -> [u8; BLOB_AD_LEN] {
    let mut ad = [0u8; BLOB_AD_LEN];
    let (prefix, rest) = ad.split_at_mut(BLOB_AD_PREFIX.len());
    prefix.copy_from_slice(BLOB_AD_PREFIX);
    rest[0] = kind;
    rest[1..].copy_from_slice(id.as_bytes());
    ad
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey([redacted])")
    }
}

// The raw key is `Zeroizing`, and aes-gcm's `zeroize` feature wipes the key schedule and the
// GHASH key when `cipher` drops.
impl zeroize::ZeroizeOnDrop for SealKey {}
