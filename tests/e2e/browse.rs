//! Finding what was backed up, through the binary: `ls`, `find`, `dump`, `diff` and `stats`
//! on a folder backed up twice with a change between; `latest` filtered by path for
//! `restore`, `ls` and `dump`, and `recovery-points --path`; `vault machines` with two
//! machines registered, with and without a passphrase. Human output and `--json` both.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::harness::{Agent, code, text};

/// `src` with a few files, backed up; then one file added, one removed, one rewritten and one
/// only touched, and backed up again. Returns the two recovery point ids.
fn backed_up_twice(a: &Agent, src: &Path) -> (String, String) {
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("keep.txt"), "kept\n").unwrap();
    fs::write(src.join("gone.txt"), "removed later\n").unwrap();
    fs::write(
        src.join("sub/big.bin"),
        crate::harness::Rng(5).bytes(3 << 20),
    )
    .unwrap();
    fs::write(src.join("touch.txt"), "same\n").unwrap();
    let first = a.backup(src)["recovery_point"]
        .as_str()
        .unwrap()
        .to_string();
    fs::remove_file(src.join("gone.txt")).unwrap();
    fs::write(
        src.join("sub/big.bin"),
        crate::harness::Rng(6).bytes(2 << 20),
    )
    .unwrap();
    fs::write(src.join("sub/new.txt"), "new!\n").unwrap();
    let f = fs::File::options()
        .write(true)
        .open(src.join("touch.txt"))
        .unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    let second = a.backup(src)["recovery_point"]
        .as_str()
        .unwrap()
        .to_string();
    (first, second)
}

/// Whether `s` is UTC RFC 3339 with nine fractional digits.
fn utc_ns(s: &Value) -> bool {
    let s = s.as_str().unwrap_or_default();
    s.len() == "2026-12-01T18:20:05.123456789Z".len()
        && s.ends_with('Z')
        && s.as_bytes()[19] == b'.'
}

/// Whether `s` holds a local time to the second (`2026-12-01 18:20:05`).
fn has_local_time(s: &str) -> bool {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .any(|w| {
            w[0].len() == 10
                && w[0].as_bytes()[4] == b'-'
                && w[1].len() == 8
                && w[1].as_bytes()[2] == b':'
        })
}

