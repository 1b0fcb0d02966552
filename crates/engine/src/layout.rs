//! Where everything lives in a vault, the plain records written there, and the format version.
//!
//! ```text
//! vault.json                              VaultMeta, plain JSON
//! machines/<machine-id>/machine.json      MachineMarker, plain JSON, written last
//! machines/<machine-id>/config            MachineConfig, sealed
//! machines/<machine-id>/keys/<id>         key files (passphrase-wrapped master keys), JSON
//! machines/<machine-id>/keys/<id>.copy    the same bytes again (see `keyfiles`)
//! machines/<machine-id>/packs/<xx>/<id>   packs, in directories by the id's first byte
//! machines/<machine-id>/index/<id>        index files, sealed
//! machines/<machine-id>/snapshots/<id>    recovery points, sealed
//! machines/<machine-id>/locks/<id>        leases, sealed
//! machines/<machine-id>/prune/<id>        prune markers, sealed
//! machines/<machine-id>/policy/<id>       published retention policies, sealed
//! machines/<machine-id>/deleted/<rp-id>    tombstones of soft-deleted recovery points, sealed
//! ```
//!
//! `Vault` writes the root and registers machines; `Repository` reads and writes inside one
//! machine's directory. Both take the layout from here, so neither depends on the other for it.
//! The directory names of sealed objects double as their metadata kind (see `codec`).
//!
//! The vault is untrusted input. Before a name read from it becomes a path (the cache folder is
//! derived from the vault id and machine id), it is checked here: a vault id is 32 lowercase hex
//! digits, a machine id 16, an object name 64 (see [`Id`]). And every object has a size cap per
//! kind ([`limits`]), checked with `head` before it is read and again on the bytes received, and
//! a second cap on what its zstd body may decompress to, so an edited vault cannot make us
//! allocate without bound. The caps are far above what this engine writes:
//!
//! | kind          | stored cap | plain cap | what it holds                                    |
//! |---------------|-----------:|----------:|--------------------------------------------------|
//! | vault.json    |      1 MiB |         - | a few hundred bytes of JSON                      |
//! | machine.json  |     64 KiB |         - | about 150 bytes of JSON                          |
//! | config        |      1 MiB |     1 MiB | names and chunker parameters                     |
//! | keys/*        |     64 KiB |         - | about 700 bytes of JSON                          |
//! | index/*       |    256 MiB |   512 MiB | ≤ 64 packs × their entries (~60 B per blob)      |
//! | snapshots/*   |     16 MiB |    64 MiB | the source paths and a few figures               |
//! | locks/*       |      1 MiB |     1 MiB | one lease                                        |
//! | prune/*       |     64 MiB |   256 MiB | the ids of the packs a prune deletes             |
//! | policy/*      |      1 MiB |     1 MiB | the retention policy of each job                 |
//! | deleted/*     |     64 KiB |    64 KiB | who deleted a recovery point, when and why       |
//! | packs/*       |      2 GiB |         - | `pack_size` (default 32 MiB) + one blob + header |
//!
//! An index file lists the packs of one flush (at most 64, see `backup::packer`): at the default
//! 1 MiB average chunk that is about 2,000 entries, so 256 MiB leaves room for chunks averaging
//! a few hundred bytes. A pack is closed once it reaches `pack_size`, so it exceeds it by at
//! most one blob (≤ 64 MiB, the chunker's ceiling) and its header. Blob content is bounded by
//! its length recorded in the index (see `pack::unframe`).

use rbackup_chunker::ChunkerParams;
use rbackup_store::{Bytes, Store};
use serde::{Deserialize, Serialize};

use crate::credentials::CredentialsRecord;
use crate::error::{CorruptReason, EngineError, Result};
use crate::id::Id;
use crate::pin::PinRecord;

/// The vault format this release writes and reads.
pub const FORMAT_VERSION: u32 = 1;

pub(crate) const VAULT_JSON: &str = "vault.json";
pub(crate) const MACHINES: &str = "machines";
/// Inside a machine's directory.
pub(crate) const MACHINE_JSON: &str = "machine.json";
pub(crate) const CONFIG: &str = "config";
pub(crate) const KEYS: &str = "keys";
pub(crate) const PACKS: &str = "packs";
pub(crate) const INDEX: &str = "index";
pub(crate) const SNAPSHOTS: &str = "snapshots";
pub(crate) const LOCKS: &str = "locks";
pub(crate) const PRUNE: &str = "prune";
pub(crate) const POLICY: &str = "policy";
pub(crate) const DELETED: &str = "deleted";

/// The soft-delete window of a vault whose `vault.json` does not set one.
pub const DEFAULT_SOFT_DELETE_DAYS: u32 = 14;

