//! One conformance suite for every [`Store`] implementation.
//!
//! Each aspect of the contract is a public async function that panics with a message naming
//! the store and the broken promise; [`run_all`] runs them in turn. All keys live under
//! `conformance-suite/<aspect>/`, each aspect first deletes whatever an earlier, interrupted run
//! left under its own prefix, and `run_all` deletes everything it wrote when it succeeds, so the
//! suite can run against a shared bucket as long as nothing else uses that prefix.
//!
//! The functions need a tokio runtime only if the store does (the local store does).

mod support;

use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use rbackup_throttle::{Rate, Schedule, Throttle};

use crate::{PutMode, Store, StoreError};
use support::{
    LocalTemp, check, check_size, clear, expect_already_exists, expect_invalid_path,
    expect_listing, expect_not_found, fail, fresh, ok, pattern, same,
};

/// The prefix under which the suite writes.
pub const SUITE_PREFIX: &str = "conformance-suite";

/// Runs every aspect below against `store`, then removes what it wrote.
pub async fn run_all(store: &dyn Store) {
    describe_is_not_empty(store);
    invalid_keys_rejected(store).await;
    put_get_roundtrip(store).await;
    empty_object(store).await;
    create_is_exclusive(store).await;
    overwrite_replaces(store).await;
    ranged_get(store).await;
    head_size(store).await;
    list_prefix_recursive(store).await;
    list_missing_prefix_empty(store).await;
    delete_idempotent(store).await;
    not_found_errors(store).await;
    concurrent_create_one_winner(store).await;
    overwrite_is_atomic_for_readers(store).await;
    large_object(store).await;
    put_file_roundtrip(store).await;
    put_file_throttled_roundtrip(store).await;
    clear(store, SUITE_PREFIX).await;
}

/// `describe` gives something to show a person.
pub fn describe_is_not_empty(store: &dyn Store) {
    assert!(
        !store.describe().trim().is_empty(),
        "conformance: describe() of {store:?} is empty"
    );
}

/// Bad keys are refused with `InvalidPath` by every method, before touching storage.
pub async fn invalid_keys_rejected(store: &dyn Store) {
    let bad = [
        "", "/abs", "a/", "a//b", "../up", "a/../b", "a/./b", "a\\b", "a/.tmp-1",
    ];
    for key in bad {
        let put = store
            .put(key, Bytes::from_static(b"x"), PutMode::Overwrite)
            .await;
        expect_invalid_path(store, key, "put", put);
        expect_invalid_path(store, key, "get", store.get(key).await);
        expect_invalid_path(store, key, "head", store.head(key).await);
        expect_invalid_path(store, key, "delete", store.delete(key).await);
    }
    expect_invalid_path(store, "/", "list", store.list("/").await);
    expect_invalid_path(store, "a//b", "list", store.list("a//b").await);
}

/// What is put is what is got, at any depth.
pub async fn put_get_roundtrip(store: &dyn Store) {
    let base = fresh(store, "roundtrip").await;
    for (i, key) in [format!("{base}/top"), format!("{base}/a/b/c/d/deep")]
        .iter()
        .enumerate()
    {
        let data = pattern(1000 + i * 37, i as u64);
        ok(
            store,
            "put",
            store.put(key, data.clone(), PutMode::Overwrite).await,
        );
        let got = ok(store, "get", store.get(key).await);
        same(store, key, &got, &data);
    }
    let sibling = format!("{base}/a/b/c/d/other");
    expect_not_found(
        store,
        &sibling,
        "get of a never-written sibling",
        store.get(&sibling).await,
    );
}

/// A zero-byte object exists, has size 0, is listed, and reads back empty.
pub async fn empty_object(store: &dyn Store) {
    let base = fresh(store, "empty").await;
    let key = format!("{base}/nothing");
    ok(
        store,
        "put empty",
        store.put(&key, Bytes::new(), PutMode::Create).await,
    );
    let got = ok(store, "get empty", store.get(&key).await);
    check(
        store,
        got.is_empty(),
        format!("{key}: empty object read back as {} bytes", got.len()),
    );
    check_size(store, &key, 0).await;
    let range = ok(
        store,
        "get_range 0..0",
        store.get_range(&key, Some(0..0)).await,
    );
    check(
        store,
        range.is_empty(),
        format!("{key}: range 0..0 gave {} bytes", range.len()),
    );
    let listed = ok(store, "list", store.list(&base).await);
    expect_listing(store, &base, listed, &[(key.as_str(), 0)]);
}

