//! [`PgCluster`]: a throw-away PostgreSQL server for one test.
//!
//! Each test starts its own cluster in its own `postgres`-owned temp directory (data directory,
//! Unix socket directory and server log side by side), on a free TCP port of 127.0.0.1, so tests
//! can run in parallel and leave nothing behind: `Drop` stops the server (immediate mode) and
//! removes the directory (unless `PGVAULT_KEEP_TEST_DIRS` is set).
//!
//! The configuration is what pgvault needs from a production server: `wal_level=replica`, WAL
//! senders for the replication-protocol base backup, `archive_mode=on` with a configurable
//! `archive_command`, and trust authentication for local and 127.0.0.1 replication connections.
//! Data checksums are on (`initdb -k`) so that restores are verified page by page.
//!
//! `fsync` is **off** by default: tests never lose power, only processes (`stop_immediate` is a
//! crash as far as PostgreSQL knows, and the OS page cache keeps every write), so durability to
//! disk buys nothing but minutes of CI time. Set [`ClusterOptions::fsync`] where a test measures
//! something that depends on it.
//!
//! [`PgCluster::from_data_dir`] starts a data directory the cluster did not create, typically one
//! restored by pgvault (with `recovery.signal` and settings in `postgresql.auto.conf`). Port,
//! socket directory and listen address are always given on the `postgres` command line (`pg_ctl
//! -o`), which overrides every configuration file, so a restored copy never collides with its
//! source.
//!
//! Starting, stopping and `pg_ctl status` go through `pgvault_core::pgserver`, the product code
//! `pgvault drill` starts its sandbox servers with, so the harness exercises it in every test.
//!
//! Lifecycle methods are synchronous (usable from `Drop` and from non-async code); SQL helpers
//! are async (tokio-postgres over the Unix socket, as user `postgres`). Blocking calls from a
//! `current_thread` tokio test are fine; use `flavor = "multi_thread"` if a test must keep a
//! client busy while a blocking call runs.

use std::collections::HashSet;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use tokio_postgres::types::FromSql;
use tokio_postgres::{Client, NoTls};

use crate::fsutil::{chown_to_postgres_recursive, keep_test_dirs, TempRepoDir};
use crate::install::PgInstall;
use crate::process::{is_root, postgres_command, run_as_postgres, run_with_timeout, CmdOutput};
use pgvault_core::pgserver::{self, PgBin, ServerSpec, StopMode};

/// How long `pg_ctl start` may wait for the server (recovery of a restored cluster included).
const START_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a stop or a reload may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(120);
/// Lines of the server log quoted in error messages.
const LOG_TAIL_LINES: usize = 40;

/// How to create a cluster with [`PgCluster::init`]. `Default` is the usual test server.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// `archive_mode = on` (default true).
    pub archive_mode: bool,
    /// `archive_command`; `None` means `/bin/true` (WAL is "archived" into the void).
    pub archive_command: Option<String>,
    /// `archive_timeout`, whole seconds; `None` leaves PostgreSQL's default (0, off).
    pub archive_timeout: Option<Duration>,
    /// `fsync` (default false, see the module docs). Also decides `initdb --no-sync`.
    pub fsync: bool,
    /// `initdb --wal-segsize` in MB (power of two, 1..=1024); `None` is PostgreSQL's 16.
    pub wal_segsize_mb: Option<u32>,
    /// Extra `postgresql.conf` lines, appended last (`"name = value"`).
    pub extra_conf: Vec<String>,
    /// Replaces the default `pg_hba.conf` (trust for local and 127.0.0.1, replication included).
    pub hba: Option<Vec<String>>,
    /// Extra `initdb` arguments.
    pub initdb_args: Vec<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            archive_mode: true,
            archive_command: None,
            archive_timeout: None,
            fsync: false,
            wal_segsize_mb: None,
            extra_conf: Vec::new(),
            hba: None,
            initdb_args: Vec::new(),
        }
    }
}

impl ClusterOptions {
    pub fn archive_command(mut self, cmd: impl Into<String>) -> Self {
        self.archive_command = Some(cmd.into());
        self
    }

    pub fn archive_timeout(mut self, t: Duration) -> Self {
        self.archive_timeout = Some(t);
        self
    }

