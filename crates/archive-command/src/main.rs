//! `pgvault-archive`: PostgreSQL's `archive_command` and `restore_command`.
//!
//! ```text
//! archive_command = 'pgvault-archive push %p'
//! restore_command = 'pgvault-archive fetch %f %p'
//! recovery_end_command = 'pgvault-archive spool-clean'
//! ```
//! It runs once per WAL segment, so it parses its few arguments by hand and does nothing else;
//! its runtime has a worker per core (at most [`MAX_WORKERS`]) so that the segments of a batch
//! or a prefetch are compressed, encrypted and checked on different cores. To keep up with PostgreSQL anyway, a push also
//! stores the next `.ready` segments ([`push`]) and a fetch downloads the next segments ahead
//! ([`prefetch`]), both with the one repository (and key derivation) the call opened; see
//! `docs/ARCHIVING.md`. Exit codes are part of the contract with PostgreSQL:
//!
//! | exit | push                         | fetch                                              |
//! |------|------------------------------|----------------------------------------------------|
//! | 0    | stored, or already stored identically (or by an earlier batch, checked against the file now) | file restored (from the repository or a checked prefetched copy) |
//! | 1    | failed; PostgreSQL retries   | not in the repository (normal end of the archive); on a standby also: a segment the store could not serve (down, throttled, timing out) after a few retries, so the standby keeps running and asks again |
//! | 2    | usage error                  | usage error                                        |
//! | 126  | –                            | real failure (corruption, wrong passphrase, foreign WAL, bad credentials, storage down outside standby mode, a `.history` file the store could not serve even on a standby): PostgreSQL aborts recovery instead of ending it early and promoting |
//!
//! With `[archive] push_mode = "async"`, `push` hands segments to a detached `push-worker`
//! (internal, started on demand; see [`push_async`]) and exits 0 once the segment is stored
//! (or spooled, or dropped by `archive_push_queue_max`, loudly), 1 otherwise.
//!
//! `spool-clean` (as `recovery_end_command`, run in the data directory) removes the prefetch
//! spool at promotion; it always exits 0 unless the spool cannot be removed (1).
//!
//! Log events of the library go to stderr (PostgreSQL writes them to its log): warnings and
//! errors by default, `--log-level LEVEL` (`error`..`trace`) or a `PGVAULT_LOG` filter for more,
//! and `--log-format json` or `PGVAULT_LOG_FORMAT=json` for one JSON object per line. Setting
//! them up costs microseconds, not a configuration read: this runs once per segment.

mod fetch;
mod prefetch;
mod push;
mod push_async;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use pgvault_core::config::Config;

const USAGE: &str = "usage: pgvault-archive [--config FILE] [--log-level LEVEL] [--log-format text|json] push WAL_PATH\n       pgvault-archive [--config FILE] [--log-level LEVEL] [--log-format text|json] fetch WAL_NAME DEST_PATH\n       pgvault-archive spool-clean";

/// `--log-level` values, least to most output.
const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// The most runtime workers a call uses (batches and prefetch windows are small).
const MAX_WORKERS: usize = 4;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut config_path: Option<PathBuf> = None;
    let mut level: Option<String> = None;
    let mut format: Option<String> = None;
    let mut rest = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" | "-c" => match args.next() {
                Some(p) => config_path = Some(PathBuf::from(p)),
                None => return usage("--config needs a file"),
            },
            "--log-level" => match args.next() {
                Some(l) => level = Some(l),
                None => return usage("--log-level needs a level"),
            },
            "--log-format" => match args.next() {
                Some(f) => format = Some(f),
                None => return usage("--log-format needs text or json"),
            },
            _ if a.starts_with("--log-level=") => level = Some(a["--log-level=".len()..].to_string()),
            _ if a.starts_with("--log-format=") => format = Some(a["--log-format=".len()..].to_string()),
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
    if let Err(why) = init_logging(
        level.as_deref(),
        format.or_else(|| std::env::var("PGVAULT_LOG_FORMAT").ok()).as_deref(),
    ) {
        return usage(&why);
    }
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(MAX_WORKERS));
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgvault-archive: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    match rest.as_slice() {
        [cmd, path] if cmd == "push" => rt.block_on(push::push(config_path.as_deref(), Path::new(path))),
        [cmd, name, dest] if cmd == "fetch" => rt.block_on(fetch::fetch(config_path.as_deref(), name, Path::new(dest))),
        [cmd] if cmd == "spool-clean" => prefetch::spool_clean(Path::new(".")),
        // Internal: started by `fetch` (see the prefetch module), not by users.
        [cmd, current, size, pg_wal] if cmd == "prefetch-worker" => match load_config(config_path.as_deref()) {
            Ok(config) => rt.block_on(prefetch::worker(config, current, size, PathBuf::from(pg_wal))),
            Err(e) => {
                eprintln!("pgvault-archive: prefetch worker: {e:#}");
                ExitCode::from(1)
            }
        },
        // Internal: started by an asynchronous `push` (see the push_async module), not by users.
        [cmd, pg_wal] if cmd == "push-worker" => match load_config(config_path.as_deref()) {
            Ok(config) => rt.block_on(push_async::worker(config, PathBuf::from(pg_wal))),
            Err(e) => {
                eprintln!("pgvault-archive: archive worker: {e:#}");
                ExitCode::from(1)
            }
        },
        [] => usage("no command given"),
        _ => usage("unexpected arguments"),
    }
}

/// The filter directive and whether to write JSON, from `--log-level` (default `warn`) and
/// `--log-format`/`PGVAULT_LOG_FORMAT` (`text`, the default, or `json`); a bad value is a usage
/// error.
fn log_settings(level: Option<&str>, format: Option<&str>) -> Result<(String, bool), String> {
    let level = level.unwrap_or("warn");
    if !LEVELS.contains(&level) {
        return Err(format!("--log-level {level}: use one of {}", LEVELS.join(", ")));
    }
    let json = match format.unwrap_or("text") {
        "text" => false,
        "json" => true,
        other => return Err(format!("log format {other}: use text or json")),
    };
    Ok((level.to_string(), json))
}

/// Installs the stderr log subscriber ([`log_settings`]); `PGVAULT_LOG` (a tracing filter) wins
/// over the level.
fn init_logging(level: Option<&str>, format: Option<&str>) -> Result<(), String> {
    let (level, json) = log_settings(level, format)?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("PGVAULT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init();
    } else {
        builder.init();
    }
    Ok(())
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

/// What identifies the repository in push markers: a marker for another repository (the
/// configuration changed since) is never trusted.
fn repository_label(config: &Config) -> String {
    let r = &config.repository;
    match &r.endpoint {
        Some(e) => format!("{} at {}", r.url.trim(), e.trim()),
        None => r.url.trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_flags() {
        assert_eq!(log_settings(None, None), Ok(("warn".to_string(), false)));
        assert_eq!(
            log_settings(Some("debug"), Some("json")),
            Ok(("debug".to_string(), true))
        );
        assert_eq!(
            log_settings(Some("error"), Some("text")),
            Ok(("error".to_string(), false))
        );
        assert!(log_settings(Some("loud"), None).is_err());
        assert!(
            log_settings(Some("WARN"), None).is_err(),
            "levels are lower-case, as pgvault's"
        );
        assert!(log_settings(None, Some("xml")).is_err());
    }
}
