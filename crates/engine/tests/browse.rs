//! Browsing recovery points through the public API: `ls`, `find`, `open_file` (what `dump`
//! streams), `diff` and `stats` on real backups made twice with a change between; `latest`
//! resolved by path; and crafted recovery points whose names or shapes a backup never
//! writes, which are refused rather than followed.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rbackup_engine::tree::{Node, NodeKind, Tree};
use rbackup_engine::{Change, CorruptReason, EngineError, FindOptions, RestoreOptions};
use support::{Env, env, noise, write};

/// `src` backed up, then changed (one file added, one removed, one rewritten, one touched)
/// and backed up again; returns (first id, second id).
async fn two_points(e: &Env, src: &Path) -> (String, String) {
    write(src, "keep.txt", b"unchanged\n");
    write(src, "gone.txt", b"removed later\n");
    write(src, "edit.bin", &noise(700 << 10, 1));
    write(src, "touch.txt", b"same bytes\n");
    write(src, "sub/deep/notes.txt", b"deep notes\n");
    let a = e.backup(&[src], None).await.recovery_point.unwrap();
    std::fs::remove_file(src.join("gone.txt")).unwrap();
    write(src, "edit.bin", &noise(900 << 10, 2));
    write(src, "sub/new.txt", b"new file\n");
    let touched = std::fs::File::options()
        .write(true)
        .open(src.join("touch.txt"))
        .unwrap();
    touched
        .set_modified(SystemTime::now() - Duration::from_secs(86_400))
        .unwrap();
    let b = e.backup(&[src], None).await.recovery_point.unwrap();
    (a, b)
}

