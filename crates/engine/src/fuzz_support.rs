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

use rbackup_crypto::{BlobId, MasterKeys};

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
use crate::tree::Tree;
use crate::vault;

/// The fuzz targets, by name (a fuzz binary of the same name calls [`run`]).
pub const TARGETS: &[&str] = &[
    "pack",
    "pack_header_plain",
    "blob_plain",
    "meta",
    "meta_plain",
    "index_plain",
    "recovery_point_plain",
    "tree_plain",
    "vault_json",
    "credentials",
];

/// Keys every target uses, so a seed sealed by [`seeds`] opens in [`run`].
fn keys() -> MasterKeys {
    let secret: Vec<u8> = (0..rbackup_crypto::MASTER_KEYS_LEN as u8).collect();
    #[allow(clippy::expect_used)]
    MasterKeys::from_secret_bytes(&secret).expect("96 bytes are master keys")
}

const PACK_ID: Id = Id([0x5a; 32]);
const NAME: &str = "00000000000000000000000000000000000000000000000000000000000000ab";

/// Runs target `name` on `data`; an unknown name runs nothing and returns `false`.
pub fn run(name: &str, data: &[u8]) -> bool {
    let keys = keys();
    match name {
        "pack" => {
            // A whole pack as the vault returns it: trailer, sealed header, blobs.
            shown(pack::authenticate(&keys, &PACK_ID, data));
        }
        "pack_header_plain" => {
            shown(pack::authenticate(
                &keys,
                &PACK_ID,
                &pack_with_header(&keys, data),
            ));
        }
        "blob_plain" => blob_plain(&keys, data),
        "meta" => {
            for kind in [
                layout::CONFIG,
                layout::INDEX,
                layout::SNAPSHOTS,
                layout::LOCKS,
            ] {
                shown(codec::open_meta::<ciborium::Value>(&keys, kind, NAME, data));
            }
        }
        "meta_plain" => meta_plain(&keys, data),
        "index_plain" => {
            let sealed = seal_cbor(&keys, index::KIND, data);
            if let Ok(file) = index::open(&keys, &name_id(), &sealed) {
                let mut index = index::Index::default();
                index.add_file(file);
            }
        }
        "recovery_point_plain" => {
            let sealed = seal_cbor(&keys, snapshot::KIND, data);
            shown(snapshot::open(&keys, &name_id(), &sealed));
        }
        "tree_plain" => tree_plain(data),
        "vault_json" => {
            shown(vault::parse_meta(data, "memory://fuzz"));
        }
        "credentials" => credentials(data),
        _ => return false,
    }
    true
}

/// Renders an error the way a report would: `Display` runs on fuzzed values too.
fn shown<T, E: std::error::Error>(r: std::result::Result<T, E>) {
    let mut err: Option<&dyn std::error::Error> = r.as_ref().err().map(|e| e as _);
    while let Some(e) = err {
        let _ = e.to_string();
        err = e.source();
    }
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
fn meta_plain(keys: &MasterKeys, data: &[u8]) {
    let seal = |kind: &str| codec::seal_raw_meta(keys, kind, NAME, data);
    shown(codec::open_meta::<MachineConfig>(
        keys,
        layout::CONFIG,
        NAME,
        &seal(layout::CONFIG),
    ));
    shown(codec::open_meta::<IndexFile>(
        keys,
        layout::INDEX,
        NAME,
        &seal(layout::INDEX),
    ));
    let rp = seal(layout::SNAPSHOTS);
    shown(codec::open_meta::<RecoveryPoint>(
        keys,
        layout::SNAPSHOTS,
        NAME,
        &rp,
    ));
    shown(codec::open_meta::<LeaseInfo>(
        keys,
        layout::LOCKS,
        NAME,
        &seal(layout::LOCKS),
    ));
    shown(codec::open_meta::<Marker>(
        keys,
        layout::PRUNE,
        NAME,
        &seal(layout::PRUNE),
    ));
}

/// A pack whose header plaintext is `header` (CBOR of the entries, the fuzzer's), after a few
/// bytes of blob area, so the entry checks (range, gaps, each blob's seal) all run.
fn pack_with_header(keys: &MasterKeys, header: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0u8; 64];
    pack::append_header(&keys.pack_key(&PACK_ID.0), &PACK_ID, header, &mut bytes);
    bytes
}

/// `data` = raw length hint (4 bytes LE) ‖ frame; the frame is sealed as a data blob with the
/// id of its own content so far as the fuzzer can tell, then opened as a restore would.
fn blob_plain(keys: &MasterKeys, data: &[u8]) {
    let Some((hint, frame)) = data.split_first_chunk::<4>() else {
        return;
    };
    let raw_len = u32::from_le_bytes(*hint);
    let key = keys.pack_key(&PACK_ID.0);
    let id = BlobId([0x11; 32]);
    let sealed = key.seal_blob(&id, BlobKind::Data.code(), frame);
    shown(pack::open_blob(
        keys,
        &key,
        BlobKind::Data,
        &id,
        raw_len,
        &sealed,
    ));
    shown(pack::unframe(frame, raw_len as usize));
}

/// `data` as the CBOR of a tree, then a restore plan of a recovery point whose every tree is
/// this one: names, nesting, self-reference and fan-out all come from the fuzzer.
fn tree_plain(data: &[u8]) {
    let Ok(tree) = Tree::decode(data, &BlobId([0; 32])) else {
        return;
    };
    let index = index::Index::default();
    let rp_entries = 10_000;
    let fut = plan::Plan::build(
        async |_id: &BlobId| Ok(tree.clone()),
        &index,
        &BlobId([0x22; 32]),
        &[],
        rp_entries,
    );
    shown(futures::executor::block_on(fut));
}

/// `data` as a credentials file, checked against a vault record.
fn credentials(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(creds) = VaultCredentials::from_json(text) else {
        return;
    };
    let record = seed_record();
    let now = jiff::Timestamp::UNIX_EPOCH;
    shown(creds.check(&"0".repeat(layout::VAULT_ID_HEX), &record, now));
}

/// Valid inputs for each target, to start a fuzzer's corpus from and for the property tests
/// to mutate.
pub fn seeds(name: &str) -> Vec<Vec<u8>> {
    let keys = keys();
    let tree = seed_tree();
    match name {
        "pack" => vec![seed_pack(&keys)],
        "pack_header_plain" => vec![codec::to_cbor(&vec![seed_entry(0, 64)])],
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
    }
}

/// A real pack of two blobs under the fixed keys: the one input that authenticates.
fn seed_pack(keys: &MasterKeys) -> Vec<u8> {
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
        });
        bytes.extend_from_slice(&sealed);
    }
    pack::append_header(&key, &PACK_ID, &codec::to_cbor(&entries), &mut bytes);
    bytes
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
        ctime_ns: 1_700_000_000_000_000_000,
        ino: 42,
        size: 10,
        content: vec![BlobId([0x44; 32])],
        segments: Vec::new(),
        subtree: None,
        class: None,
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
