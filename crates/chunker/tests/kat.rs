//! Known-answer vectors: the cut points are part of the repository format (a change would make
//! every new backup share nothing with the old ones), so they must not drift silently.

mod common;

use rbackup_chunker::{Chunker, ChunkerParams, GEAR_TABLE_CONTEXT, GearTable};
use serde::Deserialize;

#[derive(Deserialize)]
struct Kat {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    key_hex: String,
    input: Input,
    params: ChunkerParams,
    gear_first4_hex: Vec<String>,
    cut_points: Vec<usize>,
}

#[derive(Deserialize)]
struct Input {
    seed: u64,
    len: usize,
    byte_mask: u8,
}

fn load() -> Kat {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/chunker/kat.json"
    );
    let text = std::fs::read_to_string(path).expect("read testdata/chunker/kat.json");
    serde_json::from_str(&text).expect("parse kat.json")
}

fn parse_key(hex: &str) -> [u8; 32] {
    assert_eq!(hex.len(), 64, "key_hex must be 32 bytes");
    std::array::from_fn(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex key"))
}

#[test]
fn kat_file_has_cases() {
    let kat = load();
    assert!(kat.cases.len() >= 3);
    assert!(kat.cases.iter().all(|c| c.cut_points.len() >= 5));
}

#[test]
fn cut_points_match_known_answers() {
    for case in load().cases {
        let data = common::xorshift_bytes(case.input.seed, case.input.len, case.input.byte_mask);
        let chunker = Chunker::new(&parse_key(&case.key_hex), case.params).expect("valid params");
        let mut end = 0;
        let cuts: Vec<usize> = chunker
            .chunks(&data)
            .map(|c| {
                end += c.len();
                end
            })
            .collect();
        assert_eq!(
            cuts, case.cut_points,
            "case {:?}: slice chunking",
            case.name
        );
        let mut end = 0;
        let streamed: Vec<usize> = chunker
            .stream(&data[..])
            .map(|c| {
                end += c.expect("in-memory read").len();
                end
            })
            .collect();
        assert_eq!(streamed, case.cut_points, "case {:?}: stream", case.name);
    }
}

#[test]
fn gear_table_matches_known_answers() {
    for case in load().cases {
        let table = GearTable::from_key(&parse_key(&case.key_hex));
        let first4: Vec<String> = table.entries()[..4]
            .iter()
            .map(|e| format!("{e:016x}"))
            .collect();
        assert_eq!(first4, case.gear_first4_hex, "case {:?}", case.name);
    }
}

/// Recomputes the whole table straight from BLAKE3, independently of `GearTable`.
#[test]
fn gear_table_is_blake3_xof_of_key() {
    let key = common::key(9);
    let mut bytes = [0u8; 2048];
    let mut hasher = blake3::Hasher::new_derive_key("rbackup chunker gear table v1");
    hasher.update(&key);
    hasher.finalize_xof().fill(&mut bytes);
    let expected: Vec<u64> = bytes
        .chunks_exact(8)
        .map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")))
        .collect();
    assert_eq!(GearTable::from_key(&key).entries().as_slice(), expected);
    assert_eq!(GEAR_TABLE_CONTEXT, "rbackup chunker gear table v1");
}
