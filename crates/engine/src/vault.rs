//! The vault: `vault.json` at the root, and one repository per registered machine under
//! `machines/<machine-id>/`.

use std::sync::Arc;
use std::time::Duration;

use rbackup_chunker::ChunkerParams;
use rbackup_crypto::{KdfParams, KeyFile, MasterKeys, Passphrase};
use rbackup_store::{PutMode, Store, StoreError};
use rbackup_throttle::{Clock, SystemClock};

use crate::codec::{self, json};
use crate::credentials::VaultCredentials;
use crate::error::{EngineError, Result};
use crate::id::random_bytes;
use crate::keyfiles;
use crate::layout::{
    self, FORMAT_VERSION, MachineConfig, MachineMarker, VAULT_JSON, VaultMeta, machine_path,
};
use crate::vault_state::{StateRecord, VaultState};

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
    /// Every time the engine reads or waits for (see [`Vault::with_clock`]).
    clock: Arc<dyn Clock>,
    /// Machines opened through this handle are append-only (see [`Vault::with_append_only`]).
    append_only: bool,
}

impl Vault {
    /// Creates a vault in an empty location and issues its first credentials.
    pub async fn create(
        store: Arc<dyn Store>,
        url: &str,
        valid_for: Duration,
    ) -> Result<(Vault, VaultCredentials)> {
        Vault::create_with_clock(store, url, valid_for, Arc::new(SystemClock::new())).await
    }

    /// [`Vault::create`] on `clock` (see [`Vault::with_clock`]): the creation time and the
    /// first credentials' validity come from it.
    pub async fn create_with_clock(
        store: Arc<dyn Store>,
        url: &str,
        valid_for: Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<(Vault, VaultCredentials)> {
        Vault::create_named(store, url, None, valid_for, clock).await
    }

    /// [`Vault::create_with_clock`] with a name, which must follow the vault naming rules
    /// ([`check_vault_name`](crate::check_vault_name)); a bad name is refused before anything
    /// is written.
    pub async fn create_named(
        store: Arc<dyn Store>,
        url: &str,
        name: Option<&str>,
        valid_for: Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<(Vault, VaultCredentials)> {
        if let Some(n) = name {
            crate::vault_state::check_vault_name(n)?;
        }
        let vault_id = hex::encode(random_bytes::<16>());
        let now = clock.now();
        let (creds, record) = VaultCredentials::issue(url, &vault_id, 1, valid_for, now)?;
        let meta = VaultMeta {
            format: FORMAT_VERSION,
            vault_id,
            created: now.to_string(),
            credentials: record,
            soft_delete_days: layout::DEFAULT_SOFT_DELETE_DAYS,
            pin: None,
            name: name.map(str::to_string),
            state: None,
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
            clock,
            append_only: false,
        };
        Ok((vault, creds))
    }

    /// Opens an existing vault.
    pub async fn open(store: Arc<dyn Store>, url: &str) -> Result<Vault> {
        let max = layout::limits(VAULT_JSON).stored;
        let bytes = match layout::get_bounded(&*store, VAULT_JSON, max).await {
            Err(EngineError::Store(e)) if e.is_not_found() => {
                return Err(EngineError::NotAVault { url: url.into() });
            }
            r => r?,
        };
        Ok(Vault {
            store,
            url: url.into(),
            meta: parse_meta(&bytes, url)?,
            clock: Arc::new(SystemClock::new()),
            append_only: false,
        })
    }

    /// Uses `clock` instead of the system clock for everything done through this handle and
    /// the repositories opened from it: credentials, creation times, recovery-point times,
    /// leases (their expiry and the waits between refreshes), prune's decision times and
    /// grace periods, and the time zone retention counts days in.
    ///
    /// The clock's sleeps must wait for its time to pass, as the system clock's and
    /// [`ManualClock`](rbackup_throttle::ManualClock)'s do: a clock whose sleeps move time
    /// themselves (the throttle's `FakeClock`) would let a lease's refresh loop run it
    /// forward without end.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Vault {
        self.clock = clock;
        self
    }

    /// Makes every machine opened through this handle append-only (see
    /// [`Repository::set_append_only`](crate::Repository::set_append_only)): for an agent whose
    /// store credentials cannot delete or overwrite.
    pub fn with_append_only(mut self, append_only: bool) -> Vault {
        self.append_only = append_only;
        self
    }

    /// Whether machines opened through this handle are append-only.
    pub fn is_append_only(&self) -> bool {
        self.append_only
    }

    /// The clock this handle uses.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
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
        let (creds, record) = VaultCredentials::issue(
            &self.url,
            &self.meta.vault_id,
            generation,
            valid_for,
            self.clock.now(),
        )?;
        // Afresh: a PIN or window set by another process since this handle opened must stay.
        let mut meta = crate::pin::read_meta(&*self.store).await?;
        meta.credentials = record;
        self.store
            .put(VAULT_JSON, json(&meta), PutMode::Overwrite)
            .await?;
        self.meta = meta;
        Ok(creds)
    }

