//! moto with IAM enforcement on and two users, for the append-only tests: an admin allowed
//! everything, and a machine under the documented machine policy
//! (docs/append-only/s3-machine-policy.json, loaded here as it is, so the documented policy is
//! the tested one).
//!
//! Setup uses moto's own switch: it starts with authentication off, the users, their keys, the
//! bucket and its versioning are made with plain unsigned requests, and then
//! `POST /moto-api/reset-auth 0` turns enforcement on. From then on every request must be
//! signed with one of the two keys and is checked against its user's policy. The same switch
//! serves [`Moto::object_versions`], which stands in for the admin's console.
//!
//! moto 5.2 (werkzeug 3) rebuilds the request URL with `%2F` decoded before it checks a SigV4
//! signature, so every signed request whose query holds an encoded `/` (object_store's
//! listings, `delimiter=%2F`) fails with `SignatureDoesNotMatch` although it is right. This
//! server is therefore started through a three-line Python launcher that keeps the URL as it
//! was sent ([`LAUNCHER`]); policies and signatures are checked by moto's own code.
//!
//! What moto enforces (measured by the tests, see docs/append-only/README.md): actions and
//! resources of user policies, yes; IAM conditions on S3 requests, no (moto passes no request
//! values such as `s3:if-none-match` to the policy check), so a create-only condition cannot
//! be tested here and bucket versioning is what keeps an overwrite from destroying data.

use super::{Moto, Server, percent_encode, raw_request};
use rbackup_store::StoreOptions;

/// The documented machine policy, with `VAULT-BUCKET` for the bucket name.
pub const MACHINE_POLICY: &str =
    include_str!("../../../../docs/append-only/s3-machine-policy.json");

/// Runs moto's server on 127.0.0.1, port `argv[1]`, with werkzeug's URL decoding (see the
/// module documentation) turned off for the URL moto checks signatures against.
const LAUNCHER: &str = "import sys
import werkzeug.sansio.utils as u
u.uri_to_iri = lambda uri: uri
from moto.server import main
main(['-H', '127.0.0.1', '-p', sys.argv[1]])";

/// A policy that allows everything: the admin's.
const ADMIN_POLICY: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;

/// An access key of an IAM user.
#[derive(Debug, Clone)]
pub struct AwsKey {
    /// `AWS_ACCESS_KEY_ID`.
    pub id: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret: String,
}

/// The two users of [`Moto::start_with_users`].
#[derive(Debug, Clone)]
pub struct S3Users {
    /// Allowed everything.
    pub admin: AwsKey,
    /// Under [`MACHINE_POLICY`].
    pub machine: AwsKey,
}

impl Moto {
    /// Starts moto, makes the versioned bucket `bucket`, an admin user and a machine user under
    /// [`MACHINE_POLICY`] (for `bucket`), then turns IAM enforcement on. None when moto is not
    /// installed and servers are not required (see the module documentation of `servers`).
    pub fn start_with_users(test: &str, bucket: &str) -> Option<(Moto, S3Users)> {
        // The launcher needs moto importable by python3, which is how CI installs it
        // (xtask's ensure_pip); `moto_server` on PATH is the same test as `Moto::start`'s.
        if rbackup_testenv::which("moto_server").is_none() {
            let what = "moto (`moto_server` on PATH, importable by python3)";
            rbackup_testenv::skip(test, what, "pip install 'moto[server]'");
            return None;
        }
        let args = ["-c", LAUNCHER, "{port}"];
        let server = Server::start(test, "moto", "python3", &args, &[])?;
        let moto = Moto { server };
        let admin = moto.iam_user("admin", ADMIN_POLICY);
        let machine = moto.iam_user("machine", &MACHINE_POLICY.replace("VAULT-BUCKET", bucket));
        moto.create_bucket(bucket);
        let versioning = r#"<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Status>Enabled</Status></VersioningConfiguration>"#;
        let answer = moto.unsigned("PUT", &format!("/{bucket}?versioning"), "", versioning);
        assert!(answer.starts_with("HTTP/1.1 200"), "versioning: {answer}");
        moto.set_auth(true);
        Some((moto, S3Users { admin, machine }))
    }

