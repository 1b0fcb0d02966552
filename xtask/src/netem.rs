//! A slow network link between this host and a network namespace, emulated in user space, for
//! `cargo xtask bench --network`.
//!
//! The usual tool is `tc qdisc add dev VETH root netem delay 20ms rate 100mbit` on both ends
//! of a veth pair. This machine's kernel has no `sch_netem` (and no modules to load it), nor
//! `sch_fq`, so neither netem nor a BPF program stamping departure times (which needs fq to
//! honour them) can delay packets. `tbf` could cap the rate, but not delay. So the link is
//! built at the packet level instead, which TCP cannot tell from a real one:
//!
//! - two TUN devices: `<ns>0` stays in the root namespace with `10.203.N.1/30`, `<ns>1` is
//!   moved into the new namespace `<ns>` with `10.203.N.2/30`, where the servers listen;
//! - for each direction a reader thread takes every IP packet the kernel sends into one
//!   device, a [`Shaper`] gives it its arrival time (a serialising cap of `rate` bit/s behind
//!   a tail-drop queue of about twice the bandwidth-delay product, then the one-way delay),
//!   and a writer thread injects it into the other device when that time comes.
//!
//! So every segment, ACK and SYN sees `delay` each way and the cap, retransmissions and
//! congestion control work as on a WAN path, and a full queue drops packets instead of
//! stalling senders. The same figures could be had, with netem available, from
//! `tc qdisc add dev X root netem delay 20ms rate 100mbit limit N` on each end of a veth.
//!
//! The TUN devices are not persistent: they vanish when the fds close, even if the process is
//! killed. What a killed run leaves is the namespace (and servers started in it), which
//! [`Link::start`] removes before making a new one, as [`Link`]'s drop does.
//!
//! Traffic to the namespace's address must never leave by another interface: [`Link::start`]
//! checks that the kernel routes it into `<ns>0` before anyone connects.

use std::fs::File;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::netem_forward::{DirStats, Shaper, open_tun, spawn_direction};
use crate::util;

/// What link to emulate, and where.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Name of the network namespace (and prefix of the TUN devices); at most 14 bytes.
    pub netns: String,
    /// Third octet of the `10.203.N.0/30` subnet, so that links can coexist.
    pub subnet: u8,
    /// One-way delay; the round trip is twice this.
    pub delay: Duration,
    /// Bandwidth cap of each direction, in bit/s.
    pub rate_bits: u64,
    /// Queue in front of the cap, in bytes; `None` for twice the bandwidth-delay product.
    pub queue_bytes: Option<u64>,
}

impl LinkConfig {
    /// The bench's link: namespace `rbnet`, subnet 10.203.0.0/30.
    pub fn bench(delay: Duration, rate_bits: u64) -> Self {
        LinkConfig {
            netns: "rbnet".to_string(),
            subnet: 0,
            delay,
            rate_bits,
            queue_bytes: None,
        }
    }

    /// The queue size in bytes: given, or twice rate x round trip (at least 64 KiB, so that a
    /// slow link still holds a few full-size segments).
    pub fn queue(&self) -> u64 {
        self.queue_bytes.unwrap_or_else(|| {
            let rtt = 2 * self.delay.as_nanos();
            let bdp = u128::from(self.rate_bits) * rtt / 8 / 1_000_000_000;
            (2 * bdp as u64).max(64 << 10)
        })
    }

    /// Address of this host's end.
    pub fn host_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 203, self.subnet, 1)
    }

    /// Address of the namespace's end, where servers listen.
    pub fn server_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 203, self.subnet, 2)
    }

    /// `RTT 40 ms, 100 Mbit/s, queue 1.0 MB` for tables.
    pub fn describe(&self) -> String {
        format!(
            "RTT {} ms, {} Mbit/s, queue {}",
            2 * self.delay.as_millis(),
            self.rate_bits as f64 / 1e6,
            util::human_bytes(self.queue())
        )
    }
}

/// A running emulated link; dropping it stops the forwarders, closes the TUN devices and
/// deletes the namespace (killing whatever still runs in it).
#[derive(Debug)]
pub struct Link {
    cfg: LinkConfig,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Host to namespace, and namespace to host.
    stats: [Arc<DirStats>; 2],
}

impl Link {
    /// Creates the namespace, the TUN devices and their addresses, and starts forwarding.
    pub fn start(cfg: LinkConfig) -> Result<Link> {
        if cfg.netns.is_empty() || cfg.netns.len() > 14 {
            bail!("namespace name {:?} must have 1 to 14 bytes", cfg.netns);
        }
        remove_netns(&cfg.netns)?;
        ip(&["netns", "add", &cfg.netns])?;
        // From here on the drop cleans up, whatever fails next.
        let mut link = Link {
            cfg,
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            stats: Default::default(),
        };
        let (host, far) = link.make_devices()?;
        link.start_forwarders(host, far)?;
        link.check_route()?;
        Ok(link)
    }

    /// The link's settings.
    pub fn config(&self) -> &LinkConfig {
        &self.cfg
    }

