//! Paced uploads: request bodies that leave for the socket piece by piece, each piece paid for
//! with a [`Throttle`] first.
//!
//! object_store keeps every request body in memory and its reqwest client hands a body to hyper
//! as a few large chunks, so a throttle consulted before a request cannot shape what is on the
//! wire: the whole part would leave at line speed after the wait. The cloud clients are
//! therefore built with [`PacedConnector`]. Outside a [`scope`] it sends every request through
//! object_store's own client, unchanged. Inside one, a request with a body is sent by a second
//! reqwest client (configured from the same client options) with the body streamed in pieces
//! of at most [`Throttle::piece_size`], each released only once the throttle grants it. hyper
//! pulls the next piece only when the previous one has gone to the socket, so no more than a
//! piece or two is buffered, and nothing is copied: pieces are slices of the caller's bytes.
//!
//! The throttle travels as a tokio task-local because object_store builds the requests, and a
//! multipart upload sends its parts from spawned tasks: [`PacedUpload`] carries the scope into
//! each part's task.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use http::header::{CONTENT_LENGTH, HeaderValue};
use http_body_util::BodyExt;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpRequestBody,
    HttpResponse, HttpResponseBody, HttpService, ReqwestConnector,
};
use object_store::{ClientConfigKey, ClientOptions, MultipartUpload, PutPayload, PutResult};
use rbackup_throttle::Throttle;

tokio::task_local! {
    /// The throttle that request bodies sent from this task are paced by.
    static PACE: Throttle;
}

/// Runs `f` with every request body it sends through this module's clients paced by
/// `throttle`.
pub(super) async fn scope<F: Future>(throttle: Throttle, f: F) -> F::Output {
    PACE.scope(throttle, f).await
}

/// The throttle of the enclosing [`scope`], if any.
fn current() -> Option<Throttle> {
    PACE.try_with(Throttle::clone).ok()
}

/// `f` in the current [`scope`] (if any) wherever it is polled, for futures that will be
/// spawned.
fn carried<F: Future>(f: F) -> impl Future<Output = F::Output> {
    let throttle = current();
    async move {
        match throttle {
            Some(t) => PACE.scope(t, f).await,
            None => f.await,
        }
    }
}

/// A multipart upload whose parts, completion and abort run in the [`scope`] the upload was
/// wrapped in, even though `WriteMultipart` sends the parts from tasks of their own.
#[derive(Debug)]
pub(super) struct PacedUpload(pub(super) Box<dyn MultipartUpload>);

#[async_trait]
impl MultipartUpload for PacedUpload {
    fn put_part(&mut self, data: PutPayload) -> object_store::UploadPart {
        Box::pin(carried(self.0.put_part(data)))
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.0.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.0.abort().await
    }
}

/// The [`HttpConnector`] of the cloud clients; see the module documentation.
#[derive(Debug, Default)]
pub(super) struct PacedConnector;

/// Makes ring rustls's process-wide crypto provider unless one is installed already (an
/// embedder's own choice wins). reqwest is built without a provider of its own (see
/// Cargo.toml) and takes the process default when it builds a client; without one it panics.
fn ensure_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // Err means another thread installed one first: that one is used, which is fine.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
    });
}

impl HttpConnector for PacedConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        ensure_tls_provider();
        Ok(HttpClient::new(PacedService {
            plain: ReqwestConnector::default().connect(options)?,
            options: options.clone(),
            streaming: Arc::new(OnceLock::new()),
        }))
    }
}

#[derive(Debug)]
struct PacedService {
    /// object_store's own client, for every request outside a paced scope.
    plain: HttpClient,
    options: ClientOptions,
    /// Built on the first paced request: most stores never send one.
    streaming: Arc<OnceLock<Result<reqwest::Client, String>>>,
}

#[async_trait]
impl HttpService for PacedService {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        match current() {
            Some(throttle) if req.body().content_length() > 0 => self.paced(req, throttle).await,
            _ => self.plain.execute(req).await,
        }
    }
}

impl PacedService {
    async fn paced(&self, req: HttpRequest, throttle: Throttle) -> Result<HttpResponse, HttpError> {
        let client = self
            .streaming
            .get_or_init(|| streaming_client(&self.options).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| {
                HttpError::new(HttpErrorKind::Unknown, std::io::Error::other(e.clone()))
            })?;
        let (parts, body) = req.into_parts();
        let url = parts
            .uri
            .to_string()
            .parse()
            .map_err(|e| HttpError::new(HttpErrorKind::Unknown, e))?;
        let mut request = reqwest::Request::new(parts.method, url);
        *request.headers_mut() = parts.headers;
        // A streamed body has no length of its own; without the header hyper would switch to
        // chunked encoding, which object stores refuse.
        request
            .headers_mut()
            .entry(CONTENT_LENGTH)
            .or_insert_with(|| HeaderValue::from(body.content_length()));
        *request.timeout_mut() = self.timeout(body.content_length(), &throttle);
        *request.body_mut() = Some(reqwest::Body::wrap_stream(paced_body(body, throttle)));
        let response = client.execute(request).await.map_err(http_error)?;
        let (parts, body) = http::Response::<reqwest::Body>::from(response).into_parts();
        let body = HttpResponseBody::new(body.map_err(http_error));
        Ok(HttpResponse::from_parts(parts, body))
    }
}

