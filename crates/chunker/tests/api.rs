//! Keying, parameter validation and streaming edge cases.

mod common;

use std::collections::HashSet;

use common::{SMALL, ShortReader, key, xorshift_bytes};
use rbackup_chunker::{Chunker, ChunkerError, ChunkerParams, GearTable};

fn cut_points(chunker: &Chunker, data: &[u8]) -> Vec<usize> {
    let mut end = 0;
    chunker
        .chunks(data)
        .map(|c| {
            end += c.len();
            end
        })
        .collect()
}

#[test]
fn different_keys_give_different_cut_points() {
    let data = xorshift_bytes(7, 256 << 10, 0xff);
    let a = cut_points(&Chunker::new(&key(1), SMALL).unwrap(), &data);
    let b = cut_points(&Chunker::new(&key(2), SMALL).unwrap(), &data);
    assert!(a.len() > 100 && b.len() > 100);
    let shared = a
        .iter()
        .collect::<HashSet<_>>()
        .intersection(&b.iter().collect())
        .count();
    // Independent tables agree on a cut only by chance (the final offset always matches).
    assert!(
        shared < a.len() / 4,
        "{shared} of {} cut points shared",
        a.len()
    );
}

fn xor_is_constant(x: &[u64; 256], y: &[u64; 256]) -> bool {
    x.iter().zip(y).all(|(a, b)| a ^ b == x[0] ^ y[0])
}

#[test]
fn table_is_not_a_constant_xor_of_another() {
    let t1 = GearTable::from_key(&key(1));
    let t2 = GearTable::from_key(&key(2));
    assert!(!xor_is_constant(t1.entries(), t2.entries()));
    let (public, _) = fastcdc::v2020::get_gear_with_seed(0);
    let public: &[u64; 256] = public.as_ref().try_into().unwrap();
    assert!(!xor_is_constant(t1.entries(), public));
    // The check itself can fail: fastcdc's seeded table is exactly such a constant XOR.
    let (seeded, _) = fastcdc::v2020::get_gear_with_seed(0x1234_5678_9abc_def0);
    assert!(xor_is_constant(seeded.as_ref().try_into().unwrap(), public));
}

#[test]
fn table_entries_look_random() {
    let t = GearTable::from_key(&[0; 32]);
    let distinct: HashSet<u64> = t.entries().iter().copied().collect();
    assert_eq!(distinct.len(), 256);
    let ones: u32 = t.entries().iter().map(|e| e.count_ones()).sum();
    assert!((7600..8800).contains(&ones), "{ones} of 16384 bits set");
}

#[test]
fn debug_does_not_print_the_table() {
    let t = GearTable::from_key(&key(3));
    let chunker = Chunker::new(&key(3), SMALL).unwrap();
    let stream = chunker.stream(&b""[..]);
    for text in [
        format!("{t:?}"),
        format!("{chunker:?}"),
        format!("{stream:?}"),
    ] {
        for entry in &t.entries()[..8] {
            assert!(!text.contains(&entry.to_string()), "{text}");
            assert!(!text.contains(&format!("{entry:x}")), "{text}");
        }
    }
}

#[test]
fn defaults_are_valid() {
    let p = ChunkerParams::default();
    p.validate().unwrap();
    assert_eq!(Chunker::new(&key(0), p).unwrap().params(), p);
}

#[test]
fn invalid_params_name_the_field_and_range() {
    let p = |min_size, avg_size, max_size| ChunkerParams {
        min_size,
        avg_size,
        max_size,
    };
    let cases = [
        (p(32, 256, 1024), "min_size"),
        (p(65, 256, 1024), "min_size"),
        (p(512, 256, 1024), "min_size"),
        (p(64, 300, 1024), "avg_size"),
        (p(64, 2048, 1024), "avg_size"),
        (p(64, 32 << 20, 64 << 20), "avg_size"),
        (p(64, 256, (64 << 20) + 2), "max_size"),
        (p(64, 256, 1025), "max_size"),
    ];
    for (params, field) in cases {
        let err = params.validate().unwrap_err();
        let ChunkerError::InvalidParams { field: got, .. } = &err else {
            panic!("unexpected {err:?}");
        };
        assert_eq!(*got, field, "{params:?}");
        let text = err.to_string();
        assert!(text.contains(field) && text.contains("between"), "{text}");
        assert!(Chunker::new(&key(0), params).is_err());
    }
    for extreme in [p(64, 64, 64), p(64, 16 << 20, 64 << 20)] {
        let chunker = Chunker::new(&key(0), extreme).unwrap();
        let data = xorshift_bytes(1, 5000, 0xff);
        assert_eq!(chunker.chunks(&data).map(<[u8]>::len).sum::<usize>(), 5000);
    }
}

