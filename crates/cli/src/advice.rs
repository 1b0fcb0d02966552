//! Errors for people. The engine's and crypto crate's errors say what went wrong, where, and
//! with which figures; they know nothing of the command line. This module turns them into what
//! the agent prints: sizes made readable, and the command or flag that helps, appended after
//! the fact (`...: free space there or choose another cache dir (--cache-dir)`).

use indicatif::{HumanBytes, HumanCount};
use rbackup_engine::crypto::{CryptoError, Malformed};
use rbackup_engine::{
    CACHE_PERCENT, CorruptReason, CredentialsProblem, EngineError, FailureCause, PinProblem,
    RestoreReport, ScratchFolder, SpacePlace, StopCause,
};

/// The whole error for the terminal: each cause once, engine figures readable, then advice.
pub fn render(err: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut advice_text = None;
    for cause in err.chain() {
        let engine = cause.downcast_ref::<EngineError>();
        let crypto = engine.map_or_else(|| cause.downcast_ref::<CryptoError>(), crypto_of);
        let text = engine
            .and_then(message)
            .unwrap_or_else(|| cause.to_string());
        // Messages often quote their source already (`{path}: {source}`): say it once.
        if !out.contains(&text) {
            if !out.is_empty() {
                out += ": ";
            }
            out += &text;
        }
        if advice_text.is_none() {
            advice_text = engine
                .and_then(advice)
                .or_else(|| crypto.and_then(crypto_advice));
        }
    }
    match advice_text {
        Some(a) => format!("{out}: {a}"),
        None => out,
    }
}

fn crypto_of(e: &EngineError) -> Option<&CryptoError> {
    match e {
        EngineError::Crypto(c) => Some(c),
        _ => None,
    }
}

/// Messages that read better with human sizes than the engine's plain byte counts.
fn message(e: &EngineError) -> Option<String> {
    Some(match e {
        EngineError::Cancelled { packs, bytes } => format!(
            "backup stopped; no recovery point was written; kept {packs} pack(s) ({}) uploaded \
             before the stop, indexed for the next backup",
            HumanBytes(*bytes)
        ),
        EngineError::SourceTooLarge { bytes, max } => format!(
            "the sources hold {} GB, over the limit of {} GB per data source",
            HumanCount(bytes / 1_000_000_000),
            HumanCount(max / 1_000_000_000)
        ),
        EngineError::NoSpace {
            place: SpacePlace::Cache { source_bytes },
            path,
            needed,
            available,
        } => format!(
            "the cache dir {} has {} free but needs {}: the cache must have free space of at \
             least {CACHE_PERCENT}% of the data backed up ({} here)",
            path.display(),
            HumanBytes(*available),
            HumanBytes(*needed),
            HumanBytes(*source_bytes),
        ),
        EngineError::NoSpace {
            place:
                SpacePlace::RecoveryFolder {
                    free,
                    reserved_by_others,
                },
            path,
            needed,
            ..
        } => format!(
            "the recovery folder {} has {} free{} but this restore needs {}",
            path.display(),
            HumanBytes(*free),
            if *reserved_by_others > 0 {
                format!(
                    " ({} of it reserved by restores in progress)",
                    HumanBytes(*reserved_by_others)
                )
            } else {
                String::new()
            },
            HumanBytes(*needed),
        ),
        EngineError::NoSpace {
            place: SpacePlace::Target,
            path,
            needed,
            available,
        } => format!(
            "the restore target {} has {} free but this restore writes {} there (nothing was \
             written)",
            path.display(),
            HumanBytes(*available),
            HumanBytes(*needed),
        ),
        _ => return None,
    })
}

const NEW_CREDENTIALS: &str = "download new ones with `rbackup vault credentials <URL> --out FILE`";
const CHECK_DATA: &str = "run `rbackup check --read-data` to see what is affected";

