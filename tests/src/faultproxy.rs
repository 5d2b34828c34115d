//! [`FaultProxy`]: an HTTP/1.1-aware TCP proxy on loopback that sits between pgvault and an
//! object-store server and makes the network misbehave on purpose.
//!
//! Real object stores throttle (`503 SlowDown`), fail (`500`), hang and drop connections; a
//! backup tool whose WAL push or backup breaks on the first hiccup loses data in production. The
//! cloud tests run against well-behaved emulators on loopback, so this proxy puts the hiccups
//! back: per request, with configurable probabilities and a deterministic seed, it answers
//! `500 Internal Server Error`, answers `503 SlowDown` (with S3's XML error body), stalls (holds
//! the connection without answering, then closes it), or forwards the request and drops the
//! connection in the middle of the response. It can also be switched "down for good" (every
//! connection is closed at once, as a dead endpoint behind a load balancer would), optionally as
//! soon as it sees a request whose path contains a given string (to kill the store in the middle
//! of a backup).
//!
//! Two more behaviours make tests prove what they claim: a store that does not implement
//! conditional writes (every request carrying `If-None-Match` is answered `501 Not Implemented`,
//! so the probe at `init` must choose check-then-write), and per-phase counts (the test names
//! the phase, e.g. `"restore"`, and later asks how many faults hit it, reads included), so a
//! test can show that the faults really reached the part it is about. A stall also records
//! whether the client gave up first (closed the connection before the stall ended), i.e.
//! whether the client's own request timeout fired.
//!
//! It speaks plain HTTP to pgvault (`allow_http = true`) and plain HTTP or TLS (trusting a given
//! CA file) to the server. Requests are parsed just enough to be forwarded: request line, headers,
//! and a `Content-Length` or chunked body; responses are relayed by their `Content-Length`, chunked
//! framing, or until the server closes. Everything listens on 127.0.0.1 only, every loop is
//! bounded in count and time, and the proxy stops (all its tasks are aborted) when dropped.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Longest request or response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body accepted (bundle parts are 16 MiB).
const MAX_BODY: u64 = 256 * 1024 * 1024;
/// Requests served on one client connection before it is closed.
const MAX_REQUESTS_PER_CONNECTION: usize = 10_000;
/// Connections accepted over the proxy's life.
const MAX_CONNECTIONS: usize = 100_000;
/// Longest a client connection may sit idle between requests.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest one request may take end to end (reading it, the server's answer, relaying it).
const REQUEST_DEADLINE: Duration = Duration::from_secs(300);

/// How often each fault happens. Probabilities are per request and must sum to at most 1.
#[derive(Clone, Debug)]
pub struct FaultPlan {
    pub seed: u64,
    /// Answer `500 Internal Server Error` without forwarding.
    pub error_500: f64,
    /// Answer `503 Slow Down` with S3's `SlowDown` XML body, without forwarding.
    pub slow_down_503: f64,
    /// Hold the connection for [`FaultPlan::stall_for`] without answering, then close it.
    pub stall: f64,
    /// Forward the request, then close the connection half-way through the response.
    pub drop_response: f64,
    pub stall_for: Duration,
    /// Answer `501 Not Implemented` to every request with an `If-None-Match` header (a store
    /// without conditional writes), before any other fault is chosen.
    pub reject_conditional: bool,
}

impl FaultPlan {
    /// No faults: a transparent proxy.
    pub fn none() -> FaultPlan {
        FaultPlan {
            seed: 0,
            error_500: 0.0,
            slow_down_503: 0.0,
            stall: 0.0,
            drop_response: 0.0,
            stall_for: Duration::from_secs(1),
            reject_conditional: false,
        }
    }

    /// Faults on about `rate` of the requests, spread over the four kinds.
    pub fn mixed(seed: u64, rate: f64, stall_for: Duration) -> FaultPlan {
        FaultPlan {
            seed,
            error_500: rate * 0.3,
            slow_down_503: rate * 0.3,
            stall: rate * 0.1,
            drop_response: rate * 0.3,
            stall_for,
            reject_conditional: false,
        }
    }

    fn total(&self) -> f64 {
        self.error_500 + self.slow_down_503 + self.stall + self.drop_response
    }
}

/// What the proxy did to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Pass,
    Error500,
    SlowDown503,
    Stall,
    DropResponse,
    /// `501 Not Implemented` to a conditional write ([`FaultPlan::reject_conditional`]).
    RejectConditional,
}

