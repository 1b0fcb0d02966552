//! Published retention policies: `machines/<id>/policy/<id>`, sealed objects that tell an
//! admin host what retention a machine's jobs ask for.
//!
//! An append-only machine cannot delete, so its retention runs elsewhere, on an admin host
//! that holds delete-capable store credentials and the machine's passphrase or recovery key
//! file. The policies still belong in the machine's own configuration, where its jobs are
//! defined; the machine publishes them here and the admin run reads them, so one admin timer
//! serves every machine without a copy of each machine's job list to keep in step.
//!
//! Publishing never needs a delete or an overwrite: each change is a new create-only object
//! whose `seq` is one more than the newest it read, and readers take the highest `seq`
//! (ties, which only two racing publishers make, by the later `written`, then the larger id).
//! Objects that do not authenticate are ignored with a warning: a store-level attacker can
//! hide a policy (the admin run then finds none and says so) but cannot forge one. What is
//! left behind by newer objects is removed by [`Repository::remove_superseded_policies`],
//! which a delete-capable prune calls.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{EngineError, Result};
use crate::id::Id;
use crate::layout;
use crate::repo::Repository;
use crate::retention::RetentionPolicy;

/// Where published policies live in a machine's repository.
pub(crate) const KIND: &str = layout::POLICY;

/// What a machine publishes: the retention policy of each of its jobs that has one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedPolicies {
    /// One more than the newest object the publisher read (0 for the first).
    pub seq: u64,
    /// When it was written (RFC 3339, the publisher's clock).
    pub written: String,
    /// Host name of the publisher.
    pub hostname: String,
    /// Job name → its policy (jobs without a policy are left out).
    pub jobs: BTreeMap<String, RetentionPolicy>,
}

impl Repository {
    /// The newest published policies, with their object id; `None` if none was published
    /// (or none authenticates).
    pub async fn published_policies(&self) -> Result<Option<(Id, PublishedPolicies)>> {
        Ok(self.read_policies().await?.into_iter().next())
    }

    /// Publishes `jobs` unless the newest published policies already say exactly that.
    /// Returns whether a new object was written. Create-only: works on an append-only store.
    pub async fn publish_policies(&self, jobs: &BTreeMap<String, RetentionPolicy>) -> Result<bool> {
        let newest = self.published_policies().await?;
        if newest.as_ref().is_some_and(|(_, p)| &p.jobs == jobs) {
            return Ok(false);
        }
        let policies = PublishedPolicies {
            seq: newest.map_or(0, |(_, p)| p.seq.saturating_add(1)),
            written: self.clock.now().to_string(),
            hostname: self.config.hostname.clone(),
            jobs: jobs.clone(),
        };
        let id = Id::random();
        let sealed = codec::seal_meta(&self.keys, KIND, &id.to_hex(), &policies);
        let rel = format!("{KIND}/{}", id.to_hex());
        self.store
            .put(
                &self.path(&rel),
                sealed.into(),
                rbackup_store::PutMode::Create,
            )
            .await?;
        Ok(true)
    }

    /// Deletes every published-policies object but the newest, and those that do not
    /// authenticate; returns how many. Needs delete-capable credentials (an admin host).
    pub async fn remove_superseded_policies(&self) -> Result<u64> {
        self.refuse_if_append_only("remove superseded retention policies")?;
        let keep = self.published_policies().await?.map(|(id, _)| id);
        let mut removed = 0;
        for id in self.list_ids(KIND).await? {
            if Some(id) == keep {
                continue;
            }
            let rel = format!("{KIND}/{}", id.to_hex());
            match self.store.delete(&self.path(&rel)).await {
                Ok(()) => removed += 1,
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(removed)
    }

    /// Every authentic published-policies object, newest first.
    async fn read_policies(&self) -> Result<Vec<(Id, PublishedPolicies)>> {
        let max = layout::limits(KIND).stored;
        let mut out = Vec::new();
        for id in self.list_ids(KIND).await? {
            let path = self.path(&format!("{KIND}/{}", id.to_hex()));
            let bytes = match layout::get_bounded(&*self.store, &path, max).await {
                Ok(b) => b,
                // Removed by an admin prune between the listing and the read.
                Err(EngineError::Store(e)) if e.is_not_found() => continue,
                Err(e @ EngineError::Corrupt { .. }) => {
                    tracing::warn!("ignoring published retention policies {path}: {e}");
                    continue;
                }
                Err(e) => return Err(e),
            };
            match codec::open_meta::<PublishedPolicies>(&self.keys, KIND, &id.to_hex(), &bytes) {
                Ok(p) => out.push((id, p)),
                Err(e) => tracing::warn!("ignoring published retention policies {path}: {e}"),
            }
        }
        out.sort_by(|(ia, a), (ib, b)| {
            (b.seq, written(b), ib.to_hex()).cmp(&(a.seq, written(a), ia.to_hex()))
        });
        Ok(out)
    }
}

fn written(p: &PublishedPolicies) -> jiff::Timestamp {
    p.written.parse().unwrap_or(jiff::Timestamp::MIN)
}