/// What the user can do about an engine error, when there is something to say.
pub fn advice(e: &EngineError) -> Option<String> {
    let text = match e {
        EngineError::Crypto(c) => return crypto_advice(c),
        EngineError::NoUsableKeyFile { .. } | EngineError::NoKeyFile { .. } => {
            "the passphrase was not the problem: unlock with a recovery key file instead \
             (`--key-file FILE` from `rbackup key export`), or run `rbackup key repair \
             --passphrase-file FILE` on the machine itself"
                .into()
        }
        EngineError::Corrupt {
            reason: CorruptReason::KeyFileBinding { .. },
            ..
        } => "use the key file exported for this machine and vault".into(),
        EngineError::AppendOnly { machine, .. } => format!(
            "run retention for this machine from an admin host whose store credentials may \
             delete: `rbackup forget --machine {machine}` and `rbackup prune --machine \
             {machine}` there, with this machine's passphrase (`--passphrase-file`) or its \
             exported key file (`--key-file`)"
        ),
        EngineError::WrongPassphrase { .. } => {
            "check that you use the passphrase saved when this machine was registered".into()
        }
        EngineError::NotAVault { url } => format!(
            "if your backups are in a vault there, its disk may be unmounted or the folder moved \
             or renamed: mount it, or correct the URL (`vault` in the agent config); a new vault \
             made with `rbackup vault create {url}` starts empty and does not bring old backups \
             back"
        ),
        EngineError::VaultExists { .. } => {
            "use `rbackup vault credentials` for new credentials".into()
        }
        EngineError::UnsupportedFormat { .. } => "upgrade rbackup".into(),
        EngineError::MachineNotFound { vault, .. } => format!(
            "list the machines registered there with `rbackup vault machines {vault}`, or register this one"
        ),
        EngineError::InvalidCredentials {
            problem: CredentialsProblem::NotCredentials(_),
        } => "download it again with `rbackup vault credentials`".into(),
        EngineError::InvalidCredentials { .. } | EngineError::CredentialsExpired { .. } => {
            NEW_CREDENTIALS.into()
        }
        EngineError::Corrupt {
            reason: CorruptReason::TreeLargerThanRecorded { .. },
            ..
        } => "a backup never writes such a recovery point (it was crafted or damaged): restore an \
             older one, and run `rbackup check --read-data`"
            .into(),
        EngineError::DirectoryTooLarge { .. } => {
            "exclude that directory (`--exclude`) or split it into subdirectories".into()
        }
        EngineError::Corrupt { .. } | EngineError::PruneStopped { .. } => CHECK_DATA.into(),
        EngineError::RecoveryPointNotFound { .. } => {
            "list them with `rbackup recovery-points`".into()
        }
        EngineError::AmbiguousRecoveryPoint { .. } => "give more digits".into(),
        EngineError::VaultReadOnly { url, .. } => {
            format!("the vault's owner runs `rbackup vault set-state {url} active`")
        }
        EngineError::CopyStopped { .. } => {
            "run the same `rbackup copy` again (a backup with a local tier copies too)".into()
        }
        EngineError::InvalidVaultName { .. } => "choose another name (--name)".into(),
        EngineError::NoRecoveryPoints => "run `rbackup backup` first".into(),
        EngineError::PathNotInRecoveryPoint { .. } => {
            "give absolute paths as they were when backed up (`rbackup ls` lists them, `rbackup find` searches every recovery point)".into()
        }
        EngineError::NoRecoveryPointHolds { .. } => {
            "list the recovery points and their paths with `rbackup recovery-points`, or search by name with `rbackup find`".into()
        }
        EngineError::NotAFile { .. } => {
            "`rbackup dump` writes one file; list a folder with `rbackup ls`, or bring it back with `rbackup restore`".into()
        }
        EngineError::BadPattern { .. } => {
            "use a glob such as `*.pdf`, or `/home/*/notes.txt` to match whole paths".into()
        }
        EngineError::SourceTooLarge { .. } => "split them into several jobs".into(),
        EngineError::TooManyRecoveryPoints { .. } => {
            "remove old ones with `rbackup forget --keep-last N --prune`".into()
        }
        EngineError::NoSpace {
            place: SpacePlace::Cache { .. },
            ..
        } => "free space there or choose another cache dir (`--cache-dir`)".into(),
        EngineError::NoSpace {
            place: SpacePlace::Target,
            ..
        } => "free space there, choose another --target, or restore less (name PATHs, or \
              `--overwrite if-changed` to keep what is already there)"
            .into(),
        EngineError::NoSpace { .. } => {
            "free space there or choose another folder with --recovery-dir".into()
        }
        EngineError::NothingToBackUp => {
            "name one or more paths, e.g. `rbackup backup ~/Documents`".into()
        }
        EngineError::EmptyRetentionPolicy => {
            "give at least one --keep-last/--keep-hourly/--keep-daily/--keep-weekly/\
             --keep-monthly/--keep-yearly of 1 or more, or set the job's retention"
                .into()
        }
        EngineError::InvalidValidity { .. } => "give a shorter --valid-for".into(),
        EngineError::LeaseLost { .. } => "run it again".into(),
        EngineError::Cancelled { .. } => {
            "run the same backup again: it reuses what was kept and uploads only the rest".into()
        }
        EngineError::UnsafeFolder { role, path, .. } => {
            let option = match role {
                ScratchFolder::Cache => "choose another cache dir (`--cache-dir` at registration)",
                ScratchFolder::Recovery => "choose another one with `--recovery-dir DIR`",
                _ => "choose another scratch folder",
            };
            format!(
                "{option} that only you can write to, or fix this one: `chown $(id -u) {dir} && \
                 chmod 700 {dir}`",
                dir = path.display()
            )
        }
        EngineError::Store(store) if store.is_refused() => {
            "this machine's store credentials are append-only, as they should be: run forget \
             and prune from an admin host with the vault owner's credentials"
                .into()
        }
        EngineError::RepositoryBusy { .. } => {
            "wait for it to finish; if that process is gone, its lease runs out by itself".into()
        }
        EngineError::PinRefused {
            problem: PinProblem::Required,
        } => "give the vault's security PIN with --pin PIN, --pin-file FILE or RBACKUP_PIN; \
              the vault owner issues one with `rbackup vault pin URL`"
            .into(),
        EngineError::PinRefused { .. } => {
            "ask the vault owner for a new PIN: `rbackup vault pin URL`".into()
        }
        EngineError::RecoveryPointPurged { .. } => {
            "list what can still be restored with `rbackup recovery-points` and \
             `rbackup recovery-points --deleted`"
                .into()
        }
        EngineError::NotDeleted { .. } => "it is listed by `rbackup recovery-points`".into(),
        _ => return None,
    };
    Some(text)
}

