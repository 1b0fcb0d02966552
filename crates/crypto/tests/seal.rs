//! Sealing: layout, nonce freshness, and refusal of every kind of tampering.

use rbackup_crypto::{BlobId, CryptoError, MasterKeys, SEAL_OVERHEAD, SealKey};
use zeroize::Zeroizing;

fn key(byte: u8) -> SealKey {
    SealKey::from_raw(Zeroizing::new([byte; 32]))
}

#[test]
fn round_trip_and_layout() {
    let k = key(1);
    for len in [0usize, 1, 15, 16, 17, 1000, 65_537] {
        let plain: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        let sealed = k.seal(b"ad", &plain);
        assert_eq!(sealed.len(), len + SEAL_OVERHEAD);
        assert_eq!(k.open(b"ad", &sealed).expect("opens"), plain);
    }
}

#[test]
fn two_seals_of_the_same_plaintext_differ() {
    let k = key(2);
    let a = k.seal(b"", b"same plaintext");
    let b = k.seal(b"", b"same plaintext");
    assert_ne!(a[..12], b[..12], "nonces must differ");
    assert_ne!(a, b);
}

#[test]
fn seal_into_appends_after_existing_bytes() {
    let k = key(3);
    let mut out = b"header".to_vec();
    k.seal_into(b"ad", b"first", &mut out);
    let first_end = out.len();
    k.seal_into(b"ad", b"second", &mut out);
    assert_eq!(&out[..6], b"header");
    assert_eq!(k.open(b"ad", &out[6..first_end]).expect("first"), b"first");
    assert_eq!(k.open(b"ad", &out[first_end..]).expect("second"), b"second");
}

#[test]
fn every_flipped_bit_is_detected() {
    let k = key(4);
    let sealed = k.seal(b"associated", b"forty bytes of plaintext, give or take..");
    for byte in 0..sealed.len() {
        for bit in 0..8 {
            let mut bad = sealed.clone();
            bad[byte] ^= 1 << bit;
            match k.open(b"associated", &bad) {
                Err(CryptoError::Tampered { .. }) => {}
                other => panic!("flip at byte {byte} bit {bit}: {other:?}"),
            }
        }
    }
}

#[test]
fn wrong_associated_data_or_key_is_tampered() {
    let sealed = key(5).seal(b"one", b"data");
    assert!(matches!(
        key(5).open(b"two", &sealed),
        Err(CryptoError::Tampered { .. })
    ));
    assert!(matches!(
        key(6).open(b"one", &sealed),
        Err(CryptoError::Tampered { .. })
    ));
}

#[test]
fn truncated_input_is_refused_without_panic() {
    let k = key(7);
    let sealed = k.seal(b"", b"some plaintext to cut short");
    for len in 0..sealed.len() {
        match k.open(b"", &sealed[..len]) {
            Err(CryptoError::Malformed { .. }) => assert!(len < SEAL_OVERHEAD, "len {len}"),
            Err(CryptoError::Tampered { .. }) => assert!(len >= SEAL_OVERHEAD, "len {len}"),
            other => panic!("truncated to {len}: {other:?}"),
        }
    }
}

#[test]
fn blob_bound_to_id_kind_and_pack_key() {
    let keys = MasterKeys::generate();
    let pack1 = keys.pack_key(&[1; 32]);
    let pack2 = keys.pack_key(&[2; 32]);
    let a = keys.blob_id(b"blob a");
    let b = keys.blob_id(b"blob b");
    let sealed = pack1.seal_blob(&a, 1, b"blob a");
    assert_eq!(pack1.open_blob(&a, 1, &sealed).expect("opens"), b"blob a");
    let swapped = pack1.open_blob(&b, 1, &sealed);
    assert!(
        matches!(swapped, Err(CryptoError::Tampered { .. })),
        "{swapped:?}"
    );
    let retyped = pack1.open_blob(&a, 2, &sealed);
    assert!(
        matches!(retyped, Err(CryptoError::Tampered { .. })),
        "{retyped:?}"
    );
    let other_pack = pack2.open_blob(&a, 1, &sealed);
    assert!(
        matches!(other_pack, Err(CryptoError::Tampered { .. })),
        "{other_pack:?}"
    );
    // A blob is not a plain sealed message under the same key either.
    assert!(pack1.open(b"", &sealed).is_err());
}

