//! Finding what was backed up: `ls`, `find`, `dump`, `diff` and `stats`, and `vault machines`.
//! Each of the first five (and `mount`, mount/mod.rs) opens this machine's repository (or another one with `--machine`)
//! and prints what the engine's browse API returns: local times to the second for people, UTC
//! RFC 3339 with nanoseconds in JSON.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use indicatif::HumanBytes;
use rbackup_engine::tree::NodeKind;
use rbackup_engine::{Entry, FindOptions, Repository, Unlock};
use serde_json::{Value, json};

use crate::EXIT_WARNINGS;
use crate::config::AgentConfig;
use crate::keys::MachineArgs;
use crate::setup::{canonical_url, load_local_keys, open_vault, open_with_config};
use crate::ui::{self, Ctx};

#[derive(clap::Args, Debug)]
pub struct LsArgs {
    /// A recovery point id (a unique prefix is enough) or `latest` (the newest that holds
    /// PATH).
    pub recovery_point: String,
    /// An absolute path in it (default: the top, `/`).
    pub path: Option<PathBuf>,
    /// Everything beneath PATH, not only its own entries.
    #[arg(short, long)]
    pub recursive: bool,
    /// Long listing: mode, owner and group ids, size, modification time (local), path.
    #[arg(short, long)]
    pub long: bool,
    #[command(flatten)]
    pub other: MachineArgs,
}

#[derive(clap::Args, Debug)]
pub struct FindArgs {
    /// A glob on names (`*.pdf`), or on the whole absolute path when it holds a '/'
    /// (`/home/*/notes.txt`): the convention of `backup --exclude`.
    pub pattern: String,
    /// Search only this recovery point (id, unique prefix or `latest`); repeatable.
    #[arg(long = "recovery-point", value_name = "ID")]
    pub recovery_points: Vec<String>,
    /// Search only the newest N recovery points.
    #[arg(long, value_name = "N")]
    pub newest: Option<usize>,
    #[command(flatten)]
    pub other: MachineArgs,
}

#[derive(clap::Args, Debug)]
pub struct DumpArgs {
    /// A recovery point id (a unique prefix is enough) or `latest` (the newest that holds
    /// FILE).
    pub recovery_point: String,
    /// The file's absolute path.
    pub file: PathBuf,
    /// Write the bytes to this file instead of standard output (with --json, standard output
    /// then gets the report).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub other: MachineArgs,
}

#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    /// The older recovery point (id, unique prefix or `latest`).
    pub from: String,
    /// The newer recovery point.
    pub to: String,
    #[command(flatten)]
    pub other: MachineArgs,
}

#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    /// Recovery points to show (ids, unique prefixes or `latest`; default: all).
    pub recovery_points: Vec<String>,
    #[command(flatten)]
    pub other: MachineArgs,
}

/// This machine's repository, or the one `--machine` names.
pub(crate) async fn open(ctx: &Ctx, other: &MachineArgs) -> Result<Repository> {
    let cfg = AgentConfig::load(&ctx.config_path)?.ok_or_else(|| {
        anyhow!(
            "no agent config at {}: register this machine with the vault first (`rbackup register`); then --machine ID reaches another machine's recovery points",
            ctx.config_path.display()
        )
    })?;
    match other.open_other(ctx, &cfg).await? {
        Some(repo) => Ok(repo),
        None => open_with_config(&cfg).await,
    }
}

/// An absolute path as asked for: relative ones are taken from the working directory, as
/// `restore` takes them.
fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Refused tree entries are warnings: the listing is still what could be read.
fn warn_refused(ctx: &Ctx, refused: &[String]) -> u8 {
    for r in refused {
        ctx.notice(&format!("warning: {r}"));
    }
    if refused.is_empty() { 0 } else { EXIT_WARNINGS }
}

/// `drwxr-xr-x` from `st_mode`. The kind letter comes from the kind's recorded name, so a
/// kind added later (links) shows as `ls` shows it, and one unknown here as `?`.
fn mode_string(kind: NodeKind, mode: u32) -> String {
    let name = serde_json::to_value(kind).unwrap_or_default();
    let letter = match name.as_str().unwrap_or_default() {
        "dir" => 'd',
        "file" => '-',
        "symlink" => 'l',
        _ => '?',
    };
    let mut s = String::from(letter);
    for (bit, c) in (0..9).rev().zip("rwxrwxrwx".chars()) {
        s.push(if mode & (1 << bit) != 0 { c } else { '-' });
    }
    s
}

