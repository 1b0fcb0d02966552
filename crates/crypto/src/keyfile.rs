//! Key files: the master keys wrapped under a passphrase-derived key, with two integrity
//! records that tell damage apart from a wrong passphrase.
//!
//! # Integrity (version 2)
//!
//! A wrong passphrase and a damaged file look the same to AES-GCM: the tag does not verify.
//! So a version-2 file carries, besides the wrapped keys:
//!
//! - `checksum`: plain BLAKE3 over the file's canonical bytes (every other field, MAC
//!   included). Anyone can recompute it, so it proves nothing about who wrote the file, but a
//!   flipped or torn byte breaks it, and [`KeyFile::parse`] refuses the file as *damaged*
//!   before Argon2id runs. Only a file whose checksum holds can fail as a wrong passphrase.
//!   Someone who edits the file and recomputes the checksum can only make it fail to open
//!   (which deleting it would do as well).
//! - `mac`: keyed BLAKE3 over the same canonical bytes under a key derived from the master
//!   keys. Whoever holds the master keys (the agent's local key file) can verify that the file
//!   is exactly one written by a holder of the keys, without the passphrase
//!   ([`KeyFile::verify_mac`]); `check` does that.
//! - `bound_to`: an opaque label the caller chooses (rbackup: `<vault id>/<machine id>`),
//!   covered by both, so a file copied to another place is recognised as not belonging there.
//!
//! Version-1 files (written before these records existed) are still read: they simply have
//! no integrity record ([`KeyFile::has_integrity_record`]).

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{
    CryptoError, KdfParams, MASTER_KEYS_LEN, Malformed, MasterKeys, Passphrase, SEAL_OVERHEAD,
    SealKey, fill_random,
};

/// The key-file version this crate writes. It also reads [`LEGACY_KEY_FILE_VERSION`].
pub const KEY_FILE_VERSION: u32 = 2;

/// Key files without integrity records (checksum, MAC, binding): read, never written.
pub const LEGACY_KEY_FILE_VERSION: u32 = 1;

/// Length of the random Argon2id salt.
pub(crate) const SALT_LEN: usize = 16;

/// Length of the sealed master keys.
pub(crate) const WRAPPED_LEN: usize = MASTER_KEYS_LEN + SEAL_OVERHEAD;

/// Longest `bound_to` and `created` accepted, so a hostile file cannot make us hash megabytes.
pub(crate) const MAX_LABEL_LEN: usize = 256;

/// Prefix of the associated data of the wrapped keys; the KDF parameters follow it.
const KEY_FILE_AD_PREFIX: &[u8; 18] = b"rbackup keyfile v1";

/// Domain of the canonical bytes that the checksum and the MAC cover.
pub(crate) const CANONICAL_PREFIX: &[u8] = b"rbackup keyfile v2\n";

/// BLAKE3 `derive_key` context of the MAC key.
pub(crate) const MAC_KEY_CONTEXT: &str = "rbackup keyfile mac v1";

/// The master keys sealed under a key derived from a passphrase with Argon2id.
///
/// Holds nothing secret in the clear, so it may be stored in the vault and printed. The KDF
/// parameters are bound into the associated data of `wrapped`: a file whose parameters were
/// lowered (to make guessing cheaper for whoever edits it next) no longer opens.
///
/// Read files with [`KeyFile::parse`], which runs every check that needs no passphrase;
/// [`KeyFile::unwrap`] runs them again, so a value edited in memory is checked as well.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyFile {
    /// Format version, [`KEY_FILE_VERSION`] (or [`LEGACY_KEY_FILE_VERSION`] when read).
    pub version: u32,
    /// Argon2id cost parameters.
    pub kdf: KdfParams,
    /// Argon2id salt, 16 bytes as hex.
    pub salt: String,
    /// Hex of the sealed 96 bytes of [`MasterKeys::to_secret_bytes`].
    pub wrapped: String,
    /// Creation time, RFC 3339 in UTC.
    pub created: String,
    /// What the file belongs to (chosen by the caller; version 2 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_to: Option<String>,
    /// Hex of the keyed BLAKE3 under the master keys' MAC key (version 2 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Hex of the plain BLAKE3 of the canonical bytes (version 2 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

/// A key file's fields decoded and checked: what [`KeyFile::parse`] proves.
pub(crate) struct Decoded {
    pub salt: [u8; SALT_LEN],
    pub wrapped: Vec<u8>,
    pub mac: Option<[u8; 32]>,
}

