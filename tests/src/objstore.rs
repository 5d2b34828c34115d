//! Real object-store servers on loopback for the cloud-backend tests: SeaweedFS (S3, over TLS),
//! fake-gcs-server (GCS) and Azurite (Azure Blob). No mocks: pgvault talks to them exactly as
//! it talks to the clouds, through object_store's S3, GCS and Azure clients. fake-gcs-server
//! lacks the XML API's uploads that object_store's GCS client writes with, so it is reached
//! through [`GcsAdapter`], which translates just those to its JSON API (see
//! [`crate::gcs_adapter`]); everything it stores and every precondition it checks is its own.
//!
//! Each [`ObjStore`] runs one server in its own temporary directory and process group, on free
//! loopback ports (every listener the server opens is given an explicit port, so parallel tests
//! never collide), waits until a real listing through `pgvault_core::storage::Storage` succeeds,
//! and kills the whole process group on drop. Start-up failures carry the server's log tail.
//!
//! TLS: [`StoreKind::S3PrivateCa`] generates (with `openssl`) a CA and a server certificate it
//! signs, and gives pgvault the CA as `ca_file`; [`StoreKind::S3SelfSigned`] uses a self-signed
//! certificate made like the benchmark bed's (`openssl req -x509 … -subj /CN=127.0.0.1`), which is
//! its own CA, and gives pgvault that very certificate as `ca_file`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use pgvault_core::config::RepositoryConfig;
use pgvault_core::storage::Storage;

use crate::cluster::{free_port, tail_file};
use crate::fsutil::{write_postgres_file, TempRepoDir};
use crate::gcs_adapter::GcsAdapter;
use crate::install::{azurite_bin, fake_gcs_bin, missing_dependency, weed_bin};

/// The bucket (container) every emulator is started with.
pub const BUCKET: &str = "pgvault";
const S3_KEY_ID: &str = "pgvaulttestkey";
const S3_SECRET: &str = "pgvaulttestsecret";
/// Azurite's well-known development account and key.
const AZ_ACCOUNT: &str = "devstoreaccount1";
const AZ_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// Node loads Azurite in about a minute on a loaded 2-core machine.
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// Which server (and, for S3, which certificate set-up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// SeaweedFS S3 over HTTPS, certificate signed by a generated private CA (`ca_file` = CA).
    S3PrivateCa,
    /// SeaweedFS S3 over HTTPS with a bench-style self-signed certificate (`ca_file` = it).
    S3SelfSigned,
    /// fake-gcs-server over plain HTTP (`allow_http`), service-account file with `disable_oauth`.
    Gcs,
    /// Azurite's blob service over plain HTTP (`allow_http`), well-known account key.
    Azure,
}

impl StoreKind {
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::S3PrivateCa => "s3 (private CA)",
            StoreKind::S3SelfSigned => "s3 (self-signed)",
            StoreKind::Gcs => "gcs",
            StoreKind::Azure => "azure",
        }
    }

    fn binary(self) -> Option<PathBuf> {
        match self {
            StoreKind::S3PrivateCa | StoreKind::S3SelfSigned => weed_bin(),
            StoreKind::Gcs => fake_gcs_bin(),
            StoreKind::Azure => azurite_bin().map(|p| p.with_file_name("azurite-blob")),
        }
    }

    /// Whether the server is installed. Missing: `false` with a `SKIP:` notice, and a panic in
    /// CI ([`missing_dependency`]).
    pub fn available(self) -> bool {
        let ok = self.binary().is_some_and(|p| p.exists()) && (self != StoreKind::Azure || which("node"));
        if !ok {
            missing_dependency(
                &format!("the {} emulator", self.name()),
                "run scripts/install-test-deps.sh (Azurite also needs `node` on PATH)",
            );
        }
        ok
    }
}

fn which(prog: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false)
}

/// One running object-store server. Killed (with its process group) on drop.
#[derive(Debug)]
pub struct ObjStore {
    pub kind: StoreKind,
    pub dir: TempRepoDir,
    child: Option<Child>,
    /// For [`StoreKind::Gcs`]: the XML-upload adapter pgvault talks to, in front of the server.
    gcs_adapter: Option<GcsAdapter>,
    log: PathBuf,
    /// `[repository]` settings other than `url` (and `conditional_create`).
    template: RepositoryConfig,
}

