//! `rbackup`: the command-line agent. A thin shell over `rbackup-engine`: arguments, the agent
//! config, progress bars, output and exit codes.

mod advice;
mod browse;
mod copy;
mod freshness;
mod history;
mod interrupt;
mod jobrun;
mod jobs;
mod jobstate;
mod keys;
mod mount;
mod ops;
mod remembered;
mod retention;
mod secret;
mod setup;
mod status;
mod tier;
mod ui;
mod usage;

use std::path::PathBuf;

// The config parser lives in the library half of this package (see lib.rs), so the fuzz
// targets reach it too; `crate::config` and `crate::schedule` keep working through these.
use rbackup_agent::{config, schedule};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Where `--help` lists the options every command takes.
const GLOBAL: &str = "Global options";

/// Exit status: a usage error (as clap's own).
pub const EXIT_USAGE: u8 = 2;

/// Exit status: finished, but files that should have been backed up were not (unreadable,
/// vanished, changed while read), or with warnings. Files left out by a file-type rule are not.
pub const EXIT_WARNINGS: u8 = 3;

#[derive(Parser, Debug)]
#[command(
    name = "rbackup",
    version,
    about = "Chunked, deduplicating, encrypted backup agent"
)]
pub struct Cli {
    /// Agent config file (default: $XDG_CONFIG_HOME/rbackup/config.toml).
    #[arg(long, global = true, value_name = "FILE", env = "RBACKUP_CONFIG", hide_env_values = true, help_heading = GLOBAL)]
    pub config: Option<PathBuf>,
    /// Print one JSON document on stdout; human text goes to stderr.
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,
    /// Quieter (no progress).
    #[arg(short, long, global = true, help_heading = GLOBAL)]
    pub quiet: bool,
    /// Louder (-v info, -vv debug logging).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = GLOBAL)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a vault or issue its credentials.
    #[command(subcommand)]
    Vault(VaultCmd),
    /// Register this machine with a vault.
    Register(RegisterArgs),
    /// Back up files and folders now.
    Backup(BackupArgs),
    /// List recovery points, oldest first (with --deleted: the soft-deleted ones).
    RecoveryPoints {
        /// List the soft-deleted recovery points instead, with the days left before a prune
        /// may reclaim them.
        #[arg(long)]
        deleted: bool,
        /// Only the recovery points that hold this absolute path (one of their sources, or
        /// beneath one); repeatable: all of them.
        #[arg(long, value_name = "PATH", conflicts_with = "deleted")]
        path: Vec<PathBuf>,
    },
    /// List the files and folders of a recovery point.
    Ls(browse::LsArgs),
    /// Search recovery points for files by name or path.
    Find(browse::FindArgs),
    /// Write one backed-up file's bytes to standard output.
    Dump(browse::DumpArgs),
    /// Show what changed between two recovery points.
    Diff(browse::DiffArgs),
    /// Sizes of recovery points: logical, what each alone stores, and the dedup ratio.
    Stats(browse::StatsArgs),
    /// Show the recovery points as a read-only folder (FUSE) until Ctrl-C or unmount.
    Mount(mount::MountArgs),
    /// Bring back a soft-deleted recovery point (removes its tombstone: needs credentials that
    /// can delete).
    Undelete {
        /// Its id (a unique prefix is enough).
        recovery_point: String,
    },
    /// Restore a recovery point.
    Restore(RestoreArgs),
    /// Copy recovery points to another vault: from the local tier to the machine's vault, or
    /// with --to to any vault (deduplicated, throttled, resumable).
    Copy(copy::CopyArgs),
    /// The vault's state, the last backup and copy, and whether the vault can be reached.
    Status,
    /// Verify the repository (and with --read-data, every byte of it).
    Check {
        /// Decrypt and verify every blob.
        #[arg(long)]
        read_data: bool,
    },
    /// Generate or change the encryption passphrase.
    #[command(subcommand)]
    Passphrase(PassphraseCmd),
    /// Export a recovery key file, or repair the key files in the vault.
    #[command(subcommand)]
    Key(keys::KeyCmd),
    /// Job history: id, status, counts, bytes, duration, and skipped files counted per reason.
    Jobs {
        /// Show at most this many records, newest last.
        #[arg(long, default_value_t = 50)]
        last: usize,
        /// List every file the job with this id (a unique prefix is enough) skipped or could
        /// not back up or restore, with its reason.
        #[arg(long, value_name = "JOB-ID")]
        skipped: Option<String>,
    },
    /// Edit the scheduled jobs in the agent config.
    #[command(subcommand)]
    Job(jobs::JobCmd),
    /// Print systemd units or a crontab line that call `rbackup run --due`.
    Schedule(jobs::ScheduleArgs),
    /// Run configured jobs (what a timer calls).
    Run(jobrun::RunArgs),
    /// Apply a retention policy: remove recovery points it does not keep.
    Forget(retention::ForgetArgs),
    /// Remove data that no recovery point needs.
    Prune(retention::PruneArgs),
    /// Show or change upload throttling.
    #[command(subcommand)]
    Throttle(ThrottleCmd),
}

