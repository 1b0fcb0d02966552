//! Test harness: an isolated agent (own HOME, XDG dirs, config) and generated trees.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

pub const PASSPHRASE: &str = "correct-horse-battery-staple-42";

/// One isolated agent: its own HOME, XDG dirs, config, vault and passphrase file.
pub struct Agent {
    pub dir: tempfile::TempDir,
    /// Run the binary as this uid (through setpriv) instead of as ourselves.
    pub uid: Option<u32>,
    /// Extra environment (cloud credentials and endpoints).
    pub env: Vec<(String, String)>,
}

impl Agent {
    /// An agent with no config at all.
    pub fn bare() -> Agent {
        let dir = tempfile::Builder::new()
            .prefix("rbackup-e2e-")
            .tempdir()
            .unwrap();
        // Other users (the unprivileged runs below) must be able to traverse it.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let a = Agent {
            dir,
            uid: None,
            env: Vec::new(),
        };
        fs::create_dir_all(a.home()).unwrap();
        fs::write(a.pass_file(), PASSPHRASE).unwrap();
        a
    }

    /// An agent registered with a fresh local vault.
    pub fn registered() -> Agent {
        let a = Agent::bare();
        let creds = a.create_vault();
        a.register_with(&creds, &[]);
        a
    }

    /// Creates the agent's local vault; returns the credentials file.
    pub fn create_vault(&self) -> PathBuf {
        let creds = self.p("creds.json");
        self.ok(&[
            "vault",
            "create",
            &self.vault_url(),
            "--credentials-out",
            creds.to_str().unwrap(),
        ]);
        creds
    }

    /// Registers with the agent's passphrase file and `extra` register options.
    pub fn register_with(&self, creds: &Path, extra: &[&str]) {
        let mut args = vec!["register", "--vault-credentials", creds.to_str().unwrap()];
        let pass = self.pass_file();
        args.extend(["--passphrase-file", pass.to_str().unwrap()]);
        args.extend_from_slice(extra);
        self.ok(&args);
    }

    /// The machine id from the agent config.
    pub fn machine_id(&self) -> String {
        let cfg = fs::read_to_string(self.config()).unwrap();
        let line = cfg
            .lines()
            .find(|l| l.starts_with("machine_id"))
            .expect("machine_id in config");
        line.split('"').nth(1).unwrap().to_string()
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    pub fn home(&self) -> PathBuf {
        self.p("home")
    }
    pub fn config(&self) -> PathBuf {
        self.p("home/.config/rbackup/config.toml")
    }
    pub fn pass_file(&self) -> PathBuf {
        self.p("pass.txt")
    }
    pub fn vault_dir(&self) -> PathBuf {
        self.p("vault")
    }
    pub fn vault_url(&self) -> String {
        format!("file://{}", self.vault_dir().display())
    }

    /// A bare agent whose files belong to `nobody` and whose commands run as `nobody`, so that
    /// permission checks apply even when the tests run as root.
    pub fn unprivileged() -> Agent {
        let mut a = Agent::bare();
        if rbackup_testenv::is_root() {
            let st = std::process::Command::new("chown")
                .args(["-R", "65534:65534", a.dir.path().to_str().unwrap()])
                .status()
                .unwrap();
            assert!(st.success());
            a.uid = Some(65534);
        }
        a
    }

    pub fn cmd(&self) -> std::process::Command {
        let bin = env!("CARGO_BIN_EXE_rbackup");
        let mut c = match self.uid {
            Some(uid) => {
                let mut c = std::process::Command::new("setpriv");
                let id = uid.to_string();
                c.args(["--reuid", &id, "--regid", &id, "--clear-groups", bin]);
                c
            }
            None => std::process::Command::new(bin),
        };
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home())
            .env("XDG_CONFIG_HOME", self.p("home/.config"))
            .env("XDG_DATA_HOME", self.p("home/.local/share"))
            .env("XDG_CACHE_HOME", self.p("home/.cache"))
            .env("XDG_STATE_HOME", self.p("home/.local/state"));
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// `restore latest --target TARGET --recovery-dir RECOVERY`.
    pub fn restore_latest_via(&self, target: &Path, recovery: &Path) -> Output {
        self.run(&[
            "restore",
            "latest",
            "--target",
            target.to_str().unwrap(),
            "--recovery-dir",
            recovery.to_str().unwrap(),
        ])
    }

    /// Runs and requires exit 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(code(&out), 0, "rbackup {args:?} failed:\n{}", text(&out));
        String::from_utf8(out.stdout).unwrap()
    }

    /// `--json` run; returns (exit code, parsed stdout).
    pub fn json(&self, args: &[&str]) -> (i32, Value) {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        let out = self.run(&full);
        let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "rbackup {args:?}: stdout is not JSON ({e}):\n{}",
                text(&out)
            )
        });
        (code(&out), v)
    }

    pub fn backup(&self, path: &Path) -> Value {
        let (c, v) = self.json(&["backup", path.to_str().unwrap()]);
        assert_eq!(c, 0, "backup failed: {v}");
        v
    }

    pub fn restore_latest(&self, target: &Path) -> Value {
        let (c, v) = self.json(&["restore", "latest", "--target", target.to_str().unwrap()]);
        assert_eq!(c, 0, "restore failed: {v}");
        v
    }
}

