//! `rbackup mount`, really mounted: two recovery points read back byte-exact with their
//! metadata through the mount, writes refused with EROFS; a large sparse file read whole and
//! at random offsets with the mount process's peak memory bounded; a damaged pack an EIO for
//! the reads it holds, the mount going on; SIGINT, SIGTERM and an unmount from outside each
//! end the command with 0 and leave nothing mounted, and SIGINT with a file open detaches the
//! mount and ends once the file is closed; and a user (not root) mounting through
//! `fusermount3`. The tests fail, rather than skip, without `/dev/fuse`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Agent, EntryState, Rng, checksums, make_tree, snapshot_of};

/// How long a mount may take to appear or to go.
const WAIT: Duration = Duration::from_secs(60);

fn need_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: the mount tests mount for real; load the fuse module (`modprobe fuse`) or give the container the device"
    );
}

/// Whether `mp` is a mount point now, as /proc/self/mountinfo lists them.
fn mounted(mp: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mp = mp.to_str().unwrap();
    info.lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|m| m == mp))
}

/// A running `rbackup mount`.
struct Mount {
    child: Option<Child>,
    mp: PathBuf,
    stderr: PathBuf,
}

impl Mount {
    /// Starts `rbackup mount MP` (plus `extra`) as `a` and waits until MP is mounted.
    fn start(a: &Agent, mp: &Path, extra: &[&str]) -> Mount {
        need_fuse();
        let stderr = a.p("mount.stderr");
        let child = a
            .cmd()
            .arg("mount")
            .arg(mp)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(fs::File::create(a.p("mount.stdout")).unwrap())
            .stderr(fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut m = Mount {
            child: Some(child),
            mp: mp.to_path_buf(),
            stderr,
        };
        let started = Instant::now();
        while !mounted(mp) {
            if let Some(st) = m.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "rbackup mount exited with {st} before mounting:\n{}",
                    m.log()
                );
            }
            assert!(
                started.elapsed() < WAIT,
                "not mounted after {WAIT:?}:\n{}",
                m.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        m
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The mount process's peak resident memory (`VmHWM`), in bytes.
    fn peak_rss(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kb * 1024
    }

    fn signal(&self, sig: &str) {
        let st = std::process::Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Waits for the command to end; its status.
    fn wait(&mut self) -> ExitStatus {
        let child = self.child.as_mut().unwrap();
        let started = Instant::now();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                self.child = None;
                return st;
            }
            assert!(
                started.elapsed() < WAIT,
                "still running after {WAIT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `sig`; requires exit 0 and the mount gone.
    fn stop_with(mut self, sig: &str) {
        self.signal(sig);
        let st = self.wait();
        assert_eq!(st.code(), Some(0), "after {sig}: {st}\n{}", self.log());
        assert!(
            !mounted(&self.mp),
            "{} still mounted after {sig}",
            self.mp.display()
        );
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if mounted(&self.mp) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.mp)
                .status();
        }
    }
}

/// `src`'s place in a recovery point folder of the mount.
fn inside(folder: &Path, src: &Path) -> PathBuf {
    folder.join(src.strip_prefix("/").unwrap())
}

/// The error number of `r`.
fn errno<T: std::fmt::Debug>(r: std::io::Result<T>) -> Option<i32> {
    r.expect_err("must fail").raw_os_error()
}

/// Owner and group of every entry under `root`, by relative path.
fn owners(root: &Path) -> BTreeMap<PathBuf, (u32, u32)> {
    snapshot_of(root)
        .keys()
        .map(|rel| {
            let m = fs::symlink_metadata(root.join(rel)).unwrap();
            (rel.clone(), (m.uid(), m.gid()))
        })
        .collect()
}

type State = (
    BTreeMap<PathBuf, EntryState>,
    BTreeMap<PathBuf, String>,
    BTreeMap<PathBuf, (u32, u32)>,
);

fn state(root: &Path) -> State {
    (snapshot_of(root), checksums(root), owners(root))
}

#[test]
fn two_recovery_points_read_back_exactly_with_their_metadata_and_writes_fail_with_erofs() {
    let a = Agent::registered();
    let src = a.p("src");
    make_tree(&src, 1, 40, 300_000);
    fs::write(src.join("top.txt"), "at the top\n").unwrap();
    std::os::unix::fs::symlink("top.txt", src.join("link")).unwrap();
    let src_s = src.to_str().unwrap();
    let (c, v) = a.json(&["backup", "--links", "store", src_s]);
    assert_eq!(c, 0, "{v}");
    let first = state(&src);
    // Different content: files rewritten and added, one removed.
    make_tree(&src, 2, 25, 200_000);
    fs::remove_file(src.join("empty_file")).unwrap();
    let (c, v) = a.json(&["backup", "--links", "store", src_s]);
    assert_eq!(c, 0, "{v}");
    let second = state(&src);
    assert_ne!(first.1, second.1, "the second backup holds other content");

    let mp = a.p("mnt");
    fs::create_dir(&mp).unwrap();
    let m = Mount::start(&a, &mp, &[]);
    let mut names: Vec<String> = fs::read_dir(&mp)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 3, "{names:?}");
    assert_eq!(names[2], "latest");
    for n in &names[..2] {
        // 2026-12-02T10-31-05Z-1a2b3c4d
        assert_eq!(n.len(), 29, "{n}");
        assert!(n.as_bytes()[10] == b'T' && n.as_bytes()[19] == b'Z', "{n}");
        assert!(fs::metadata(mp.join(n)).unwrap().is_dir());
    }
    assert_eq!(
        fs::read_link(mp.join("latest")).unwrap(),
        Path::new(&names[1]),
        "latest is the newest point's folder"
    );
    let latest = fs::metadata(mp.join("latest")).unwrap();
    assert!(latest.is_dir(), "latest leads to a folder");

    for (folder, want) in [(&names[0], &first), (&names[1], &second)] {
        let root = inside(&mp.join(folder), &src);
        let got = state(&root);
        assert_eq!(
            got.0, want.0,
            "kinds, modes, mtimes, sizes or content in {folder}"
        );
        assert_eq!(got.1, want.1, "content in {folder}");
        assert_eq!(got.2, want.2, "owners in {folder}");
        assert_eq!(
            fs::read_link(root.join("link")).unwrap(),
            Path::new("top.txt")
        );
    }
    assert!(
        inside(&mp.join(&names[0]), &src)
            .join("empty_file")
            .exists()
    );
    assert!(!inside(&mp.join("latest"), &src).join("empty_file").exists());

    // Nothing can be changed.
    let root = inside(&mp.join("latest"), &src);
    let erofs = Some(libc::EROFS);
    assert_eq!(errno(fs::File::create(root.join("new.txt"))), erofs);
    let top = root.join("top.txt");
    assert_eq!(errno(fs::OpenOptions::new().write(true).open(&top)), erofs);
    assert_eq!(errno(fs::OpenOptions::new().append(true).open(&top)), erofs);
    assert_eq!(errno(fs::create_dir(root.join("newdir"))), erofs);
    assert_eq!(errno(fs::remove_file(&top)), erofs);
    assert_eq!(errno(fs::rename(&top, root.join("g"))), erofs);
    let perms = std::os::unix::fs::PermissionsExt::from_mode(0o777);
    assert_eq!(errno(fs::set_permissions(&top, perms)), erofs);
    assert_eq!(fs::read(&top).unwrap(), b"at the top\n", "unchanged");
    assert_eq!(errno(fs::File::create(mp.join("top.txt"))), erofs);

    m.stop_with("-INT");
}

/// A 224 MiB file: 64 MiB of noise, then 1 MiB islands of noise every 4 MiB, holes between.
fn large_sparse(path: &Path) -> Vec<(u64, u64)> {
    const MIB: u64 = 1 << 20;
    let f = fs::File::create(path).unwrap();
    f.set_len(224 * MIB).unwrap();
    let mut r = Rng(99);
    let mut data = vec![(0, 64 * MIB)];
    data.extend((64..224).step_by(4).map(|m| ((m + 2) * MIB, MIB)));
    for &(at, len) in &data {
        for off in (0..len).step_by(MIB as usize) {
            f.write_all_at(&r.bytes(MIB as usize), at + off).unwrap();
        }
    }
    f.sync_all().unwrap();
    data
}

fn hash_file(path: &Path) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    let mut f = fs::File::open(path).unwrap();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize()
}