/// `Create` on a taken key fails with `AlreadyExists` and leaves the old content intact.
pub async fn create_is_exclusive(store: &dyn Store) {
    let base = fresh(store, "create").await;
    let key = format!("{base}/once");
    let first = pattern(5000, 1);
    ok(
        store,
        "first Create",
        store.put(&key, first.clone(), PutMode::Create).await,
    );
    let second = store.put(&key, pattern(7000, 2), PutMode::Create).await;
    expect_already_exists(store, &key, second);
    let got = ok(store, "get after refused Create", store.get(&key).await);
    same(store, &key, &got, &first);
    check_size(store, &key, 5000).await;
    let third = pattern(10, 3);
    ok(
        store,
        "Overwrite after Create",
        store.put(&key, third.clone(), PutMode::Overwrite).await,
    );
    same(
        store,
        &key,
        &ok(store, "get", store.get(&key).await),
        &third,
    );
}

/// `Overwrite` creates a missing key and replaces an existing one completely, including with
/// a shorter object (no stale tail).
pub async fn overwrite_replaces(store: &dyn Store) {
    let base = fresh(store, "overwrite").await;
    let key = format!("{base}/obj");
    ok(
        store,
        "Overwrite new",
        store.put(&key, pattern(9000, 4), PutMode::Overwrite).await,
    );
    let short = pattern(100, 5);
    ok(
        store,
        "Overwrite shorter",
        store.put(&key, short.clone(), PutMode::Overwrite).await,
    );
    same(
        store,
        &key,
        &ok(store, "get", store.get(&key).await),
        &short,
    );
    check_size(store, &key, 100).await;
}

/// Ranges inside the object read exactly those bytes; ranges outside it are `InvalidRange`,
/// never clamped; a missing object is `NotFound`.
pub async fn ranged_get(store: &dyn Store) {
    let base = fresh(store, "range").await;
    let key = format!("{base}/obj");
    let data = pattern(1000, 6);
    ok(
        store,
        "put",
        store.put(&key, data.clone(), PutMode::Overwrite).await,
    );
    for range in [
        0..10,
        990..1000,
        123..877,
        0..1000,
        1..2,
        500..500,
        1000..1000,
    ] {
        let got = ok(
            store,
            "get_range",
            store.get_range(&key, Some(range.clone())).await,
        );
        let want = data.slice(range.start as usize..range.end as usize);
        same(store, &format!("{key} range {range:?}"), &got, &want);
    }
    #[allow(clippy::reversed_empty_ranges)] // a reversed range is one of the bad inputs
    let bad_ranges = [995..1005, 1000..1001, 2000..3000, 10..5];
    for range in bad_ranges {
        match store.get_range(&key, Some(range.clone())).await {
            Err(StoreError::InvalidRange { size: 1000, .. }) => {}
            other => fail(
                store,
                format!(
                    "{key}: range {range:?} of a 1000-byte object: expected InvalidRange with size 1000, got {other:?}"
                ),
            ),
        }
    }
    let missing = format!("{base}/missing");
    let res = store.get_range(&missing, Some(0..1)).await;
    expect_not_found(store, &missing, "get_range", res);
}

/// `head` reports exact sizes; `exists` agrees with it.
pub async fn head_size(store: &dyn Store) {
    let base = fresh(store, "head").await;
    for size in [1usize, 4097, 65536 + 3] {
        let key = format!("{base}/size-{size}");
        ok(
            store,
            "put",
            store.put(&key, pattern(size, 7), PutMode::Create).await,
        );
        check_size(store, &key, size as u64).await;
        check(
            store,
            ok(store, "exists", store.exists(&key).await),
            format!("{key}: exists() is false after put"),
        );
    }
    let missing = format!("{base}/missing");
    check(
        store,
        !ok(store, "exists", store.exists(&missing).await),
        format!("{missing}: exists() is true"),
    );
}

/// Listing is recursive, returns full keys with sizes, and matches whole path segments only
/// (`p` does not match `pother/x`).
pub async fn list_prefix_recursive(store: &dyn Store) {
    let base = fresh(store, "list").await;
    let keys = [
        ("p/a", 1),
        ("p/sub/b", 22),
        ("p/sub/deeper/c", 333),
        ("pother/x", 4),
        ("q", 5),
    ];
    for (key, size) in keys {
        let key = format!("{base}/{key}");
        ok(
            store,
            "put",
            store.put(&key, pattern(size, 8), PutMode::Create).await,
        );
    }
    let k = |s: &str| format!("{base}/{s}");
    let (a, b, c, x, q) = (
        k("p/a"),
        k("p/sub/b"),
        k("p/sub/deeper/c"),
        k("pother/x"),
        k("q"),
    );
    let p = ok(store, "list", store.list(&k("p")).await);
    expect_listing(store, &k("p"), p, &[(&a, 1), (&b, 22), (&c, 333)]);
    let sub = ok(store, "list", store.list(&k("p/sub/")).await);
    expect_listing(store, &k("p/sub/"), sub, &[(&b, 22), (&c, 333)]);
    let all = ok(store, "list", store.list(&base).await);
    expect_listing(
        store,
        &base,
        all,
        &[(&a, 1), (&b, 22), (&c, 333), (&x, 4), (&q, 5)],
    );
    let everything = ok(store, "list everything", store.list("").await);
    for key in [&a, &c, &q] {
        let found = everything.iter().any(|m| &m.path == key);
        check(store, found, format!("list(\"\") lacks {key}"));
    }
}

