//! Entry points into every parser of bytes from outside the process, for the fuzz targets in
//! `fuzz/` and for the property tests in `tests/parsers.rs` that keep them from regressing.
//! Not part of the API: hidden, and with no promise of stability.
//!
//! Each target takes arbitrary bytes and runs exactly the production code on them; it must
//! return (an error is fine), never panic, hang or allocate without bound. The vault's objects
//! are sealed, so random bytes only ever reach the code that runs before authentication; to
//! reach the decoders behind it, the `*_plain` targets seal the fuzzer's bytes under a fixed
//! key first. That models a writer who holds the keys (a compromised machine, or our own bug),
//! which must not be able to crash or exhaust a restore either.

use rbackup_crypto::{BlobId, KdfParams, KeyFile, MasterKeys, Passphrase};

use crate::bundle;
use crate::codec;
use crate::credentials::{CredentialsRecord, VaultCredentials};
use crate::id::Id;
use crate::index::{self, IndexFile};
use crate::layout::{self, MachineConfig};
use crate::lock::LeaseInfo;
use crate::pack::{self, BlobKind};
use crate::prune::Marker;
use crate::restore::plan;
use crate::snapshot::{self, RecoveryPoint};
use crate::tombstone::Tombstone;
use crate::tree::Tree;
use crate::vault;

/// The fuzz targets, by name (a fuzz binary of the same name calls [`run`]).
pub const TARGETS: &[&str] = &[
    "pack",
    "pack_header_plain",
    "blob_plain",
    "bundle_plain",
    "meta",
    "meta_plain",
    "index_plain",
    "recovery_point_plain",
    "tree_plain",
    "vault_json",
    "credentials",
    "key_file",
];

/// Keys every target uses, so a seed sealed by [`seeds`] opens in [`run`].
fn keys() -> MasterKeys {
    let secret: Vec<u8> = (0..rbackup_crypto::MASTER_KEYS_LEN as u8).collect();
    #[allow(clippy::expect_used)]
    MasterKeys::from_secret_bytes(&secret).expect("96 bytes are master keys")
}

const PACK_ID: Id = Id([0x5a; 32]);
const NAME: &str = "00000000000000000000000000000000000000000000000000000000000000ab";

/// Runs target `name` on `data`: `None` for an unknown name, else whether the input was
/// accepted all the way through (the seeds are; nearly everything else is refused).
pub fn run(name: &str, data: &[u8]) -> Option<bool> {
    let keys = keys();
    let accepted = match name {
        // A whole pack as the vault returns it (trailer, sealed header, blobs), read whole as
        // check and the cache do, and from its end as adopting an unindexed pack does.
        "pack" => pack_tail(&keys, data) & shown(pack::authenticate(&keys, &PACK_ID, data)),
        "pack_header_plain" => {
            let bytes = pack_with_header(&keys, data);
            shown(pack::authenticate(&keys, &PACK_ID, &bytes))
        }
        "blob_plain" => blob_plain(&keys, data),
        "bundle_plain" => bundle_plain(&keys, data),
        "meta" => [
            layout::CONFIG,
            layout::INDEX,
            layout::SNAPSHOTS,
            layout::LOCKS,
            layout::DELETED,
        ]
        .into_iter()
        .map(|kind| shown(codec::open_meta::<ciborium::Value>(&keys, kind, NAME, data)))
        .fold(false, |a, b| a | b),
        "meta_plain" => meta_plain(&keys, data),
        "index_plain" => {
            let sealed = seal_cbor(&keys, index::KIND, data);
            match index::open(&keys, &name_id(), &sealed) {
                Ok(file) => {
                    let mut index = index::Index::default();
                    index.add_file(file);
                    index.finish();
                    true
                }
                Err(e) => shown(Err::<(), _>(e)),
            }
        }
        "recovery_point_plain" => {
            let sealed = seal_cbor(&keys, snapshot::KIND, data);
            shown(snapshot::open(&keys, &name_id(), &sealed))
        }
        "tree_plain" => tree_plain(data),
        "vault_json" => shown(vault::parse_meta(data, "memory://fuzz")),
        "credentials" => credentials(data),
        "key_file" => key_file(&keys, data),
        _ => return None,
    };
    Some(accepted)
}

