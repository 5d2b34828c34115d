//! A pgvault set-up for one test: a repository directory, a passphrase file and a configuration
//! file, all owned by `postgres`, plus helpers to run the real binaries against them.
//!
//! Every end-to-end test needs the same four things (cluster, repository, config pointing at
//! both, `archive_command` calling `pgvault-archive`), so they are made here once.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use pgvault_core::repository::layout;
use pgvault_core::wal::WalFileName;

use crate::bins::{default_cmd_timeout, run_workspace_bin, workspace_bin};
use crate::cluster::{ClusterOptions, PgCluster};
use crate::fsutil::{write_postgres_file, TempRepoDir};
use crate::install::PgInstall;
use crate::objstore::ObjStore;
use crate::peakmem::{read_peak_kib, time_args, GNU_TIME};
use crate::process::{postgres_command, run_with_timeout, CmdOutput};

/// Repository, passphrase and configuration for one test.
#[derive(Debug)]
pub struct Vault {
    pub dir: TempRepoDir,
    pub config: PathBuf,
    /// The local repository directory (unused when the vault is on an object store).
    pub repo: PathBuf,
    pub passphrase: PathBuf,
    /// The `[repository]` section body when the repository is on an object store
    /// ([`Vault::with_store`]); `None`: the local directory `repo`.
    pub repository_toml: Option<String>,
    /// Extra `[repository]` lines (e.g. `conditional_create = false`).
    pub repository_extra: String,
    /// The `[compression]` section body (default zstd level 3; `algorithm = "none"` turns it off).
    pub compression_toml: String,
    cloud_prefix: Option<String>,
    /// Where `archive_command` keeps a copy of every file PostgreSQL hands it, before pushing
    /// ([`Vault::keep_archived_copies`]); tests compare fetched bytes with these.
    archived_copies: Option<PathBuf>,
}

impl Vault {
    /// A fresh directory with a passphrase file; the configuration is written by
    /// [`Vault::write_config`].
    pub fn new() -> Result<Vault> {
        let dir = TempRepoDir::with_prefix("pgvault-vault-")?;
        let passphrase = dir.join("passphrase");
        write_postgres_file(&passphrase, "test passphrase, long enough\n", 0o600)?;
        Ok(Vault {
            config: dir.join("pgvault.toml"),
            repo: dir.join("repo"),
            passphrase,
            dir,
            repository_toml: None,
            repository_extra: String::new(),
            compression_toml: "algorithm = \"zstd\"\nlevel = 3\n".to_string(),
            cloud_prefix: None,
            archived_copies: None,
        })
    }

    /// A vault whose repository is a fresh prefix in `store`'s bucket.
    pub fn with_store(store: &ObjStore) -> Result<Vault> {
        let mut v = Vault::new()?;
        let prefix = v
            .dir
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("vault")
            .to_string();
        v.repository_toml = Some(store.repository_toml(&format!("repos/{prefix}")));
        v.cloud_prefix = Some(format!("repos/{prefix}"));
        Ok(v)
    }

    /// [`Vault::new`] for `None`, [`Vault::with_store`] otherwise.
    pub fn on(store: Option<&ObjStore>) -> Result<Vault> {
        match store {
            Some(s) => Vault::with_store(s),
            None => Vault::new(),
        }
    }

    /// The repository's store opened directly (pgvault-core's storage seam, no pgvault format):
    /// what tests use to look at, or damage, stored objects on any backend.
    pub fn raw_storage(&self) -> Result<pgvault_core::storage::Storage> {
        let config = pgvault_core::config::Config::load(Some(&self.config))?;
        Ok(pgvault_core::storage::Storage::open(&config.repository, false)?)
    }

