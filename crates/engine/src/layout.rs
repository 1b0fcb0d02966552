//! Where everything lives in a vault, the plain records written there, and the format version.
//!
//! ```text
//! vault.json                              VaultMeta, plain JSON
//! machines/<machine-id>/machine.json      MachineMarker, plain JSON, written last
//! machines/<machine-id>/config            MachineConfig, sealed
//! machines/<machine-id>/keys/<id>         key files (passphrase-wrapped master keys), JSON
//! machines/<machine-id>/packs/<xx>/<id>   packs, in directories by the id's first byte
//! machines/<machine-id>/index/<id>        index files, sealed
//! machines/<machine-id>/snapshots/<id>    recovery points, sealed
//! machines/<machine-id>/locks/<id>        leases, sealed
//! machines/<machine-id>/prune/<id>        prune markers, sealed
//! ```
//!
//! `Vault` writes the root and registers machines; `Repository` reads and writes inside one
//! machine's directory. Both take the layout from here, so neither depends on the other for it.
//! The directory names of sealed objects double as their metadata kind (see `codec`).

use rbackup_chunker::ChunkerParams;
use serde::{Deserialize, Serialize};

use crate::credentials::CredentialsRecord;
use crate::id::Id;

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

/// A new key file's path inside a machine's directory.
pub(crate) fn key_rel(file: &Id) -> String {
    format!("{KEYS}/{}", file.to_hex())
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
}
