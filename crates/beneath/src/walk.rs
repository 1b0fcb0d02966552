//! Resolving a relative path to a directory fd, strictly beneath a base fd.
//!
//! Two ways, one contract. `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS` does the whole path in one call and the kernel guarantees the result
//! is beneath the base and that no symlink was crossed. Where the kernel lacks it (`ENOSYS`,
//! before Linux 5.6, or a seccomp filter that hides it), or where it failed and the caller
//! needs to know which component stood in the way, the same path is walked one name at a time
//! with `openat(O_DIRECTORY | O_NOFOLLOW)` from the fd of the previous step. Each step is a
//! single validated name (never `..`, never containing `/`) opened relative to a directory
//! already held, so it can neither climb out nor cross a symlink: a rename racing the walk
//! can only make a step fail, not redirect it.

use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::meta::{FileKind, STATX_MASK};
use crate::name::{Name, join};

/// How a [`Dir`](crate::Dir) resolves multi-component paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Resolve {
    /// `openat2` where the kernel has it, the component walk where it does not.
    Auto,
    /// `openat2` only; a kernel without it makes every multi-component lookup fail with
    /// `ENOSYS`. For tests that must know the kernel path ran.
    Openat2,
    /// The component-by-component walk only, as on a kernel without `openat2`.
    Walk,
}

/// Set once an `openat2` call returned `ENOSYS`, so `Auto` stops trying it.
static OPENAT2_MISSING: AtomicBool = AtomicBool::new(false);

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// What stopped a resolution, at which component (an index into the names).
#[derive(Debug)]
pub(crate) struct Failed {
    pub index: usize,
    pub step: Step,
}

#[derive(Debug)]
pub(crate) enum Step {
    Missing,
    Symlink,
    NotDir(FileKind),
    Io(&'static str, Errno),
}

/// Opens the directory at `names` beneath `base`; with `create`, makes missing components
/// (mode `create`, less the umask) on the way.
pub(crate) fn open_dir(
    base: BorrowedFd<'_>,
    names: &[Name],
    resolve: Resolve,
    create: Option<Mode>,
) -> Result<OwnedFd, Failed> {
    if names.is_empty() {
        return rustix::fs::openat(base, ".", DIR_FLAGS, Mode::empty()).map_err(|e| Failed {
            index: 0,
            step: Step::Io("open", e),
        });
    }
    let try_openat2 = match resolve {
        Resolve::Auto => !OPENAT2_MISSING.load(Ordering::Relaxed),
        Resolve::Openat2 => true,
        Resolve::Walk => false,
    };
    if try_openat2 {
        let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        match rustix::fs::openat2(base, join(names), DIR_FLAGS, Mode::empty(), how) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOSYS) if resolve == Resolve::Openat2 => {
                return Err(Failed {
                    index: 0,
                    step: Step::Io("openat2", Errno::NOSYS),
                });
            }
            Err(Errno::NOSYS) => OPENAT2_MISSING.store(true, Ordering::Relaxed),
            // Only the last component missing, the common case when a tree is made parents
            // first: resolve the parent the same strict way and make just that one, instead
            // of walking the whole path a component at a time.
            Err(Errno::NOENT) if create.is_some() && names.len() > 1 => {
                let (last, dirs) = names.split_last().expect("more than one name");
                if let Ok(parent) =
                    rustix::fs::openat2(base, join(dirs), DIR_FLAGS, Mode::empty(), how)
                {
                    return step(parent.as_fd(), last, create).map_err(|step| Failed {
                        index: names.len() - 1,
                        step,
                    });
                }
            }
            // Anything else (ELOOP for a symlink anywhere, ENOTDIR, ENOENT, EAGAIN for a
            // racing rename, EXDEV) falls through to the walk, which is as strict and says
            // which component is in the way, or makes the missing ones when asked to.
            Err(_) => {}
        }
    }
    walk(base, names, create)
}

fn walk(base: BorrowedFd<'_>, names: &[Name], create: Option<Mode>) -> Result<OwnedFd, Failed> {
    let mut cur: Option<OwnedFd> = None;
    for (index, name) in names.iter().enumerate() {
        let parent = cur.as_ref().map_or(base, |fd| fd.as_fd());
        let next = step(parent, name, create).map_err(|step| Failed { index, step })?;
        cur = Some(next);
    }
    // `names` is not empty (checked by the caller), so the loop ran at least once.
    cur.ok_or(Failed {
        index: 0,
        step: Step::Io("open", Errno::INVAL),
    })
}

/// How often one component is retried when what is found at it changes between calls (a
/// racing rename); after that the last finding is reported.
const RETRIES: usize = 4;

/// Opens the directory `name` in `parent`, never following it.
fn step(parent: BorrowedFd<'_>, name: &Name, create: Option<Mode>) -> Result<OwnedFd, Step> {
    let mut last = Step::Missing;
    for _ in 0..RETRIES {
        last = match rustix::fs::openat(parent, name.as_os_str(), DIR_FLAGS, Mode::empty()) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) => match create {
                None => return Err(Step::Missing),
                Some(mode) => match rustix::fs::mkdirat(parent, name.as_os_str(), mode) {
                    // EEXIST: made by someone else meanwhile; the next open decides.
                    Ok(()) | Err(Errno::EXIST) => Step::Missing,
                    Err(e) => return Err(Step::Io("create directory", e)),
                },
            },
            // O_NOFOLLOW on a symlink gives ELOOP; O_DIRECTORY on anything else ENOTDIR.
            Err(Errno::LOOP | Errno::NOTDIR) => match kind_of(parent, name) {
                Ok(FileKind::Symlink) => return Err(Step::Symlink),
                // A directory again, or gone: it changed since the open; look once more.
                Ok(FileKind::Dir) => Step::NotDir(FileKind::Dir),
                Err(Errno::NOENT) => Step::Missing,
                Ok(kind) => return Err(Step::NotDir(kind)),
                Err(e) => return Err(Step::Io("stat", e)),
            },
            Err(e) => return Err(Step::Io("open", e)),
        };
    }
    Err(last)
}

/// What `name` in `parent` is, without following it.
pub(crate) fn kind_of(parent: BorrowedFd<'_>, name: &Name) -> Result<FileKind, Errno> {
    let s = rustix::fs::statx(
        parent,
        name.as_os_str(),
        AtFlags::SYMLINK_NOFOLLOW,
        STATX_MASK,
    )?;
    Ok(FileKind::from_mode(u32::from(s.stx_mode)))
}