/// A prefix with nothing under it lists as empty, including a prefix that is itself an object.
pub async fn list_missing_prefix_empty(store: &dyn Store) {
    let base = fresh(store, "list-missing").await;
    let never = ok(
        store,
        "list",
        store.list(&format!("{base}/never/written")).await,
    );
    expect_listing(store, "a never-written prefix", never, &[]);
    let key = format!("{base}/leaf");
    ok(
        store,
        "put",
        store.put(&key, pattern(3, 9), PutMode::Create).await,
    );
    let leaf = ok(store, "list", store.list(&key).await);
    expect_listing(store, "a prefix that is an object", leaf, &[]);
}

/// Delete removes the object; deleting a missing key succeeds.
pub async fn delete_idempotent(store: &dyn Store) {
    let base = fresh(store, "delete").await;
    let key = format!("{base}/d/obj");
    let keep = format!("{base}/d/keep");
    ok(
        store,
        "put",
        store.put(&key, pattern(10, 10), PutMode::Create).await,
    );
    ok(
        store,
        "put",
        store.put(&keep, pattern(11, 11), PutMode::Create).await,
    );
    ok(store, "delete", store.delete(&key).await);
    expect_not_found(store, &key, "get after delete", store.get(&key).await);
    ok(
        store,
        "second delete of the same key",
        store.delete(&key).await,
    );
    ok(
        store,
        "delete of a never-written key",
        store.delete(&format!("{base}/nope/x")).await,
    );
    let listed = ok(store, "list", store.list(&base).await);
    expect_listing(store, &base, listed, &[(&keep, 11)]);
    ok(
        store,
        "Create after delete",
        store.put(&key, pattern(1, 12), PutMode::Create).await,
    );
}

/// Reads of missing objects are `NotFound`, wherever they are asked for.
pub async fn not_found_errors(store: &dyn Store) {
    let base = fresh(store, "not-found").await;
    let file = format!("{base}/file");
    ok(
        store,
        "put",
        store.put(&file, pattern(5, 13), PutMode::Create).await,
    );
    // Under a missing "directory", under an object, and an object's "parent directory".
    for key in [
        format!("{base}/missing"),
        format!("{base}/no/such/dir/x"),
        format!("{file}/below"),
        base.clone(),
    ] {
        expect_not_found(store, &key, "get", store.get(&key).await);
        expect_not_found(store, &key, "head", store.head(&key).await);
        expect_not_found(
            store,
            &key,
            "get_range",
            store.get_range(&key, Some(0..1)).await,
        );
        ok(store, "delete of a missing key", store.delete(&key).await);
    }
}

/// Of N racing `Create`s on one key, exactly one wins, the others get `AlreadyExists`, and the
/// object holds the winner's bytes whole.
pub async fn concurrent_create_one_winner(store: &dyn Store) {
    const RACERS: usize = 16;
    let base = fresh(store, "race").await;
    let key = format!("{base}/lock");
    let contents: Vec<Bytes> = (0..RACERS)
        .map(|i| pattern(64 * 1024 + i, 100 + i as u64))
        .collect();
    let attempts = contents
        .iter()
        .map(|c| store.put(&key, c.clone(), PutMode::Create));
    let results = join_all(attempts).await;
    let mut winner = None;
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Ok(()) if winner.is_none() => winner = Some(i),
            Ok(()) => fail(
                store,
                format!("{key}: racers {winner:?} and {i} both won a Create"),
            ),
            Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => fail(
                store,
                format!("{key}: racer {i} failed with {e} instead of AlreadyExists"),
            ),
        }
    }
    let Some(winner) = winner else {
        fail(store, format!("{key}: no racer won the Create"));
    };
    let got = ok(store, "get", store.get(&key).await);
    same(store, &key, &got, &contents[winner]);
}