/// Paced bodies the request timeout allows to share one throttle: the engine sends two packs
/// at once, each with up to two parts in flight.
const SHARING: f64 = 4.0;

impl PacedService {
    /// The configured whole-request timeout, plus the time a body of `length` bytes takes at
    /// the current rate when shared [`SHARING`] ways: a request now lasts as long as its
    /// pacing, which a timeout chosen for line speed must not cut short.
    fn timeout(&self, length: usize, throttle: &Throttle) -> Option<Duration> {
        let base = self
            .options
            .get_config_value(&ClientConfigKey::Timeout)
            .and_then(|v| humantime::parse_duration(&v).ok())?;
        let pacing = throttle
            .current_rate()
            .bytes_per_sec()
            .map_or(0.0, |rate| length as f64 * SHARING / rate.max(1) as f64);
        Some(base + Duration::from_secs_f64(pacing))
    }
}

/// `body` as a stream of pieces of at most the throttle's piece size, each paid for before it
/// is yielded.
fn paced_body(
    body: HttpRequestBody,
    throttle: Throttle,
) -> impl futures::Stream<Item = Result<Bytes, HttpError>> + Send + 'static {
    let chunks = body.into_data_stream();
    futures::stream::unfold(
        (chunks, Bytes::new(), throttle),
        |(mut chunks, mut rest, throttle)| async move {
            while rest.is_empty() {
                match chunks.next().await? {
                    Ok(chunk) => rest = chunk,
                    Err(e) => return Some((Err(e), (chunks, rest, throttle))),
                }
            }
            let piece = usize::try_from(throttle.piece_size()).unwrap_or(usize::MAX);
            let out = rest.split_to(rest.len().min(piece.max(1)));
            throttle.acquire(out.len() as u64).await;
            Some((Ok(out), (chunks, rest, throttle)))
        },
    )
}

/// A reqwest client configured like object_store's own from the same options (object_store
/// does not export its builder). Settings that only exist programmatically (extra root
/// certificates, default headers, a custom DNS resolver) are not used by this crate.
fn streaming_client(options: &ClientOptions) -> Result<reqwest::Client, reqwest::Error> {
    use ClientConfigKey as K;
    let get = |key| options.get_config_value(&key);
    let flag = |key| {
        get(key).is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
    };
    let duration = |key| get(key).and_then(|v| humantime::parse_duration(&v).ok());
    let user_agent = get(K::UserAgent).unwrap_or_else(|| "object_store/0.14".to_string());
    let mut builder = reqwest::Client::builder()
        .user_agent(user_agent)
        .https_only(!flag(K::AllowHttp))
        .danger_accept_invalid_certs(flag(K::AllowInvalidCertificates))
        // Content-Length must stay the stored size; see object_store's own client.
        .no_gzip()
        .no_brotli()
        .no_zstd()
        .no_deflate();
    if let Some(proxy) = get(K::ProxyUrl) {
        let mut proxy = reqwest::Proxy::all(proxy)?;
        if let Some(excludes) = get(K::ProxyExcludes) {
            proxy = proxy.no_proxy(reqwest::NoProxy::from_string(&excludes));
        }
        if let Some(pem) = get(K::ProxyCaCertificate) {
            let cert = reqwest::tls::Certificate::from_pem(pem.as_bytes())?;
            builder = builder.tls_certs_merge(std::iter::once(cert));
        }
        builder = builder.proxy(proxy);
    }
    type SetTimeout = fn(reqwest::ClientBuilder, Duration) -> reqwest::ClientBuilder;
    let timeouts: [(K, SetTimeout); 4] = [
        (K::Timeout, reqwest::ClientBuilder::timeout),
        (K::ConnectTimeout, reqwest::ClientBuilder::connect_timeout),
        (K::ReadTimeout, reqwest::ClientBuilder::read_timeout),
        (
            K::PoolIdleTimeout,
            reqwest::ClientBuilder::pool_idle_timeout,
        ),
    ];
    for (key, set) in timeouts {
        if let Some(d) = duration(key) {
            builder = set(builder, d);
        }
    }
    if let Some(max) = get(K::PoolMaxIdlePerHost).and_then(|v| v.parse().ok()) {
        builder = builder.pool_max_idle_per_host(max);
    }
    if flag(K::Http1Only) {
        builder = builder.http1_only();
    }
    if flag(K::Http2Only) {
        builder = builder.http2_prior_knowledge();
    }
    builder.build()
}

/// object_store's classification of a reqwest error, which decides what it retries.
fn http_error(e: reqwest::Error) -> HttpError {
    let kind = if e.is_timeout() {
        HttpErrorKind::Timeout
    } else if e.is_connect() {
        HttpErrorKind::Connect
    } else if e.is_decode() {
        HttpErrorKind::Decode
    } else if interrupted(&e) {
        HttpErrorKind::Interrupted
    } else if e.is_request() || e.is_body() {
        HttpErrorKind::Request
    } else {
        HttpErrorKind::Unknown
    };
    HttpError::new(kind, e.without_url())
}

/// Whether an I/O error in `e`'s chain says the connection was cut.
fn interrupted(e: &reqwest::Error) -> bool {
    use std::io::ErrorKind as Io;
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            let cut = [
                Io::ConnectionAborted,
                Io::ConnectionReset,
                Io::BrokenPipe,
                Io::UnexpectedEof,
            ];
            if cut.contains(&io.kind()) {
                return true;
            }
        }
        source = err.source();
    }
    false
}