/// The lines for a restore that did not write everything: one if it stopped early, then one
/// per kind of failure, with how many, the first file and advice that fits the cause (the
/// full list is the report's `failed`). `recovery_dir` tells a full recovery folder from a
/// full target.
pub fn restore_problems(r: &RestoreReport, recovery_dir: &std::path::Path) -> Vec<String> {
    let mut lines = Vec::new();
    let done = format!(
        "wrote {} of {} files, {} of {}",
        r.files,
        r.files_planned,
        HumanBytes(r.bytes),
        HumanBytes(r.bytes_planned)
    );
    let stopped = r.stopped.as_ref().map(|s| s.cause);
    match &r.stopped {
        Some(s) if s.cause == StopCause::NoSpace => {
            let option = match std::path::Path::new(&s.path).starts_with(recovery_dir) {
                true => "--recovery-dir",
                false => "--target",
            };
            lines.push(format!(
                "restore stopped: no space left on device in {} ({done}); free space or choose \
                 another {option}",
                s.path
            ));
        }
        Some(_) => lines.push(format!(
            "restore stopped on request ({done}); what was written is in place and the staging \
             folder is removed: run the same restore with `--overwrite if-changed` to finish it"
        )),
        None => {}
    }
    let mut causes: Vec<FailureCause> = r.failed.iter().map(|f| f.cause).collect();
    causes.sort();
    causes.dedup();
    for cause in causes {
        if cause == FailureCause::NoSpace && stopped == Some(StopCause::NoSpace) {
            continue;
        }
        let of: Vec<_> = r.failed.iter().filter(|f| f.cause == cause).collect();
        let (what, advice) = failure_words(cause);
        lines.push(format!(
            "{} not restored: {what} (first: {}: {}); {advice}",
            match of.len() {
                1 => "1 file".to_string(),
                n => format!("{n} files"),
            },
            of[0].path,
            of[0].reason
        ));
    }
    lines
}

