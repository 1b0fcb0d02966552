//! Published retention policies: what a machine publishes is what another opener of its
//! repository (an admin host) reads; publishing is create-only and idempotent; a forged or
//! damaged object never becomes a policy; an admin prune step removes the superseded ones.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use rbackup_engine::crypto::Passphrase;
use rbackup_engine::store::PutMode;
use rbackup_engine::{Repository, RetentionPolicy, Unlock};

fn policy(daily: u32) -> RetentionPolicy {
    RetentionPolicy {
        keep_daily: Some(daily),
        ..RetentionPolicy::default()
    }
}

fn jobs(pairs: &[(&str, u32)]) -> BTreeMap<String, RetentionPolicy> {
    pairs
        .iter()
        .map(|(n, d)| (n.to_string(), policy(*d)))
        .collect()
}

#[tokio::test]
async fn a_published_policy_is_read_by_another_opener_and_only_changes_are_written() {
    let env = support::env().await;
    assert!(env.repo.published_policies().await.unwrap().is_none());
    let first = jobs(&[("docs", 7), ("photos", 30)]);
    assert!(env.repo.publish_policies(&first).await.unwrap());
    // The same again writes nothing: a timer publishing at every run adds no objects.
    assert!(!env.repo.publish_policies(&first).await.unwrap());
    assert_eq!(env.objects("policy").await.len(), 1);
    env.clock.advance(Duration::from_secs(60));
    let second = jobs(&[("docs", 14)]);
    assert!(env.repo.publish_policies(&second).await.unwrap());

    // An admin host opens the machine with its passphrase and sees the newest.
    let pass = Passphrase::new("prune tests passphrase").unwrap();
    let admin = Repository::open(&env.vault, &env.machine, Unlock::Passphrase(&pass), None)
        .await
        .unwrap();
    let (_, newest) = admin.published_policies().await.unwrap().unwrap();
    assert_eq!(newest.jobs, second);
    assert_eq!(newest.seq, 1);
    assert_eq!(newest.hostname, "test-host");

    // Cleanup keeps exactly the newest.
    assert_eq!(admin.remove_superseded_policies().await.unwrap(), 1);
    assert_eq!(env.objects("policy").await.len(), 1);
    assert_eq!(
        admin.published_policies().await.unwrap().unwrap().1.jobs,
        second
    );
    assert_eq!(admin.remove_superseded_policies().await.unwrap(), 0);
}

#[tokio::test]
async fn a_forged_or_damaged_policy_object_is_ignored_never_obeyed() {
    let env = support::env().await;
    let real = jobs(&[("docs", 30)]);
    env.repo.publish_policies(&real).await.unwrap();
    let store = env.store();
    let objects = env.objects("policy").await;
    let prefix = format!("machines/{}/policy", env.machine);
    let real_path = &format!("{prefix}/{}", objects[0].0);
    // A store-level attacker writes a "newer" object it cannot seal, and damages a copy of
    // the real one under another name: neither is a policy.
    let forged = format!("{prefix}/{}", "f".repeat(64));
    store
        .put(
            &forged,
            b"{\"seq\":99,\"jobs\":{\"docs\":{\"keep_last\":1}}}"[..].into(),
            PutMode::Create,
        )
        .await
        .unwrap();
    let mut copy = store.get_range(real_path, None).await.unwrap().to_vec();
    *copy.last_mut().unwrap() ^= 1;
    let damaged = format!("{prefix}/{}", "e".repeat(64));
    store
        .put(&damaged, copy.into(), PutMode::Create)
        .await
        .unwrap();
    let (_, got) = env.repo.published_policies().await.unwrap().unwrap();
    assert_eq!(got.jobs, real);
    // Publishing again goes on from the authentic newest, and the cleanup removes the rest.
    assert!(!env.repo.publish_policies(&real).await.unwrap());
    assert_eq!(env.repo.remove_superseded_policies().await.unwrap(), 2);
    assert_eq!(env.objects("policy").await.len(), 1);
}
