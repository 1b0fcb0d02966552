//! Symlinks and hard links on the command line: skipped by rule without making the run end
//! with warnings (one count line, the paths in the job record), and `--links store` (flag,
//! config and job setting) backing them up and restoring them as links.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;

use crate::harness::{Agent, code, text};

/// A folder with one file and `n` symlinks to it.
fn with_symlinks(a: &Agent, n: usize) -> std::path::PathBuf {
    let src = a.p("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("plain.txt"), b"plain").unwrap();
    for i in 0..n {
        symlink("plain.txt", src.join(format!("link-{i:02}"))).unwrap();
    }
    src
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn fifty_symlinks_back_up_with_exit_0_one_count_line_and_the_list_in_the_job_record() {
    let a = Agent::registered();
    let src = with_symlinks(&a, 50);
    let out = a.run(&["backup", src.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let err = stderr(&out);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("symbolic link"))
        .collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with("skipped by rule: 50 symbolic links — see `rbackup jobs --skipped "),
        "{err}"
    );
    assert!(!err.contains("link-07"), "no line per path: {err}");
    let id = lines[0]
        .rsplit("--skipped ")
        .next()
        .unwrap()
        .trim_end_matches('`')
        .to_string();

    let (c, jobs) = a.json(&["jobs"]);
    assert_eq!(c, 0);
    let rec = &jobs.as_array().unwrap()[0];
    assert_eq!(rec["id"], id.as_str());
    assert_eq!(rec["status"], "ok", "{rec}");
    let skipped = rec["report"]["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 50);
    assert!(
        skipped
            .iter()
            .all(|s| s["kind"] == "rule" && s["rule"] == "symlink")
    );

    let human = a.ok(&["jobs"]);
    assert!(human.contains(&id), "{human}");
    assert!(
        human.contains("skipped by rule: 50 symbolic links"),
        "{human}"
    );
    assert!(!human.contains("link-07"), "{human}");

    let listed = a.ok(&["jobs", "--skipped", &id[..4]]);
    let paths: Vec<&str> = listed.lines().filter(|l| l.contains("/link-")).collect();
    assert_eq!(paths.len(), 50, "{listed}");
    assert!(
        paths.iter().all(|l| l.starts_with("skipped by rule: ")),
        "{listed}"
    );
    let (c, json) = a.json(&["jobs", "--skipped", &id]);
    assert_eq!(c, 0);
    assert_eq!(json.as_array().unwrap().len(), 50);
    let none = a.run(&["jobs", "--skipped", "zzzz"]);
    assert_eq!(code(&none), 1);
    assert!(
        stderr(&none).contains("no job record has the id"),
        "{}",
        text(&none)
    );
}

/// Unreadable files are named, at most 20 of them, on the terminal.
#[test]
fn an_unreadable_file_still_exits_3_and_is_named_beside_the_rule_count() {
    let a = Agent::unprivileged();
    let src = a.p("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("ok.txt"), b"readable").unwrap();
    fs::write(src.join("secret.txt"), b"not for you").unwrap();
    for i in 0..22 {
        let f = src.join(format!("more-{i:02}"));
        fs::write(&f, b"not for you").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o000)).unwrap();
    }
    symlink("ok.txt", src.join("link")).unwrap();
    if let Some(uid) = a.uid {
        for p in [&src, &src.join("ok.txt")] {
            std::os::unix::fs::chown(p, Some(uid), Some(uid)).unwrap();
        }
        std::os::unix::fs::lchown(src.join("link"), Some(uid), Some(uid)).unwrap();
    }
    fs::set_permissions(src.join("secret.txt"), fs::Permissions::from_mode(0o000)).unwrap();
    const T: &str = "an_unreadable_file_still_exits_3_and_is_named_beside_the_rule_count";
    if a.uid.is_some() && !rbackup_testenv::need_command(T, "setpriv", "util-linux") {
        return;
    }
    let _ran = a.uid.map(|_| rbackup_testenv::ran(T, "setpriv, as nobody"));
    let out = a.run(&["backup", src.to_str().unwrap()]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.lines().any(|l| l.starts_with("not backed up ")
            && l.contains("more-00")
            && l.contains("Permission denied")),
        "{err}"
    );
    let named = err
        .lines()
        .filter(|l| l.starts_with("not backed up "))
        .count();
    assert_eq!(named, 20, "{err}");
    assert!(
        err.contains("... and 3 more not backed up — see `rbackup jobs --skipped "),
        "{err}"
    );
    assert!(err.contains("skipped by rule: 1 symbolic link"), "{err}");
    let human = a.ok(&["jobs"]);
    assert!(human.contains("not backed up: 23 file(s)"), "{human}");
    let (_, jobs) = a.json(&["jobs"]);
    let skipped = jobs[0]["report"]["skipped"].as_array().unwrap();
    assert_eq!(skipped.iter().filter(|s| s["kind"] == "error").count(), 23);
    let id = jobs[0]["id"].as_str().unwrap();
    let listed = a.ok(&["jobs", "--skipped", id]);
    assert!(
        listed.contains("not backed up: ") && listed.contains("secret.txt: cannot read"),
        "the ones past the first 20 are in the record: {listed}"
    );
}

/// `--links store` round trip: the symlink comes back with its target, the hard links as one
/// inode.
fn assert_links_restored(a: &Agent, src: &Path, target: &Path) {
    let out = a.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        text(&out).contains("2 symlinks, 1 hard link)"),
        "{}",
        text(&out)
    );
    let back = target.join(src.strip_prefix("/").unwrap());
    assert_eq!(
        fs::read_link(back.join("link-00")).unwrap(),
        Path::new("plain.txt")
    );
    let ino = |n: &str| back.join(n).metadata().unwrap().ino();
    assert_eq!(ino("hard-a"), ino("sub/hard-b"));
    assert_eq!(fs::read(back.join("sub/hard-b")).unwrap(), b"shared");
}

fn linked_source(a: &Agent) -> std::path::PathBuf {
    let src = with_symlinks(a, 2);
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("hard-a"), b"shared").unwrap();
    fs::hard_link(src.join("hard-a"), src.join("sub/hard-b")).unwrap();
    src
}

