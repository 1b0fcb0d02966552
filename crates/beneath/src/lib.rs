//! File-system operations confined beneath a directory, never following a symlink.
//!
//! A restore runs as root and writes into a target that local users may be able to change
//! while it runs, from names that a recovery point supplies. A [`Dir`] is an open directory
//! fd; every operation takes a [`RelPath`] made only of validated [`Name`]s (never empty,
//! `.`, `..`, never containing `/` or NUL, at most 255 bytes) and resolves it beneath that fd
//! without following any symlink. What stands in the way — a symlink, a non-directory where
//! a directory must be, an object where a file is to be created — is reported with a typed
//! [`Error`] naming the component and left alone. Files are created exclusively
//! (`O_CREAT | O_EXCL | O_NOFOLLOW`, mode 0600) or unnamed (`O_TMPFILE`) and linked into
//! place; renames either never replace (`RENAME_NOREPLACE`) or replace only non-directories
//! (the link itself, never its target); owner, mode and times are set on open fds
//! ([`set_owner`], [`set_mode`], [`set_times`]), never by path. Whole directories are listed
//! ([`Dir::entries`]), removed or measured as trees ([`Dir::remove_tree`], a symlink removed as
//! the link), and asked for free space ([`Dir::space`]) and case folding ([`Dir::folds_case`])
//! through their fds.
//!
//! # The one design choice: fd-relative, never path-based
//!
//! A path-based check followed by a path-based action (`is_dir()` then `create_dir_all`,
//! `exists()` then `rename`, `lchown` then `chmod`) re-resolves the path at each call, so a
//! user who swaps a directory for a symlink to `/etc` between the calls redirects the action.
//! No amount of checking closes that window; only never resolving the same path twice does.
//! So every call here is relative to a directory fd already held, and every object whose
//! metadata is set is the object already opened. This is the model of cap-std and of
//! systemd's `chase()`.
//!
//! Resolving a multi-component path uses `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS)`: one system call, with the kernel guaranteeing the result. Linux
//! before 5.6 (and sandboxes that filter the call) answer `ENOSYS`; there, and to find which
//! component is in the way after a refusal, the path is walked one name at a time with
//! `openat(O_DIRECTORY | O_NOFOLLOW)` from the previous step's fd. A single validated name
//! relative to a held directory can neither climb out nor cross a symlink, so the walk keeps
//! the same contract, at one call per component. [`Resolve`] forces either method, which is
//! how the tests run every case both ways.
//!
//! This crate knows nothing of backups, recovery points or what the files contain.

mod dir;
mod error;
mod meta;
mod name;
mod tree;
mod walk;

pub use dir::{Access, Dir, Replace, STAGED_FILE_MODE, TmpFile};
pub use error::{Error, Result};
pub use meta::{FileKind, Meta, metadata, set_mode, set_owner, set_times};
pub use name::{Name, NameError, RelPath, RelPathError};
pub use tree::{MAX_TREE_DEPTH, Space, TreeCount};
pub use walk::Resolve;
