//! `pgvault-archive`: PostgreSQL's `archive_command` and `restore_command`.
//!
//! ```text
//! archive_command = 'pgvault-archive push %p'
//! restore_command = 'pgvault-archive fetch %f %p'
//! ```
//! It runs once per WAL segment, so it starts a single-threaded runtime, parses its few
//! arguments by hand and does nothing else. Exit codes are part of the contract with PostgreSQL:
//!
//! | exit | push                         | fetch                                              |
//! |------|------------------------------|----------------------------------------------------|
//! | 0    | stored, or already stored identically | file restored                             |
//! | 1    | failed; PostgreSQL retries   | not in the repository (normal end of the archive)  |
//! | 2    | usage error                  | usage error                                        |
//! | 126  | –                            | real failure (corruption, wrong passphrase, storage down): PostgreSQL aborts recovery instead of ending it early and promoting |

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use pgvault_core::archive::{self, FetchOutcome, PushOutcome};
use pgvault_core::config::Config;
use pgvault_core::repository::Repository;

const USAGE: &str = "usage: pgvault-archive [--config FILE] push WAL_PATH\n       pgvault-archive [--config FILE] fetch WAL_NAME DEST_PATH";
/// Exit status that makes PostgreSQL abort recovery rather than treat the file as missing.
const FETCH_FATAL: u8 = 126;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut config_path: Option<PathBuf> = None;
    let mut rest = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" | "-c" => match args.next() {
                Some(p) => config_path = Some(PathBuf::from(p)),
                None => return usage("--config needs a file"),
            },
            "--version" | "-V" => {
                println!("pgvault-archive {}", pgvault_core::VERSION);
                return ExitCode::SUCCESS;
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ if a.starts_with("--config=") => config_path = Some(PathBuf::from(&a["--config=".len()..])),
            _ => rest.push(a),
        }
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgvault-archive: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    match rest.as_slice() {
        [cmd, path] if cmd == "push" => rt.block_on(push(config_path.as_deref(), Path::new(path))),
        [cmd, name, dest] if cmd == "fetch" => rt.block_on(fetch(config_path.as_deref(), name, Path::new(dest))),
        [] => usage("no command given"),
        _ => usage("unexpected arguments"),
    }
}

fn usage(why: &str) -> ExitCode {
    eprintln!("pgvault-archive: {why}\n{USAGE}");
    ExitCode::from(2)
}

fn load_config(config_path: Option<&Path>) -> anyhow::Result<Config> {
    let config = Config::load(config_path)?;
    for w in &config.warnings {
        eprintln!("pgvault-archive: warning: {w}");
    }
    Ok(config)
}

async fn open(config_path: Option<&Path>) -> anyhow::Result<Repository> {
    let config = load_config(config_path)?;
    Ok(Repository::open(&config).await?)
}

async fn push(config_path: Option<&Path>, path: &Path) -> ExitCode {
    let result = async {
        let config = load_config(config_path)?;
        // Read and compress the segment on another thread while this one opens the repository
        // (a storage round trip and the memory-hard key derivation): the two overlap.
        let (codec, wal_path) = (Repository::codec_for(&config), path.to_path_buf());
        let prepare = std::thread::spawn(move || archive::prepare_push(&wal_path, &codec));
        let repo = Repository::open(&config).await;
        let wal = prepare.join().map_err(|_| anyhow::anyhow!("the compression thread panicked"))??;
        Ok::<_, anyhow::Error>(archive::push_prepared(&repo?, wal).await?)
    }
    .await;
    match result {
        Ok(PushOutcome::Stored { .. }) => ExitCode::SUCCESS,
        Ok(PushOutcome::AlreadyArchived) => {
            eprintln!("pgvault-archive: {} was already archived with identical content", path.display());
            ExitCode::SUCCESS
        }
        Ok(PushOutcome::Repaired) => {
            eprintln!("pgvault-archive: {}: replaced an unreadable archived copy", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pgvault-archive: push {} failed: {e:#}", path.display());
            ExitCode::from(1)
        }
    }
}

async fn fetch(config_path: Option<&Path>, name: &str, dest: &Path) -> ExitCode {
    let result = async {
        let repo = open(config_path).await?;
        Ok::<_, anyhow::Error>(archive::fetch(&repo, name, dest).await?)
    }
    .await;
    match result {
        Ok(FetchOutcome::Restored { .. }) => ExitCode::SUCCESS,
        // Quiet: PostgreSQL asks for files past the end of the archive (and for timelines that
        // never existed) as a matter of course.
        Ok(FetchOutcome::NotFound) => ExitCode::from(1),
        Err(e) => {
            eprintln!("pgvault-archive: fetch {name} failed: {e:#}; recovery is stopped so that it does not end early and promote at the wrong point. Fix the cause and start the server again.");
            ExitCode::from(FETCH_FATAL)
        }
    }
}
