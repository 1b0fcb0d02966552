//! An opened machine repository: its keys, config, and the reads every operation shares
//! (index, recovery points, blobs, trees).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use rbackup_crypto::{BlobId, KdfParams, KeyFile, MasterKeys, Passphrase};
use rbackup_store::{PutMode, Store};

use crate::cache::MetaCache;
use crate::codec;
use crate::error::{CorruptReason, EngineError, Result};
use crate::id::Id;
use crate::index::Index;
use crate::layout::{self, FORMAT_VERSION, MachineConfig, MachineMarker, machine_path, pack_rel};
use crate::pack::{self, BlobKind};
use crate::snapshot::{self, RecoveryPoint};
use crate::tree::Tree;
use crate::unlock::{self, SkippedKeyFile};
use crate::vault::Vault;
use crate::vault_state::{StateRecord, VaultState};

/// Parallel metadata downloads: enough to hide latency on a cloud store.
pub(crate) const FETCH_CONCURRENCY: usize = 8;

/// How to unlock a machine's master keys.
#[derive(Debug)]
pub enum Unlock<'a> {
    /// Try each key file of the machine with this passphrase.
    Passphrase(&'a Passphrase),
    /// Keys already unwrapped (the agent's local key file, for scheduled runs).
    Keys(MasterKeys),
    /// A key file kept outside the vault (a recovery key file from
    /// [`Repository::export_key_file`]) and its passphrase; the vault's key files are not read.
    KeyFile(&'a KeyFile, &'a Passphrase),
}

/// One machine's repository, unlocked.
#[derive(Debug, Clone)]
pub struct Repository {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) vault_id: String,
    pub(crate) machine: String,
    pub(crate) keys: Arc<MasterKeys>,
    pub(crate) config: Arc<MachineConfig>,
    pub(crate) cache: Option<MetaCache>,
    /// TTL of the leases this handle takes (see `lock.rs`).
    pub(crate) lease_ttl: std::time::Duration,
    /// The vault handle's clock (see [`Vault::with_clock`]).
    pub(crate) clock: Arc<dyn rbackup_throttle::Clock>,
    /// Refuse every operation that deletes or overwrites (see [`Repository::set_append_only`]).
    pub(crate) append_only: bool,
    /// Key files passed over while unlocking (see `unlock.rs`).
    skipped_key_files: Arc<Vec<SkippedKeyFile>>,
    /// Bundles opened lately by [`Repository::read_blob`].
    units: Arc<crate::bundle::UnitCache>,
    /// The vault's URL and its state record when it was opened (see `vault_state.rs`).
    vault_url: Arc<str>,
    vault_state: Option<Arc<StateRecord>>,
}

