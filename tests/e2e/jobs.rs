//! Scheduled jobs: `job add|list|remove`, `schedule`, and `run [--due]` under a moved clock.
//!
//! The clock is moved with `faketime` (libfaketime), which the process sees through its libc
//! time calls; where it is not installed the tests are skipped
//! (see rbackup_testenv), or fail under `RBACKUP_REQUIRE_ALL=1`. Local time is pinned
//! to Europe/Berlin with `TZ`, for `faketime`'s date parsing and for rbackup alike.

use std::fs;
use std::process::{Command, Output};

use serde_json::Value;

use crate::harness::*;

const TZ: &str = "Europe/Berlin";

/// The agent's command, run by `faketime` starting at local time `when` (`2026-03-02 09:00:00`).
fn cmd_at(a: &Agent, when: &str) -> Command {
    let mut c = under_faketime(a.cmd(), &[when]);
    c.env("TZ", TZ);
    c
}

fn run_at(a: &Agent, when: &str, args: &[&str]) -> Output {
    cmd_at(a, when).args(args).output().unwrap()
}

/// `rbackup --json run ...` at `when`: (exit code, the per-job results).
fn run_json(a: &Agent, when: &str, args: &[&str]) -> (i32, Vec<Value>, String) {
    let mut full = vec!["--json", "run"];
    full.extend_from_slice(args);
    let out = run_at(a, when, &full);
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("run {args:?} at {when}: not JSON ({e}):\n{}", text(&out)));
    let jobs = v["jobs"].as_array().cloned().unwrap_or_default();
    (code(&out), jobs, text(&out))
}

