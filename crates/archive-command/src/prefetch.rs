//! The prefetch side of `fetch`, and `spool-clean`.
//!
//! After a segment came from the repository, [`ahead`] downloads the next
//! `[archive] get_prefetch` segments recovery will ask for (on the target timeline, as far as
//! the history files recovery fetched tell), `get_parallel` at once, with the repository that
//! call already opened. Each is authenticated and checked as a segment of the cluster before it
//! is written to the spool ([`pgvault_core::archive::spool`]). The first one that is not archived
//! (the end of the archive so far) or that fails (store down, corrupt) ends the window: nothing
//! is written for it, so the later request for it takes the normal path, with its retries and
//! its exit codes. A wrong guess (a timeline switch not foreseen) only costs a download.
//!
//! [`serve`] hands a checked spool entry to PostgreSQL; [`spool_clean`] removes the spool at
//! promotion.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use futures::StreamExt;
use pgvault_core::archive::spool::{segments_after, Spool};
use pgvault_core::archive::{self, write_atomically, ArchiveError};
use pgvault_core::config::ArchiveConfig;
use pgvault_core::repository::Repository;
use pgvault_core::wal::{WalFileName, WalKind};

/// Serves segment `name` from the spool into `dest`; `false` when the spool has no good copy
/// (a bad one is removed, with a line on stderr) and the repository must be asked.
pub fn serve(spool: &Spool, name: &WalFileName, dest: &Path) -> bool {
    if name.kind != WalKind::Segment {
        return false;
    }
    match spool.get(name) {
        Ok(Some(plain)) => match write_atomically(dest, &plain, false) {
            Ok(()) => {
                spool.remove(name);
                true
            }
            Err(e) => {
                eprintln!("pgvault-archive: note: cannot restore {name} from the prefetch spool ({e}); fetching it from the repository");
                false
            }
        },
        Ok(None) => false,
        Err(why) => {
            eprintln!("pgvault-archive: the prefetched copy of {name} failed its check ({why:?}) and was removed; fetching {name} from the repository");
            false
        }
    }
}

/// Downloads the segments after `current` into the spool (see the module documentation). Each
/// segment is a task of its own, so that decryption, decompression and the checks of different
/// segments run on different cores.
pub async fn ahead(repo: &Arc<Repository>, spool: &Spool, current: &WalFileName, cfg: &ArchiveConfig) {
    let segment_size = repo.cluster().wal_segment_size;
    let target = spool.target_history(current.timeline);
    let window = segments_after(current, cfg.get_prefetch, target.as_ref(), segment_size);
    spool.retain(&window);
    let todo: Vec<WalFileName> = window.into_iter().filter(|n| !spool.contains(n)).collect();
    let mut downloads = futures::stream::iter(todo)
        .map(|name| {
            let (repo, spool) = (Arc::clone(repo), spool.clone());
            let task = tokio::spawn(async move { download(&repo, &spool, &name).await });
            async move { (name, task.await) }
        })
        .buffered(cfg.get_parallel.max(1));
    while let Some((name, result)) = downloads.next().await {
        match result {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => break,
            Ok(Err(why)) => {
                eprintln!(
                    "pgvault-archive: note: prefetching {name} failed ({why}); it is fetched when recovery asks for it"
                );
                break;
            }
            Err(e) => {
                eprintln!(
                    "pgvault-archive: note: prefetching {name} failed ({e}); it is fetched when recovery asks for it"
                );
                break;
            }
        }
    }
}

/// Downloads, checks and spools one segment: `Ok(false)` when it is not archived (yet).
async fn download(repo: &Repository, spool: &Spool, name: &WalFileName) -> Result<bool, ArchiveError> {
    match archive::fetch_checked(repo, name).await? {
        Some(plain) => {
            spool.put(name, &plain)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// `spool-clean`: removes `pg_wal/.pgvault/prefetch` of the data directory `data_dir`.
pub fn spool_clean(data_dir: &Path) -> ExitCode {
    let spool = Spool::new(&data_dir.join("pg_wal"));
    match spool.remove_all() {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgvault-archive: spool-clean: {e}");
            ExitCode::from(1)
        }
    }
}