/// Start attempts when a port turned out to be taken (another process bound it between
/// [`free_port`] and the server's own bind).
const START_ATTEMPTS: usize = 4;

/// Whether a failed start-up was a port conflict (the message carries the server's log tail).
fn port_was_taken(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    ["address already in use", "eaddrinuse", "failed to listen", "bind: "]
        .iter()
        .any(|n| m.contains(n))
}

impl ObjStore {
    /// Starts a server of `kind` and waits until it serves the bucket. Ports are picked free just
    /// before the start; when one was taken meanwhile (the server's log says so), the server is
    /// started again on other ports, up to [`START_ATTEMPTS`] times.
    pub async fn start(kind: StoreKind) -> Result<ObjStore> {
        let mut attempt = 1;
        loop {
            match Self::start_once(kind).await {
                Ok(store) => return Ok(store),
                Err(e) if attempt < START_ATTEMPTS && port_was_taken(&format!("{e:#}")) => {
                    eprintln!(
                        "{}: a port was taken during start-up (attempt {attempt}); retrying on others",
                        kind.name()
                    );
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One start on freshly picked ports, in a fresh directory.
    async fn start_once(kind: StoreKind) -> Result<ObjStore> {
        let dir = TempRepoDir::with_prefix("pgvault-objstore-")?;
        let log = dir.join("server.log");
        let bin = kind
            .binary()
            .with_context(|| format!("{} emulator not installed", kind.name()))?;
        let mut template = RepositoryConfig::for_url(String::new());
        template.request_timeout = 30;
        template.connect_timeout = 5;
        template.retry_max = 3;
        template.retry_timeout = 30;
        let mut cmd;
        let mut gcs_adapter = None;
        match kind {
            StoreKind::S3PrivateCa | StoreKind::S3SelfSigned => {
                let (cert, key, ca) = make_certs(&dir, kind == StoreKind::S3PrivateCa)?;
                let https = free_port()?;
                cmd = Command::new(bin);
                cmd.env("AWS_ACCESS_KEY_ID", S3_KEY_ID)
                    .env("AWS_SECRET_ACCESS_KEY", S3_SECRET);
                cmd.arg("mini")
                    .arg(format!("-dir={}", dir.subdir("data")?.display()))
                    .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false"])
                    .arg(format!("-bucket={BUCKET}"))
                    .args([
                        "-webdav=false",
                        "-admin.ui=false",
                        "-s3.port.iceberg=0",
                        "-s3.port.lance=0",
                    ])
                    .args(["-master.volumeSizeLimitMB=64", "-volume.max=0"])
                    .arg(format!("-s3.port.https={https}"))
                    .arg(format!("-s3.cert.file={}", cert.display()))
                    .arg(format!("-s3.key.file={}", key.display()));
                for flag in [
                    "master.port",
                    "master.port.grpc",
                    "volume.port",
                    "volume.port.grpc",
                    "filer.port",
                    "filer.port.grpc",
                    "s3.port",
                    "s3.port.grpc",
                    "admin.port",
                    "admin.port.grpc",
                ] {
                    cmd.arg(format!("-{flag}={}", free_port()?));
                }
                template.endpoint = Some(format!("https://127.0.0.1:{https}"));
                template.region = Some("us-east-1".into());
                template.access_key_id = Some(S3_KEY_ID.into());
                template.secret_access_key = Some(S3_SECRET.into());
                template.ca_file = Some(ca);
            }
            StoreKind::Gcs => {
                let port = free_port()?;
                let data = dir.subdir("data")?;
                std::fs::create_dir_all(data.join(BUCKET))?;
                cmd = Command::new(bin);
                cmd.args([
                    "-scheme",
                    "http",
                    "-host",
                    "127.0.0.1",
                    "-backend",
                    "memory",
                    "-log-level",
                    "warn",
                ])
                .arg("-port")
                .arg(port.to_string())
                .arg("-public-host")
                .arg(format!("127.0.0.1:{port}"))
                .arg("-external-url")
                .arg(format!("http://127.0.0.1:{port}"))
                .arg("-data")
                .arg(&data);
                // pgvault talks to the adapter, the adapter to the server.
                let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                let adapter = GcsAdapter::start(upstream, &dir.join("gcs-adapter"))?;
                let sa = dir.join("service-account.json");
                let json = serde_json::json!({
                    "disable_oauth": true,
                    "client_email": "",
                    "private_key": "",
                    "private_key_id": "",
                    "gcs_base_url": adapter.url(),
                });
                gcs_adapter = Some(adapter);
                write_postgres_file(&sa, json.to_string(), 0o600)?;
                template.service_account_file = Some(sa);
                template.allow_http = true;
            }
            StoreKind::Azure => {
                let port = free_port()?;
                cmd = Command::new(bin);
                cmd.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
                    .arg("--location")
                    .arg(dir.subdir("data")?)
                    .args(["--skipApiVersionCheck", "--loose", "--silent"]);
                template.endpoint = Some(format!("http://127.0.0.1:{port}/{AZ_ACCOUNT}"));
                template.account = Some(AZ_ACCOUNT.into());
                template.access_key = Some(AZ_KEY.into());
                template.allow_http = true;
            }
        }
        let logf = std::fs::File::create(&log).with_context(|| log.display().to_string())?;
        cmd.current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf)
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start the {} emulator: {cmd:?}", kind.name()))?;
        let mut store = ObjStore {
            kind,
            dir,
            child: Some(child),
            gcs_adapter,
            log,
            template,
        };
        store.wait_ready().await?;
        Ok(store)
    }

    /// Starts a server for a test: `None` (with a notice) when it is not installed. Panics when
    /// it fails to start or cannot store a test object.
    pub async fn for_test(kind: StoreKind) -> Option<ObjStore> {
        if !kind.available() {
            return None;
        }
        let store = ObjStore::start(kind).await.unwrap_or_else(|e| panic!("{e:#}"));
        let s = store.storage("write-check").unwrap_or_else(|e| panic!("{e:#}"));
        if let Err(e) = s.put("write-check", bytes::Bytes::from_static(b"ok")).await {
            panic!(
                "{}: cannot write a test object through object_store: {e}\nserver log tail:\n{}",
                kind.name(),
                store.log_tail()
            );
        }
        Some(store)
    }

    /// The server's log tail, for messages.
    pub fn log_tail(&self) -> String {
        tail_file(&self.log, 30)
    }

    fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let start = Instant::now();
        let mut created = false;
        let storage = self.storage("ready-check")?;
        loop {
            if let Some(status) = self.exited() {
                bail!(
                    "the {} emulator exited ({status}) during start-up; log tail:\n{}",
                    self.kind.name(),
                    self.log_tail()
                );
            }
            if self.kind == StoreKind::Azure && !created {
                created =
                    azure_create_container(self.template.endpoint.as_deref().unwrap_or_default()).unwrap_or(false);
            }
            let last = match storage.list("").await {
                Ok(_) => return Ok(()),
                Err(e) => e.to_string(),
            };
            if start.elapsed() > READY_TIMEOUT {
                bail!(
                    "the {} emulator did not become ready in {:?}: last error: {last}\nlog tail:\n{}",
                    self.kind.name(),
                    READY_TIMEOUT,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// The repository URL for `prefix` in the bucket.
    pub fn url(&self, prefix: &str) -> String {
        let scheme = match self.kind {
            StoreKind::S3PrivateCa | StoreKind::S3SelfSigned => "s3",
            StoreKind::Gcs => "gs",
            StoreKind::Azure => "az",
        };
        format!("{scheme}://{BUCKET}/{prefix}")
    }

    /// The `[repository]` configuration for a repository under `prefix`.
    pub fn repository_config(&self, prefix: &str) -> RepositoryConfig {
        let mut c = self.template.clone();
        c.url = self.url(prefix);
        c
    }

    /// The body of a `[repository]` section (without the header) for `prefix`.
    pub fn repository_toml(&self, prefix: &str) -> String {
        let c = self.repository_config(prefix);
        let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let mut t = format!("url = {}\n", q(&c.url));
        let opt = |t: &mut String, k: &str, v: &Option<String>| {
            if let Some(v) = v {
                t.push_str(&format!("{k} = {}\n", q(v)));
            }
        };
        opt(&mut t, "endpoint", &c.endpoint);
        opt(&mut t, "region", &c.region);
        opt(&mut t, "access_key_id", &c.access_key_id);
        opt(&mut t, "secret_access_key", &c.secret_access_key);
        opt(&mut t, "account", &c.account);
        opt(&mut t, "access_key", &c.access_key);
        opt(&mut t, "ca_file", &c.ca_file.as_ref().map(|p| p.display().to_string()));
        opt(
            &mut t,
            "service_account_file",
            &c.service_account_file.as_ref().map(|p| p.display().to_string()),
        );
        if c.allow_http {
            t.push_str("allow_http = true\n");
        }
        t.push_str(&format!(
            "request_timeout = {}\nconnect_timeout = {}\nretry_max = {}\nretry_timeout = {}\n",
            c.request_timeout, c.connect_timeout, c.retry_max, c.retry_timeout
        ));
        t
    }

    /// Raw access to the objects of the repository under `prefix` (no pgvault format involved).
    pub fn storage(&self, prefix: &str) -> Result<Storage> {
        Storage::open(&self.repository_config(prefix), false).map_err(|e| anyhow::anyhow!("{e}"))
    }
}

impl Drop for ObjStore {
    fn drop(&mut self) {
        // The adapter first: it stops taking requests before the server goes.
        drop(self.gcs_adapter.take());
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn openssl(args: &[&str], dir: &Path) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .context("cannot run openssl (install it)")?;
    if !out.status.success() {
        bail!(
            "openssl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Server certificate and key, and what pgvault gets as `ca_file`.
fn make_certs(dir: &TempRepoDir, private_ca: bool) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let d = dir.subdir("tls")?;
    let san = "subjectAltName=IP:127.0.0.1,DNS:localhost";
    if private_ca {
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=pgvault test CA",
            ],
            &d,
        )?;
        openssl(
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "s3.key",
                "-out",
                "s3.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
            &d,
        )?;
        std::fs::write(
            d.join("ext.cnf"),
            format!("{san}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"),
        )?;
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                "s3.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "s3.crt",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ],
            &d,
        )?;
    } else {
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "s3.key",
                "-out",
                "s3.crt",
                "-days",
                "2",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                san,
            ],
            &d,
        )?;
    }
    for f in std::fs::read_dir(&d)? {
        let p = f?.path();
        crate::fsutil::chown_to_postgres(&p)?;
    }
    let ca = if private_ca { d.join("ca.crt") } else { d.join("s3.crt") };
    Ok((d.join("s3.crt"), d.join("s3.key"), ca))
}

/// Creates the container with a SharedKey-signed `PUT ?restype=container`. `Ok(true)` when it
/// exists afterwards.
fn azure_create_container(endpoint: &str) -> Result<bool> {
    let rest = endpoint.strip_prefix("http://").context("http endpoint")?;
    let (host, path) = rest.split_once('/').context("endpoint path")?;
    let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    let version = "2021-08-06";
    let resource = format!("/{AZ_ACCOUNT}/{path}/{BUCKET}\nrestype:container");
    let sts = format!("PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n{resource}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &base64_decode(AZ_KEY));
    let sig = base64_encode(ring::hmac::sign(&key, sts.as_bytes()).as_ref());
    let req = format!(
        "PUT /{path}/{BUCKET}?restype=container HTTP/1.1\r\nHost: {host}\r\nx-ms-date: {date}\r\nx-ms-version: {version}\r\n\
         Authorization: SharedKey {AZ_ACCOUNT}:{sig}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let mut s = TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(req.as_bytes())?;
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let status = resp.split_whitespace().nth(1).unwrap_or("");
    Ok(status == "201" || status == "409")
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = B64.iter().position(|&x| x == c).unwrap_or(0) as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn port_conflicts_are_recognised() {
        assert!(super::port_was_taken(
            "listen tcp 127.0.0.1:9333: bind: address already in use"
        ));
        assert!(super::port_was_taken(
            "Error: listen EADDRINUSE: address already in use 127.0.0.1:10000"
        ));
        assert!(!super::port_was_taken(
            "the s3 emulator did not become ready: 403 Forbidden"
        ));
    }

    #[test]
    fn base64_roundtrip() {
        for s in ["", "f", "fo", "foo", "foob", "fooba", "foobar"] {
            let e = super::base64_encode(s.as_bytes());
            assert_eq!(super::base64_decode(&e), s.as_bytes());
        }
        assert_eq!(super::base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(super::base64_encode(b"fo"), "Zm8=");
    }
}
