//! Where a passphrase comes from, in restic's order: a file named on the command line, then
//! `RBACKUP_PASSPHRASE_FILE`, then `RBACKUP_PASSPHRASE_COMMAND`, then a prompt on the terminal.
//!
//! The prompt is last and only on a terminal because a timer has none: a job that would block
//! on a prompt nobody sees must fail at once and say which of the other three to set.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, anyhow, bail};
use rbackup_engine::crypto::Passphrase;
use zeroize::Zeroizing;

/// Names a passphrase file in the environment (like restic's `RESTIC_PASSWORD_FILE`).
pub const ENV_FILE: &str = "RBACKUP_PASSPHRASE_FILE";
/// A command whose standard output is the passphrase (like `RESTIC_PASSWORD_COMMAND`); split
/// as a shell would split words, run without a shell.
pub const ENV_COMMAND: &str = "RBACKUP_PASSPHRASE_COMMAND";

/// More than any passphrase needs; a command that prints more is printing something else.
const MAX_PASSPHRASE_BYTES: u64 = 64 * 1024;

/// Where the passphrase was found, for messages such as "the passphrase is the one in FILE".
#[derive(Debug, Clone)]
pub enum Source {
    /// A file (from the command line or `RBACKUP_PASSPHRASE_FILE`).
    File(PathBuf),
    /// The output of `RBACKUP_PASSPHRASE_COMMAND`.
    Command(String),
    /// Typed at the prompt.
    Typed,
}

impl Source {
    /// How a notice names it.
    pub fn describe(&self) -> String {
        match self {
            Source::File(p) => format!("the one in {}", p.display()),
            Source::Command(c) => format!("the one {ENV_COMMAND} (`{c}`) prints"),
            Source::Typed => "the one you typed".to_string(),
        }
    }
}

/// What the passphrase is for: unlocking asks once, a new passphrase is asked twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// An existing passphrase (asked once).
    Existing,
    /// A passphrase being set (asked twice at the prompt).
    New,
}

/// The passphrase from `explicit` (a `--...-file` option) or, failing that, the environment or
/// the terminal; `flag` names the option in the advice when none is there.
pub fn obtain(explicit: Option<&Path>, ask: Ask, flag: &str) -> Result<(Passphrase, Source)> {
    if let Some(path) = explicit {
        return Ok((read_file(path)?, Source::File(path.to_path_buf())));
    }
    let file = std::env::var_os(ENV_FILE).filter(|v| !v.is_empty());
    let command = std::env::var(ENV_COMMAND).ok().filter(|v| !v.is_empty());
    match (file, command) {
        (Some(_), Some(_)) => {
            bail!("both {ENV_FILE} and {ENV_COMMAND} are set: unset one of them")
        }
        (Some(f), None) => {
            let path = PathBuf::from(f);
            Ok((read_file(&path)?, Source::File(path)))
        }
        (None, Some(c)) => Ok((run_command(&c)?, Source::Command(c))),
        (None, None) if std::io::stdin().is_terminal() => Ok((prompt(ask)?, Source::Typed)),
        (None, None) => bail!(
            "a passphrase is needed and there is no terminal to ask on: give {flag} FILE, or set {ENV_FILE} or {ENV_COMMAND}"
        ),
    }
}

/// A passphrase only if one was given (`explicit`, or one of the two variables): for commands
/// where it is optional and a prompt would be in the way (`vault machines`).
pub fn optional(explicit: Option<&Path>) -> Result<Option<Passphrase>> {
    let given = explicit.is_some()
        || std::env::var_os(ENV_FILE).is_some_and(|v| !v.is_empty())
        || std::env::var_os(ENV_COMMAND).is_some_and(|v| !v.is_empty());
    if !given {
        return Ok(None);
    }
    // With something given, stdin is never read: the prompt is only reached with nothing set.
    Ok(Some(
        obtain(explicit, Ask::Existing, "--passphrase-file")?.0,
    ))
}

/// Reads a passphrase file: one trailing newline (as `echo` writes) is not part of it.
pub fn read_file(path: &Path) -> Result<Passphrase> {
    let mut text = Zeroizing::new(String::new());
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_PASSPHRASE_BYTES + 1).read_to_string(&mut text))
        .with_context(|| format!("cannot read passphrase file {}", path.display()))?;
    if text.len() as u64 > MAX_PASSPHRASE_BYTES {
        bail!(
            "passphrase file {} is larger than {MAX_PASSPHRASE_BYTES} bytes: give the file that holds only the passphrase",
            path.display()
        );
    }
    from_text(&text).with_context(|| format!("passphrase in {}", path.display()))
}

fn from_text(text: &str) -> Result<Passphrase> {
    let trimmed = text.strip_suffix('\n').unwrap_or(text);
    let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
    Ok(Passphrase::new(trimmed)?)
}

fn run_command(line: &str) -> Result<Passphrase> {
    let words = shlex::split(line)
        .filter(|w| !w.is_empty())
        .ok_or_else(|| {
            anyhow!("{ENV_COMMAND} `{line}` is not a command line (unbalanced quotes?)")
        })?;
    let mut child = Command::new(&words[0])
        .args(&words[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot run {ENV_COMMAND} `{line}`"))?;
    let mut out = Zeroizing::new(String::new());
    let read = child
        .stdout
        .take()
        .map(|s| s.take(MAX_PASSPHRASE_BYTES + 1).read_to_string(&mut out));
    let status = child
        .wait()
        .with_context(|| format!("{ENV_COMMAND} `{line}`"))?;
    if !status.success() {
        bail!("{ENV_COMMAND} `{line}` failed ({status}): fix the command or unset it");
    }
    match read {
        Some(Ok(_)) if out.len() as u64 <= MAX_PASSPHRASE_BYTES => {}
        Some(Ok(_)) => {
            bail!("{ENV_COMMAND} `{line}` printed more than {MAX_PASSPHRASE_BYTES} bytes")
        }
        _ => bail!("{ENV_COMMAND} `{line}` printed no text passphrase"),
    }
    from_text(&out).with_context(|| format!("passphrase printed by {ENV_COMMAND} `{line}`"))
}

/// A passphrase being set on something that is already open (`passphrase change`, `key
/// export`): from `explicit` or asked twice on the terminal. Not from the environment, which
/// names the passphrase in use, not a new one.
pub fn obtain_new(explicit: Option<&Path>, flag: &str) -> Result<(Passphrase, Source)> {
    match explicit {
        Some(path) => Ok((read_file(path)?, Source::File(path.to_path_buf()))),
        None if std::io::stdin().is_terminal() => Ok((prompt(Ask::New)?, Source::Typed)),
        None => bail!("give the new passphrase with {flag} FILE (there is no terminal to ask on)"),
    }
}

/// Asks on the terminal without echo; a new passphrase is asked twice and must match.
fn prompt(ask: Ask) -> Result<Passphrase> {
    let first = read_hidden(match ask {
        Ask::Existing => "Passphrase: ",
        Ask::New => "New passphrase (at least 16 characters): ",
    })?;
    let pass = from_text(&first)?;
    if ask == Ask::New {
        let again = read_hidden("Repeat the passphrase: ")?;
        if again.as_str() != first.as_str() {
            bail!("the two passphrases typed differ: nothing was changed; try again");
        }
    }
    Ok(pass)
}

fn read_hidden(prompt: &str) -> Result<Zeroizing<String>> {
    rpassword::prompt_password(prompt)
        .map(Zeroizing::new)
        .context("cannot read the passphrase from the terminal")
}