#[derive(Subcommand, Debug)]
pub enum ThrottleCmd {
    /// Print the throttle settings and the rate in force now.
    Show,
    /// Change throttle settings (the others stay as they are).
    Set {
        /// Work days: mon-fri, daily, weekends, sun,wed, ...
        #[arg(long, value_name = "DAYS", value_parser = usage::days)]
        work_days: Option<String>,
        /// Work hours in local time, HH:MM-HH:MM.
        #[arg(long, value_name = "HH:MM-HH:MM", value_parser = usage::hours)]
        work_hours: Option<String>,
        /// Upload rate in work hours: 512KiB, 4MiB, 1GiB (per second) or unlimited.
        #[arg(long, value_name = "RATE", value_parser = usage::rate)]
        work_rate: Option<String>,
        /// Upload rate outside work hours.
        #[arg(long, value_name = "RATE", value_parser = usage::rate)]
        non_work_rate: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum VaultCmd {
    /// Create a vault and write its first credentials file.
    Create {
        /// file:///abs/path (or a plain path), s3://, az://, gs://, memory://
        url: String,
        /// Where to write the first credentials file (mode 0600).
        #[arg(long, value_name = "FILE")]
        credentials_out: PathBuf,
        /// How long the credentials stay valid, e.g. 48h, 30m, 2d.
        #[arg(long, value_name = "DURATION", default_value = "48h", value_parser = usage::duration)]
        valid_for: String,
        /// Create the vault even in a folder or bucket that already holds other files.
        #[arg(long)]
        force: bool,
        /// The vault's name: 2 to 50 characters, starting with a letter, letters, numbers and
        /// hyphens only.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
    },
    /// Set the vault read-only (backups and copies into it are refused, restores go on) or
    /// active again.
    SetState {
        /// The vault's URL.
        url: String,
        /// read-only or active.
        #[arg(value_name = "read-only|active")]
        state: rbackup_engine::VaultState,
    },
    /// Issue new credentials; every older credentials file becomes invalid.
    Credentials {
        /// The vault's URL.
        url: String,
        /// Where to write the new credentials file (mode 0600).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// How long the credentials stay valid, e.g. 48h, 30m, 2d.
        #[arg(long, value_name = "DURATION", default_value = "48h", value_parser = usage::duration)]
        valid_for: String,
    },
    /// Issue a short-lived security PIN for critical operations, printed once; it replaces
    /// any PIN issued before.
    Pin {
        /// The vault's URL.
        url: String,
        /// How long the PIN stays valid, e.g. 5m, 1h.
        #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = usage::duration)]
        valid_for: String,
    },
    /// List the machines registered in the vault: id, registration time and recovery point
    /// count; with a passphrase (or on a registered machine, for itself) also the name and the
    /// last recovery point's time.
    Machines {
        /// The vault's URL.
        url: String,
        /// Unlock every machine this passphrase opens, to show its name and recovery points
        /// (or RBACKUP_PASSPHRASE_FILE/_COMMAND; never asked for).
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// Set the soft-delete window: how many days a forgotten recovery point stays restorable
    /// before a prune may reclaim it. Shortening it needs the security PIN.
    SetSoftDelete {
        /// The vault's URL.
        url: String,
        /// Days (0 to 3650).
        #[arg(long, value_parser = clap::value_parser!(u32).range(0..=3650))]
        days: u32,
        #[command(flatten)]
        pin: setup::PinArgs,
    },
}

#[derive(Args, Debug)]
pub struct RegisterArgs {
    /// The vault credentials file from `rbackup vault create` or `vault credentials`.
    #[arg(long, value_name = "FILE")]
    pub vault_credentials: PathBuf,
    /// File holding the passphrase (default: RBACKUP_PASSPHRASE_FILE/_COMMAND, or asked twice
    /// on the terminal).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["generate_passphrase", "save_passphrase_to"])]
    pub passphrase_file: Option<PathBuf>,
    /// Generate a random passphrase (saved with --save-passphrase-to).
    #[arg(long, requires = "save_passphrase_to")]
    pub generate_passphrase: bool,
    /// Where to save the generated passphrase (mode 0600; never overwritten).
    #[arg(long, value_name = "FILE", requires = "generate_passphrase")]
    pub save_passphrase_to: Option<PathBuf>,
    /// This machine's name in the vault (default: the host name).
    #[arg(long, value_name = "NAME")]
    pub machine_name: Option<String>,
    /// Cache folder for staged packs and index copies (default: $XDG_CACHE_HOME/rbackup).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Recovery folder where restores stage data (default: CACHE/recovery).
    #[arg(long, value_name = "DIR")]
    pub recovery_dir: Option<PathBuf>,
    /// HTTP(S) proxy for cloud vaults, e.g. http://proxy:3128.
    #[arg(long, value_name = "URL")]
    pub proxy: Option<String>,
    /// Work days for throttling: mon-fri (default), daily, weekends, sun,wed, ...
    #[arg(long, value_name = "DAYS", value_parser = usage::days)]
    pub work_days: Option<String>,
    /// Work hours in local time (default 09:00-18:00).
    #[arg(long, value_name = "HH:MM-HH:MM", value_parser = usage::hours)]
    pub work_hours: Option<String>,
    /// Upload rate in work hours: 512KiB, 4MiB, 1GiB (per second) or unlimited (default).
    #[arg(long, value_name = "RATE", value_parser = usage::rate)]
    pub work_rate: Option<String>,
    /// Upload rate outside work hours (default unlimited).
    #[arg(long, value_name = "RATE", value_parser = usage::rate)]
    pub non_work_rate: Option<String>,
    /// The machine's store credentials cannot delete or overwrite: never try.
    ///
    /// Forget and prune are refused; retention runs from an admin host. On a local vault, also
    /// creates every folder the machine writes into and prints the `chattr +a` command for them.
    #[arg(long)]
    pub append_only: bool,
    /// A local tier: a new vault in this (new or empty) folder takes each backup first, at
    /// disk speed; recovery points are then copied to the vault.
    #[arg(long, value_name = "DIR")]
    pub local_tier: Option<PathBuf>,
    /// Days a recovery point stays on the local tier once the vault has it (the newest always
    /// stays).
    #[arg(long, value_name = "N", requires = "local_tier", default_value_t = tier::DEFAULT_LOCAL_DAYS, value_parser = clap::value_parser!(u32).range(0..=3650))]
    pub local_days: u32,
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Files and folders to back up.
    pub paths: Vec<PathBuf>,
    /// Record the recovery point under this job name.
    #[arg(long)]
    pub job: Option<String>,
    /// Leave out matching files: a pattern with '/' matches the absolute path, one without
    /// matches names.
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Symlinks and hard links: `skip` them (the MARS rule) or `store` them as links (default:
    /// the config's `links`, itself `skip` unless set).
    #[arg(long, value_name = "skip|store", value_parser = config::parse_links)]
    pub links: Option<rbackup_engine::LinkMode>,
    /// Packs uploaded at once (default: 2 for a local vault, 8 for a cloud one).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=64))]
    pub uploads: Option<u64>,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// A recovery point id (a unique prefix is enough) or `latest`.
    pub recovery_point: String,
    /// Absolute paths to restore (default: everything).
    pub paths: Vec<PathBuf>,
    /// Each path is recreated under this dir at its absolute path.
    #[arg(long)]
    pub target: PathBuf,
    /// Staging folder for this restore (default: the configured one).
    #[arg(long)]
    pub recovery_dir: Option<PathBuf>,
    /// What to do with a file already in the target: replace it (always), replace it unless
    /// it holds the backed-up content (if-changed), or leave it (never).
    #[arg(long, value_enum, default_value_t = OverwriteArg::Always)]
    pub overwrite: OverwriteArg,
    /// Remove files and folders beneath the restored paths that the recovery point lacks.
    #[arg(long)]
    pub delete: bool,
    /// Show what would be written, overwritten, kept and deleted; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Reads of the vault in flight at once (default: 2 for a local vault, 8 for a cloud one).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=64))]
    pub downloads: Option<u64>,
    #[command(flatten)]
    pub other: keys::MachineArgs,
}

/// `restore --overwrite` (restic's names).
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum OverwriteArg {
    Always,
    IfChanged,
    Never,
}

impl From<OverwriteArg> for rbackup_engine::Overwrite {
    fn from(a: OverwriteArg) -> Self {
        match a {
            OverwriteArg::Always => rbackup_engine::Overwrite::Always,
            OverwriteArg::IfChanged => rbackup_engine::Overwrite::IfChanged,
            OverwriteArg::Never => rbackup_engine::Overwrite::Never,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum PassphraseCmd {
    /// Print a new random passphrase.
    Generate,
    /// Replace the passphrase; no data is re-encrypted.
    Change {
        /// File holding the new passphrase (default: asked twice on the terminal).
        #[arg(long, value_name = "FILE")]
        new_passphrase_file: Option<PathBuf>,
    },
}

/// glibc's allocator keeps one arena per thread and raises its mmap threshold after every large
/// free, so the 1-8 MiB buffers that chunks and restore reads pass through stay resident long
/// after use. Two arenas and a fixed 1 MiB threshold return them to the system: peak memory is
/// a product target (below borg's), and the cost is a few page faults per large buffer.
#[allow(unsafe_code)]
fn tune_allocator() {
    // SAFETY: mallopt only adjusts allocator parameters; it is called before any other thread
    // exists, and an unsupported parameter is ignored (returns 0).
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    ui::init_logging(cli.verbose, cli.quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rbackup: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) if usage::is_usage(&e) => {
            eprintln!(
                "rbackup: error: {}\n\nFor more information, try '--help'.",
                advice::render(&e)
            );
            ExitCode::from(EXIT_USAGE)
        }
        Err(e) => {
            eprintln!("rbackup: error: {}", advice::render(&e));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    let ctx = ui::Ctx::new(&cli)?;
    match cli.command {
        Command::Vault(cmd) => setup::vault(&ctx, cmd).await,
        Command::Register(args) => setup::register(&ctx, args).await,
        Command::Passphrase(cmd) => setup::passphrase(&ctx, cmd).await,
        Command::Key(cmd) => keys::key(&ctx, cmd).await,
        Command::Backup(args) => ops::backup(&ctx, args).await,
        Command::RecoveryPoints {
            deleted: false,
            path,
        } => ops::recovery_points(&ctx, &path).await,
        Command::RecoveryPoints { deleted: true, .. } => retention::deleted_points(&ctx).await,
        Command::Ls(args) => browse::ls(&ctx, args).await,
        Command::Find(args) => browse::find(&ctx, args).await,
        Command::Dump(args) => browse::dump(&ctx, args).await,
        Command::Diff(args) => browse::diff(&ctx, args).await,
        Command::Stats(args) => browse::stats(&ctx, args).await,
        Command::Mount(args) => mount::mount(&ctx, args).await,
        Command::Undelete { recovery_point } => retention::undelete(&ctx, &recovery_point).await,
        Command::Restore(args) => ops::restore(&ctx, args).await,
        Command::Copy(args) => copy::copy(&ctx, args).await,
        Command::Status => status::status(&ctx).await,
        Command::Check { read_data } => ops::check(&ctx, read_data).await,
        Command::Jobs {
            last,
            skipped: None,
        } => history::list(&ctx, last),
        Command::Jobs {
            skipped: Some(id), ..
        } => history::list_skipped(&ctx, &id),
        Command::Job(cmd) => jobs::job(&ctx, cmd),
        Command::Schedule(args) => jobs::schedule(&ctx, args),
        Command::Run(args) => jobrun::run(&ctx, args).await,
        Command::Forget(args) => retention::forget(&ctx, args).await,
        Command::Prune(args) => retention::prune(&ctx, args).await,
        Command::Throttle(cmd) => ops::throttle(&ctx, cmd),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every argument of every command, with the command path that reaches it.
    fn all_args(cmd: &clap::Command, path: String, out: &mut Vec<(String, clap::Arg)>) {
        for a in cmd.get_arguments() {
            out.push((path.clone(), a.clone()));
        }
        for sub in cmd.get_subcommands() {
            all_args(sub, format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_option_and_argument_has_a_one_line_description() {
        let mut args = Vec::new();
        all_args(&Cli::command(), "rbackup".into(), &mut args);
        assert!(args.len() > 60, "{} arguments", args.len());
        let missing: Vec<String> = args
            .iter()
            .filter(|(_, a)| !matches!(a.get_id().as_str(), "help" | "version"))
            .filter(|(_, a)| a.get_help().is_none_or(|h| h.to_string().trim().is_empty()))
            .map(|(path, a)| format!("{path} {}", a.get_id()))
            .collect();
        assert!(missing.is_empty(), "no description: {missing:#?}");
    }

    #[test]
    fn global_options_are_listed_apart() {
        let help = Cli::command().render_help().to_string();
        let global = help.find("Global options:").expect(&help);
        for opt in ["--config", "--json", "--quiet", "--verbose"] {
            assert!(
                help[global..].contains(opt),
                "{opt} not under Global options:\n{help}"
            );
        }
    }
}
