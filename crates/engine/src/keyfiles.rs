//! The key files of a machine in the vault: each written twice (`keys/<id>` and
//! `keys/<id>.copy`, the same bytes), read with every check that needs no passphrase, and
//! checked by `check` with the master keys (their MAC) — so one damaged object never locks a
//! machine out, and damage is never mistaken for a wrong passphrase.
//!
//! Every key file is bound to `<vault id>/<machine id>` ([`binding`]); a file bound elsewhere
//! was copied in from another machine or vault and is treated as damaged. Files of version 1
//! (written before copies and integrity records) have neither binding nor copy; they are read
//! as they are and `check` reports them as lacking an integrity record.

use rbackup_crypto::{CryptoError, KdfParams, KeyFile, Malformed, Passphrase};
use rbackup_store::{Bytes, ObjectMeta, PutMode, Store};
use serde::{Deserialize, Serialize};

use crate::error::{CorruptReason, EngineError, Result};
use crate::id::Id;
use crate::layout::{self, machine_path};
use crate::repo::Repository;

/// Suffix of the second copy of a key file.
pub(crate) const COPY_SUFFIX: &str = ".copy";

/// What a key file must be bound to.
pub(crate) fn binding(vault_id: &str, machine: &str) -> String {
    format!("{vault_id}/{machine}")
}

/// One key file and its copy, as listed.
#[derive(Debug)]
pub(crate) struct KeyEntry {
    pub id: Id,
    pub primary: Option<ObjectMeta>,
    pub copy: Option<ObjectMeta>,
}

impl KeyEntry {
    /// The stored objects, primary first.
    pub fn objects(&self) -> impl Iterator<Item = &ObjectMeta> {
        self.primary.iter().chain(self.copy.iter())
    }
}

/// The key files of `machine`, grouped by id in id order, and the names under `keys/` that
/// are no key file of ours (reported, never read).
pub(crate) async fn list(
    store: &dyn Store,
    machine: &str,
) -> Result<(Vec<KeyEntry>, Vec<ObjectMeta>)> {
    let mut entries: Vec<KeyEntry> = Vec::new();
    let mut strays = Vec::new();
    for m in store.list(&machine_path(machine, layout::KEYS)).await? {
        let name = m.path.rsplit('/').next().unwrap_or_default();
        let (hex, copy) = match name.strip_suffix(COPY_SUFFIX) {
            Some(h) => (h, true),
            None => (name, false),
        };
        // Only our own spelling (lowercase) names a key file, so one id has one pair.
        let Some(id) = Id::from_hex(hex).ok().filter(|id| id.to_hex() == hex) else {
            strays.push(m);
            continue;
        };
        let at = match entries.iter().position(|e| e.id == id) {
            Some(at) => at,
            None => {
                entries.push(KeyEntry {
                    id,
                    primary: None,
                    copy: None,
                });
                entries.len() - 1
            }
        };
        let slot = if copy {
            &mut entries[at].copy
        } else {
            &mut entries[at].primary
        };
        *slot = Some(m);
    }
    // A listing has no order; trying the files in id order makes unlocking repeatable.
    entries.sort_by_key(|e| e.id);
    Ok((entries, strays))
}

/// One key file, refused before download if its listed size is over the cap, parsed with
/// every check that needs no passphrase, and bound to `bound`. Returns the stored bytes too.
pub(crate) async fn read(
    store: &dyn Store,
    meta: &ObjectMeta,
    bound: &str,
) -> Result<(KeyFile, Bytes)> {
    let path = &meta.path;
    let max = layout::limits(layout::KEYS).stored;
    layout::check_size(path, meta.size, max)?;
    let bytes = store.get(path).await?;
    layout::check_size(path, bytes.len() as u64, max)?;
    let file = parse(path, &bytes, bound)?;
    Ok((file, bytes))
}

/// `bytes` as a key file bound to `bound` (see [`KeyFile::parse`]); `path` names it in errors.
pub(crate) fn parse(path: &str, bytes: &[u8], bound: &str) -> Result<KeyFile> {
    let file = KeyFile::parse(bytes).map_err(|e| EngineError::corrupt(path, e))?;
    check_binding(path, &file, bound)?;
    Ok(file)
}

