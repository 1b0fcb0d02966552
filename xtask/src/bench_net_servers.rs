//! The network bench's servers: moto (S3) and Azurite (Azure Blob) started inside the emulated
//! link's namespace, so that every request to them crosses the link. Also the two raw HTTP
//! requests the bench makes itself: creating the bucket and the container (no tool under test
//! can), and listing what a tool stored, for the vault size.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use rbackup_testenv::http::{http_date, percent_encode as encode};

use crate::netem::Link;

/// Azurite's well-known development account and key.
const AZ_ACCOUNT: &str = "devstoreaccount1";
const AZ_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// moto accepts any credentials; these are what the tools are given.
const S3_KEY_ID: &str = "rbackup-bench";
const S3_SECRET: &str = "rbackup-bench-secret";
const S3_PORT: u16 = 5000;
const AZ_PORT: u16 = 10000;
/// The bucket and the container every tool stores into, each under its own prefix.
pub const BUCKET: &str = "bench";
/// How long a server may take to answer (moto imports a lot of Python).
const STARTUP: Duration = Duration::from_secs(90);

/// moto and Azurite running in the link's namespace; killed on drop.
#[derive(Debug)]
pub struct Servers {
    addr: Ipv4Addr,
    children: Vec<(&'static str, Child, PathBuf)>,
}

impl Servers {
    /// Starts both servers (logs and Azurite's blobs under `dir`, cleared first), waits until
    /// each answers across the link, and makes the bucket and the container.
    pub fn start(link: &Link, dir: &Path) -> Result<Servers> {
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        fs::create_dir_all(dir.join("azurite"))
            .with_context(|| format!("creating {}", dir.display()))?;
        let addr = link.config().server_addr();
        let mut servers = Servers {
            addr,
            children: Vec::new(),
        };
        let host = addr.to_string();
        let (s3, az) = (S3_PORT.to_string(), AZ_PORT.to_string());
        let location = dir.join("azurite").display().to_string();
        let moto_args = ["-H", &host, "-p", &s3];
        servers.spawn(link, "moto", "moto_server", &moto_args, dir)?;
        let az_args = [
            "--blobHost",
            &host,
            "--blobPort",
            &az,
            "--location",
            &location,
            "--silent",
            "--skipApiVersionCheck",
            "--disableTelemetry",
        ];
        servers.spawn(link, "Azurite", "azurite-blob", &az_args, dir)?;
        servers.wait_for(0, S3_PORT)?;
        servers.wait_for(1, AZ_PORT)?;
        servers.create_bucket()?;
        servers.create_container()?;
        Ok(servers)
    }

    fn spawn(
        &mut self,
        link: &Link,
        name: &'static str,
        program: &str,
        args: &[&str],
        dir: &Path,
    ) -> Result<()> {
        let log_path = dir.join(format!("{program}.log"));
        let log = fs::File::create(&log_path).context("creating a server log")?;
        let child = link
            .command_in(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("server log")?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name} in the namespace"))?;
        self.children.push((name, child, log_path));
        Ok(())
    }