    /// A command that runs `program` inside the namespace (`ip netns exec NS program`).
    pub fn command_in(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.cfg.netns, program]);
        cmd
    }

    /// Packets forwarded and dropped so far, host to namespace and back, for the report.
    pub fn counts(&self) -> [(u64, u64); 2] {
        self.stats.each_ref().map(|s| {
            (
                s.forwarded.load(Ordering::Relaxed),
                s.dropped.load(Ordering::Relaxed),
            )
        })
    }

    fn make_devices(&self) -> Result<(File, File)> {
        let ns = &self.cfg.netns;
        let (host_dev, far_dev) = (format!("{ns}0"), format!("{ns}1"));
        let host = open_tun(&host_dev)?;
        let far = open_tun(&far_dev)?;
        ip(&["link", "set", &far_dev, "netns", ns])?;
        let host_cidr = format!("{}/30", self.cfg.host_addr());
        let far_cidr = format!("{}/30", self.cfg.server_addr());
        ip(&["addr", "add", &host_cidr, "dev", &host_dev])?;
        ip(&["link", "set", &host_dev, "up"])?;
        let in_ns = |args: &[&str]| {
            let mut all = vec!["netns", "exec", ns, "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        in_ns(&["link", "set", "lo", "up"])?;
        in_ns(&["addr", "add", &far_cidr, "dev", &far_dev])?;
        in_ns(&["link", "set", &far_dev, "up"])?;
        Ok((host, far))
    }

    fn start_forwarders(&mut self, host: File, far: File) -> Result<()> {
        let (host, far) = (Arc::new(host), Arc::new(far));
        let shaper = Shaper::new(self.cfg.rate_bits, self.cfg.delay, self.cfg.queue());
        let ends = [
            ("netem-up", &host, &far, &self.stats[0]),
            ("netem-down", &far, &host, &self.stats[1]),
        ];
        for (name, from, to, stats) in ends {
            let pair = spawn_direction(
                name,
                Arc::clone(from),
                Arc::clone(to),
                shaper.clone(),
                Arc::clone(&self.stop),
                Arc::clone(stats),
            )?;
            self.threads.extend(pair);
        }
        Ok(())
    }

    /// Fails unless the kernel sends traffic for the server address into our device: with a
    /// missing address or route it would take the default route off the machine instead.
    fn check_route(&self) -> Result<()> {
        let dev = format!("{}0", self.cfg.netns);
        let server = self.cfg.server_addr().to_string();
        let route = util::capture(Command::new("ip").args(["-o", "route", "get", &server]))?;
        if !route.split_whitespace().any(|w| w == dev) {
            bail!("{server} is not routed into {dev} but: {}", route.trim());
        }
        Ok(())
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // The readers see the flag within one poll period; the writers end when their
        // reader's queue closes. Joining them drops the last references to the TUN files.
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Err(e) = remove_netns(&self.cfg.netns) {
            eprintln!("warning: {e:#}");
        }
    }
}

fn ip(args: &[&str]) -> Result<()> {
    util::capture(Command::new("ip").args(args)).map(drop)
}

/// Deletes namespace `name` if it exists, first killing the processes still in it (servers a
/// killed bench left behind), which would otherwise keep the namespace alive unnamed.
pub fn remove_netns(name: &str) -> Result<()> {
    let list = util::capture(Command::new("ip").args(["netns", "list"]))?;
    if !list
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
    {
        return Ok(());
    }
    let pids = util::capture(Command::new("ip").args(["netns", "pids", name]))?;
    for pid in pids
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        if let Some(pid) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
    ip(&["netns", "delete", name]).with_context(|| format!("deleting network namespace {name}"))
}

/// Parses a rate as tc writes it: `100mbit`, `1.5gbit`, `800kbit`, `500000bit` or a bare
/// number (bit/s), or in bytes per second: `12mbps`, `1gbps`. Units are decimal.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let factor = match unit.trim() {
        "" | "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        "bps" => 8.0,
        "kbps" => 8e3,
        "mbps" => 8e6,
        "gbps" => 8e9,
        other => {
            return Err(format!(
                "`{text}`: unknown rate unit `{other}` (write e.g. 100mbit)"
            ));
        }
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a rate (write e.g. 100mbit)"))?;
    let bits = (n * factor).round();
    if !(1.0..=1e12).contains(&bits) {
        return Err(format!("`{text}`: a rate must be 1 bit/s to 1000 gbit"));
    }
    Ok(bits as u64)
}

/// Parses a one-way delay: `20ms`, `1.5s`, `500us`, or a bare number of milliseconds.
pub fn parse_delay(text: &str) -> Result<Duration, String> {
    let t = text.trim().to_ascii_lowercase();
    let (num, unit_s) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else {
        (t.as_str(), 1e-3)
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a delay (write e.g. 20ms)"))?;
    let secs = n * unit_s;
    if !(0.0..=10.0).contains(&secs) {
        return Err(format!("`{text}`: a delay must be 0 to 10 s"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
#[path = "netem_tests.rs"]
mod tests;
