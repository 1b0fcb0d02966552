//! Packs: the files that hold encrypted blobs.
//!
//! ```text
//! pack    = blob* sealed_header header_len:u32le magic:"RBP1"
//! blob    = AES-256-GCM(pack subkey, nonce, ad = "rbackup blob v1" | kind | blob id, frame)
//! frame   = encoding:u8 (0 raw, 1 zstd) payload_len:u32le payload zero-padding
//! header  = AES-256-GCM(pack subkey, ad = "rbackup pack header v1" | pack id, CBOR [PackEntry])
//! ```
//!
//! Small blobs are not sealed alone but in bundles (see [`crate::bundle`]): one sealed unit
//! holds several members, each listed in the header with the unit's place and its own.
//!
//! Each frame is padded with Padmé (at most 12% and typically 2-3% overhead) so that the length
//! of a sealed blob does not reveal the exact length of its content. The header sits at the end
//! so a pack can be written in one pass to the cache dir; the index duplicates it so that normal
//! operation never reads headers, and `check --read-data` compares the two.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rbackup_crypto::{BlobId, MasterKeys, SealKey};
use serde::{Deserialize, Serialize};

use crate::bundle::{self, Bundle};
use crate::codec;
use crate::error::{CorruptReason, EngineError, Result};
use crate::id::Id;

pub(crate) const MAGIC: &[u8; 4] = b"RBP1";
const TRAILER_LEN: usize = 8;
const ENC_RAW: u8 = 0;
const ENC_ZSTD: u8 = 1;
const FRAME_HEADER: usize = 5;

/// What kind of content a blob holds; bound into its associated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobKind {
    /// A chunk of file content.
    Data,
    /// A directory listing ([`crate::tree::Tree`]).
    Tree,
}

impl BlobKind {
    pub(crate) fn code(self) -> u8 {
        match self {
            BlobKind::Data => 0,
            BlobKind::Tree => 1,
        }
    }
}

/// One blob's place in a pack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PackEntry {
    pub kind: BlobKind,
    pub id: BlobId,
    pub offset: u64,
    pub len: u32,
    /// Length of the plaintext content (before compression and padding).
    pub raw_len: u32,
    /// For a member of a bundle ([`crate::bundle`]): where its content starts in the unit's
    /// decompressed content (`offset` and `len` are then the unit's, shared by its members).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<u32>,
}

/// Padmé: rounds `len` up so that only O(log log len) bits of it are revealed.
pub(crate) fn padme(len: usize) -> usize {
    if len < 2 {
        return len;
    }
    let e = usize::BITS - 1 - len.leading_zeros(); // floor(log2 len)
    let s = u32::BITS - e.leading_zeros(); // floor(log2 e) + 1
    let last_bits = e - s;
    let mask = (1usize << last_bits) - 1;
    (len + mask) & !mask
}

/// A reusable compressor: one per worker thread, so its context is allocated once.
pub(crate) struct Framer {
    zstd: zstd::bulk::Compressor<'static>,
}

impl std::fmt::Debug for Framer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Framer")
    }
}

impl Framer {
    pub(crate) fn new(level: i32) -> Result<Framer> {
        let zstd = zstd::bulk::Compressor::new(level)
            .map_err(|source| EngineError::CompressionLevel { level, source })?;
        Ok(Framer { zstd })
    }

    /// Frames `content`, compressing it unless a sample shows it will not shrink: random or
    /// already-compressed data is half of a typical corpus, and zstd spends real time failing
    /// on it.
    pub(crate) fn frame(&mut self, content: &[u8], try_compress: bool) -> Vec<u8> {
        let compressed = if try_compress && looks_compressible(&mut self.zstd, content) {
            self.zstd
                .compress(content)
                .ok()
                .filter(|c| c.len() + c.len() / 32 < content.len())
        } else {
            None
        };
        let (enc, payload) = match &compressed {
            Some(c) => (ENC_ZSTD, c.as_slice()),
            None => (ENC_RAW, content),
        };
        let total = padme(FRAME_HEADER + payload.len());
        let mut out = Vec::with_capacity(total + rbackup_crypto::SEAL_OVERHEAD);
        out.push(enc);
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(payload);
        out.resize(total, 0);
        out
    }
}

