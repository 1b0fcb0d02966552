//! Measures candidate chunker parameters: dedup across edited versions, chunk counts, speed.
//!
//! ```text
//! cargo run --release --example choose_params -p rbackup-chunker [-- <MiB per corpus>]
//! ```
//!
//! Two deterministic corpora (pseudo-random bytes, and pseudo-text drawn from a small word
//! list), each edited into two new versions: "light" (one edit per 16 MiB) and "heavy" (one per
//! MiB). An edit inserts, deletes or overwrites 1..=4096 bytes at a random place. The dedup
//! figure is the fraction of the new version's bytes that lie in chunks also present in the
//! old version (by BLAKE3 of the chunk); the best possible is just under 100%.
//!
//! Throughput: `cut` is [`Chunker::chunks`] over the buffer (the cut routine alone),
//! `stream` is [`Chunker::stream`] over a slice reader (adds the buffer refills and the copy
//! into owned chunks), `fastcdc` is the `fastcdc` crate's own iterator with its public table,
//! for comparison: the same routine, so it should match `cut`.

use std::collections::HashSet;
use std::time::Instant;

use fastcdc::v2020::FastCDC;
use rbackup_chunker::{Chunker, ChunkerParams};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

fn random_corpus(len: usize, rng: &mut Rng) -> Vec<u8> {
    rng.bytes(len)
}

fn text_corpus(len: usize, rng: &mut Rng) -> Vec<u8> {
    let words: Vec<Vec<u8>> = (0..2000)
        .map(|_| {
            let n = 2 + rng.below(9);
            (0..n).map(|_| b'a' + rng.below(26) as u8).collect()
        })
        .collect();
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        out.extend_from_slice(&words[rng.below(words.len())]);
        out.push(if rng.below(12) == 0 { b'\n' } else { b' ' });
    }
    out.truncate(len);
    out
}

fn edit(base: &[u8], edits: usize, rng: &mut Rng) -> Vec<u8> {
    let mut data = base.to_vec();
    for i in 0..edits {
        let len = 1 + rng.below(4096);
        let at = rng.below(data.len() - len);
        match i % 3 {
            0 => {
                let ins = rng.bytes(len);
                data.splice(at..at, ins);
            }
            1 => {
                data.drain(at..at + len);
            }
            _ => {
                let new = rng.bytes(len);
                data[at..at + len].copy_from_slice(&new);
            }
        }
    }
    data
}

fn dedup_ratio(chunker: &Chunker, old: &[u8], new: &[u8]) -> f64 {
    let known: HashSet<[u8; 32]> = chunker
        .chunks(old)
        .map(|c| *blake3::hash(c).as_bytes())
        .collect();
    let shared: usize = chunker
        .chunks(new)
        .filter(|c| known.contains(blake3::hash(c).as_bytes()))
        .map(<[u8]>::len)
        .sum();
    shared as f64 / new.len() as f64
}

/// Nanoseconds this thread has run on a CPU (Linux), so that other processes competing for
/// this shared machine do not count against the chunker.
fn cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

/// Best of three, MB/s (10^6 bytes per second of CPU time; wall time if that is unavailable).
fn throughput(data: &[u8], mut run: impl FnMut() -> usize) -> f64 {
    (0..3)
        .map(|_| {
            let (cpu, wall) = (cpu_ns(), Instant::now());
            std::hint::black_box(run());
            let secs = match (cpu, cpu_ns()) {
                (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e9,
                _ => wall.elapsed().as_secs_f64(),
            };
            data.len() as f64 / secs / 1e6
        })
        .fold(0.0, f64::max)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mib: usize = std::env::args().nth(1).map_or(Ok(256), |s| s.parse())?;
    let len = mib << 20;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let corpora = [
        ("random", random_corpus(len, &mut rng)),
        ("text", text_corpus(len, &mut rng)),
    ];
    let versions: Vec<_> = corpora
        .iter()
        .map(|(_, base)| (edit(base, mib / 16, &mut rng), edit(base, mib, &mut rng)))
        .collect();
    let key: [u8; 32] = std::array::from_fn(|i| i as u8);
    let candidates = [
        (64, 256, 1024),
        (128, 512, 2048),
        (256, 1024, 4096),
        (256, 1024, 8192),
        (512, 2048, 8192),
        (512, 2048, 16384),
    ];
    println!("{mib} MiB per corpus; sizes in KiB; dedup light/heavy; MB/s of CPU time, best of 3");
    println!(
        "| min | avg | max | corpus | mean chunk | at max | chunks/850MB | dedup light | dedup heavy | cut MB/s | stream MB/s | fastcdc MB/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (min, avg, max) in candidates {
        let params = ChunkerParams {
            min_size: min << 10,
            avg_size: avg << 10,
            max_size: max << 10,
        };
        let chunker = Chunker::new(&key, params)?;
        for ((name, base), (light, heavy)) in corpora.iter().zip(&versions) {
            let sizes: Vec<usize> = chunker.chunks(base).map(<[u8]>::len).collect();
            let mean = base.len() as f64 / sizes.len() as f64;
            let at_max = sizes
                .iter()
                .filter(|&&s| s == params.max_size as usize)
                .count();
            let cut = throughput(base, || chunker.chunks(base).count());
            let stream = throughput(base, || chunker.stream(&base[..]).count());
            let (mn, av, mx) = (
                min as usize * 1024,
                avg as usize * 1024,
                max as usize * 1024,
            );
            let public = throughput(base, || FastCDC::new(base, mn, av, mx).count());
            println!(
                "| {min} | {avg} | {max} | {name} | {:.0} KiB | {:.1}% | {:.0} | {:.2}% | {:.2}% | {cut:.0} | {stream:.0} | {public:.0} |",
                mean / 1024.0,
                100.0 * at_max as f64 / sizes.len() as f64,
                850e6 / mean,
                100.0 * dedup_ratio(&chunker, base, light),
                100.0 * dedup_ratio(&chunker, base, heavy),
            );
        }
    }
    Ok(())
}
