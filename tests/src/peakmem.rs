//! Peak memory of a child process, measured from outside it.
//!
//! A program's report of its own peak memory is only as good as its bookkeeping; the memory
//! bound of `pgvault backup` is a promise to the operator, so the test measures it the way the
//! kernel sees it: the child is reaped with `wait4(2)`, whose `ru_maxrss` is the largest resident
//! set of the child and of every descendant it waited for (`runuser` waits for `pgvault`).

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::libc;

use crate::process::CmdOutput;

/// `cmd`'s output and its peak resident set size in KiB (`ru_maxrss` from `wait4`). stdout and
/// stderr go through files in `spool` (a directory), so large outputs cannot block the child.
/// The child runs in its own process group, killed after `timeout`.
pub fn run_with_peak_memory(
    cmd: &mut Command,
    spool: &std::path::Path,
    timeout: Duration,
) -> Result<(CmdOutput, u64)> {
    let command = format!("{cmd:?}");
    let out_path = spool.join("peakmem.stdout");
    let err_path = spool.join("peakmem.stderr");
    let out = std::fs::File::create(&out_path).with_context(|| out_path.display().to_string())?;
    let err = std::fs::File::create(&err_path).with_context(|| err_path.display().to_string())?;
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    let start = Instant::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {command}"))?;
    let pid = child.id() as libc::pid_t;
    let (status, maxrss_kib) = loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `rusage` is plain old data, zero is a valid value; `wait4` only writes to the
        // two pointers, which point at live locals.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break (
                ExitStatus::from_raw(status),
                u64::try_from(usage.ru_maxrss).unwrap_or(0),
            );
        }
        if r < 0 {
            bail!("wait4 on {command}: {}", std::io::Error::last_os_error());
        }
        if start.elapsed() > timeout {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            // SAFETY: as above; reaps the killed child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            bail!("{command} timed out after {timeout:?} and was killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let read = |p: &std::path::Path| {
        std::fs::read(p)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    let output = CmdOutput {
        command,
        status,
        stdout: read(&out_path),
        stderr: read(&err_path),
        elapsed: start.elapsed(),
    };
    Ok((output, maxrss_kib))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_a_child_that_holds_memory() {
        let dir = tempfile::tempdir().expect("tempdir");
        // dd allocates one buffer of its block size and fills it.
        let mut big = Command::new("dd");
        big.args(["if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]);
        let (out, big_kib) =
            run_with_peak_memory(&mut big, dir.path(), Duration::from_secs(60)).expect("dd");
        assert!(out.success(), "{out}");
        let mut small = Command::new("dd");
        small.args(["if=/dev/zero", "of=/dev/null", "bs=4k", "count=1"]);
        let (_, small_kib) =
            run_with_peak_memory(&mut small, dir.path(), Duration::from_secs(60)).expect("dd");
        assert!(big_kib >= 64 * 1024, "a 64 MiB buffer shows: {big_kib} KiB");
        assert!(
            small_kib < 16 * 1024,
            "a 4 KiB buffer does not: {small_kib} KiB"
        );
    }
}
