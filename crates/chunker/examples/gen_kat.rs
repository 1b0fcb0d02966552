//! Writes the known-answer vectors `testdata/chunker/kat.json` (once; they are committed).
//!
//! ```text
//! cargo run --example gen_kat -p rbackup-chunker            # refuses to overwrite
//! cargo run --example gen_kat -p rbackup-chunker -- --force # only for a deliberate format change
//! ```
//!
//! Inputs are not committed: each case names the generator seed, length and byte mask, and
//! `tests/kat.rs` regenerates them with the same generator (`tests/common/mod.rs`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::path::Path;

use rbackup_chunker::{Chunker, ChunkerParams, GearTable};

struct Case {
    name: &'static str,
    key: [u8; 32],
    seed: u64,
    len: usize,
    byte_mask: u8,
    params: ChunkerParams,
}

fn params(min_size: u32, avg_size: u32, max_size: u32) -> ChunkerParams {
    ChunkerParams {
        min_size,
        avg_size,
        max_size,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let counting: [u8; 32] = std::array::from_fn(|i| i as u8);
    let other: [u8; 32] = std::array::from_fn(|i| 0xa5 ^ (i as u8 * 7));
    let cases = [
        Case {
            name: "small params, random",
            key: counting,
            seed: 1,
            len: 64 << 10,
            byte_mask: 0xff,
            params: params(64, 256, 1024),
        },
        Case {
            name: "64 KiB average, random",
            key: counting,
            seed: 2,
            len: 2 << 20,
            byte_mask: 0xff,
            params: params(16 << 10, 64 << 10, 256 << 10),
        },
        Case {
            name: "64 KiB average, low entropy (2 bits per byte)",
            key: counting,
            seed: 3,
            len: 2 << 20,
            byte_mask: 0x03,
            params: params(16 << 10, 64 << 10, 256 << 10),
        },
        Case {
            name: "512 KiB average, other key",
            key: other,
            seed: 4,
            len: 4 << 20,
            byte_mask: 0xff,
            params: params(128 << 10, 512 << 10, 2 << 20),
        },
    ];
    let mut json = Vec::new();
    for case in &cases {
        let data = common::xorshift_bytes(case.seed, case.len, case.byte_mask);
        let chunker = Chunker::new(&case.key, case.params)?;
        let mut end = 0;
        let cut_points: Vec<usize> = chunker
            .chunks(&data)
            .map(|c| {
                end += c.len();
                end
            })
            .collect();
        let table = GearTable::from_key(&case.key);
        let first4: Vec<String> = table.entries()[..4]
            .iter()
            .map(|e| format!("{e:016x}"))
            .collect();
        json.push(serde_json::json!({
            "name": case.name,
            "key_hex": hex(&case.key),
            "input": { "seed": case.seed, "len": case.len, "byte_mask": case.byte_mask },
            "params": case.params,
            "gear_first4_hex": first4,
            "cut_points": cut_points,
        }));
    }
    let doc = serde_json::json!({
        "format": "rbackup chunker known-answer vectors v1",
        "gear_table": "BLAKE3 derive_key(\"rbackup chunker gear table v1\", key), XOF 2048 bytes, 256 little-endian u64",
        "input_generator": "xorshift64: x ^= x << 13; x ^= x >> 7; x ^= x << 17; emit x as 8 little-endian bytes; truncate to len; AND each byte with byte_mask",
        "cut_points": "end offset of each chunk, in order; the last equals len",
        "cases": json,
    });
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/chunker/kat.json");
    if path.exists() && std::env::args().nth(1).as_deref() != Some("--force") {
        return Err(format!("{} exists; pass --force to overwrite", path.display()).into());
    }
    std::fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")?;
    println!("wrote {}", path.display());
    Ok(())
}