/// The largest plain content a blob may have. Data blobs are chunks (at most the chunker's
/// 64 MiB); tree blobs list one directory, about 150 bytes an entry, so this allows millions of
/// entries in one directory. A recorded length above it is refused before anything is
/// allocated for it.
pub const MAX_BLOB_BYTES: u64 = 512 * MIB;

/// Hex digits in a vault id (16 random bytes).
pub(crate) const VAULT_ID_HEX: usize = 32;
/// Hex digits in a machine id (8 random bytes).
pub(crate) const MACHINE_ID_HEX: usize = 16;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

/// How large an object of one kind may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Bytes as stored in the vault.
    pub stored: u64,
    /// Bytes its zstd body may decompress to (sealed metadata only).
    pub plain: u64,
}

/// The caps of the table above, by kind (the directory name, or the plain file's name).
pub(crate) fn limits(kind: &str) -> Limits {
    let (stored, plain) = match kind {
        VAULT_JSON => (MIB, MIB),
        MACHINE_JSON | KEYS | DELETED => (64 * KIB, 64 * KIB),
        CONFIG | LOCKS | POLICY => (MIB, MIB),
        INDEX => (256 * MIB, 512 * MIB),
        SNAPSHOTS => (16 * MIB, 64 * MIB),
        PRUNE => (64 * MIB, 256 * MIB),
        PACKS => (2048 * MIB, 2048 * MIB),
        // Every kind is named above; an unknown one gets the smallest caps.
        _ => (64 * KIB, 64 * KIB),
    };
    Limits { stored, plain }
}

/// Whether `s` is exactly `len` lowercase hex digits: the only form our ids take, and one
/// that cannot name another folder (`..`, `/`, empty) when it becomes a path.
fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Refuses a vault id that is not 32 lowercase hex digits (`object` names where it was read).
pub(crate) fn check_vault_id(object: &str, id: &str) -> Result<()> {
    if is_lower_hex(id, VAULT_ID_HEX) {
        return Ok(());
    }
    let reason = CorruptReason::BadId {
        what: "vault id",
        found: id.chars().take(80).collect(),
        hex_digits: VAULT_ID_HEX,
    };
    Err(EngineError::corrupt(object, reason))
}

/// Whether `id` has the form of a machine id (16 lowercase hex digits).
pub(crate) fn is_machine_id(id: &str) -> bool {
    is_lower_hex(id, MACHINE_ID_HEX)
}

/// Refuses a machine id that is not 16 lowercase hex digits (`object` names where it was read).
pub(crate) fn check_machine_id(object: &str, id: &str) -> Result<()> {
    if is_machine_id(id) {
        return Ok(());
    }
    let reason = CorruptReason::BadId {
        what: "machine id",
        found: id.chars().take(80).collect(),
        hex_digits: MACHINE_ID_HEX,
    };
    Err(EngineError::corrupt(object, reason))
}

/// Refuses an object of `size` bytes over `max`.
pub(crate) fn check_size(object: &str, size: u64, max: u64) -> Result<()> {
    if size > max {
        return Err(EngineError::corrupt(
            object,
            CorruptReason::TooLarge { size, max },
        ));
    }
    Ok(())
}

/// Reads `path` whole if it is no larger than `max` bytes: the size is asked for first, so an
/// oversized object is refused before any of it is downloaded, and checked again on the bytes
/// received (it may have been replaced in between).
pub(crate) async fn get_bounded(store: &dyn Store, path: &str, max: u64) -> Result<Bytes> {
    let meta = store.head(path).await?;
    check_size(path, meta.size, max)?;
    let bytes = store.get(path).await?;
    check_size(path, bytes.len() as u64, max)?;
    Ok(bytes)
}

/// The vault path of `rel` inside machine `machine`'s directory.
pub(crate) fn machine_path(machine: &str, rel: &str) -> String {
    format!("{MACHINES}/{machine}/{rel}")
}

/// The machine id, when `path` (a full vault path) is a machine's `machine.json`.
pub(crate) fn marker_machine(path: &str) -> Option<&str> {
    let rest = path.strip_prefix(MACHINES)?.strip_prefix('/')?;
    let (id, file) = rest.split_once('/')?;
    (file == MACHINE_JSON).then_some(id)
}

/// A new key file's path inside a machine's directory (its copy adds `.copy`).
pub(crate) fn key_rel(file: &Id) -> String {
    format!("{KEYS}/{}", file.to_hex())
}