fn names(entries: &[rbackup_engine::Entry], under: &Path) -> Vec<String> {
    entries
        .iter()
        .map(|e| e.path.strip_prefix(under).unwrap().display().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn ls_lists_a_directory_its_tree_or_one_file_and_refuses_what_is_not_there() {
    let e = env().await;
    let src = e.dir("src");
    let (a, _) = two_points(&e, &src).await;
    let l = e.repo.ls(&a, &src, false).await.unwrap();
    assert_eq!(l.recovery_point, a);
    assert_eq!(
        names(&l.entries, &src),
        ["edit.bin", "gone.txt", "keep.txt", "sub", "touch.txt"]
    );
    let keep = &l.entries[2];
    assert_eq!(
        (keep.kind, keep.size, keep.mode & 0o170000),
        (NodeKind::File, 10, 0o100000)
    );
    let mtime = std::fs::metadata(src.join("keep.txt"))
        .unwrap()
        .modified()
        .unwrap();
    let ns = mtime
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    assert_eq!(keep.mtime_ns, ns);
    assert_eq!(l.entries[3].kind, NodeKind::Dir);

    let r = e.repo.ls(&a, &src, true).await.unwrap();
    assert_eq!(
        names(&r.entries, &src),
        [
            "edit.bin",
            "gone.txt",
            "keep.txt",
            "sub",
            "sub/deep",
            "sub/deep/notes.txt",
            "touch.txt"
        ]
    );
    // The top lists the first folder of the source's absolute path.
    let top = e.repo.ls(&a, Path::new("/"), false).await.unwrap();
    let first = src.components().nth(1).unwrap().as_os_str();
    assert_eq!(top.entries.len(), 1);
    assert_eq!(top.entries[0].path, Path::new("/").join(first));

    let one = e
        .repo
        .ls("latest", &src.join("sub/new.txt"), false)
        .await
        .unwrap();
    assert_eq!(names(&one.entries, &src), ["sub/new.txt"]);
    for missing in [
        src.join("nope"),
        src.join("keep.txt/x"),
        src.join("sub/../keep.txt"),
    ] {
        let err = e.repo.ls(&a, &missing, false).await.unwrap_err();
        assert!(
            matches!(err, EngineError::PathNotInRecoveryPoint { .. }),
            "{missing:?}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn find_searches_every_point_by_name_or_path_and_can_be_narrowed() {
    let e = env().await;
    let src = e.dir("src");
    let (a, b) = two_points(&e, &src).await;
    let all = FindOptions::default();
    let txt = e.repo.find("*.txt", &all).await.unwrap();
    assert_eq!(txt.recovery_points, 2);
    let hits: Vec<(String, String)> = txt
        .hits
        .iter()
        .map(|h| {
            (
                h.recovery_point.clone(),
                names(std::slice::from_ref(&h.entry), &src)[0].clone(),
            )
        })
        .collect();
    let expect = |id: &str, ns: &[&str]| {
        ns.iter()
            .map(|n| (id.to_string(), n.to_string()))
            .collect::<Vec<_>>()
    };
    let mut want = expect(
        &a,
        &["gone.txt", "keep.txt", "sub/deep/notes.txt", "touch.txt"],
    );
    want.extend(expect(
        &b,
        &["keep.txt", "sub/deep/notes.txt", "sub/new.txt", "touch.txt"],
    ));
    assert_eq!(hits, want);
    assert!(txt.hits.iter().all(|h| !h.time.is_empty()));

    // A pattern with a '/' is matched against the whole path, as an exclude is.
    let by_path = format!("{}/sub/*.txt", src.display());
    let p = e.repo.find(&by_path, &all).await.unwrap();
    assert_eq!(p.hits.len(), 1);
    assert_eq!(p.hits[0].entry.path, src.join("sub/new.txt"));
    assert_eq!(p.hits[0].recovery_point, b);
    assert_eq!(e.repo.find("notes.txt", &all).await.unwrap().hits.len(), 2);

    let mut newest = FindOptions::default();
    newest.newest = Some(1);
    let n = e.repo.find("gone.txt", &newest).await.unwrap();
    assert_eq!((n.recovery_points, n.hits.len()), (1, 0));
    let mut only_a = FindOptions::default();
    only_a.recovery_points = vec![a[..8].to_string()];
    let o = e.repo.find("gone.txt", &only_a).await.unwrap();
    assert_eq!(o.hits.len(), 1);
    assert_eq!(o.hits[0].entry.size, 14);
    assert!(matches!(
        e.repo.find("[", &all).await,
        Err(EngineError::BadPattern { .. })
    ));
}

/// Everything `open_file` hands out, concatenated, with the largest piece seen.
async fn read_all(e: &Env, spec: &str, path: &Path) -> rbackup_engine::Result<(Vec<u8>, usize)> {
    let mut r = e.repo.open_file(spec, path).await?;
    let (mut out, mut largest) = (Vec::new(), 0);
    while let Some(piece) = r.next_chunk().await? {
        largest = largest.max(piece.len());
        out.extend_from_slice(&piece);
    }
    assert_eq!(out.len() as u64, r.entry().size);
    Ok((out, largest))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_is_read_back_byte_exact_blob_by_blob_and_a_directory_is_refused() {
    let e = env().await;
    let src = e.dir("src");
    let big = noise(5 << 20, 7);
    write(&src, "big.bin", &big);
    write(&src, "empty", b"");
    e.backup(&[&src], None).await;
    let (back, largest) = read_all(&e, "latest", &src.join("big.bin")).await.unwrap();
    assert!(back == big, "the bytes read back differ");
    assert!(
        largest < big.len(),
        "the file came in one piece of {largest} bytes, not blob by blob"
    );
    assert!(
        read_all(&e, "latest", &src.join("empty"))
            .await
            .unwrap()
            .0
            .is_empty()
    );
    let err = e.repo.open_file("latest", &src).await.unwrap_err();
    assert!(
        matches!(&err, EngineError::NotAFile { kind, .. } if kind == "dir"),
        "{err}"
    );
    let err = e
        .repo
        .open_file("latest", Path::new("/"))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::NotAFile { .. }));

    // A damaged data pack is an error, never bytes: every blob is checked as a restore checks it.
    let packs = e
        .work
        .path()
        .join("vault/machines")
        .join(&e.machine)
        .join("packs");
    let on_disk = walkdir::WalkDir::new(packs)
        .into_iter()
        .map(Result::unwrap)
        .filter(|f| f.file_type().is_file())
        .max_by_key(|f| f.metadata().unwrap().len())
        .unwrap()
        .into_path();
    let mut bytes = std::fs::read(&on_disk).unwrap();
    bytes[100] ^= 0x40;
    std::fs::write(&on_disk, bytes).unwrap();
    let err = read_all(&e, "latest", &src.join("big.bin"))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Corrupt { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sparse_files_holes_read_as_zeros_in_bounded_pieces() {
    const T: &str = "a_sparse_files_holes_read_as_zeros_in_bounded_pieces";
    let e = env().await;
    let src = e.dir("src");
    let file = src.join("sparse.img");
    let f = std::fs::File::create(&file).unwrap();
    f.set_len(48 << 20).unwrap();
    let data = noise(1 << 20, 3);
    std::os::unix::fs::FileExt::write_all_at(&f, &data, 20 << 20).unwrap();
    f.sync_all().unwrap();
    if !rbackup_engine::classify::attrs_of(&file).unwrap().sparse {
        let missing = format!("a file system that reports holes at {}", src.display());
        rbackup_testenv::skip(T, &missing, "set TMPDIR to ext4, btrfs, xfs or tmpfs");
        return;
    }
    let _ran = rbackup_testenv::ran(T, "sparse file in TMPDIR");
    let r = e.backup(&[&src], None).await;
    assert_eq!(
        r.bytes_read,
        1 << 20,
        "stored as sparse: only the data segment is read"
    );
    let (back, largest) = read_all(&e, "latest", &file).await.unwrap();
    assert!(
        back == std::fs::read(&file).unwrap(),
        "holes or data differ"
    );
    assert!(
        largest <= 1 << 20,
        "a hole came in a piece of {largest} bytes"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn diff_marks_added_removed_modified_and_metadata_only_changes() {
    let e = env().await;
    let src = e.dir("src");
    let (a, b) = two_points(&e, &src).await;
    let d = e.repo.diff(&a, &b).await.unwrap();
    // A folder's own modification time is not a change (its entries show what changed), so
    // neither `sub` nor the folders above the source are listed.
    let beneath: Vec<(char, String)> = d
        .changes
        .iter()
        .map(|c| {
            (
                c.change.marker(),
                names(std::slice::from_ref(&c.entry), &src)[0].clone(),
            )
        })
        .collect();
    let want = [
        ('M', "edit.bin"),
        ('-', "gone.txt"),
        ('+', "sub/new.txt"),
        ('U', "touch.txt"),
    ];
    let want: Vec<(char, String)> = want.iter().map(|(m, n)| (*m, n.to_string())).collect();
    assert_eq!(beneath, want);
    let edit = d
        .changes
        .iter()
        .find(|c| c.change == Change::Modified)
        .unwrap();
    assert_eq!(
        (edit.size_before, edit.entry.size),
        (Some(700 << 10), 900 << 10)
    );
    let s = &d.summary;
    assert_eq!((s.added, s.removed, s.modified), (1, 1, 1));
    assert_eq!((s.bytes_added, s.bytes_removed), (9, 14));
    assert_eq!(s.metadata, 1);
    assert!(e.repo.diff(&a, &a).await.unwrap().changes.is_empty());
    // Backwards, additions are removals.
    let back = e.repo.diff(&b, &a).await.unwrap();
    assert_eq!((back.summary.added, back.summary.removed), (1, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_count_what_each_point_alone_references_and_the_vault_stores() {
    let e = env().await;
    let src = e.dir("src");
    write(&src, "shared.bin", &noise(2 << 20, 1));
    write(&src, "first.bin", &noise(1 << 20, 2));
    let a = e.backup(&[&src], None).await.recovery_point.unwrap();
    std::fs::remove_file(src.join("first.bin")).unwrap();
    write(&src, "second.bin", &noise(3 << 20, 3));
    let b = e.backup(&[&src], None).await.recovery_point.unwrap();
    let s = e.repo.stats(&[]).await.unwrap();
    assert_eq!(s.recovery_points, 2);
    assert_eq!(
        s.points
            .iter()
            .map(|p| p.recovery_point.as_str())
            .collect::<Vec<_>>(),
        [&a, &b]
    );
    let (pa, pb) = (&s.points[0], &s.points[1]);
    assert_eq!((pa.files, pa.logical_bytes), (2, 3 << 20));
    assert_eq!((pb.files, pb.logical_bytes), (2, 5 << 20));
    // Noise does not compress: what a point alone holds is about its own file, plus a few
    // trees and the framing, never the shared file.
    let near = |got: u64, want: u64| got >= want && got < want + (64 << 10);
    assert!(near(pa.unique_bytes, 1 << 20), "first: {}", pa.unique_bytes);
    assert!(
        near(pb.unique_bytes, 3 << 20),
        "second: {}",
        pb.unique_bytes
    );
    assert_eq!(s.stored_bytes, e.pack_bytes().await);
    assert_eq!(s.logical_bytes, 8 << 20);
    let ratio = s.dedup_ratio.unwrap();
    assert!((ratio - (8 << 20) as f64 / s.stored_bytes as f64).abs() < 1e-9);
    assert!(ratio > 1.2 && ratio < 1.4, "{ratio}");
    let one = e.repo.stats(&[b[..10].to_string()]).await.unwrap();
    assert_eq!(one.points.len(), 1);
    assert_eq!(one.points[0].unique_bytes, pb.unique_bytes);
}

#[tokio::test(flavor = "multi_thread")]
async fn latest_with_a_path_is_the_newest_point_that_holds_it() {
    let e = env().await;
    let (docs, music) = (e.dir("docs"), e.dir("music"));
    write(&docs, "a.txt", b"docs v1");
    write(&music, "m.txt", b"music");
    let d1 = e.backup(&[&docs], None).await.recovery_point.unwrap();
    let m1 = e.backup(&[&music], None).await.recovery_point.unwrap();
    let in_docs = [docs.join("a.txt")];
    let (id, _) = e
        .repo
        .find_recovery_point_holding("latest", &in_docs)
        .await
        .unwrap();
    assert_eq!(id.to_hex(), d1);
    let (id, _) = e
        .repo
        .find_recovery_point_holding("latest", &[&music])
        .await
        .unwrap();
    assert_eq!(id.to_hex(), m1);
    // `/x/docs2` is not beneath `/x/docs`: paths are compared by components.
    let err = e
        .repo
        .find_recovery_point_holding("latest", &[PathBuf::from(format!("{}2", docs.display()))])
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::NoRecoveryPointHolds { .. }),
        "{err}"
    );
    // An id is taken as given, and so is `latest` with no path.
    let (id, _) = e
        .repo
        .find_recovery_point_holding(&m1, &in_docs)
        .await
        .unwrap();
    assert_eq!(id.to_hex(), m1);

    // ls, open_file and restore of `latest` with a path follow it.
    let l = e.repo.ls("latest", &docs, false).await.unwrap();
    assert_eq!(l.recovery_point, d1);
    assert_eq!(
        read_all(&e, "latest", &in_docs[0]).await.unwrap().0,
        b"docs v1"
    );
    let target = e.work.path().join("restored");
    let mut opts = RestoreOptions::new("latest", &target, e.work.path().join("recovery"));
    opts.paths = vec![docs.clone()];
    let r = e.repo.restore(opts).await.unwrap();
    assert_eq!(r.recovery_point, d1);
    let back = target.join(in_docs[0].strip_prefix("/").unwrap());
    assert_eq!(std::fs::read(back).unwrap(), b"docs v1");
}

fn node(name: &[u8], kind: NodeKind, subtree: Option<rbackup_engine::crypto::BlobId>) -> Node {
    Node {
        name: name.to_vec().into(),
        kind,
        mode: if kind == NodeKind::Dir {
            0o40755
        } else {
            0o100644
        },
        uid: 0,
        gid: 0,
        mtime_ns: 0,
        legacy_ctime_ns: None,
        legacy_ino: None,
        size: 0,
        content: Vec::new(),
        segments: Vec::new(),
        subtree,
        class: None,
        target: None,
        link_group: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn crafted_names_are_refused_and_exponential_sharing_is_not_walked() {
    let e = env().await;
    let inner = Tree {
        nodes: vec![
            node(b"..", NodeKind::File, None),
            node(b"fine", NodeKind::File, None),
        ],
    };
    let inner_id = e.repo.crafted_tree_id(&inner);
    let root = Tree {
        nodes: vec![
            node(b"a/b", NodeKind::File, None),
            node(b"d", NodeKind::Dir, Some(inner_id)),
        ],
    };
    let root_id = e.repo.crafted_tree_id(&root);
    let rp = e
        .repo
        .store_crafted_recovery_point(&[], &[inner, root], root_id)
        .await
        .unwrap();
    let l = e.repo.ls(&rp.to_hex(), Path::new("/"), true).await.unwrap();
    let paths: Vec<_> = l
        .entries
        .iter()
        .map(|x| x.path.display().to_string())
        .collect();
    assert_eq!(paths, ["/d", "/d/fine"]);
    assert_eq!(l.refused.len(), 2, "{:?}", l.refused);
    assert!(
        l.refused.iter().all(|r| r.contains("refused name")),
        "{:?}",
        l.refused
    );

    // Each level lists the next twice: 2^40 paths from 40 trees.
    let mut trees = vec![Tree {
        nodes: vec![node(b"leaf", NodeKind::File, None)],
    }];
    for _ in 0..40 {
        let below = e.repo.crafted_tree_id(trees.last().unwrap());
        let nodes = vec![
            node(b"a", NodeKind::Dir, Some(below)),
            node(b"b", NodeKind::Dir, Some(below)),
        ];
        trees.push(Tree { nodes });
    }
    let top = e.repo.crafted_tree_id(trees.last().unwrap());
    let rp = e
        .repo
        .store_crafted_recovery_point(&[], &trees, top)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut only = FindOptions::default();
    only.recovery_points = vec![rp.to_hex()];
    let err = e.repo.find("leaf", &only).await.unwrap_err();
    let bounded = CorruptReason::TreeLargerThanRecorded { max: 0 };
    assert!(
        matches!(&err, EngineError::Corrupt { reason, .. } if std::mem::discriminant(reason) == std::mem::discriminant(&bounded)),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    // Stats reads each shared tree once, so it finishes.
    let s = e.repo.stats(&[rp.to_hex()]).await.unwrap();
    assert_eq!(s.points[0].blobs, 41);
}

#[tokio::test(flavor = "multi_thread")]
async fn machine_summaries_need_no_keys_and_count_each_machines_points() {
    use rbackup_engine::crypto::{KdfParams, Passphrase};
    use rbackup_engine::{Registration, Repository, Unlock, Vault};
    let work = tempfile::tempdir().unwrap();
    let url = format!("file://{}", work.path().join("vault").display());
    std::fs::create_dir_all(work.path().join("vault")).unwrap();
    let store = rbackup_engine::store::open(&url, &Default::default()).unwrap();
    let (vault, creds) = Vault::create(store.clone(), &url, Duration::from_secs(600))
        .await
        .unwrap();
    let pass = Passphrase::new("two machines passphrase").unwrap();
    let mut ids = Vec::new();
    for name in ["laptop", "server"] {
        let reg = Registration {
            name: name.into(),
            hostname: name.into(),
            passphrase: &pass,
            kdf: KdfParams::fast_insecure_for_tests(),
            chunker: Default::default(),
        };
        ids.push(vault.register(&creds, reg).await.unwrap().0);
    }
    let src = work.path().join("src");
    write(&src, "f.txt", b"x");
    let repo = Repository::open(&vault, &ids[1], Unlock::Passphrase(&pass), None)
        .await
        .unwrap();
    for _ in 0..2 {
        let mut o = rbackup_engine::BackupOptions::new([&src]);
        o.cache_dir = Some(work.path().join("cache"));
        repo.backup(o).await.unwrap();
    }
    // Some folder under machines/ that is not a machine is not listed.
    let junk = rbackup_engine::store::Bytes::from_static(b"{}");
    store
        .put(
            "machines/../machine.json",
            junk.clone(),
            rbackup_engine::store::PutMode::Create,
        )
        .await
        .ok();
    store
        .put(
            "machines/notanid/machine.json",
            junk,
            rbackup_engine::store::PutMode::Create,
        )
        .await
        .unwrap();

    let reopened = Vault::open(store, &url).await.unwrap();
    let mut got = reopened.machine_summaries().await.unwrap();
    got.sort_by_key(|m| m.recovery_point_objects);
    let mut want = ids.clone();
    want.sort_by_key(|id| *id == ids[1]);
    assert_eq!(got.iter().map(|m| m.id.clone()).collect::<Vec<_>>(), want);
    assert_eq!(
        got.iter()
            .map(|m| m.recovery_point_objects)
            .collect::<Vec<_>>(),
        [0, 2]
    );
    assert!(got.iter().all(|m| {
        m.registered
            .as_ref()
            .is_some_and(|t| t.parse::<jiff::Timestamp>().is_ok())
    }));
}

/// The node at `path` (absolute, a file) of recovery point `tree`, found through the
/// [`rbackup_engine::Browser`]'s listings as a file-system view finds it.
async fn browse_to(
    b: &rbackup_engine::Browser,
    tree: rbackup_engine::crypto::BlobId,
    path: &Path,
) -> Node {
    let (mut tree, mut at, mut ancestors) = (tree, PathBuf::from("/"), Vec::new());
    let names: Vec<_> = path.components().skip(1).collect();
    for (i, c) in names.iter().enumerate() {
        let l = b.list(&at, &tree).await.unwrap();
        assert!(l.refused.is_empty(), "{:?}", l.refused);
        let name = c.as_os_str().as_encoded_bytes();
        let node = l
            .entries
            .into_iter()
            .find(|n| n.name.as_slice() == name)
            .unwrap();
        at = at.join(c);
        if i + 1 == names.len() {
            return node;
        }
        ancestors.push(tree);
        tree = b.subtree(&at, &node, &ancestors).unwrap();
    }
    unreachable!("{} names a file", path.display())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_browser_reads_any_offset_fetching_only_the_blobs_that_cover_it() {
    let e = env().await;
    let src = e.dir("src");
    let big = noise(6 << 20, 11);
    write(&src, "big.bin", &big);
    write(&src, "empty", b"");
    e.backup(&[&src], None).await;
    let (_, rp) = e.repo.find_recovery_point("latest").await.unwrap();
    let cache = 3 << 20;
    let b = e.repo.browser(cache).await.unwrap();
    let node = browse_to(&b, rp.tree, &src.join("big.bin")).await;
    let f = b.open(&src.join("big.bin"), &node).unwrap();
    assert_eq!(f.size(), big.len() as u64);
    assert!(
        f.blobs() > 2,
        "6 MiB of noise is several blobs, not {}",
        f.blobs()
    );

    // The last bytes of the file come from its last blob alone.
    let at = big.len() as u64 - 1000;
    let tail = b.read_at(&f, at, 4000).await.unwrap();
    assert_eq!(
        tail,
        &big[big.len() - 1000..],
        "a read is cut at the end of the file"
    );
    assert_eq!(
        b.blobs_fetched(),
        1,
        "only the blob covering the offset is fetched"
    );
    // Read again: from the cache.
    b.read_at(&f, at + 10, 10).await.unwrap();
    assert_eq!(b.blobs_fetched(), 1);
    assert!(
        b.read_at(&f, big.len() as u64, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Every piece at every offset is the file's, and the cache stays within its bound.
    let mut back = Vec::new();
    let step = 200_000;
    for off in (0..big.len()).step_by(step) {
        back.extend(b.read_at(&f, off as u64, step).await.unwrap());
        assert!(b.cached_bytes() <= cache);
    }
    assert!(back == big, "the bytes read back differ");
    for off in [0usize, 1, 65_535, 1 << 20, (3 << 20) + 7, big.len() - 1] {
        let piece = b.read_at(&f, off as u64, 300_000).await.unwrap();
        assert_eq!(piece, &big[off..(off + 300_000).min(big.len())], "at {off}");
    }

    let empty = browse_to(&b, rp.tree, &src.join("empty")).await;
    let f = b.open(&src.join("empty"), &empty).unwrap();
    assert!(b.read_at(&f, 0, 10).await.unwrap().is_empty());
    let top = b.list(Path::new("/"), &rp.tree).await.unwrap();
    let err = b.open(Path::new("/tmp"), &top.entries[0]).unwrap_err();
    assert!(matches!(err, EngineError::NotAFile { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_browser_refuses_crafted_names_and_a_tree_that_contains_itself() {
    let e = env().await;
    let inner = Tree {
        nodes: vec![
            node(b"..", NodeKind::File, None),
            node(b"fine", NodeKind::File, None),
        ],
    };
    let inner_id = e.repo.crafted_tree_id(&inner);
    let root = Tree {
        nodes: vec![
            node(b"a/b", NodeKind::File, None),
            node(b"d", NodeKind::Dir, Some(inner_id)),
        ],
    };
    let root_id = e.repo.crafted_tree_id(&root);
    e.repo
        .store_crafted_recovery_point(&[], &[inner, root], root_id)
        .await
        .unwrap();
    let b = e.repo.browser(1 << 20).await.unwrap();
    let top = b.list(Path::new("/"), &root_id).await.unwrap();
    assert_eq!(top.entries.len(), 1);
    assert_eq!(top.entries[0].name.as_slice(), b"d");
    assert!(top.refused[0].contains("refused name"), "{:?}", top.refused);
    let d = b
        .subtree(Path::new("/d"), &top.entries[0], &[root_id])
        .unwrap();
    let l = b.list(Path::new("/d"), &d).await.unwrap();
    assert_eq!(l.entries.len(), 1);
    assert_eq!(l.refused.len(), 1);
    // A directory whose tree is one above it is not entered.
    let err = b
        .subtree(Path::new("/d"), &top.entries[0], &[root_id, inner_id])
        .unwrap_err();
    assert!(
        matches!(
            &err,
            EngineError::Corrupt {
                reason: CorruptReason::TreeContainsItself,
                ..
            }
        ),
        "{err}"
    );
}