/// Renders an error the way a report would (`Display` runs on fuzzed values too); whether
/// there was none.
fn shown<T, E: std::error::Error>(r: std::result::Result<T, E>) -> bool {
    let mut err: Option<&dyn std::error::Error> = r.as_ref().err().map(|e| e as _);
    while let Some(e) = err {
        let _ = e.to_string();
        err = e.source();
    }
    r.is_ok()
}

fn name_id() -> Id {
    #[allow(clippy::expect_used)]
    Id::from_hex(NAME).expect("NAME is an id")
}

/// A metadata object of `kind` sealed around `body` the way [`codec::seal_meta`] does (version
/// byte, zstd), so the fuzzer's bytes reach the CBOR decoder.
fn seal_cbor(keys: &MasterKeys, kind: &str, body: &[u8]) -> Vec<u8> {
    let mut plain = vec![1u8];
    #[allow(clippy::expect_used)]
    plain.extend_from_slice(&zstd::bulk::compress(body, 1).expect("zstd into memory"));
    codec::seal_raw_meta(keys, kind, NAME, &plain)
}

/// `data` sealed as the plaintext of every sealed kind (the version byte and zstd body are
/// the fuzzer's), decoded as each kind's record.
fn meta_plain(keys: &MasterKeys, data: &[u8]) -> bool {
    fn open<T: serde::de::DeserializeOwned>(keys: &MasterKeys, kind: &str, data: &[u8]) -> bool {
        let sealed = codec::seal_raw_meta(keys, kind, NAME, data);
        shown(codec::open_meta::<T>(keys, kind, NAME, &sealed))
    }
    [
        open::<MachineConfig>(keys, layout::CONFIG, data),
        open::<IndexFile>(keys, layout::INDEX, data),
        open::<RecoveryPoint>(keys, layout::SNAPSHOTS, data),
        open::<LeaseInfo>(keys, layout::LOCKS, data),
        open::<Marker>(keys, layout::PRUNE, data),
        open::<Tombstone>(keys, layout::DELETED, data),
    ]
    .contains(&true)
}

/// A pack whose header plaintext is `header` (CBOR of the entries, the fuzzer's) after two real
/// blobs, so the entry checks (range, gaps, each blob's seal) all run and can pass.
fn pack_with_header(keys: &MasterKeys, header: &[u8]) -> Vec<u8> {
    let (mut bytes, _) = seed_blobs(keys);
    pack::append_header(&keys.pack_key(&PACK_ID.0), &PACK_ID, header, &mut bytes);
    bytes
}

/// `data` = raw length hint (4 bytes LE) ‖ frame; the frame is sealed as a data blob, then
/// opened as a restore would (unframed, decompressed, its content checked against the id).
fn blob_plain(keys: &MasterKeys, data: &[u8]) -> bool {
    let Some((hint, frame)) = data.split_first_chunk::<4>() else {
        return false;
    };
    let raw_len = u32::from_le_bytes(*hint);
    let key = keys.pack_key(&PACK_ID.0);
    // The id of what the frame holds, if it unframes: so a well-formed frame is accepted.
    let id = pack::unframe(frame, raw_len as usize)
        .map(|content| keys.blob_id(&content))
        .unwrap_or(BlobId([0x11; 32]));
    let sealed = key.seal_blob(&id, BlobKind::Data.code(), frame);
    let at = pack::Slot {
        kind: BlobKind::Data,
        offset: 0,
        len: sealed.len() as u32,
        raw_len,
        within: None,
    };
    shown(pack::open_blob(keys, &key, &id, &at, &sealed))
}

