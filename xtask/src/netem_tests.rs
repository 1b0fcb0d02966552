//! Tests of the emulated link: the parsers everywhere, the link itself as root.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::*;

#[test]
fn rates_parse_like_tc() {
    assert_eq!(parse_rate("100mbit"), Ok(100_000_000));
    assert_eq!(parse_rate("1.5Gbit"), Ok(1_500_000_000));
    assert_eq!(parse_rate("800kbit"), Ok(800_000));
    assert_eq!(parse_rate("64000"), Ok(64_000));
    assert_eq!(parse_rate("12mbps"), Ok(96_000_000));
    assert!(parse_rate("fast").is_err());
    assert!(parse_rate("10 furlongs").is_err());
    assert!(parse_rate("0mbit").is_err());
}

#[test]
fn delays_parse() {
    assert_eq!(parse_delay("20ms"), Ok(Duration::from_millis(20)));
    assert_eq!(parse_delay("1.5s"), Ok(Duration::from_millis(1500)));
    assert_eq!(parse_delay("500us"), Ok(Duration::from_micros(500)));
    assert_eq!(parse_delay("35"), Ok(Duration::from_millis(35)));
    assert!(parse_delay("soon").is_err());
    assert!(parse_delay("1h").is_err());
}

#[test]
fn queue_defaults_to_twice_the_bandwidth_delay_product() {
    let cfg = LinkConfig::bench(Duration::from_millis(20), 100_000_000);
    // 100 Mbit/s x 40 ms = 500 kB.
    assert_eq!(cfg.queue(), 1_000_000);
    assert_eq!(cfg.describe(), "RTT 40 ms, 100 Mbit/s, queue 1.0 MB");
    let slow = LinkConfig::bench(Duration::from_millis(1), 1_000_000);
    assert_eq!(slow.queue(), 64 << 10);
    assert_eq!(slow.server_addr(), Ipv4Addr::new(10, 203, 0, 2));
}

const TEST: &str = "netem::tests::link_has_the_round_trip_and_the_cap";
const PORT: u16 = 7001;
const RATE: u64 = 100_000_000;
const BULK: usize = 5_000_000;

/// Builds a link (over a leftover namespace of the same name, as a killed run leaves), then
/// measures it with TCP: a 1-byte echo must take the 40 ms round trip, a 5 MB download must
/// run at the cap once slow start is over; dropping it must remove the namespace.
#[test]
fn link_has_the_round_trip_and_the_cap() {
    if !rbackup_testenv::need_root(TEST, "to create TUN devices and a network namespace")
        || !rbackup_testenv::need_command(TEST, "ip", "iproute2")
    {
        return;
    }
    let _ran = rbackup_testenv::ran(TEST, "root, TUN, network namespace");
    let cfg = LinkConfig {
        netns: "rbnet-test".into(),
        subnet: 1,
        delay: Duration::from_millis(20),
        rate_bits: RATE,
        queue_bytes: None,
    };
    let _ = remove_netns(&cfg.netns);
    ip(&["netns", "add", &cfg.netns]).unwrap();
    let link = Link::start(cfg.clone()).unwrap();
    let server = serve_in_netns(&cfg.netns, cfg.server_addr());
    let addr = (cfg.server_addr(), PORT);

    let mut rtts = echo_round_trips(addr, 7);
    rtts.sort();
    assert!(rtts[0] >= Duration::from_millis(40), "{rtts:?}");
    assert!(rtts[rtts.len() / 2] < Duration::from_millis(60), "{rtts:?}");

    let bits_s = steady_download_rate(addr);
    let share = bits_s / RATE as f64;
    eprintln!(
        "round trips {rtts:?}; steady download {:.1} Mbit/s",
        bits_s / 1e6
    );
    assert!(
        (0.70..=1.05).contains(&share),
        "{bits_s:.0} bit/s = {share:.2} of the cap"
    );

    server.join().unwrap();
    let [(up, _), (down, _)] = link.counts();
    assert!(up > 1000 && down > 3000, "forwarded {up} up, {down} down");
    drop(link);
    let list = util::capture(Command::new("ip").args(["netns", "list"])).unwrap();
    assert!(!list.contains("rbnet-test"), "{list}");
}

/// A server thread inside the namespace: the first connection echoes what it gets, the
/// second receives `BULK` bytes of download. Returns once it listens.
fn serve_in_netns(netns: &str, ip: Ipv4Addr) -> thread::JoinHandle<()> {
    let ns = File::open(format!("/run/netns/{netns}")).unwrap();
    let (ready, wait) = mpsc::channel();
    let handle = thread::spawn(move || {
        // Namespaces are per thread: this one thread moves, the test stays where it is.
        rustix::thread::move_into_link_name_space(
            ns.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap();
        let listener = TcpListener::bind((ip, PORT)).unwrap();
        ready.send(()).unwrap();
        let (mut echo, _) = listener.accept().unwrap();
        echo.set_nodelay(true).unwrap();
        let mut byte = [0u8; 1];
        while echo.read_exact(&mut byte).is_ok() {
            echo.write_all(&byte).unwrap();
        }
        let (mut bulk, _) = listener.accept().unwrap();
        bulk.write_all(&vec![0x5a; BULK]).unwrap();
    });
    wait.recv_timeout(Duration::from_secs(5)).unwrap();
    handle
}

fn echo_round_trips(addr: (Ipv4Addr, u16), n: usize) -> Vec<Duration> {
    let mut s = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(5)).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut byte = [0u8; 1];
    let rtts = (0..n)
        .map(|_| {
            let t = Instant::now();
            s.write_all(b"x").unwrap();
            s.read_exact(&mut byte).unwrap();
            t.elapsed()
        })
        .collect();
    drop(s);
    rtts
}

/// The download rate in bit/s between the first MB and the end, past TCP's slow start.
fn steady_download_rate(addr: (Ipv4Addr, u16)) -> f64 {
    let mut s = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = vec![0u8; 65_536];
    let (mut got, mut mark) = (0usize, None);
    while got < BULK {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "download ended after {got} bytes");
        got += n;
        if mark.is_none() && got >= 1_000_000 {
            mark = Some((Instant::now(), got));
        }
    }
    let (t, at) = mark.unwrap();
    (got - at) as f64 * 8.0 / t.elapsed().as_secs_f64()
}