    pub fn fsync(mut self, on: bool) -> Self {
        self.fsync = on;
        self
    }

    pub fn wal_segsize_mb(mut self, mb: u32) -> Self {
        self.wal_segsize_mb = Some(mb);
        self
    }

    /// Appends one `postgresql.conf` line.
    pub fn conf(mut self, line: impl Into<String>) -> Self {
        self.extra_conf.push(line.into());
        self
    }
}

/// Quotes a value for `postgresql.conf` / `-c name='value'`.
pub fn conf_quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "''"))
}

/// A free TCP port on 127.0.0.1 (bound, then released), never handed out twice by this process.
pub fn free_port() -> Result<u16> {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(|| Mutex::new(HashSet::new()));
    for _ in 0..50 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("binding 127.0.0.1:0 to find a free port")?
            .port();
        if given.lock().unwrap_or_else(|e| e.into_inner()).insert(port) {
            return Ok(port);
        }
    }
    bail!("no free port found after 50 attempts")
}

/// The last `n` lines of a file, or a note saying why there are none.
pub fn tail_file(path: &Path, n: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// A PostgreSQL server owned by one test. See the module docs.
#[derive(Debug)]
pub struct PgCluster {
    install: PgInstall,
    /// Holds the socket directory and log (and, for [`PgCluster::init`], the data directory).
    work: TempRepoDir,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_path: PathBuf,
    port: u16,
    /// The port was chosen by the caller: do not move to another one when it is taken.
    fixed_port: bool,
    running: bool,
}

impl PgCluster {
    /// Creates (but does not start) a new cluster: `initdb -k -A trust -U postgres` in a fresh
    /// temp dir, then writes the test configuration.
    pub fn init(install: &PgInstall, opts: ClusterOptions) -> Result<PgCluster> {
        let work = TempRepoDir::with_prefix(&format!("pgvault-pg{}-", install.major()))?;
        let socket_dir = work.subdir("sock")?;
        let data_dir = work.join("data");
        let log_path = work.join("server.log");
        let port = free_port()?;

        let mut args: Vec<String> = vec![
            "-D".into(),
            data_dir.display().to_string(),
            "-k".into(),
            "-A".into(),
            "trust".into(),
            "-U".into(),
            "postgres".into(),
            "-E".into(),
            "UTF8".into(),
            "--locale=C".into(),
        ];
        if !opts.fsync {
            args.push("--no-sync".into());
        }
        if let Some(mb) = opts.wal_segsize_mb {
            args.push(format!("--wal-segsize={mb}"));
        }
        args.extend(opts.initdb_args.iter().cloned());
        run_as_postgres(install.bin("initdb"), &args, Duration::from_secs(300))?
            .check()
            .with_context(|| format!("initdb for PostgreSQL {}", install.version()))?;

        let mut conf = String::from("\n# --- pgvault test harness ---\n");
        let mut set = |k: &str, v: String| conf.push_str(&format!("{k} = {v}\n"));
        set("listen_addresses", conf_quote("127.0.0.1"));
        set("port", port.to_string());
        set("unix_socket_directories", conf_quote(&socket_dir.display().to_string()));
        set("wal_level", "replica".into());
        set("max_wal_senders", "10".into());
        set("max_replication_slots", "10".into());
        set("archive_mode", if opts.archive_mode { "on" } else { "off" }.into());
        set(
            "archive_command",
            conf_quote(opts.archive_command.as_deref().unwrap_or("/bin/true")),
        );
        if let Some(t) = opts.archive_timeout {
            set("archive_timeout", format!("{}s", t.as_secs().max(1)));
        }
        set("fsync", if opts.fsync { "on" } else { "off" }.into());
        set("logging_collector", "off".into());
        set("log_line_prefix", conf_quote("%m [%p] %q%a "));
        set("log_checkpoints", "on".into());
        set("max_connections", "50".into());
        set("shared_buffers", "32MB".into());
        for line in &opts.extra_conf {
            conf.push_str(line);
            conf.push('\n');
        }
        let conf_path = data_dir.join("postgresql.conf");
        let mut existing = fs::read_to_string(&conf_path).with_context(|| format!("read {}", conf_path.display()))?;
        existing.push_str(&conf);
        fs::write(&conf_path, existing).with_context(|| format!("write {}", conf_path.display()))?;

        let hba = opts.hba.clone().unwrap_or_else(|| {
            [
                "local   all          all                 trust",
                "local   replication  all                 trust",
                "host    all          all   127.0.0.1/32  trust",
                "host    replication  all   127.0.0.1/32  trust",
            ]
            .map(String::from)
            .to_vec()
        });
        let hba_path = data_dir.join("pg_hba.conf");
        fs::write(&hba_path, hba.join("\n") + "\n").with_context(|| format!("write {}", hba_path.display()))?;
        chown_to_postgres_recursive(&data_dir)?;

        Ok(PgCluster {
            install: install.clone(),
            work,
            data_dir,
            socket_dir,
            log_path,
            port,
            fixed_port: false,
            running: false,
        })
    }

    /// [`PgCluster::init`] then [`PgCluster::start`].
    pub fn start_new(install: &PgInstall, opts: ClusterOptions) -> Result<PgCluster> {
        let mut c = Self::init(install, opts)?;
        c.start()?;
        Ok(c)
    }

    /// Wraps an existing data directory (e.g. one restored by pgvault) without starting it. The
    /// directory is given to `postgres` (and mode 0700) if it is not already; it is **not**
    /// removed on drop (its owner, e.g. a [`TempRepoDir`], does that). `port` `None` picks a free
    /// one. Socket directory and log live in a new temp dir of their own.
    pub fn from_data_dir(install: &PgInstall, data_dir: impl Into<PathBuf>, port: Option<u16>) -> Result<PgCluster> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let data_dir: PathBuf = data_dir.into();
        let meta = fs::metadata(&data_dir).with_context(|| format!("data directory {}", data_dir.display()))?;
        if !data_dir.join("PG_VERSION").is_file() {
            bail!(
                "{} is not a PostgreSQL data directory (no PG_VERSION)",
                data_dir.display()
            );
        }
        if is_root() && meta.uid() == 0 {
            chown_to_postgres_recursive(&data_dir)?;
        }
        fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod 700 {}", data_dir.display()))?;
        let work = TempRepoDir::with_prefix(&format!("pgvault-pg{}r-", install.major()))?;
        let socket_dir = work.subdir("sock")?;
        let log_path = work.join("server.log");
        let (port, fixed_port) = match port {
            Some(p) => (p, true),
            None => (free_port()?, false),
        };
        Ok(PgCluster {
            install: install.clone(),
            work,
            data_dir,
            socket_dir,
            log_path,
            port,
            fixed_port,
            running: false,
        })
    }

    pub fn install(&self) -> &PgInstall {
        &self.install
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The cluster's temp dir (socket, log, and the data directory of an `init`ed cluster).
    pub fn work_dir(&self) -> &Path {
        self.work.path()
    }

    /// Creates `<work dir>/<name>`, an empty `postgres`-owned directory outside the data
    /// directory, for `CREATE TABLESPACE ... LOCATION`. Removed with the cluster.
    pub fn tablespace_dir(&self, name: &str) -> Result<PathBuf> {
        self.work.subdir(name)
    }

    /// A libpq connection string over the Unix socket, e.g. for a pgvault config.
    pub fn conninfo(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname=postgres",
            self.socket_dir.display(),
            self.port
        )
    }

    /// The last 40 lines of the server log.
    pub fn log_tail(&self) -> String {
        tail_file(&self.log_path, LOG_TAIL_LINES)
    }

    fn error_with_log(&self, what: &str, detail: impl std::fmt::Display) -> anyhow::Error {
        anyhow!(
            "PostgreSQL {} cluster {}: {what}: {detail}\n--- last {LOG_TAIL_LINES} lines of {} ---\n{}",
            self.install.version(),
            self.data_dir.display(),
            self.log_path.display(),
            self.log_tail()
        )
    }

    fn pg_ctl(&self, args: &[&str], timeout: Duration) -> Result<CmdOutput> {
        let mut cmd = postgres_command(self.install.bin("pg_ctl"));
        cmd.arg("-D").arg(&self.data_dir).args(args);
        run_with_timeout(&mut cmd, timeout)
    }

    /// The product's view of this installation (`pgvault_core::pgserver`): starting, stopping
    /// and status go through the same code `pgvault drill` uses.
    fn pg_bin(&self) -> PgBin {
        PgBin {
            dir: self.install.bin_dir().to_path_buf(),
            major: self.install.major(),
        }
    }

    /// Whether a postmaster is running on the data directory (`pg_ctl status`).
    pub fn is_running(&self) -> bool {
        pgserver::is_running(&self.pg_bin(), &self.data_dir)
    }

    /// Starts the server and waits until it accepts connections (for a restored cluster: until
    /// it is consistent, or has finished recovery). Moves to another free port if the port
    /// turned out to be taken (unless the caller chose it).
    pub fn start(&mut self) -> Result<()> {
        for attempt in 1..=3 {
            let spec = ServerSpec {
                data_dir: self.data_dir.clone(),
                socket_dir: self.socket_dir.clone(),
                port: self.port,
                log_file: self.log_path.clone(),
                settings: vec![
                    ("port".to_string(), self.port.to_string()),
                    ("listen_addresses".to_string(), "127.0.0.1".to_string()),
                    (
                        "unix_socket_directories".to_string(),
                        self.socket_dir.display().to_string(),
                    ),
                ],
                user: "postgres".to_string(),
            };
            match pgserver::start(&self.pg_bin(), &spec, START_TIMEOUT) {
                Ok(()) => {
                    self.running = true;
                    return self.wait_ready(Duration::from_secs(60));
                }
                Err(e) => {
                    let tail = self.log_tail();
                    let port_taken = tail.contains("could not bind") || tail.contains("Address already in use");
                    if port_taken && !self.fixed_port && attempt < 3 {
                        eprintln!("port {} was taken; retrying on another", self.port);
                        self.port = free_port()?;
                        continue;
                    }
                    return Err(self.error_with_log("pg_ctl start failed", e));
                }
            }
        }
        unreachable!("the loop returns on its last attempt")
    }

    fn stop_mode(&mut self, mode: StopMode) -> Result<()> {
        pgserver::stop(&self.pg_bin(), &self.data_dir, mode, STOP_TIMEOUT)
            .map_err(|e| self.error_with_log("pg_ctl stop", e))?;
        self.running = false;
        Ok(())
    }

    /// Stops the server cleanly (`-m fast`: a shutdown checkpoint is written).
    pub fn stop(&mut self) -> Result<()> {
        self.stop_mode(StopMode::Fast)
    }

    /// Stops the server as a crash would (`-m immediate`: no shutdown checkpoint; crash
    /// recovery on next start).
    pub fn stop_immediate(&mut self) -> Result<()> {
        self.stop_mode(StopMode::Immediate)
    }

    /// [`PgCluster::stop`] then [`PgCluster::start`].
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.start()
    }

    /// Re-reads the configuration files (`pg_ctl reload`).
    pub fn reload(&self) -> Result<()> {
        self.pg_ctl(&["reload"], STOP_TIMEOUT)?
            .check()
            .map(|_| ())
            .map_err(|e| self.error_with_log("pg_ctl reload", e))
    }

    /// Waits until the server accepts connections (`pg_isready`), failing early with the log if
    /// the server is gone.
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut cmd = std::process::Command::new(self.install.tool("pg_isready"));
            cmd.arg("-h").arg(&self.socket_dir).args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-t",
                "5",
            ]);
            let out = run_with_timeout(&mut cmd, Duration::from_secs(30))?;
            if out.success() {
                return Ok(());
            }
            if !self.data_dir.join("postmaster.pid").exists() {
                return Err(self.error_with_log("server is not running", out));
            }
            if Instant::now() > deadline {
                return Err(self.error_with_log(&format!("not ready after {timeout:?}"), out));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // ------------------------------------------------------------------ SQL

    /// A new connection to database `postgres` as user `postgres` over the Unix socket. Needs a
    /// tokio runtime (the connection task is spawned on it).
    pub async fn client(&self) -> Result<Client> {
        self.client_db("postgres").await
    }

    /// A new connection to database `dbname`.
    pub async fn client_db(&self, dbname: &str) -> Result<Client> {
        let (client, conn) = tokio_postgres::Config::new()
            .host_path(&self.socket_dir)
            .port(self.port)
            .user("postgres")
            .dbname(dbname)
            .application_name("pgvault-tests")
            .connect_timeout(Duration::from_secs(30))
            .connect(NoTls)
            .await
            .map_err(|e| self.error_with_log("connect", e))?;
        tokio::spawn(async move {
            // Errors surface on the client's next call; nothing to do here.
            let _ = conn.await;
        });
        Ok(client)
    }

    /// The single value of a one-row, one-column query, e.g.
    /// `query_scalar::<i64>("SELECT count(*) FROM t")`.
    pub async fn query_scalar<T>(&self, sql: &str) -> Result<T>
    where
        T: for<'a> FromSql<'a>,
    {
        let client = self.client().await?;
        let row = client
            .query_one(sql, &[])
            .await
            .with_context(|| format!("query `{sql}`"))?;
        row.try_get(0).with_context(|| format!("column 0 of `{sql}`"))
    }

    /// Runs one or more statements (simple query protocol, no results).
    pub async fn execute(&self, sql: &str) -> Result<()> {
        let client = self.client().await?;
        client
            .batch_execute(sql)
            .await
            .with_context(|| format!("execute `{sql}`"))
    }

    /// `pg_switch_wal()`; returns the name of the segment switched *from* (the one now ready to
    /// be archived). If nothing was written since the last switch, that is the previous segment.
    pub async fn switch_wal(&self) -> Result<String> {
        self.query_scalar("SELECT pg_walfile_name(pg_switch_wal())").await
    }

    /// `pg_current_wal_lsn()` as text, e.g. `0/3000148`.
    pub async fn current_lsn(&self) -> Result<String> {
        self.query_scalar("SELECT pg_current_wal_lsn()::text").await
    }

    /// `pg_create_restore_point(name)`; returns its LSN as text.
    pub async fn create_restore_point(&self, name: &str) -> Result<String> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT pg_create_restore_point($1)::text", &[&name])
            .await
            .context("pg_create_restore_point")?;
        Ok(row.try_get(0)?)
    }

    /// `txid_current()` (assigns a transaction id, so it also writes a commit record).
    pub async fn txid_current(&self) -> Result<i64> {
        self.query_scalar("SELECT txid_current()").await
    }

    /// The server's wall clock (`clock_timestamp()`, not the transaction start `now()`), for
    /// recovery target times that must fall between two commits.
    pub async fn now(&self) -> Result<DateTime<Utc>> {
        self.query_scalar("SELECT clock_timestamp()").await
    }

    /// `CHECKPOINT`.
    pub async fn checkpoint(&self) -> Result<()> {
        self.execute("CHECKPOINT").await
    }

    /// `ALTER SYSTEM SET name = 'value'` then `pg_reload_conf()`.
    pub async fn alter_system(&self, name: &str, value: &str) -> Result<()> {
        self.execute(&format!("ALTER SYSTEM SET {name} = {}", conf_quote(value)))
            .await?;
        self.execute("SELECT pg_reload_conf()").await
    }

    /// `pg_is_in_recovery()`.
    pub async fn is_in_recovery(&self) -> Result<bool> {
        self.query_scalar("SELECT pg_is_in_recovery()").await
    }

    /// Waits until the server has left recovery (reached its target and promoted). Fails with
    /// the server log if the server exits meanwhile (e.g. missing WAL, or
    /// `recovery_target_action = shutdown`) or on timeout.
    pub async fn wait_for_recovery_end(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.is_in_recovery().await {
                Ok(false) => return Ok(()),
                Ok(true) => {}
                Err(e) if !self.data_dir.join("postmaster.pid").exists() => {
                    return Err(self.error_with_log("server exited during recovery", e));
                }
                Err(_) => {}
            }
            if Instant::now() > deadline {
                return Err(self.error_with_log(&format!("still in recovery after {timeout:?}"), ""));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Writes some WAL, switches to a new segment and waits until the finished one is archived;
    /// returns its name. The archive-contract tests push and fetch that real segment.
    pub async fn archive_fresh_segment(&self) -> Result<String> {
        self.execute("CREATE TABLE IF NOT EXISTS filler (x text)").await?;
        self.execute("INSERT INTO filler SELECT md5(g::text) FROM generate_series(1, 2000) g")
            .await?;
        let seg = self.switch_wal().await?;
        self.wait_for_archived(&seg, Duration::from_secs(60)).await?;
        Ok(seg)
    }

    /// Waits until `pg_stat_archiver` reports `segment` (or a later one) archived. Fails with
    /// the archiver's last failure and the server log on timeout.
    pub async fn wait_for_archived(&self, segment: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let client = self.client().await?;
            let row = client
                .query_one(
                    "SELECT coalesce(last_archived_wal, ''), failed_count, \
                     coalesce(last_failed_wal, '') FROM pg_stat_archiver",
                    &[],
                )
                .await
                .context("pg_stat_archiver")?;
            let last: String = row.try_get(0)?;
            // Same-timeline segment names (24 hex digits) sort like their positions.
            if last.len() >= 24 && last.as_bytes()[..24] >= *segment.as_bytes() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let failed: i64 = row.try_get(1)?;
                let last_failed: String = row.try_get(2)?;
                return Err(self.error_with_log(
                    &format!("{segment} not archived after {timeout:?}"),
                    format!("last archived {last:?}, {failed} failures, last failed {last_failed:?}"),
                ));
            }
            drop(client);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // ------------------------------------------------------------------ tools

    /// Whether [`PgCluster::pg_amcheck`] really checks anything on this installation.
    pub fn amcheck_available(&self) -> bool {
        self.install.has_amcheck()
    }

    /// `pg_amcheck --all --install-missing --heapallindexed` against the running server (all
    /// databases, heap and B-tree indexes). Installs the `amcheck` extension where missing, so
    /// the server must not be in recovery. On an installation named in
    /// [`crate::install::AMCHECK_EXCEPTIONS`] (PostgreSQL 16 from the pgserver wheel) it prints a
    /// `NOTICE` naming the exception and returns `Ok`; any other installation without amcheck is
    /// an error (in CI too: see [`crate::install::missing_dependency`]).
    pub fn pg_amcheck(&self) -> Result<()> {
        if !self.amcheck_available() {
            if let Some(why) = self.install.amcheck_exception() {
                eprintln!(
                    "NOTICE: pg_amcheck not run on PostgreSQL {} at {}: known exception: {why}",
                    self.install.version(),
                    self.install.bin_dir().display()
                );
                return Ok(());
            }
            bail!(
                "PostgreSQL {} at {} has no amcheck extension or pg_amcheck (install its contrib \
                 package); only the installations in AMCHECK_EXCEPTIONS may lack it",
                self.install.version(),
                self.install.bin_dir().display()
            );
        }
        let port = self.port.to_string();
        let args: Vec<&std::ffi::OsStr> = vec![
            "-h".as_ref(),
            self.socket_dir.as_os_str(),
            "-p".as_ref(),
            port.as_ref(),
            "-U".as_ref(),
            "postgres".as_ref(),
            "--all".as_ref(),
            "--install-missing".as_ref(),
            "--heapallindexed".as_ref(),
        ];
        let out = run_as_postgres(self.install.tool("pg_amcheck"), args, Duration::from_secs(600))?;
        if !out.success() || !out.stdout.trim().is_empty() {
            return Err(self.error_with_log("pg_amcheck found problems", out));
        }
        Ok(())
    }

    /// `pg_verifybackup` of this installation; see [`PgInstall::pg_verifybackup`].
    pub fn pg_verifybackup(&self, backup_dir: &Path, manifest: Option<&Path>) -> Result<Option<CmdOutput>> {
        self.install.pg_verifybackup(backup_dir, manifest)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running || self.data_dir.join("postmaster.pid").exists() {
            if let Err(e) = self.stop_immediate() {
                eprintln!("warning: cannot stop test cluster: {e:#}");
            }
        }
        if keep_test_dirs() {
            eprintln!(
                "PGVAULT_KEEP_TEST_DIRS: cluster data {} log {}",
                self.data_dir.display(),
                self.log_path.display()
            );
        }
        // `self.work` (socket, log, data of an init'ed cluster) is removed by its own Drop.
    }
}