#[test]
fn ls_find_dump_diff_and_stats_on_a_folder_backed_up_twice() {
    let a = Agent::registered();
    let src = a.p("src");
    let (first, second) = backed_up_twice(&a, &src);
    let s = |rel: &str| src.join(rel).display().to_string();

    // ls: names (directories with a '/'), recursive, long, JSON.
    let out = a.ok(&["ls", "latest", &s("")]);
    let want = [s("keep.txt"), format!("{}/", s("sub")), s("touch.txt")];
    assert_eq!(out.lines().collect::<Vec<_>>(), want);
    let rec = a.ok(&["ls", "-r", &first, &s("")]);
    assert!(
        rec.contains(&s("sub/big.bin")) && rec.contains(&s("gone.txt")),
        "{rec}"
    );
    assert!(!rec.contains("new.txt"), "{rec}");
    let long = a.ok(&["ls", "--long", "latest", &s("")]);
    let keep = long.lines().find(|l| l.ends_with("keep.txt")).unwrap();
    assert!(keep.starts_with("-rw"), "{keep}");
    assert!(keep.contains(" 5 ") && has_local_time(keep), "{keep}");
    assert!(
        long.lines()
            .any(|l| l.starts_with("drwx") && l.ends_with("sub/")),
        "{long}"
    );
    let (c, v) = a.json(&["ls", &second[..8], &s("sub")]);
    assert_eq!(c, 0);
    assert_eq!(v["recovery_point"], second.as_str());
    let entries = v["entries"].as_array().unwrap();
    let paths: Vec<&str> = entries
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, [s("sub/big.bin"), s("sub/new.txt")]);
    assert_eq!(entries[0]["kind"], "file");
    assert_eq!(entries[0]["size"], 2 << 20);
    assert!(utc_ns(&entries[0]["mtime"]) && utc_ns(&v["time"]), "{v}");
    let missing = a.run(&["ls", "latest", &s("nope")]);
    assert_eq!(code(&missing), 1, "{}", text(&missing));
    assert!(
        text(&missing).contains("is not in this recovery point"),
        "{}",
        text(&missing)
    );

    // find: across both points, by name or by path.
    let found = a.ok(&["find", "*.txt"]);
    assert!(
        found.contains(&first[..8]) && found.contains(&second[..8]),
        "{found}"
    );
    assert!(
        found
            .lines()
            .any(|l| l.starts_with(&first[..8]) && l.ends_with("gone.txt")),
        "{found}"
    );
    assert!(
        !found
            .lines()
            .any(|l| l.starts_with(&second[..8]) && l.ends_with("gone.txt")),
        "{found}"
    );
    assert!(
        found
            .trim_end()
            .ends_with("6 match(es) in 2 recovery point(s)"),
        "{found}"
    );
    let (c, v) = a.json(&["find", &format!("{}/sub/*", src.display()), "--newest", "1"]);
    assert_eq!(c, 0);
    let hits = v["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 2, "{v}");
    assert!(hits.iter().all(|h| h["recovery_point"] == second.as_str()));
    assert!(
        hits.iter()
            .all(|h| utc_ns(&h["recovery_point_time"]) && utc_ns(&h["mtime"]))
    );
    let (_, v) = a.json(&["find", "gone.txt", "--recovery-point", &second]);
    assert_eq!(v["hits"].as_array().unwrap().len(), 0);

    // dump: the bytes on stdout, byte-exact; a folder is refused; --json needs --output.
    let out = a.run(&["dump", "latest", &s("sub/big.bin")]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        out.stdout == fs::read(src.join("sub/big.bin")).unwrap(),
        "dumped bytes differ"
    );
    let old = a.run(&["dump", &first, &s("sub/big.bin")]);
    assert!(
        old.stdout == crate::harness::Rng(5).bytes(3 << 20),
        "the first point's bytes differ"
    );
    let dir = a.run(&["dump", "latest", &s("sub")]);
    assert_eq!(code(&dir), 1);
    assert!(
        text(&dir).contains("is not a file in this recovery point"),
        "{}",
        text(&dir)
    );
    assert!(dir.stdout.is_empty());
    let no_out = a.run(&["--json", "dump", "latest", &s("keep.txt")]);
    assert_ne!(code(&no_out), 0);
    let to = a.p("kept-copy");
    let (c, v) = a.json(&[
        "dump",
        "latest",
        &s("keep.txt"),
        "--output",
        to.to_str().unwrap(),
    ]);
    assert_eq!((c, v["bytes"].as_u64()), (0, Some(5)), "{v}");
    assert_eq!(fs::read(&to).unwrap(), b"kept\n");

    // diff: restic's markers, then the counts.
    let d = a.ok(&["diff", &first, &second]);
    let lines: Vec<&str> = d.lines().collect();
    for want in [
        format!("M    {}", s("sub/big.bin")),
        format!("-    {}", s("gone.txt")),
        format!("+    {}", s("sub/new.txt")),
        format!("U    {}", s("touch.txt")),
    ] {
        assert!(lines.contains(&want.as_str()), "{want:?} not in:\n{d}");
    }
    assert_eq!(lines.len(), 5, "{d}");
    assert!(
        lines[4].starts_with("1 added (5 B), 1 removed (14 B), 1 modified, 1 "),
        "{d}"
    );
    let (_, v) = a.json(&["diff", &first[..8], "latest"]);
    assert_eq!(v["summary"]["modified"], 1);
    let markers: Vec<&str> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["marker"].as_str().unwrap())
        .collect();
    assert_eq!(markers, ["-", "M", "+", "U"]);

    // stats: per point and for the vault.
    let st = a.ok(&["stats"]);
    assert!(
        st.contains(&first[..8]) && st.contains(&second[..8]) && st.contains("dedup ratio"),
        "{st}"
    );
    let (_, v) = a.json(&["stats"]);
    let points = v["points"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    assert_eq!(points[0]["logical_bytes"], (3 << 20) + 5 + 14 + 5);
    // Each point alone holds its version of big.bin (incompressible), and little else.
    let unique = |p: &Value, size: u64| {
        let u = p["unique_bytes"].as_u64().unwrap();
        u >= size && u < size + (64 << 10)
    };
    assert!(
        unique(&points[0], 3 << 20) && unique(&points[1], 2 << 20),
        "{v}"
    );
    let stored = v["stored_bytes"].as_f64().unwrap();
    let logical = v["logical_bytes"].as_f64().unwrap();
    assert!((v["dedup_ratio"].as_f64().unwrap() - logical / stored).abs() < 1e-9);
    let (_, one) = a.json(&["stats", &second[..8]]);
    assert_eq!(one["points"].as_array().unwrap().len(), 1);
}

