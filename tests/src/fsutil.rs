//! Temporary directories and files that the `postgres` OS user can use.
//!
//! Tests run as root but PostgreSQL and pgvault run as `postgres` (see [`crate::process`]), so
//! every directory they touch (data directories, socket directories, repositories, restore
//! targets, configuration files) must be owned by `postgres`. Everything here is created under
//! [`test_tmp_base`] and removed on drop unless `PGVAULT_KEEP_TEST_DIRS` is set.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::process::{is_root, run_with_timeout, POSTGRES_USER};

/// Whether `PGVAULT_KEEP_TEST_DIRS` asks to keep temp dirs for post-mortem.
pub fn keep_test_dirs() -> bool {
    std::env::var_os("PGVAULT_KEEP_TEST_DIRS").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Where temp dirs are created: `$PGVAULT_TEST_TMPDIR`, else `/tmp`. Not `$TMPDIR`, which may
/// point somewhere `postgres` cannot reach; and it must stay short, because the cluster's Unix
/// socket lives below it (107-byte limit).
pub fn test_tmp_base() -> PathBuf {
    std::env::var_os("PGVAULT_TEST_TMPDIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"))
}

/// The uid/gid of the `postgres` user, or `None` when we are not root (nothing to change).
fn postgres_ids() -> Result<Option<(u32, u32)>> {
    if !is_root() {
        return Ok(None);
    }
    let user = nix::unistd::User::from_name(POSTGRES_USER)
        .with_context(|| format!("looking up OS user {POSTGRES_USER}"))?
        .with_context(|| format!("OS user {POSTGRES_USER} does not exist: run scripts/install-test-deps.sh"))?;
    Ok(Some((user.uid.as_raw(), user.gid.as_raw())))
}

/// Makes `path` (not its contents) owned by `postgres`; a no-op when not root.
pub fn chown_to_postgres(path: &Path) -> Result<()> {
    if let Some((uid, gid)) = postgres_ids()? {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
            .with_context(|| format!("chown postgres {}", path.display()))?;
    }
    Ok(())
}

/// Makes `path` and everything below it owned by `postgres` (symlinks themselves, not their
/// targets); a no-op when not root.
pub fn chown_to_postgres_recursive(path: &Path) -> Result<()> {
    let Some((uid, gid)) = postgres_ids()? else {
        return Ok(());
    };
    fn walk(p: &Path, uid: u32, gid: u32) -> Result<()> {
        std::os::unix::fs::lchown(p, Some(uid), Some(gid))
            .with_context(|| format!("chown postgres {}", p.display()))?;
        let meta = fs::symlink_metadata(p).with_context(|| format!("stat {}", p.display()))?;
        if meta.is_dir() {
            for entry in fs::read_dir(p).with_context(|| format!("read dir {}", p.display()))? {
                let entry = entry.with_context(|| format!("read dir {}", p.display()))?;
                walk(&entry.path(), uid, gid)?;
            }
        }
        Ok(())
    }
    walk(path, uid, gid)
}

/// Writes `contents` to `path` with `mode` (e.g. `0o600` for a config holding secrets), owned
/// by `postgres`.
pub fn write_postgres_file(path: &Path, contents: impl AsRef<[u8]>, mode: u32) -> Result<()> {
    fs::write(path, contents).with_context(|| format!("write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))?;
    chown_to_postgres(path)
}

/// Copies directory `src` to `dst` (which must not exist) preserving modes, then gives the copy
/// to `postgres`: e.g. to start a copy of a stopped data directory.
pub fn copy_dir_for_postgres(src: &Path, dst: &Path) -> Result<()> {
    if dst.exists() {
        bail!("copy destination {} already exists", dst.display());
    }
    let out = run_with_timeout(
        std::process::Command::new("cp").arg("-a").arg(src).arg(dst),
        Duration::from_secs(300),
    )?;
    out.check()?;
    chown_to_postgres_recursive(dst)
}

/// A temporary directory owned by `postgres` (mode 0700), removed on drop unless
/// `PGVAULT_KEEP_TEST_DIRS` is set. Used for local repositories, restore targets and, inside
/// [`crate::PgCluster`], for data/socket/log directories.
#[derive(Debug)]
pub struct TempRepoDir {
    path: PathBuf,
}

impl TempRepoDir {
    /// A new directory `<test_tmp_base>/pgvault-repo-XXXXXX`.
    pub fn new() -> Result<Self> {
        Self::with_prefix("pgvault-repo-")
    }

    /// A new directory `<test_tmp_base>/<prefix>XXXXXX`.
    pub fn with_prefix(prefix: &str) -> Result<Self> {
        let base = test_tmp_base();
        fs::create_dir_all(&base).with_context(|| format!("create {}", base.display()))?;
        let path = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&base)
            .with_context(|| format!("create temp dir in {}", base.display()))?
            .keep();
        let dir = TempRepoDir { path };
        fs::set_permissions(&dir.path, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod 700 {}", dir.path.display()))?;
        chown_to_postgres(&dir.path)?;
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `self.path().join(p)`.
    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }

    /// Creates the subdirectory `name`, owned by `postgres`, and returns its path.
    pub fn subdir(&self, name: &str) -> Result<PathBuf> {
        let p = self.path.join(name);
        fs::create_dir_all(&p).with_context(|| format!("create {}", p.display()))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod 700 {}", p.display()))?;
        chown_to_postgres(&p)?;
        Ok(p)
    }
}

impl Drop for TempRepoDir {
    fn drop(&mut self) {
        if keep_test_dirs() {
            eprintln!("PGVAULT_KEEP_TEST_DIRS: keeping {}", self.path.display());
        } else if let Err(e) = fs::remove_dir_all(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("warning: cannot remove {}: {e}", self.path.display());
            }
        }
    }
}
