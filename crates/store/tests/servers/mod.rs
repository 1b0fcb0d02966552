//! Real cloud-storage servers for tests: Azurite (Azure Blob) and moto (S3), each started on a
//! free 127.0.0.1 port for one test and killed when the handle is dropped.
//!
//! Install (what `cargo xtask ci` runs):
//!
//! - Azurite: `npm install -g azurite@3.35.0` (binary `azurite-blob`)
//! - moto: `pip install 'moto[server]'` (binary `moto_server`)
//!
//! A missing binary makes [`Azurite::start`] / [`Moto::start`] skip the test through
//! `rbackup_testenv::skip` and return `None` — or fail it under `RBACKUP_REQUIRE_ALL=1`, which
//! CI sets. A started server records `RAN <test> (<server>)` when the test ends without a panic.
//!
//! Buckets and containers are made with one raw HTTP request each, using only std and the
//! dev-dependencies `ring` (HMAC-SHA256) and `base64`: moto accepts an unsigned
//! `PUT /bucket`, and Azurite wants a SharedKey-signed `PUT /account/container?restype=container`
//! (object_store cannot create either). Other crates' tests include this one directory with
//! `#[path = ".../crates/store/tests/servers/mod.rs"]` rather than a copy (the engine's and the
//! end-to-end cloud tests do); such a crate needs those two dev-dependencies plus `tempfile` and `rbackup-testenv`.

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod moto_iam;
pub mod proxy;
pub mod sas;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rbackup_store::StoreOptions;

/// Azurite's well-known development account and key.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// The key of [`AZURITE_ACCOUNT`].
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// How long a server may take to open its port (moto imports a lot of Python).
const STARTUP: Duration = Duration::from_secs(60);

/// A running server process, killed on drop.
#[derive(Debug)]
pub struct Server {
    name: &'static str,
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    _ran: rbackup_testenv::Ran,
}