impl KeyFile {
    /// Wraps `keys` under `passphrase`: Argon2id(passphrase, fresh random salt, `kdf`) gives a
    /// 32-byte key-encryption key, which AES-256-GCM-seals the master keys with associated
    /// data `b"rbackup keyfile v1" || kdf.to_bytes()`. The file is bound to `bound_to` and
    /// carries its MAC and checksum (see the module docs).
    ///
    /// # Errors
    ///
    /// [`CryptoError::Kdf`] if `kdf` is invalid; [`CryptoError::Malformed`] if `bound_to` is
    /// longer than 256 bytes.
    pub fn wrap(
        keys: &MasterKeys,
        passphrase: &Passphrase,
        kdf: KdfParams,
        bound_to: &str,
    ) -> Result<KeyFile, CryptoError> {
        check_label("key file binding", bound_to)?;
        let mut salt = [0u8; SALT_LEN];
        fill_random(&mut salt);
        let kek = SealKey::from_raw(kdf.derive(passphrase, &salt)?);
        let wrapped = kek.seal(&key_file_ad(&kdf), &keys.to_secret_bytes());
        let mut file = KeyFile {
            version: KEY_FILE_VERSION,
            kdf,
            salt: hex::encode(salt),
            wrapped: hex::encode(&wrapped),
            created: jiff::Timestamp::now().to_string(),
            bound_to: Some(bound_to.to_string()),
            mac: None,
            checksum: None,
        };
        let canonical = file.canonical_parts(&salt, &wrapped, bound_to);
        let mac = keys.mac(MAC_KEY_CONTEXT, &canonical);
        file.checksum = Some(hex::encode(checksum(&canonical, &mac)));
        file.mac = Some(hex::encode(mac));
        Ok(file)
    }

    /// Parses a key file's JSON and runs every check that needs no passphrase: version,
    /// Argon2id parameters within the ceilings, field lengths, and (version 2) the checksum.
    /// This is the one way bytes from outside become a `KeyFile`.
    ///
    /// # Errors
    ///
    /// - [`CryptoError::Malformed`] for JSON that is not a key file, an unknown version, bad
    ///   fields, or a checksum that does not match ([`Malformed::KeyFileChecksum`]: damage);
    /// - [`CryptoError::Kdf`] for invalid or excessive KDF parameters.
    pub fn parse(bytes: &[u8]) -> Result<KeyFile, CryptoError> {
        let file: KeyFile =
            serde_json::from_slice(bytes).map_err(|e| Malformed::KeyFileJson(e.to_string()))?;
        file.decode()?;
        Ok(file)
    }

    /// The file as JSON (what is stored).
    pub fn to_json(&self) -> Vec<u8> {
        // Strings, numbers and options only: serialization cannot fail.
        #[allow(clippy::expect_used)]
        serde_json::to_vec_pretty(self).expect("key file JSON")
    }

    /// Whether the file has a checksum and a MAC (version 2); a version-1 file has neither.
    pub fn has_integrity_record(&self) -> bool {
        self.version >= KEY_FILE_VERSION
    }

    /// What the file is bound to (version 2; `None` for version 1).
    pub fn bound_to(&self) -> Option<&str> {
        self.bound_to.as_deref()
    }

    /// Checks the file's MAC under `keys`: `Ok(true)` if it was written by a holder of these
    /// master keys exactly as it is, `Ok(false)` for a version-1 file (nothing to verify).
    ///
    /// # Errors
    ///
    /// Whatever [`KeyFile::parse`] would refuse, and [`CryptoError::Tampered`] when the MAC
    /// does not match: the file was altered, or belongs to other keys.
    pub fn verify_mac(&self, keys: &MasterKeys) -> Result<bool, CryptoError> {
        let d = self.decode()?;
        let Some(mac) = d.mac else {
            return Ok(false);
        };
        let canonical = self.canonical_parts(&d.salt, &d.wrapped, self.bound_to().unwrap_or(""));
        let want = keys.mac(MAC_KEY_CONTEXT, &canonical);
        // Constant time, although the MAC of a public file is not much of a secret.
        if blake3::Hash::from(want) != blake3::Hash::from(mac) {
            return Err(CryptoError::Tampered {
                what: "key file MAC".into(),
            });
        }
        Ok(true)
    }