/// `data` = within (4 bytes LE) ‖ length (4 bytes LE) ‖ frame; the frame is sealed as a bundle
/// unit, then one member is taken out of it as a restore would (the unit opened and
/// decompressed within its bound, the member sliced and checked against its id).
fn bundle_plain(keys: &MasterKeys, data: &[u8]) -> bool {
    let Some((place, frame)) = data.split_first_chunk::<8>() else {
        return false;
    };
    let within = u32::from_le_bytes([place[0], place[1], place[2], place[3]]);
    let len = u32::from_le_bytes([place[4], place[5], place[6], place[7]]);
    let key = keys.pack_key(&PACK_ID.0);
    // The id of the member the frame holds at that place, if any: so a well-formed input is
    // accepted.
    let id = pack::unframe_bounded(frame, bundle::MAX_BUNDLE_RAW)
        .ok()
        .and_then(|c| {
            let end = (within as usize).checked_add(len as usize)?;
            c.get(within as usize..end).map(|m| keys.blob_id(m))
        })
        .unwrap_or(BlobId([0x22; 32]));
    let sealed = key.seal(&bundle::ad(BlobKind::Data, 64), frame);
    let at = pack::Slot {
        kind: BlobKind::Data,
        offset: 64,
        len: sealed.len() as u32,
        raw_len: len,
        within: Some(within),
    };
    shown(pack::open_blob(keys, &key, &id, &at, &sealed))
}

/// `data` as the CBOR of a tree, then a restore plan of a recovery point whose every tree is
/// this one: names, nesting, self-reference and fan-out all come from the fuzzer.
fn tree_plain(data: &[u8]) -> bool {
    let tree = Tree::decode(data, &BlobId([0; 32]));
    let Ok(tree) = tree else {
        return shown(tree);
    };
    let index = index::Index::default();
    let fut = plan::Plan::build(
        async |_id: &BlobId| Ok(tree.clone()),
        &index,
        &BlobId([0x22; 32]),
        &[],
        10_000,
    );
    shown(futures::executor::block_on(fut))
}

/// The last bytes of a pack read the way adoption reads them: trailer, then header, then the
/// check that its entries tile the pack.
fn pack_tail(keys: &MasterKeys, data: &[u8]) -> bool {
    let size = data.len() as u64;
    let trailer = &data[data.len().saturating_sub(pack::PACK_TRAILER_LEN as usize)..];
    let start = pack::header_start(&PACK_ID, size, trailer);
    let Ok(start) = start else {
        return shown(start);
    };
    let end = data.len() - trailer.len();
    let entries = pack::open_header(keys, &PACK_ID, &data[start as usize..end]);
    let Ok(entries) = entries else {
        return shown(entries);
    };
    shown(crate::backup::check_tiling("pack", &entries, start))
}

/// `data` as a key file in the vault (and as its printed form): parsed and checked before any
/// Argon2id runs; its MAC verified; unwrapped when its parameters are cheap enough to try.
fn key_file(keys: &MasterKeys, data: &[u8]) -> bool {
    let printed = std::str::from_utf8(data).map(KeyFile::parse_printable);
    let file = match (
        crate::keyfiles::parse("keys/fuzz", data, KEY_BINDING),
        printed,
    ) {
        (Ok(file), _) | (_, Ok(Ok(file))) => file,
        (Err(e), printed) => {
            if let Ok(p) = printed {
                shown(p);
            }
            return shown(Err::<(), _>(e));
        }
    };
    let mac = file.verify_mac(keys);
    let mut ok = matches!(mac, Ok(true)) && file.bound_to() == Some(KEY_BINDING);
    shown(mac);
    let kdf = &file.kdf;
    if kdf.m_cost_kib <= 256 && kdf.t_cost <= 2 && kdf.p_cost <= 2 {
        ok &= shown(file.unwrap(&passphrase()));
    }
    ok
}

const KEY_BINDING: &str = "0123456789abcdef0123456789abcdef/0123456789abcdef";

fn passphrase() -> Passphrase {
    #[allow(clippy::expect_used)]
    Passphrase::new("the fuzz targets' passphrase").expect("long enough")
}

