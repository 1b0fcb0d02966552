//! Vault states and vault names, both kept in `vault.json`.
//!
//! A vault is *active* or *read-only* (the MARS "expired" state): a read-only vault refuses new
//! recovery points — backups, and copies into it — while restores, `check`, listing and
//! browsing go on. The owner sets it with [`Vault::set_state`](crate::Vault::set_state); the
//! record says who set it and when, so the refusal can name them.
//!
//! The state lives beside the credentials record in the plain `vault.json`, which only whoever
//! may overwrite the vault's root can change: a machine with append-only store credentials
//! cannot lift it. It is an administrative switch, not a security boundary against the store
//! itself — whoever controls the store can write anything there, as they could delete.
//!
//! A vault may also carry a name, given when it is created and held to the Recovery Services
//! vault rules: 2 to 50 characters, starting with a letter, letters, digits and hyphens only.

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

/// Whether a vault takes new recovery points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VaultState {
    /// Backups and restores.
    Active,
    /// Restores, checks and listings only; backups and copies into the vault are refused.
    ReadOnly,
}

impl VaultState {
    /// `active` or `read-only`, as the record and the command line spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            VaultState::Active => "active",
            VaultState::ReadOnly => "read-only",
        }
    }
}

impl std::fmt::Display for VaultState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for VaultState {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<VaultState, String> {
        match s {
            "active" => Ok(VaultState::Active),
            "read-only" => Ok(VaultState::ReadOnly),
            other => Err(format!(
                "unknown vault state {other:?}: use read-only or active"
            )),
        }
    }
}

/// The last change of a vault's state, as `vault.json` records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRecord {
    /// The state in force.
    pub state: VaultState,
    /// Who set it (as the owner's agent named them: `user@host`), at most
    /// [`MAX_SET_BY`] bytes.
    pub set_by: String,
    /// When (RFC 3339).
    pub set_at: String,
}

/// The longest `set_by` kept: a record read from the vault is cut to this before it is shown.
pub const MAX_SET_BY: usize = 200;

impl StateRecord {
    /// A record read from the vault, made safe to show: `set_by` cut to [`MAX_SET_BY`] bytes
    /// and stripped of control characters (it goes into error messages and terminals).
    pub(crate) fn sanitized(mut self) -> StateRecord {
        let clean: String = self.set_by.chars().filter(|c| !c.is_control()).collect();
        let mut end = clean.len().min(MAX_SET_BY);
        while !clean.is_char_boundary(end) {
            end -= 1;
        }
        self.set_by = clean[..end].to_string();
        self.set_at = self.set_at.chars().take(64).collect();
        self
    }
}

/// Refuses `operation` (words such as `take backups into`) on the vault at `url` with
/// [`EngineError::VaultReadOnly`] when `record` — its state as last read — is read-only.
/// For embedders that remember a vault's state while it cannot be reached; a repository
/// checks the state it opened with itself.
pub fn refuse_if_read_only(
    url: &str,
    record: Option<&StateRecord>,
    operation: &'static str,
) -> Result<()> {
    match record {
        Some(r) if r.state == VaultState::ReadOnly => Err(EngineError::VaultReadOnly {
            url: url.into(),
            operation,
            set_by: r.set_by.clone(),
            set_at: r.set_at.clone(),
        }),
        _ => Ok(()),
    }
}

/// The shortest and longest vault name.
pub const VAULT_NAME_LEN: std::ops::RangeInclusive<usize> = 2..=50;

/// Refuses a vault name outside the rules: 2 to 50 characters, a letter first, then letters,
/// digits and hyphens (ASCII: the name ends up in URLs and file names).
pub fn check_vault_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let first_is_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '-');
    if first_is_letter && rest_ok && VAULT_NAME_LEN.contains(&name.len()) {
        return Ok(());
    }
    Err(EngineError::InvalidVaultName {
        name: name.chars().take(60).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_names_follow_the_recovery_services_rules() {
        for ok in [
            "ab",
            "Vault-1",
            "a-",
            "x1-2-3",
            &format!("a{}", "b".repeat(49)),
        ] {
            assert!(check_vault_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a",
            "1vault",
            "-vault",
            "my_vault",
            "my vault",
            "vaült",
            "a.b",
            &format!("a{}", "b".repeat(50)),
        ] {
            let e = check_vault_name(bad).unwrap_err();
            assert!(matches!(e, EngineError::InvalidVaultName { .. }), "{bad}");
            let text = e.to_string();
            assert!(
                text.contains("2 to 50") && text.contains("start with a letter"),
                "{text}"
            );
        }
    }

    #[test]
    fn states_parse_and_print_as_the_command_line_spells_them() {
        for s in [VaultState::Active, VaultState::ReadOnly] {
            assert_eq!(s.as_str().parse::<VaultState>().unwrap(), s);
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
        }
        assert!("expired".parse::<VaultState>().is_err());
    }

    #[test]
    fn a_record_from_the_vault_is_cut_and_cleaned_before_it_is_shown() {
        let r = StateRecord {
            state: VaultState::ReadOnly,
            set_by: format!("evil\u{1b}[2J{}", "é".repeat(300)),
            set_at: "x".repeat(500),
        }
        .sanitized();
        assert!(r.set_by.len() <= MAX_SET_BY && !r.set_by.contains('\u{1b}'));
        assert!(r.set_at.len() <= 64);
    }
}
