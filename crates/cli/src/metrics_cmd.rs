//! `pgvault metrics`: the Prometheus metrics once, to stdout or (`--textfile`) atomically into a
//! file for node_exporter's textfile collector; and the `/metrics` endpoint `pgvault schedule`
//! serves (a minimal hyper HTTP/1 server: GET /metrics, nothing else).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use chrono::Utc;
use clap::Args;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use pgvault_core::metrics::{self, render::CONTENT_TYPE};
use pgvault_core::repository::Repository;
use tokio::sync::watch;

use crate::commands::Context;

#[derive(Args)]
pub struct MetricsArgs {
    /// Write the metrics into this file (atomically: a temporary file renamed over it), for
    /// node_exporter's textfile collector (the name must end in `.prom`).
    #[arg(long, value_name = "PATH")]
    textfile: Option<PathBuf>,
    /// Do not connect to PostgreSQL for pg_stat_archiver.
    #[arg(long)]
    no_server: bool,
}

pub async fn metrics(ctx: &Context, args: MetricsArgs) -> Result<()> {
    let config = ctx.config()?;
    let repo = match Repository::open(&config).await {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!("cannot open the repository: {e}");
            None
        }
    };
    let snapshot = metrics::collect(&config, repo.as_ref(), !args.no_server, Utc::now()).await;
    let text = metrics::render(&snapshot);
    match &args.textfile {
        Some(path) => write_atomic(path, &text).with_context(|| format!("writing {}", path.display()))?,
        None => print!("{text}"),
    }
    Ok(())
}

/// Writes `text` to a temporary file beside `path`, syncs it, and renames it over `path`, so a
/// reader sees the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A name node_exporter ignores (it reads only `*.prom`) while the file is being written.
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The latest rendered metrics, shared between the refresher and the server.
pub type Shared = Arc<RwLock<String>>;

/// Binds `addr` (so a taken port fails the daemon at start) and returns the server task, which
/// runs until `stop` turns true.
pub async fn serve(
    addr: SocketAddr,
    text: Shared,
    mut stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on [metrics] listen = {addr}"))?;
    tracing::info!("serving metrics on http://{addr}/metrics");
    Ok(tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stop.wait_for(|s| *s) => return,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("metrics: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let text = text.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| respond(req, text.clone()));
                let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    tracing::debug!("metrics: connection ended: {e}");
                }
            });
        }
    }))
}

async fn respond(req: Request<Incoming>, text: Shared) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, ctype: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        r
    };
    let plain = "text/plain; charset=utf-8";
    Ok(match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => {
            let body = text.read().map(|t| t.clone()).unwrap_or_default();
            reply(StatusCode::OK, CONTENT_TYPE, body)
        }
        (&Method::GET, "/") => reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            "<html><body><a href=\"/metrics\">pgvault metrics</a></body></html>\n".into(),
        ),
        (_, "/metrics") => reply(StatusCode::METHOD_NOT_ALLOWED, plain, "GET only\n".into()),
        _ => reply(StatusCode::NOT_FOUND, plain, "not found: try /metrics\n".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn textfile_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pgvault.prom");
        write_atomic(&p, "a 1\n").unwrap();
        write_atomic(&p, "b 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "b 2\n");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file left behind");
        assert!(write_atomic(&dir.path().join("missing/x.prom"), "c 3\n").is_err());
    }
}
