//! Vault credentials: the file a new machine needs to register with a vault (MARS's "vault
//! credentials file").
//!
//! The vault records only the newest generation and a BLAKE3 hash of its secret, so issuing new
//! credentials invalidates every older file without keeping a list, and nothing that could
//! decrypt data is ever in the file: it authorises registration, not access to backups.

use serde::{Deserialize, Serialize};

use crate::error::{CredentialsProblem, EngineError, Result};

const FORMAT: &str = "rbackup-vault-credentials";

/// What `vault.json` records about the newest credentials.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialsRecord {
    /// Counts up with each issue.
    pub generation: u64,
    /// BLAKE3 of the secret, hex.
    pub secret_hash: String,
    /// RFC 3339.
    pub issued_at: String,
    /// RFC 3339.
    pub expires_at: String,
}

/// The content of a vault credentials file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultCredentials {
    /// Always `rbackup-vault-credentials`.
    pub format: String,
    /// Vault URL.
    pub vault: String,
    /// Vault id.
    pub vault_id: String,
    /// Generation.
    pub generation: u64,
    /// Random secret, hex.
    pub secret: String,
    /// RFC 3339.
    pub issued_at: String,
    /// RFC 3339.
    pub expires_at: String,
}

impl VaultCredentials {
    /// New credentials issued at `now`, valid for `valid_for`, and the record the vault keeps
    /// of them.
    pub(crate) fn issue(
        vault: &str,
        vault_id: &str,
        generation: u64,
        valid_for: std::time::Duration,
        now: jiff::Timestamp,
    ) -> Result<(VaultCredentials, CredentialsRecord)> {
        let secret = hex::encode(crate::id::random_bytes::<32>());
        let invalid = |source| EngineError::InvalidValidity { valid_for, source };
        let span = jiff::SignedDuration::try_from(valid_for).map_err(invalid)?;
        let expires = now.checked_add(span).map_err(invalid)?;
        let creds = VaultCredentials {
            format: FORMAT.into(),
            vault: vault.into(),
            vault_id: vault_id.into(),
            generation,
            secret,
            issued_at: now.to_string(),
            expires_at: expires.to_string(),
        };
        let record = CredentialsRecord {
            generation,
            secret_hash: blake3::hash(creds.secret.as_bytes()).to_hex().to_string(),
            issued_at: creds.issued_at.clone(),
            expires_at: creds.expires_at.clone(),
        };
        Ok((creds, record))
    }
}

impl VaultCredentials {
    /// Parses a credentials file; anything malformed is "invalid", as MARS says it.
    pub fn from_json(text: &str) -> Result<VaultCredentials> {
        let c: VaultCredentials =
            serde_json::from_str(text).map_err(|e| EngineError::InvalidCredentials {
                problem: CredentialsProblem::NotCredentials(e),
            })?;
        if c.format != FORMAT {
            return Err(EngineError::InvalidCredentials {
                problem: CredentialsProblem::UnknownFormat(c.format),
            });
        }
        Ok(c)
    }

    /// The file's text.
    pub fn to_json(&self) -> String {
        // Plain strings and integers always serialize.
        #[allow(clippy::expect_used)]
        let s = serde_json::to_string_pretty(self).expect("credentials serialize");
        s
    }

    /// Checks these credentials against the vault's record at time `now`.
    pub(crate) fn check(
        &self,
        vault_id: &str,
        record: &CredentialsRecord,
        now: jiff::Timestamp,
    ) -> Result<()> {
        if self.vault_id != vault_id {
            return Err(EngineError::InvalidCredentials {
                problem: CredentialsProblem::OtherVault,
            });
        }
        let hash = blake3::hash(self.secret.as_bytes()).to_hex().to_string();
        if self.generation != record.generation || hash != record.secret_hash {
            return Err(EngineError::InvalidCredentials {
                problem: CredentialsProblem::Superseded,
            });
        }
        // The vault's own record decides expiry: editing the date in the file changes nothing.
        let expires: jiff::Timestamp = record
            .expires_at
            .parse()
            .map_err(|e| EngineError::corrupt("vault.json credentials record", e))?;
        if now >= expires {
            return Err(EngineError::CredentialsExpired {
                expired_at: expires,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A fixed moment: these tests are about the rules, not about the system clock.
    fn now() -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_900_000_000).unwrap()
    }

    #[test]
    fn newest_only_and_expiry() {
        let now = now();
        let hour = Duration::from_secs(3600);
        let (c1, r1) = VaultCredentials::issue("memory://v", "vid", 1, hour, now).unwrap();
        c1.check("vid", &r1, now).unwrap();
        let (c2, r2) = VaultCredentials::issue("memory://v", "vid", 2, hour, now).unwrap();
        c2.check("vid", &r2, now).unwrap();
        let e = c1.check("vid", &r2, now).unwrap_err();
        assert!(
            matches!(
                e,
                EngineError::InvalidCredentials {
                    problem: CredentialsProblem::Superseded
                }
            ),
            "{e:?}"
        );
        let e = e.to_string();
        assert!(e.starts_with("Invalid vault credentials provided"), "{e}");
        assert!(e.contains("newest"), "{e}");
        let later = now
            .checked_add(jiff::SignedDuration::from_secs(3601))
            .unwrap();
        let e = c2.check("vid", &r2, later).unwrap_err().to_string();
        assert!(
            e.starts_with("Vault credentials file provided has expired"),
            "{e}"
        );
        assert!(c2.check("other", &r2, now).is_err());
    }

    #[test]
    fn forged_secret_and_garbage_are_invalid() {
        let (mut c, r) =
            VaultCredentials::issue("memory://v", "vid", 1, Duration::from_secs(60), now())
                .unwrap();
        c.secret.replace_range(
            0..2,
            if c.secret.starts_with("00") {
                "11"
            } else {
                "00"
            },
        );
        assert!(matches!(
            c.check("vid", &r, now()),
            Err(EngineError::InvalidCredentials { .. })
        ));
        assert!(matches!(
            VaultCredentials::from_json("{not json"),
            Err(EngineError::InvalidCredentials { .. })
        ));
        let round = VaultCredentials::from_json(&c.to_json()).unwrap();
        assert_eq!(round, c);
    }
}