    /// Waits until server `i` accepts connections on `port` (over the link).
    fn wait_for(&mut self, i: usize, port: u16) -> Result<()> {
        let deadline = Instant::now() + STARTUP;
        let to = SocketAddr::from((self.addr, port));
        let (name, child, log_path) = &mut self.children[i];
        let read_log = || fs::read_to_string(&*log_path).unwrap_or_default();
        loop {
            if TcpStream::connect_timeout(&to, Duration::from_secs(1)).is_ok() {
                return Ok(());
            }
            if let Some(status) = child.try_wait().context("polling a server")? {
                bail!(
                    "{name} exited ({status}) before opening {to}:\n{}",
                    read_log()
                );
            }
            if Instant::now() > deadline {
                bail!("{name} did not open {to} in {STARTUP:?}:\n{}", read_log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The environment that points rbackup's `s3://` vaults at moto.
    pub fn s3_env(&self) -> Vec<(String, String)> {
        let mut env = self.common_env();
        env.extend(pairs(&[
            ("AWS_ENDPOINT", &self.s3_endpoint()),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_REGION", "us-east-1"),
        ]));
        env
    }

    /// The environment that points rbackup's `az://` vaults at Azurite.
    pub fn az_env(&self) -> Vec<(String, String)> {
        let mut env = self.common_env();
        let endpoint = format!("http://{}:{AZ_PORT}/{AZ_ACCOUNT}", self.addr);
        env.extend(pairs(&[
            ("AZURE_STORAGE_ACCOUNT_NAME", AZ_ACCOUNT),
            ("AZURE_STORAGE_ACCOUNT_KEY", AZ_KEY),
            ("AZURE_STORAGE_ENDPOINT", &endpoint),
            ("AZURE_ALLOW_HTTP", "true"),
        ]));
        env
    }

    /// Credentials for S3 (restic reads the same two variables), and no proxy for the
    /// server's address, which an inherited `http_proxy` would otherwise send elsewhere.
    fn common_env(&self) -> Vec<(String, String)> {
        let addr = self.addr.to_string();
        pairs(&[
            ("AWS_ACCESS_KEY_ID", S3_KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET),
            ("NO_PROXY", &addr),
            ("no_proxy", &addr),
        ])
    }

    /// `http://10.203.0.2:5000`.
    pub fn s3_endpoint(&self) -> String {
        format!("http://{}:{S3_PORT}", self.addr)
    }

    fn create_bucket(&self) -> Result<()> {
        let head = format!("PUT /{BUCKET} HTTP/1.1\r\n{}", self.common_headers(S3_PORT));
        let (status, body) = request(self.addr, S3_PORT, &head)?;
        if status != 200 {
            bail!("moto refused to create bucket {BUCKET}: {status} {body}");
        }
        Ok(())
    }

    fn create_container(&self) -> Result<()> {
        let query = [("restype", "container")];
        let (status, body) = self.az_request("PUT", &query)?;
        if status != 201 {
            bail!("Azurite refused to create container {BUCKET}: {status} {body}");
        }
        Ok(())
    }

    /// Total bytes of the objects under `prefix/` in the bucket (ListObjectsV2, page by page).
    pub fn s3_bytes(&self, prefix: &str) -> Result<u64> {
        let (mut total, mut token) = (0, None::<String>);
        loop {
            let mut path = format!(
                "/{BUCKET}?list-type=2&prefix={}",
                encode(&format!("{prefix}/"))
            );
            if let Some(t) = &token {
                path += &format!("&continuation-token={}", encode(t));
            }
            let head = format!("GET {path} HTTP/1.1\r\n{}", self.common_headers(S3_PORT));
            let (status, body) = request(self.addr, S3_PORT, &head)?;
            if status != 200 {
                bail!("listing s3://{BUCKET}/{prefix}: {status} {body}");
            }
            total += tags(&body, "Size")
                .iter()
                .map(|s| s.parse::<u64>().unwrap_or(0))
                .sum::<u64>();
            token = tags(&body, "NextContinuationToken")
                .first()
                .map(|t| t.to_string());
            if token.is_none() {
                return Ok(total);
            }
        }
    }

    /// Total bytes of the blobs under `prefix/` in the container (List Blobs, page by page).
    pub fn az_bytes(&self, prefix: &str) -> Result<u64> {
        let (mut total, mut marker) = (0, String::new());
        let prefix = format!("{prefix}/");
        loop {
            let mut query = vec![("comp", "list"), ("prefix", prefix.as_str())];
            query.push(("restype", "container"));
            if !marker.is_empty() {
                query.insert(1, ("marker", marker.as_str()));
            }
            let (status, body) = self.az_request("GET", &query)?;
            if status != 200 {
                bail!("listing az://{BUCKET}/{prefix}: {status} {body}");
            }
            let sizes = tags(&body, "Content-Length");
            total += sizes
                .iter()
                .map(|s| s.parse::<u64>().unwrap_or(0))
                .sum::<u64>();
            marker = tags(&body, "NextMarker")
                .first()
                .map_or(String::new(), |m| m.to_string());
            if marker.is_empty() {
                return Ok(total);
            }
        }
    }

    /// A SharedKey-signed request on the container; `query` sorted by name, as the
    /// signature's canonical form wants them.
    fn az_request(&self, verb: &str, query: &[(&str, &str)]) -> Result<(u16, String)> {
        let date = http_date(SystemTime::now());
        let version = "2021-12-02";
        let mut resource = format!("/{AZ_ACCOUNT}/{AZ_ACCOUNT}/{BUCKET}");
        for (k, v) in query {
            resource += &format!("\n{k}:{v}");
        }
        let to_sign = format!(
            "{verb}\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n{resource}"
        );
        let key = BASE64
            .decode(AZ_KEY)
            .context("the well-known key is base64")?;
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
        let signature = BASE64.encode(ring::hmac::sign(&key, to_sign.as_bytes()));
        let q: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        let head = format!(
            "{verb} /{AZ_ACCOUNT}/{BUCKET}?{} HTTP/1.1\r\nx-ms-date: {date}\r\n\
             x-ms-version: {version}\r\nAuthorization: SharedKey {AZ_ACCOUNT}:{signature}\r\n{}",
            q.join("&"),
            self.common_headers(AZ_PORT)
        );
        request(self.addr, AZ_PORT, &head)
    }

    fn common_headers(&self, port: u16) -> String {
        format!(
            "Host: {}:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.addr
        )
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Sends one request (a complete head, no body) and returns the status and the body, decoded
/// when chunked.
fn request(addr: Ipv4Addr, port: u16, head: &str) -> Result<(u16, String)> {
    let to = SocketAddr::from((addr, port));
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(10))
        .with_context(|| format!("connecting to {to}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    s.write_all(head.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .with_context(|| format!("reading the answer of {to}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{to} answered without a status: {head:?}"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

/// The payload of a chunked body (sizes in hex, each chunk followed by CRLF).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = size.split(';').next().unwrap_or("").trim();
        let Ok(n) = usize::from_str_radix(size, 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out += &rest[..n];
        body = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// The texts of every `<name>...</name>` element in `xml` (enough for listing replies).
fn tags<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(&after[..j]);
        rest = &after[j + close.len()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_replies_are_read() {
        let xml = "<R><Contents><Size>10</Size></Contents><Contents><Size>32</Size>\
                   </Contents><NextContinuationToken>a/b</NextContinuationToken></R>";
        assert_eq!(tags(xml, "Size"), ["10", "32"]);
        assert_eq!(tags(xml, "NextContinuationToken"), ["a/b"]);
        assert!(tags(xml, "NextMarker").is_empty());
        assert_eq!(
            dechunk("5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n"),
            "hello world"
        );
        assert_eq!(encode("rbackup-s3/x y"), "rbackup-s3%2Fx%20y");
    }
}