/// What a kind of restore failure is, and what to do about it.
fn failure_words(cause: FailureCause) -> (&'static str, &'static str) {
    match cause {
        FailureCause::VaultData => (
            "the vault's data for them is damaged or missing",
            CHECK_DATA,
        ),
        FailureCause::VaultUnreadable => (
            "the vault could not be read",
            "check that the vault is reachable, then run the same restore with `--overwrite \
             if-changed` to fetch only what is missing",
        ),
        FailureCause::NoSpace => (
            "no space left on device",
            "free space or choose another --target",
        ),
        FailureCause::PermissionDenied => (
            "permission denied",
            "restore as a user who may write there (as root to restore owners), or choose \
             another --target",
        ),
        FailureCause::ReadOnly => (
            "the file system is read-only",
            "remount it read-write or choose another --target",
        ),
        FailureCause::InTheWay => (
            "something in the target is in the way (a symbolic link, a file where a folder \
             goes, or a folder where a file goes); it was left alone",
            "move it aside, or restore into an empty --target",
        ),
        _ => (
            "an I/O error",
            "the reasons are in `--json` output and `rbackup jobs`; the disk may be failing",
        ),
    }
}

/// What the user can do about a crypto error.
pub fn crypto_advice(e: &CryptoError) -> Option<String> {
    let text = match e {
        CryptoError::PassphraseTooShort { .. } => {
            "generate a strong one with `rbackup passphrase generate`"
        }
        CryptoError::Tampered { .. } => CHECK_DATA,
        CryptoError::Malformed(Malformed::KeyFileVersion { .. }) => "upgrade rbackup",
        CryptoError::Malformed(Malformed::PrintedLine { .. }) => {
            "compare that line with the printed key and type it again"
        }
        _ => return None,
    };
    Some(text.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recovery_point_limit_names_forget() {
        let e = anyhow::Error::from(EngineError::TooManyRecoveryPoints {
            existing: 9999,
            max: 9999,
        });
        let text = render(&e);
        assert!(
            text.contains("9999") && text.contains("`rbackup forget --keep-last N --prune`"),
            "{text}"
        );
    }

    #[test]
    fn an_append_only_refusal_names_the_admin_commands() {
        let e = anyhow::Error::from(EngineError::AppendOnly {
            machine: "0123456789abcdef".into(),
            operation: "prune",
        });
        let text = render(&e);
        for want in [
            "machine 0123456789abcdef is append-only",
            "it does not prune",
            "`rbackup forget --machine 0123456789abcdef`",
            "`rbackup prune --machine 0123456789abcdef`",
            "--key-file",
        ] {
            assert!(text.contains(want), "{want:?} in {text}");
        }
    }

    #[test]
    fn a_crafted_tree_and_a_huge_directory_say_what_to_do() {
        let crafted = anyhow::Error::from(EngineError::Corrupt {
            object: "tree 00ab".into(),
            reason: CorruptReason::TreeLargerThanRecorded { max: 65536 },
        });
        let text = render(&crafted);
        assert!(text.contains("restore an older one"), "{text}");
        let huge = anyhow::Error::from(EngineError::DirectoryTooLarge {
            path: "/srv/spool".into(),
            bytes: 600 << 20,
            max: 512 << 20,
        });
        let text = render(&huge);
        assert!(
            text.contains("/srv/spool") && text.contains("`--exclude`"),
            "{text}"
        );
    }

    #[test]
    fn the_cache_rule_names_needed_available_and_the_rule() {
        let e = anyhow::Error::from(EngineError::NoSpace {
            place: SpacePlace::Cache {
                source_bytes: 100 << 20,
            },
            path: "/var/cache/rb".into(),
            needed: 5 << 20,
            available: 1 << 20,
        });
        let text = render(&e);
        assert_eq!(
            text,
            "the cache dir /var/cache/rb has 1.00 MiB free but needs 5.00 MiB: the cache must \
             have free space of at least 5% of the data backed up (100.00 MiB here): free space \
             there or choose another cache dir (`--cache-dir`)"
        );
    }

    #[test]
    fn a_short_passphrase_names_the_minimum_and_the_generator_even_through_the_engine() {
        let short = rbackup_engine::crypto::Passphrase::new("short").unwrap_err();
        for e in [
            anyhow::Error::from(EngineError::from(short)),
            anyhow::Error::from(rbackup_engine::crypto::Passphrase::new("x").unwrap_err()),
        ] {
            let text = render(&e);
            assert!(
                text.contains("at least 16") && text.contains("`rbackup passphrase generate`"),
                "{text}"
            );
        }
    }

    #[test]
    fn a_source_quoted_by_its_error_is_printed_once_and_context_comes_first() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let e = anyhow::Error::from(EngineError::Source {
            path: "/nope".into(),
            source: io,
        })
        .context("backup failed");
        assert_eq!(
            render(&e),
            "backup failed: cannot back up /nope: No such file or directory"
        );
    }

    fn not_restored(path: &str, cause: FailureCause) -> rbackup_engine::NotRestored {
        rbackup_engine::NotRestored {
            path: path.into(),
            reason: format!("not restored: {cause:?}"),
            cause,
        }
    }

    #[test]
    fn a_full_target_is_one_line_with_the_counts_and_no_vault_check() {
        let mut r = RestoreReport {
            files: 12,
            files_planned: 200,
            bytes: 4 << 20,
            bytes_planned: 3 << 30,
            stopped: Some(rbackup_engine::RestoreStop {
                cause: StopCause::NoSpace,
                path: "/x".into(),
            }),
            ..RestoreReport::default()
        };
        r.failed = (0..3)
            .map(|i| not_restored(&format!("/a/{i}"), FailureCause::NoSpace))
            .collect();
        let lines = restore_problems(&r, std::path::Path::new("/var/lib/rbackup/recovery"));
        assert_eq!(
            lines,
            [
                "restore stopped: no space left on device in /x (wrote 12 of 200 files, 4.00 MiB of \
              3.00 GiB); free space or choose another --target"
            ]
        );
        r.stopped.as_mut().unwrap().path = "/var/lib/rbackup/recovery/rbackup-restore/1-ab".into();
        let lines = restore_problems(&r, std::path::Path::new("/var/lib/rbackup/recovery"));
        assert!(
            lines[0].ends_with("choose another --recovery-dir"),
            "{lines:?}"
        );
    }

    #[test]
    fn failures_are_one_line_per_cause_and_only_damage_names_check() {
        let r = RestoreReport {
            failed: vec![
                not_restored("/a", FailureCause::PermissionDenied),
                not_restored("/b", FailureCause::PermissionDenied),
                not_restored("/c", FailureCause::VaultData),
                not_restored("/d", FailureCause::InTheWay),
            ],
            ..RestoreReport::default()
        };
        let lines = restore_problems(&r, std::path::Path::new("/rec"));
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(
            lines[0].starts_with("1 file not restored: the vault's data"),
            "{lines:?}"
        );
        assert!(lines[0].contains("check --read-data"));
        assert!(lines[1].starts_with("2 files not restored: permission denied (first: /a: "));
        assert!(lines[2].contains("something in the target is in the way"));
        assert!(lines[1..].iter().all(|l| !l.contains("check")), "{lines:?}");
    }

    #[test]
    fn errors_without_advice_are_printed_as_they_are() {
        let e = anyhow::anyhow!("no job named \"x\"");
        assert_eq!(render(&e), "no job named \"x\"");
    }
}
