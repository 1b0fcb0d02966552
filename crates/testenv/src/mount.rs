//! Commands and mounts for the tests that need a real file system: an image file formatted
//! with `mkfs` and loop-mounted at a folder (ext4 with encryption or `chattr` flags, btrfs
//! with compression), or a tmpfs, unmounted when the guard drops.
//!
//! Mounting needs root and, for images, loop devices; these functions do not gate. Callers
//! check [`need_root`](crate::need_root) and [`need_command`](crate::need_command) (for the
//! `mkfs` program and any tool the test uses) first, then pass the `Err` of a mount that the
//! kernel refused to [`require!`](crate::require), so that such a test skips — or fails under
//! `RBACKUP_REQUIRE_ALL=1` — instead of passing without having run.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `cmd` with `args`; `Err` names the command, its arguments and its trimmed stderr (what
/// a skip record or a failed test shows), or says why it could not start.
pub fn sh(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A file system mounted at a folder, lazily unmounted (`umount -l`) on drop, so that a test
/// that fails while it still has files open there does not leave the mount behind.
///
/// Needs root, and loop devices for [`LoopMount::new`]; see the [module docs](self) for how
/// callers gate.
#[derive(Debug)]
#[must_use = "the file system is unmounted when the guard drops"]
pub struct LoopMount {
    at: PathBuf,
}

impl LoopMount {
    /// Creates `image` as a sparse file of `size` (as `truncate -s` reads it: `64M`), formats
    /// it with `mkfs[0] mkfs[1..] image` (`["mkfs.ext4", "-q", "-O", "encrypt"]`) and mounts it
    /// at `at` (created if missing) with `-o loop`.
    pub fn new(image: &Path, size: &str, mkfs: &[&str], at: &Path) -> Result<Self, String> {
        Self::with_options(image, size, mkfs, at, "")
    }

    /// [`new`](Self::new), with `options` (comma-separated, as `mount -o` takes them) added
    /// after `loop`; empty for none.
    pub fn with_options(
        image: &Path,
        size: &str,
        mkfs: &[&str],
        at: &Path,
        options: &str,
    ) -> Result<Self, String> {
        Self::mount(image, size, mkfs, at, options, None)
    }

    /// [`new`](Self::new) for a file system mount(8) does not detect by itself, such as a FUSE
    /// one: mounted with `-t fstype` (`exfat-fuse` runs `mount.exfat-fuse`).
    pub fn of_type(
        image: &Path,
        size: &str,
        mkfs: &[&str],
        at: &Path,
        fstype: &str,
    ) -> Result<Self, String> {
        Self::mount(image, size, mkfs, at, "", Some(fstype))
    }

    fn mount(
        image: &Path,
        size: &str,
        mkfs: &[&str],
        at: &Path,
        options: &str,
        fstype: Option<&str>,
    ) -> Result<Self, String> {
        let (program, mkfs_args) = mkfs.split_first().ok_or("no mkfs program given")?;
        let img = utf8(image)?;
        let dir = prepare(at)?;
        sh("truncate", &["-s", size, img])?;
        let mut args = mkfs_args.to_vec();
        args.push(img);
        sh(program, &args)?;
        let options = if options.is_empty() {
            "loop".to_string()
        } else {
            format!("loop,{options}")
        };
        let mut args = vec!["-o", &options, img, dir];
        if let Some(t) = fstype {
            args.splice(0..0, ["-t", t]);
        }
        sh("mount", &args)?;
        Ok(Self { at: at.into() })
    }

    /// A tmpfs of `size` (`4m`) mounted at `at` (created if missing). No loop device, but the
    /// same guard: unmounted on drop.
    pub fn tmpfs(at: &Path, size: &str) -> Result<Self, String> {
        let dir = prepare(at)?;
        sh(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", dir],
        )?;
        Ok(Self { at: at.into() })
    }

    /// Where the file system is mounted.
    pub fn at(&self) -> &Path {
        &self.at
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}

/// Creates the mount point `at` if missing; its path as the commands take it.
fn prepare(at: &Path) -> Result<&str, String> {
    std::fs::create_dir_all(at).map_err(|e| format!("create {}: {e}", at.display()))?;
    utf8(at)
}

fn utf8(path: &Path) -> Result<&str, String> {
    path.to_str()
        .ok_or_else(|| format!("{} is not UTF-8", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sh_reports_the_command_and_its_stderr() {
        assert_eq!(sh("true", &[]), Ok(()));
        let err = sh("sh", &["-c", "echo refused >&2; exit 3"]).unwrap_err();
        assert_eq!(err, r#"sh ["-c", "echo refused >&2; exit 3"]: refused"#);
        let err = sh("no-such-command-rbackup-testenv", &[]).unwrap_err();
        assert!(
            err.starts_with("no-such-command-rbackup-testenv: "),
            "{err}"
        );
    }

    #[test]
    fn a_mount_without_mkfs_is_refused_before_anything_runs() {
        let at = std::env::temp_dir().join("rbackup-testenv-no-mkfs");
        let err = LoopMount::new(&at.join("fs.img"), "1M", &[], &at).unwrap_err();
        assert_eq!(err, "no mkfs program given");
        assert!(!at.exists(), "nothing was created");
    }

    #[test]
    fn a_tmpfs_is_mounted_until_the_guard_drops() {
        use std::os::unix::fs::MetadataExt;
        const T: &str = "mount::tests::a_tmpfs_is_mounted_until_the_guard_drops";
        if !crate::need_root(T, "to mount a tmpfs") {
            return;
        }
        let parent = std::env::temp_dir().join(format!("rbackup-testenv-{}", std::process::id()));
        let at = parent.join("mnt");
        let dev = |p: &Path| std::fs::metadata(p).unwrap().dev();
        let mount = crate::require!(
            T,
            LoopMount::tmpfs(&at, "1m"),
            "run where mounts are allowed"
        );
        let _ran = crate::ran(T, "root, tmpfs");
        assert_eq!(mount.at(), at);
        assert_ne!(dev(&at), dev(&parent), "a file system of its own");
        drop(mount);
        assert_eq!(dev(&at), dev(&parent), "unmounted on drop");
        std::fs::remove_dir_all(&parent).unwrap();
    }
}
