//! Locating and running the workspace's own binaries (`pgvault`, `pgvault-archive`).
//!
//! Integration tests exercise the real binaries, exactly as an operator or PostgreSQL's
//! `archive_command` would, rather than calling library functions: argument parsing, exit codes
//! and messages are part of what we test. `scripts/test.sh` builds them (`cargo build --workspace
//! --bins`) before `cargo test`, because Cargo only builds binaries of the package under test.
//!
//! A binary older than the newest source file of the crates it is built from
//! ([`binary_sources`], and the workspace `Cargo.toml`/`Cargo.lock`) is
//! refused with a panic ("run cargo build --workspace --bins"): a test that runs yesterday's
//! `pgvault` proves nothing about today's code. The check runs once per binary per test process.
//!
//! They run as the `postgres` OS user, as in production: `archive_command` runs as `postgres`
//! and the repository must belong to the same user as the cluster.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use anyhow::Result;

use crate::install::workspace_root;
use crate::process::{postgres_command, run_with_timeout, CmdOutput};

/// Default timeout for one pgvault invocation (`PGVAULT_TEST_CMD_TIMEOUT_SECS` overrides).
pub fn default_cmd_timeout() -> Duration {
    let secs = std::env::var("PGVAULT_TEST_CMD_TIMEOUT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    Duration::from_secs(secs)
}

/// The directory holding the built binaries (`target/debug`, or the profile being tested):
/// the parent of the test executable's `deps/` directory when that is where we run from (it
/// follows `CARGO_TARGET_DIR`, `--release` and `--target` automatically), else
/// `$CARGO_TARGET_DIR/debug`, else `<workspace>/target/debug`.
pub fn target_profile_dir() -> PathBuf {
    if let Ok(exe) = std::env::current_exe() {
        if let Some(deps) = exe.parent() {
            if deps.file_name() == Some(OsStr::new("deps")) {
                if let Some(profile) = deps.parent() {
                    return profile.to_path_buf();
                }
            }
        }
    }
    let target = match std::env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
        Some(t) => {
            let t = PathBuf::from(t);
            if t.is_absolute() {
                t
            } else {
                workspace_root().join(t)
            }
        }
        None => workspace_root().join("target"),
    };
    target.join("debug")
}

/// What each workspace binary is built from, relative to the workspace root: its own crate,
/// the crates it depends on, and the workspace `Cargo.toml`/`Cargo.lock`. Per binary, so that an
/// edit of the CLI does not make `pgvault-archive` look stale (Cargo would not relink it).
pub fn binary_sources(name: &str) -> &'static [&'static str] {
    match name {
        "pgvault-archive" => &["crates/core", "crates/archive-command", "Cargo.toml", "Cargo.lock"],
        _ => &["crates/core", "crates/ops", "crates/cli", "Cargo.toml", "Cargo.lock"],
    }
}

/// The newest modification time of a file under `path` (itself if a file), skipping `target`
/// directories and dot-files; with the file that has it.
pub fn newest_file(path: &Path) -> Option<(SystemTime, PathBuf)> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if meta.is_file() {
        return Some((meta.modified().ok()?, path.to_path_buf()));
    }
    if !meta.is_dir() {
        return None;
    }
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(path).ok()?.flatten() {
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if let Some(found) = newest_file(&entry.path()) {
            if newest.as_ref().is_none_or(|(t, _)| found.0 > *t) {
                newest = Some(found);
            }
        }
    }
    newest
}

/// `Err` (with what to run) when binary `bin` is missing or older than any of `sources`
/// (paths relative to `root`).
pub fn check_fresh(bin: &Path, root: &Path, sources: &[&str]) -> std::result::Result<(), String> {
    let built = std::fs::metadata(bin).and_then(|m| m.modified()).map_err(|e| {
        format!(
            "{} cannot be used ({e}): run cargo build --workspace --bins",
            bin.display()
        )
    })?;
    let newest = sources
        .iter()
        .filter_map(|s| newest_file(&root.join(s)))
        .max_by_key(|(t, _)| *t);
    match newest {
        Some((t, file)) if t > built => Err(format!(
            "{} is older than {} (stale build): run cargo build --workspace --bins \
             (scripts/test.sh does)",
            bin.display(),
            file.display()
        )),
        _ => Ok(()),
    }
}

/// The path of workspace binary `name` (`pgvault` or `pgvault-archive`), checked to exist and be
/// newer than its sources (once per test process).
///
/// # Panics
/// When the binary is missing or stale: "run cargo build --workspace --bins".
pub fn workspace_bin(name: &str) -> PathBuf {
    static CHECKED: OnceLock<Mutex<HashMap<String, Result<(), String>>>> = OnceLock::new();
    let bin = target_profile_dir().join(name);
    let checked = CHECKED.get_or_init(|| Mutex::new(HashMap::new()));
    let verdict = checked
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(name.to_string())
        .or_insert_with(|| check_fresh(&bin, &workspace_root(), binary_sources(name)))
        .clone();
    if let Err(e) = verdict {
        panic!("{e}");
    }
    bin
}

/// Runs workspace binary `name` as `postgres` with `args`, extra environment `envs`, and
/// `timeout`. Returns the output whatever the exit status ([`CmdOutput::check`] for success).
pub fn run_workspace_bin<I, S>(name: &str, args: I, envs: &[(&str, &OsStr)], timeout: Duration) -> Result<CmdOutput>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let bin = workspace_bin(name);
    let mut cmd = postgres_command(&bin);
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    run_with_timeout(&mut cmd, timeout)
}

/// Runs `pgvault args...` as `postgres`, with `PGVAULT_CONFIG` set to `config` when given (the
/// file must be readable by `postgres`: see [`crate::write_postgres_file`]).
pub fn run_pgvault<I, S>(args: I, config: Option<&Path>) -> Result<CmdOutput>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let envs: Vec<(&str, &OsStr)> = config.map(|c| ("PGVAULT_CONFIG", c.as_os_str())).into_iter().collect();
    run_workspace_bin("pgvault", args, &envs, default_cmd_timeout())
}

/// Runs `pgvault-archive args...` as `postgres`; like [`run_pgvault`].
pub fn run_pgvault_archive<I, S>(args: I, config: Option<&Path>) -> Result<CmdOutput>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let envs: Vec<(&str, &OsStr)> = config.map(|c| ("PGVAULT_CONFIG", c.as_os_str())).into_iter().collect();
    run_workspace_bin("pgvault-archive", args, &envs, default_cmd_timeout())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    fn touch(path: &Path, secs_ago: u64) {
        let f = File::create(path).expect("create");
        f.set_modified(SystemTime::now() - Duration::from_secs(secs_ago))
            .expect("set mtime");
    }

    #[test]
    fn a_binary_older_than_a_source_is_stale() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("crates/core/src");
        std::fs::create_dir_all(&src).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("crates/core/target")).expect("mkdir");
        touch(&src.join("lib.rs"), 100);
        touch(&dir.path().join("crates/core/target/ignored"), 0);
        let bin = dir.path().join("pgvault");
        touch(&bin, 50);
        assert_eq!(check_fresh(&bin, dir.path(), &["crates/core"]), Ok(()));
        touch(&src.join("lib.rs"), 10);
        let err = check_fresh(&bin, dir.path(), &["crates/core"]).expect_err("stale");
        assert!(
            err.contains("run cargo build --workspace --bins") && err.contains("lib.rs"),
            "{err}"
        );
        let err = check_fresh(&dir.path().join("missing"), dir.path(), &["crates/core"]).expect_err("missing");
        assert!(err.contains("run cargo build --workspace --bins"), "{err}");
    }
}