/// `data` as a credentials file, checked against a vault record.
fn credentials(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let creds = VaultCredentials::from_json(text);
    let Ok(creds) = creds else {
        return shown(creds);
    };
    let now = jiff::Timestamp::UNIX_EPOCH;
    shown(creds.check(&"0".repeat(layout::VAULT_ID_HEX), &seed_record(), now))
}

/// Valid inputs for each target, to start a fuzzer's corpus from and for the property tests
/// to mutate.
pub fn seeds(name: &str) -> Vec<Vec<u8>> {
    let keys = keys();
    let tree = seed_tree();
    match name {
        "pack" => vec![seed_pack(&keys)],
        "pack_header_plain" => vec![codec::to_cbor(&seed_blobs(&keys).1)],
        "blob_plain" => {
            #[allow(clippy::expect_used)]
            let mut framer = pack::Framer::new(3).expect("zstd level 3");
            let text = b"a line of text that compresses well\n".repeat(40);
            [true, false]
                .into_iter()
                .map(|compress| {
                    let mut input = (text.len() as u32).to_le_bytes().to_vec();
                    input.extend_from_slice(&framer.frame(&text, compress));
                    input
                })
                .collect()
        }
        "bundle_plain" => {
            #[allow(clippy::expect_used)]
            let mut framer = pack::Framer::new(3).expect("zstd level 3");
            let content = b"first member|second member, a little longer|third".to_vec();
            [(0u32, 12u32, true), (12, 32, false), (44, 5, true)]
                .into_iter()
                .map(|(within, len, compress)| {
                    let mut input = within.to_le_bytes().to_vec();
                    input.extend_from_slice(&len.to_le_bytes());
                    input.extend_from_slice(&framer.frame(&content, compress));
                    input
                })
                .collect()
        }
        "meta" => vec![
            codec::seal_meta(&keys, layout::INDEX, NAME, &seed_index()),
            codec::seal_meta(&keys, layout::SNAPSHOTS, NAME, &seed_recovery_point()),
        ],
        "meta_plain" => {
            let mut plain = vec![1u8];
            let cbor = codec::to_cbor(&seed_index());
            #[allow(clippy::expect_used)]
            plain.extend_from_slice(&zstd::bulk::compress(&cbor, 1).expect("zstd into memory"));
            vec![plain]
        }
        "index_plain" => vec![codec::to_cbor(&seed_index())],
        "recovery_point_plain" => vec![codec::to_cbor(&seed_recovery_point())],
        "tree_plain" => vec![tree.encode()],
        "vault_json" => vec![codec::json(&seed_vault_meta()).to_vec()],
        "credentials" => vec![seed_credentials().to_json().into_bytes()],
        "key_file" => {
            let kdf = KdfParams {
                m_cost_kib: 64,
                t_cost: 1,
                p_cost: 1,
            };
            #[allow(clippy::expect_used)]
            let file = KeyFile::wrap(&keys, &passphrase(), kdf, KEY_BINDING).expect("wrap");
            let mut out = vec![file.to_json()];
            out.extend(file.to_printable().ok().map(String::into_bytes));
            out
        }
        _ => Vec::new(),
    }
}

fn seed_entry(offset: u64, len: u32) -> pack::PackEntry {
    pack::PackEntry {
        kind: BlobKind::Data,
        id: BlobId([0x33; 32]),
        offset,
        len,
        raw_len: len.saturating_sub(40),
        within: None,
    }
}

/// Two sealed blobs under the fixed keys, and their header entries.
fn seed_blobs(keys: &MasterKeys) -> (Vec<u8>, Vec<pack::PackEntry>) {
    let key = keys.pack_key(&PACK_ID.0);
    let mut bytes = Vec::new();
    let mut entries = Vec::new();
    for content in [&b"first blob"[..], b"second, longer blob"] {
        let id = keys.blob_id(content);
        let mut frame = vec![0u8];
        frame.extend_from_slice(&(content.len() as u32).to_le_bytes());
        frame.extend_from_slice(content);
        let sealed = key.seal_blob(&id, BlobKind::Data.code(), &frame);
        entries.push(pack::PackEntry {
            kind: BlobKind::Data,
            id,
            offset: bytes.len() as u64,
            len: sealed.len() as u32,
            raw_len: content.len() as u32,
            within: None,
        });
        bytes.extend_from_slice(&sealed);
    }
    (bytes, entries)
}

