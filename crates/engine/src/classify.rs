//! The MARS file-type rules, as a pure function of a file's attributes, fed by a real `statx`.
//!
//! Keeping the decision pure means every combination of attributes can be tested, including
//! ones no single Linux file system can produce (encrypted + compressed); the probe that fills
//! in [`FileAttrs`] is the only part that needs real file systems.

use std::ffi::OsStr;
use std::path::Path;

use rustix::fd::BorrowedFd;
use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, StatxAttributes, StatxFlags};
use serde::{Deserialize, Serialize};

/// What kind of directory entry it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryType {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link (a reparse point in MARS terms).
    Symlink,
    /// Socket, FIFO, block or character device.
    Special,
}

/// The attributes the rules look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileAttrs {
    /// Entry type.
    pub entry: EntryType,
    /// Link count.
    pub nlink: u64,
    /// fscrypt-encrypted (`STATX_ATTR_ENCRYPTED`).
    pub encrypted: bool,
    /// File-system compressed (`STATX_ATTR_COMPRESSED`, btrfs `chattr +c`).
    pub compressed: bool,
    /// Fewer blocks allocated than the size needs.
    pub sparse: bool,
    /// On another device than its source root (a mount point inside the source).
    pub other_device: bool,
    /// An automount point (`STATX_ATTR_AUTOMOUNT`).
    pub automount: bool,
}

/// How a backed-up file is treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileClass {
    /// Incremental, read whole.
    Normal,
    /// Backed up in full on every run, never via the unchanged-file shortcut.
    Encrypted,
    /// Incremental.
    Compressed,
    /// Incremental; only data segments are read and stored, holes recreated on restore.
    Sparse,
}

impl FileClass {
    /// Name recorded in the tree, if the class is not normal.
    pub fn label(self) -> Option<&'static str> {
        match self {
            FileClass::Normal => None,
            FileClass::Encrypted => Some("encrypted"),
            FileClass::Compressed => Some("compressed"),
            FileClass::Sparse => Some("sparse"),
        }
    }
}

/// What the backup does with symbolic links and hard links.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkMode {
    /// The MARS rule: neither is backed up (each is reported as skipped by rule).
    #[default]
    Skip,
    /// Symlinks are stored as symlinks (their target, never followed) and the links of a
    /// file with several are stored as links to one copy; both are restored as such.
    Store,
}

/// A file-type rule that leaves an entry out of the backup. A skip by rule is policy, not a
/// failure: reports count these apart from files that could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipRule {
    /// A symbolic link (with [`LinkMode::Skip`]).
    Symlink,
    /// A file with more than one link (with [`LinkMode::Skip`]).
    HardLink,
    /// A socket, FIFO or device node.
    Special,
    /// A mount point inside a source.
    MountPoint,
    /// An automount point.
    Automount,
    /// An fscrypt-encrypted file that is also compressed.
    EncryptedCompressed,
    /// An fscrypt-encrypted file that is also sparse.
    EncryptedSparse,
}

impl SkipRule {
    /// Every rule, in the order reports list them.
    pub const ALL: [SkipRule; 7] = [
        SkipRule::Symlink,
        SkipRule::HardLink,
        SkipRule::Special,
        SkipRule::MountPoint,
        SkipRule::Automount,
        SkipRule::EncryptedCompressed,
        SkipRule::EncryptedSparse,
    ];

    /// Why the entry was skipped, in words (the `reason` of its report entry).
    pub fn reason(self) -> &'static str {
        match self {
            SkipRule::Symlink => "symbolic link (reparse point): not backed up",
            SkipRule::HardLink => "hard link (file with more than one link): not backed up",
            SkipRule::Special => "socket, FIFO or device node (special file): not backed up",
            SkipRule::MountPoint => {
                "mount point inside the source (reparse point): not backed up; name it as a source of its own to back it up"
            }
            SkipRule::Automount => "automount point (reparse point): not backed up",
            SkipRule::EncryptedCompressed => "encrypted and compressed file: not backed up",
            SkipRule::EncryptedSparse => "encrypted and sparse file: not backed up",
        }
    }

    /// What `count` entries skipped by this rule are called, e.g. "3 symbolic links".
    pub fn count(self, count: u64) -> String {
        let (one, many) = match self {
            SkipRule::Symlink => ("symbolic link", "symbolic links"),
            SkipRule::HardLink => ("hard link", "hard links"),
            SkipRule::Special => ("special file", "special files"),
            SkipRule::MountPoint => ("mount point", "mount points"),
            SkipRule::Automount => ("automount point", "automount points"),
            SkipRule::EncryptedCompressed => {
                ("encrypted compressed file", "encrypted compressed files")
            }
            SkipRule::EncryptedSparse => ("encrypted sparse file", "encrypted sparse files"),
        };
        format!("{count} {}", if count == 1 { one } else { many })
    }

    /// The rule whose [`SkipRule::reason`] is `reason`: job records written before skips
    /// carried their rule said only this.
    pub fn from_reason(reason: &str) -> Option<SkipRule> {
        SkipRule::ALL.into_iter().find(|r| r.reason() == reason)
    }
}

