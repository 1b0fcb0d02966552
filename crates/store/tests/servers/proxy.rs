//! A tiny forwarding HTTP proxy on 127.0.0.1 that counts the requests it forwards and checks
//! their `Proxy-Authorization`, to show that a store's traffic really goes through the proxy.
//!
//! Plain-HTTP forwarding only (the test servers speak HTTP): the client sends
//! `GET http://127.0.0.1:PORT/path HTTP/1.1`; the proxy rewrites that to origin form, asks the
//! server to close the connection after answering (so every request arrives on a fresh
//! connection and is counted), and pipes bytes both ways. Targets other than 127.0.0.1 are
//! refused: tests send traffic to this machine only.
//!
//! It also logs, with the time it arrived, every chunk of request body it forwards, so that a
//! test can see how fast uploads really went out.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

/// The proxy; it stops accepting when dropped (the listener thread ends with the process).
#[derive(Debug)]
pub struct CountingProxy {
    port: u16,
    state: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    forwarded: AtomicUsize,
    refused: AtomicUsize,
    /// The `Proxy-Authorization` header of each request, as received (None if absent).
    auth_seen: Mutex<Vec<Option<String>>>,
    /// Each chunk of request body (and whatever else the client sent after the head) as it
    /// arrived: when, and how many bytes.
    uploaded: Mutex<Vec<(Instant, usize)>>,
}

impl CountingProxy {
    /// Starts a proxy that accepts only `user:password` (Basic), answering 407 otherwise.
    pub fn start(user: &str, password: &str) -> CountingProxy {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind proxy port");
        let port = listener.local_addr().expect("proxy address").port();
        let expected = format!("Basic {}", BASE64.encode(format!("{user}:{password}")));
        let state = Arc::new(State::default());
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let state = Arc::clone(&shared);
                let expected = expected.clone();
                std::thread::spawn(move || {
                    let _ = handle(client, &state, &expected);
                });
            }
        });
        CountingProxy { port, state }
    }

    /// `http://user:password@127.0.0.1:PORT`, the form a proxy setting takes.
    pub fn url(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@127.0.0.1:{}", self.port)
    }

    /// Requests forwarded to the server.
    pub fn forwarded(&self) -> usize {
        self.state.forwarded.load(Ordering::SeqCst)
    }

    /// Requests answered with 407 (wrong or missing credentials).
    pub fn refused(&self) -> usize {
        self.state.refused.load(Ordering::SeqCst)
    }

    /// Every chunk of request body forwarded so far, with its arrival time, in order.
    pub fn uploaded(&self) -> Vec<(Instant, usize)> {
        let mut log = self
            .state
            .uploaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        // Connections log from their own threads; order by time.
        log.sort_by_key(|&(at, _)| at);
        log
    }

    /// Every `Proxy-Authorization` header received, in order.
    pub fn auth_seen(&self) -> Vec<Option<String>> {
        self.state
            .auth_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn handle(client: TcpStream, state: &Arc<State>, expected: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut headers = Vec::new();
    let mut auth = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("proxy-authorization:") {
            let start = line.len() - value.len();
            auth = Some(line[start..].trim().to_string());
        } else if !lower.starts_with("connection:") {
            headers.push(line);
        }
    }
    state
        .auth_seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(auth.clone());
    let mut client_out = client;
    if auth.as_deref() != Some(expected) {
        state.refused.fetch_add(1, Ordering::SeqCst);
        return client_out.write_all(
            b"HTTP/1.1 407 Proxy Authentication Required\r\n\
              Proxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\
              Connection: close\r\n\r\n",
        );
    }
    let mut parts = request_line.split_whitespace();
    let (method, target, version) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or("HTTP/1.1"),
    );
    let rest = target
        .strip_prefix("http://127.0.0.1:")
        .ok_or_else(|| std::io::Error::other(format!("refusing non-local target {target:?}")))?;
    let (port, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut server = TcpStream::connect(("127.0.0.1", port.parse().unwrap_or(0)))?;
    let mut head = format!("{method} {path} {version}\r\n");
    headers.iter().for_each(|h| head.push_str(h));
    head.push_str("Connection: close\r\n\r\n");
    server.write_all(head.as_bytes())?;
    state.forwarded.fetch_add(1, Ordering::SeqCst);
    // Body (and anything after) to the server; the response back to the client.
    let mut server_in = server.try_clone()?;
    let log = Arc::clone(state);
    let upload = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = reader.read(&mut buf) {
            let at = Instant::now();
            if server_in.write_all(&buf[..n]).is_err() {
                break;
            }
            log.uploaded
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((at, n));
        }
    });
    let _ = std::io::copy(&mut server, &mut client_out);
    let _ = client_out.shutdown(std::net::Shutdown::Both);
    let _ = server.shutdown(std::net::Shutdown::Both);
    let _ = upload.join();
    Ok(())
}
