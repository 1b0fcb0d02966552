//! Vault URL parsing: accepted forms, canonical strings, and refusals with their reasons.

use std::path::PathBuf;

use rbackup_store::{StoreError, StoreOptions, VaultUrl, open};

fn local(p: &str) -> VaultUrl {
    VaultUrl::Local(PathBuf::from(p))
}

fn s3(bucket: &str, prefix: &str) -> VaultUrl {
    VaultUrl::S3 {
        bucket: bucket.into(),
        prefix: prefix.into(),
    }
}

#[test]
fn good_urls_parse_to_values_and_canonical_strings() {
    let table: Vec<(&str, VaultUrl, &str)> = vec![
        (
            "file:///srv/vault",
            local("/srv/vault"),
            "file:///srv/vault",
        ),
        (
            "file:///srv/vault/",
            local("/srv/vault"),
            "file:///srv/vault",
        ),
        ("FILE:///srv//a/./b", local("/srv/a/b"), "file:///srv/a/b"),
        ("file://localhost/srv/v", local("/srv/v"), "file:///srv/v"),
        (
            "file:///srv/my%20vault",
            local("/srv/my vault"),
            "file:///srv/my%20vault",
        ),
        ("file:///srv/a%23b", local("/srv/a#b"), "file:///srv/a%23b"),
        ("/srv/vault", local("/srv/vault"), "file:///srv/vault"),
        (
            "/srv/my vault/",
            local("/srv/my vault"),
            "file:///srv/my%20vault",
        ),
        ("/", local("/"), "file:///"),
        ("memory://", VaultUrl::Memory(String::new()), "memory://"),
        (
            "memory://tests-1",
            VaultUrl::Memory("tests-1".into()),
            "memory://tests-1",
        ),
        ("s3://bucket", s3("bucket", ""), "s3://bucket"),
        ("s3://bucket/", s3("bucket", ""), "s3://bucket"),
        (
            "s3://my.bucket-1/a/b/",
            s3("my.bucket-1", "a/b"),
            "s3://my.bucket-1/a/b",
        ),
        (
            "az://container/pre",
            VaultUrl::Azure {
                container: "container".into(),
                prefix: "pre".into(),
            },
            "az://container/pre",
        ),
        (
            "gs://bkt/x/y",
            VaultUrl::Gcs {
                bucket: "bkt".into(),
                prefix: "x/y".into(),
            },
            "gs://bkt/x/y",
        ),
    ];
    for (input, want, canonical) in table {
        let got = VaultUrl::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(got, want, "{input}");
        assert_eq!(got.to_url_string(), canonical, "{input}");
        assert_eq!(got.to_string(), canonical, "Display of {input}");
        let again = VaultUrl::parse(canonical).unwrap();
        assert_eq!(again, got, "canonical form {canonical} must parse back");
    }
}

#[test]
fn relative_paths_are_made_absolute_against_the_current_dir() {
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(
        VaultUrl::parse("vault").unwrap(),
        VaultUrl::Local(cwd.join("vault"))
    );
    assert_eq!(
        VaultUrl::parse("./backups/v/").unwrap(),
        VaultUrl::Local(cwd.join("backups/v"))
    );
    // "://" after a '/' is part of a path, not a scheme.
    assert_eq!(
        VaultUrl::parse("dir/x://y").unwrap(),
        VaultUrl::Local(cwd.join("dir/x:/y"))
    );
}

#[test]
fn non_utf8_and_odd_paths_round_trip() {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;
    let odd = VaultUrl::Local(PathBuf::from(OsString::from_vec(
        b"/srv/\xff%?#\xc3\xa9 x".to_vec(),
    )));
    let text = odd.to_url_string();
    assert!(text.is_ascii(), "{text}");
    assert_eq!(VaultUrl::parse(&text).unwrap(), odd);
}

