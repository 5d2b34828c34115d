//! Starting, waiting for and stopping a PostgreSQL server: product code, because restore drills
//! start a throwaway server on a restored data directory (and the test harness does the same).
//!
//! Binaries are found for a major version (`--pg-bin` override, then `PGVAULT_PG_BIN_<major>`,
//! then `/usr/lib/postgresql/<major>/bin`, `/usr/pgsql-<major>/bin`, then `PATH`), each candidate
//! accepted only when its `postgres --version` reports that major. Run as root, every program runs
//! as the `postgres` OS user (`runuser -u postgres --`), since PostgreSQL refuses to run as root.
//! Settings are given on the `postgres` command line (`pg_ctl -o "-c name=value"`): they win over
//! `postgresql.conf` and `postgresql.auto.conf`, so a restored configuration cannot override them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Errors of starting, querying and stopping a server.
#[derive(Debug, thiserror::Error)]
pub enum PgServerError {
    #[error("no PostgreSQL {major} installation found (looked in {looked}); install it or pass --pg-bin DIR")]
    NotFound { major: u32, looked: String },
    #[error("{dir} holds PostgreSQL {found}, not {major}: the backup needs its own major version")]
    WrongMajor { dir: PathBuf, major: u32, found: String },
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("the server did not start: {detail}\nserver log (last lines):\n{log}")]
    StartFailed { detail: String, log: String },
    #[error(
        "recovery did not finish within {waited:?}: the server is still in recovery\nserver log (last lines):\n{log}"
    )]
    RecoveryTimeout { waited: Duration, log: String },
    #[error("the server stopped during recovery\nserver log (last lines):\n{log}")]
    DiedInRecovery { log: String },
    #[error("query failed: {message}")]
    Query { message: String },
    #[error("the server did not stop: {detail}")]
    StopFailed { detail: String },
    #[error("setting {name}: value {value:?} cannot be passed on a command line (quote, line break or NUL)")]
    BadSetting { name: String, value: String },
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The `bin` directory of one PostgreSQL installation.
#[derive(Debug, Clone)]
pub struct PgBin {
    pub dir: PathBuf,
    pub major: u32,
}