fn looks_compressible(zstd: &mut zstd::bulk::Compressor<'static>, content: &[u8]) -> bool {
    const SAMPLE: usize = 16 * 1024;
    if content.len() <= 4 * SAMPLE {
        return true;
    }
    let mid = content.len() / 2;
    let sample = &content[mid..mid + SAMPLE];
    match zstd.compress(sample) {
        Ok(c) => c.len() < SAMPLE - SAMPLE / 16,
        Err(_) => true,
    }
}

/// Undoes [`Framer::frame`].
pub(crate) fn unframe(
    frame: &[u8],
    raw_len_hint: usize,
) -> std::result::Result<Vec<u8>, CorruptReason> {
    if frame.len() < FRAME_HEADER {
        return Err(CorruptReason::FrameTooShort);
    }
    // The hint sizes the decompression buffer, so it is bounded before it is used.
    let max = crate::layout::MAX_BLOB_BYTES;
    if raw_len_hint as u64 > max {
        return Err(CorruptReason::BlobTooLarge {
            len: raw_len_hint as u64,
            max,
        });
    }
    let enc = frame[0];
    let len = u32::from_le_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize;
    let payload = frame
        .get(FRAME_HEADER..FRAME_HEADER + len)
        .ok_or(CorruptReason::FramePastEnd)?;
    match enc {
        ENC_RAW => Ok(payload.to_vec()),
        ENC_ZSTD => {
            zstd::bulk::decompress(payload, raw_len_hint.max(1)).map_err(CorruptReason::Decompress)
        }
        other => Err(CorruptReason::UnknownEncoding(other)),
    }
}

/// Undoes [`Framer::frame`] for content of unknown length up to `max` bytes (a bundle): the
/// buffer is sized by the length zstd recorded in its frame, after that is bounded.
pub(crate) fn unframe_bounded(
    frame: &[u8],
    max: u64,
) -> std::result::Result<Vec<u8>, CorruptReason> {
    let declared = match frame.first() {
        Some(&ENC_ZSTD) => {
            let payload = frame.get(FRAME_HEADER..).unwrap_or_default();
            match zstd::zstd_safe::get_frame_content_size(payload) {
                Ok(Some(n)) => n,
                _ => return Err(CorruptReason::BundleLengthMissing),
            }
        }
        _ => frame.len().saturating_sub(FRAME_HEADER) as u64,
    };
    if declared > max {
        return Err(CorruptReason::BlobTooLarge { len: declared, max });
    }
    unframe(frame, declared as usize)
}

/// Writes one pack into a file in the cache dir.
pub(crate) struct PackWriter {
    id: Id,
    key: SealKey,
    path: PathBuf,
    file: BufWriter<File>,
    offset: u64,
    entries: Vec<PackEntry>,
}

impl std::fmt::Debug for PackWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackWriter({:?}, {} bytes)", self.id, self.offset)
    }
}

/// The mode of a pack staged in the cache dir: it is copied into the vault, never moved, so it
/// never needs another.
pub(crate) const STAGED_PACK_MODE: u32 = 0o600;

/// A finished pack file waiting to be uploaded.
#[derive(Debug)]
pub(crate) struct FinishedPack {
    pub id: Id,
    pub path: PathBuf,
    pub size: u64,
    pub entries: Vec<PackEntry>,
}

impl PackWriter {
    pub(crate) fn create(keys: &MasterKeys, dir: &Path) -> Result<PackWriter> {
        let id = Id::random();
        let path = dir.join(format!("{}.pack", id.to_hex()));
        // Private (0600) and exclusive: nothing at the fresh name is followed or reused.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(STAGED_PACK_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| EngineError::io(&path, e))?;
        Ok(PackWriter {
            key: keys.pack_key(&id.0),
            id,
            path,
            file: BufWriter::with_capacity(1 << 20, file),
            offset: 0,
            entries: Vec::new(),
        })
    }

