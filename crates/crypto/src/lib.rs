//! Cryptography for rbackup: passphrase policy and generator, Argon2id key wrapping (key files
//! with a checksum and a MAC, and their printed form),
//! AES-256-GCM sealing, keyed BLAKE3 blob ids and subkey derivation.
//!
//! # The key design choice: random nonces under many short-lived subkeys
//!
//! AES-GCM fails catastrophically if a (key, nonce) pair is ever used twice: the XOR of two
//! plaintexts leaks and the authentication key can be recovered. A backup agent is exactly
//! the kind of program where counter nonces go wrong: runs crash between "encrypt" and
//! "persist the counter", two machines restore the same key file, a vault is copied and both
//! copies keep writing. Any scheme that keeps nonce *state* can be rolled back.
//!
//! This crate therefore keeps no nonce state at all. Every [`SealKey::seal`] draws a fresh
//! 96-bit nonce from the operating system's RNG, and the API offers no way to pass one in
//! (outside a `#[doc(hidden)]` hook for known-answer tests). Random 96-bit nonces are safe for
//! about 2^32 messages per key (NIST SP 800-38D §8.3); instead of counting toward that bound
//! we make sure no key gets near it. Blob data is sealed under a *per-pack* subkey
//! ([`MasterKeys::pack_key`]), so one key seals only the few thousand blobs of one pack, and
//! metadata objects get their own per-purpose subkeys ([`MasterKeys::meta_key`]). Subkeys are
//! derived with BLAKE3's `derive_key` mode from the master data key, so nothing but the three
//! master keys ever has to be stored.
//!
//! Blob ids are keyed BLAKE3 hashes of the plaintext, so the store (which sees ids) cannot
//! confirm a guess of a file's content. Each blob is sealed with associated data that binds
//! its id and kind, so blobs cannot be swapped or retyped without [`CryptoError::Tampered`].
//!
//! # Secrets
//!
//! [`Passphrase`], [`MasterKeys`], [`SealKey`] and every intermediate key (the Argon2id
//! output, derived subkeys, decrypted key material) are zeroized when dropped, and their
//! `Debug` output is `[redacted]`.
//!
//! # Example
//!
//! ```
//! use rbackup_crypto::{KdfParams, KeyFile, MasterKeys, Passphrase};
//!
//! # fn main() -> Result<(), rbackup_crypto::CryptoError> {
//! let passphrase = Passphrase::generate();
//! let keys = MasterKeys::generate();
//! // Real vaults use `KdfParams::default()`; the cheap parameters keep this example fast.
//! let key_file = KeyFile::wrap(&keys, &passphrase, KdfParams::fast_insecure_for_tests(), "demo")?;
//!
//! // Stored as JSON; read back with every check that needs no passphrase, then unwrapped.
//! let key_file = KeyFile::parse(&key_file.to_json())?;
//! let keys = key_file.unwrap(&passphrase)?;
//! let chunk = b"file contents";
//! let id = keys.blob_id(chunk);
//! let pack_key = keys.pack_key(&[7; 32]);
//! let sealed = pack_key.seal_blob(&id, 0, chunk);
//! assert_eq!(pack_key.open_blob(&id, 0, &sealed)?, chunk);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod blob_id;
mod error;
mod kdf;
mod keyfile;
mod keys;
mod passphrase;
mod printable;
mod seal;

pub use blob_id::BlobId;
pub use error::{CryptoError, KdfError, KdfParam, Malformed};
pub use kdf::{KdfParams, MAX_M_COST_KIB, MAX_P_COST, MAX_T_COST};
pub use keyfile::{KEY_FILE_VERSION, KeyFile, LEGACY_KEY_FILE_VERSION};
pub use keys::{MASTER_KEYS_LEN, MasterKeys};
pub use passphrase::{
    GENERATED_ALPHABET, GENERATED_ENTROPY_BITS, GENERATED_GROUP_LEN, GENERATED_GROUPS, Passphrase,
};
pub use seal::SealKey;

#[doc(hidden)]
pub use kdf::argon2id_for_tests;

/// Smallest passphrase accepted by [`Passphrase::new`], counted in characters (not bytes).
pub const MIN_PASSPHRASE_CHARS: usize = 16;

/// Bytes that [`SealKey::seal`] adds to a plaintext: a 12-byte nonce and a 16-byte GCM tag.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// Length of the random AES-GCM nonce that prefixes every sealed message.
pub const NONCE_LEN: usize = 12;

/// Length of the GCM authentication tag that ends every sealed message.
pub const TAG_LEN: usize = 16;

/// Fills `buf` from the operating system's RNG.
///
/// # Panics
///
/// Panics if the OS RNG fails. That only happens on a broken system (no `getrandom(2)`, no
/// `/dev/urandom`), where continuing with weak keys or repeated nonces would be far worse than
/// stopping; this is why the generators and `seal` are infallible.
pub(crate) fn fill_random(buf: &mut [u8]) {
    if let Err(e) = getrandom::fill(buf) {
        panic!("the operating system's random number generator failed: {e}");
    }
}
