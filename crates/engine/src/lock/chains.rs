//! Reading lease chains, and ending the chains of holders that are gone (see the parent
//! module for the format and why the newest object of a chain is the lease).

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::time::Duration;

use jiff::Timestamp;
use rbackup_store::PutMode;

use super::{KIND, LeaseInfo, plus};
use crate::codec;
use crate::error::{EngineError, Result};
use crate::id::Id;
use crate::repo::Repository;

/// One object of a lease chain: `locks/<chain>-<seq>` (seq ≥ 1), or `locks/<chain>` for a
/// lease written by an earlier release (seq 0). Each name has exactly one form, so a chain
/// cannot hold two objects of one seq.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct LeaseObject {
    pub chain: Id,
    pub seq: u32,
}

impl LeaseObject {
    /// The object's name inside `locks/` (also its sealed metadata name).
    pub fn name(&self) -> String {
        match self.seq {
            0 => self.chain.to_hex(),
            n => format!("{}-{n}", self.chain.to_hex()),
        }
    }

    /// The object a name stands for: 64 lowercase hex digits, optionally `-` and a seq in
    /// plain decimal (no sign, no leading zero, at most `u32::MAX`). Anything else is not a
    /// lease object and never becomes a path.
    pub fn parse(name: &str) -> Option<LeaseObject> {
        let (chain, seq) = match name.split_once('-') {
            None => (name, 0),
            Some((chain, seq)) => {
                let n: u32 = seq.parse().ok()?;
                if n == 0 || n.to_string() != seq {
                    return None;
                }
                (chain, n)
            }
        };
        // Lowercase only: the name is rebuilt from the id to read the object.
        if chain.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        Some(LeaseObject {
            chain: Id::from_hex(chain).ok()?,
            seq,
        })
    }
}

/// A chain's stored objects, by seq, oldest first.
type Chains = BTreeMap<Id, Vec<u32>>;

impl Repository {
    pub(crate) fn lease_path(&self, object: &LeaseObject) -> String {
        self.path(&format!("{KIND}/{}", object.name()))
    }

    /// Every lease chain in the repository with its objects' seqs, oldest first.
    async fn lease_chains(&self) -> Result<Chains> {
        let mut chains = Chains::new();
        for m in self.store.list(&self.path(KIND)).await? {
            let name = m.path.rsplit('/').next().unwrap_or_default();
            match LeaseObject::parse(name) {
                Some(o) => chains.entry(o.chain).or_default().push(o.seq),
                None => tracing::warn!("ignoring unexpected object {}", m.path),
            }
        }
        for seqs in chains.values_mut() {
            seqs.sort_unstable();
        }
        Ok(chains)
    }

    /// The newest object of `chain` (`None` if it cannot be decrypted or is over the cap), or
    /// `Ok(None)` outright if it is gone: the newest is deleted last, so the chain was
    /// released between the listing and the read.
    async fn newest(&self, chain: Id, seq: u32) -> Result<Option<Option<LeaseInfo>>> {
        let object = LeaseObject { chain, seq };
        let max = crate::layout::limits(KIND).stored;
        match crate::layout::get_bounded(&*self.store, &self.lease_path(&object), max).await {
            Ok(bytes) => Ok(Some(
                codec::open_meta(&self.keys, KIND, &object.name(), &bytes).ok(),
            )),
            Err(EngineError::Store(e)) if e.is_not_found() => Ok(None),
            // Over the cap: as unreadable as one that does not decrypt.
            Err(EngineError::Corrupt { .. }) => Ok(Some(None)),
            Err(e) => Err(e),
        }
    }

    /// Every lease in the repository, live or not, by chain id, as its newest object says;
    /// `None` for one whose newest object cannot be decrypted.
    pub async fn leases(&self) -> Result<Vec<(Id, Option<LeaseInfo>)>> {
        Ok(self
            .leases_with_objects()
            .await?
            .into_iter()
            .map(|(id, info, _)| (id, info))
            .collect())
    }

