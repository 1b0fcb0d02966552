//! `rbackup mount MOUNTPOINT`: this machine's recovery points (or another machine's, with
//! `--machine`) as a read-only FUSE file system, one folder per recovery point and `latest`,
//! until Ctrl-C, SIGTERM or an unmount from outside (`fusermount3 -u`, `umount`), after which
//! the command exits 0. The engine's [`rbackup_engine::Browser`] lists the trees and reads the
//! files; this module only answers the kernel (`fs.rs`) and numbers the entries (`inodes.rs`).

mod fs;
mod fusermount;
mod inodes;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use fuser::MountOption;
use rbackup_engine::{Id, RecoveryPoint};
use serde_json::json;

use crate::interrupt::FirstSignal;
use crate::keys::MachineArgs;
use crate::ui::Ctx;

#[derive(clap::Args, Debug)]
pub struct MountArgs {
    /// An existing folder to mount on (an empty one: what it holds is hidden while mounted).
    pub mountpoint: PathBuf,
    #[command(flatten)]
    pub other: MachineArgs,
}

/// Decrypted blobs kept for reads: sequential reads of a file need one blob at a time, and
/// this holds a few dozen of the chunker's usual 1 MiB blobs for reads that jump around.
const CACHE_BYTES: usize = 32 << 20;

/// fuser's worker threads: reads of several files (or of one file at several places, as the
/// kernel's read-ahead asks) wait for the vault in parallel.
const THREADS: usize = 4;

/// The folder name of a recovery point: its time in UTC to the second, `:` written `-` (a
/// name that is the same on every file system), and the start of its id.
fn folder_name(id: &Id, rp: &RecoveryPoint) -> (String, SystemTime) {
    let short = &id.to_hex()[..8];
    match rp.time.parse::<jiff::Timestamp>() {
        Ok(ts) => (
            format!("{}-{short}", ts.strftime("%Y-%m-%dT%H-%M-%SZ")),
            SystemTime::from(ts),
        ),
        Err(_) => (format!("unknown-time-{short}"), UNIX_EPOCH),
    }
}

/// The mount's points, oldest first, each with a distinct folder name (two points of the
/// same second whose ids start alike get their whole id).
fn points(listed: &[(Id, RecoveryPoint)]) -> Vec<fs::Point> {
    let mut out: Vec<fs::Point> = Vec::with_capacity(listed.len());
    for (id, rp) in listed {
        let (mut name, time) = folder_name(id, rp);
        if out.iter().any(|p| p.name == *name) {
            name = format!("{}-{}", &name[..name.len() - 9], id.to_hex());
        }
        out.push(fs::Point {
            name: OsString::from(name),
            time,
            tree: rp.tree,
        });
    }
    out
}

/// How the mount is undone after a signal.
enum Unmounter {
    /// Root's mount(2): umount(2) as the kernel allows it, or lazily (detached now, gone once
    /// the last file open in it is closed) when something in it is busy.
    Root(fuser::SessionUnmounter),
    /// A user's, through `fusermount3 -u` (lazily too).
    User,
}

/// The mount options, as `fusermount3 -o` takes them; root's mount(2) gets the same ones
/// from fuser.
const USER_OPTIONS: &str =
    "ro,nosuid,nodev,noatime,default_permissions,fsname=rbackup,subtype=rbackup";

async fn unmount(unmounter: Unmounter, mountpoint: &Path) -> Result<()> {
    let at = mountpoint.to_path_buf();
    let mut unmounter = match unmounter {
        Unmounter::Root(u) => u,
        Unmounter::User => {
            return tokio::task::spawn_blocking(move || fusermount::unmount(&at)).await?;
        }
    };
    let result = tokio::task::spawn_blocking(move || unmounter.unmount()).await?;
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            tracing::warn!(
                "{} is busy: detaching it; the command ends once nothing uses it",
                mountpoint.display()
            );
            rustix::mount::unmount(mountpoint, rustix::mount::UnmountFlags::DETACH)
                .with_context(|| format!("cannot unmount {}", mountpoint.display()))
        }
        Err(e) => Err(e).with_context(|| format!("cannot unmount {}", mountpoint.display())),
    }
}