/// Every folder (a vault key) that machine `machine` writes objects into: `machines`, its own
/// directory and each folder under it, the 256 pack folders included. Whoever makes a local
/// vault's folders append-only creates these first (a folder a put creates later inside an
/// append-only one would not be append-only itself).
pub fn machine_folders(machine: &str) -> Vec<String> {
    let mut out = vec![MACHINES.to_string(), machine_path(machine, "")];
    out[1].pop(); // the trailing '/'
    for dir in [KEYS, PACKS, INDEX, SNAPSHOTS, LOCKS, PRUNE, DELETED, POLICY] {
        out.push(machine_path(machine, dir));
    }
    out.extend((0..=255u8).map(|b| machine_path(machine, &format!("{PACKS}/{b:02x}"))));
    out
}

pub(crate) fn pack_rel(pack: &Id) -> String {
    let hex = pack.to_hex();
    format!("{PACKS}/{}/{hex}", &hex[..2])
}

/// `vault.json`: nothing secret.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VaultMeta {
    /// Format version.
    pub format: u32,
    /// Random id of the vault.
    pub vault_id: String,
    /// RFC 3339.
    pub created: String,
    /// The newest credentials.
    pub credentials: CredentialsRecord,
    /// Days a soft-deleted recovery point stays restorable before prune reclaims its data
    /// (vaults from before soft delete read as [`DEFAULT_SOFT_DELETE_DAYS`]).
    #[serde(default = "default_soft_delete_days")]
    pub soft_delete_days: u32,
    /// The security PIN in force, if one was issued (see `pin.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<PinRecord>,
    /// The vault's name, when it was given one (see `vault_state.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The last change of the vault's state; none: active since it was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<crate::vault_state::StateRecord>,
}

fn default_soft_delete_days() -> u32 {
    DEFAULT_SOFT_DELETE_DAYS
}

/// `machines/<id>/machine.json`: written last at registration; its presence means the machine
/// exists.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct MachineMarker {
    pub format: u32,
    pub machine_id: String,
    pub created: String,
}

/// `machines/<id>/config`, sealed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct MachineConfig {
    pub name: String,
    pub hostname: String,
    pub chunker: ChunkerParams,
    pub created: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_machines_own_marker_names_it() {
        let m = machine_path("ab12", MACHINE_JSON);
        assert_eq!(m, "machines/ab12/machine.json");
        assert_eq!(marker_machine(&m), Some("ab12"));
        assert_eq!(marker_machine(&machine_path("ab12", CONFIG)), None);
        assert_eq!(marker_machine("machines/ab12/keys/machine.json"), None);
        assert_eq!(marker_machine("machinesab12/machine.json"), None);
    }

    #[test]
    fn ids_are_lowercase_hex_of_their_length() {
        let vault = "0123456789abcdef0123456789abcdef";
        check_vault_id("vault.json", vault).unwrap();
        for bad in [
            "../../x",
            "",
            "0123456789ABCDEF0123456789ABCDEF",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "0123456789abcdef/123456789abcdef",
            "0123456789abcdef0123456789abcde\u{e9}",
        ] {
            let err = check_vault_id("vault.json", bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    EngineError::Corrupt {
                        reason: CorruptReason::BadId { .. },
                        ..
                    }
                ),
                "{bad:?}: {err}"
            );
        }
        assert!(is_machine_id("0123456789abcdef"));
        for bad in [
            "..",
            "0123456789abcde",
            "0123456789abcdeg",
            "0123456789abcdef0",
        ] {
            assert!(!is_machine_id(bad), "{bad:?}");
            assert!(check_machine_id("listing", bad).is_err());
        }
    }

    #[test]
    fn sizes_over_the_cap_are_refused() {
        let cap = limits(SNAPSHOTS).stored;
        check_size("s", cap, cap).unwrap();
        let err = check_size("s", cap + 1, cap).unwrap_err();
        assert!(matches!(
            err,
            EngineError::Corrupt { reason: CorruptReason::TooLarge { size, max }, .. }
                if size == cap + 1 && max == cap
        ));
        // Every kind has its own caps, and the small ones are small.
        assert_eq!(limits(KEYS).stored, 64 * KIB);
        assert_eq!(limits(VAULT_JSON).stored, MIB);
        assert_eq!(limits(DELETED).stored, 64 * KIB);
        assert!(limits(PACKS).stored >= 1024 * MIB);
    }

    #[tokio::test]
    async fn get_bounded_refuses_before_reading() {
        let store = rbackup_store::open("memory://layout-bounded", &Default::default()).unwrap();
        store
            .put(
                "big",
                Bytes::from(vec![0u8; 2000]),
                rbackup_store::PutMode::Create,
            )
            .await
            .unwrap();
        assert_eq!(get_bounded(&*store, "big", 2000).await.unwrap().len(), 2000);
        assert!(get_bounded(&*store, "big", 1999).await.is_err());
    }
}