#[test]
fn latest_with_a_path_is_the_newest_point_that_holds_it() {
    let a = Agent::registered();
    let (docs, music) = (a.p("docs"), a.p("music"));
    fs::create_dir_all(&docs).unwrap();
    fs::create_dir_all(&music).unwrap();
    fs::write(docs.join("letter.txt"), "dear\n").unwrap();
    fs::write(music.join("song.txt"), "la la\n").unwrap();
    let d = a.backup(&docs)["recovery_point"]
        .as_str()
        .unwrap()
        .to_string();
    let m = a.backup(&music)["recovery_point"]
        .as_str()
        .unwrap()
        .to_string();
    let letter = docs.join("letter.txt");
    let letter = letter.to_str().unwrap();

    // recovery-points --path lists the points that hold it.
    let (_, v) = a.json(&["recovery-points", "--path", docs.to_str().unwrap()]);
    let ids: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [d.as_str()]);
    let (_, v) = a.json(&[
        "recovery-points",
        "--path",
        letter,
        "--path",
        music.to_str().unwrap(),
    ]);
    assert_eq!(v.as_array().unwrap().len(), 0);
    let human = a.ok(&["recovery-points", "--path", music.to_str().unwrap()]);
    assert!(
        human.contains(&m[..8]) && !human.contains(&d[..8]),
        "{human}"
    );

    // restore, ls and dump of `latest` with a path find the docs backup, not the newer one.
    let target = a.p("target");
    let (c, v) = a.json(&[
        "restore",
        "latest",
        letter,
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_eq!(c, 0, "{v}");
    assert_eq!(v["recovery_point"], d.as_str());
    let back = target.join(letter.trim_start_matches('/'));
    assert_eq!(fs::read_to_string(back).unwrap(), "dear\n");
    let (_, v) = a.json(&["ls", "latest", docs.to_str().unwrap()]);
    assert_eq!(v["recovery_point"], d.as_str());
    assert_eq!(a.ok(&["dump", "latest", letter]), "dear\n");
    let none = a.run(&["ls", "latest", a.p("elsewhere").to_str().unwrap()]);
    assert_eq!(code(&none), 1);
    assert!(
        text(&none).contains("no recovery point of this machine holds"),
        "{}",
        text(&none)
    );
}

#[test]
fn vault_machines_lists_both_machines_and_names_the_ones_that_open() {
    let owner = Agent::registered();
    let src = owner.p("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f.txt"), "owner\n").unwrap();
    owner.backup(&src);
    // A second machine with its own passphrase, backed up twice.
    let other = Agent::bare();
    fs::write(other.pass_file(), "the other machine's passphrase").unwrap();
    let creds = other.p("creds.json");
    let url = owner.vault_url();
    owner.ok(&[
        "vault",
        "credentials",
        &url,
        "--out",
        creds.to_str().unwrap(),
    ]);
    other.register_with(&creds, &["--machine-name", "photos-box"]);
    let osrc = other.p("photos");
    fs::create_dir_all(&osrc).unwrap();
    fs::write(osrc.join("p.txt"), "one").unwrap();
    other.backup(&osrc);
    fs::write(osrc.join("p.txt"), "two").unwrap();
    other.backup(&osrc);
    let (mine, theirs) = (owner.machine_id(), other.machine_id());

    // Without a passphrase: this host's machine is named (local key file), the other is not.
    let out = owner.run(&["vault", "machines", &url]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    let row = |id: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap()
            .to_string()
    };
    assert!(
        row(&mine).split_whitespace().nth(1) != Some("?") && has_local_time(&row(&mine)),
        "{stdout}"
    );
    assert!(
        row(&theirs).contains(" ? ") && row(&theirs).contains("2 stored"),
        "{stdout}"
    );
    assert!(
        text(&out).contains("--passphrase-file"),
        "the note says how to see more"
    );
    let (_, v) = owner.json(&["vault", "machines", &url]);
    let by_id = |v: &Value, id: &str| {
        v["machines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(v["machines"].as_array().unwrap().len(), 2);
    let t = by_id(&v, &theirs);
    assert_eq!(
        (t["name"].clone(), t["recovery_point_objects"].clone()),
        (Value::Null, 2.into())
    );
    assert!(
        t["last_recovery_point"].is_null() && utc_ns(&t["registered"]),
        "{t}"
    );
    assert_eq!(by_id(&v, &mine)["unlocked_with"], "local key file");

    // With the other machine's passphrase, from a host with no config at all.
    let stranger = Agent::bare();
    let pass = other.pass_file();
    let (c, v) = stranger.json(&[
        "vault",
        "machines",
        &url,
        "--passphrase-file",
        pass.to_str().unwrap(),
    ]);
    assert_eq!(c, 0, "{v}");
    let t = by_id(&v, &theirs);
    assert_eq!(
        (t["name"].clone(), t["recovery_points"].clone()),
        ("photos-box".into(), 2.into())
    );
    assert!(utc_ns(&t["last_recovery_point"]), "{t}");
    assert!(
        by_id(&v, &mine)["name"].is_null(),
        "the passphrase opens only its machine"
    );
    let human = stranger.ok(&[
        "vault",
        "machines",
        &url,
        "--passphrase-file",
        pass.to_str().unwrap(),
    ]);
    assert!(
        human
            .lines()
            .any(|l| l.starts_with(&theirs) && l.contains("photos-box")),
        "{human}"
    );
    // The same passphrase from the environment, with stdin not a terminal: no prompt.
    let out = stranger
        .cmd()
        .args(["vault", "machines", &url])
        .env(
            "RBACKUP_PASSPHRASE_COMMAND",
            format!("cat {}", pass.display()),
        )
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("photos-box"), "{}", text(&out));
}

#[test]
fn names_that_are_not_utf8_are_listed_not_refused() {
    use std::os::unix::ffi::OsStrExt;
    let a = Agent::registered();
    let src = a.p("src");
    fs::create_dir_all(&src).unwrap();
    let odd = src.join(std::ffi::OsStr::from_bytes(b"caf\xe9.txt"));
    fs::write(&odd, "latin-1 name\n").unwrap();
    a.backup(&src);
    let (c, v) = a.json(&["ls", "latest", src.to_str().unwrap()]);
    assert_eq!(c, 0, "{v}");
    assert_eq!(
        v["entries"][0]["path"],
        format!("{}/caf\u{fffd}.txt", src.display())
    );
    let (c, v) = a.json(&["find", "caf*"]);
    assert_eq!((c, v["hits"].as_array().unwrap().len()), (0, 1), "{v}");
    // The exact name still reaches the file.
    let mut dump = a.cmd();
    dump.args(["dump", "latest"]).arg(&odd);
    let out = dump.output().unwrap();
    assert_eq!(
        (code(&out), out.stdout.as_slice()),
        (0, &b"latin-1 name\n"[..]),
        "{}",
        text(&out)
    );
}