impl Server {
    /// Starts `binary args...` (where `{port}` and `{dir}` in an argument are replaced) and
    /// waits until the port accepts connections. None (after printing SKIP) if the binary is
    /// not installed and servers are not required.
    fn start(
        test: &str,
        name: &'static str,
        binary: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Option<Server> {
        let Some(path) = rbackup_testenv::which(binary) else {
            let install = match name {
                "Azurite" => "npm install -g azurite@3.35.0",
                _ => "pip install 'moto[server]'",
            };
            rbackup_testenv::skip(test, &format!("{name} (`{binary}` on PATH)"), install);
            return None;
        };
        let dir = tempfile::tempdir().expect("temporary directory for the server");
        let port = free_port();
        let dir_text = dir.path().display().to_string();
        let args: Vec<String> = args
            .iter()
            .map(|a| {
                a.replace("{port}", &port.to_string())
                    .replace("{dir}", &dir_text)
            })
            .collect();
        let log = std::fs::File::create(dir.path().join("server.log")).expect("server log");
        let child = Command::new(&path)
            .args(&args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("server log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
        let mut server = Server {
            name,
            child,
            port,
            dir,
            _ran: rbackup_testenv::ran(test, name),
        };
        server.wait_for_port();
        Some(server)
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn wait_for_port(&mut self) {
        let deadline = Instant::now() + STARTUP;
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before opening port {}; its output:\n{}",
                    self.name,
                    self.port,
                    self.log()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "{} did not open port {} within {STARTUP:?}; its output:\n{}",
                    self.name,
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Azurite's blob service.
#[derive(Debug)]
pub struct Azurite {
    server: Server,
}

impl Azurite {
    /// Starts Azurite for the test named `test` (see the module documentation for SKIP).
    pub fn start(test: &str) -> Option<Azurite> {
        let args = [
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            "{port}",
            "--location",
            "{dir}",
            "--silent",
            "--skipApiVersionCheck",
            "--disableTelemetry",
        ];
        let server = Server::start(test, "Azurite", "azurite-blob", &args, &[])?;
        Some(Azurite { server })
    }

    /// The account endpoint, `http://127.0.0.1:PORT/devstoreaccount1`.
    pub fn endpoint(&self) -> String {
        format!("{}/{AZURITE_ACCOUNT}", self.server.base_url())
    }

    /// Options that point an `az://` vault at this server with the development account,
    /// ignoring the process environment.
    pub fn options(&self) -> StoreOptions {
        self.options_with_key(AZURITE_KEY)
    }

    /// Like [`Azurite::options`], with another account key (to test refused credentials).
    pub fn options_with_key(&self, key: &str) -> StoreOptions {
        StoreOptions::default()
            .with_env(false)
            .with_cloud_config("azure_storage_account_name", AZURITE_ACCOUNT)
            .with_cloud_config("azure_storage_account_key", key)
            .with_cloud_config("azure_storage_endpoint", self.endpoint())
    }

    /// Creates a container with a SharedKey-signed Create Container request.
    pub fn create_container(&self, name: &str) {
        let date = http_date(SystemTime::now());
        let version = "2021-12-02";
        let string_to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n\
             /{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{name}\nrestype:container"
        );
        let key = BASE64
            .decode(AZURITE_KEY)
            .expect("the well-known key is base64");
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
        let signature = BASE64.encode(ring::hmac::sign(&key, string_to_sign.as_bytes()));
        let head = format!(
            "PUT /{AZURITE_ACCOUNT}/{name}?restype=container HTTP/1.1\r\n\
             Host: 127.0.0.1:{port}\r\nx-ms-date: {date}\r\nx-ms-version: {version}\r\n\
             Authorization: SharedKey {AZURITE_ACCOUNT}:{signature}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n",
            port = self.server.port
        );
        let status = raw_request(self.server.port, &head, b"");
        assert!(
            status.starts_with("HTTP/1.1 201"),
            "Azurite refused to create container {name}: {status}"
        );
    }
}

/// moto's S3 server.
#[derive(Debug)]
pub struct Moto {
    server: Server,
}

impl Moto {
    /// Starts moto for the test named `test` (see the module documentation for SKIP). It
    /// accepts any credentials.
    pub fn start(test: &str) -> Option<Moto> {
        Self::start_with(test, &[])
    }

    /// Starts moto with authentication enforced (`INITIAL_NO_AUTH_ACTION_COUNT=0`): requests
    /// signed with an unknown access key get 403 `InvalidAccessKeyId`. Buckets cannot be made
    /// on this one.
    pub fn start_enforcing_auth(test: &str) -> Option<Moto> {
        Self::start_with(test, &[("INITIAL_NO_AUTH_ACTION_COUNT", "0")])
    }

    fn start_with(test: &str, env: &[(&str, &str)]) -> Option<Moto> {
        let args = ["-H", "127.0.0.1", "-p", "{port}"];
        let server = Server::start(test, "moto", "moto_server", &args, env)?;
        Some(Moto { server })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        self.server.base_url()
    }

    /// Options that point an `s3://` vault at this server, ignoring the process environment.
    pub fn options(&self) -> StoreOptions {
        StoreOptions::default()
            .with_env(false)
            .with_cloud_config("aws_endpoint", self.endpoint())
            .with_cloud_config("aws_region", "us-east-1")
            .with_cloud_config("aws_access_key_id", "rbackup-test")
            .with_cloud_config("aws_secret_access_key", "rbackup-test-secret")
    }

    /// Creates a bucket (moto accepts an unsigned CreateBucket).
    pub fn create_bucket(&self, name: &str) {
        let head = format!(
            "PUT /{name} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n",
            port = self.server.port
        );
        let status = raw_request(self.server.port, &head, b"");
        assert!(
            status.starts_with("HTTP/1.1 200"),
            "moto refused to create bucket {name}: {status}"
        );
    }
}

/// A 127.0.0.1 port nobody listens on (now): bound, then released. The window before the
/// server binds it is tiny, and a clash fails loudly at startup.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// Sends one request (its head, then `body`) and returns the whole response: status line,
/// headers and body. The head must say `Connection: close`.
fn raw_request(port: u16, head: &str, body: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the server");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    stream.write_all(head.as_bytes()).expect("send request");
    stream.write_all(body).expect("send request body");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

pub use rbackup_testenv::http::{http_date, percent_encode};
