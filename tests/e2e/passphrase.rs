//! Where a passphrase comes from: `--passphrase-file`, `RBACKUP_PASSPHRASE_FILE`,
//! `RBACKUP_PASSPHRASE_COMMAND`, or a prompt on a terminal (without echo, twice for a new one);
//! with none of them and no terminal, one error that names all three instead of a hang.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustix::fd::{BorrowedFd, OwnedFd};
use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};

use crate::harness::*;

/// A child process whose controlling terminal is a fresh pseudo-terminal; the test reads what
/// it writes to the terminal and types into it.
struct Pty {
    child: Child,
    master: fs::File,
    seen: mpsc::Receiver<u8>,
    text: Vec<u8>,
}

impl Pty {
    fn spawn(mut cmd: Command) -> Pty {
        let master: OwnedFd =
            openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).unwrap();
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        let name = ptsname(&master, Vec::new()).unwrap();
        let slave = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(name.to_str().unwrap())
            .unwrap();
        cmd.stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave);
        // SAFETY: only async-signal-safe calls (setsid, ioctl) between fork and exec.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::setsid()?;
                rustix::process::ioctl_tiocsctty(BorrowedFd::borrow_raw(0))?;
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        // The parent's copies of the slave end go with `cmd`, so a read of the master ends
        // (EIO) once the child and its terminal are gone.
        drop(cmd);
        let master = fs::File::from(master);
        let mut reader = master.try_clone().unwrap();
        let (tx, seen) = mpsc::channel();
        std::thread::spawn(move || {
            let mut b = [0u8; 256];
            while let Ok(n @ 1..) = reader.read(&mut b) {
                if b[..n].iter().any(|&c| tx.send(c).is_err()) {
                    return;
                }
            }
        });
        Pty {
            child,
            master,
            seen,
            text: Vec::new(),
        }
    }

    /// Waits until the terminal has shown `what`.
    fn expect(&mut self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !String::from_utf8_lossy(&self.text).contains(what) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.seen.recv_timeout(left) {
                Ok(c) => self.text.push(c),
                Err(_) => panic!("no {what:?} on the terminal; it showed {:?}", self.shown()),
            }
        }
    }

    /// Types `line` once the terminal no longer echoes: the prompt is shown a moment before
    /// echo is turned off, and what arrives in between would be echoed by the terminal, not
    /// by the agent (a person does not type that fast; a test does).
    fn type_line(&mut self, line: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // The pseudo-terminal's master reports the settings of its terminal side.
            let t = rustix::termios::tcgetattr(&self.master).unwrap();
            if !t.local_modes.contains(rustix::termios::LocalModes::ECHO) {
                break;
            }
            assert!(Instant::now() < deadline, "echo never turned off");
            std::thread::sleep(Duration::from_millis(5));
        }
        self.master.write_all(line.as_bytes()).unwrap();
        self.master.write_all(b"\n").unwrap();
    }

    /// Waits for the child to exit; returns its status code and everything it showed.
    fn finish(mut self) -> (i32, String) {
        let status = self.child.wait().unwrap();
        while let Ok(c) = self.seen.recv_timeout(Duration::from_secs(5)) {
            self.text.push(c);
        }
        (status.code().unwrap_or(-1), self.shown())
    }

    fn shown(&self) -> String {
        String::from_utf8_lossy(&self.text).into_owned()
    }
}

fn register_cmd(a: &Agent, creds: &Path) -> Command {
    let mut c = a.cmd();
    c.args(["register", "--vault-credentials", creds.to_str().unwrap()]);
    c
}

