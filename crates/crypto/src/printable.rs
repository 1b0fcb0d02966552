//! The printed form of a key file: numbered lines of hex groups that a person can keep on
//! paper and type back in, each line ending in check digits so a typing mistake is found and
//! named by its line before anything else is tried.
//!
//! ```text
//! rbackup recovery key, bound to <label>
//! 01: 5242 4b32 0020 0000 0300 0000 0200 0000 9f3c
//! 02: ...
//! ```
//!
//! The lines carry a compact binary encoding of a version-2 key file: `"RBK2"`, the KDF
//! parameters (12 bytes), salt (16), wrapped keys (124), `created` and `bound_to` (each a
//! `u16le` length and bytes), MAC (32), checksum (32). Decoding ends in the same checks as
//! [`KeyFile::parse`], checksum included.

use crate::keyfile::{MAX_LABEL_LEN, SALT_LEN, WRAPPED_LEN};
use crate::{CryptoError, KEY_FILE_VERSION, KdfParams, KeyFile, Malformed};

const MAGIC: &[u8; 4] = b"RBK2";
/// Bytes per printed line: 8 groups of 4 hex digits.
const LINE_BYTES: usize = 16;
/// Domain of the per-line check digits.
const LINE_CHECK_CONTEXT: &[u8] = b"rbackup printed key line";
/// Longest printed form accepted (far above what a key file takes), before any decoding.
const MAX_PRINTED_LEN: usize = 64 * 1024;

impl KeyFile {
    /// The printed form (see the module docs). Only version-2 files have one.
    ///
    /// # Errors
    ///
    /// What [`KeyFile::parse`] would refuse, and [`Malformed::KeyFileMissing`] for a
    /// version-1 file.
    pub fn to_printable(&self) -> Result<String, CryptoError> {
        let d = self.decode()?;
        let (Some(mac), Some(bound_to), Some(sum)) = (d.mac, self.bound_to(), &self.checksum)
        else {
            return Err(Malformed::KeyFileMissing.into());
        };
        let mut bin = MAGIC.to_vec();
        bin.extend_from_slice(&self.kdf.to_bytes());
        bin.extend_from_slice(&d.salt);
        bin.extend_from_slice(&d.wrapped);
        for label in [self.created.as_str(), bound_to] {
            // At most MAX_LABEL_LEN (checked by decode), so it fits a u16.
            bin.extend_from_slice(&(label.len() as u16).to_le_bytes());
            bin.extend_from_slice(label.as_bytes());
        }
        bin.extend_from_slice(&mac);
        bin.extend_from_slice(&hex::decode(sum).unwrap_or_default());
        let mut out = format!("rbackup recovery key, bound to {bound_to}\n");
        for (n, chunk) in bin.chunks(LINE_BYTES).enumerate() {
            let groups: Vec<String> = chunk.chunks(2).map(hex::encode).collect();
            let check = hex::encode(line_check(n + 1, chunk));
            out += &format!("{:02}: {}  {check}\n", n + 1, groups.join(" "));
        }
        Ok(out)
    }

    /// Reads a printed key file back. Lines that do not start with a number and `:` (the
    /// heading, notes) are ignored; the numbered lines must run from 1 without a gap.
    ///
    /// # Errors
    ///
    /// [`Malformed::PrintedLine`] naming the first line whose check digits do not match,
    /// [`Malformed::Printed`] for a layout that is not a printed key, and what
    /// [`KeyFile::parse`] refuses.
    pub fn parse_printable(text: &str) -> Result<KeyFile, CryptoError> {
        if text.len() > MAX_PRINTED_LEN {
            return Err(Malformed::Printed("too long").into());
        }
        let mut bin = Vec::new();
        let mut expected = 1;
        for line in text.lines() {
            let Some((num, rest)) = line.trim().split_once(':') else {
                continue;
            };
            let Ok(n) = num.trim().parse::<usize>() else {
                continue;
            };
            if n != expected {
                return Err(Malformed::Printed("its lines are out of order or missing").into());
            }
            let digits: String = rest.split_whitespace().collect();
            let bytes = hex::decode(&digits).map_err(|_| Malformed::PrintedLine { line: n })?;
            let Some((data, check)) = bytes.split_last_chunk::<2>() else {
                return Err(Malformed::PrintedLine { line: n }.into());
            };
            if line_check(n, data) != *check {
                return Err(Malformed::PrintedLine { line: n }.into());
            }
            bin.extend_from_slice(data);
            expected += 1;
        }
        let file = from_binary(&bin).ok_or(Malformed::Printed("its content is cut short"))?;
        file.decode()?;
        Ok(file)
    }
}

/// The first two bytes of BLAKE3 over the domain, the line number and the line's bytes.
fn line_check(line: usize, data: &[u8]) -> [u8; 2] {
    let mut h = blake3::Hasher::new();
    h.update(LINE_CHECK_CONTEXT);
    h.update(&(line as u64).to_le_bytes());
    h.update(data);
    let hash = h.finalize();
    [hash.as_bytes()[0], hash.as_bytes()[1]]
}

/// The inverse of the encoding in [`KeyFile::to_printable`]; `None` if it is cut short or
/// has bytes left over. Field contents are checked afterwards by `decode`.
fn from_binary(bin: &[u8]) -> Option<KeyFile> {
    let mut r = Reader(bin);
    if r.take(MAGIC.len())? != MAGIC {
        return None;
    }
    let kdf = r.take(12)?;
    let word = |i: usize| u32::from_le_bytes([kdf[i], kdf[i + 1], kdf[i + 2], kdf[i + 3]]);
    let kdf = KdfParams {
        m_cost_kib: word(0),
        t_cost: word(4),
        p_cost: word(8),
    };
    let salt = hex::encode(r.take(SALT_LEN)?);
    let wrapped = hex::encode(r.take(WRAPPED_LEN)?);
    let created = r.label()?;
    let bound_to = r.label()?;
    let mac = hex::encode(r.take(32)?);
    let checksum = hex::encode(r.take(32)?);
    if !r.0.is_empty() {
        return None;
    }
    Some(KeyFile {
        version: KEY_FILE_VERSION,
        kdf,
        salt,
        wrapped,
        created,
        bound_to: Some(bound_to),
        mac: Some(mac),
        checksum: Some(checksum),
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.0.split_at_checked(n)?;
        self.0 = tail;
        Some(head)
    }

    fn label(&mut self) -> Option<String> {
        let len = self.take(2)?;
        let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
        if len > MAX_LABEL_LEN {
            return None;
        }
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
}
