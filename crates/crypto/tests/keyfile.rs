//! Key files: wrapping, unwrapping, and refusal of wrong passphrases and edited files; damage
//! told apart from a wrong passphrase; the MAC and the printed form.

use rbackup_crypto::{CryptoError, KdfParams, KeyFile, Malformed, MasterKeys, Passphrase};

const BOUND: &str = "0123456789abcdef0123456789abcdef/0123456789abcdef";

fn pass(s: &str) -> Passphrase {
    Passphrase::new(s).expect("policy")
}

fn wrapped() -> (MasterKeys, KeyFile) {
    let keys = MasterKeys::generate();
    let file = KeyFile::wrap(
        &keys,
        &pass("a passphrase of some length"),
        KdfParams::fast_insecure_for_tests(),
        BOUND,
    )
    .expect("wrap");
    (keys, file)
}

#[test]
fn wrap_unwrap_round_trip() {
    let (keys, file) = wrapped();
    assert_eq!(file.version, 2);
    assert_eq!(file.bound_to(), Some(BOUND));
    assert!(file.has_integrity_record());
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
    let a = KeyFile::wrap(&keys, &p, kdf, BOUND).expect("wrap");
    let b = KeyFile::wrap(&keys, &p, kdf, BOUND).expect("wrap");
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

/// `file` as a version-1 file would hold it: no binding, MAC or checksum.
fn as_legacy(file: &KeyFile) -> KeyFile {
    KeyFile {
        version: 1,
        bound_to: None,
        mac: None,
        checksum: None,
        ..file.clone()
    }
}

fn is_damage(r: &Result<MasterKeys, CryptoError>) -> bool {
    matches!(r, Err(CryptoError::Malformed(Malformed::KeyFileChecksum)))
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
        // Version 2: the checksum says "damaged" before Argon2id runs.
        let mut bad = file.clone();
        edit(&mut bad.kdf);
        let r = bad.unwrap(&p);
        assert!(is_damage(&r), "{:?}: {:?}", bad.kdf, r.err());
        // Version 1 has no checksum: authentication fails, indistinguishable from a wrong
        // passphrase.
        let mut bad = as_legacy(&file);
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
        BOUND,
    )
    .unwrap_err();
    assert!(matches!(err, CryptoError::Kdf(_)), "{err:?}");
}

#[test]
fn edited_salt_or_wrapped_keys_are_refused() {
    let (_, file) = wrapped();
    let p = pass("a passphrase of some length");
    for base in [file.clone(), as_legacy(&file)] {
        let mut bad = base.clone();
        bad.salt
            .replace_range(0..2, if &file.salt[0..2] == "00" { "01" } else { "00" });
        let r = bad.unwrap(&p);
        let mut bad = base.clone();
        let last = bad.wrapped.pop().expect("non-empty");
        bad.wrapped.push(if last == '0' { '1' } else { '0' });
        let r2 = bad.unwrap(&p);
        for r in [r, r2] {
            if base.has_integrity_record() {
                assert!(is_damage(&r), "{:?}", r.err());
            } else {
                assert!(
                    matches!(r, Err(CryptoError::WrongPassphrase)),
                    "{:?}",
                    r.err()
                );
            }
        }
    }
}

#[test]
fn a_legacy_file_without_integrity_record_still_opens() {
    let (keys, file) = wrapped();
    let legacy = as_legacy(&file);
    let back = KeyFile::parse(&legacy.to_json()).expect("version 1 parses");
    assert!(!back.has_integrity_record());
    assert_eq!(back.bound_to(), None);
    assert!(!back.verify_mac(&keys).expect("nothing to verify"));
    let opened = back.unwrap(&pass("a passphrase of some length")).unwrap();
    assert_eq!(*opened.to_secret_bytes(), *keys.to_secret_bytes());
}

/// The promise the vault relies on: whatever single byte of a stored file flips, the result
/// is "damaged" (refused before Argon2id) or the same keys, never "wrong passphrase".
#[test]
fn a_flipped_byte_anywhere_is_damage_never_a_wrong_passphrase() {
    let (keys, file) = wrapped();
    let p = pass("a passphrase of some length");
    let json = file.to_json();
    for i in 0..json.len() {
        for bit in [0x01u8, 0x20, 0x80] {
            let mut bad = json.clone();
            bad[i] ^= bit;
            let Ok(parsed) = KeyFile::parse(&bad) else {
                continue;
            };
            // Parsed despite the flip (e.g. a hex digit's case): it must be the same file.
            let opened = parsed.unwrap(&p);
            assert!(
                opened
                    .as_ref()
                    .is_ok_and(|k| *k.to_secret_bytes() == *keys.to_secret_bytes()),
                "byte {i} ^ {bit:#x}: {:?}",
                opened.err()
            );
        }
    }
}