#[test]
fn cut_respects_bounds_at_the_edges() {
    let chunker = Chunker::new(&key(4), SMALL).unwrap();
    assert_eq!(chunker.cut(&[]), 0);
    assert_eq!(chunker.cut(&[0; 64]), 64);
    assert_eq!(
        chunker.cut(&[0; 10_000]),
        1024,
        "no content cut in zeros: max_size"
    );
    let data = xorshift_bytes(5, 10_000, 0xff);
    let n = chunker.cut(&data);
    assert!((64..=1024).contains(&n));
    assert_eq!(
        chunker.cut(&data[..1024]),
        n,
        "extra look-ahead beyond max_size is ignored"
    );
}

#[test]
fn empty_input_yields_nothing() {
    let chunker = Chunker::new(&key(5), SMALL).unwrap();
    assert_eq!(chunker.chunks(&[]).count(), 0);
    let mut stream = chunker.stream(ShortReader::new(&[], 1, 4));
    assert!(stream.next().is_none());
    assert_eq!(stream.bytes_read(), 0);
}

#[test]
fn stream_counts_bytes_and_returns_reader() {
    let data = xorshift_bytes(6, 50_000, 0xff);
    let chunker = Chunker::new(&key(6), SMALL).unwrap();
    let mut stream = chunker.stream(ShortReader::new(&data, 2, 300));
    let first = stream.next().unwrap().unwrap();
    assert!(stream.bytes_read() >= 1024, "reads ahead at least max_size");
    assert!(stream.bytes_read() <= 2048, "buffer is 2 * max_size");
    assert_eq!(stream.bytes_yielded(), first.len() as u64);
    let rest: usize = stream.by_ref().map(|c| c.unwrap().len()).sum();
    assert_eq!(first.len() + rest, data.len());
    assert_eq!(stream.bytes_read(), data.len() as u64);
    assert_eq!(stream.into_inner().pos, data.len());
}

#[test]
fn stream_reports_errors_and_resumes_without_loss() {
    let data = xorshift_bytes(8, 20_000, 0xff);
    let chunker = Chunker::new(&key(8), SMALL).unwrap();
    let mut reader = ShortReader::new(&data, 3, 700);
    reader.fail_at = Some(9_000);
    let mut chunks = Vec::new();
    let mut errors = 0;
    for item in chunker.stream(reader) {
        match item {
            Ok(chunk) => chunks.push(chunk),
            Err(e) => {
                assert_eq!(e.to_string(), "injected failure");
                errors += 1;
            }
        }
    }
    assert_eq!(errors, 1);
    let expected: Vec<&[u8]> = chunker.chunks(&data).collect();
    assert_eq!(chunks, expected);
}

#[test]
fn large_params_stream_matches_slice() {
    let data = xorshift_bytes(9, 3 << 20, 0xff);
    let params = ChunkerParams {
        min_size: 16 << 10,
        avg_size: 64 << 10,
        max_size: 256 << 10,
    };
    let chunker = Chunker::new(&key(9), params).unwrap();
    let streamed: Vec<Vec<u8>> = chunker
        .stream(ShortReader::new(&data, 4, 100_000))
        .map(Result::unwrap)
        .collect();
    let sliced: Vec<&[u8]> = chunker.chunks(&data).collect();
    assert!(sliced.len() > 20);
    assert_eq!(streamed, sliced);
}