/// The status of each job in a `run` result, by name.
fn statuses(jobs: &[Value]) -> Vec<(String, String)> {
    jobs.iter()
        .map(|j| {
            (
                j["job"].as_str().unwrap().to_string(),
                j["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn one(job: &str, status: &str) -> Vec<(String, String)> {
    vec![(job.to_string(), status.to_string())]
}

/// Recovery points made by job `job`.
fn points_of(a: &Agent, job: &str) -> usize {
    let (c, v) = a.json(&["recovery-points"]);
    assert_eq!(c, 0, "{v}");
    v.as_array()
        .unwrap()
        .iter()
        .filter(|rp| rp["job"] == job)
        .count()
}

fn small_source(a: &Agent) -> String {
    let src = a.p("src");
    make_tree(&src, 21, 12, 4_000);
    src.to_str().unwrap().to_string()
}

fn add_at(a: &Agent, when: &str, args: &[&str]) {
    let mut full = vec!["job", "add"];
    full.extend_from_slice(args);
    let out = run_at(a, when, &full);
    assert_eq!(code(&out), 0, "job add {args:?}:\n{}", text(&out));
}

#[test]
fn due_runs_follow_a_moved_clock() {
    let Some(_ran) = faketime("due_runs_follow_a_moved_clock") else {
        return;
    };
    let a = Agent::registered();
    let src = small_source(&a);
    // 2026-03-02 is a Monday.
    add_at(
        &a,
        "2026-03-02 08:00:00",
        &["docs", "--path", &src, "--at", "09:00", "--days", "mon-fri"],
    );
    let steps: [(&str, &str, usize); 9] = [
        ("2026-03-02 08:59:00", "not_due", 0),
        ("2026-03-02 09:00:30", "ok", 1),
        ("2026-03-02 09:20:00", "not_due", 1),
        // Tuesday and Wednesday missed: caught up once.
        ("2026-03-04 12:00:00", "ok", 2),
        ("2026-03-04 12:15:00", "not_due", 2),
        // Thursday and Friday missed, looked at on Saturday: once, and not again on Sunday.
        ("2026-03-07 10:00:00", "ok", 3),
        ("2026-03-08 10:00:00", "not_due", 3),
        ("2026-03-09 08:59:59", "not_due", 3),
        ("2026-03-09 09:00:10", "ok", 4),
    ];
    for (when, status, points) in steps {
        let (c, jobs, out) = run_json(&a, when, &["--due"]);
        assert_eq!(c, 0, "at {when}:\n{out}");
        assert_eq!(statuses(&jobs), one("docs", status), "at {when}:\n{out}");
        assert_eq!(
            points_of(&a, "docs"),
            points,
            "recovery points after {when}"
        );
    }
    // Each run is in the job history as a scheduled run of the job.
    let (c, hist) = a.json(&["jobs"]);
    assert_eq!(c, 0);
    let runs = hist
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "run" && r["job"] == "docs" && r["status"] == "ok")
        .count();
    assert_eq!(runs, 4, "{hist}");
}

#[test]
fn a_new_job_first_runs_at_its_next_time() {
    let Some(_ran) = faketime("a_new_job_first_runs_at_its_next_time") else {
        return;
    };
    let a = Agent::registered();
    let src = small_source(&a);
    // Added at 10:00 with a 09:00 slot: today's slot is before the job existed.
    add_at(
        &a,
        "2026-03-02 10:00:00",
        &["late", "--path", &src, "--at", "09:00,18:30"],
    );
    let (_, jobs, out) = run_json(&a, "2026-03-02 10:05:00", &["--due"]);
    assert_eq!(statuses(&jobs), one("late", "not_due"), "{out}");
    assert_eq!(
        jobs[0]["next_run"].as_str().unwrap(),
        "2026-03-02T18:30:00+01:00[Europe/Berlin]"
    );
    let (_, jobs, out) = run_json(&a, "2026-03-02 18:31:00", &["--due"]);
    assert_eq!(statuses(&jobs), one("late", "ok"), "{out}");
    assert_eq!(points_of(&a, "late"), 1);
}

#[test]
fn a_failed_run_is_retried_at_the_next_tick() {
    let Some(_ran) = faketime("a_failed_run_is_retried_at_the_next_tick") else {
        return;
    };
    let a = Agent::registered();
    let src = a.p("not-yet");
    let src = src.to_str().unwrap();
    add_at(
        &a,
        "2026-03-02 08:00:00",
        &["flaky", "--path", src, "--at", "09:00"],
    );
    let (c, jobs, out) = run_json(&a, "2026-03-02 09:00:30", &["--due"]);
    assert_eq!(c, 1, "{out}");
    assert_eq!(statuses(&jobs), one("flaky", "failed"), "{out}");
    assert!(
        jobs[0]["error"].as_str().unwrap().contains("not-yet"),
        "{out}"
    );
    fs::create_dir_all(src).unwrap();
    fs::write(a.p("not-yet/f.txt"), b"now here").unwrap();
    let (c, jobs, out) = run_json(&a, "2026-03-02 09:15:00", &["--due"]);
    assert_eq!((c, statuses(&jobs)), (0, one("flaky", "ok")), "{out}");
    let (_, jobs, out) = run_json(&a, "2026-03-02 09:30:00", &["--due"]);
    assert_eq!(statuses(&jobs), one("flaky", "not_due"), "{out}");
}

#[test]
fn a_running_job_is_not_started_twice() {
    use std::io::Write;
    let a = Agent::registered();
    let src = small_source(&a);
    a.ok(&["job", "add", "docs", "--path", &src, "--at", "00:00"]);
    // Without its creation time (as in a config written by hand) the job is due at once,
    // whatever the real clock says.
    let cfg = fs::read_to_string(a.config()).unwrap();
    let cfg: String = cfg
        .lines()
        .filter(|l| !l.starts_with("created"))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(a.config(), cfg).unwrap();
    // Hold the job's lock as a running rbackup would: flock on its lock file, pid inside.
    let lock_path = a.p(&format!(
        "home/.local/state/rbackup/{}/locks/docs.lock",
        a.machine_id()
    ));
    fs::create_dir_all(lock_path.parent().unwrap()).unwrap();
    let mut held = fs::File::create(&lock_path).unwrap();
    rustix::fs::flock(&held, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    write!(held, "{}", std::process::id()).unwrap();

    let expected = format!("job docs is already running (pid {})", std::process::id());
    // Asked for by name: it did not happen, so that is a failure.
    let out = a.run(&["run", "docs"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&expected),
        "{}",
        text(&out)
    );
    // From a timer: normal, exit 0.
    let (c, v) = a.json(&["run", "--due"]);
    assert_eq!(c, 0, "{v}");
    assert_eq!(v["jobs"][0]["status"], "already_running", "{v}");
    assert_eq!(v["jobs"][0]["pid"], std::process::id(), "{v}");
    assert_eq!(points_of(&a, "docs"), 0);

    drop(held);
    let (c, v) = a.json(&["run", "docs"]);
    assert_eq!(c, 0, "{v}");
    assert_eq!(v["jobs"][0]["status"], "ok", "{v}");
    assert_eq!(points_of(&a, "docs"), 1);
}

#[test]
fn concurrent_due_runs_make_one_recovery_point() {
    let Some(_ran) = faketime("concurrent_due_runs_make_one_recovery_point") else {
        return;
    };
    let a = Agent::registered();
    let src = a.p("src");
    make_tree(&src, 5, 40, 200_000);
    fs::write(src.join("big.bin"), Rng(8).bytes(16 << 20)).unwrap();
    let src = src.to_str().unwrap();
    add_at(
        &a,
        "2026-03-02 08:00:00",
        &["docs", "--path", src, "--at", "09:00"],
    );
    let children: Vec<_> = (0..3)
        .map(|_| {
            cmd_at(&a, "2026-03-02 09:01:00")
                .args(["--json", "run", "--due"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut seen = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert_eq!(code(&out), 0, "{}", text(&out));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        seen.push(v["jobs"][0]["status"].as_str().unwrap().to_string());
    }
    seen.sort();
    // One ran; the others found it running or, having waited for nothing, already done.
    assert_eq!(seen.iter().filter(|s| *s == "ok").count(), 1, "{seen:?}");
    assert!(
        seen.iter()
            .all(|s| ["ok", "already_running", "not_due"].contains(&s.as_str())),
        "{seen:?}"
    );
    assert_eq!(points_of(&a, "docs"), 1);
}

#[test]
fn jobs_are_added_listed_run_and_removed() {
    let a = Agent::registered();
    let src = small_source(&a);
    a.ok(&[
        "job",
        "add",
        "docs",
        "--path",
        &src,
        "--exclude",
        "*.bin",
        "--at",
        "21:30,07:00",
        "--days",
        "sun,wed",
        "--keep-last",
        "5",
        "--keep-hourly",
        "24",
        "--keep-daily",
        "7",
    ]);
    a.ok(&["job", "add", "other", "--path", &src, "--at", "12:00"]);
    // Names are unique; schedules and names are checked before anything is saved (a value
    // that does not parse is a usage error).
    let dup = a.run(&["job", "add", "docs", "--path", &src, "--at", "12:00"]);
    assert_eq!(code(&dup), 1, "duplicate accepted:\n{}", text(&dup));
    for bad in [
        &["job", "add", "x", "--path", &src, "--at", "25:00"][..],
        &[
            "job", "add", "y", "--path", &src, "--at", "12:00", "--days", "someday",
        ][..],
        &["job", "add", "a/b", "--path", &src, "--at", "12:00"][..],
    ] {
        let out = a.run(bad);
        assert_eq!(code(&out), 2, "{bad:?} accepted:\n{}", text(&out));
    }
    let out = a.run(&[
        "job",
        "add",
        "z",
        "--path",
        &src,
        "--at",
        "12:00",
        "--keep-last",
        "0",
    ]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    // forget shares the options: a 0 is refused before the vault is opened.
    let out = a.run(&["forget", "--keep-last", "3", "--keep-daily", "0"]);
    assert_eq!(code(&out), 2, "{}", text(&out));

    let (c, list) = a.json(&["job", "list"]);
    assert_eq!(c, 0);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    let docs = &list[0];
    assert_eq!(docs["name"], "docs");
    assert_eq!(docs["at"], serde_json::json!(["07:00", "21:30"]));
    assert_eq!(docs["days"], "wed,sun");
    assert_eq!(docs["excludes"], serde_json::json!(["*.bin"]));
    assert_eq!(docs["keep_last"], 5);
    assert_eq!(docs["keep_hourly"], 24);
    assert_eq!(docs["keep_daily"], 7);
    // Rules not given are left out, not listed as null.
    for unset in ["keep_weekly", "keep_monthly", "keep_yearly"] {
        assert!(docs.get(unset).is_none(), "{unset} in {docs}");
    }
    assert_eq!(docs["paths"], serde_json::json!([src]));
    assert!(docs["last_success"].is_null());
    assert!(docs["next_run"].is_string());
    let human = a.ok(&["job", "list"]);
    assert!(human.contains("hourly 24"), "{human}");

    // Named jobs run now, whatever their schedule; only those.
    let (c, v) = a.json(&["run", "docs"]);
    assert_eq!(c, 0, "{v}");
    assert_eq!(statuses(v["jobs"].as_array().unwrap()), one("docs", "ok"));
    let rep = &v["jobs"][0]["report"];
    let bins = walk_count(&a.p("src"), "bin");
    let all = walk_count(&a.p("src"), "");
    assert_eq!(
        rep["files_new"].as_u64().unwrap() as usize,
        all - bins,
        "excludes applied: {rep}"
    );
    assert_eq!(points_of(&a, "docs"), 1);
    assert_eq!(points_of(&a, "other"), 0);
    // No name: every job.
    let (c, v) = a.json(&["run"]);
    assert_eq!(c, 0, "{v}");
    assert_eq!(v["jobs"].as_array().unwrap().len(), 2);
    let (_, list) = a.json(&["job", "list"]);
    assert!(list[0]["last_success"].is_string(), "{list}");

    let out = a.run(&["run", "nope"]);
    assert_eq!(code(&out), 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no job named \"nope\""));

    a.ok(&["job", "remove", "docs"]);
    let (_, list) = a.json(&["job", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(code(&a.run(&["job", "remove", "docs"])), 1);
    assert_eq!(code(&a.run(&["run", "docs"])), 1);
    // Its recovery points stay.
    assert_eq!(points_of(&a, "docs"), 2);
}

/// Files under `root` whose name ends with `ext` (all files for "").
fn walk_count(root: &std::path::Path, ext: &str) -> usize {
    let mut n = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(ext) {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn schedule_prints_units_that_call_run_due() {
    let a = Agent::registered();
    let src = small_source(&a);
    a.ok(&["job", "add", "docs", "--path", &src, "--at", "09:07"]);
    let bin = env!("CARGO_BIN_EXE_rbackup");
    let cfg = a.config();
    let units = a.ok(&["schedule", "--systemd"]);
    let exec = format!("ExecStart={bin} --config {} run --due", cfg.display());
    assert!(units.contains(&exec), "{units}");
    assert!(
        units.contains("OnCalendar=*-*-* *:00,07,15,30,45:00"),
        "{units}"
    );
    assert!(units.contains("Persistent=true"), "{units}");
    assert!(units.contains("enable --now rbackup.timer"), "{units}");
    let (c, v) = a.json(&["schedule", "--systemd"]);
    assert_eq!(c, 0);
    assert!(v["timer"].as_str().unwrap().contains("[Timer]"));
    assert!(v["service"].as_str().unwrap().contains(&exec));

    let (c, v) = a.json(&["schedule", "--cron"]);
    assert_eq!(c, 0);
    let line = v["crontab"].as_str().unwrap();
    assert!(line.starts_with("0,7,15,30,45 * * * * "), "{line}");
    assert!(
        line.ends_with(&format!("{bin} --config {} -q run --due", cfg.display())),
        "{line}"
    );
    // The state dir the tests use is carried into the timer's environment.
    assert!(line.contains("XDG_STATE_HOME="), "{line}");

    assert_eq!(code(&a.run(&["schedule"])), 2);
    assert_eq!(code(&a.run(&["schedule", "--systemd", "--cron"])), 2);
}

#[test]
fn retention_is_applied_after_a_scheduled_run() {
    let a = Agent::registered();
    let src = small_source(&a);
    a.ok(&[
        "job",
        "add",
        "kept",
        "--path",
        &src,
        "--at",
        "03:00",
        "--keep-last",
        "2",
    ]);
    // Another source outside the job: its recovery point is not the job's to forget.
    let other = a.p("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("x.txt"), b"x").unwrap();
    a.backup(&other);
    for i in 0..4 {
        std::fs::write(
            std::path::Path::new(&src).join("counter.txt"),
            i.to_string(),
        )
        .unwrap();
        let (c, v) = a.json(&["run", "kept"]);
        assert_eq!(c, 0, "{v}");
    }
    let (_, rps) = a.json(&["recovery-points"]);
    let rps = rps.as_array().unwrap();
    let of_job = rps.iter().filter(|r| r["job"] == "kept").count();
    assert_eq!(of_job, 2, "keep-last 2 applied after the run: {rps:?}");
    assert_eq!(rps.len(), 3, "the other recovery point is untouched");
    let (c, chk) = a.json(&["check", "--read-data"]);
    assert_eq!(c, 0, "{chk}");
    let target = a.p("out");
    a.restore_latest(&target);
    assert_eq!(
        std::fs::read_to_string(
            target
                .join(std::path::Path::new(&src).strip_prefix("/").unwrap())
                .join("counter.txt")
        )
        .unwrap(),
        "3"
    );
}
