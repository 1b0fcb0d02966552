//! `rbackup`: the command-line agent. A thin shell over `rbackup-engine`: arguments, the agent
//! config, progress bars, output and exit codes.

mod advice;
mod freshness;
mod history;
mod interrupt;
mod jobrun;
mod jobs;
mod jobstate;
mod keys;
mod ops;
mod retention;
mod setup;
mod ui;

use std::path::PathBuf;

// The config parser lives in the library half of this package (see lib.rs), so the fuzz
// targets reach it too; `crate::config` and `crate::schedule` keep working through these.
use rbackup_agent::{config, schedule};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Exit status: finished, but some files were skipped or unreadable.
pub const EXIT_WARNINGS: u8 = 3;

#[derive(Parser, Debug)]
#[command(
    name = "rbackup",
    version,
    about = "Chunked, deduplicating, encrypted backup agent"
)]
pub struct Cli {
    /// Agent config file.
    #[arg(long, global = true, env = "RBACKUP_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print one JSON document on stdout; human text goes to stderr.
    #[arg(long, global = true)]
    pub json: bool,
    /// Quieter (no progress).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Louder (debug logging).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
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
    },
    /// Bring back a soft-deleted recovery point (removes its tombstone: needs credentials that
    /// can delete).
    Undelete {
        /// Its id (a unique prefix is enough).
        recovery_point: String,
    },
    /// Restore a recovery point.
    Restore(RestoreArgs),
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
    /// Job history: status, counts, bytes, duration, skipped files with reasons.
    Jobs {
        /// Show at most this many records, newest last.
        #[arg(long, default_value_t = 50)]
        last: usize,
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
        #[arg(long)]
        work_days: Option<String>,
        #[arg(long)]
        work_hours: Option<String>,
        #[arg(long)]
        work_rate: Option<String>,
        #[arg(long)]
        non_work_rate: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum VaultCmd {
    /// Create a vault and write its first credentials file.
    Create {
        /// file:///abs/path (or a plain path), s3://, az://, gs://, memory://
        url: String,
        #[arg(long)]
        credentials_out: PathBuf,
        /// How long the credentials stay valid, e.g. 48h, 30m, 2d.
        #[arg(long, default_value = "48h")]
        valid_for: String,
        /// Create the vault even in a folder or bucket that already holds other files.
        #[arg(long)]
        force: bool,
    },
    /// Issue new credentials; every older credentials file becomes invalid.
    Credentials {
        url: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "48h")]
        valid_for: String,
    },
    /// Issue a short-lived security PIN for critical operations, printed once; it replaces
    /// any PIN issued before.
    Pin {
        url: String,
        /// How long the PIN stays valid, e.g. 5m, 1h.
        #[arg(long, default_value = "5m")]
        valid_for: String,
    },
    /// Set the soft-delete window: how many days a forgotten recovery point stays restorable
    /// before a prune may reclaim it. Shortening it needs the security PIN.
    SetSoftDelete {
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
    #[arg(long)]
    pub vault_credentials: PathBuf,
    #[arg(long, conflicts_with_all = ["generate_passphrase", "save_passphrase_to"])]
    pub passphrase_file: Option<PathBuf>,
    #[arg(long, requires = "save_passphrase_to")]
    pub generate_passphrase: bool,
    #[arg(long, requires = "generate_passphrase")]
    pub save_passphrase_to: Option<PathBuf>,
    #[arg(long)]
    pub machine_name: Option<String>,
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    #[arg(long)]
    pub recovery_dir: Option<PathBuf>,
    #[arg(long)]
    pub proxy: Option<String>,
    #[arg(long)]
    pub work_days: Option<String>,
    #[arg(long)]
    pub work_hours: Option<String>,
    #[arg(long)]
    pub work_rate: Option<String>,
    #[arg(long)]
    pub non_work_rate: Option<String>,
    /// This machine's store credentials cannot delete or overwrite: never try (forget and
    /// prune are refused; retention runs from an admin host). On a local vault, also creates
    /// every folder the machine writes into and prints the `chattr +a` command for them.
    #[arg(long)]
    pub append_only: bool,
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
        #[arg(long)]
        new_passphrase_file: PathBuf,
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
        Command::RecoveryPoints { deleted: false } => ops::recovery_points(&ctx).await,
        Command::RecoveryPoints { deleted: true } => retention::deleted_points(&ctx).await,
        Command::Undelete { recovery_point } => retention::undelete(&ctx, &recovery_point).await,
        Command::Restore(args) => ops::restore(&ctx, args).await,
        Command::Check { read_data } => ops::check(&ctx, read_data).await,
        Command::Jobs { last } => history::list(&ctx, last),
        Command::Job(cmd) => jobs::job(&ctx, cmd),
        Command::Schedule(args) => jobs::schedule(&ctx, args),
        Command::Run(args) => jobrun::run(&ctx, args).await,
        Command::Forget(args) => retention::forget(&ctx, args).await,
        Command::Prune(args) => retention::prune(&ctx, args).await,
        Command::Throttle(cmd) => ops::throttle(&ctx, cmd),
    }
}