    pub(crate) fn len(&self) -> u64 {
        self.offset
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Seals a framed blob into the pack; returns the bytes written.
    pub(crate) fn add(
        &mut self,
        kind: BlobKind,
        id: BlobId,
        frame: &[u8],
        raw_len: u32,
    ) -> Result<u64> {
        let sealed = self.key.seal_blob(&id, kind.code(), frame);
        self.file
            .write_all(&sealed)
            .map_err(|e| EngineError::io(&self.path, e))?;
        self.entries.push(PackEntry {
            kind,
            id,
            offset: self.offset,
            len: sealed.len() as u32,
            raw_len,
            within: None,
        });
        self.offset += sealed.len() as u64;
        Ok(sealed.len() as u64)
    }

    /// Seals `frame` (of `bundle.content`) as the bundle's unit.
    pub(crate) fn add_bundle_frame(&mut self, bundle: &Bundle, frame: &[u8]) -> Result<u64> {
        let sealed = self.key.seal(&bundle::ad(bundle.kind, self.offset), frame);
        self.file
            .write_all(&sealed)
            .map_err(|e| EngineError::io(&self.path, e))?;
        let len = sealed.len() as u32;
        for &(id, within, raw_len) in &bundle.members {
            self.entries.push(PackEntry {
                kind: bundle.kind,
                id,
                offset: self.offset,
                len,
                raw_len,
                within: Some(within),
            });
        }
        self.offset += u64::from(len);
        Ok(u64::from(len))
    }

    /// Writes the header and trailer and closes the file.
    pub(crate) fn finish(mut self) -> Result<FinishedPack> {
        let header = compress_header(&codec::to_cbor(&self.entries));
        let mut trailer = Vec::with_capacity(header.len() + 64);
        append_header(&self.key, &self.id, &header, &mut trailer);
        let io = |e| EngineError::io(&self.path, e);
        self.file.write_all(&trailer).map_err(io)?;
        self.file.flush().map_err(io)?;
        Ok(FinishedPack {
            size: self.offset + trailer.len() as u64,
            id: self.id,
            path: self.path,
            entries: self.entries,
        })
    }
}

/// Appends the sealed header (`header` is the CBOR of the entries) and the trailer to `out`.
pub(crate) fn append_header(key: &SealKey, pack: &Id, header: &[u8], out: &mut Vec<u8>) {
    let sealed = key.seal(&header_ad(pack), header);
    out.extend_from_slice(&sealed);
    out.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
    out.extend_from_slice(MAGIC);
}

fn header_ad(pack: &Id) -> Vec<u8> {
    let mut ad = b"rbackup pack header v1".to_vec();
    ad.extend_from_slice(&pack.0);
    ad
}

/// Reads the header of a whole pack held in memory (used by `check --read-data`).
pub(crate) fn read_header(keys: &MasterKeys, pack: &Id, bytes: &[u8]) -> Result<Vec<PackEntry>> {
    let n = bytes.len();
    let trailer = n.checked_sub(TRAILER_LEN).map(|t| &bytes[t..]);
    let start = header_start(pack, n as u64, trailer.unwrap_or(&[]))? as usize;
    open_header(keys, pack, &bytes[start..n - TRAILER_LEN])
}

/// Where the sealed header of a pack of `size` bytes starts, from its last `TRAILER_LEN`
/// bytes (`trailer`). Lets a reader fetch only the header with two ranged reads.
pub(crate) fn header_start(pack: &Id, size: u64, trailer: &[u8]) -> Result<u64> {
    let what = format!("pack {}", pack.to_hex());
    if trailer.len() != TRAILER_LEN || size < TRAILER_LEN as u64 || &trailer[4..] != MAGIC {
        return Err(EngineError::corrupt(&what, CorruptReason::MissingTrailer));
    }
    let hlen = u64::from(u32::from_le_bytes([
        trailer[0], trailer[1], trailer[2], trailer[3],
    ]));
    (size - TRAILER_LEN as u64)
        .checked_sub(hlen)
        .ok_or_else(|| {
            EngineError::corrupt(&what, CorruptReason::HeaderPastStart { header: hlen, size })
        })
}

/// Opens a pack's sealed header (the bytes between the blobs and the trailer): it
/// authenticates only under this machine's pack key for this pack id.
pub(crate) fn open_header(keys: &MasterKeys, pack: &Id, sealed: &[u8]) -> Result<Vec<PackEntry>> {
    let what = format!("pack {}", pack.to_hex());
    let plain = keys
        .pack_key(&pack.0)
        .open(&header_ad(pack), sealed)
        .map_err(|e| EngineError::corrupt(&what, e))?;
    match plain.split_first() {
        Some((&HEADER_ZSTD, body)) => {
            let cbor = codec::decompress_bounded(body, MAX_HEADER_PLAIN)
                .map_err(|e| EngineError::corrupt(&what, e))?;
            codec::from_cbor(&cbor, &what)
        }
        // Packs written before headers were compressed: the CBOR array itself.
        _ => codec::from_cbor(&plain, &what),
    }
}

/// The first byte of a compressed header's plaintext; an uncompressed one starts with a CBOR
/// array's first byte (0x80 to 0x9f), never this.
const HEADER_ZSTD: u8 = 0x01;

/// The most a compressed header may expand to: a 32 MiB pack of tiny bundled files lists about
/// 600,000 entries, some 60 MB of CBOR.
const MAX_HEADER_PLAIN: u64 = 256 << 20;

/// A header's plaintext: `HEADER_ZSTD` then the zstd of its CBOR. Headers of bundled blobs
/// repeat each unit's offset and length for every member, which zstd removes (the random ids
/// are what is left: about 40 bytes an entry instead of 90).
fn compress_header(cbor: &[u8]) -> Vec<u8> {
    let mut out = vec![HEADER_ZSTD];
    // zstd into memory only fails on allocation failure.
    out.extend(zstd::bulk::compress(cbor, 3).expect("zstd compression into memory"));
    out
}

/// The bytes of the trailer at the end of every pack.
pub(crate) const PACK_TRAILER_LEN: u64 = TRAILER_LEN as u64;

/// The entries of a pack grouped by sealed unit, in order: a lone blob alone, the members of
/// a bundle together (consecutive entries with the same offset, each with `within`).
pub(crate) fn units(entries: &[PackEntry]) -> impl Iterator<Item = &[PackEntry]> {
    let mut rest = entries;
    std::iter::from_fn(move || {
        let first = rest.first()?;
        let n = match first.within {
            None => 1,
            Some(_) => rest
                .iter()
                .take_while(|e| e.within.is_some() && e.offset == first.offset)
                .count(),
        };
        let (unit, tail) = rest.split_at(n);
        rest = tail;
        Some(unit)
    })
}

/// Checks that every byte of a whole pack held in memory authenticated: its header, and each
/// unit the header lists (every member of a bundle checked against its id), which together
/// must cover the pack. Used before a tree pack is kept in the cache, which must hold only
/// authentic bytes.
pub(crate) fn authenticate(keys: &MasterKeys, pack: &Id, bytes: &[u8]) -> Result<()> {
    let what = format!("pack {}", pack.to_hex());
    let entries = read_header(keys, pack, bytes)?;
    let key = keys.pack_key(&pack.0);
    let mut covered = 0u64;
    for unit in units(&entries) {
        let e = &unit[0];
        let sealed = usize::try_from(e.offset)
            .ok()
            .and_then(|start| bytes.get(start..start.checked_add(e.len as usize)?))
            .ok_or_else(|| {
                let (offset, len, size) = (e.offset, u64::from(e.len), bytes.len() as u64);
                EngineError::corrupt(&what, CorruptReason::OutOfRange { offset, len, size })
            })?;
        if e.offset != covered || unit.iter().any(|m| m.len != e.len) {
            return Err(EngineError::corrupt(
                &what,
                CorruptReason::Gap { at: covered },
            ));
        }
        open_unit_members(keys, &key, unit, sealed)
            .map_err(|err| EngineError::corrupt(&what, err))?;
        covered += u64::from(e.len);
    }
    Ok(())
}

/// Opens one unit (`sealed`) and returns the content of each of its entries, verified.
pub(crate) fn open_unit_members(
    keys: &MasterKeys,
    key: &SealKey,
    unit: &[PackEntry],
    sealed: &[u8],
) -> std::result::Result<Vec<Vec<u8>>, CorruptReason> {
    let e = &unit[0];
    if e.within.is_none() {
        return Ok(vec![open_blob(keys, key, &e.id, &e.slot(), sealed)?]);
    }
    let content = bundle::open_unit(key, e.kind, e.offset, sealed)?;
    unit.iter()
        .map(|m| bundle::member(keys, &content, &m.id, m.within.unwrap_or(0), m.raw_len))
        .collect()
}

/// Where a blob's bytes are in its pack: its unit, and its place in the unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    pub kind: BlobKind,
    /// The unit's offset and sealed length in the pack.
    pub offset: u64,
    pub len: u32,
    /// The blob's content length.
    pub raw_len: u32,
    /// For a bundle member, where its content starts in the unit's content.
    pub within: Option<u32>,
}