impl Repository {
    /// Opens machine `machine` of `vault`. With a `cache_dir`, immutable metadata is kept
    /// there so unchanged re-runs download nothing.
    pub async fn open(
        vault: &Vault,
        machine: &str,
        unlock: Unlock<'_>,
        cache_dir: Option<&Path>,
    ) -> Result<Repository> {
        let store = vault.store();
        if !layout::is_machine_id(machine) {
            // Not a name we would ever give a machine, so not one to build a path from.
            return Err(EngineError::MachineNotFound {
                machine: machine.into(),
                vault: vault.url().into(),
            });
        }
        let marker_path = machine_path(machine, layout::MACHINE_JSON);
        let max = layout::limits(layout::MACHINE_JSON).stored;
        let marker = match layout::get_bounded(&*store, &marker_path, max).await {
            Err(EngineError::Store(e)) if e.is_not_found() => {
                return Err(EngineError::MachineNotFound {
                    machine: machine.into(),
                    vault: vault.url().into(),
                });
            }
            r => r?,
        };
        let marker: MachineMarker =
            serde_json::from_slice(&marker).map_err(|e| EngineError::corrupt(&marker_path, e))?;
        if marker.format != FORMAT_VERSION {
            return Err(EngineError::UnsupportedFormat {
                what: format!("machine {machine}"),
                found: marker.format,
                supported: FORMAT_VERSION,
            });
        }
        if marker.machine_id != machine {
            let found = marker.machine_id.chars().take(80).collect();
            let reason = CorruptReason::OtherMachine { found };
            return Err(EngineError::corrupt(marker_path, reason));
        }
        // Keys from a key file authenticated (AES-GCM) are this machine's; the local key
        // file's are proven only by a key file's MAC, which is looked at if the config fails.
        let (keys, skipped, proven) = match unlock {
            Unlock::Keys(k) => (k, Vec::new(), false),
            Unlock::Passphrase(p) => {
                let (k, s) = unlock::with_passphrase(&*store, vault.id(), machine, p).await?;
                (k, s, true)
            }
            Unlock::KeyFile(f, p) => (
                unlock::with_key_file(f, vault.id(), machine, p)?,
                Vec::new(),
                true,
            ),
        };
        let config = open_config(&*store, machine, &keys, proven).await?;
        let cache = match cache_dir {
            Some(dir) => Some(MetaCache::new(dir, vault.id(), machine)?),
            None => None,
        };
        let repo = Repository {
            store,
            vault_id: vault.id().into(),
            machine: machine.into(),
            keys: Arc::new(keys),
            config: Arc::new(config),
            cache,
            lease_ttl: crate::lock::DEFAULT_LEASE_TTL,
            clock: vault.clock().clone(),
            append_only: vault.is_append_only(),
            skipped_key_files: Arc::new(skipped),
            units: Arc::default(),
            vault_url: vault.url().into(),
            vault_state: vault.state_record().cloned().map(Arc::new),
        };
        // A lease whose holder is provably gone (killed on this host) would hold a prune's
        // deletions until it ran out: whatever opens the machine next clears it (append-only:
        // by writing a released object, see `lock.rs`). Best effort: a store that refuses
        // leaves the lease to expire.
        if let Err(e) = repo.release_dead_leases().await {
            tracing::warn!("could not release the leases of killed processes: {e}");
        }
        Ok(repo)
    }

    /// Key files that unlocking skipped because they are damaged or have refused parameters
    /// (each also logged as a warning); empty when unlocked with keys.
    pub fn skipped_key_files(&self) -> &[SkippedKeyFile] {
        &self.skipped_key_files
    }

    /// Makes this handle append-only (or not; the default is the vault handle's, see
    /// [`Vault::with_append_only`]): every operation that would delete or overwrite an object
    /// (forget, prune, key-file rewrites, lease cleanup) is then refused with
    /// [`EngineError::AppendOnly`] before any store call, and leases are released by writing
    /// a released object instead of deleting (see `lock.rs`). Backup, restore and check never
    /// delete or overwrite, so they work the same.
    pub fn set_append_only(&mut self, append_only: bool) {
        self.append_only = append_only;
    }

    /// Whether this handle is append-only.
    pub fn is_append_only(&self) -> bool {
        self.append_only
    }

    /// Refuses `operation` on an append-only handle.
    pub(crate) fn refuse_if_append_only(&self, operation: &'static str) -> Result<()> {
        if self.append_only {
            return Err(EngineError::AppendOnly {
                machine: self.machine.clone(),
                operation,
            });
        }
        Ok(())
    }

    /// The vault's state when this handle was opened (read-only vaults refuse backups).
    pub fn vault_state(&self) -> VaultState {
        self.vault_state
            .as_ref()
            .map_or(VaultState::Active, |r| r.state)
    }

    /// The URL of the vault this repository is in.
    pub fn vault_url(&self) -> &str {
        &self.vault_url
    }

    /// Refuses `operation` (a write of new recovery points) in a read-only vault.
    pub(crate) fn refuse_if_read_only(&self, operation: &'static str) -> Result<()> {
        let record = self.vault_state.as_deref();
        crate::vault_state::refuse_if_read_only(&self.vault_url, record, operation)
    }

    /// The machine id.
    pub fn machine_id(&self) -> &str {
        &self.machine
    }

    /// The machine's name.
    pub fn machine_name(&self) -> &str {
        &self.config.name
    }

    /// The unlocked master keys (for the agent's local key file).
    pub fn master_keys(&self) -> &MasterKeys {
        &self.keys
    }

    /// Writes a key file (and its copy) for `new` and removes the others: no data is
    /// re-encrypted, and afterwards only the new passphrase opens the machine. The new files
    /// are written first, so a crash in between leaves both passphrases working rather than
    /// none.
    pub async fn change_passphrase(&self, new: &Passphrase, kdf: KdfParams) -> Result<()> {
        self.refuse_if_append_only("change the passphrase")?;
        self.rewrite_key_files(new, kdf).await.map(drop)
    }