    /// PostgreSQL's rules for a repeated `archive_command`, checked on the stored object of
    /// archived segment `seg` whose original bytes are `original`: the same content pushed
    /// again exits 0 and rewrites nothing; different content under that name exits 1, says why
    /// and leaves the object as it was. `work` holds the pushed copies.
    pub async fn check_duplicate_pushes(&self, seg: &str, original: &[u8], work: &Path) -> Result<()> {
        let raw = self.raw_storage()?;
        let key = wal_key(seg)?;
        let stored = raw
            .get(&key)
            .await
            .with_context(|| format!("{seg} is archived under {key}"))?;
        let before = raw.head(&key).await?.context("head")?;

        let again = work.join(seg);
        write_postgres_file(&again, original, 0o600)?;
        let out = self.archive(["push", &again.display().to_string()])?;
        assert_eq!(out.code(), Some(0), "identical re-push must succeed: {out}");
        assert_eq!(raw.get(&key).await?, stored, "identical re-push rewrote nothing");
        assert_eq!(
            raw.head(&key).await?.context("head")?.last_modified,
            before.last_modified,
            "not even the time changed"
        );

        let mut changed = original.to_vec();
        let last = changed.len() - 1;
        changed[last] ^= 0xff;
        write_postgres_file(&again, &changed, 0o600)?;
        let out = self.archive(["push", &again.display().to_string()])?;
        assert_eq!(out.code(), Some(1), "different content must fail: {out}");
        assert!(out.stderr.contains("different content"), "the message says why: {out}");
        assert_eq!(raw.get(&key).await?, stored, "the archived object is unchanged");
        Ok(())
    }

    /// The key prefix of the repository in the object store's bucket (`None` when local).
    pub fn store_prefix(&self) -> Option<&str> {
        self.cloud_prefix.as_deref()
    }

    /// `archive_command` for a cluster archiving into this vault.
    pub fn archive_command(&self) -> String {
        let push = format!(
            "{} --config {} push %p",
            workspace_bin("pgvault-archive").display(),
            self.config.display()
        );
        match &self.archived_copies {
            Some(dir) => format!("cp %p {}/%f && {push}", dir.display()),
            None => push,
        }
    }

    /// From now on, [`Vault::archive_command`] first copies each file PostgreSQL archives into a
    /// directory of this vault, so that tests can compare what a fetch returns with the bytes
    /// PostgreSQL archived ([`Vault::archived_copy`]). Call before the cluster is created.
    pub fn keep_archived_copies(&mut self) -> Result<()> {
        self.archived_copies = Some(self.dir.subdir("archived-by-postgres")?);
        Ok(())
    }

    /// The bytes PostgreSQL handed `archive_command` for WAL file `name` (see
    /// [`Vault::keep_archived_copies`]).
    pub fn archived_copy(&self, name: &str) -> Result<Vec<u8>> {
        let dir = self
            .archived_copies
            .as_ref()
            .context("keep_archived_copies() was not called")?;
        let path = dir.join(name);
        std::fs::read(&path).with_context(|| format!("PostgreSQL never archived {name} ({})", path.display()))
    }

    /// Writes the configuration for `cluster`; `extra` is appended verbatim (more sections).
    pub fn write_config(&self, cluster: &PgCluster, extra: &str) -> Result<()> {
        self.write_config_to(&self.config, cluster, &self.passphrase, extra)
    }

    /// Writes a configuration like [`Vault::write_config`] to another path, with another
    /// passphrase file (for wrong-passphrase tests).
    pub fn write_config_to(&self, path: &Path, cluster: &PgCluster, passphrase: &Path, extra: &str) -> Result<()> {
        let repository = match &self.repository_toml {
            Some(t) => t.clone(),
            None => format!("url = \"file://{}\"\n", self.repo.display()),
        };
        let text = format!(
            "[postgres]\nhost = \"{}\"\nport = {}\nuser = \"postgres\"\npgdata = \"{}\"\n\n\
             [repository]\n{repository}{}\n[compression]\n{}\n\
             [encryption]\npassphrase_file = \"{}\"\n\n[backup]\narchive_wait_timeout = 120\n{extra}",
            cluster.socket_dir().display(),
            cluster.port(),
            cluster.data_dir().display(),
            self.repository_extra,
            self.compression_toml,
            passphrase.display(),
        );
        write_postgres_file(path, text, 0o600)
    }

