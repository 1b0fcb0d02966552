//! Per-stage throughput of the backup pipeline: chunking, blob ids, compression, sealing.
//!
//! `cargo bench -p rbackup-engine --bench stages`. These show where a backup's time goes; the
//! end-to-end figures against restic, rustic and borg come from `cargo xtask bench`.

use divan::Bencher;
use divan::counter::BytesCount;
use rbackup_engine::chunker::{Chunker, ChunkerParams};
use rbackup_engine::crypto::{BlobId, MasterKeys};

const MIB: usize = 1 << 20;

fn main() {
    divan::main();
}

fn noise(n: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn text(n: usize) -> Vec<u8> {
    let words = [
        "fn ", "let ", "match ", "self", ".value", "(", ")", ";\n", "    ", "index", " = ",
    ];
    let mut x = 7u64;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.extend_from_slice(words[(x >> 33) as usize % words.len()].as_bytes());
    }
    out.truncate(n);
    out
}

#[divan::bench]
fn chunk_64mib(b: Bencher) {
    let data = noise(64 * MIB);
    let chunker = Chunker::new(&[7; 32], ChunkerParams::default()).unwrap();
    b.counter(BytesCount::new(data.len())).bench(|| {
        chunker
            .stream(&data[..])
            .map(|c| c.unwrap().len())
            .sum::<usize>()
    });
}

#[divan::bench]
fn blob_id_1mib(b: Bencher) {
    let keys = MasterKeys::generate();
    let data = noise(MIB);
    b.counter(BytesCount::new(data.len()))
        .bench(|| keys.blob_id(&data));
}

#[divan::bench(args = [1, 3, 6])]
fn zstd_text_1mib(b: Bencher, level: i32) {
    let data = text(MIB);
    let mut c = zstd::bulk::Compressor::new(level).unwrap();
    b.counter(BytesCount::new(data.len()))
        .bench_local(|| c.compress(&data).unwrap().len());
}

#[divan::bench]
fn zstd_noise_1mib(b: Bencher) {
    let data = noise(MIB);
    let mut c = zstd::bulk::Compressor::new(3).unwrap();
    b.counter(BytesCount::new(data.len()))
        .bench_local(|| c.compress(&data).unwrap().len());
}

#[divan::bench]
fn seal_blob_1mib(b: Bencher) {
    let keys = MasterKeys::generate();
    let key = keys.pack_key(&[1; 32]);
    let data = noise(MIB);
    let id = BlobId([2; 32]);
    b.counter(BytesCount::new(data.len()))
        .bench(|| key.seal_blob(&id, 0, &data).len());
}

#[divan::bench]
fn open_blob_1mib(b: Bencher) {
    let keys = MasterKeys::generate();
    let key = keys.pack_key(&[1; 32]);
    let id = BlobId([2; 32]);
    let sealed = key.seal_blob(&id, 0, &noise(MIB));
    b.counter(BytesCount::new(MIB))
        .bench(|| key.open_blob(&id, 0, &sealed).unwrap().len());
}