    /// The vault's name, if it was given one.
    pub fn name(&self) -> Option<&str> {
        self.meta.name.as_deref()
    }

    /// The vault's state as `vault.json` said when this handle read it.
    pub fn state(&self) -> VaultState {
        self.meta
            .state
            .as_ref()
            .map_or(VaultState::Active, |r| r.state)
    }

    /// The last change of the vault's state (who, when), if it was ever changed.
    pub fn state_record(&self) -> Option<&StateRecord> {
        self.meta.state.as_ref()
    }

    /// Sets the vault's state, recording `set_by` (cut to [`MAX_SET_BY`](crate::MAX_SET_BY)
    /// bytes) and the time. Read-only stops backups and copies into the vault from the next
    /// time a machine opens it; restores and checks go on. Returns the record it replaced.
    pub async fn set_state(
        &mut self,
        state: VaultState,
        set_by: &str,
    ) -> Result<Option<StateRecord>> {
        let record = StateRecord {
            state,
            set_by: set_by.into(),
            set_at: self.clock.now().to_string(),
        }
        .sanitized();
        // Afresh: a PIN or credentials issued by another process since this handle opened stay.
        let mut meta = crate::pin::read_meta(&*self.store).await?;
        let old = meta.state.replace(record);
        self.store
            .put(VAULT_JSON, json(&meta), PutMode::Overwrite)
            .await?;
        self.meta = meta;
        Ok(old)
    }

    /// The soft-delete window in days, as `vault.json` said when this handle read it.
    pub fn soft_delete_days(&self) -> u32 {
        self.meta.soft_delete_days
    }

    /// Issues a new security PIN valid for `valid_for` (see `pin.rs`) and returns it with its
    /// expiry (RFC 3339): only its hash is kept, and it replaces any PIN issued before.
    pub async fn issue_pin(&mut self, valid_for: Duration) -> Result<(String, String)> {
        let (pin, record) = crate::pin::issue(valid_for, self.clock.now())?;
        let expires_at = record.expires_at.clone();
        let mut meta = crate::pin::read_meta(&*self.store).await?;
        meta.pin = Some(record);
        self.store
            .put(VAULT_JSON, json(&meta), PutMode::Overwrite)
            .await?;
        self.meta = meta;
        Ok((pin, expires_at))
    }

    /// Sets the soft-delete window to `days`. Lengthening it needs nothing; shortening it is
    /// a critical operation that needs the PIN in force, which it uses up. Returns the
    /// previous window.
    pub async fn set_soft_delete_days(&mut self, days: u32, pin: Option<&str>) -> Result<u32> {
        let mut meta = crate::pin::read_meta(&*self.store).await?;
        let old = meta.soft_delete_days;
        if days < old {
            meta = crate::pin::consume(&*self.store, pin, self.clock.now()).await?;
        }
        meta.soft_delete_days = days;
        self.store
            .put(VAULT_JSON, json(&meta), PutMode::Overwrite)
            .await?;
        self.meta = meta;
        Ok(old)
    }

    /// Refuses credentials that are not this vault's newest, or have expired.
    pub fn check_credentials(&self, creds: &VaultCredentials) -> Result<()> {
        creds.check(
            &self.meta.vault_id,
            &self.meta.credentials,
            self.clock.now(),
        )
    }