#[test]
fn the_mac_proves_the_file_belongs_to_the_keys() {
    let (keys, file) = wrapped();
    assert!(file.verify_mac(&keys).expect("our own file"));
    let other = MasterKeys::generate();
    assert!(matches!(
        file.verify_mac(&other),
        Err(CryptoError::Tampered { .. })
    ));
    // Someone who edits the file and recomputes the plain checksum (as the module docs say
    // anyone can) gets it past parse, but not past the MAC.
    let mut forged = file.clone();
    forged.bound_to = Some("ffffffffffffffffffffffffffffffff/ffffffffffffffff".into());
    assert!(
        KeyFile::parse(&forged.to_json()).is_err(),
        "the checksum covers the binding"
    );
    forged.checksum = Some(recomputed_checksum(&forged));
    let parsed = KeyFile::parse(&forged.to_json()).expect("checksum recomputed");
    assert!(matches!(
        parsed.verify_mac(&keys),
        Err(CryptoError::Tampered { .. })
    ));
    assert!(matches!(
        parsed.unwrap(&pass("a passphrase of some length")),
        Err(CryptoError::Tampered { .. })
    ));
}

/// The checksum as documented: BLAKE3 of the canonical bytes, then the MAC.
fn recomputed_checksum(f: &KeyFile) -> String {
    let mut c = b"rbackup keyfile v2\n".to_vec();
    c.extend_from_slice(&f.version.to_le_bytes());
    c.extend_from_slice(&f.kdf.to_bytes());
    let salt = hex::decode(&f.salt).unwrap();
    let wrapped = hex::decode(&f.wrapped).unwrap();
    let bound = f.bound_to.clone().unwrap();
    for field in [
        &salt[..],
        &wrapped[..],
        f.created.as_bytes(),
        bound.as_bytes(),
    ] {
        c.extend_from_slice(&(field.len() as u32).to_le_bytes());
        c.extend_from_slice(field);
    }
    c.extend_from_slice(&hex::decode(f.mac.as_ref().unwrap()).unwrap());
    blake3::hash(&c).to_hex().to_string()
}

#[test]
fn the_printed_form_reads_back_and_names_a_mistyped_line() {
    let (keys, file) = wrapped();
    let printed = file.to_printable().expect("printable");
    assert!(
        printed.starts_with("rbackup recovery key, bound to "),
        "{printed}"
    );
    let back = KeyFile::parse_printable(&printed).expect("reads back");
    assert_eq!(back.to_json(), file.to_json());
    let opened = back.unwrap(&pass("a passphrase of some length")).unwrap();
    assert_eq!(*opened.to_secret_bytes(), *keys.to_secret_bytes());

    // One digit mistyped on line 3: that line is named.
    let mut lines: Vec<String> = printed.lines().map(str::to_string).collect();
    let line3 = &mut lines[3];
    assert!(line3.starts_with("03: "), "{line3}");
    let c = line3.as_bytes()[5];
    line3.replace_range(5..6, if c == b'0' { "1" } else { "0" });
    let err = KeyFile::parse_printable(&lines.join("\n")).unwrap_err();
    assert!(
        matches!(
            err,
            CryptoError::Malformed(Malformed::PrintedLine { line: 3 })
        ),
        "{err:?}"
    );
    // A line left out.
    let mut short: Vec<&str> = printed.lines().collect();
    short.remove(2);
    assert!(KeyFile::parse_printable(&short.join("\n")).is_err());
    // Legacy files have no printed form.
    assert!(as_legacy(&file).to_printable().is_err());
}

#[test]
fn malformed_fields_are_reported() {
    let (_, file) = wrapped();
    let p = pass("a passphrase of some length");
    type Edit = fn(&mut KeyFile);
    let cases: [(&str, Edit); 7] = [
        ("version", |f| f.version = 3),
        ("no checksum", |f| f.checksum = None),
        ("no mac", |f| f.mac = None),
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
    let back = KeyFile::parse(json.as_bytes()).expect("parse");
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
    let file = KeyFile::wrap(&keys, &p, kdf, BOUND).expect("wrap");
    let back = file.unwrap(&p).expect("unwrap");
    assert_eq!(*back.to_secret_bytes(), *keys.to_secret_bytes());
}
