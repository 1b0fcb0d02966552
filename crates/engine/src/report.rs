//! What a job tells its user: the JSON document of `rbackup --json backup` and the job history.

use serde::{Deserialize, Serialize};

use crate::classify::SkipRule;

/// Whether a skipped file was left out on purpose or could not be backed up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SkipKind {
    /// A file-type rule left it out (see [`Skipped::rule`]): policy, not a warning.
    Rule,
    /// It should have been backed up and was not (unreadable, vanished, changed while it was
    /// opened), or it could not be restored. Records written before the distinction load as
    /// this.
    #[default]
    Error,
}

/// A file that was not backed up (or not restored), and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// The path.
    pub path: String,
    /// Why, in words.
    pub reason: String,
    /// Left out by a rule, or a failure.
    #[serde(default)]
    pub kind: SkipKind,
    /// The rule, for a skip by rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<SkipRule>,
}

impl Skipped {
    /// A file that could not be backed up or restored.
    pub fn error(path: impl Into<String>, reason: impl Into<String>) -> Skipped {
        Skipped {
            path: path.into(),
            reason: reason.into(),
            kind: SkipKind::Error,
            rule: None,
        }
    }

    /// A file left out by `rule`.
    pub fn by_rule(path: impl Into<String>, rule: SkipRule) -> Skipped {
        Skipped {
            path: path.into(),
            reason: rule.reason().into(),
            kind: SkipKind::Rule,
            rule: Some(rule),
        }
    }

    /// The rule that left it out, also for records from before skips carried it: those load
    /// as [`SkipKind::Error`] without a rule, and their reason is the rule's text (no failure's
    /// reason is).
    pub fn skip_rule(&self) -> Option<SkipRule> {
        self.rule.or_else(|| SkipRule::from_reason(&self.reason))
    }
}

/// The result of a backup.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BackupReport {
    /// Id of the new recovery point.
    pub recovery_point: Option<String>,
    /// Its sequence (see [`crate::Freshness`]): the embedder records it with
    /// [`crate::Freshness::wrote`].
    #[serde(default)]
    pub sequence: u64,
    /// The recovery point it was made incrementally against.
    pub parent: Option<String>,
    /// Files not in the parent recovery point.
    pub files_new: u64,
    /// Files in the parent that were read again (changed, or always read in full).
    pub files_changed: u64,
    /// Files reused from the parent without reading.
    pub files_unchanged: u64,
    /// Directories.
    pub dirs: u64,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Bytes added to the vault (packs, index files, recovery point).
    pub bytes_added: u64,
    /// Files and bytes found in the sources before the run.
    pub source_files: u64,
    /// Total logical size of the sources.
    pub source_bytes: u64,
    /// New blobs stored.
    pub blobs_new: u64,
    /// Packs uploaded.
    pub packs: u64,
    /// Packs an interrupted earlier run uploaded but never indexed, taken into the index by
    /// this run instead of being uploaded again.
    #[serde(default)]
    pub packs_adopted: u64,
    /// Packs index files named that the vault no longer had: their blobs were written again.
    #[serde(default)]
    pub packs_missing: u64,
    /// Their bytes.
    #[serde(default)]
    pub bytes_adopted: u64,
    /// Highest number of bytes staged in the cache dir at once.
    pub cache_high_water: u64,
    /// Every file not backed up, with its reason: those left out by a file-type rule
    /// ([`SkipKind::Rule`]) and those that could not be read ([`SkipKind::Error`]).
    pub skipped: Vec<Skipped>,
    /// Symbolic links stored as links ([`crate::LinkMode::Store`]).
    #[serde(default)]
    pub symlinks: u64,
    /// Files stored as a further link to a file already in this recovery point
    /// ([`crate::LinkMode::Store`]); they are not counted in `files_*`.
    #[serde(default)]
    pub hard_links: u64,
    /// Things that did not stop the run but need attention.
    pub warnings: Vec<String>,
    /// Time the uploads waited on the bandwidth throttle.
    pub throttle_wait_s: f64,
    /// Wall time.
    pub duration_s: f64,
}

impl BackupReport {
    /// True when a file that should have been backed up was not, or something was warned
    /// about (exit status 3). Files left out by a file-type rule are not warnings.
    pub fn has_warnings(&self) -> bool {
        !self.warnings.is_empty() || self.failures().next().is_some()
    }

    /// The files that should have been backed up and were not.
    pub fn failures(&self) -> impl Iterator<Item = &Skipped> {
        self.skipped.iter().filter(|s| s.skip_rule().is_none())
    }

    /// How many files each rule left out, in [`SkipRule::ALL`] order, rules that left out
    /// nothing omitted.
    pub fn rule_counts(&self) -> Vec<(SkipRule, u64)> {
        rule_counts(&self.skipped)
    }
}

/// How many of `skipped` each rule left out (see [`BackupReport::rule_counts`]).
pub fn rule_counts(skipped: &[Skipped]) -> Vec<(SkipRule, u64)> {
    let mut counts = std::collections::BTreeMap::new();
    for rule in skipped.iter().filter_map(Skipped::skip_rule) {
        *counts.entry(rule).or_insert(0u64) += 1;
    }
    SkipRule::ALL
        .into_iter()
        .filter_map(|r| counts.get(&r).map(|&n| (r, n)))
        .collect()
}