    /// [`Repository::leases`] with each chain's stored seqs.
    async fn leases_with_objects(&self) -> Result<Vec<(Id, Option<LeaseInfo>, Vec<u32>)>> {
        use futures::{StreamExt, TryStreamExt};
        // One read per chain, several at a time: an append-only machine's released chains
        // stay until an admin prune, and every opener reads them.
        let chains = self.lease_chains().await?.into_iter();
        let read = futures::stream::iter(chains.filter(|(_, seqs)| !seqs.is_empty()))
            .map(|(chain, seqs)| async move {
                let last = seqs[seqs.len() - 1];
                Ok::<_, EngineError>(self.newest(chain, last).await?.map(|i| (chain, i, seqs)))
            })
            .buffered(crate::repo::FETCH_CONCURRENCY);
        read.try_filter_map(|x| async move { Ok(x) })
            .try_collect()
            .await
    }

    /// Ends the leases whose holder is provably gone (killed on this host, see `holder.rs`),
    /// so that nothing waits for them to run out; returns how many. A handle that may delete
    /// removes their objects; an append-only one writes each a released object (one create
    /// per killed holder, once: a released or expired lease is left as it is).
    pub async fn release_dead_leases(&self) -> Result<u64> {
        let mut released = 0;
        let now = self.clock.now();
        for (chain, info, seqs) in self.leases_with_objects().await? {
            let Some(i) = info.filter(LeaseInfo::holder_is_gone) else {
                continue;
            };
            if self.append_only && !i.is_live(now) {
                continue;
            }
            tracing::info!(
                "releasing the lease of {} (pid {}, since {}): that process is gone",
                i.purpose,
                i.pid,
                i.created
            );
            if self.append_only {
                let last = seqs.last().copied().unwrap_or(0);
                if self.write_released(chain, last, i, now).await? {
                    released += 1;
                }
            } else {
                self.delete_objects(chain, &seqs).await?;
                released += 1;
            }
        }
        Ok(released)
    }

    /// Writes `info` as chain `chain`'s released object after seq `last`. `false` if another
    /// process wrote that seq first (it released the lease, or its holder refreshed).
    pub(super) async fn write_released(
        &self,
        chain: Id,
        last: u32,
        mut info: LeaseInfo,
        now: Timestamp,
    ) -> Result<bool> {
        info.released = true;
        info.expires = now.to_string();
        let object = LeaseObject {
            chain,
            seq: last.saturating_add(1),
        };
        let sealed = codec::seal_meta(&self.keys, KIND, &object.name(), &info);
        match self
            .store
            .put(&self.lease_path(&object), sealed.into(), PutMode::Create)
            .await
        {
            Ok(()) => Ok(true),
            Err(rbackup_store::StoreError::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes the lease objects nothing reads any more, and returns how many: every object
    /// of a chain that was released, or ran out more than `grace` ago (its holder was killed,
    /// or left it on an append-only store), and the superseded objects of live chains (every
    /// one but the newest). Unreadable leases are left alone (prune reports them). Prune runs
    /// this; on an append-only handle it is refused.
    pub async fn remove_expired_leases(&self, grace: Duration) -> Result<u64> {
        self.refuse_if_append_only("remove expired leases")?;
        let now = self.clock.now();
        let mut removed = 0;
        for (chain, info, seqs) in self.leases_with_objects().await? {
            let Some(i) = info else { continue };
            let over = i
                .expires
                .parse::<Timestamp>()
                .is_ok_and(|exp| plus(exp, grace) < now);
            let doomed = if i.released || over {
                &seqs[..]
            } else {
                &seqs[..seqs.len() - 1]
            };
            self.delete_objects(chain, doomed).await?;
            removed += doomed.len() as u64;
        }
        Ok(removed)
    }

    /// Deletes the objects `seqs` of `chain`, in the order given (oldest first, so that the
    /// newest goes last).
    async fn delete_objects(&self, chain: Id, seqs: &[u32]) -> Result<()> {
        for &seq in seqs {
            self.store
                .delete(&self.lease_path(&LeaseObject { chain, seq }))
                .await?;
        }
        Ok(())
    }

    /// Deletes the objects `seqs` of this process's own chain (a missing one is fine).
    pub(super) async fn delete_chain(&self, chain: Id, seqs: RangeInclusive<u32>) -> Result<()> {
        self.delete_objects(chain, &seqs.collect::<Vec<_>>()).await
    }
}
