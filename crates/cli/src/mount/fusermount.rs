//! Mounting as a user: only root may call mount(2) for FUSE, and `/dev/fuse` may be closed to
//! users (mode 0600), so a user's mount goes through the setuid `fusermount3` of the fuse3
//! package, as libfuse does it: it opens `/dev/fuse`, mounts it on the folder and hands the
//! open device back over a socket (`_FUSE_COMMFD`); `fusermount3 -u` unmounts.

use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, anyhow, bail};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SocketFlags, SocketType,
};

const FUSERMOUNT: &str = "fusermount3";

/// Mounts `/dev/fuse` on `mountpoint` with `options` (`-o` syntax); the open device.
pub fn mount(mountpoint: &Path, options: &str) -> Result<OwnedFd> {
    let (ours, theirs) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .context("cannot make a socket for fusermount3")?;
    // fusermount3 gets its end across exec.
    rustix::io::fcntl_setfd(&theirs, rustix::io::FdFlags::empty())?;
    let child = Command::new(FUSERMOUNT)
        .env("_FUSE_COMMFD", theirs.as_raw_fd().to_string())
        .arg("-o")
        .arg(options)
        .arg("--")
        .arg(mountpoint)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    drop(theirs);
    let child = child.with_context(|| {
        format!("cannot run {FUSERMOUNT} (as a user, mounting needs it: install the fuse3 package)")
    })?;
    // It exits once it has sent the device; the message waits in the socket.
    let out = child.wait_with_output()?;
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let received = rustix::net::recvmsg(
        &ours,
        &mut [IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::DONTWAIT,
    );
    let fd = received.ok().and_then(|_| {
        control.drain().find_map(|m| match m {
            RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
            _ => None,
        })
    });
    match fd {
        Some(fd) if out.status.success() => Ok(fd),
        _ => {
            let why = String::from_utf8_lossy(&out.stderr);
            let why = why.trim();
            if why.is_empty() {
                bail!("{FUSERMOUNT} failed ({})", out.status);
            }
            Err(anyhow!("{FUSERMOUNT}: {why}"))
        }
    }
}

/// Unmounts `mountpoint` lazily (detached now, gone once nothing in it is open any more).
pub fn unmount(mountpoint: &Path) -> Result<()> {
    let out = Command::new(FUSERMOUNT)
        .args(["-u", "-z", "--"])
        .arg(mountpoint)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {FUSERMOUNT} -u"))?;
    if !out.status.success() {
        bail!(
            "{FUSERMOUNT} -u: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