#[test]
fn links_store_backs_up_and_restores_symlinks_and_hard_links() {
    let a = Agent::registered();
    let src = linked_source(&a);
    let (c, rep) = a.json(&["backup", "--links", "store", src.to_str().unwrap()]);
    assert_eq!(c, 0, "{rep}");
    assert_eq!(
        (rep["symlinks"].as_u64(), rep["hard_links"].as_u64()),
        (Some(2), Some(1))
    );
    assert!(rep["skipped"].as_array().unwrap().is_empty(), "{rep}");
    assert_links_restored(&a, &src, &a.p("out"));
    let bad = a.run(&["backup", "--links", "follow", src.to_str().unwrap()]);
    assert_eq!(code(&bad), 2, "{}", text(&bad));
}

#[test]
fn the_config_and_job_settings_for_links_are_honoured() {
    let a = Agent::registered();
    let src = linked_source(&a);
    let cfg = fs::read_to_string(a.config()).unwrap();
    fs::write(a.config(), format!("links = \"store\"\n{cfg}")).unwrap();
    let (c, rep) = a.json(&["backup", src.to_str().unwrap()]);
    assert_eq!(c, 0, "{rep}");
    assert_eq!(rep["symlinks"], 2, "the config's links = store: {rep}");
    assert_links_restored(&a, &src, &a.p("out"));
    let (_, rep) = a.json(&["backup", "--links", "skip", src.to_str().unwrap()]);
    assert_eq!(rep["symlinks"], 0, "the flag wins: {rep}");
    assert_eq!(rep["skipped"].as_array().unwrap().len(), 4, "{rep}");

    let s = src.to_str().unwrap();
    a.ok(&[
        "job", "add", "skipper", "--path", s, "--at", "03:00", "--links", "skip",
    ]);
    a.ok(&["job", "add", "plain", "--path", s, "--at", "03:00"]);
    assert!(a.ok(&["job", "list"]).contains("links: skip"));
    let (c, run) = a.json(&["run", "skipper", "plain"]);
    assert_eq!(c, 0, "{run}");
    let jobs = run["jobs"].as_array().unwrap();
    assert_eq!(
        jobs[0]["report"]["symlinks"], 0,
        "the job's links = skip: {run}"
    );
    assert_eq!(jobs[0]["report"]["skipped"].as_array().unwrap().len(), 4);
    assert_eq!(
        jobs[1]["report"]["symlinks"], 2,
        "the agent's links = store: {run}"
    );
    let out = a.run(&["run", "skipper"]);
    let err = stderr(&out);
    assert!(
        err.contains("job skipper: skipped by rule: 2 symbolic links, 2 hard links — see `rbackup jobs --skipped "),
        "{err}"
    );
}

#[test]
fn overwrite_never_keeps_what_the_target_has_where_a_link_goes() {
    let a = Agent::registered();
    let src = linked_source(&a);
    a.ok(&["backup", "--links", "store", src.to_str().unwrap()]);
    let target = a.p("out");
    let back = target.join(src.strip_prefix("/").unwrap());
    fs::create_dir_all(back.join("sub")).unwrap();
    // What the user has in the target where a symlink and a hard link's second name go.
    fs::write(back.join("link-00"), b"mine").unwrap();
    fs::write(back.join("sub/hard-b"), b"mine too").unwrap();
    let t = target.to_str().unwrap();
    let (c, rep) = a.json(&["restore", "latest", "--target", t, "--overwrite", "never"]);
    assert_eq!(c, 0, "{rep}");
    assert!(!back.join("link-00").is_symlink());
    assert_eq!(fs::read(back.join("link-00")).unwrap(), b"mine");
    assert_eq!(fs::read(back.join("sub/hard-b")).unwrap(), b"mine too");
    // What was missing is restored, links included.
    assert_eq!(
        fs::read_link(back.join("link-01")).unwrap(),
        Path::new("plain.txt")
    );
    assert_eq!(fs::read(back.join("hard-a")).unwrap(), b"shared");
    // The default (always) replaces both.
    let (c, rep) = a.json(&["restore", "latest", "--target", t]);
    assert_eq!(c, 0, "{rep}");
    assert!(back.join("link-00").is_symlink());
    let ino = |n: &str| back.join(n).metadata().unwrap().ino();
    assert_eq!(ino("hard-a"), ino("sub/hard-b"));
}