/// An entry for `--json`.
fn entry_json(e: &Entry) -> Value {
    // Names need not be UTF-8: shown with replacement characters rather than refused.
    json!({"path": e.path.to_string_lossy(), "kind": e.kind, "mode": e.mode, "permissions": mode_string(e.kind, e.mode),
           "uid": e.uid, "gid": e.gid, "size": e.size, "mtime": ui::utc_time(ui::from_ns(e.mtime_ns))})
}

/// A path for people; directories end in `/`, as restic shows them.
fn shown(e: &Entry) -> String {
    let slash = if e.kind == NodeKind::Dir { "/" } else { "" };
    format!("{}{slash}", e.path.display())
}

fn long_line(e: &Entry) -> String {
    format!(
        "{} {:>6} {:>6} {:>12} {} {}",
        mode_string(e.kind, e.mode),
        e.uid,
        e.gid,
        e.size,
        ui::local_time(ui::from_ns(e.mtime_ns)),
        shown(e)
    )
}

pub async fn ls(ctx: &Ctx, args: LsArgs) -> Result<u8> {
    let repo = open(ctx, &args.other).await?;
    let path = absolute(args.path.as_deref().unwrap_or(Path::new("/")));
    let l = repo.ls(&args.recovery_point, &path, args.recursive).await?;
    let code = warn_refused(ctx, &l.refused);
    let value = json!({"recovery_point": l.recovery_point, "time": ui::utc_rfc3339(&l.time),
                       "path": path.to_string_lossy(), "entries": l.entries.iter().map(entry_json).collect::<Vec<_>>(),
                       "refused": l.refused});
    if !ctx.json && !ctx.quiet {
        ctx.notice(&format!(
            "recovery point {} of {}, {}:",
            &l.recovery_point[..8],
            ui::local_rfc3339(&l.time),
            path.display()
        ));
    }
    ctx.output(&value, || {
        let line = if args.long { long_line } else { shown };
        l.entries.iter().map(line).collect::<Vec<_>>().join("\n")
    })?;
    Ok(code)
}

pub async fn find(ctx: &Ctx, args: FindArgs) -> Result<u8> {
    let repo = open(ctx, &args.other).await?;
    let mut opts = FindOptions::default();
    opts.recovery_points = args.recovery_points;
    opts.newest = args.newest;
    let r = repo.find(&args.pattern, &opts).await?;
    let code = warn_refused(ctx, &r.refused);
    let hits: Vec<Value> = r
        .hits
        .iter()
        .map(|h| {
            let mut v = entry_json(&h.entry);
            v["recovery_point"] = json!(h.recovery_point);
            v["recovery_point_time"] = json!(ui::utc_rfc3339(&h.time));
            v
        })
        .collect();
    let value =
        json!({"pattern": args.pattern, "recovery_points": r.recovery_points, "hits": hits});
    ctx.output(&value, || {
        let mut out = format!(
            "{:<8}  {:<19}  {:>10}  {:<19}  path\n",
            "point", "point time", "size", "modified"
        );
        for h in &r.hits {
            out += &format!(
                "{:<8}  {:<19}  {:>10}  {:<19}  {}\n",
                &h.recovery_point[..8],
                ui::local_rfc3339(&h.time),
                HumanBytes(h.entry.size).to_string(),
                ui::local_time(ui::from_ns(h.entry.mtime_ns)),
                shown(&h.entry)
            );
        }
        out + &format!(
            "{} match(es) in {} recovery point(s)",
            r.hits.len(),
            r.recovery_points
        )
    })?;
    Ok(code)
}

