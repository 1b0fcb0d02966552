//! Unlocking a machine with a passphrase: trying each of its key files, and each one's copy.
//!
//! Key files come from the vault, so each is bounded and parsed (checksum included, see
//! `rbackup_crypto::KeyFile::parse`) before its Argon2id runs. One that is damaged (too large,
//! not JSON, a checksum that does not hold, bound to another machine, parameters above the
//! crypto crate's ceilings) is skipped with a warning and its copy is tried instead. So a
//! flipped byte in one object cannot lock a machine out, and when nothing opens, the error
//! says whether the passphrase or the files were the problem: a version-2 file can fail as a
//! wrong passphrase only when its checksum holds, i.e. when it is intact.

use rbackup_crypto::{CryptoError, KeyFile, MasterKeys, Passphrase};
use rbackup_store::Store;

use crate::error::{EngineError, Result};
use crate::keyfiles::{self, binding};

/// A key file that unlocking passed over because it could not be tried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedKeyFile {
    /// Its vault path.
    pub path: String,
    /// Why it was skipped (the engine or crypto error, rendered, without the path).
    pub reason: String,
}

/// The master keys, and the key files skipped on the way.
pub(crate) async fn with_passphrase(
    store: &dyn Store,
    vault_id: &str,
    machine: &str,
    passphrase: &Passphrase,
) -> Result<(MasterKeys, Vec<SkippedKeyFile>)> {
    let (entries, _) = keyfiles::list(store, machine).await?;
    let bound = binding(vault_id, machine);
    let mut skipped = Vec::new();
    let mut wrong_passphrase = false;
    for entry in &entries {
        // The copy holds the same bytes: it is worth trying only when the primary is damaged.
        for meta in entry.objects() {
            let kf = match keyfiles::read(store, meta, &bound).await {
                Ok((kf, _)) => kf,
                Err(e) => {
                    skip(&mut skipped, meta.path.clone(), &e);
                    continue;
                }
            };
            match kf.unwrap(passphrase) {
                Ok(keys) => return Ok((keys, skipped)),
                Err(CryptoError::WrongPassphrase) => {
                    wrong_passphrase = true;
                    break;
                }
                // Parameters over the ceiling, a MAC that is not the keys': damage.
                Err(e) => skip(&mut skipped, meta.path.clone(), &EngineError::Crypto(e)),
            }
        }
    }
    let machine = machine.to_string();
    Err(if wrong_passphrase {
        EngineError::WrongPassphrase { machine }
    } else if skipped.is_empty() {
        EngineError::NoKeyFile { machine }
    } else {
        EngineError::NoUsableKeyFile {
            machine,
            damaged: skipped.len(),
        }
    })
}

/// The master keys from a key file kept outside the vault (a recovery key file): it must be
/// bound to this vault and machine, then it is opened with `passphrase`.
pub(crate) fn with_key_file(
    file: &KeyFile,
    vault_id: &str,
    machine: &str,
    passphrase: &Passphrase,
) -> Result<MasterKeys> {
    let what = "the recovery key file";
    keyfiles::check_binding(what, file, &binding(vault_id, machine))?;
    file.unwrap(passphrase).map_err(|e| match e {
        CryptoError::WrongPassphrase => EngineError::WrongPassphrase {
            machine: machine.into(),
        },
        e => EngineError::corrupt(what, e),
    })
}

fn skip(skipped: &mut Vec<SkippedKeyFile>, path: String, e: &EngineError) {
    tracing::warn!("skipping key file {path}: {e}");
    skipped.push(SkippedKeyFile {
        path,
        reason: keyfiles::detail(e),
    });
}