/// The rule's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Back up the file with this treatment.
    File(FileClass),
    /// Descend into the directory.
    Dir,
    /// Store the symbolic link itself (its target, not followed).
    Symlink,
    /// Skip it, by this rule.
    Skip(SkipRule),
}

/// The MARS file-type rules (the table in ARCHITECTURE.md), checked top to bottom, with
/// symlinks and hard links skipped ([`LinkMode::Skip`]).
pub fn classify(a: &FileAttrs) -> Decision {
    classify_with(a, LinkMode::Skip)
}

/// [`classify`] with a choice for links: under [`LinkMode::Store`] a symlink is
/// [`Decision::Symlink`] and a file with several links is a file like any other (the backup
/// groups its links). Mount points, automounts and special files are skipped either way.
pub fn classify_with(a: &FileAttrs, links: LinkMode) -> Decision {
    if a.automount {
        return Decision::Skip(SkipRule::Automount);
    }
    if a.other_device {
        return Decision::Skip(SkipRule::MountPoint);
    }
    match (a.entry, links) {
        (EntryType::Symlink, LinkMode::Skip) => return Decision::Skip(SkipRule::Symlink),
        (EntryType::Symlink, LinkMode::Store) => return Decision::Symlink,
        (EntryType::Special, _) => return Decision::Skip(SkipRule::Special),
        (EntryType::Dir, _) => return Decision::Dir,
        (EntryType::File, _) => {}
    }
    if a.nlink > 1 && links == LinkMode::Skip {
        return Decision::Skip(SkipRule::HardLink);
    }
    match (a.encrypted, a.compressed, a.sparse) {
        (true, true, _) => Decision::Skip(SkipRule::EncryptedCompressed),
        (true, _, true) => Decision::Skip(SkipRule::EncryptedSparse),
        (true, false, false) => Decision::File(FileClass::Encrypted),
        (false, _, true) => Decision::File(FileClass::Sparse),
        (false, true, false) => Decision::File(FileClass::Compressed),
        (false, false, false) => Decision::File(FileClass::Normal),
    }
}

/// What `statx` told us, plus the attributes for the rules.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Probe {
    pub attrs: FileAttrs,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub dev: (u32, u32),
}

/// The rule attributes of one path, as a backup sees them (for tests and diagnostics).
pub fn attrs_of(path: &Path) -> std::io::Result<FileAttrs> {
    probe(path, None).map(|p| p.attrs)
}

/// `statx` without following links; `root_dev` is the device of the source root.
pub(crate) fn probe(path: &Path, root_dev: Option<(u32, u32)>) -> std::io::Result<Probe> {
    probe_at(CWD, path.as_os_str(), root_dev)
}

/// [`probe`] of `name` beneath the open directory `dir` (a relative name is resolved there,
/// an absolute path as it is).
pub(crate) fn probe_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    root_dev: Option<(u32, u32)>,
) -> std::io::Result<Probe> {
    let st = rustix::fs::statx(
        dir,
        name,
        AtFlags::SYMLINK_NOFOLLOW | AtFlags::NO_AUTOMOUNT,
        StatxFlags::BASIC_STATS,
    )?;
    let entry = match FileType::from_raw_mode(st.stx_mode.into()) {
        FileType::RegularFile => EntryType::File,
        FileType::Directory => EntryType::Dir,
        FileType::Symlink => EntryType::Symlink,
        _ => EntryType::Special,
    };
    let dev = (st.stx_dev_major, st.stx_dev_minor);
    let attr =
        |a: StatxAttributes| st.stx_attributes_mask.contains(a) && st.stx_attributes.contains(a);
    // Fewer allocated blocks than the size is only a hint (compression and inline data do it
    // too); a hole before end of file, as SEEK_HOLE reports it, is the proof.
    let sparse = entry == EntryType::File
        && st.stx_size > 0
        && st.stx_blocks.saturating_mul(512) < st.stx_size
        && has_hole(dir, name, st.stx_size);
    Ok(Probe {
        attrs: FileAttrs {
            entry,
            nlink: st.stx_nlink.into(),
            encrypted: attr(StatxAttributes::ENCRYPTED),
            compressed: attr(StatxAttributes::COMPRESSED),
            sparse,
            other_device: root_dev.is_some_and(|d| d != dev),
            automount: attr(StatxAttributes::AUTOMOUNT),
        },
        mode: st.stx_mode.into(),
        uid: st.stx_uid,
        gid: st.stx_gid,
        size: st.stx_size,
        mtime_ns: ts_ns(&st.stx_mtime),
        ctime_ns: ts_ns(&st.stx_ctime),
        ino: st.stx_ino,
        dev,
    })
}

