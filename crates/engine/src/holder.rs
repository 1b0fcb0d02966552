//! Who holds a lease, precisely enough to tell that the holder is gone: a lease left by a
//! killed process on this host is released at once instead of running out (see `lock.rs`).
//!
//! A pid alone is not enough: pids are reused, and after a reboot every pid means another
//! process. So a holder is its host name, the kernel's boot id, its pid and its start time
//! (clock ticks since boot, from `/proc/<pid>/stat`). The holder is gone when the host is
//! this one and either the boot id differs (the machine rebooted since) or no process with
//! that pid and that start time exists. Anything that cannot be read counts as alive: a
//! lease is a promise not to delete, and an unprovable death keeps it.

use serde::{Deserialize, Serialize};

/// The identity of a process, as recorded in its lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The kernel's host name (not the machine name given at registration).
    pub host: String,
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot: String,
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
    pub start: u64,
}

impl Holder {
    /// This process, or `None` where `/proc` does not tell (then leases carry no holder and
    /// only run out).
    pub fn current() -> Option<Holder> {
        let pid = std::process::id();
        Some(Holder {
            host: host_name()?,
            boot: boot_id()?,
            pid,
            start: start_time(pid)?,
        })
    }

    /// Whether this holder is provably gone, judged from this process.
    pub fn is_gone(&self) -> bool {
        let (Some(host), Some(boot)) = (host_name(), boot_id()) else {
            return false;
        };
        if host != self.host {
            return false; // another host's processes are not ours to judge
        }
        if boot != self.boot {
            return true;
        }
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(_) => false,
            Ok(stat) => parse_start(&stat).is_some_and(|s| s != self.start),
        }
    }
}

fn host_name() -> Option<String> {
    let name = rustix::system::uname()
        .nodename()
        .to_str()
        .ok()?
        .to_string();
    (!name.is_empty()).then_some(name)
}

fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim();
    (!id.is_empty()).then(|| id.to_string())
}

fn start_time(pid: u32) -> Option<u64> {
    parse_start(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Field 22 of a `/proc/<pid>/stat` line. The command name (field 2) is in parentheses and
/// may itself hold spaces and parentheses, so fields are counted from the last `)`.
fn parse_start(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name come field 3 (state) onwards: field 22 is the 20th of them.
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_time_is_counted_past_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 1000 200 18446744073709551615";
        assert_eq!(parse_start(stat), Some(987_654));
        assert_eq!(parse_start("1 (x) S 1 2"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_changed_identity_is_gone() {
        let me = Holder::current().expect("/proc is readable here");
        assert!(!me.is_gone());
        // The same pid with another start time: the pid was reused.
        let reused = Holder {
            start: me.start + 1,
            ..me.clone()
        };
        assert!(reused.is_gone());
        // Another boot of this host: every process of the old boot is gone.
        let rebooted = Holder {
            boot: "00000000-0000-0000-0000-000000000000".into(),
            ..me.clone()
        };
        assert!(rebooted.is_gone());
        // Another host is never judged from here.
        let elsewhere = Holder {
            host: format!("{}-elsewhere", me.host),
            start: me.start + 1,
            ..me.clone()
        };
        assert!(!elsewhere.is_gone());
    }

    #[test]
    fn a_child_that_exited_is_gone() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let me = Holder::current().unwrap();
        let start = start_time(pid);
        child.wait().unwrap();
        // Reaped: no process with that pid (a reuse within this instant would differ in start).
        let gone = Holder {
            pid,
            start: start.unwrap_or(0),
            ..me
        };
        assert!(gone.is_gone());
    }
}