/// The mount process's peak memory reading a large file may be at most this: the blob cache
/// (32 MiB) and the blobs of reads in flight (two fetches of at most a few MiB with their
/// sealed copies) on top of what the process holds once mounted (the runtime, the index: 16 MiB
/// measured).
/// Reading the file whole into memory would need 224 MiB.
const PEAK: u64 = 150 << 20;

#[test]
fn a_large_sparse_file_reads_whole_and_at_any_offset_with_bounded_memory() {
    let a = Agent::registered();
    let src = a.p("src");
    fs::create_dir(&src).unwrap();
    let big = src.join("big.img");
    let data = large_sparse(&big);
    a.backup(&src);

    let mp = a.p("mnt");
    fs::create_dir(&mp).unwrap();
    let m = Mount::start(&a, &mp, &[]);
    let at_start = m.peak_rss();
    let through = inside(&mp.join("latest"), &src).join("big.img");
    let size = fs::metadata(&big).unwrap().len();
    assert_eq!(fs::metadata(&through).unwrap().len(), size);

    // Random offsets first, before anything of the file is in the page cache: in the dense
    // part, across its end, in holes, on islands, at the very end and past it.
    let (orig, via) = (
        fs::File::open(&big).unwrap(),
        fs::File::open(&through).unwrap(),
    );
    let mut r = Rng(7);
    let mut offsets = vec![
        size - 10,
        0,
        (64 << 20) - 5000,
        data[3].0 - 7,
        data[10].0 + 12_345,
        (100 << 20) + 1,
        size - (1 << 20) - 3,
    ];
    offsets.extend((0..12).map(|_| r.below(size)));
    for off in offsets {
        let len = 1 + r.below(300_000) as usize;
        let (mut want, mut got) = (vec![0; len], vec![0; len]);
        let n = orig.read_at(&mut want, off).unwrap();
        let mut m_n = 0;
        while m_n < n {
            let k = via.read_at(&mut got[m_n..n], off + m_n as u64).unwrap();
            assert!(k > 0, "short read at {}", off + m_n as u64);
            m_n += k;
        }
        assert!(got[..n] == want[..n], "{len} bytes at {off} differ");
    }
    let mut past = [0u8; 16];
    assert_eq!(
        via.read_at(&mut past, size).unwrap(),
        0,
        "nothing past the end"
    );

    assert_eq!(
        hash_file(&through),
        hash_file(&big),
        "the whole file differs"
    );
    let peak = m.peak_rss();
    eprintln!(
        "mount process VmHWM: {} MiB once mounted, {} MiB after reading the {} MiB file",
        at_start >> 20,
        peak >> 20,
        size >> 20
    );
    assert!(
        peak < PEAK,
        "the mount process peaked at {} MiB reading a {} MiB file (bound {} MiB)",
        peak >> 20,
        size >> 20,
        PEAK >> 20
    );
    drop((orig, via));
    m.stop_with("-INT");
}

