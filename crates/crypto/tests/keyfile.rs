//! Key files: wrapping, unwrapping, and refusal of wrong passphrases and edited files.

use rbackup_crypto::{CryptoError, KdfParams, KeyFile, MasterKeys, Passphrase};

fn pass(s: &str) -> Passphrase {
    Passphrase::new(s).expect("policy")
}

fn wrapped() -> (MasterKeys, KeyFile) {
    let keys = MasterKeys::generate();
    let file = KeyFile::wrap(
        &keys,
        &pass("a passphrase of some length"),
        KdfParams::fast_insecure_for_tests(),
    )
    .expect("wrap");
    (keys, file)
}

#[test]
fn wrap_unwrap_round_trip() {
    let (keys, file) = wrapped();
    assert_eq!(file.version, 1);
    assert_eq!(file.kdf, KdfParams::fast_insecure_for_tests());
    assert_eq!(file.salt.len(), 32);
    assert_eq!(file.wrapped.len(), 2 * (96 + 28));
    let back = file
        .unwrap(&pass("a passphrase of some length"))
        .expect("unwrap");
    assert_eq!(*back.to_secret_bytes(), *keys.to_secret_bytes());
}

#[test]
fn created_is_rfc3339_utc_and_recent() {
    let (_, file) = wrapped();
    let ts: jiff::Timestamp = file.created.parse().expect("RFC 3339");
    assert!(file.created.ends_with('Z'), "{}", file.created);
    let age = jiff::Timestamp::now().duration_since(ts);
    assert!(age.as_secs() < 60, "{age:?}");
}

#[test]
fn wrapping_twice_uses_fresh_salt_and_nonce() {
    let keys = MasterKeys::generate();
    let p = pass("a passphrase of some length");
    let kdf = KdfParams::fast_insecure_for_tests();
    let a = KeyFile::wrap(&keys, &p, kdf).expect("wrap");
    let b = KeyFile::wrap(&keys, &p, kdf).expect("wrap");
    assert_ne!(a.salt, b.salt);
    assert_ne!(a.wrapped, b.wrapped);
}

#[test]
fn wrong_passphrase_is_reported_as_such() {
    let (_, file) = wrapped();
    let err = file
        .unwrap(&pass("a passphrase of some lengtH"))
        .unwrap_err();
    assert!(matches!(err, CryptoError::WrongPassphrase), "{err:?}");
    assert_eq!(
        err.to_string(),
        "the passphrase does not open this key file"
    );
}

#[test]
fn edited_kdf_params_are_refused() {
    let (_, file) = wrapped();
    let p = pass("a passphrase of some length");
    let edits = [
        |k: &mut KdfParams| k.m_cost_kib += 1024,
        |k: &mut KdfParams| k.t_cost += 1,
        |k: &mut KdfParams| k.p_cost += 1,
        |k: &mut KdfParams| k.m_cost_kib = 1024,
    ];
    for edit in edits {
        let mut bad = file.clone();
        edit(&mut bad.kdf);
        let err = bad.unwrap(&p).unwrap_err();
        assert!(
            matches!(err, CryptoError::WrongPassphrase),
            "{:?}: {err:?}",
            bad.kdf
        );
    }
}

#[test]
fn excessive_kdf_params_are_refused_before_running() {
    let (_, mut file) = wrapped();
    file.kdf.m_cost_kib = u32::MAX;
    let err = file
        .unwrap(&pass("a passphrase of some length"))
        .unwrap_err();
    assert!(matches!(err, CryptoError::Kdf(_)), "{err:?}");
    let err = KeyFile::wrap(
        &MasterKeys::generate(),
        &pass("a passphrase of some length"),
        KdfParams {
            m_cost_kib: 8,
            t_cost: 0,
            p_cost: 1,
        },
    )
    .unwrap_err();
    assert!(matches!(err, CryptoError::Kdf(_)), "{err:?}");
}

#[test]
fn edited_salt_or_wrapped_keys_are_refused() {
    let (_, file) = wrapped();
    let p = pass("a passphrase of some length");
    let mut bad = file.clone();
    bad.salt
        .replace_range(0..2, if &file.salt[0..2] == "00" { "01" } else { "00" });
    assert!(matches!(bad.unwrap(&p), Err(CryptoError::WrongPassphrase)));
    let mut bad = file.clone();
    let last = bad.wrapped.pop().expect("non-empty");
    bad.wrapped.push(if last == '0' { '1' } else { '0' });
    assert!(matches!(bad.unwrap(&p), Err(CryptoError::WrongPassphrase)));
}

#[test]
fn malformed_fields_are_reported() {
    let (_, file) = wrapped();
    let p = pass("a passphrase of some length");
    type Edit = fn(&mut KeyFile);
    let cases: [(&str, Edit); 5] = [
        ("version", |f| f.version = 2),
        ("salt not hex", |f| f.salt = "zz".repeat(16)),
        ("salt short", |f| f.salt.truncate(30)),
        ("wrapped short", |f| f.wrapped.truncate(100)),
        ("wrapped odd", |f| {
            f.wrapped.pop();
        }),
    ];
    for (name, edit) in cases {
        let mut bad = file.clone();
        edit(&mut bad);
        let err = bad.unwrap(&p).unwrap_err();
        assert!(
            matches!(err, CryptoError::Malformed { .. }),
            "{name}: {err:?}"
        );
    }
}

#[test]
fn serde_json_round_trip() {
    let (keys, file) = wrapped();
    let json = serde_json::to_string_pretty(&file).expect("serialize");
    for field in [
        "version",
        "m_cost_kib",
        "t_cost",
        "p_cost",
        "salt",
        "wrapped",
        "created",
    ] {
        assert!(json.contains(field), "{field} missing from {json}");
    }
    let back: KeyFile = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back.kdf, file.kdf);
    assert_eq!(back.wrapped, file.wrapped);
    let unwrapped = back
        .unwrap(&pass("a passphrase of some length"))
        .expect("unwrap");
    assert_eq!(*unwrapped.to_secret_bytes(), *keys.to_secret_bytes());
}

/// The one test that pays for the real parameters, so the defaults are known to work.
#[test]
fn default_params_round_trip() {
    let kdf = KdfParams::default();
    kdf.validate().expect("defaults are valid");
    let keys = MasterKeys::generate();
    let p = Passphrase::generate();
    let file = KeyFile::wrap(&keys, &p, kdf).expect("wrap");
    let back = file.unwrap(&p).expect("unwrap");
    assert_eq!(*back.to_secret_bytes(), *keys.to_secret_bytes());
}
