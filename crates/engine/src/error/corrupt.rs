//! Why an object read from the vault is refused ([`EngineError::Corrupt`](super::EngineError::Corrupt)): one variant per
//! check an object fails, from authentication down to the bounds of what it may describe.

use rbackup_crypto::CryptoError;

/// What is wrong with a corrupt object ([`EngineError::Corrupt`](super::EngineError::Corrupt)).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum CorruptReason {
    /// Authenticated decryption failed, or the sealed bytes are malformed.
    #[error("{0}")]
    Crypto(#[source] CryptoError),
    /// The plaintext is not the CBOR of the expected type.
    #[error("{0}")]
    Cbor(#[source] ciborium::de::Error<std::io::Error>),
    /// The JSON does not parse as the expected type.
    #[error("{0}")]
    Json(#[source] serde_json::Error),
    /// The compressed body does not decompress.
    #[error("zstd: {0}")]
    Decompress(#[source] std::io::Error),
    /// A timestamp that does not parse.
    #[error("bad timestamp: {0}")]
    Timestamp(#[source] jiff::Error),
    /// Chunker parameters the chunker refuses.
    #[error("{0}")]
    Chunker(#[source] rbackup_chunker::ChunkerError),
    /// An empty plaintext.
    #[error("empty")]
    Empty,
    /// A pack without its trailer.
    #[error("missing pack trailer")]
    MissingTrailer,
    /// A pack header length that points before the start of the pack.
    #[error("header length {header} past the start of a {size}-byte pack")]
    HeaderPastStart {
        /// Header length in the trailer.
        header: u64,
        /// Pack size.
        size: u64,
    },
    /// A blob frame shorter than its header.
    #[error("frame shorter than its header")]
    FrameTooShort,
    /// A bundle's zstd frame that does not record how long its content is (every writer
    /// records it, and a reader needs it to bound the buffer).
    #[error("bundle frame without its content length")]
    BundleLengthMissing,
    /// A member of a bundle whose unit already failed to open for an earlier member (that
    /// member's error says why).
    #[error("the bundle holding it is damaged")]
    BundleDamaged,
    /// A blob frame whose payload length points past its end.
    #[error("frame payload length past its end")]
    FramePastEnd,
    /// A blob frame of an unknown encoding.
    #[error("unknown blob encoding {0}")]
    UnknownEncoding(u8),
    /// Content that does not hash to its id.
    #[error("content does not match its id")]
    IdMismatch,
    /// A blob no index file lists.
    #[error("not in any index file")]
    NotIndexed,

    /// A pack the index lists is not in the store, or not with its indexed size.
    #[error("missing from the vault, or not of the size its index records")]
    PackMissing,
    /// A blob used as a tree that the index lists as data.
    #[error("not indexed as a tree blob")]
    NotATree,
    /// A range the index names that the stored object does not hold.
    #[error("bytes {offset}..{end} are past the end of its {size} bytes", end = offset.saturating_add(*len))]
    OutOfRange {
        /// Start of the range.
        offset: u64,
        /// Length of the range.
        len: u64,
        /// Size of the object.
        size: u64,
    },
    /// An object name that is not a 64-digit hex id.
    #[error("not a 64-digit hex identifier")]
    NotAnId,
    /// A vault or machine id that is not lowercase hex of its length, so it cannot safely
    /// become part of a path.
    #[error("{what} {found:?} is not {hex_digits} lowercase hex digits")]
    BadId {
        /// Which id (`vault id`, `machine id`).
        what: &'static str,
        /// What was found (at most 80 characters of it).
        found: String,
        /// How many hex digits it must have.
        hex_digits: usize,
    },
    /// An object larger than its kind may be.
    #[error("{size} bytes, over the limit of {max} bytes for its kind")]
    TooLarge {
        /// Its size (as stored).
        size: u64,
        /// The limit.
        max: u64,
    },
    /// A compressed body that decompresses to more than its kind may hold.
    #[error("decompresses to more than the limit of {max} bytes for its kind")]
    DecompressedTooLarge {
        /// The limit.
        max: u64,
    },
    /// Bytes of a pack that no blob of its header covers.
    #[error("bytes from {at} on are not a blob its header lists")]
    Gap {
        /// The first byte not covered.
        at: u64,
    },
    /// A machine marker that names another machine than its folder.
    #[error("it names machine {found:?}")]
    OtherMachine {
        /// The machine id inside.
        found: String,
    },
    /// A file node listing more content than its size (or its data segments) holds.
    #[error("it lists more content than the file's size")]
    ContentPastSize,
    /// A sparse file whose data segments overlap or are not in order.
    #[error("its data segments overlap or are out of order")]
    SegmentsOutOfOrder,
    /// A recovery point whose trees hold far more entries than it records: subtrees shared
    /// so often that walking them would not end (a crafted tree, not a backup).
    #[error("its trees hold more than {max} entries, far more than it records")]
    TreeLargerThanRecorded {
        /// How many entries the walk allowed.
        max: u64,
    },
    /// A key file bound to another vault or machine than the one it is stored under (or the
    /// one it is used for).
    #[error("it belongs to {found:?}, not to {expected:?} (vault id/machine id)")]
    KeyFileBinding {
        /// The binding inside (at most 80 characters of it).
        found: String,
        /// The vault id/machine id it should have.
        expected: String,
    },
    /// A blob whose content is not as long as the index records (the index is what a
    /// random-access read places it by).
    #[error("its content is {found} bytes, the index records {recorded}")]
    LengthMismatch {
        /// The length the index records.
        recorded: u64,
        /// The length read.
        found: u64,
    },
    /// A directory whose tree is also the tree of one of the directories above it.
    #[error("the directory's tree contains itself")]
    TreeContainsItself,
    /// A directory nested deeper than a restore goes.
    #[error("nested deeper than {max} levels")]
    NestedTooDeep {
        /// The deepest level entered.
        max: usize,
    },
    /// A blob whose recorded plain length is over what any blob may be.
    #[error("a recorded length of {len} bytes, over the limit of {max} bytes for a blob")]
    BlobTooLarge {
        /// The recorded length.
        len: u64,
        /// The limit.
        max: u64,
    },
}

impl From<CryptoError> for CorruptReason {
    fn from(e: CryptoError) -> Self {
        CorruptReason::Crypto(e)
    }
}

impl From<ciborium::de::Error<std::io::Error>> for CorruptReason {
    fn from(e: ciborium::de::Error<std::io::Error>) -> Self {
        CorruptReason::Cbor(e)
    }
}

impl From<serde_json::Error> for CorruptReason {
    fn from(e: serde_json::Error) -> Self {
        CorruptReason::Json(e)
    }
}

impl From<jiff::Error> for CorruptReason {
    fn from(e: jiff::Error) -> Self {
        CorruptReason::Timestamp(e)
    }
}

impl From<rbackup_chunker::ChunkerError> for CorruptReason {
    fn from(e: rbackup_chunker::ChunkerError) -> Self {
        CorruptReason::Chunker(e)
    }
}