/// The major version in `postgres (PostgreSQL) 15.8 (Debian ...)`.
pub fn parse_major(version_output: &str) -> Option<u32> {
    let rest = version_output.split("PostgreSQL)").nth(1)?.trim();
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

impl PgBin {
    /// Finds the binaries of `major`; `override_dir` (from `--pg-bin`) is the only candidate when given.
    pub fn find(major: u32, override_dir: Option<&Path>) -> Result<PgBin, PgServerError> {
        if let Some(dir) = override_dir {
            let dir = std::path::absolute(dir).map_err(|source| PgServerError::Io {
                what: "resolve",
                path: dir.to_path_buf(),
                source,
            })?;
            return Self::check(&dir, major);
        }
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(d) = std::env::var_os(format!("PGVAULT_PG_BIN_{major}")) {
            candidates.push(PathBuf::from(d));
        }
        candidates.push(PathBuf::from(format!("/usr/lib/postgresql/{major}/bin")));
        candidates.push(PathBuf::from(format!("/usr/pgsql-{major}/bin")));
        if let Some(path) = std::env::var_os("PATH") {
            candidates.extend(std::env::split_paths(&path));
        }
        for dir in &candidates {
            if dir.join("postgres").is_file() {
                if let Ok(bin) = Self::check(dir, major) {
                    return Ok(bin);
                }
            }
        }
        let looked: Vec<String> = candidates.iter().take(3).map(|p| p.display().to_string()).collect();
        Err(PgServerError::NotFound {
            major,
            looked: format!("{}, PATH", looked.join(", ")),
        })
    }

    fn check(dir: &Path, major: u32) -> Result<PgBin, PgServerError> {
        let postgres = dir.join("postgres");
        let out = Command::new(&postgres)
            .arg("--version")
            .output()
            .map_err(|source| PgServerError::Spawn {
                program: postgres.display().to_string(),
                source,
            })?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        match parse_major(&text) {
            Some(m) if m == major => Ok(PgBin {
                dir: dir.to_path_buf(),
                major,
            }),
            _ => Err(PgServerError::WrongMajor {
                dir: dir.to_path_buf(),
                major,
                found: text.trim().to_string(),
            }),
        }
    }

    /// The path of program `name` in this installation.
    pub fn tool(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Whether the installation has program `name` (e.g. `pg_amcheck`).
    pub fn has(&self, name: &str) -> bool {
        self.tool(name).is_file()
    }
}

/// Whether this process runs as root (programs then run as the `postgres` OS user).
pub fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The OS user the server runs as: `postgres` under root, else the current user.
pub fn server_os_user() -> String {
    if running_as_root() {
        return "postgres".to_string();
    }
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map_or_else(|| "postgres".to_string(), |u| u.name)
}

/// A command for `program`, run as `postgres` when we are root (from `/`: the caller's working
/// directory may be closed to `postgres`, and PostgreSQL's tools look it up; every path given to
/// them is absolute).
pub fn server_command(program: &Path) -> Command {
    if running_as_root() {
        let runuser = ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("runuser");
        let mut c = Command::new(runuser);
        c.args(["-u", "postgres", "--"]).arg(program).current_dir("/");
        c
    } else {
        Command::new(program)
    }
}

/// Gives `path` and everything under it to the `postgres` OS user (when we are root).
pub fn chown_to_server_user(path: &Path) -> Result<(), PgServerError> {
    if !running_as_root() {
        return Ok(());
    }
    let user = nix::unistd::User::from_name("postgres")
        .ok()
        .flatten()
        .ok_or_else(|| PgServerError::Io {
            what: "give to the postgres user",
            path: path.to_path_buf(),
            source: std::io::Error::other("there is no postgres OS user"),
        })?;
    chown_tree(path, user.uid, user.gid)
}

fn chown_tree(path: &Path, uid: nix::unistd::Uid, gid: nix::unistd::Gid) -> Result<(), PgServerError> {
    let io = |source: std::io::Error| PgServerError::Io {
        what: "change the owner of",
        path: path.to_path_buf(),
        source,
    };
    std::os::unix::fs::lchown(path, Some(uid.as_raw()), Some(gid.as_raw())).map_err(io)?;
    let meta = std::fs::symlink_metadata(path).map_err(io)?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).map_err(io)? {
            chown_tree(&entry.map_err(io)?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Runs a prepared command with a time limit, collecting its output.
pub fn output_with_timeout(mut cmd: Command, timeout: Duration) -> Result<Output, PgServerError> {
    let program = format!("{:?}", cmd.get_program());
    let spawn = |source| PgServerError::Spawn {
        program: program.clone(),
        source,
    };
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn)?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.map_err(spawn),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            Err(spawn(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {timeout:?}"),
            )))
        }
    }
}

/// Where and how a server runs.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub data_dir: PathBuf,
    /// The directory of its Unix socket (the only way in: `listen_addresses = ''`).
    pub socket_dir: PathBuf,
    pub port: u16,
    pub log_file: PathBuf,
    /// `-c name=value` settings on the command line.
    pub settings: Vec<(String, String)>,
    /// The role psql connects as.
    pub user: String,
}

/// A server started by [`Server::start`]; [`Server::stop`] stops it (dropping it stops it too).
pub struct Server {
    pub bin: PgBin,
    pub spec: ServerSpec,
    running: bool,
}

