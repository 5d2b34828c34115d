//! `push %p`: PostgreSQL's `archive_command`, with batching.
//!
//! The call for segment S first looks for a marker an earlier batch left for S
//! ([`pgvault_core::archive::pushed`]): when it vouches for the file's current bytes (size and
//! SHA-256 computed now) in this repository, the call returns 0 at once. Otherwise it opens the
//! repository (one key derivation) and stores S, and at the same time up to
//! `[archive] push_batch - 1` further `.ready` segments after S (`push_parallel` at once), each
//! marked only after the store confirmed it. S's own result alone decides the exit code: a
//! segment stored ahead that fails is pushed, or refused, when PostgreSQL asks for it.
//!
//! With `[archive] push_mode = "async"` a segment's call is handed to [`crate::push_async`].
//!
//! Batching only happens when `%p` is inside a `pg_wal` directory with an `archive_status`
//! beside it; a push of any other path is a plain single push.

use std::path::Path;
use std::process::ExitCode;

use pgvault_core::archive::batch::{push_ahead, AheadReport};
use pgvault_core::archive::pushed::{pg_wal_of, ready_after, PushedMarkers};
use pgvault_core::archive::spool::Spool;
use pgvault_core::archive::{self, PushOutcome};
use pgvault_core::repository::Repository;
use pgvault_core::wal::{WalFileName, WalKind};

use crate::push_async::{self, AsyncOutcome};
use crate::{load_config, repository_label};

/// How S was dealt with.
enum Pushed {
    Now(PushOutcome),
    /// Asynchronous mode (see [`crate::push_async`]).
    Async(AsyncOutcome),
    /// An earlier batch stored it; its marker vouches for the file's current bytes.
    Earlier,
}

pub async fn push(config_path: Option<&Path>, path: &Path) -> ExitCode {
    match push_inner(config_path, path).await {
        Ok(Pushed::Now(PushOutcome::Stored { .. })) | Ok(Pushed::Earlier) => ExitCode::SUCCESS,
        // A drop was logged loudly where it happened.
        Ok(Pushed::Async(AsyncOutcome::Stored | AsyncOutcome::Spooled | AsyncOutcome::Dropped)) => ExitCode::SUCCESS,
        Ok(Pushed::Now(PushOutcome::AlreadyArchived)) => {
            eprintln!(
                "pgvault-archive: {} was already archived with identical content",
                path.display()
            );
            ExitCode::SUCCESS
        }
        Ok(Pushed::Now(PushOutcome::Repaired)) => {
            eprintln!(
                "pgvault-archive: {}: replaced an unreadable archived copy",
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pgvault-archive: push {} failed: {e:#}", path.display());
            ExitCode::from(1)
        }
    }
}

async fn push_inner(config_path: Option<&Path>, path: &Path) -> anyhow::Result<Pushed> {
    let config = load_config(config_path)?;
    let label = repository_label(&config);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| WalFileName::parse(n).ok());
    let batch = match (pg_wal_of(path), name) {
        (Some(w), Some(n)) if w.join("archive_status").is_dir() => Some((w, n)),
        _ => None,
    };
    let mut extras = Vec::new();
    if let Some((pg_wal, name)) = &batch {
        clean_spool_after_promotion(pg_wal);
        // History, `.backup` and `.partial` files stay synchronous: rare, small, and needed first.
        if config.archive.is_async() && name.kind == WalKind::Segment {
            return Ok(Pushed::Async(
                push_async::foreground(&config, pg_wal, name, path).await?,
            ));
        }
        let markers = PushedMarkers::new(pg_wal);
        if markers.vouches(name, path, &label) {
            markers.remove(name);
            return Ok(Pushed::Earlier);
        }
        if config.archive.push_batch > 1 {
            extras = ready_after(pg_wal, name, config.archive.push_batch - 1);
            extras.retain(|n| !markers.exists(n));
        }
    }
    // Read and compress S on another thread while this one opens the repository (a storage
    // round trip and the memory-hard key derivation): the two overlap.
    let (mut codec, wal_path) = (Repository::wal_codec_for(&config), path.to_path_buf());
    if !extras.is_empty() {
        // S compresses beside the segments stored ahead, one core each.
        codec.zstd_workers = 0;
    }
    let prepare = std::thread::spawn(move || archive::prepare_push(&wal_path, &codec));
    let repo = Repository::open(&config).await;
    let wal = prepare
        .join()
        .map_err(|_| anyhow::anyhow!("the compression thread panicked"))??;
    let repo = std::sync::Arc::new(repo?);
    let Some((pg_wal, _)) = &batch else {
        return Ok(Pushed::Now(archive::push_prepared(&repo, wal).await?));
    };
    let markers = PushedMarkers::new(pg_wal);
    // S takes one of the `push_parallel` slots; with one slot, S first, then the others.
    let (now, ahead) = match config.archive.push_parallel {
        0 | 1 => {
            let now = archive::push_prepared(&repo, wal).await;
            (now, push_ahead(&repo, pg_wal, &extras, 1, &markers, &label).await)
        }
        n => {
            tokio::join!(
                archive::push_prepared(&repo, wal),
                push_ahead(&repo, pg_wal, &extras, n - 1, &markers, &label)
            )
        }
    };
    report(&ahead);
    markers.remove_stale(pg_wal);
    Ok(Pushed::Now(now?))
}

fn report(ahead: &AheadReport) {
    if let (Some(first), Some(last)) = (ahead.stored.first(), ahead.stored.last()) {
        eprintln!(
            "pgvault-archive: stored {} ready segment(s) ahead of PostgreSQL's requests ({first} to {last})",
            ahead.stored.len()
        );
    }
    if let Some((name, e)) = ahead.failed.first() {
        eprintln!(
            "pgvault-archive: {} segment(s) could not be stored ahead (first: {name}: {e}); each is pushed when PostgreSQL asks for it",
            ahead.failed.len()
        );
    }
}

/// A prefetch spool left by recovery is stale once this server archives as a primary (the
/// promotion's `recovery_end_command` did not run or failed). During recovery (a standby with
/// `archive_mode = always`) it is recovery's, and stays.
fn clean_spool_after_promotion(pg_wal: &Path) {
    let Some(data_dir) = pg_wal.parent() else {
        return;
    };
    let data_dir = if data_dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        data_dir
    };
    let recovering = ["standby.signal", "recovery.signal"]
        .iter()
        .any(|s| data_dir.join(s).exists());
    let spool = Spool::new(pg_wal);
    if !recovering && spool.dir().exists() {
        if let Err(e) = spool.remove_all() {
            eprintln!("pgvault-archive: warning: cannot remove the stale prefetch spool: {e}");
        }
    }
}