#[test]
fn registration_asks_twice_without_echo_and_the_typed_passphrase_opens_the_backups() {
    let a = Agent::bare();
    let creds = a.create_vault();
    let typed = "typed-at-the-prompt-2026";
    let mut pty = Pty::spawn(register_cmd(&a, &creds));
    pty.expect("New passphrase");
    pty.type_line(typed);
    pty.expect("Repeat");
    pty.type_line(typed);
    let (status, shown) = pty.finish();
    assert_eq!(status, 0, "{shown}");
    assert!(!shown.contains(typed), "the passphrase was echoed: {shown}");
    assert!(shown.contains("the one you typed"), "{shown}");
    let src = a.p("src");
    make_tree(&src, 3, 10, 5_000);
    a.backup(&src);
    // Another machine opens the backups with the passphrase that was typed, and only with it.
    let b = second_agent(&a);
    let id = a.machine_id();
    fs::write(b.p("typed.txt"), typed).unwrap();
    let t = b.p("restored");
    let out = b.run(&[
        "restore",
        "latest",
        "--target",
        t.to_str().unwrap(),
        "--machine",
        &id,
        "--passphrase-file",
        b.p("typed.txt").to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_same_tree(&src, &t);
}

#[test]
fn two_different_passphrases_at_the_prompt_register_nothing() {
    let a = Agent::bare();
    let creds = a.create_vault();
    let mut pty = Pty::spawn(register_cmd(&a, &creds));
    pty.expect("New passphrase");
    pty.type_line("first-passphrase-typed-1");
    pty.expect("Repeat");
    pty.type_line("other-passphrase-typed-2");
    let (status, shown) = pty.finish();
    assert_eq!(status, 1, "{shown}");
    assert!(shown.contains("differ"), "{shown}");
    assert!(!a.config().exists(), "a config was written");
}

#[test]
fn a_short_passphrase_at_the_prompt_is_refused_before_it_is_repeated() {
    let a = Agent::bare();
    let creds = a.create_vault();
    let mut pty = Pty::spawn(register_cmd(&a, &creds));
    pty.expect("New passphrase");
    pty.type_line("short");
    let (status, shown) = pty.finish();
    assert_eq!(status, 1, "{shown}");
    assert!(shown.contains("16"), "{shown}");
    assert!(!shown.contains("Repeat"), "{shown}");
}

/// `restore --machine` of `a`'s backups on `b`, with `env` set and no passphrase option.
fn restore_with_env(a: &Agent, b: &Agent, env: &[(&str, &str)]) -> std::process::Output {
    let t = b.p("restored");
    let _ = fs::remove_dir_all(&t);
    let mut c = b.cmd();
    c.args(["restore", "latest", "--target", t.to_str().unwrap()])
        .args(["--machine", &a.machine_id()])
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    c.output().unwrap()
}

#[test]
fn the_environment_gives_the_passphrase_and_without_it_there_is_no_hang() {
    let a = Agent::registered();
    let src = a.p("src");
    make_tree(&src, 5, 8, 3_000);
    a.backup(&src);
    let b = second_agent(&a);
    let pass = a.pass_file();
    let pass = pass.to_str().unwrap();
    let file = restore_with_env(&a, &b, &[("RBACKUP_PASSPHRASE_FILE", pass)]);
    assert_eq!(code(&file), 0, "{}", text(&file));
    let cat = format!("cat '{pass}'");
    let cmd = restore_with_env(&a, &b, &[("RBACKUP_PASSPHRASE_COMMAND", &cat)]);
    assert_eq!(code(&cmd), 0, "{}", text(&cmd));
    assert_same_tree(&src, &b.p("restored"));

    let failing = restore_with_env(&a, &b, &[("RBACKUP_PASSPHRASE_COMMAND", "false")]);
    assert_eq!(code(&failing), 1, "{}", text(&failing));
    assert!(text(&failing).contains("failed"), "{}", text(&failing));
    let both = restore_with_env(
        &a,
        &b,
        &[
            ("RBACKUP_PASSPHRASE_FILE", pass),
            ("RBACKUP_PASSPHRASE_COMMAND", &cat),
        ],
    );
    assert_eq!(code(&both), 1, "{}", text(&both));
    assert!(text(&both).contains("unset one"), "{}", text(&both));
    // No terminal and nothing set: refused at once, naming every way to give it.
    let started = Instant::now();
    let none = restore_with_env(&a, &b, &[]);
    assert_eq!(code(&none), 1, "{}", text(&none));
    for way in [
        "--passphrase-file",
        "RBACKUP_PASSPHRASE_FILE",
        "RBACKUP_PASSPHRASE_COMMAND",
    ] {
        assert!(text(&none).contains(way), "{way}: {}", text(&none));
    }
    assert!(started.elapsed() < Duration::from_secs(30));
}
