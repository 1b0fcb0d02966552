//! The vault: `vault.json` at the root, and one repository per registered machine under
//! `machines/<machine-id>/`.

use std::sync::Arc;
use std::time::Duration;

use rbackup_chunker::ChunkerParams;
use rbackup_crypto::{KdfParams, KeyFile, MasterKeys, Passphrase};
use rbackup_store::{Bytes, PutMode, Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::credentials::{CredentialsRecord, VaultCredentials};
use crate::error::{EngineError, Result};
use crate::id::{Id, random_bytes};
use crate::repo::{MachineConfig, MachineMarker, machine_path};

/// The vault format this release writes and reads.
pub const FORMAT_VERSION: u32 = 1;
const VAULT_JSON: &str = "vault.json";

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

/// What a machine registers with.
#[derive(Debug)]
pub struct Registration<'a> {
    /// A name people recognise (defaults to the host name in the CLI).
    pub name: String,
    /// Host name.
    pub hostname: String,
    /// The passphrase that will wrap the machine's keys.
    pub passphrase: &'a Passphrase,
    /// Argon2id cost.
    pub kdf: KdfParams,
    /// Chunking parameters, fixed for the machine's life (dedup depends on them).
    pub chunker: ChunkerParams,
}

/// An opened vault.
#[derive(Debug, Clone)]
pub struct Vault {
    store: Arc<dyn Store>,
    url: String,
    meta: VaultMeta,
}

impl Vault {
    /// Creates a vault in an empty location and issues its first credentials.
    pub async fn create(
        store: Arc<dyn Store>,
        url: &str,
        valid_for: Duration,
    ) -> Result<(Vault, VaultCredentials)> {
        let vault_id = hex::encode(random_bytes::<16>());
        let (creds, record) = VaultCredentials::issue(url, &vault_id, 1, valid_for)?;
        let meta = VaultMeta {
            format: FORMAT_VERSION,
            vault_id,
            created: jiff::Timestamp::now().to_string(),
            credentials: record,
        };
        match store.put(VAULT_JSON, json(&meta), PutMode::Create).await {
            Err(StoreError::AlreadyExists { .. }) => {
                return Err(EngineError::VaultExists { url: url.into() });
            }
            r => r?,
        }
        let vault = Vault {
            store,
            url: url.into(),
            meta,
        };
        Ok((vault, creds))
    }

    /// Opens an existing vault.
    pub async fn open(store: Arc<dyn Store>, url: &str) -> Result<Vault> {
        let bytes = match store.get(VAULT_JSON).await {
            Err(e) if e.is_not_found() => return Err(EngineError::NotAVault { url: url.into() }),
            r => r?,
        };
        let meta: VaultMeta =
            serde_json::from_slice(&bytes).map_err(|e| EngineError::corrupt(VAULT_JSON, e))?;
        if meta.format != FORMAT_VERSION {
            return Err(EngineError::UnsupportedFormat {
                what: format!("vault {url}"),
                found: meta.format,
                supported: FORMAT_VERSION,
            });
        }
        Ok(Vault {
            store,
            url: url.into(),
            meta,
        })
    }

    /// The vault's id.
    pub fn id(&self) -> &str {
        &self.meta.vault_id
    }

    /// The URL it was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The store underneath.
    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// Issues new credentials; every older credentials file stops working.
    pub async fn issue_credentials(&mut self, valid_for: Duration) -> Result<VaultCredentials> {
        let generation = self.meta.credentials.generation + 1;
        let (creds, record) =
            VaultCredentials::issue(&self.url, &self.meta.vault_id, generation, valid_for)?;
        let mut meta = self.meta.clone();
        meta.credentials = record;
        self.store
            .put(VAULT_JSON, json(&meta), PutMode::Overwrite)
            .await?;
        self.meta = meta;
        Ok(creds)
    }

    /// Refuses credentials that are not this vault's newest, or have expired.
    pub fn check_credentials(&self, creds: &VaultCredentials) -> Result<()> {
        creds.check(
            &self.meta.vault_id,
            &self.meta.credentials,
            jiff::Timestamp::now(),
        )
    }

    /// Registers a new machine: creates its repository (keys, config, then the marker that
    /// makes it visible) and returns its id and master keys.
    pub async fn register(
        &self,
        creds: &VaultCredentials,
        reg: Registration<'_>,
    ) -> Result<(String, MasterKeys)> {
        self.check_credentials(creds)?;
        reg.chunker
            .validate()
            .map_err(|source| EngineError::InvalidChunker { source })?;
        let machine = hex::encode(random_bytes::<8>());
        let keys = MasterKeys::generate();
        let key_file = KeyFile::wrap(&keys, reg.passphrase, reg.kdf)?;
        let key_path = machine_path(&machine, &format!("keys/{}", Id::random().to_hex()));
        self.store
            .put(&key_path, json(&key_file), PutMode::Create)
            .await?;
        let config = MachineConfig {
            name: reg.name,
            hostname: reg.hostname,
            chunker: reg.chunker,
            created: jiff::Timestamp::now().to_string(),
        };
        let sealed = codec::seal_meta(&keys, "config", &machine, &config);
        self.store
            .put(
                &machine_path(&machine, "config"),
                sealed.into(),
                PutMode::Create,
            )
            .await?;
        let marker = MachineMarker {
            format: FORMAT_VERSION,
            machine_id: machine.clone(),
            created: config.created.clone(),
        };
        self.store
            .put(
                &machine_path(&machine, "machine.json"),
                json(&marker),
                PutMode::Create,
            )
            .await?;
        Ok((machine, keys))
    }

    /// Ids of the registered machines.
    pub async fn machines(&self) -> Result<Vec<String>> {
        let mut out: Vec<String> = self
            .store
            .list("machines")
            .await?
            .into_iter()
            .filter_map(|m| {
                let rest = m.path.strip_prefix("machines/")?;
                let (id, file) = rest.split_once('/')?;
                (file == "machine.json").then(|| id.to_string())
            })
            .collect();
        out.sort();
        Ok(out)
    }
}

pub(crate) fn json<T: Serialize>(value: &T) -> Bytes {
    // Our metadata types always serialize.
    #[allow(clippy::expect_used)]
    let v = serde_json::to_vec_pretty(value).expect("JSON encoding");
    Bytes::from(v)
}