/// A real pack: the one input of `pack` that authenticates.
fn seed_pack(keys: &MasterKeys) -> Vec<u8> {
    let (_, entries) = seed_blobs(keys);
    pack_with_header(keys, &codec::to_cbor(&entries))
}

fn seed_index() -> IndexFile {
    IndexFile {
        packs: vec![index::IndexPack {
            id: PACK_ID,
            size: 4096,
            blobs: vec![seed_entry(0, 1000), seed_entry(1000, 2000)],
        }],
    }
}

fn seed_recovery_point() -> RecoveryPoint {
    RecoveryPoint {
        time: "2026-12-01T12:00:00Z".into(),
        hostname: "host".into(),
        paths: vec!["/home/a".into()],
        tree: BlobId([0x22; 32]),
        parent: Some(PACK_ID),
        job: Some("daily".into()),
        files: 3,
        dirs: 2,
        bytes: 12345,
        bytes_added: 678,
        sequence: 0,
        predecessors: Vec::new(),
    }
}

/// A directory with a file, a sparse file and a subdirectory (whose tree, in `tree_plain`, is
/// this one again: the walk must refuse it).
fn seed_tree() -> Tree {
    let node = |name: &[u8], kind| crate::tree::Node {
        name: serde_bytes::ByteBuf::from(name.to_vec()),
        kind,
        mode: 0o100644,
        uid: 1000,
        gid: 1000,
        mtime_ns: 1_700_000_000_000_000_000,
        legacy_ctime_ns: None,
        legacy_ino: None,
        size: 10,
        content: vec![BlobId([0x44; 32])],
        segments: Vec::new(),
        subtree: None,
        class: None,
        target: None,
        link_group: None,
    };
    let mut dir = node(b"dir", crate::tree::NodeKind::Dir);
    dir.subtree = Some(BlobId([0x22; 32]));
    dir.content.clear();
    let mut sparse = node(b"sparse", crate::tree::NodeKind::File);
    sparse.class = Some("sparse".into());
    sparse.segments = vec![(0, 4), (1 << 20, 6)];
    Tree {
        nodes: vec![node(b"a.txt", crate::tree::NodeKind::File), dir, sparse],
    }
}

fn seed_vault_meta() -> layout::VaultMeta {
    layout::VaultMeta {
        format: layout::FORMAT_VERSION,
        vault_id: "0123456789abcdef0123456789abcdef".into(),
        created: "2026-12-01T12:00:00Z".into(),
        credentials: seed_record(),
        soft_delete_days: layout::DEFAULT_SOFT_DELETE_DAYS,
        pin: None,
        name: Some("seed-vault".into()),
        state: Some(crate::vault_state::StateRecord {
            state: crate::vault_state::VaultState::ReadOnly,
            set_by: "owner@host".into(),
            set_at: "2026-12-01T12:00:00Z".into(),
        }),
    }
}

fn seed_record() -> CredentialsRecord {
    CredentialsRecord {
        generation: 1,
        secret_hash: blake3::hash(b"secret").to_hex().to_string(),
        issued_at: "2026-01-01T00:00:00Z".into(),
        expires_at: "2027-01-01T00:00:00Z".into(),
    }
}

fn seed_credentials() -> VaultCredentials {
    VaultCredentials {
        format: "rbackup-vault-credentials".into(),
        vault: "memory://fuzz".into(),
        vault_id: "0".repeat(layout::VAULT_ID_HEX),
        generation: 1,
        secret: "secret".into(),
        issued_at: "2026-01-01T00:00:00Z".into(),
        expires_at: "2027-01-01T00:00:00Z".into(),
    }
}