/// Mounts `fs` on `mountpoint`: with mount(2) as root, through `fusermount3` as a user.
async fn start(
    fs: fs::Fs,
    mountpoint: &Path,
    config: fuser::Config,
) -> Result<(fuser::Session<fs::Fs>, Unmounter)> {
    let at = mountpoint.to_path_buf();
    if rustix::process::geteuid().is_root() {
        let mut session =
            tokio::task::spawn_blocking(move || fuser::Session::new(fs, &at, &config))
                .await?
                .with_context(|| format!("cannot mount on {}", mountpoint.display()))?;
        let unmounter = session.unmount_callable();
        return Ok((session, Unmounter::Root(unmounter)));
    }
    let fd = tokio::task::spawn_blocking(move || fusermount::mount(&at, USER_OPTIONS))
        .await?
        .with_context(|| format!("cannot mount on {}", mountpoint.display()))?;
    let acl = fuser::SessionACL::Owner;
    match tokio::task::spawn_blocking(move || fuser::Session::from_fd(fs, fd, acl, config)).await? {
        Ok(session) => Ok((session, Unmounter::User)),
        Err(e) => {
            let _ = fusermount::unmount(mountpoint);
            Err(e).context("the kernel's FUSE handshake failed")
        }
    }
}

pub async fn mount(ctx: &Ctx, args: MountArgs) -> Result<u8> {
    let stop = FirstSignal::install().context("cannot handle Ctrl-C")?;
    if !Path::new("/dev/fuse").exists() {
        bail!(
            "/dev/fuse is missing: the kernel's FUSE module is not loaded (`modprobe fuse`), or this container was started without the device"
        );
    }
    let mountpoint = std::path::absolute(&args.mountpoint)
        .with_context(|| format!("bad mount point {}", args.mountpoint.display()))?;
    if !mountpoint.is_dir() {
        bail!(
            "{} is not a folder: mount needs an existing folder to mount on",
            mountpoint.display()
        );
    }
    let repo = crate::browse::open(ctx, &args.other).await?;
    let listed = repo.recovery_points().await?;
    let points = points(&listed);
    let count = points.len();
    let browser = repo.browser(CACHE_BYTES).await?;
    let fs = fs::Fs::new(browser, tokio::runtime::Handle::current(), points);
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName("rbackup".into()),
        MountOption::Subtype("rbackup".into()),
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::NoAtime,
        // The kernel checks the recorded modes and owners, as on the backed-up system.
        MountOption::DefaultPermissions,
    ];
    config.n_threads = Some(THREADS);
    let (session, unmounter) = start(fs, &mountpoint, config).await?;
    let mut run = tokio::task::spawn_blocking(move || session.run());
    if !ctx.quiet {
        ctx.notice(&format!(
            "{count} recovery point(s) mounted read-only at {}; Ctrl-C or `fusermount3 -u {}` unmounts",
            mountpoint.display(),
            mountpoint.display()
        ));
    }
    let outside = tokio::select! {
        r = &mut run => Some(r),
        () = stop.recv("quit at once; if the folder is still mounted, `fusermount3 -u` it") => None,
    };
    let by = match outside {
        Some(r) => {
            r?.context("the FUSE session failed")?;
            "outside"
        }
        None => {
            unmount(unmounter, &mountpoint).await?;
            run.await?.context("the FUSE session failed")?;
            "signal"
        }
    };
    let value = json!({"mountpoint": mountpoint.to_string_lossy(), "recovery_points": count,
                       "unmounted_by": by});
    ctx.output(&value, || format!("unmounted {}", mountpoint.display()))?;
    Ok(0)
}
