//! Passphrase policy and generator.

use std::fmt;

use zeroize::Zeroizing;

use crate::{CryptoError, MIN_PASSPHRASE_CHARS, fill_random};

/// Lowercase Crockford base32: digits and letters without `i`, `l`, `o` and `u`, so nothing
/// read off paper can be mistaken for something else (0/o, 1/l/i) and no words form by chance.
pub const GENERATED_ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// Number of hyphen-separated groups in a generated passphrase.
pub const GENERATED_GROUPS: usize = 7;

/// Characters per group in a generated passphrase.
pub const GENERATED_GROUP_LEN: usize = 4;

/// Entropy of a generated passphrase: 7 × 4 = 28 symbols of 5 bits each = 140 bits, above the
/// 128 bits that makes offline guessing hopeless even before Argon2id's cost.
pub const GENERATED_ENTROPY_BITS: usize = GENERATED_GROUPS * GENERATED_GROUP_LEN * 5;

/// A passphrase that meets the policy (at least [`MIN_PASSPHRASE_CHARS`] characters).
///
/// The text is zeroized on drop and never printed by `Debug`.
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    /// Accepts `s` if it has at least [`MIN_PASSPHRASE_CHARS`] characters.
    ///
    /// Characters are Unicode scalar values, not bytes, so a passphrase in a non-Latin script is
    /// held to the same length as an ASCII one. Nothing is trimmed or normalized: the exact
    /// text given is what derives the key.
    ///
    /// # Errors
    ///
    /// [`CryptoError::PassphraseTooShort`] if the policy is not met; the rejected text is
    /// zeroized.
    pub fn new(s: impl Into<String>) -> Result<Passphrase, CryptoError> {
        // Wrap first so a rejected passphrase is wiped too.
        let s = Zeroizing::new(s.into());
        let got = s.chars().count();
        if got < MIN_PASSPHRASE_CHARS {
            return Err(CryptoError::PassphraseTooShort {
                min: MIN_PASSPHRASE_CHARS,
                got,
            });
        }
        Ok(Passphrase(s))
    }

    /// Generates a passphrase with [`GENERATED_ENTROPY_BITS`] (140) bits of entropy from the
    /// OS RNG, easy to read and type: [`GENERATED_GROUPS`] groups of [`GENERATED_GROUP_LEN`]
    /// characters of [`GENERATED_ALPHABET`] joined by hyphens, e.g.
    /// `k3v9-7qzd-m0xa-4hne-rt2w-c8sb-pj6f` (34 characters).
    ///
    /// # Panics
    ///
    /// Only if the OS RNG fails (see the crate docs).
    pub fn generate() -> Passphrase {
        let symbols = GENERATED_GROUPS * GENERATED_GROUP_LEN;
        let mut random = Zeroizing::new([0u8; GENERATED_GROUPS * GENERATED_GROUP_LEN]);
        fill_random(&mut random[..]);
        let mut out = Zeroizing::new(String::with_capacity(symbols + GENERATED_GROUPS));
        for (i, byte) in random.iter().enumerate() {
            if i > 0 && i % GENERATED_GROUP_LEN == 0 {
                out.push('-');
            }
            // 256 is a multiple of 32, so the low five bits of a uniform byte are uniform.
            out.push(char::from(GENERATED_ALPHABET[usize::from(byte & 31)]));
        }
        Passphrase(out)
    }

    /// The passphrase text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase([redacted])")
    }
}

// `Zeroizing` wipes the text when the passphrase is dropped.
impl zeroize::ZeroizeOnDrop for Passphrase {}