/// `-c name=value` words for `pg_ctl -o`, single-quoted for the shell pg_ctl starts postgres with.
pub fn command_line_options(settings: &[(String, String)]) -> Result<String, PgServerError> {
    let mut words = Vec::new();
    for (name, value) in settings {
        let bad = |c: char| c == '\'' || c == '\n' || c == '\r' || c == '\0';
        if name
            .chars()
            .any(|c| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            || value.chars().any(bad)
        {
            return Err(PgServerError::BadSetting {
                name: name.clone(),
                value: value.clone(),
            });
        }
        words.push(format!("-c '{name}={value}'"));
    }
    Ok(words.join(" "))
}

impl Server {
    /// A server not yet started.
    pub fn new(bin: PgBin, spec: ServerSpec) -> Server {
        Server {
            bin,
            spec,
            running: false,
        }
    }

    /// The last `n` lines of the server log.
    pub fn log_tail(&self, n: usize) -> Vec<String> {
        log_tail(&self.spec.log_file, n)
    }

    /// The log lines that explain a failure (`ERROR`, `FATAL`, `PANIC`, `could not`), at most `n`.
    pub fn log_errors(&self, n: usize) -> Vec<String> {
        let text = std::fs::read_to_string(&self.spec.log_file).unwrap_or_default();
        let hits: Vec<String> = text
            .lines()
            .filter(|l| {
                ["ERROR:", "FATAL:", "PANIC:", "could not"]
                    .iter()
                    .any(|k| l.contains(k))
            })
            .map(str::to_string)
            .collect();
        hits[hits.len().saturating_sub(n)..].to_vec()
    }

    /// `pg_ctl start -w`; returns once the server accepts connections (a recovering server:
    /// once consistent, with `hot_standby`), see [`start`].
    pub fn start(&mut self, timeout: Duration) -> Result<(), PgServerError> {
        start(&self.bin, &self.spec, timeout)?;
        self.running = true;
        Ok(())
    }

    /// Whether a postmaster runs on the data directory.
    pub fn is_running(&self) -> bool {
        is_running(&self.bin, &self.spec.data_dir)
    }

    /// Runs `sql` through psql in `db`; returns stdout (unaligned, tuples only).
    pub fn query(&self, db: &str, sql: &str) -> Result<String, PgServerError> {
        let out = self.psql(db, sql, Duration::from_secs(300))?;
        if !out.status.success() {
            return Err(PgServerError::Query {
                message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim_end_matches('\n').to_string())
    }

    /// psql with `sql` as its command, whatever the outcome.
    pub fn psql(&self, db: &str, sql: &str, timeout: Duration) -> Result<Output, PgServerError> {
        let mut cmd = server_command(&self.bin.tool("psql"));
        cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(&self.spec.socket_dir)
            .args([
                "-p",
                &self.spec.port.to_string(),
                "-U",
                &self.spec.user,
                "-d",
                db,
                "-c",
                sql,
            ]);
        self.client_env(&mut cmd);
        output_with_timeout(cmd, timeout)
    }

    /// Clears the libpq variables that could send a client elsewhere.
    pub fn client_env(&self, cmd: &mut Command) {
        for v in [
            "PGHOST",
            "PGHOSTADDR",
            "PGPORT",
            "PGSERVICE",
            "PGSERVICEFILE",
            "PGPASSWORD",
            "PGPASSFILE",
            "PGOPTIONS",
        ] {
            cmd.env_remove(v);
        }
    }

    /// Waits until recovery has ended (`pg_is_in_recovery()` false) and the server accepts
    /// connections; fails early when the server stops (recovery failed).
    pub fn wait_promoted(&self, timeout: Duration) -> Result<(), PgServerError> {
        let started = Instant::now();
        loop {
            if let Ok(v) = self.query("postgres", "SELECT pg_is_in_recovery()") {
                if v.trim() == "f" {
                    return Ok(());
                }
            } else if !self.is_running() {
                return Err(PgServerError::DiedInRecovery {
                    log: self.log_tail(30).join("\n"),
                });
            }
            if started.elapsed() > timeout {
                return Err(PgServerError::RecoveryTimeout {
                    waited: timeout,
                    log: self.log_tail(30).join("\n"),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops the server: fast (clean, a checkpoint), then immediate when fast does not finish.
    /// Returns whether the stop was clean (fast).
    pub fn stop(&mut self) -> Result<bool, PgServerError> {
        if !self.running && !self.is_running() {
            self.running = false;
            return Ok(true);
        }
        if stop(&self.bin, &self.spec.data_dir, StopMode::Fast, Duration::from_secs(120)).is_ok() {
            self.running = false;
            return Ok(true);
        }
        stop(
            &self.bin,
            &self.spec.data_dir,
            StopMode::Immediate,
            Duration::from_secs(60),
        )?;
        self.running = false;
        Ok(false)
    }
}

/// `pg_ctl -D data_dir args...` (as `postgres` when root), with a time limit.
pub fn pg_ctl(bin: &PgBin, data_dir: &Path, args: &[&str], timeout: Duration) -> Result<Output, PgServerError> {
    let mut cmd = server_command(&bin.tool("pg_ctl"));
    cmd.arg("-D").arg(data_dir).args(args);
    output_with_timeout(cmd, timeout)
}

/// The last `n` lines of a server log (empty when it cannot be read).
pub fn log_tail(path: &Path, n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

/// `pg_ctl start -w -t` with `spec`'s settings as `-c` options (they win over every
/// configuration file) and its log file. Waits at most `timeout`; a failure carries the log tail.
pub fn start(bin: &PgBin, spec: &ServerSpec, timeout: Duration) -> Result<(), PgServerError> {
    let opts = command_line_options(&spec.settings)?;
    let secs = timeout.as_secs().max(1).to_string();
    let log = spec.log_file.display().to_string();
    let out = pg_ctl(
        bin,
        &spec.data_dir,
        &["-w", "-t", &secs, "-l", &log, "-o", &opts, "start"],
        timeout + Duration::from_secs(30),
    )?;
    if !out.status.success() {
        return Err(PgServerError::StartFailed {
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            log: log_tail(&spec.log_file, 40).join("\n"),
        });
    }
    Ok(())
}

/// How to stop a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// Clean: a shutdown checkpoint is written.
    Fast,
    /// As a crash: no checkpoint, crash recovery on the next start.
    Immediate,
}

/// `pg_ctl stop -m MODE -w`; no server running is not an error.
pub fn stop(bin: &PgBin, data_dir: &Path, mode: StopMode, timeout: Duration) -> Result<(), PgServerError> {
    if !data_dir.join("postmaster.pid").exists() {
        return Ok(());
    }
    let m = match mode {
        StopMode::Fast => "fast",
        StopMode::Immediate => "immediate",
    };
    let secs = timeout.as_secs().max(1).to_string();
    let out = pg_ctl(
        bin,
        data_dir,
        &["-m", m, "-w", "-t", &secs, "stop"],
        timeout + Duration::from_secs(30),
    )?;
    if !out.status.success() && data_dir.join("postmaster.pid").exists() && is_running(bin, data_dir) {
        return Err(PgServerError::StopFailed {
            detail: format!("pg_ctl stop -m {m}: {}", String::from_utf8_lossy(&out.stderr).trim()),
        });
    }
    Ok(())
}

/// Whether a postmaster runs on `data_dir` (`pg_ctl status`).
pub fn is_running(bin: &PgBin, data_dir: &Path) -> bool {
    pg_ctl(bin, data_dir, &["status"], Duration::from_secs(30)).is_ok_and(|o| o.status.success())
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.running {
            let _ = self.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_from_version_output() {
        assert_eq!(
            parse_major("postgres (PostgreSQL) 15.8 (Debian 15.8-0+deb12u1)\n"),
            Some(15)
        );
        assert_eq!(parse_major("postgres (PostgreSQL) 18beta1"), Some(18));
        assert_eq!(parse_major("something else"), None);
    }

    #[test]
    fn options_are_quoted_and_refused_when_unquotable() {
        let s = vec![
            ("listen_addresses".to_string(), String::new()),
            ("unix_socket_directories".to_string(), "/tmp/x y".to_string()),
        ];
        assert_eq!(
            command_line_options(&s).expect("ok"),
            "-c 'listen_addresses=' -c 'unix_socket_directories=/tmp/x y'"
        );
        let bad = vec![("port".to_string(), "1'; rm".to_string())];
        assert!(matches!(
            command_line_options(&bad),
            Err(PgServerError::BadSetting { .. })
        ));
        let bad_name = vec![("a b".to_string(), "1".to_string())];
        assert!(command_line_options(&bad_name).is_err());
    }
}
