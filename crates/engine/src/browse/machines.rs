//! What a vault tells about its machines without any machine's keys: which are registered,
//! when, and how many recovery point objects each stores. Names, host names and the times of
//! recovery points are sealed with each machine's keys, so finding a machine by name takes
//! its passphrase ([`Repository::open`] and [`Repository::machine_name`]).

use serde::Serialize;

use crate::error::Result;
use crate::layout::{self, MachineMarker, machine_path};
use crate::vault::Vault;

/// One registered machine, as the vault's plain records describe it.
#[derive(Clone, Debug, Serialize)]
pub struct MachineSummary {
    /// Its id (16 hex digits).
    pub id: String,
    /// When it was registered (RFC 3339), from its marker; `None` when the marker does not
    /// read as one of ours (it is then reported as it is, not trusted).
    pub registered: Option<String>,
    /// Recovery point objects stored (soft-deleted ones included: telling them apart takes
    /// the machine's keys).
    pub recovery_point_objects: u64,
}

impl Vault {
    /// Every registered machine with what the vault knows of it without keys. Ids are
    /// checked before they become paths (see [`Vault::machines`]); a marker is read within its
    /// size cap, and its time is only reported when it parses.
    pub async fn machine_summaries(&self) -> Result<Vec<MachineSummary>> {
        let store = self.store();
        let mut out = Vec::new();
        for id in self.machines().await? {
            let marker_path = machine_path(&id, layout::MACHINE_JSON);
            let max = layout::limits(layout::MACHINE_JSON).stored;
            let registered = layout::get_bounded(&*store, &marker_path, max)
                .await
                .ok()
                .and_then(|b| serde_json::from_slice::<MachineMarker>(&b).ok())
                .filter(|m| m.machine_id == id)
                .and_then(|m| m.created.parse::<jiff::Timestamp>().ok())
                .map(|t| t.to_string());
            let points = store.list(&machine_path(&id, layout::SNAPSHOTS)).await?;
            let recovery_point_objects = points
                .iter()
                .filter(|m| {
                    let name = m.path.rsplit('/').next().unwrap_or_default();
                    crate::id::Id::from_hex(name).is_ok()
                })
                .count() as u64;
            out.push(MachineSummary {
                id,
                registered,
                recovery_point_objects,
            });
        }
        Ok(out)
    }
}
