//! Running external programs as the `postgres` OS user, with timeouts.
//!
//! PostgreSQL refuses to run as root, and tests run as root (CI and developer machines alike).
//! So every server-side tool (`initdb`, `pg_ctl`, `pg_amcheck`, `pg_verifybackup`) and the pgvault
//! binaries themselves (which in production run from `archive_command`, i.e. as `postgres`) go
//! through `runuser -u postgres --`. When the harness is not root, commands run as the current
//! user unchanged.
//!
//! Every run has a timeout: a hung child must fail the test with its output rather than hang CI.
//! Children run in their own process group so that a timeout kills the whole tree.

use std::ffi::OsStr;
use std::fmt;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The OS user PostgreSQL (and pgvault) runs as.
pub const POSTGRES_USER: &str = "postgres";

/// The captured result of a finished command.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    /// The command line, for messages.
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl CmdOutput {
    /// True when the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The exit code, `None` when killed by a signal.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// `Ok(self)` when the command succeeded, otherwise an error carrying its full output.
    pub fn check(self) -> Result<Self> {
        if self.success() {
            Ok(self)
        } else {
            bail!("command failed: {self}")
        }
    }
}

impl fmt::Display for CmdOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match (self.status.code(), self.status.signal()) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            (None, None) => "unknown status".to_string(),
        };
        write!(
            f,
            "`{}` -> {status} after {:.1}s\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command,
            self.elapsed.as_secs_f64(),
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// Whether this process runs as root (and so must switch to `postgres` for server tools).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A [`Command`] that runs `program` as the `postgres` user (via `runuser` when we are root),
/// with its working directory set to the test temp base (always traversable by `postgres`):
/// pass absolute paths.
pub fn postgres_command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = if is_root() {
        let runuser = ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("runuser");
        let mut c = Command::new(runuser);
        c.args(["-u", POSTGRES_USER, "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.current_dir(crate::fsutil::test_tmp_base());
    cmd
}

/// Runs `program args...` as `postgres` with a timeout; see [`run_with_timeout`].
pub fn run_as_postgres<I, S>(program: impl AsRef<OsStr>, args: I, timeout: Duration) -> Result<CmdOutput>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = postgres_command(program);
    cmd.args(args);
    run_with_timeout(&mut cmd, timeout)
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn spawn_reader<R: Read + Send + 'static>(mut r: R) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// Runs `cmd` (stdin from /dev/null, stdout and stderr captured) in its own process group.
/// Returns its output whatever the exit status (use [`CmdOutput::check`]); an `Err` means it
/// could not be started or ran past `timeout`, in which case its process group is killed.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<CmdOutput> {
    let command = describe(cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("cannot start `{command}`"))?;
    let out_rx = child.stdout.take().map(spawn_reader);
    let err_rx = child.stderr.take().map(spawn_reader);

    let collect = |rx: Option<mpsc::Receiver<Vec<u8>>>| -> String {
        // A grandchild that keeps the pipe open (a daemon) must not hang us: bounded wait.
        rx.and_then(|rx| rx.recv_timeout(Duration::from_secs(10)).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };

    loop {
        if let Some(status) = child.try_wait().with_context(|| format!("waiting for `{command}`"))? {
            return Ok(CmdOutput {
                command,
                status,
                stdout: collect(out_rx),
                stderr: collect(err_rx),
                elapsed: start.elapsed(),
            });
        }
        if start.elapsed() > timeout {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "`{command}` timed out after {:?} and was killed\n--- stdout ---\n{}\n--- stderr ---\n{}",
                timeout,
                collect(out_rx).trim_end(),
                collect(err_rx).trim_end()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
