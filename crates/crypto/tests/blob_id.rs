//! Blob id text and serde forms.

use std::collections::BTreeMap;

use rbackup_crypto::{BlobId, CryptoError};

fn sample() -> BlobId {
    BlobId(std::array::from_fn(|i| (i * 9 + 1) as u8))
}

#[test]
fn hex_round_trip_and_display() {
    let id = sample();
    let hex = id.to_hex();
    assert_eq!(hex.len(), 64);
    assert!(hex.starts_with("010a131c"), "{hex}");
    assert_eq!(id.to_string(), hex);
    assert_eq!(BlobId::from_hex(&hex).expect("parse"), id);
    assert_eq!(
        BlobId::from_hex(&hex.to_uppercase()).expect("upper case"),
        id
    );
    assert_eq!(id.as_bytes(), &id.0);
}

#[test]
fn bad_hex_is_malformed() {
    let good = sample().to_hex();
    for bad in [
        String::new(),
        good[..62].to_string(),
        format!("{good}00"),
        good.replacen('0', "g", 1),
    ] {
        let r = BlobId::from_hex(&bad);
        assert!(
            matches!(r, Err(CryptoError::Malformed { .. })),
            "{bad:?}: {r:?}"
        );
    }
    let huge = "x".repeat(10_000);
    let msg = BlobId::from_hex(&huge).unwrap_err().to_string();
    assert!(
        msg.len() < 400,
        "error message should not echo huge input: {} bytes",
        msg.len()
    );
}

#[test]
fn json_uses_hex_strings() {
    let id = sample();
    let json = serde_json::to_string(&id).expect("serialize");
    assert_eq!(json, format!("\"{}\"", id.to_hex()));
    assert_eq!(
        serde_json::from_str::<BlobId>(&json).expect("deserialize"),
        id
    );
    let map = BTreeMap::from([(id.to_hex(), vec![id, BlobId([0; 32])])]);
    let back: BTreeMap<String, Vec<BlobId>> =
        serde_json::from_str(&serde_json::to_string(&map).expect("map")).expect("map back");
    assert_eq!(back, map);
    assert!(serde_json::from_str::<BlobId>("\"abcd\"").is_err());
}

#[test]
fn cbor_uses_32_raw_bytes() {
    let id = sample();
    let mut cbor = Vec::new();
    ciborium::into_writer(&id, &mut cbor).expect("serialize");
    // Major type 2 (byte string), length 32 in the following byte, then the bytes.
    assert_eq!(cbor.len(), 2 + 32);
    assert_eq!(cbor[..2], [0x58, 32]);
    assert_eq!(cbor[2..], id.0);
    let back: BlobId = ciborium::from_reader(cbor.as_slice()).expect("deserialize");
    assert_eq!(back, id);

    let ids = vec![id, BlobId([0xff; 32])];
    let mut cbor = Vec::new();
    ciborium::into_writer(&ids, &mut cbor).expect("serialize vec");
    let back: Vec<BlobId> = ciborium::from_reader(cbor.as_slice()).expect("deserialize vec");
    assert_eq!(back, ids);
}

#[test]
fn cbor_rejects_wrong_length() {
    let mut cbor = Vec::new();
    ciborium::into_writer(&ciborium::Value::Bytes(vec![1; 31]), &mut cbor).expect("serialize");
    assert!(ciborium::from_reader::<BlobId, _>(cbor.as_slice()).is_err());
}

#[test]
fn ordering_is_bytewise() {
    let mut ids = vec![BlobId([2; 32]), BlobId([0; 32]), BlobId([1; 32])];
    ids.sort();
    assert_eq!(ids, vec![BlobId([0; 32]), BlobId([1; 32]), BlobId([2; 32])]);
}
