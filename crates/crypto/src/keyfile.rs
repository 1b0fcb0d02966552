//! Key files: the master keys wrapped under a passphrase-derived key.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{
    CryptoError, KdfParams, MASTER_KEYS_LEN, Malformed, MasterKeys, Passphrase, SEAL_OVERHEAD,
    SealKey, fill_random,
};

/// The only key-file format version this crate reads and writes.
pub const KEY_FILE_VERSION: u32 = 1;

/// Length of the random Argon2id salt.
const SALT_LEN: usize = 16;

/// Prefix of the associated data of the wrapped keys; the KDF parameters follow it.
const KEY_FILE_AD_PREFIX: &[u8; 18] = b"rbackup keyfile v1";

/// The master keys sealed under a key derived from a passphrase with Argon2id.
///
/// Holds nothing secret in the clear, so it may be stored in the vault and printed. The KDF
/// parameters are bound into the associated data of `wrapped`: a file whose parameters were
/// lowered (to make guessing cheaper for whoever edits it next) no longer opens.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyFile {
    /// Format version, [`KEY_FILE_VERSION`].
    pub version: u32,
    /// Argon2id cost parameters.
    pub kdf: KdfParams,
    /// Argon2id salt, 16 bytes as hex.
    pub salt: String,
    /// Hex of the sealed 96 bytes of [`MasterKeys::to_secret_bytes`].
    pub wrapped: String,
    /// Creation time, RFC 3339 in UTC.
    pub created: String,
}

impl KeyFile {
    /// Wraps `keys` under `passphrase`: Argon2id(passphrase, fresh random salt, `kdf`) gives a
    /// 32-byte key-encryption key, which AES-256-GCM-seals the master keys with associated
    /// data `b"rbackup keyfile v1" || kdf.to_bytes()`.
    ///
    /// # Errors
    ///
    /// [`CryptoError::Kdf`] if `kdf` is invalid.
    pub fn wrap(
        keys: &MasterKeys,
        passphrase: &Passphrase,
        kdf: KdfParams,
    ) -> Result<KeyFile, CryptoError> {
        let mut salt = [0u8; SALT_LEN];
        fill_random(&mut salt);
        let kek = SealKey::from_raw(kdf.derive(passphrase, &salt)?);
        let wrapped = kek.seal(&key_file_ad(&kdf), &keys.to_secret_bytes());
        Ok(KeyFile {
            version: KEY_FILE_VERSION,
            kdf,
            salt: hex::encode(salt),
            wrapped: hex::encode(wrapped),
            created: jiff::Timestamp::now().to_string(),
        })
    }

    /// Recovers the master keys.
    ///
    /// The fields are checked before Argon2id runs, so a malformed or absurdly expensive file
    /// is refused without spending the work.
    ///
    /// # Errors
    ///
    /// - [`CryptoError::Malformed`] for an unknown version or bad salt/wrapped fields;
    /// - [`CryptoError::Kdf`] for invalid or excessive KDF parameters;
    /// - [`CryptoError::WrongPassphrase`] if authentication fails: the passphrase is wrong, or
    ///   the file was altered (the two cannot be told apart, by design).
    pub fn unwrap(&self, passphrase: &Passphrase) -> Result<MasterKeys, CryptoError> {
        if self.version != KEY_FILE_VERSION {
            return Err(Malformed::KeyFileVersion {
                found: self.version,
                supported: KEY_FILE_VERSION,
            }
            .into());
        }
        self.kdf.validate()?;
        let salt = decode_hex_field("salt", &self.salt)?;
        if salt.len() != SALT_LEN {
            return Err(Malformed::Length {
                what: "key file salt",
                got: salt.len(),
                expected: SALT_LEN,
            }
            .into());
        }
        let wrapped = decode_hex_field("wrapped keys", &self.wrapped)?;
        if wrapped.len() != MASTER_KEYS_LEN + SEAL_OVERHEAD {
            return Err(Malformed::Length {
                what: "key file wrapped keys",
                got: wrapped.len(),
                expected: MASTER_KEYS_LEN + SEAL_OVERHEAD,
            }
            .into());
        }
        let kek = SealKey::from_raw(self.kdf.derive(passphrase, &salt)?);
        let secret = kek
            .open(&key_file_ad(&self.kdf), &wrapped)
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::WrongPassphrase)?;
        MasterKeys::from_secret_bytes(&secret)
    }
}

fn key_file_ad(kdf: &KdfParams) -> [u8; KEY_FILE_AD_PREFIX.len() + 12] {
    let mut ad = [0u8; KEY_FILE_AD_PREFIX.len() + 12];
    let (prefix, params) = ad.split_at_mut(KEY_FILE_AD_PREFIX.len());
    prefix.copy_from_slice(KEY_FILE_AD_PREFIX);
    params.copy_from_slice(&kdf.to_bytes());
    ad
}

fn decode_hex_field(field: &str, value: &str) -> Result<Vec<u8>, CryptoError> {
    hex::decode(value).map_err(|source| {
        Malformed::Hex {
            what: format!("key file {field}"),
            source,
        }
        .into()
    })
}
