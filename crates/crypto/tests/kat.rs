//! Known-answer vectors from `testdata/crypto/kat.json`, generated once by
//! `examples/gen_kat.rs` and verified independently (Python blake3 + OpenSSL) by
//! `testdata/crypto/verify_kat.py`. A failure here means the on-disk format changed.

use rbackup_crypto::{BlobId, KdfParams, KeyFile, MasterKeys, Passphrase, argon2id_for_tests};
use serde_json::Value;

const KAT: &str = include_str!("../../../testdata/crypto/kat.json");

fn kat() -> Value {
    serde_json::from_str(KAT).expect("kat.json parses")
}

fn s(v: &Value) -> &str {
    v.as_str().expect("string field")
}

fn h(v: &Value) -> Vec<u8> {
    hex::decode(s(v)).expect("hex field")
}

fn arr32(v: &Value) -> [u8; 32] {
    h(v).try_into().expect("32 bytes")
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn keys(kat: &Value) -> MasterKeys {
    MasterKeys::from_secret_bytes(&h(&kat["master_secret"])).expect("96 bytes")
}

#[test]
fn blob_ids_match_vectors() {
    let kat = kat();
    let keys = keys(&kat);
    let vectors = kat["blob_ids"].as_array().expect("array");
    assert_eq!(vectors.len(), 4);
    for v in vectors {
        let n = v["input_len"].as_u64().expect("len") as usize;
        assert_eq!(
            keys.blob_id(&pattern(n)).to_hex(),
            s(&v["id"]),
            "input length {n}"
        );
    }
}

#[test]
fn pack_and_meta_subkeys_match_vectors() {
    let kat = kat();
    let keys = keys(&kat);
    for v in kat["pack_keys"].as_array().expect("array") {
        let key = keys.pack_key(&arr32(&v["pack_id"]));
        assert_eq!(key.raw_key_for_tests()[..], h(&v["key"])[..]);
    }
    for v in kat["meta_keys"].as_array().expect("array") {
        let key = keys.meta_key(s(&v["purpose"]));
        assert_eq!(key.raw_key_for_tests()[..], h(&v["key"])[..]);
    }
}

#[test]
fn seal_with_fixed_nonce_matches_vector_and_opens() {
    let kat = kat();
    let keys = keys(&kat);
    let v = &kat["seal"];
    let key = keys.pack_key(&arr32(&v["pack_id"]));
    let nonce: [u8; 12] = h(&v["nonce"]).try_into().expect("12 bytes");
    let sealed = key.seal_with_nonce_for_tests(&nonce, &h(&v["ad"]), &h(&v["plaintext"]));
    assert_eq!(hex::encode(&sealed), s(&v["sealed"]));
    assert_eq!(
        key.open(&h(&v["ad"]), &sealed).expect("opens"),
        h(&v["plaintext"])
    );
}

#[test]
fn blob_vector_opens_with_specified_associated_data() {
    let kat = kat();
    let keys = keys(&kat);
    let v = &kat["blob"];
    let key = keys.pack_key(&arr32(&v["pack_id"]));
    let id = BlobId::from_hex(s(&v["id"])).expect("id");
    let kind = v["kind"].as_u64().expect("kind") as u8;
    let plain = key.open_blob(&id, kind, &h(&v["sealed"])).expect("opens");
    assert_eq!(
        plain,
        pattern(v["plaintext_len"].as_u64().expect("len") as usize)
    );
    assert_eq!(keys.blob_id(&plain), id);
}

#[test]
fn argon2id_matches_vectors() {
    let kat = kat();
    let vectors = kat["argon2id"].as_array().expect("array");
    assert_eq!(vectors.len(), 3);
    for v in vectors {
        let pass = Passphrase::new(s(&v["passphrase"])).expect("policy");
        let params: KdfParams = serde_json::from_value(v["kdf"].clone()).expect("kdf");
        let key = argon2id_for_tests(&pass, &h(&v["salt"]), params).expect("argon2");
        assert_eq!(hex::encode(&key[..]), s(&v["key"]), "{params:?}");
    }
}

#[test]
fn committed_key_file_unwraps_to_the_vector_keys() {
    let kat = kat();
    let file: KeyFile = serde_json::from_value(kat["key_file"]["file"].clone()).expect("key file");
    let pass = Passphrase::new(s(&kat["key_file"]["passphrase"])).expect("policy");
    let unwrapped = file.unwrap(&pass).expect("unwraps");
    assert_eq!(*unwrapped.to_secret_bytes(), h(&kat["master_secret"]));
}
