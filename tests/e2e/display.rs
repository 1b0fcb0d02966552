//! How the agent shows things to people: recovery-point times in local time to the second,
//! the exact UTC time in `--json`.

use crate::harness::*;

#[test]
fn recovery_point_times_are_local_to_the_second_and_utc_in_json() {
    let a = Agent::registered();
    let src = a.p("src");
    make_tree(&src, 8, 3, 1_000);
    a.backup(&src);
    let (_, list) = a.json(&["recovery-points"]);
    let utc = list[0]["time"].as_str().unwrap().to_string();
    // RFC 3339 in UTC with nanoseconds.
    assert!(utc.ends_with('Z') && utc.contains('.'), "{utc}");
    let t: jiff::Timestamp = utc.parse().unwrap();
    // A POSIX zone string: no time zone database needed.
    let tokyo = t.to_zoned(jiff::tz::TimeZone::posix("JST-9").unwrap());
    let want = tokyo.strftime("%Y-%m-%d %H:%M:%S").to_string();
    let out = a
        .cmd()
        .arg("recovery-points")
        .env("TZ", "JST-9")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(human.contains(&want), "want {want} in:\n{human}");
    assert!(!human.contains(&utc[..19]), "UTC shown:\n{human}");
}