/// Readers racing an overwrite see the old or the new object whole, never a mix or a prefix.
pub async fn overwrite_is_atomic_for_readers(store: &dyn Store) {
    let base = fresh(store, "atomic").await;
    let key = format!("{base}/obj");
    let versions = [pattern(512 * 1024, 20), pattern(384 * 1024, 21)];
    ok(
        store,
        "put",
        store.put(&key, versions[0].clone(), PutMode::Create).await,
    );
    let writer = async {
        for round in 0..8 {
            let data = versions[(round + 1) % 2].clone();
            ok(
                store,
                "Overwrite",
                store.put(&key, data, PutMode::Overwrite).await,
            );
        }
    };
    let reader = async {
        for _ in 0..16 {
            let got = ok(store, "get during overwrites", store.get(&key).await);
            let whole = versions.contains(&got);
            check(
                store,
                whole,
                format!(
                    "{key}: a read during overwrites returned {} bytes matching neither version",
                    got.len()
                ),
            );
        }
    };
    futures::join!(writer, reader);
}

/// A 20 MiB object survives the round trip, and ranges deep inside it are right.
pub async fn large_object(store: &dyn Store) {
    let base = fresh(store, "large").await;
    let key = format!("{base}/big");
    let size = 20 * 1024 * 1024;
    let data = pattern(size, 30);
    ok(
        store,
        "put 20 MiB",
        store.put(&key, data.clone(), PutMode::Create).await,
    );
    check_size(store, &key, size as u64).await;
    same(
        store,
        &key,
        &ok(store, "get 20 MiB", store.get(&key).await),
        &data,
    );
    let range = 9_999_999..16_000_001u64;
    let got = ok(
        store,
        "get_range",
        store.get_range(&key, Some(range.clone())).await,
    );
    same(
        store,
        &format!("{key} {range:?}"),
        &got,
        &data.slice(range.start as usize..range.end as usize),
    );
}

/// `put_file` uploads a local file, honours `Create`, and leaves no object if the local file is
/// missing.
pub async fn put_file_roundtrip(store: &dyn Store) {
    let base = fresh(store, "put-file").await;
    let key = format!("{base}/pack");
    let local = LocalTemp::new(store);
    let data = pattern(3 * 1024 * 1024 + 17, 40);
    local.write(store, &data);
    ok(
        store,
        "put_file Create",
        store.put_file(&key, &local.0, PutMode::Create).await,
    );
    same(store, &key, &ok(store, "get", store.get(&key).await), &data);
    let again = store.put_file(&key, &local.0, PutMode::Create).await;
    expect_already_exists(store, &key, again);
    let newer = pattern(1000, 41);
    local.write(store, &newer);
    ok(
        store,
        "put_file Overwrite",
        store.put_file(&key, &local.0, PutMode::Overwrite).await,
    );
    same(
        store,
        &key,
        &ok(store, "get", store.get(&key).await),
        &newer,
    );
    let missing = local.0.with_extension("missing");
    let other = format!("{base}/other");
    let res = store.put_file(&other, &missing, PutMode::Create).await;
    check(
        store,
        res.is_err(),
        format!(
            "put_file of missing local file {} succeeded",
            missing.display()
        ),
    );
    check(
        store,
        !ok(store, "exists", store.exists(&other).await),
        format!("{other}: exists after a failed put_file"),
    );
}

/// `put_file_throttled` uploads what `put_file` would, honours `Create`, and really waits on
/// the throttle: 512 KiB at 1 MiB/s from an empty limiter cannot be sent in under ~0.5 s.
pub async fn put_file_throttled_roundtrip(store: &dyn Store) {
    let base = fresh(store, "put-file-throttled").await;
    let key = format!("{base}/pack");
    let local = LocalTemp::new(store);
    let data = pattern(512 * 1024 + 17, 42);
    local.write(store, &data);
    let rate = Rate::BytesPerSec(1024 * 1024);
    let throttle = Throttle::new(Schedule {
        work_rate: rate,
        non_work_rate: rate,
        ..Schedule::default()
    });
    let put = store.put_file_throttled(&key, &local.0, PutMode::Create, &throttle);
    ok(store, "put_file_throttled Create", put.await);
    same(store, &key, &ok(store, "get", store.get(&key).await), &data);
    let waited = throttle.total_wait();
    check(
        store,
        waited >= Duration::from_millis(300),
        format!("put_file_throttled of 512 KiB at 1 MiB/s waited only {waited:?}"),
    );
    let again = store.put_file_throttled(&key, &local.0, PutMode::Create, &throttle);
    expect_already_exists(store, &key, again.await);
}