impl PackEntry {
    pub(crate) fn slot(&self) -> Slot {
        Slot {
            kind: self.kind,
            offset: self.offset,
            len: self.len,
            raw_len: self.raw_len,
            within: self.within,
        }
    }
}

/// Opens one blob from `sealed`, the bytes of its unit, and checks that its content hashes to
/// its id.
pub(crate) fn open_blob(
    keys: &MasterKeys,
    key: &SealKey,
    id: &BlobId,
    at: &Slot,
    sealed: &[u8],
) -> std::result::Result<Vec<u8>, CorruptReason> {
    if let Some(within) = at.within {
        let content = bundle::open_unit(key, at.kind, at.offset, sealed)?;
        return bundle::member(keys, &content, id, within, at.raw_len);
    }
    let frame = key.open_blob(id, at.kind.code(), sealed)?;
    let content = unframe(&frame, at.raw_len as usize)?;
    if keys.blob_id(&content) != *id {
        return Err(CorruptReason::IdMismatch);
    }
    Ok(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padme_bounds() {
        for len in [
            2usize,
            3,
            100,
            1000,
            4096,
            65_537,
            1 << 20,
            (1 << 20) + 1,
            5_000_000,
        ] {
            let p = padme(len);
            assert!(p >= len, "{len} -> {p}");
            assert!(p <= len + len / 8 + 1, "overhead too large: {len} -> {p}");
        }
        // Nearby lengths collapse to the same padded length.
        assert_eq!(padme(1_000_001), padme(1_000_002));
    }

    #[test]
    fn frame_roundtrip_compressible_and_not() {
        let mut f = Framer::new(3).unwrap();
        let text = b"fn main() { println!(\"hello\"); }\n".repeat(5000);
        let framed = f.frame(&text, true);
        assert_eq!(framed[0], ENC_ZSTD);
        assert!(framed.len() < text.len() / 4);
        assert_eq!(unframe(&framed, text.len()).unwrap(), text);

        let mut noise = vec![0u8; 300_000];
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for b in noise.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let framed = f.frame(&noise, true);
        assert_eq!(framed[0], ENC_RAW);
        assert_eq!(unframe(&framed, noise.len()).unwrap(), noise);
    }

    #[test]
    fn unframe_rejects_garbage() {
        assert!(unframe(&[], 0).is_err());
        assert!(unframe(&[0, 255, 255, 0, 0, 1], 0).is_err());
        assert!(unframe(&[9, 0, 0, 0, 0], 0).is_err());
    }

    #[test]
    fn headers_are_compressed_and_old_uncompressed_ones_still_read() {
        let keys = MasterKeys::generate();
        let dir = tempfile::tempdir().unwrap();
        let mut w = PackWriter::create(&keys, dir.path()).unwrap();
        let mut b = Bundle::new(BlobKind::Data);
        for i in 0..500u32 {
            let content = format!("small file {i}");
            b.push(keys.blob_id(content.as_bytes()), content.as_bytes());
        }
        let frame = Framer::new(3).unwrap().frame(&b.content, true);
        w.add_bundle_frame(&b, &frame).unwrap();
        let id = w.id;
        let done = w.finish().unwrap();
        let bytes = std::fs::read(&done.path).unwrap();
        let entries = read_header(&keys, &id, &bytes).unwrap();
        assert_eq!(entries, done.entries);
        authenticate(&keys, &id, &bytes).unwrap();
        let cbor = codec::to_cbor(&entries).len() as u64;
        let header = done.size - header_start(&id, done.size, &bytes[bytes.len() - 8..]).unwrap();
        assert!(
            header < cbor / 2,
            "{header} bytes of header for {cbor} of CBOR"
        );

        let mut old = bytes
            [..header_start(&id, done.size, &bytes[bytes.len() - 8..]).unwrap() as usize]
            .to_vec();
        append_header(
            &keys.pack_key(&id.0),
            &id,
            &codec::to_cbor(&entries),
            &mut old,
        );
        assert_eq!(read_header(&keys, &id, &old).unwrap(), entries);
    }
}