/// The result of a restore (or, with `dry_run`, what a restore would do).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RestoreReport {
    /// The recovery point restored.
    pub recovery_point: String,
    /// Nothing was written: the counts say what the restore would have done.
    #[serde(default)]
    pub dry_run: bool,
    /// Files restored (written into the target).
    pub files: u64,
    /// Directories restored.
    pub dirs: u64,
    /// Bytes written (the files' sizes).
    pub bytes: u64,
    /// Symbolic links created.
    #[serde(default)]
    pub symlinks: u64,
    /// Of `files`, those restored as a further hard link to one restored before them.
    #[serde(default)]
    pub hard_links: u64,
    /// Files the restore set out to write, after the overwrite decision...
    #[serde(default)]
    pub files_planned: u64,
    /// ...and their bytes.
    #[serde(default)]
    pub bytes_planned: u64,
    /// Of `files`, those that replaced a file already in the target.
    #[serde(default)]
    pub files_overwritten: u64,
    /// Files already in the target that were left as they were (`Overwrite::Never`, or
    /// `Overwrite::IfChanged` and unchanged)...
    #[serde(default)]
    pub files_kept: u64,
    /// ...and their bytes.
    #[serde(default)]
    pub bytes_kept: u64,
    /// Non-directories removed from beneath the restored paths because the recovery point
    /// does not have them (`delete`)...
    #[serde(default)]
    pub files_deleted: u64,
    /// ...directories...
    #[serde(default)]
    pub dirs_deleted: u64,
    /// ...and the bytes of the regular files among them.
    #[serde(default)]
    pub bytes_deleted: u64,
    /// Files that could not be restored, with reasons.
    pub failed: Vec<NotRestored>,
    /// Set when the restore stopped before trying every file: the files not tried are in
    /// neither `files` nor `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<RestoreStop>,
    /// Notes (e.g. names that collide on a case-insensitive target).
    pub warnings: Vec<String>,
    /// The point was soft-deleted (and restored within its window): who deleted it, when,
    /// and until when it can still be restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_deleted: Option<crate::DeletedPoint>,
    /// Wall time.
    pub duration_s: f64,
}

/// A file or directory that was not restored: where, why in words, and the kind of cause.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotRestored {
    /// The path, as it was backed up.
    pub path: String,
    /// Why, in words.
    pub reason: String,
    /// The kind of cause, for grouping and advice.
    pub cause: FailureCause,
}

/// The kind of cause of a [`NotRestored`] entry.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCause {
    /// The vault's data for it is damaged or missing, or the recovery point refers to it
    /// unsoundly: a check of the vault says more.
    VaultData,
    /// The vault could not be read (the store failed).
    VaultUnreadable,
    /// The file system (the target or the recovery folder) is full (or over quota).
    NoSpace,
    /// The target refused this process (permissions, an immutable file).
    PermissionDenied,
    /// The target is on a read-only file system.
    ReadOnly,
    /// Something in the target stands in the way (a symlink, a directory where a file goes,
    /// a non-directory where a directory goes); it was left alone.
    InTheWay,
    /// Any other local I/O error.
    Io,
}

/// Why a restore stopped early.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreStop {
    /// What stopped it.
    pub cause: StopCause,
    /// Where: the file system that ran out of space (the target, or the recovery folder).
    pub path: String,
}

/// What stopped a restore early ([`RestoreStop`]).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopCause {
    /// A file system ran out of space: going on would only fail again for every file.
    NoSpace,
    /// The embedder asked it to stop ([`crate::Cancel`]).
    Cancelled,
}

/// The result of `check`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CheckReport {
    /// Recovery points checked.
    pub recovery_points: u64,
    /// Trees checked.
    pub trees: u64,
    /// Packs in the index.
    pub packs: u64,
    /// Blobs in the index.
    pub blobs: u64,
    /// Blobs decrypted and verified (`--read-data`).
    pub blobs_read: u64,
    /// Packs in the vault that no index lists (left by an interrupted backup; harmless, and
    /// removed by a prune).
    pub unreferenced_packs: u64,
    /// The machine's key files that are damaged, missing or of the old format without an
    /// integrity record (found with the master keys, without the passphrase). Damaged and
    /// missing ones are also in `errors`; old-format ones only here.
    pub key_files: Vec<crate::KeyFileIssue>,
    /// Soft-deleted recovery points (checked like the others: they are restorable in their
    /// window).
    pub soft_deleted: u64,
    /// Problems found: each says what is damaged.
    pub errors: Vec<String>,
    /// Signs that recovery points were deleted or the vault rolled back (see
    /// [`crate::assess`]); the local mark compared is [`CheckOptions::freshness`].
    #[serde(default)]
    pub freshness: Vec<crate::FreshnessFinding>,
    /// The local mark raised to the newest recovery point seen: the embedder stores it.
    #[serde(default)]
    pub freshness_mark: crate::Freshness,
    /// Index entries naming packs that are not in the vault (backup writes their blobs
    /// again). Each such pack is also in `errors`.
    #[serde(default)]
    pub missing_packs: u64,
}

/// What [`crate::Repository::check_with`] checks.
#[non_exhaustive]
#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    /// Read every pack whole and verify every blob.
    pub read_data: bool,
    /// The embedder's local high-water mark, compared with the vault.
    pub freshness: Option<crate::Freshness>,
}

impl CheckOptions {
    /// Structure only, without a local mark.
    pub fn new(read_data: bool) -> CheckOptions {
        CheckOptions {
            read_data,
            freshness: None,
        }
    }
}

impl CheckReport {
    /// True when no damage was found.
    pub fn ok(&self) -> bool {
        self.errors.is_empty() && self.freshness.is_empty()
    }
}
