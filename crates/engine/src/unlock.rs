//! Unlocking a machine with a passphrase: trying each of its key files.
//!
//! Key files come from the vault, so each is bounded and parsed before its Argon2id runs, and
//! one that is damaged (too large, not JSON, a name that is not an id, parameters above the
//! crypto crate's ceilings) is skipped with a warning while the others are tried. That way an
//! edited or torn key file cannot lock a machine whose other key files are fine, and when none
//! opens, the error says whether the passphrase or the files were the problem.

use rbackup_crypto::{CryptoError, KeyFile, MasterKeys, Passphrase};
use rbackup_store::Store;

use crate::error::{CorruptReason, EngineError, Result};
use crate::id::Id;
use crate::layout::{self, machine_path};

/// A key file that unlocking passed over because it could not be tried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedKeyFile {
    /// Its vault path.
    pub path: String,
    /// Why it was skipped (the engine or crypto error, rendered).
    pub reason: String,
}

/// The master keys, and the key files skipped on the way.
pub(crate) async fn with_passphrase(
    store: &dyn Store,
    machine: &str,
    passphrase: &Passphrase,
) -> Result<(MasterKeys, Vec<SkippedKeyFile>)> {
    let mut files = store.list(&machine_path(machine, layout::KEYS)).await?;
    // A listing has no order; trying the files in name order makes unlocking repeatable.
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let mut skipped = Vec::new();
    let mut wrong_passphrase = false;
    for f in files {
        let kf = match read_key_file(store, &f.path, f.size).await {
            Ok(kf) => kf,
            Err(e) => {
                skip(&mut skipped, f.path, &e);
                continue;
            }
        };
        match kf.unwrap(passphrase) {
            Ok(keys) => return Ok((keys, skipped)),
            Err(CryptoError::WrongPassphrase) => wrong_passphrase = true,
            // Parameters over the ceiling, a bad version or malformed fields: damage.
            Err(e) => skip(&mut skipped, f.path, &EngineError::Crypto(e)),
        }
    }
    if wrong_passphrase || skipped.is_empty() {
        return Err(EngineError::WrongPassphrase {
            machine: machine.into(),
        });
    }
    Err(EngineError::NoUsableKeyFile {
        machine: machine.into(),
        damaged: skipped.len(),
    })
}

fn skip(skipped: &mut Vec<SkippedKeyFile>, path: String, e: &EngineError) {
    tracing::warn!("skipping key file {path}: {e}");
    skipped.push(SkippedKeyFile {
        path,
        reason: e.to_string(),
    });
}

/// One key file, refused before download if its listed size is over the cap.
async fn read_key_file(store: &dyn Store, path: &str, listed: u64) -> Result<KeyFile> {
    let name = path.rsplit('/').next().unwrap_or_default();
    if Id::from_hex(name).is_err() {
        return Err(EngineError::corrupt(path, CorruptReason::NotAnId));
    }
    let max = layout::limits(layout::KEYS).stored;
    layout::check_size(path, listed, max)?;
    let bytes = store.get(path).await?;
    layout::check_size(path, bytes.len() as u64, max)?;
    serde_json::from_slice(&bytes).map_err(|e| EngineError::corrupt(path, e))
}