/// Refuses a file bound to another vault or machine (version 1 files carry no binding).
pub(crate) fn check_binding(path: &str, file: &KeyFile, bound: &str) -> Result<()> {
    match file.bound_to() {
        Some(b) if b != bound => Err(EngineError::corrupt(
            path,
            CorruptReason::KeyFileBinding {
                found: b.chars().take(80).collect(),
                expected: bound.into(),
            },
        )),
        _ => Ok(()),
    }
}

/// Writes `file` as a new key file and its copy (create-only, so nothing is overwritten).
pub(crate) async fn write_pair(store: &dyn Store, machine: &str, file: &KeyFile) -> Result<Id> {
    let id = Id::random();
    let bytes = Bytes::from(file.to_json());
    let primary = machine_path(machine, &layout::key_rel(&id));
    store.put(&primary, bytes.clone(), PutMode::Create).await?;
    let copy = format!("{primary}{COPY_SUFFIX}");
    store.put(&copy, bytes, PutMode::Create).await?;
    Ok(id)
}

/// What is wrong with a key-file object, without its path (which the caller names).
pub(crate) fn detail(e: &EngineError) -> String {
    match e {
        // Whatever is malformed (a bad hex digit, a missing field), the file is damaged: say
        // so in those words, which is what tells the user the passphrase is not the problem.
        EngineError::Corrupt { reason, .. } => match reason.to_string() {
            r if r.contains("damaged") => r,
            r => format!("the file is damaged: {r}"),
        },
        e => e.to_string(),
    }
}

/// What is wrong with one key-file object ([`KeyFileIssue`]).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyFileState {
    /// It cannot be read as a key file of this machine, or its MAC is not the machine's.
    Damaged,
    /// The copy (or the primary) of a key file is missing.
    Missing,
    /// A version-1 file: readable, but without checksum, MAC or copy.
    NoIntegrityRecord,
}

/// A key-file problem found by `check` (and fixed by [`Repository::repair_key_files`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFileIssue {
    /// The vault path of the object.
    pub path: String,
    /// What is wrong.
    pub state: KeyFileState,
    /// The detail (the error, rendered).
    pub detail: String,
}

/// What [`Repository::repair_key_files`] did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct KeyRepairReport {
    /// The problems found before repairing (empty: nothing was done).
    pub issues: Vec<KeyFileIssue>,
    /// The new key file written (with its copy), if any.
    pub written: Option<String>,
    /// Key-file objects removed after the new pair was written.
    pub removed: Vec<String>,
    /// Whether the passphrase was checked against an intact key file (false when none was
    /// left to check it against).
    pub passphrase_verified: bool,
}

impl Repository {
    fn bound(&self) -> String {
        binding(&self.vault_id, &self.machine)
    }

    /// Every key-file problem, found with the master keys and without the passphrase: each
    /// object must parse (its checksum holds), be bound to this machine, carry this machine's
    /// MAC, be stored exactly as written, and have its copy.
    pub async fn key_file_issues(&self) -> Result<Vec<KeyFileIssue>> {
        let (entries, strays) = list(&*self.store, &self.machine).await?;
        let mut issues = Vec::new();
        let mut push = |path: &str, state, detail: String| {
            issues.push(KeyFileIssue {
                path: path.into(),
                state,
                detail,
            })
        };
        for s in strays {
            push(&s.path, KeyFileState::Damaged, "not a key file name".into());
        }
        if entries.is_empty() {
            let dir = self.path(layout::KEYS);
            push(&dir, KeyFileState::Missing, "no key file at all".into());
        }
        for e in &entries {
            let mut legacy = false;
            for meta in e.objects() {
                match self.check_one(meta).await {
                    Ok(true) => {}
                    Ok(false) => legacy = true,
                    Err(err) => push(&meta.path, KeyFileState::Damaged, detail(&err)),
                }
            }
            let primary = self.path(&layout::key_rel(&e.id));
            if legacy {
                let detail = "version 1 key file: no checksum, MAC or copy".into();
                push(&primary, KeyFileState::NoIntegrityRecord, detail);
            } else if e.primary.is_none() {
                push(&primary, KeyFileState::Missing, "its copy is there".into());
            } else if e.copy.is_none() {
                let copy = format!("{primary}{COPY_SUFFIX}");
                push(&copy, KeyFileState::Missing, "the key file is there".into());
            }
        }
        Ok(issues)
    }