/// A second agent registered with the same vault (recovery to an alternate server).
pub fn second_agent(first: &Agent) -> Agent {
    let b = Agent::bare();
    let creds = b.p("creds2.json");
    let url = first.vault_url();
    first.ok(&[
        "vault",
        "credentials",
        &url,
        "--out",
        creds.to_str().unwrap(),
    ]);
    b.register_with(&creds, &[]);
    b
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// xorshift64*: deterministic data without depending on a crate's RNG.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
    /// Text that compresses like source code.
    pub fn text(&mut self, n: usize) -> Vec<u8> {
        const WORDS: [&str; 16] = [
            "fn", "let", "match", "impl", "self", "return", "if", "else", "{", "}", "(", ")",
            ";\n", "value", "index", "    ",
        ];
        let mut v = Vec::with_capacity(n + 16);
        while v.len() < n {
            v.extend_from_slice(WORDS[self.below(16) as usize].as_bytes());
            v.push(b' ');
        }
        v.truncate(n);
        v
    }
}

/// Writes a tree of text and binary files in nested directories, with varied modes and mtimes.
pub fn make_tree(root: &Path, seed: u64, files: usize, max_size: usize) {
    let mut r = Rng(seed | 1);
    for i in 0..files {
        let depth = r.below(4);
        let mut dir = root.to_path_buf();
        for d in 0..depth {
            dir = dir.join(format!("d{}_{}", d, r.below(3)));
        }
        fs::create_dir_all(&dir).unwrap();
        let size = r.below(max_size as u64) as usize;
        let data = if r.below(2) == 0 {
            r.text(size)
        } else {
            r.bytes(size)
        };
        let path = dir.join(format!("f{i}.{}", if i % 2 == 0 { "txt" } else { "bin" }));
        fs::write(&path, data).unwrap();
        let mode = [0o644, 0o600, 0o755, 0o640][r.below(4) as usize];
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        set_mtime(
            &path,
            1_600_000_000 + r.below(100_000_000) as i64,
            r.below(1_000_000_000) as i64,
        );
    }
    fs::create_dir_all(root.join("empty_dir")).unwrap();
    fs::write(root.join("empty_file"), b"").unwrap();
}

pub fn set_mtime(path: &Path, secs: i64, nanos: i64) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::new(secs as u64, nanos as u32);
    let f = fs::File::options().write(true).open(path).unwrap();
    f.set_modified(t).unwrap();
}

/// What a restore must reproduce of one entry: kind, mode, mtime (s, ns), size, content hash.
pub type EntryState = (char, u32, i64, i64, u64, Vec<u8>);

/// Everything a restore must reproduce: relative path → its [`EntryState`].
pub fn snapshot_of(root: &Path) -> BTreeMap<PathBuf, EntryState> {
    let mut out = BTreeMap::new();
    for e in walk(root) {
        let m = fs::symlink_metadata(&e).unwrap();
        let rel = e.strip_prefix(root).unwrap().to_path_buf();
        let (kind, content, mtime) = if m.is_dir() {
            ('d', Vec::new(), 0) // directory mtimes change when children are added; files are checked exactly
        } else {
            (
                'f',
                blake3::hash(&fs::read(&e).unwrap()).as_bytes().to_vec(),
                m.mtime(),
            )
        };
        let nsec = if m.is_dir() { 0 } else { m.mtime_nsec() };
        out.insert(
            rel,
            (
                kind,
                m.mode(),
                mtime,
                nsec,
                m.len() * u64::from(kind == 'f'),
                content,
            ),
        );
    }
    out
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

/// Asserts that `restored` (the restore target) holds exactly `source` at its absolute path.
pub fn assert_same_tree(source: &Path, target: &Path) {
    let restored = target.join(source.strip_prefix("/").unwrap());
    let a = snapshot_of(source);
    let b = snapshot_of(&restored);
    let missing: Vec<_> = a.keys().filter(|k| !b.contains_key(*k)).collect();
    let extra: Vec<_> = b.keys().filter(|k| !a.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    for (k, v) in &a {
        assert_eq!(v, &b[k], "{} differs after restore", k.display());
    }
}

/// All regular files under the vault.
pub fn vault_files(vault: &Path) -> Vec<PathBuf> {
    walk(vault).into_iter().filter(|p| p.is_file()).collect()
}

/// BLAKE3 of every file under `dir`, by relative path.
pub fn checksums(dir: &Path) -> std::collections::BTreeMap<PathBuf, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let hash = blake3::hash(&std::fs::read(&p).unwrap())
                    .to_hex()
                    .to_string();
                out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), hash);
            }
        }
    }
    out
}

/// `plain` (an agent's command) run by faketime with the clock `time` gives: a date
/// (`["2026-03-02 09:00:00"]`) or an offset from now (`["-f", "+15d"]`). `-m`: the
/// multi-threaded libfaketime (rbackup runs tokio); the monotonic clock stays real, so timers
/// and progress behave.
pub fn under_faketime(plain: std::process::Command, time: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new("faketime");
    c.args(["-m", "--exclude-monotonic"])
        .args(time)
        .arg(plain.get_program())
        .args(plain.get_args())
        .env_clear();
    for (k, v) in plain.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c
}

/// The [`rbackup_testenv::Ran`] guard of `test` when `faketime` is installed; otherwise the
/// test is skipped (or fails under `RBACKUP_REQUIRE_ALL=1`).
pub fn faketime(test: &str) -> Option<rbackup_testenv::Ran> {
    rbackup_testenv::need_command(test, "faketime", "faketime")
        .then(|| rbackup_testenv::ran(test, "faketime"))
}