#[test]
fn tampered_blob_error_names_the_blob() {
    let keys = MasterKeys::generate();
    let id = keys.blob_id(b"x");
    let mut sealed = keys.pack_key(&[0; 32]).seal_blob(&id, 9, b"x");
    sealed[14] ^= 0x80;
    let err = keys
        .pack_key(&[0; 32])
        .open_blob(&id, 9, &sealed)
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&id.to_hex()) && msg.contains("kind 9"),
        "{msg}"
    );
}

#[test]
fn subkeys_are_distinct_and_deterministic() {
    let keys = MasterKeys::generate();
    let sealed = keys.meta_key("index").seal(b"", b"index data");
    assert_eq!(
        keys.meta_key("index")
            .open(b"", &sealed)
            .expect("same purpose"),
        b"index data"
    );
    assert!(keys.meta_key("snapshot").open(b"", &sealed).is_err());
    assert!(keys.pack_key(&[0; 32]).open(b"", &sealed).is_err());
    let restored = MasterKeys::from_secret_bytes(&keys.to_secret_bytes()).expect("96 bytes");
    assert_eq!(
        restored
            .meta_key("index")
            .open(b"", &sealed)
            .expect("restored"),
        b"index data"
    );
    assert!(
        MasterKeys::generate()
            .meta_key("index")
            .open(b"", &sealed)
            .is_err()
    );
}

#[test]
fn master_keys_from_wrong_length_is_malformed() {
    for len in [0, 32, 95, 97, 128] {
        let r = MasterKeys::from_secret_bytes(&vec![0; len]);
        assert!(matches!(r, Err(CryptoError::Malformed { .. })), "len {len}");
    }
}

#[test]
fn generated_master_keys_differ() {
    let a = MasterKeys::generate();
    let b = MasterKeys::generate();
    assert_ne!(*a.to_secret_bytes(), *b.to_secret_bytes());
    assert_ne!(a.chunker_key(), b.chunker_key());
    assert_ne!(a.blob_id(b"same"), b.blob_id(b"same"));
    assert_eq!(a.blob_id(b"same"), a.blob_id(b"same"));
}

#[test]
fn debug_output_of_secrets_is_redacted() {
    let keys = MasterKeys::from_secret_bytes(&[0xab; 96]).expect("96 bytes");
    let seal = SealKey::from_raw(Zeroizing::new([0xab; 32]));
    for text in [
        format!("{keys:?}"),
        format!("{seal:?}"),
        format!("{:?}", keys.pack_key(&[0; 32])),
    ] {
        assert!(text.contains("[redacted]"), "{text}");
        assert!(
            !text.to_lowercase().contains("ab, ") && !text.contains("abab"),
            "{text}"
        );
        assert!(!text.contains("171"), "{text}");
    }
    let id = BlobId([0xcd; 32]);
    assert!(format!("{id:?}").starts_with("BlobId(cdcd"));
}

#[test]
fn open_into_appends_and_leaves_output_alone_on_failure() {
    let k = key(8);
    let sealed = k.seal(b"ad", b"payload");
    let mut out = b"prefix:".to_vec();
    k.open_into(b"ad", &sealed, &mut out).expect("opens");
    assert_eq!(out, b"prefix:payload");
    let mut bad = sealed.clone();
    bad[20] ^= 1;
    assert!(matches!(
        k.open_into(b"ad", &bad, &mut out),
        Err(CryptoError::Tampered { .. })
    ));
    assert!(matches!(
        k.open_into(b"ad", &bad[..5], &mut out),
        Err(CryptoError::Malformed { .. })
    ));
    assert_eq!(out, b"prefix:payload");
}

#[test]
fn keys_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SealKey>();
    assert_send_sync::<MasterKeys>();
    let k = key(9);
    let sealed: Vec<Vec<u8>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4u8)
            .map(|i| {
                s.spawn({
                    let k = &k;
                    move || k.seal(b"", &[i; 100])
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    for (i, s) in sealed.iter().enumerate() {
        assert_eq!(k.open(b"", s).expect("opens"), vec![i as u8; 100]);
    }
}
