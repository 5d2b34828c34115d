//! Locating and running the workspace's own binaries (`pgvault`, `pgvault-archive`).
//!
//! Integration tests exercise the real binaries, exactly as an operator or PostgreSQL's
//! `archive_command` would, rather than calling library functions: argument parsing, exit codes
//! and messages are part of what we test. `scripts/test.sh` builds them (`cargo build --workspace
//! --bins`) before `cargo test`, because Cargo only builds binaries of the package under test.
//!
//! They run as the `postgres` OS user, as in production: `archive_command` runs as `postgres`
//! and the repository must belong to the same user as the cluster.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};

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

/// The path of workspace binary `name` (`pgvault` or `pgvault-archive`). It may not exist yet:
/// [`run_workspace_bin`] says how to build it.
pub fn workspace_bin(name: &str) -> PathBuf {
    target_profile_dir().join(name)
}

/// Runs workspace binary `name` as `postgres` with `args`, extra environment `envs`, and
/// `timeout`. Returns the output whatever the exit status ([`CmdOutput::check`] for success).
pub fn run_workspace_bin<I, S>(
    name: &str,
    args: I,
    envs: &[(&str, &OsStr)],
    timeout: Duration,
) -> Result<CmdOutput>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let bin = workspace_bin(name);
    if !bin.is_file() {
        bail!(
            "{} does not exist: build it first with `cargo build --workspace --bins` \
             (scripts/test.sh does)",
            bin.display()
        );
    }
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
    let envs: Vec<(&str, &OsStr)> = config
        .map(|c| ("PGVAULT_CONFIG", c.as_os_str()))
        .into_iter()
        .collect();
    run_workspace_bin("pgvault", args, &envs, default_cmd_timeout())
}

/// Runs `pgvault-archive args...` as `postgres`; like [`run_pgvault`].
pub fn run_pgvault_archive<I, S>(args: I, config: Option<&Path>) -> Result<CmdOutput>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let envs: Vec<(&str, &OsStr)> = config
        .map(|c| ("PGVAULT_CONFIG", c.as_os_str()))
        .into_iter()
        .collect();
    run_workspace_bin("pgvault-archive", args, &envs, default_cmd_timeout())
}