#[test]
fn sigterm_an_unmount_from_outside_and_a_busy_unmount_end_the_command_with_0() {
    let a = Agent::registered();
    let src = a.p("src");
    make_tree(&src, 3, 5, 10_000);
    a.backup(&src);
    let mp = a.p("mnt");
    fs::create_dir(&mp).unwrap();

    let m = Mount::start(&a, &mp, &[]);
    assert_eq!(fs::read_dir(&mp).unwrap().count(), 2);
    m.stop_with("-TERM");

    let mut m = Mount::start(&a, &mp, &[]);
    let st = std::process::Command::new("umount")
        .arg(&mp)
        .status()
        .unwrap();
    assert!(st.success());
    let st = m.wait();
    assert_eq!(st.code(), Some(0), "after umount: {st}\n{}", m.log());
    assert!(!mounted(&mp));

    // Busy: a file open in the mount. The mount is detached at once; the command ends with 0
    // once the file is closed.
    let mut m = Mount::start(&a, &mp, &[]);
    let file = walk_files(&inside(&mp.join("latest"), &src))[0].clone();
    let open = fs::File::open(&file).unwrap();
    m.signal("-INT");
    let started = Instant::now();
    while mounted(&mp) {
        assert!(started.elapsed() < WAIT, "still mounted:\n{}", m.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        m.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "ended with a file open"
    );
    drop(open);
    let st = m.wait();
    assert_eq!(
        st.code(),
        Some(0),
        "after the busy unmount: {st}\n{}",
        m.log()
    );
    assert!(m.log().contains("busy"), "{}", m.log());
}

/// The regular files under `dir`.
fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if e.file_type().unwrap().is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_user_mounts_through_fusermount3_and_unmounts_on_sigint() {
    const T: &str = "mount::a_user_mounts_through_fusermount3_and_unmounts_on_sigint";
    need_fuse();
    if !rbackup_testenv::need_command(T, "fusermount3", "fuse3") {
        return;
    }
    // fusermount3 opens the device as the user: udev leaves it 0666, a bare devtmpfs 0600.
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&fs::metadata("/dev/fuse").unwrap().permissions());
    if mode & 0o006 != 0o006 {
        let why = format!("/dev/fuse open to users (it is {:o})", mode & 0o777);
        rbackup_testenv::skip(
            T,
            &why,
            "chmod 0666 /dev/fuse, as udev does; cargo xtask ci does it",
        );
        return;
    }
    let _ran = rbackup_testenv::ran(T, "fusermount3 as a user");
    let a = Agent::unprivileged();
    let creds = a.create_vault();
    a.register_with(&creds, &[]);
    let src = a.p("src");
    make_tree(&src, 4, 10, 50_000);
    fs::write(src.join("top.txt"), "the user's\n").unwrap();
    if let Some(uid) = a.uid {
        let st = std::process::Command::new("chown")
            .args(["-R", &format!("{uid}:{uid}"), src.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(st.success());
    }
    a.backup(&src);
    let want = state(&src);
    let mp = a.p("mnt");
    fs::create_dir(&mp).unwrap();
    if let Some(uid) = a.uid {
        std::os::unix::fs::chown(&mp, Some(uid), Some(uid)).unwrap();
    }
    let m = Mount::start(&a, &mp, &[]);
    let root = inside(&mp.join("latest"), &src);
    match a.uid {
        // Mounted by the user: FUSE lets only that user in (not even root), so the user's
        // own commands compare what it holds.
        Some(uid) => {
            let id = uid.to_string();
            let cmp = std::process::Command::new("setpriv")
                .args(["--reuid", &id, "--regid", &id, "--clear-groups", "cmp"])
                .arg(src.join("top.txt"))
                .arg(root.join("top.txt"))
                .output()
                .unwrap();
            assert!(cmp.status.success(), "{}", crate::harness::text(&cmp));
            let ls = std::process::Command::new("setpriv")
                .args([
                    "--reuid",
                    &id,
                    "--regid",
                    &id,
                    "--clear-groups",
                    "ls",
                    "-ln",
                ])
                .arg(&root)
                .output()
                .unwrap();
            let out = String::from_utf8_lossy(&ls.stdout);
            assert!(
                out.contains(&format!(" {uid} {uid} ")) && out.contains("top.txt"),
                "{out}"
            );
        }
        None => assert_eq!(state(&root), want),
    }
    m.stop_with("-INT");
}

#[test]
fn a_damaged_pack_is_eio_for_the_reads_it_holds_and_the_mount_goes_on() {
    let a = Agent::registered();
    let src = a.p("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("victim.bin"), Rng(3).bytes(3 << 20)).unwrap();
    a.backup(&src);
    // The largest pack holds the file's data (tree packs are tiny).
    let pack = crate::harness::vault_files(&a.vault_dir())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/packs/"))
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = fs::read(&pack).unwrap();
    bytes[100] ^= 0x01;
    fs::write(&pack, bytes).unwrap();

    let mp = a.p("mnt");
    fs::create_dir(&mp).unwrap();
    let mut m = Mount::start(&a, &mp, &[]);
    let victim = inside(&mp.join("latest"), &src).join("victim.bin");
    assert_eq!(fs::metadata(&victim).unwrap().len(), 3 << 20);
    assert_eq!(
        errno(fs::read(&victim)),
        Some(libc::EIO),
        "damaged bytes are never handed out"
    );
    assert!(
        m.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "still serving:\n{}",
        m.log()
    );
    assert_eq!(
        fs::read_dir(inside(&mp.join("latest"), &src))
            .unwrap()
            .count(),
        1
    );
    assert!(
        m.log().contains("victim.bin"),
        "the log names the file:\n{}",
        m.log()
    );
    m.stop_with("-INT");
}