pub async fn dump(ctx: &Ctx, args: DumpArgs) -> Result<u8> {
    if ctx.json && args.output.is_none() {
        bail!(
            "dump writes the file's bytes to standard output, so --json needs --output FILE (for the file's metadata alone, use `rbackup ls --json`)"
        );
    }
    let repo = open(ctx, &args.other).await?;
    let path = absolute(&args.file);
    let mut reader = repo.open_file(&args.recovery_point, &path).await?;
    let mut out: Box<dyn Write> = match &args.output {
        Some(f) => Box::new(
            std::fs::File::create(f).with_context(|| format!("cannot create {}", f.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut written = 0u64;
    while let Some(piece) = reader.next_chunk().await? {
        match out.write_all(&piece) {
            Ok(()) => written += piece.len() as u64,
            // A reader that stopped early (`| head`) is not an error of ours.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(0),
            Err(e) => return Err(anyhow!("cannot write the file's bytes: {e}")),
        }
    }
    match out.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(anyhow!("cannot write the file's bytes: {e}"));
        }
        _ => {}
    }
    if let Some(f) = &args.output {
        let value = json!({"path": path.to_string_lossy(), "output": f.to_string_lossy(), "bytes": written,
                           "entry": entry_json(reader.entry())});
        ctx.output(&value, || {
            format!(
                "wrote {} ({written} bytes) to {}",
                path.display(),
                f.display()
            )
        })?;
    }
    Ok(0)
}

pub async fn diff(ctx: &Ctx, args: DiffArgs) -> Result<u8> {
    let repo = open(ctx, &args.other).await?;
    let d = repo.diff(&args.from, &args.to).await?;
    let code = warn_refused(ctx, &d.refused);
    let changes: Vec<Value> = d
        .changes
        .iter()
        .map(|c| {
            let mut v = entry_json(&c.entry);
            v["change"] = json!(c.change);
            v["marker"] = json!(c.change.marker().to_string());
            v["size_before"] = json!(c.size_before);
            v
        })
        .collect();
    let value = json!({"from": d.from, "to": d.to, "changes": changes, "summary": d.summary});
    ctx.output(&value, || {
        let mut out = String::new();
        for c in &d.changes {
            out += &format!("{}    {}\n", c.change.marker(), shown(&c.entry));
        }
        let s = &d.summary;
        out + &format!(
            "{} added ({}), {} removed ({}), {} modified, {} with metadata changes only",
            s.added,
            HumanBytes(s.bytes_added),
            s.removed,
            HumanBytes(s.bytes_removed),
            s.modified,
            s.metadata
        )
    })?;
    Ok(code)
}

pub async fn stats(ctx: &Ctx, args: StatsArgs) -> Result<u8> {
    let repo = open(ctx, &args.other).await?;
    let s = repo.stats(&args.recovery_points).await?;
    let points: Vec<Value> = s
        .points
        .iter()
        .map(|p| {
            json!({"recovery_point": p.recovery_point, "time": ui::utc_rfc3339(&p.time),
                   "files": p.files, "logical_bytes": p.logical_bytes, "blobs": p.blobs,
                   "unique_bytes": p.unique_bytes})
        })
        .collect();
    let value = json!({"points": points, "recovery_points": s.recovery_points,
                       "logical_bytes": s.logical_bytes, "stored_bytes": s.stored_bytes,
                       "packs": s.packs, "dedup_ratio": s.dedup_ratio});
    ctx.output(&value, || {
        let mut out = format!(
            "{:<8}  {:<19}  {:>8}  {:>10}  {:>10}\n",
            "point", "time", "files", "logical", "unique"
        );
        for p in &s.points {
            out += &format!(
                "{:<8}  {:<19}  {:>8}  {:>10}  {:>10}\n",
                &p.recovery_point[..8],
                ui::local_rfc3339(&p.time),
                p.files,
                HumanBytes(p.logical_bytes).to_string(),
                HumanBytes(p.unique_bytes).to_string()
            );
        }
        let ratio = s
            .dedup_ratio
            .map_or_else(|| "-".to_string(), |r| format!("{r:.2}"));
        out + &format!(
            "vault: {} recovery point(s), {} logical, {} stored in {} pack(s), dedup ratio {ratio}\n(unique: stored bytes no other recovery point references)",
            s.recovery_points,
            HumanBytes(s.logical_bytes),
            HumanBytes(s.stored_bytes),
            s.packs
        )
    })?;
    Ok(0)
}

/// What `vault machines` learnt of one machine with its keys.
struct Unlocked {
    how: &'static str,
    name: String,
    points: usize,
    last: Option<String>,
}

/// `vault machines`: the registered machines, from the vault's plain records; names and
/// recovery point times are sealed, so they are shown for the machines that open — this
/// host's own machine with its local key file, any other with `--passphrase-file`. Needs only
/// read access to the vault, as a recovery on a new machine has.
pub async fn vault_machines(ctx: &Ctx, url: &str, passphrase_file: Option<&Path>) -> Result<u8> {
    let url = canonical_url(url)?;
    let cfg = AgentConfig::load(&ctx.config_path)
        .ok()
        .flatten()
        .filter(|c| canonical_url(&c.vault).is_ok_and(|u| u == url));
    let vault = open_vault(&url, cfg.as_ref().and_then(|c| c.proxy.as_deref())).await?;
    let pass = crate::secret::optional(passphrase_file)?;
    let mut rows = Vec::new();
    for m in vault.machine_summaries().await? {
        let unlock = match (&cfg, &pass) {
            (Some(c), _) if c.machine_id == m.id => load_local_keys(&c.key_file)
                .ok()
                .map(|k| ("local key file", Unlock::Keys(k))),
            (_, Some(p)) => Some(("passphrase", Unlock::Passphrase(p))),
            _ => None,
        };
        let mut unlocked = None;
        if let Some((how, unlock)) = unlock {
            match Repository::open(&vault, &m.id, unlock, None).await {
                Ok(repo) => {
                    let points = repo.recovery_points().await?;
                    unlocked = Some(Unlocked {
                        how,
                        // Sealed by the machine, but shown on a terminal: no control characters.
                        name: repo
                            .machine_name()
                            .chars()
                            .filter(|c| !c.is_control())
                            .take(80)
                            .collect(),
                        points: points.len(),
                        last: points.last().map(|(_, rp)| rp.time.clone()),
                    });
                }
                Err(rbackup_engine::EngineError::WrongPassphrase { .. }) => {}
                Err(e) => ctx.notice(&format!("warning: machine {}: {e}", m.id)),
            }
        }
        rows.push((m, unlocked));
    }
    let list: Vec<_> = rows
        .iter()
        .map(|(m, u)| {
            json!({"id": m.id, "registered": m.registered.as_deref().map(ui::utc_rfc3339),
                   "recovery_point_objects": m.recovery_point_objects,
                   "unlocked_with": u.as_ref().map(|u| u.how), "name": u.as_ref().map(|u| &u.name),
                   "recovery_points": u.as_ref().map(|u| u.points),
                   "last_recovery_point": u.as_ref().and_then(|u| u.last.as_deref()).map(ui::utc_rfc3339)})
        })
        .collect();
    if rows.iter().any(|(_, u)| u.is_none()) {
        ctx.notice("note: a machine's name and its recovery points' times are sealed with its keys; they are shown for this host's own machine and for those --passphrase-file (or RBACKUP_PASSPHRASE_FILE/_COMMAND) opens (`?` otherwise: the count is then of the recovery point objects stored, soft-deleted ones included)");
    }
    ctx.output(&json!({"vault": url, "machines": list}), || {
        let mut out = format!(
            "{:<16}  {:<20}  {:<19}  {:>15}  last recovery point\n",
            "id", "name", "registered", "recovery points"
        );
        for (m, u) in &rows {
            let registered = m
                .registered
                .as_deref()
                .map_or("?".into(), ui::local_rfc3339);
            let (name, count, last) = match u {
                Some(u) => (
                    u.name.clone(),
                    u.points.to_string(),
                    u.last.as_deref().map_or("-".into(), ui::local_rfc3339),
                ),
                None => (
                    "?".into(),
                    format!("{} stored", m.recovery_point_objects),
                    "?".into(),
                ),
            };
            out += &format!(
                "{:<16}  {name:<20}  {registered:<19}  {count:>15}  {last}\n",
                m.id
            );
        }
        out + &format!("{} machine(s)", rows.len())
    })?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_as_ls_shows_them() {
        assert_eq!(mode_string(NodeKind::Dir, 0o40755), "drwxr-xr-x");
        assert_eq!(mode_string(NodeKind::File, 0o100640), "-rw-r-----");
        assert_eq!(mode_string(NodeKind::File, 0o100007), "-------rwx");
    }
}