    /// Runs `pgvault --config <config> args…` as `postgres`.
    pub fn pgvault<I, S>(&self, args: I) -> Result<CmdOutput>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut all: Vec<std::ffi::OsString> = vec!["--config".into(), self.config.clone().into_os_string()];
        all.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        run_workspace_bin("pgvault", all, &[], default_cmd_timeout())
    }

    /// Runs `pgvault-archive --config <config> args…` as `postgres`.
    pub fn archive<I, S>(&self, args: I) -> Result<CmdOutput>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut all: Vec<std::ffi::OsString> = vec!["--config".into(), self.config.clone().into_os_string()];
        all.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        run_workspace_bin("pgvault-archive", all, &[], default_cmd_timeout())
    }

    /// Runs `pgvault --config <config> args…` as `postgres` like [`Vault::pgvault`], under GNU
    /// time, and returns its output with its peak resident memory in KiB (see
    /// [`crate::peakmem`]).
    pub fn pgvault_peak_memory<I, S>(&self, args: I) -> Result<(CmdOutput, u64)>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let report = self.dir.join("peak-memory.txt");
        let mut cmd = postgres_command(GNU_TIME);
        cmd.args(time_args(&report))
            .arg(workspace_bin("pgvault"))
            .arg("--config")
            .arg(&self.config)
            .args(args);
        let out = run_with_timeout(&mut cmd, default_cmd_timeout())?;
        let kib = read_peak_kib(&report).with_context(|| out.to_string())?;
        Ok((out, kib))
    }

    /// `pgvault list --json`, parsed.
    pub fn list(&self) -> Result<serde_json::Value> {
        let out = self.pgvault(["list", "--json"])?.check()?;
        serde_json::from_str(&out.stdout).with_context(|| format!("list --json printed {}", out.stdout))
    }

    /// The backup ids `list` shows, oldest first.
    pub fn backup_ids(&self) -> Result<Vec<String>> {
        let list = self.list()?;
        Ok(list["backups"]
            .as_array()
            .context("backups[]")?
            .iter()
            .filter_map(|b| b["id"].as_str().map(str::to_string))
            .collect())
    }

    /// Takes a backup and returns its id.
    pub fn backup(&self, extra: &[&str]) -> Result<String> {
        let mut args = vec!["backup"];
        args.extend_from_slice(extra);
        let out = self.pgvault(&args)?.check()?;
        let id = out
            .stdout
            .split_whitespace()
            .nth(1)
            .map(str::to_string)
            .with_context(|| format!("no backup id in: {}", out.stdout))?;
        Ok(id)
    }

    /// A path for a restored data directory (not created).
    pub fn restore_path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Restores with `args` (after `--pgdata DIR`) into a new directory `name`, then opens it as a
    /// cluster (not started) whose archiving is off, so restored copies do not write into the
    /// repository unless a test wants them to (`keep_archiving`).
    pub fn restore(&self, install: &PgInstall, name: &str, args: &[&str], keep_archiving: bool) -> Result<PgCluster> {
        let dir = self.restore_path(name);
        let mut all = vec!["restore".to_string(), "--pgdata".to_string(), dir.display().to_string()];
        all.extend(args.iter().map(|s| s.to_string()));
        self.pgvault(&all)?.check()?;
        if !keep_archiving {
            let auto = dir.join("postgresql.auto.conf");
            let mut text = std::fs::read_to_string(&auto).with_context(|| auto.display().to_string())?;
            text.push_str("archive_mode = off\n");
            write_postgres_file(&auto, text, 0o600)?;
        }
        PgCluster::from_data_dir(install, dir, None)
    }
}

/// The repository key of WAL file `name` (a segment, `.partial`, `.backup` or `.history` file), as
/// pgvault's own layout spells it: tests never format keys by hand.
pub fn wal_key(name: &str) -> Result<String> {
    let parsed = WalFileName::parse(name).map_err(|e| anyhow::anyhow!("{name} is not a WAL file name: {e}"))?;
    Ok(layout::wal_key(&parsed))
}

/// A started cluster that archives into `vault` with `pgvault-archive`, and an initialized
/// repository.
pub async fn archiving_cluster(install: &PgInstall, vault: &Vault, opts: ClusterOptions) -> Result<PgCluster> {
    let mut cluster = PgCluster::init(install, opts.archive_command(vault.archive_command()))?;
    vault.write_config(&cluster, "")?;
    cluster.start()?;
    let out = vault.pgvault(["init"])?;
    if !out.success() {
        bail!("pgvault init failed: {out}");
    }
    Ok(cluster)
}
