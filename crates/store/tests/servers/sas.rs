//! Shared access signatures for Azurite: the append-only machine's credentials on Azure.
//!
//! A service SAS for a container (`sr=c`), signed with the well-known development key as the
//! Azure documentation says for version 2020-12-06 and later ("Create a service SAS"): an
//! HMAC-SHA256 over the newline-joined fields, base64, percent-encoded into the query string.
//! object_store takes it as `azure_storage_sas_key` (`AZURE_STORAGE_SAS_KEY`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rbackup_store::StoreOptions;

use super::{AZURITE_ACCOUNT, AZURITE_KEY, Azurite, percent_encode};

/// The SAS permissions of an append-only machine, in Azure's letter order: read, create, list.
/// No `w` (which may overwrite), no `d` (delete), no `a` (append blobs, which rbackup never
/// uses); see docs/append-only/README.md for what Azurite measured with them.
pub const MACHINE_SAS_PERMISSIONS: &str = "rcl";

/// The service version the signature is computed for.
const SAS_VERSION: &str = "2021-12-02";

/// Far enough ahead for any test run; a real SAS would be short-lived and renewed.
const SAS_EXPIRY: &str = "2099-01-01T00:00:00Z";

impl Azurite {
    /// A container SAS for `container` with `permissions` (e.g. [`MACHINE_SAS_PERMISSIONS`]),
    /// as the query string a portal would give: `sv=...&se=...&sr=c&sp=...&sig=...`.
    pub fn container_sas(&self, container: &str, permissions: &str) -> String {
        // Fields: permissions, start, expiry, canonical resource, identifier, IP range,
        // protocol, version, resource, snapshot time, encryption scope, then the five
        // response-header overrides (rscc, rscd, rsce, rscl, rsct).
        let canonical = format!("/blob/{AZURITE_ACCOUNT}/{container}");
        let fields = [
            permissions,
            "",
            SAS_EXPIRY,
            &canonical,
            "",
            "",
            "",
            SAS_VERSION,
            "c",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
        ];
        let key = BASE64
            .decode(AZURITE_KEY)
            .expect("the well-known key is base64");
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
        let signature = BASE64.encode(ring::hmac::sign(&key, fields.join("\n").as_bytes()));
        format!(
            "sv={SAS_VERSION}&se={}&sr=c&sp={permissions}&sig={}",
            percent_encode(SAS_EXPIRY),
            percent_encode(&signature)
        )
    }

    /// Options that point an `az://` vault at this server with the SAS `sas` (and no key).
    pub fn options_with_sas(&self, sas: &str) -> StoreOptions {
        StoreOptions::default()
            .with_env(false)
            .with_cloud_config("azure_storage_account_name", AZURITE_ACCOUNT)
            .with_cloud_config("azure_storage_sas_key", sas)
            .with_cloud_config("azure_storage_endpoint", self.endpoint())
    }
}