    /// Recovers the master keys. The checks of [`KeyFile::parse`] run first, so a malformed,
    /// damaged or absurdly expensive file is refused without spending the work.
    ///
    /// # Errors
    ///
    /// - what [`KeyFile::parse`] refuses;
    /// - [`CryptoError::WrongPassphrase`] if authentication fails. For a version-2 file whose
    ///   checksum holds this means the passphrase; a version-1 file has no checksum, so there
    ///   damage and a wrong passphrase cannot be told apart;
    /// - [`CryptoError::Tampered`] if the keys open but the MAC is not theirs.
    pub fn unwrap(&self, passphrase: &Passphrase) -> Result<MasterKeys, CryptoError> {
        let d = self.decode()?;
        let kek = SealKey::from_raw(self.kdf.derive(passphrase, &d.salt)?);
        let secret = kek
            .open(&key_file_ad(&self.kdf), &d.wrapped)
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::WrongPassphrase)?;
        let keys = MasterKeys::from_secret_bytes(&secret)?;
        self.verify_mac(&keys)?;
        Ok(keys)
    }

    /// Every check that needs no passphrase; the decoded fields.
    pub(crate) fn decode(&self) -> Result<Decoded, CryptoError> {
        let legacy = self.version == LEGACY_KEY_FILE_VERSION;
        if self.version != KEY_FILE_VERSION && !legacy {
            return Err(Malformed::KeyFileVersion {
                found: self.version,
                supported: KEY_FILE_VERSION,
            }
            .into());
        }
        self.kdf.validate()?;
        let salt: [u8; SALT_LEN] = fixed_hex("key file salt", &self.salt)?;
        let wrapped: [u8; WRAPPED_LEN] = fixed_hex("key file wrapped keys", &self.wrapped)?;
        check_label("key file creation time", &self.created)?;
        if legacy {
            return Ok(Decoded {
                salt,
                wrapped: wrapped.to_vec(),
                mac: None,
            });
        }
        let (Some(bound_to), Some(mac), Some(sum)) = (&self.bound_to, &self.mac, &self.checksum)
        else {
            return Err(Malformed::KeyFileMissing.into());
        };
        check_label("key file binding", bound_to)?;
        let mac: [u8; 32] = fixed_hex("key file MAC", mac)?;
        let sum: [u8; 32] = fixed_hex("key file checksum", sum)?;
        let canonical = self.canonical_parts(&salt, &wrapped, bound_to);
        if checksum(&canonical, &mac) != sum {
            return Err(Malformed::KeyFileChecksum.into());
        }
        Ok(Decoded {
            salt,
            wrapped: wrapped.to_vec(),
            mac: Some(mac),
        })
    }

    /// The bytes the checksum and MAC cover: a domain prefix, then version, KDF parameters,
    /// and each variable field with its length, so no two files share an encoding.
    pub(crate) fn canonical_parts(&self, salt: &[u8], wrapped: &[u8], bound_to: &str) -> Vec<u8> {
        let mut out = CANONICAL_PREFIX.to_vec();
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.kdf.to_bytes());
        for field in [salt, wrapped, self.created.as_bytes(), bound_to.as_bytes()] {
            out.extend_from_slice(&(field.len() as u32).to_le_bytes());
            out.extend_from_slice(field);
        }
        out
    }
}

/// The plain checksum: BLAKE3 of the canonical bytes followed by the MAC.
pub(crate) fn checksum(canonical: &[u8], mac: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(canonical);
    h.update(mac);
    *h.finalize().as_bytes()
}

pub(crate) fn check_label(what: &'static str, s: &str) -> Result<(), CryptoError> {
    if s.len() > MAX_LABEL_LEN {
        return Err(Malformed::Length {
            what,
            got: s.len(),
            expected: MAX_LABEL_LEN,
        }
        .into());
    }
    Ok(())
}

fn key_file_ad(kdf: &KdfParams) -> [u8; KEY_FILE_AD_PREFIX.len() + 12] {
    let mut ad = [0u8; KEY_FILE_AD_PREFIX.len() + 12];
    let (prefix, params) = ad.split_at_mut(KEY_FILE_AD_PREFIX.len());
    prefix.copy_from_slice(KEY_FILE_AD_PREFIX);
    params.copy_from_slice(&kdf.to_bytes());
    ad
}

/// A hex field of exactly `N` bytes.
fn fixed_hex<const N: usize>(field: &'static str, value: &str) -> Result<[u8; N], CryptoError> {
    let bytes = hex::decode(value).map_err(|source| Malformed::Hex {
        what: field.to_string(),
        source,
    })?;
    <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| {
        Malformed::Length {
            what: field,
            got: bytes.len(),
            expected: N,
        }
        .into()
    })
}
