//! Usage errors exit 2, before anything is opened, naming the option and what it accepts.

use crate::harness::*;

#[test]
fn bad_values_and_missing_arguments_are_usage_errors() {
    let a = Agent::registered();
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "vault",
                "create",
                "/tmp/x",
                "--credentials-out",
                "c",
                "--valid-for",
                "soon",
            ],
            "--valid-for",
        ),
        (&["throttle", "set", "--work-rate", "fast"], "--work-rate"),
        (&["throttle", "set", "--work-hours", "9-5"], "--work-hours"),
        (
            &["throttle", "set", "--work-days", "someday"],
            "--work-days",
        ),
        (
            &["job", "add", "docs", "--path", "/tmp", "--at", "25:00"],
            "--at",
        ),
        (&["prune", "--grace", "a while"], "--grace"),
        (&["backup"], "nothing to back up"),
        (&["restore", "latest"], "--target"),
        (&["no-such-command"], "no-such-command"),
    ];
    for (args, names) in cases {
        let out = a.run(args);
        assert_eq!(code(&out), 2, "{args:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(names), "{args:?}: {err}");
        assert!(err.contains("--help"), "{args:?}: {err}");
    }
    // Nothing was changed by the refused commands.
    let show = a.ok(&["throttle", "show"]);
    assert!(!show.contains("fast"), "{show}");
    assert!(!a.ok(&["job", "list"]).contains("docs"));
}

#[test]
fn an_error_that_is_not_about_usage_exits_1_and_names_its_cause_once() {
    let a = Agent::registered();
    let missing = a.p("not-there");
    let out = a.run(&["backup", missing.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