    /// Registers a new machine: creates its repository (the key file and its copy, config,
    /// then the marker that makes it visible) and returns its id and master keys.
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
        let config = MachineConfig {
            name: reg.name,
            hostname: reg.hostname,
            chunker: reg.chunker,
            created: self.clock.now().to_string(),
        };
        self.write_machine(&machine, &keys, reg.passphrase, reg.kdf, &config)
            .await?;
        Ok((machine, keys))
    }

    /// Registers the machine of `source` (a repository in another vault) here with the same
    /// id, master keys, name and chunking, its keys wrapped under `passphrase` in a key file
    /// bound to this vault: what [`Repository::copy_to`](crate::Repository::copy_to) copies
    /// into. Refused when this vault already has the machine ([`EngineError::MachineExists`]).
    pub async fn register_copy(
        &self,
        creds: &VaultCredentials,
        source: &crate::Repository,
        passphrase: &Passphrase,
        kdf: KdfParams,
    ) -> Result<()> {
        self.check_credentials(creds)?;
        let machine = source.machine_id();
        let marker = machine_path(machine, layout::MACHINE_JSON);
        if self.store.exists(&marker).await? {
            return Err(EngineError::MachineExists {
                machine: machine.into(),
                vault: self.url.clone(),
            });
        }
        let config = MachineConfig {
            created: self.clock.now().to_string(),
            ..(*source.config).clone()
        };
        self.write_machine(machine, &source.keys, passphrase, kdf, &config)
            .await
    }

    /// A new machine's repository: the key file and its copy, the sealed config, then the
    /// marker that makes it visible.
    async fn write_machine(
        &self,
        machine: &str,
        keys: &MasterKeys,
        passphrase: &Passphrase,
        kdf: KdfParams,
        config: &MachineConfig,
    ) -> Result<()> {
        let bound = keyfiles::binding(self.id(), machine);
        let key_file = KeyFile::wrap(keys, passphrase, kdf, &bound)?;
        keyfiles::write_pair(&*self.store, machine, &key_file).await?;
        let sealed = codec::seal_meta(keys, layout::CONFIG, machine, config);
        self.store
            .put(
                &machine_path(machine, layout::CONFIG),
                sealed.into(),
                PutMode::Create,
            )
            .await?;
        let marker = MachineMarker {
            format: FORMAT_VERSION,
            machine_id: machine.into(),
            created: config.created.clone(),
        };
        self.store
            .put(
                &machine_path(machine, layout::MACHINE_JSON),
                json(&marker),
                PutMode::Create,
            )
            .await?;
        Ok(())
    }

    /// Ids of the registered machines. A folder under `machines/` whose name is not a machine
    /// id is not one of ours: it is ignored with a warning.
    pub async fn machines(&self) -> Result<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        for m in self.store.list(layout::MACHINES).await? {
            match layout::marker_machine(&m.path) {
                Some(id) if layout::is_machine_id(id) => out.push(id.to_string()),
                Some(_) => tracing::warn!("ignoring {}: not a machine id", m.path),
                None => {}
            }
        }
        out.sort();
        Ok(out)
    }
}

/// `vault.json` as read from the vault at `url`: parsed, its id checked before anything makes
/// a path of it, its format ours.
pub(crate) fn parse_meta(bytes: &[u8], url: &str) -> Result<VaultMeta> {
    let mut meta: VaultMeta =
        serde_json::from_slice(bytes).map_err(|e| EngineError::corrupt(VAULT_JSON, e))?;
    // The cache folder is named after it: refuse anything that is not our own form.
    layout::check_vault_id(VAULT_JSON, &meta.vault_id)?;
    // Shown in messages and terminals: nothing from the vault goes there unbounded.
    meta.state = meta.state.map(StateRecord::sanitized);
    if let Some(n) = &meta.name
        && crate::vault_state::check_vault_name(n).is_err()
    {
        tracing::warn!("ignoring the vault's name: it does not follow the naming rules");
        meta.name = None;
    }
    if meta.format != FORMAT_VERSION {
        return Err(EngineError::UnsupportedFormat {
            what: format!("vault {url}"),
            found: meta.format,
            supported: FORMAT_VERSION,
        });
    }
    Ok(meta)
}
