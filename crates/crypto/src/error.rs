//! The crate's error type. Each variant says what failed and carries its figures as numbers and
//! its cause as `source`; none tells the user what to do (that is the application's business).

/// Everything that can go wrong in this crate.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The passphrase is shorter than the policy allows.
    #[error("the passphrase has {got} characters but at least {min} are required")]
    PassphraseTooShort {
        /// The minimum number of characters ([`MIN_PASSPHRASE_CHARS`](crate::MIN_PASSPHRASE_CHARS)).
        min: usize,
        /// The number of characters given.
        got: usize,
    },
    /// The passphrase did not unlock a key file (or the key file was altered).
    #[error("the passphrase does not open this key file")]
    WrongPassphrase,
    /// Authenticated decryption failed.
    #[error(
        "{what} failed authentication: the data is corrupted, was swapped with another \
         object, or is of another type"
    )]
    Tampered {
        /// What was being opened.
        what: String,
    },
    /// Input of the wrong shape: bad lengths, bad key-file fields, bad hex.
    #[error("malformed input: {0}")]
    Malformed(#[source] Malformed),
    /// Argon2id rejected its parameters (or they exceed this crate's sanity limits).
    #[error("invalid key derivation (Argon2id) parameters: {0}")]
    Kdf(#[source] KdfError),
}

/// What was wrong with malformed input ([`CryptoError::Malformed`]).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Malformed {
    /// A field or value of the wrong length.
    #[error("{what} is {got} bytes, expected {expected}")]
    Length {
        /// Which field or value.
        what: &'static str,
        /// Its length.
        got: usize,
        /// The length it must have.
        expected: usize,
    },
    /// A hex field that does not decode.
    #[error("{what} is not valid hex: {source}")]
    Hex {
        /// Which field (for a blob id, the start of the text given).
        what: String,
        /// The decoder's complaint.
        source: hex::FromHexError,
    },
    /// A sealed message too short to hold its nonce and tag: it was truncated.
    #[error("{what} is {got} bytes, shorter than the {min}-byte nonce and tag")]
    Truncated {
        /// What was being opened.
        what: String,
        /// Its length.
        got: usize,
        /// [`SEAL_OVERHEAD`](crate::SEAL_OVERHEAD).
        min: usize,
    },
    /// A key file of a version this build does not read.
    #[error("key file version {found} is not supported (this build reads version {supported})")]
    KeyFileVersion {
        /// The version in the file.
        found: u32,
        /// [`KEY_FILE_VERSION`](crate::KEY_FILE_VERSION).
        supported: u32,
    },
    /// Bytes that are not the JSON of a key file.
    #[error("not a key file: {0}")]
    KeyFileJson(String),
    /// A version-2 key file without its binding, MAC or checksum.
    #[error("key file lacks its binding, MAC or checksum")]
    KeyFileMissing,
    /// A key file whose checksum does not match its fields: it is damaged (the passphrase
    /// was not tried).
    #[error("key file checksum does not match its contents: the file is damaged")]
    KeyFileChecksum,
    /// A line of a printed recovery key that does not match its check digits.
    #[error(
        "line {line} of the printed key does not match its check digits (a typing mistake there?)"
    )]
    PrintedLine {
        /// The line number printed at its start.
        line: usize,
    },
    /// A printed recovery key that is not laid out as one.
    #[error("not a printed recovery key: {0}")]
    Printed(&'static str),
}

/// Why key derivation parameters were refused ([`CryptoError::Kdf`]).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum KdfError {
    /// A parameter above this crate's ceiling (see [`MAX_M_COST_KIB`](crate::MAX_M_COST_KIB)).
    #[error("{param} {value} exceeds the limit of {max}")]
    TooLarge {
        /// Which parameter.
        param: KdfParam,
        /// Its value.
        value: u32,
        /// The ceiling.
        max: u32,
    },
    /// Argon2 itself refused the parameters or the derivation.
    #[error("{0}")]
    Argon2(#[source] argon2::Error),
}

/// An Argon2id parameter.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KdfParam {
    /// Memory cost, in KiB.
    MemoryKib,
    /// Time cost (passes).
    Time,
    /// Parallelism (lanes).
    Parallelism,
}

impl std::fmt::Display for KdfParam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KdfParam::MemoryKib => "memory cost (KiB)",
            KdfParam::Time => "time cost",
            KdfParam::Parallelism => "parallelism",
        })
    }
}

impl From<Malformed> for CryptoError {
    fn from(m: Malformed) -> CryptoError {
        CryptoError::Malformed(m)
    }
}

impl From<KdfError> for CryptoError {
    fn from(k: KdfError) -> CryptoError {
        CryptoError::Kdf(k)
    }
}