/// Counts of what the proxy did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    pub requests: u64,
    pub passed: u64,
    pub error_500: u64,
    pub slow_down_503: u64,
    pub stalls: u64,
    pub drops: u64,
    /// Connections closed at once because the proxy was down.
    pub refused: u64,
    /// Stalls the client ended by closing the connection first (its request timeout fired).
    pub stalls_client_gave_up: u64,
    /// Conditional writes answered `501 Not Implemented`.
    pub rejected_conditional: u64,
    /// Faults (of the four random kinds) injected into reads (`GET`, `HEAD`).
    pub read_faults: u64,
}

impl FaultStats {
    /// Random faults injected (not counting `501`s to conditional writes or refusals when down).
    pub fn faults(&self) -> u64 {
        self.error_500 + self.slow_down_503 + self.stalls + self.drops
    }

    fn count(&mut self, fault: Fault, read: bool) {
        self.requests += 1;
        match fault {
            Fault::Pass => self.passed += 1,
            Fault::Error500 => self.error_500 += 1,
            Fault::SlowDown503 => self.slow_down_503 += 1,
            Fault::Stall => self.stalls += 1,
            Fault::DropResponse => self.drops += 1,
            Fault::RejectConditional => self.rejected_conditional += 1,
        }
        if read && !matches!(fault, Fault::Pass | Fault::RejectConditional) {
            self.read_faults += 1;
        }
    }
}

/// Where the proxy forwards to.
#[derive(Clone)]
pub enum Upstream {
    Plain(SocketAddr),
    /// TLS to `addr`, trusting the PEM certificates of a CA file, checking `server_name`.
    Tls {
        addr: SocketAddr,
        server_name: String,
        connector: tokio_rustls::TlsConnector,
    },
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Upstream::Plain(a) => write!(f, "http://{a}"),
            Upstream::Tls { addr, .. } => write!(f, "https://{addr}"),
        }
    }
}