#[test]
fn bad_urls_are_refused_with_a_reason() {
    let table = [
        ("", "empty"),
        ("file://", "absolute path"),
        ("file://srv/vault", "three slashes"),
        ("file://host/srv", "three slashes"),
        ("file:///srv/%zz", "hexadecimal"),
        ("file:///srv/%00", "NUL"),
        ("file:/srv/vault", "'://'"),
        ("s3:bucket", "'://'"),
        ("ftp://host/x", "unknown scheme"),
        ("http://host/x", "unknown scheme"),
        ("~/vault", "'~'"),
        ("memory://a/b", "memory://"),
        ("s3://", "missing"),
        ("s3:///prefix", "missing"),
        ("s3://Bucket/x", "lowercase"),
        ("s3://-bucket", "lowercase"),
        ("s3://key:secret@bucket/x", "credentials"),
        ("s3://bucket/x?region=eu", "query"),
        ("az://container/a//b", "prefix"),
        ("gs://bucket/../x", "prefix"),
        ("gs://bucket/.tmp-x", "prefix"),
    ];
    for (input, reason_part) in table {
        match VaultUrl::parse(input) {
            Err(StoreError::InvalidUrl { url, reason }) => {
                assert_eq!(url, input);
                assert!(
                    reason.contains(reason_part),
                    "{input:?}: reason {reason:?} lacks {reason_part:?}"
                );
            }
            other => panic!("{input:?}: expected InvalidUrl, got {other:?}"),
        }
    }
}

#[test]
fn invalid_url_message_lists_accepted_forms_and_hides_no_input() {
    let err = VaultUrl::parse("ftp://x").unwrap_err().to_string();
    for form in [
        "file:///abs/path",
        "memory://",
        "s3://bucket/prefix",
        "az://container/prefix",
        "gs://bucket/prefix",
        "ftp://x",
    ] {
        assert!(err.contains(form), "{err} lacks {form}");
    }
}

#[test]
fn cloud_urls_open_without_io_and_describe_their_endpoint() {
    let quiet = || StoreOptions::default().with_env(false);
    let table = [
        (
            "s3://bucket/p",
            quiet().with_cloud_config("aws_region", "eu-west-3"),
            "s3://bucket/p at https://s3.eu-west-3.amazonaws.com",
        ),
        (
            "S3://bucket/p/",
            quiet().with_cloud_config("AWS_ENDPOINT", "http://u:pw@127.0.0.1:9000"),
            "s3://bucket/p at http://127.0.0.1:9000",
        ),
        (
            "az://container/p",
            quiet().with_cloud_config("azure_storage_account_name", "acct"),
            "az://container/p at https://acct.blob.core.windows.net",
        ),
        (
            "gs://bucket",
            quiet().with_cloud_config("google_bearer_token", "t"),
            "gs://bucket at https://storage.googleapis.com",
        ),
    ];
    for (url, options, described) in table {
        let store = open(url, &options).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(store.describe(), described, "{url}");
    }
    let err = open("ftp://x", &StoreOptions::default()).unwrap_err();
    assert!(matches!(err, StoreError::InvalidUrl { .. }), "{err:?}");
}

#[test]
fn azure_without_an_account_says_which_setting_is_missing() {
    let options = StoreOptions::default().with_env(false);
    match open("az://container/p", &options) {
        Err(StoreError::Config { url, reason }) => {
            assert_eq!(url, "az://container/p");
            assert!(reason.contains("AZURE_STORAGE_ACCOUNT_NAME"), "{reason}");
        }
        other => panic!("expected Config, got {other:?}"),
    }
}

#[test]
fn the_proxy_option_reaches_the_cloud_client() {
    // object_store hands the proxy URL to reqwest when the client is built, so a malformed
    // one is refused by open(); a well-formed one with credentials is accepted.
    let options = |proxy: &str| {
        StoreOptions::default()
            .with_env(false)
            .with_cloud_config("aws_region", "us-east-1")
            .with_proxy(proxy)
    };
    assert!(
        open(
            "s3://bucket/p",
            &options("http://user:p%40ss@127.0.0.1:3128")
        )
        .is_ok()
    );
    match open("s3://bucket/p", &options("http://[not-a-host")) {
        Err(StoreError::Config { reason, .. }) => assert!(!reason.is_empty()),
        other => panic!("expected Config for a malformed proxy URL, got {other:?}"),
    }
}

#[test]
fn proxy_option_is_accepted_and_ignored_by_local_stores() {
    let options = StoreOptions::default().with_proxy("http://127.0.0.1:3128");
    assert_eq!(options.proxy.as_deref(), Some("http://127.0.0.1:3128"));
    let store = open("/srv/not-created-by-open", &options).unwrap();
    assert_eq!(store.describe(), "file:///srv/not-created-by-open");
    assert!(!std::path::Path::new("/srv/not-created-by-open").exists());
}
