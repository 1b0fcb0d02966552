//! The packet path of the emulated link (see [`crate::netem`]): opening the TUN devices, the
//! [`Shaper`] that decides when each packet arrives at the far end (or that it is dropped), and
//! the reader and writer threads that move packets from one TUN device to the other.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Opens a new non-persistent TUN device `name` (layer 3, no packet-info header): each read
/// returns one IP packet the kernel routed into the device, each write injects one IP packet
/// as if it had arrived on it. The device disappears when the returned file is closed.
pub fn open_tun(name: &str) -> Result<File> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        bail!(
            "interface name {name:?} must have 1 to {} bytes",
            libc::IFNAMSIZ - 1
        );
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .context("opening /dev/net/tun (the kernel needs CONFIG_TUN and we need root)")?;
    tun_set_iff(&file, name).with_context(|| format!("creating TUN device {name}"))?;
    Ok(file)
}

/// `ioctl(TUNSETIFF)` with `IFF_TUN | IFF_NO_PI`: neither std nor rustix wraps it safely, and
/// it is the only foreign call the emulator needs, so the one `unsafe` of xtask lives here.
#[allow(unsafe_code)]
fn tun_set_iff(file: &File, name: &str) -> io::Result<()> {
    // SAFETY: `ifreq` is plain old data (a byte array and a union of integers and arrays),
    // for which all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: the fd is an open /dev/net/tun, and TUNSETIFF reads and writes one `ifreq`,
    // which `req` is and which outlives the call; the name is NUL-terminated (checked length).
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The bottleneck of one direction: a serialising bandwidth cap with a bounded FIFO in front
/// of it (tail drop), followed by a fixed propagation delay. Packets leave in arrival order.
#[derive(Debug, Clone)]
pub struct Shaper {
    rate_bits: u64,
    delay: Duration,
    queue_bytes: u64,
    /// When the last admitted packet's last bit leaves the bottleneck.
    busy_until: Option<Instant>,
}

impl Shaper {
    /// A cap of `rate_bits` bit/s (at least 1) behind a queue of `queue_bytes`, then `delay`.
    pub fn new(rate_bits: u64, delay: Duration, queue_bytes: u64) -> Self {
        Shaper {
            rate_bits: rate_bits.max(1),
            delay,
            queue_bytes,
            busy_until: None,
        }
    }

    /// When a packet of `len` bytes that arrived at `now` reaches the far end, or `None` when
    /// the queue is full and it is dropped.
    ///
    /// The queue's content is not kept as a list: the bytes still waiting are exactly the time
    /// the bottleneck stays busy times the rate, so that is what the limit is checked against.
    pub fn admit(&mut self, now: Instant, len: usize) -> Option<Instant> {
        let start = self.busy_until.filter(|t| *t > now).unwrap_or(now);
        let backlog_ns = (start - now).as_nanos();
        let backlog = backlog_ns * u128::from(self.rate_bits) / 8 / 1_000_000_000;
        if backlog + len as u128 > u128::from(self.queue_bytes) {
            return None;
        }
        let tx_ns = len as u128 * 8 * 1_000_000_000 / u128::from(self.rate_bits);
        let done = start + Duration::from_nanos(tx_ns as u64);
        self.busy_until = Some(done);
        Some(done + self.delay)
    }
}

/// Packet counts of one direction.
#[derive(Debug, Default)]
pub struct DirStats {
    /// Packets delivered to the far end.
    pub forwarded: AtomicU64,
    /// Packets dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Bytes delivered.
    pub bytes: AtomicU64,
}

/// How often a reader looks at the stop flag while no packet comes.
const POLL_EVERY: Duration = Duration::from_millis(100);

/// Starts the two threads of one direction: a reader that takes packets from `from`, stamps
/// them with the shaper's due time and queues them, and a writer that puts each into `to`
/// when it is due. Both end once `stop` is set (the writer when the reader's queue closes).
pub fn spawn_direction(
    name: &str,
    from: Arc<File>,
    to: Arc<File>,
    shaper: Shaper,
    stop: Arc<AtomicBool>,
    stats: Arc<DirStats>,
) -> Result<[JoinHandle<()>; 2]> {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let reader_stats = Arc::clone(&stats);
    let reader = thread::Builder::new()
        .name(format!("{name}-in"))
        .spawn(move || read_loop(&from, shaper, &stop, &tx, &reader_stats))
        .context("starting a forwarder thread")?;
    let writer = thread::Builder::new()
        .name(format!("{name}-out"))
        .spawn(move || write_loop(&to, &rx, &stats))
        .context("starting a forwarder thread")?;
    Ok([reader, writer])
}

fn read_loop(
    from: &File,
    mut shaper: Shaper,
    stop: &AtomicBool,
    tx: &mpsc::Sender<(Instant, Vec<u8>)>,
    stats: &DirStats,
) {
    let mut buf = vec![0u8; 65_536];
    let timeout = rustix::event::Timespec::try_from(POLL_EVERY).expect("a small timeout");
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [rustix::event::PollFd::new(
            from,
            rustix::event::PollFlags::IN,
        )];
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            Ok(_) => {}
            Err(_) => return,
        }
        // The device is gone (its namespace was deleted) or broken: nothing more will come.
        let Ok(n) = (&*from).read(&mut buf) else {
            return;
        };
        match shaper.admit(Instant::now(), n) {
            Some(due) => {
                if tx.send((due, buf[..n].to_vec())).is_err() {
                    return;
                }
            }
            None => {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn write_loop(to: &File, rx: &mpsc::Receiver<(Instant, Vec<u8>)>, stats: &DirStats) {
    for (due, packet) in rx {
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
        // A write fails only when the far device is being torn down; the packet is lost then,
        // as it would be on a link going down.
        if (&*to).write(&packet).is_ok() {
            stats.forwarded.fetch_add(1, Ordering::Relaxed);
            stats
                .bytes
                .fetch_add(packet.len() as u64, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_lone_packet_takes_its_serialisation_time_plus_the_delay() {
        // 1500 bytes at 12 Mbit/s serialise in exactly 1 ms.
        let mut s = Shaper::new(12_000_000, 20 * MS, 100_000);
        let t0 = Instant::now();
        assert_eq!(s.admit(t0, 1500), Some(t0 + 21 * MS));
        // Long after, the link is idle again: no queueing delay.
        let t1 = t0 + 500 * MS;
        assert_eq!(s.admit(t1, 1500), Some(t1 + 21 * MS));
    }

    #[test]
    fn a_burst_is_spaced_at_the_rate_and_its_tail_dropped() {
        // 10 packets of 1500 bytes fit the 15000-byte queue; the 11th does not.
        let mut s = Shaper::new(12_000_000, 20 * MS, 15_000);
        let t0 = Instant::now();
        let due: Vec<Option<Instant>> = (0..11).map(|_| s.admit(t0, 1500)).collect();
        for (i, d) in due[..10].iter().enumerate() {
            assert_eq!(*d, Some(t0 + (21 + i as u32) * MS), "packet {i}");
        }
        assert_eq!(due[10], None);
        // Once 3 packets have left the queue, 3 more fit, and they queue behind the rest.
        let t3 = t0 + 3 * MS;
        assert_eq!(s.admit(t3, 1500), Some(t0 + 31 * MS));
        assert_eq!(s.admit(t3, 1500), Some(t0 + 32 * MS));
        assert_eq!(s.admit(t3, 1500), Some(t0 + 33 * MS));
        assert_eq!(s.admit(t3, 1500), None);
    }

    #[test]
    fn long_run_throughput_is_the_rate() {
        // Offer 1000 packets as fast as possible for 1 s: what gets through in that second is
        // the cap, whatever the offered load.
        let rate = 8_000_000; // 1 MB/s
        let mut s = Shaper::new(rate, 10 * MS, 50_000);
        let t0 = Instant::now();
        let mut delivered = 0u64;
        for i in 0..100_000u32 {
            let now = t0 + Duration::from_micros(u64::from(i) * 10);
            if s.admit(now, 1000).is_some_and(|d| d <= t0 + 1000 * MS) {
                delivered += 1000;
            }
        }
        // 990 ms of serialisation after the first 10 ms of delay: 990 kB, one packet either way.
        assert!((989_000..=991_000).contains(&delivered), "{delivered}");
    }

    #[test]
    fn interface_names_are_checked() {
        assert!(open_tun("").is_err());
        let err = open_tun("a-name-far-too-long").unwrap_err().to_string();
        assert!(err.contains("1 to 15 bytes"), "{err}");
    }
}