    /// Options that point an `s3://` vault at this server with `key`.
    pub fn options_as(&self, key: &AwsKey) -> StoreOptions {
        StoreOptions::default()
            .with_env(false)
            .with_cloud_config("aws_endpoint", self.endpoint())
            .with_cloud_config("aws_region", "us-east-1")
            .with_cloud_config("aws_access_key_id", &key.id)
            .with_cloud_config("aws_secret_access_key", &key.secret)
    }

    /// Every stored version of `bucket/key`, newest first, as the admin's console would show
    /// them (read with enforcement briefly off; nothing else runs against this server then).
    /// The objects must be UTF-8 text: the raw client reads responses as text.
    pub fn object_versions(&self, bucket: &str, key: &str) -> Vec<Vec<u8>> {
        self.set_auth(false);
        // Unsigned but with a credential scope: moto refuses anonymous reads of the objects.
        let scope = setup_scope("s3");
        let listing = self.unsigned(
            "GET",
            &format!("/{bucket}?versions&prefix={key}"),
            &scope,
            "",
        );
        let ids: Vec<String> = listing
            .split("<Version>")
            .skip(1)
            .filter(|entry| entry.contains(&format!("<Key>{key}</Key>")))
            .filter_map(|entry| between(entry, "<VersionId>", "</VersionId>"))
            .map(str::to_string)
            .collect();
        let versions = ids
            .iter()
            .map(|id| {
                let target = format!("/{bucket}/{key}?versionId={id}");
                let answer = self.unsigned("GET", &target, &scope, "");
                assert!(answer.starts_with("HTTP/1.1 200"), "{target}: {answer}");
                let (_, body) = answer.split_once("\r\n\r\n").expect("a response body");
                body.as_bytes().to_vec()
            })
            .collect();
        self.set_auth(true);
        versions
    }

    /// Creates IAM user `name` with the inline policy `policy` and returns a new access key.
    fn iam_user(&self, name: &str, policy: &str) -> AwsKey {
        self.iam(&[("Action", "CreateUser"), ("UserName", name)]);
        self.iam(&[
            ("Action", "PutUserPolicy"),
            ("UserName", name),
            ("PolicyName", "rbackup"),
            ("PolicyDocument", policy),
        ]);
        let answer = self.iam(&[("Action", "CreateAccessKey"), ("UserName", name)]);
        let field = |tag: &str| {
            between(&answer, &format!("<{tag}>"), &format!("</{tag}>"))
                .unwrap_or_else(|| panic!("no {tag} in {answer}"))
                .to_string()
        };
        AwsKey {
            id: field("AccessKeyId"),
            secret: field("SecretAccessKey"),
        }
    }

    /// One IAM query-API call while enforcement is off; returns the response, which must be 200.
    fn iam(&self, params: &[(&str, &str)]) -> String {
        let mut body = String::from("Version=2010-05-08");
        for (name, value) in params {
            body.push_str(&format!("&{name}={}", percent_encode(value)));
        }
        let headers = format!(
            "{}Content-Type: application/x-www-form-urlencoded\r\n",
            setup_scope("iam")
        );
        let answer = self.unsigned("POST", "/", &headers, &body);
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "IAM {params:?}: {answer}"
        );
        answer
    }

    /// Turns moto's signature and policy checks on or off.
    fn set_auth(&self, on: bool) {
        let count = if on { "0" } else { "inf" };
        let answer = self.unsigned("POST", "/moto-api/reset-auth", "", count);
        assert!(answer.starts_with("HTTP/1.1 200"), "reset-auth: {answer}");
    }

    /// An unsigned request with `extra` header lines (each ending in CRLF) and `body`.
    fn unsigned(&self, method: &str, target: &str, extra: &str, body: &str) -> String {
        let head = format!(
            "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len(),
            port = self.server.port
        );
        raw_request(self.server.port, &head, body.as_bytes())
    }
}

/// An `Authorization` header line naming `service` in its credential scope, for requests
/// while enforcement is off: moto picks the service from it and checks no signature.
fn setup_scope(service: &str) -> String {
    format!(
        "Authorization: AWS4-HMAC-SHA256 Credential=SETUP/20260101/us-east-1/{service}/\
         aws4_request, SignedHeaders=host, Signature=0\r\n"
    )
}

/// The text between the first `start` and the next `end` in `text`.
fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}