/// Opened like the backup opens files (see `backup/open.rs`): never following a symlink or
/// blocking on a FIFO swapped in since the `statx`; on anything but a regular file the seek
/// fails and the answer is no.
fn has_hole(dir: BorrowedFd<'_>, name: &OsStr, size: u64) -> bool {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY;
    let Ok(f) = rustix::fs::openat(dir, name, flags | OFlags::CLOEXEC, Mode::empty()) else {
        return false;
    };
    matches!(rustix::fs::seek(&f, rustix::fs::SeekFrom::Hole(0)), Ok(pos) if pos < size)
}

fn ts_ns(t: &rustix::fs::StatxTimestamp) -> i64 {
    t.tv_sec
        .saturating_mul(1_000_000_000)
        .saturating_add(i64::from(t.tv_nsec))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(encrypted: bool, compressed: bool, sparse: bool) -> FileAttrs {
        FileAttrs {
            entry: EntryType::File,
            nlink: 1,
            encrypted,
            compressed,
            sparse,
            other_device: false,
            automount: false,
        }
    }

    #[test]
    fn every_combination_of_the_table() {
        use Decision::*;
        use FileClass::*;
        let expect = |e, c, s| match (e, c, s) {
            (false, false, false) => "normal",
            (false, false, true) => "sparse",
            (false, true, false) => "compressed",
            (false, true, true) => "sparse", // compressed + sparse is treated as sparse
            (true, false, false) => "encrypted",
            _ => "skip", // encrypted + compressed, encrypted + sparse
        };
        for bits in 0..8u8 {
            let (e, c, s) = (bits & 1 != 0, bits & 2 != 0, bits & 4 != 0);
            let got = match classify(&file(e, c, s)) {
                File(Normal) => "normal",
                File(Sparse) => "sparse",
                File(Compressed) => "compressed",
                File(Encrypted) => "encrypted",
                Skip(_) => "skip",
                Dir => "dir",
                Symlink => "symlink",
            };
            assert_eq!(
                got,
                expect(e, c, s),
                "encrypted={e} compressed={c} sparse={s}"
            );
        }
    }

    #[test]
    fn links_mounts_and_specials_are_skipped_with_reasons() {
        let mut a = file(false, false, false);
        a.nlink = 2;
        assert!(matches!(classify(&a), Decision::Skip(r) if r.reason().contains("hard link")));
        for (entry, word) in [
            (EntryType::Symlink, "symbolic link"),
            (EntryType::Special, "special file"),
        ] {
            let a = FileAttrs {
                entry,
                ..file(false, false, false)
            };
            assert!(
                matches!(classify(&a), Decision::Skip(r) if r.reason().contains(word)),
                "{entry:?}"
            );
        }
        let dir = FileAttrs {
            entry: EntryType::Dir,
            nlink: 5,
            ..file(false, false, false)
        };
        assert_eq!(
            classify(&dir),
            Decision::Dir,
            "directories have many links and are fine"
        );
        let mnt = FileAttrs {
            other_device: true,
            ..dir
        };
        assert!(matches!(classify(&mnt), Decision::Skip(r) if r.reason().contains("mount point")));
        let auto = FileAttrs {
            automount: true,
            ..dir
        };
        assert!(matches!(classify(&auto), Decision::Skip(r) if r.reason().contains("automount")));
    }

    #[test]
    fn storing_links_keeps_symlinks_and_hard_links_and_nothing_else() {
        let store = |a: &FileAttrs| classify_with(a, LinkMode::Store);
        let mut hard = file(false, false, false);
        hard.nlink = 3;
        assert_eq!(store(&hard), Decision::File(FileClass::Normal));
        let link = FileAttrs {
            entry: EntryType::Symlink,
            ..file(false, false, false)
        };
        assert_eq!(store(&link), Decision::Symlink);
        assert_eq!(classify(&link), Decision::Skip(SkipRule::Symlink));
        let special = FileAttrs {
            entry: EntryType::Special,
            ..hard
        };
        assert_eq!(store(&special), Decision::Skip(SkipRule::Special));
        let mounted = FileAttrs {
            other_device: true,
            ..link
        };
        assert_eq!(store(&mounted), Decision::Skip(SkipRule::MountPoint));
        let auto = FileAttrs {
            automount: true,
            ..link
        };
        assert_eq!(store(&auto), Decision::Skip(SkipRule::Automount));
        let both = FileAttrs {
            encrypted: true,
            compressed: true,
            ..hard
        };
        assert_eq!(store(&both), Decision::Skip(SkipRule::EncryptedCompressed));
    }

    #[test]
    fn every_rule_is_found_again_from_its_reason_and_counted_in_words() {
        for r in SkipRule::ALL {
            assert_eq!(SkipRule::from_reason(r.reason()), Some(r));
        }
        assert_eq!(SkipRule::from_reason("cannot read: denied"), None);
        assert_eq!(SkipRule::Symlink.count(1), "1 symbolic link");
        assert_eq!(SkipRule::HardLink.count(2), "2 hard links");
    }
}