impl Upstream {
    /// TLS to `addr` (a loopback address), trusting the CA certificates in `ca_file`.
    pub fn tls(addr: SocketAddr, ca_file: &Path) -> Result<Upstream> {
        let pem = std::fs::read(ca_file).with_context(|| format!("read {}", ca_file.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(cert.with_context(|| format!("{} is not PEM", ca_file.display()))?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Upstream::Tls {
            addr,
            server_name: addr.ip().to_string(),
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// From an endpoint URL `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT` (with `ca_file`).
    pub fn from_endpoint(endpoint: &str, ca_file: Option<&Path>) -> Result<Upstream> {
        let (tls, rest) = if let Some(r) = endpoint.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = endpoint.strip_prefix("http://") {
            (false, r)
        } else {
            bail!("endpoint {endpoint}: expected http:// or https://");
        };
        let hostport = rest.split('/').next().unwrap_or(rest);
        let addr: SocketAddr = hostport
            .parse()
            .with_context(|| format!("endpoint {endpoint}: expected IP:PORT"))?;
        if tls {
            Upstream::tls(addr, ca_file.context("an https endpoint needs a CA file")?)
        } else {
            Ok(Upstream::Plain(addr))
        }
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Upstream::Plain(a) | Upstream::Tls { addr: a, .. } => *a,
        }
    }

    async fn connect(&self) -> Result<Box<dyn Io>> {
        let tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(self.addr()))
            .await
            .context("connecting to the server timed out")??;
        tcp.set_nodelay(true)?;
        match self {
            Upstream::Plain(_) => Ok(Box::new(tcp)),
            Upstream::Tls {
                server_name, connector, ..
            } => {
                let name = rustls::pki_types::ServerName::try_from(server_name.clone())?;
                let tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
                    .await
                    .context("TLS handshake with the server timed out")??;
                Ok(Box::new(tls))
            }
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct State {
    upstream: Upstream,
    plan: Mutex<FaultPlan>,
    down: AtomicBool,
    /// Go down for good at the first request whose target contains this.
    down_trigger: Mutex<Option<String>>,
    counter: AtomicU64,
    stats: Mutex<FaultStats>,
    /// The phase the test named last ([`FaultProxy::set_phase`]) and the counts per phase.
    phase: Mutex<String>,
    per_phase: Mutex<BTreeMap<String, FaultStats>>,
}

impl State {
    /// Applies `f` to the overall counts and to the current phase's.
    fn stat(&self, f: impl Fn(&mut FaultStats)) {
        f(&mut self.stats.lock().unwrap_or_else(|e| e.into_inner()));
        let phase = self.phase.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut per = self.per_phase.lock().unwrap_or_else(|e| e.into_inner());
        f(per.entry(phase).or_default());
    }

    /// Deterministic per request number: the n-th request gets the same fault on every run.
    fn choose(&self) -> Fault {
        let plan = self.plan.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let r = (splitmix64(plan.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)) >> 11) as f64 / (1u64 << 53) as f64;
        let mut edge = plan.error_500;
        if r < edge {
            return Fault::Error500;
        }
        edge += plan.slow_down_503;
        if r < edge {
            return Fault::SlowDown503;
        }
        edge += plan.stall;
        if r < edge {
            return Fault::Stall;
        }
        edge += plan.drop_response;
        if r < edge {
            return Fault::DropResponse;
        }
        Fault::Pass
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The running proxy. Dropping it stops it.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FaultProxy(http://{} -> {:?})", self.addr, self.state.upstream)
    }
}

impl FaultProxy {
    /// Starts a proxy on a free port of 127.0.0.1 forwarding to `upstream` (which must be on
    /// loopback too). Must be called inside a tokio runtime.
    pub async fn start(upstream: Upstream, plan: FaultPlan) -> Result<FaultProxy> {
        if !upstream.addr().ip().is_loopback() {
            bail!("the fault proxy only forwards to loopback, not {}", upstream.addr());
        }
        if plan.total() > 1.0 + 1e-9 {
            bail!("fault probabilities sum to {} > 1", plan.total());
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.context("bind 127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            upstream,
            plan: Mutex::new(plan),
            down: AtomicBool::new(false),
            down_trigger: Mutex::new(None),
            counter: AtomicU64::new(0),
            stats: Mutex::new(FaultStats::default()),
            phase: Mutex::new(String::new()),
            per_phase: Mutex::new(BTreeMap::new()),
        });
        let st = state.clone();
        let accept = tokio::spawn(async move {
            // Dropping this set (when the accept task is aborted) aborts every connection task.
            let mut conns = tokio::task::JoinSet::new();
            for _ in 0..MAX_CONNECTIONS {
                let Ok((sock, _)) = listener.accept().await else {
                    break;
                };
                while conns.try_join_next().is_some() {}
                if st.down.load(Ordering::SeqCst) {
                    st.stat(|s| s.refused += 1);
                    drop(sock);
                    continue;
                }
                let st = st.clone();
                conns.spawn(async move {
                    let _ = serve(sock, st).await;
                });
            }
        });
        Ok(FaultProxy { addr, state, accept })
    }

    /// `http://127.0.0.1:PORT`, for `[repository] endpoint` (with `allow_http = true`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the fault probabilities (the request counter keeps running).
    pub fn set_plan(&self, plan: FaultPlan) {
        *self.state.plan.lock().unwrap_or_else(|e| e.into_inner()) = plan;
    }

    /// Down for good (`true`): every connection and every request is closed at once.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    pub fn is_down(&self) -> bool {
        self.state.down.load(Ordering::SeqCst)
    }

    /// Goes down for good as soon as a request's target contains `needle` (that request is
    /// already not answered).
    pub fn down_when_path_contains(&self, needle: &str) {
        *self.state.down_trigger.lock().unwrap_or_else(|e| e.into_inner()) = Some(needle.to_string());
    }

    /// Counts over the proxy's whole life.
    pub fn stats(&self) -> FaultStats {
        self.state.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Names the phase the following requests belong to (the first phase is `""`).
    pub fn set_phase(&self, phase: &str) {
        *self.state.phase.lock().unwrap_or_else(|e| e.into_inner()) = phase.to_string();
    }

    /// Counts of the requests made while `phase` was the current phase.
    pub fn phase_stats(&self, phase: &str) -> FaultStats {
        self.state
            .per_phase
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(phase)
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.state.down.store(true, Ordering::SeqCst);
        self.accept.abort();
    }
}

/// One parsed HTTP message head.
struct Head {
    raw: Vec<u8>,
    /// Request: method and target; response: status code in `status`.
    method: String,
    target: String,
    status: u16,
    content_length: Option<u64>,
    chunked: bool,
    close: bool,
    /// A conditional write (`If-None-Match` present).
    if_none_match: bool,
}

/// Reads a head (start line + headers) up to the empty line. `Ok(None)` on a clean EOF before
/// any byte.
async fn read_head<R: AsyncBufReadExt + Unpin>(r: &mut R, request: bool) -> Result<Option<Head>> {
    let mut raw = Vec::new();
    let mut lines: Vec<String> = Vec::new();
    loop {
        let before = raw.len();
        let n = r.read_until(b'\n', &mut raw).await?;
        if n == 0 {
            if raw.is_empty() {
                return Ok(None);
            }
            bail!("connection closed inside a message head");
        }
        if raw.len() > MAX_HEAD {
            bail!("message head longer than {MAX_HEAD} bytes");
        }
        let line = String::from_utf8_lossy(&raw[before..])
            .trim_end_matches(['\r', '\n'])
            .to_string();
        if line.is_empty() {
            if lines.is_empty() {
                // Tolerate stray empty lines between messages.
                raw.clear();
                continue;
            }
            break;
        }
        lines.push(line);
    }
    let start = &lines[0];
    let mut parts = start.split_whitespace();
    let (method, target, status) = if request {
        (
            parts.next().unwrap_or_default().to_string(),
            parts.next().unwrap_or_default().to_string(),
            0,
        )
    } else {
        let _version = parts.next();
        (
            String::new(),
            String::new(),
            parts.next().and_then(|s| s.parse().ok()).unwrap_or(0),
        )
    };
    let mut head = Head {
        raw,
        method,
        target,
        status,
        content_length: None,
        chunked: false,
        close: false,
        if_none_match: false,
    };
    for l in &lines[1..] {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        match k.as_str() {
            "content-length" => head.content_length = v.parse().ok(),
            "transfer-encoding" => head.chunked = v.to_ascii_lowercase().contains("chunked"),
            "connection" => head.close = v.eq_ignore_ascii_case("close"),
            "if-none-match" => head.if_none_match = true,
            _ => {}
        }
    }
    Ok(Some(head))
}

/// Reads a message body as framed by `head`, returning its raw bytes (chunk framing kept).
async fn read_body<R: AsyncBufReadExt + Unpin>(r: &mut R, head: &Head) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    if head.chunked {
        for _ in 0..10_000_000 {
            let mut line = Vec::new();
            if r.read_until(b'\n', &mut line).await? == 0 {
                bail!("connection closed inside a chunked body");
            }
            body.extend_from_slice(&line);
            let text = String::from_utf8_lossy(&line);
            let size_hex = text.trim().split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size_hex, 16).with_context(|| format!("bad chunk size line {text:?}"))?;
            if size == 0 {
                // Trailers up to the empty line.
                for _ in 0..1000 {
                    let mut t = Vec::new();
                    if r.read_until(b'\n', &mut t).await? == 0 {
                        bail!("connection closed inside chunked trailers");
                    }
                    body.extend_from_slice(&t);
                    if t == b"\r\n" || t == b"\n" {
                        return Ok(body);
                    }
                }
                bail!("too many chunked trailers");
            }
            if body.len() as u64 + size > MAX_BODY {
                bail!("body larger than {MAX_BODY} bytes");
            }
            let at = body.len();
            body.resize(at + size as usize + 2, 0);
            r.read_exact(&mut body[at..]).await?;
        }
        bail!("too many chunks");
    }
    let len = head.content_length.unwrap_or(0);
    if len > MAX_BODY {
        bail!("body of {len} bytes is larger than {MAX_BODY}");
    }
    body.resize(len as usize, 0);
    r.read_exact(&mut body).await?;
    Ok(body)
}

fn error_response(status: &str, code: &str, message: &str) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>faultproxy</RequestId></Error>"
    );
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves one client connection: requests one after the other (keep-alive), each forwarded over
/// this connection's own server connection unless a fault is injected.
async fn serve(client: TcpStream, st: Arc<State>) -> Result<()> {
    client.set_nodelay(true)?;
    let (cr, mut cw) = client.into_split();
    let mut cr = BufReader::new(cr);
    let mut up: Option<BufReader<Box<dyn Io>>> = None;
    for _ in 0..MAX_REQUESTS_PER_CONNECTION {
        let head = match tokio::time::timeout(IDLE_TIMEOUT, read_head(&mut cr, true)).await {
            Ok(Ok(Some(h))) => h,
            _ => return Ok(()),
        };
        if st.down.load(Ordering::SeqCst) {
            st.stat(|s| s.refused += 1);
            return Ok(());
        }
        let triggered = {
            let t = st.down_trigger.lock().unwrap_or_else(|e| e.into_inner());
            t.as_deref().is_some_and(|n| head.target.contains(n))
        };
        if triggered {
            st.down.store(true, Ordering::SeqCst);
            st.stat(|s| s.refused += 1);
            return Ok(());
        }
        let keep = tokio::time::timeout(REQUEST_DEADLINE, one_request(&head, &mut cr, &mut cw, &mut up, &st)).await;
        match keep {
            Ok(Ok(true)) => {}
            _ => return Ok(()),
        }
    }
    Ok(())
}

/// Handles one request; `Ok(true)` when the connection may carry another one.
async fn one_request(
    head: &Head,
    cr: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    cw: &mut tokio::net::tcp::OwnedWriteHalf,
    up: &mut Option<BufReader<Box<dyn Io>>>,
    st: &State,
) -> Result<bool> {
    let body = read_body(cr, head).await?;
    let reject = head.if_none_match && st.plan.lock().unwrap_or_else(|e| e.into_inner()).reject_conditional;
    let fault = if reject { Fault::RejectConditional } else { st.choose() };
    let read = head.method.eq_ignore_ascii_case("GET") || head.method.eq_ignore_ascii_case("HEAD");
    st.stat(|s| s.count(fault, read));
    match fault {
        Fault::RejectConditional => {
            cw.write_all(&error_response(
                "501 Not Implemented",
                "NotImplemented",
                "A header you provided implies functionality that is not implemented.",
            ))
            .await?;
            return Ok(false);
        }
        Fault::Error500 => {
            cw.write_all(&error_response(
                "500 Internal Server Error",
                "InternalError",
                "We encountered an internal error. Please try again.",
            ))
            .await?;
            return Ok(false);
        }
        Fault::SlowDown503 => {
            cw.write_all(&error_response(
                "503 Slow Down",
                "SlowDown",
                "Please reduce your request rate.",
            ))
            .await?;
            return Ok(false);
        }
        Fault::Stall => {
            let d = st
                .plan
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .stall_for
                .min(Duration::from_secs(120));
            // Nothing more is expected from the client: a read returns only when it closes.
            let mut probe = [0u8; 1];
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                r = cr.read(&mut probe) => {
                    if matches!(r, Ok(0) | Err(_)) {
                        st.stat(|s| s.stalls_client_gave_up += 1);
                    }
                }
            }
            return Ok(false);
        }
        Fault::Pass | Fault::DropResponse => {}
    }
    // Forward over the connection's server connection (re-opened if the server closed it).
    if up.is_none() {
        *up = Some(BufReader::new(st.upstream.connect().await?));
    }
    let Some(u) = up.as_mut() else {
        bail!("no server connection")
    };
    u.get_mut().write_all(&head.raw).await?;
    u.get_mut().write_all(&body).await?;
    u.get_mut().flush().await?;
    let Some(resp) = read_head(u, false).await? else {
        bail!("the server closed the connection without answering")
    };
    let no_body = head.method.eq_ignore_ascii_case("HEAD")
        || resp.status == 204
        || resp.status == 304
        || (100..200).contains(&resp.status);
    if fault == Fault::DropResponse {
        // Half of the answer, then nothing: the client sees the connection die mid-response.
        match resp.content_length {
            Some(len) if len > 0 && !no_body => {
                cw.write_all(&resp.raw).await?;
                let mut half = vec![0u8; (len / 2) as usize];
                u.read_exact(&mut half).await?;
                cw.write_all(&half).await?;
            }
            _ => cw.write_all(&resp.raw[..resp.raw.len() / 2]).await?,
        }
        cw.flush().await?;
        *up = None;
        return Ok(false);
    }
    cw.write_all(&resp.raw).await?;
    if no_body {
        // Nothing follows the head.
    } else if resp.chunked || resp.content_length.is_some() {
        let body = read_body(u, &resp).await?;
        cw.write_all(&body).await?;
    } else {
        // Delimited by the server closing the connection.
        let mut rest = Vec::new();
        u.read_to_end(&mut rest).await?;
        cw.write_all(&rest).await?;
        cw.flush().await?;
        *up = None;
        return Ok(false);
    }
    cw.flush().await?;
    if resp.close {
        *up = None;
    }
    Ok(!head.close && !resp.close)
}

#[cfg(test)]
#[path = "faultproxy_tests.rs"]
mod tests;
