//! Passphrase policy and generator.

use std::collections::HashSet;

use rbackup_crypto::{
    CryptoError, GENERATED_ALPHABET, GENERATED_ENTROPY_BITS, GENERATED_GROUP_LEN, GENERATED_GROUPS,
    MIN_PASSPHRASE_CHARS, Passphrase,
};

#[test]
fn fifteen_chars_are_refused_naming_the_minimum() {
    let err = Passphrase::new("a".repeat(15)).unwrap_err();
    assert!(
        matches!(err, CryptoError::PassphraseTooShort { min: 16, got: 15 }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("16") && msg.contains("15"), "{msg}");
    // Advice (which command makes a strong one) is the application's to give.
    assert!(!msg.contains("rbackup"), "{msg}");
}

#[test]
fn sixteen_chars_are_accepted() {
    assert_eq!(MIN_PASSPHRASE_CHARS, 16);
    let p = Passphrase::new("0123456789abcdef").expect("16 ASCII chars");
    assert_eq!(p.as_str(), "0123456789abcdef");
}

#[test]
fn characters_are_counted_not_bytes() {
    // 16 characters, 48 bytes: accepted.
    let s = "日本語のパスフレーズは十六文字です";
    let s: String = s.chars().take(16).collect();
    assert_eq!(s.chars().count(), 16);
    assert!(s.len() > 16);
    assert_eq!(Passphrase::new(s.clone()).expect("16 chars").as_str(), s);
    // 15 characters but 45 bytes: refused.
    let short: String = s.chars().take(15).collect();
    assert!(matches!(
        Passphrase::new(short),
        Err(CryptoError::PassphraseTooShort { got: 15, .. })
    ));
}

#[test]
fn nothing_is_trimmed() {
    // 14 visible characters plus two spaces count as 16, and the spaces are kept.
    let p = Passphrase::new(" abcdefghijklmn ").expect("16 chars with spaces");
    assert_eq!(p.as_str(), " abcdefghijklmn ");
}

#[test]
fn generated_passphrases_have_the_documented_shape() {
    const { assert!(GENERATED_ENTROPY_BITS >= 128) };
    assert_eq!(
        GENERATED_ENTROPY_BITS,
        GENERATED_GROUPS * GENERATED_GROUP_LEN * 5
    );
    assert_eq!(GENERATED_ALPHABET.len(), 32);
    for ambiguous in [b'i', b'l', b'o', b'u'] {
        assert!(!GENERATED_ALPHABET.contains(&ambiguous));
    }
    for _ in 0..50 {
        let p = Passphrase::generate();
        let s = p.as_str();
        assert_eq!(
            s.len(),
            GENERATED_GROUPS * (GENERATED_GROUP_LEN + 1) - 1,
            "{s}"
        );
        let groups: Vec<&str> = s.split('-').collect();
        assert_eq!(groups.len(), GENERATED_GROUPS, "{s}");
        for g in groups {
            assert_eq!(g.len(), GENERATED_GROUP_LEN, "{s}");
            assert!(g.bytes().all(|b| GENERATED_ALPHABET.contains(&b)), "{s}");
        }
        Passphrase::new(s).expect("generated passphrases pass the policy");
    }
}

#[test]
fn generated_passphrases_are_distinct_and_use_the_whole_alphabet() {
    let all: Vec<Passphrase> = (0..200).map(|_| Passphrase::generate()).collect();
    let distinct: HashSet<&str> = all.iter().map(Passphrase::as_str).collect();
    assert_eq!(distinct.len(), all.len());
    let used: HashSet<u8> = all
        .iter()
        .flat_map(|p| p.as_str().bytes())
        .filter(|&b| b != b'-')
        .collect();
    // 5600 draws from 32 symbols: missing one by chance has probability ~ 32 * e^-175.
    assert_eq!(used.len(), 32);
}

#[test]
fn debug_is_redacted() {
    let p = Passphrase::new("super secret passphrase").expect("policy");
    let text = format!("{p:?}");
    assert!(
        text.contains("[redacted]") && !text.contains("secret"),
        "{text}"
    );
}
