//! The security PIN: a short-lived number the vault owner issues (`Vault::issue_pin`) and
//! whoever runs a critical operation must give — shortening the soft-delete window, purging
//! soft-deleted recovery points before their window has passed.
//!
//! Like the vault credentials (`credentials.rs`), the PIN itself is never stored: `vault.json`
//! keeps one record with a hash, the issue time and the expiry, so issuing a new PIN replaces
//! the old one, and the vault's own record decides expiry. The hash differs from the
//! credentials' plain BLAKE3 on purpose: a credentials secret is 256 random bits, a PIN only
//! 8 digits, and 10⁸ BLAKE3 hashes take a second. Argon2id with a random salt at OWASP's
//! minimum (19 MiB, 2 passes) makes trying them all take days of CPU, far beyond the PIN's
//! minutes of validity, for anyone who can read `vault.json` but not rewrite it.
//!
//! A PIN is single-use: the operation it authorises removes the record before it starts (an
//! overwrite of `vault.json`, which has no compare-and-swap, so two operations started within
//! the same instant with the same PIN may both pass; the record is gone after either).

use argon2::{Algorithm, Argon2, Params, Version};
use rbackup_store::{PutMode, Store};
use serde::{Deserialize, Serialize};

use crate::codec::json;
use crate::error::{EngineError, PinProblem, Result};
use crate::id::random_bytes;
use crate::layout::{self, VAULT_JSON, VaultMeta};

/// Digits in a PIN.
pub const PIN_DIGITS: usize = 8;

/// The default validity of a PIN: five minutes, as Azure Backup's.
pub const DEFAULT_PIN_VALIDITY: std::time::Duration = std::time::Duration::from_secs(300);

/// What `vault.json` records about the PIN in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinRecord {
    /// Random salt of the hash, hex.
    pub salt: String,
    /// Argon2id (19 MiB, 2 passes, 1 lane) of the PIN under the salt, hex.
    pub hash: String,
    /// RFC 3339.
    pub issued_at: String,
    /// RFC 3339.
    pub expires_at: String,
}

fn hash(pin: &str, salt: &[u8; 16]) -> String {
    // Fixed, valid parameters, a 16-byte salt and 32 bytes out: Argon2 refuses none of them.
    #[allow(clippy::expect_used)]
    let params = Params::new(19 * 1024, 2, 1, Some(32)).expect("valid Argon2 parameters");
    let mut out = [0u8; 32];
    #[allow(clippy::expect_used)]
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(pin.as_bytes(), salt, &mut out)
        .expect("Argon2id over a 16-byte salt");
    hex::encode(out)
}

/// A new PIN issued at `now`, valid for `valid_for`, and the record the vault keeps of it.
pub(crate) fn issue(
    valid_for: std::time::Duration,
    now: jiff::Timestamp,
) -> Result<(String, PinRecord)> {
    let invalid = |source| EngineError::InvalidValidity { valid_for, source };
    let span = jiff::SignedDuration::try_from(valid_for).map_err(invalid)?;
    let expires = now.checked_add(span).map_err(invalid)?;
    // 64 random bits reduced to 8 digits: the bias (2⁶⁴ mod 10⁸ of 2⁶⁴) is below 10⁻¹¹.
    let n = u64::from_le_bytes(random_bytes::<8>()) % 10u64.pow(PIN_DIGITS as u32);
    let pin = format!("{n:0width$}", width = PIN_DIGITS);
    let salt = random_bytes::<16>();
    let record = PinRecord {
        salt: hex::encode(salt),
        hash: hash(&pin, &salt),
        issued_at: now.to_string(),
        expires_at: expires.to_string(),
    };
    Ok((pin, record))
}

/// Checks `pin` against the vault's record at time `now`.
pub(crate) fn verify(record: Option<&PinRecord>, pin: &str, now: jiff::Timestamp) -> Result<()> {
    let refused = |problem| Err(EngineError::PinRefused { problem });
    let Some(record) = record else {
        return refused(PinProblem::NoneIssued);
    };
    let expires: jiff::Timestamp = record
        .expires_at
        .parse()
        .map_err(|e| EngineError::corrupt("vault.json PIN record", e))?;
    // A record whose salt does not decode matches no PIN.
    let mut salt = [0u8; 16];
    let salt_ok = hex::decode_to_slice(&record.salt, &mut salt).is_ok();
    let pin = pin.trim();
    if !salt_ok || pin.len() != PIN_DIGITS || !pin.bytes().all(|b| b.is_ascii_digit()) {
        return refused(PinProblem::Wrong);
    }
    if hash(pin, &salt) != record.hash {
        return refused(PinProblem::Wrong);
    }
    if now >= expires {
        return refused(PinProblem::Expired {
            expired_at: expires,
        });
    }
    Ok(())
}

/// Reads `vault.json` afresh (another process may have issued a PIN since it was opened).
pub(crate) async fn read_meta(store: &dyn Store) -> Result<VaultMeta> {
    let max = layout::limits(VAULT_JSON).stored;
    let bytes = layout::get_bounded(store, VAULT_JSON, max).await?;
    crate::vault::parse_meta(&bytes, VAULT_JSON)
}

/// Verifies `pin` (none given: refused as required) against the vault's newest record and
/// removes the record, so the PIN cannot be used again. Returns `vault.json` as written.
pub(crate) async fn consume(
    store: &dyn Store,
    pin: Option<&str>,
    now: jiff::Timestamp,
) -> Result<VaultMeta> {
    let pin = pin.ok_or(EngineError::PinRefused {
        problem: PinProblem::Required,
    })?;
    let mut meta = read_meta(store).await?;
    verify(meta.pin.as_ref(), pin, now)?;
    meta.pin = None;
    store
        .put(VAULT_JSON, json(&meta), PutMode::Overwrite)
        .await?;
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn now() -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_900_000_000).unwrap()
    }

    #[test]
    fn right_wrong_and_expired() {
        let (pin, record) = issue(Duration::from_secs(300), now()).unwrap();
        assert_eq!(pin.len(), PIN_DIGITS);
        assert!(pin.bytes().all(|b| b.is_ascii_digit()), "{pin}");
        // Stored hashed: neither the PIN nor anything that contains it is in the record.
        let stored = serde_json::to_string(&record).unwrap();
        assert!(!stored.contains(&pin), "{stored}");
        verify(Some(&record), &pin, now()).unwrap();
        verify(Some(&record), &format!(" {pin}\n"), now()).unwrap();
        let wrong = format!("{:08}", (pin.parse::<u64>().unwrap() + 1) % 100_000_000);
        for bad in [wrong.as_str(), "", "1234567", "abcdefgh", "123456789"] {
            let e = verify(Some(&record), bad, now()).unwrap_err();
            assert!(
                matches!(
                    e,
                    EngineError::PinRefused {
                        problem: PinProblem::Wrong
                    }
                ),
                "{bad:?}: {e}"
            );
        }
        let later = now()
            .checked_add(jiff::SignedDuration::from_secs(300))
            .unwrap();
        let e = verify(Some(&record), &pin, later).unwrap_err();
        assert!(
            matches!(
                e,
                EngineError::PinRefused {
                    problem: PinProblem::Expired { .. }
                }
            ),
            "{e}"
        );
        let e = verify(None, &pin, now()).unwrap_err();
        assert!(
            matches!(
                e,
                EngineError::PinRefused {
                    problem: PinProblem::NoneIssued
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn each_pin_has_its_own_salt() {
        let (_, a) = issue(Duration::from_secs(60), now()).unwrap();
        let (_, b) = issue(Duration::from_secs(60), now()).unwrap();
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.hash, b.hash);
    }
}