    pub(crate) fn path(&self, rel: &str) -> String {
        machine_path(&self.machine, rel)
    }

    /// Requests to keep in flight: what the options ask for, or (0) what the store asks for.
    pub(crate) fn in_flight(&self, asked: usize) -> usize {
        match asked {
            0 => self.store.requests_in_flight(),
            n => n,
        }
    }

    /// Names (hex ids) of the objects in `dir` (`index`, `snapshots`, ...).
    pub(crate) async fn list_ids(&self, dir: &str) -> Result<Vec<Id>> {
        let prefix = self.path(dir);
        let mut ids = Vec::new();
        for m in self.store.list(&prefix).await? {
            let name = m.path.rsplit('/').next().unwrap_or_default();
            match Id::from_hex(name) {
                Ok(id) => ids.push(id),
                Err(_) => tracing::warn!("ignoring unexpected object {}", m.path),
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Reads the immutable object `kind/<id>` and opens it with `open`, from the cache when
    /// it has it. The cache only ever receives bytes that `open` accepted; a cached copy that
    /// `open` refuses (flipped, truncated) is evicted and fetched again from the vault, once,
    /// and only the vault's copy failing is an error.
    pub(crate) async fn read_immutable<T>(
        &self,
        kind: &str,
        id: &Id,
        open: impl Fn(&[u8]) -> Result<T>,
    ) -> Result<T> {
        let rel = format!("{kind}/{}", id.to_hex());
        let max = layout::limits(kind).stored;
        if let Some(c) = &self.cache
            && let Some(b) = c.read(&rel, max)
        {
            match open(&b) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    tracing::warn!("evicting cached {rel}, fetching it again: {e}");
                    c.evict(&rel);
                }
            }
        }
        let bytes = layout::get_bounded(&*self.store, &self.path(&rel), max).await?;
        let value = open(&bytes)?;
        if let Some(c) = &self.cache {
            c.write(&rel, &bytes);
        }
        Ok(value)
    }

    /// Writes a new immutable object (create-only) and, once stored, keeps a copy in the
    /// cache (our own sealing: authentic by construction).
    pub(crate) async fn put_immutable(&self, rel: &str, bytes: Vec<u8>) -> Result<()> {
        let bytes = rbackup_store::Bytes::from(bytes);
        self.store
            .put(&self.path(rel), bytes.clone(), PutMode::Create)
            .await?;
        if let Some(c) = &self.cache {
            c.write(rel, &bytes);
        }
        Ok(())
    }

    /// Loads and merges every index file, without the packs the vault no longer has.
    pub(crate) async fn load_index(&self) -> Result<Index> {
        let mut index = self.build_index(|_| true).await?;
        // An index file may name a pack that is gone, while a later backup wrote the same
        // blobs again elsewhere: the entries of missing packs are dropped so the other copy
        // is the one read (one listing, about one request per thousand packs).
        let packs = self.store.list(&self.path(crate::layout::PACKS)).await?;
        let present: HashSet<Id> = packs
            .iter()
            .filter_map(|m| Id::from_hex(m.path.rsplit('/').next()?).ok())
            .collect();
        index.drop_packs(|id| present.contains(id));
        tracing::debug!(
            "index: {} blobs in {} packs, blob table {} bytes",
            index.blob_count(),
            index.pack_count(),
            index.table_bytes()
        );
        Ok(index)
    }

    /// The packs in the store, by their names (hex ids), with their sizes: one listing.
    pub(crate) async fn stored_packs(&self) -> Result<std::collections::HashMap<String, u64>> {
        Ok(self
            .store
            .list(&self.path(crate::layout::PACKS))
            .await?
            .into_iter()
            .filter_map(|m| Some((m.path.rsplit('/').next()?.to_string(), m.size)))
            .collect())
    }

    /// Every stored recovery point, soft-deleted ones included, oldest first (see
    /// `tombstone.rs` for the list without them).
    pub(crate) async fn stored_recovery_points(&self) -> Result<Vec<(Id, RecoveryPoint)>> {
        let ids = self.list_ids(snapshot::KIND).await?;
        if let Some(c) = &self.cache {
            let keep: HashSet<String> = ids.iter().map(Id::to_hex).collect();
            c.retain(snapshot::KIND, &keep);
        }
        let mut rps: Vec<_> = futures::stream::iter(ids)
            .map(|id| async move {
                let open = |b: &[u8]| snapshot::open(&self.keys, &id, b);
                Ok::<_, EngineError>((id, self.read_immutable(snapshot::KIND, &id, open).await?))
            })
            .buffer_unordered(FETCH_CONCURRENCY)
            .try_collect()
            .await?;
        rps.sort_by(|a: &(Id, RecoveryPoint), b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok(rps)
    }

    /// `latest` (never a soft-deleted point), or a unique hex prefix of a recovery point id
    /// (soft-deleted ones included).
    pub async fn find_recovery_point(&self, spec: &str) -> Result<(Id, RecoveryPoint)> {
        self.find_recovery_point_holding(spec, &[] as &[&Path])
            .await
    }

    /// As [`find_recovery_point`](Self::find_recovery_point), but `latest` is the newest
    /// point that [holds](RecoveryPoint::holds) every one of `paths` (restic's `--path`): a
    /// restore of `/home/a/x` from `latest` then finds the last backup of that folder, not the
    /// last backup of another one. An id prefix is taken as it is, whatever it holds.
    pub async fn find_recovery_point_holding<P: AsRef<Path>>(
        &self,
        spec: &str,
        paths: &[P],
    ) -> Result<(Id, RecoveryPoint)> {
        if spec == "latest" && !paths.is_empty() {
            let live = self.recovery_points().await?;
            if live.is_empty() {
                return Err(EngineError::NoRecoveryPoints);
            }
            let holds_all = |rp: &RecoveryPoint| paths.iter().all(|p| rp.holds(p.as_ref()));
            if let Some(hit) = live.iter().rev().find(|(_, rp)| holds_all(rp)) {
                return Ok(hit.clone());
            }
            let missing = paths
                .iter()
                .find(|p| !live.iter().any(|(_, rp)| rp.holds(p.as_ref())));
            let path = missing.unwrap_or(&paths[0]).as_ref().to_path_buf();
            return Err(EngineError::NoRecoveryPointHolds { path });
        }
        if spec == "latest" {
            let mut live = self.recovery_points().await?;
            return live.pop().ok_or(EngineError::NoRecoveryPoints);
        }
        let all = self.stored_recovery_points().await?;
        let spec_lc = spec.to_ascii_lowercase();
        let mut hits = all
            .into_iter()
            .filter(|(id, _)| id.to_hex().starts_with(&spec_lc));
        match (hits.next(), hits.next()) {
            (Some(hit), None) if !spec.is_empty() => Ok(hit),
            (Some(_), Some(_)) => Err(EngineError::AmbiguousRecoveryPoint { id: spec.into() }),
            _ => Err(EngineError::RecoveryPointNotFound { id: spec.into() }),
        }
    }

    /// Reads, decrypts and verifies one blob.
    pub(crate) async fn read_blob(&self, index: &Index, id: &BlobId) -> Result<Vec<u8>> {
        let loc = index
            .get(id)
            .ok_or_else(|| EngineError::corrupt(format!("blob {id}"), CorruptReason::NotIndexed))?;
        let pack_id = index.pack_id(loc.pack);
        let what = || format!("blob {id} in pack {}", pack_id.to_hex());
        if let Some(within) = loc.within
            && let Some(content) = self.units.get(&pack_id, loc.offset)
        {
            return crate::bundle::member(&self.keys, &content, id, within, loc.raw_len)
                .map_err(|detail| EngineError::corrupt(what(), detail));
        }
        let key = self.keys.pack_key(&pack_id.0);
        let open = |sealed: &[u8]| {
            let Some(within) = loc.within else {
                return pack::open_blob(&self.keys, &key, id, &loc.slot(), sealed)
                    .map_err(|detail| EngineError::corrupt(what(), detail));
            };
            let content = crate::bundle::open_unit(&key, loc.kind, loc.offset, sealed)
                .map(Arc::new)
                .map_err(|detail| EngineError::corrupt(what(), detail))?;
            self.units.put(pack_id, loc.offset, content.clone());
            crate::bundle::member(&self.keys, &content, id, within, loc.raw_len)
                .map_err(|detail| EngineError::corrupt(what(), detail))
        };
        let rel = pack_rel(&pack_id);
        let range = loc.offset..loc.offset + u64::from(loc.len);
        if let Some(c) = &self.cache
            && index.is_tree_pack(loc.pack)
        {
            return self.read_tree_pack_blob(c, &pack_id, range, open).await;
        }
        let sealed = self.store.get_range(&self.path(&rel), Some(range)).await?;
        open(&sealed)
    }

    /// Reads a blob of a tree pack through the metadata cache: tree packs are small and read
    /// again by every backup and restore, so they are kept whole, once every blob in them has
    /// authenticated.
    async fn read_tree_pack_blob(
        &self,
        c: &MetaCache,
        pack_id: &Id,
        range: std::ops::Range<u64>,
        open: impl Fn(&[u8]) -> Result<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        let rel = pack_rel(pack_id);
        let len = (range.end - range.start) as usize;
        if let Some(b) = c.read_range(&rel, range.start, len) {
            match open(&b) {
                Ok(content) => return Ok(content),
                Err(e) => {
                    tracing::warn!("evicting cached {rel}, fetching it again: {e}");
                    c.evict(&rel);
                }
            }
        }
        let max = layout::limits(layout::PACKS).stored;
        let whole = layout::get_bounded(&*self.store, &self.path(&rel), max).await?;
        let slice = whole
            .get(range.start as usize..range.end as usize)
            .ok_or_else(|| {
                let (offset, len, size) = (range.start, range.end - range.start, whole.len());
                let reason = CorruptReason::OutOfRange {
                    offset,
                    len,
                    size: size as u64,
                };
                EngineError::corrupt(format!("pack {rel}"), reason)
            })?;
        let content = open(slice)?;
        match pack::authenticate(&self.keys, pack_id, &whole) {
            Ok(()) => c.write(&rel, &whole),
            Err(e) => tracing::warn!("not caching pack {rel}: {e}"),
        }
        Ok(content)
    }

    /// Reads and decodes a tree blob.
    pub(crate) async fn load_tree(&self, index: &Index, id: &BlobId) -> Result<Tree> {
        if index.get(id).map(|l| l.kind) != Some(BlobKind::Tree) {
            return Err(EngineError::corrupt(
                format!("tree {id}"),
                CorruptReason::NotATree,
            ));
        }
        let bytes = self.read_blob(index, id).await?;
        Tree::decode(&bytes, id)
    }
}

/// The sealed config under `keys`. When it does not open, the keys are wrong or the config is
/// damaged: with keys known to be this machine's (`proven`, or any key file's MAC verifying
/// under them) it is the config, and the error says so rather than blaming the passphrase.
async fn open_config(
    store: &dyn Store,
    machine: &str,
    keys: &MasterKeys,
    proven: bool,
) -> Result<MachineConfig> {
    let config_path = machine_path(machine, layout::CONFIG);
    let max = layout::limits(layout::CONFIG).stored;
    let sealed = layout::get_bounded(store, &config_path, max).await?;
    let err = match codec::open_meta(keys, layout::CONFIG, machine, &sealed) {
        Ok(config) => return Ok(config),
        Err(e) => e,
    };
    if proven || keys_match_a_key_file(store, machine, keys).await {
        return Err(err);
    }
    Err(EngineError::WrongPassphrase {
        machine: machine.into(),
    })
}

/// Whether some key file of `machine` carries a MAC made with `keys`.
async fn keys_match_a_key_file(store: &dyn Store, machine: &str, keys: &MasterKeys) -> bool {
    let Ok((entries, _)) = crate::keyfiles::list(store, machine).await else {
        return false;
    };
    for meta in entries.iter().flat_map(crate::keyfiles::KeyEntry::objects) {
        let Ok(bytes) =
            layout::get_bounded(store, &meta.path, layout::limits(layout::KEYS).stored).await
        else {
            continue;
        };
        if let Ok(file) = KeyFile::parse(&bytes)
            && file.verify_mac(keys).unwrap_or(false)
        {
            return true;
        }
    }
    false
}