    /// One key-file object: `Ok(true)` intact, `Ok(false)` version 1 (nothing to verify).
    async fn check_one(&self, meta: &ObjectMeta) -> Result<bool> {
        let (file, bytes) = read(&*self.store, meta, &self.bound()).await?;
        let corrupt = |e: CryptoError| EngineError::corrupt(&meta.path, e);
        if !file.verify_mac(&self.keys).map_err(corrupt)? {
            return Ok(false);
        }
        // A flip that still parses (a hex digit's case) is damage too: we write one form.
        if file.to_json() != bytes {
            return Err(corrupt(Malformed::KeyFileChecksum.into()));
        }
        Ok(true)
    }

    /// Rewrites the machine's key files from the master keys this handle holds (the agent's
    /// local key file) when any is damaged, missing its copy or of version 1: a new key file
    /// and its copy under `passphrase`, then the old objects are removed. Nothing is done when
    /// all are intact.
    ///
    /// The passphrase must open an intact key file if one is left, so a repair never changes
    /// the passphrase by mistake; with none left it cannot be checked and is taken as given.
    pub async fn repair_key_files(
        &self,
        passphrase: &Passphrase,
        kdf: KdfParams,
    ) -> Result<KeyRepairReport> {
        self.refuse_if_append_only("repair key files")?;
        let issues = self.key_file_issues().await?;
        let mut report = KeyRepairReport::default();
        if issues.is_empty() {
            return Ok(report);
        }
        report.passphrase_verified = self.verify_passphrase(passphrase, &issues).await?;
        let (written, removed) = self.rewrite_key_files(passphrase, kdf).await?;
        report.written = Some(written);
        report.removed = removed;
        report.issues = issues;
        Ok(report)
    }

    /// Tries `passphrase` on one key file that `issues` does not call damaged or missing:
    /// `Ok(true)` if it opens, `Ok(false)` if no such file is left.
    async fn verify_passphrase(
        &self,
        passphrase: &Passphrase,
        issues: &[KeyFileIssue],
    ) -> Result<bool> {
        let (entries, _) = list(&*self.store, &self.machine).await?;
        // A version-1 file is no worse for this than any other (its damage would look like a
        // wrong passphrase, so the repair is refused rather than done under a new one).
        let bad = |p: &str| {
            let damaged = |i: &&KeyFileIssue| i.state != KeyFileState::NoIntegrityRecord;
            issues.iter().filter(damaged).any(|i| i.path == p)
        };
        let intact = entries
            .iter()
            .flat_map(KeyEntry::objects)
            .find(|m| !bad(&m.path));
        let Some(meta) = intact else {
            return Ok(false);
        };
        let (file, _) = read(&*self.store, meta, &self.bound()).await?;
        match file.unwrap(passphrase) {
            Ok(_) => Ok(true),
            Err(CryptoError::WrongPassphrase) => Err(EngineError::WrongPassphrase {
                machine: self.machine.clone(),
            }),
            Err(e) => Err(EngineError::corrupt(&meta.path, e)),
        }
    }

    /// Writes a new key file pair under `passphrase`, then removes every other object under
    /// `keys/`. The new pair comes first, so a crash in between leaves both working.
    /// Returns the new primary's path and the removed paths.
    pub(crate) async fn rewrite_key_files(
        &self,
        passphrase: &Passphrase,
        kdf: KdfParams,
    ) -> Result<(String, Vec<String>)> {
        self.refuse_if_append_only("rewrite key files")?;
        let old = self.store.list(&self.path(layout::KEYS)).await?;
        let file = KeyFile::wrap(&self.keys, passphrase, kdf, &self.bound())?;
        let id = write_pair(&*self.store, &self.machine, &file).await?;
        let mut removed = Vec::new();
        for o in old {
            self.store.delete(&o.path).await?;
            removed.push(o.path);
        }
        Ok((self.path(&layout::key_rel(&id)), removed))
    }

    /// A recovery key file: the master keys wrapped under `passphrase` (a fresh Argon2id
    /// salt), bound to this vault and machine, to keep away from the vault. It opens the
    /// machine through [`Unlock::KeyFile`](crate::Unlock::KeyFile).
    pub fn export_key_file(&self, passphrase: &Passphrase, kdf: KdfParams) -> Result<KeyFile> {
        Ok(KeyFile::wrap(&self.keys, passphrase, kdf, &self.bound())?)
    }
}
