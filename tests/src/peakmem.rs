//! Peak memory of a child process, measured from outside it.
//!
//! A program's report of its own peak memory is only as good as its bookkeeping; the memory
//! bound of `pgvault backup` is a promise to the operator, so the test measures it the way the
//! kernel sees it: GNU time (`/usr/bin/time -f %M`) runs the program and writes its `ru_maxrss`
//! (KiB) to a file. Not `wait4` on our own child: a child's `ru_maxrss` starts at the resident
//! size of the process that forked it (the kernel records the forked copy's high-water mark at
//! `exec`), so the test process's own memory would leak into the figure. `time` is tiny, so what
//! it reports is the program's.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{Context, Result};

/// GNU time (Debian package `time`, installed by `scripts/install-test-deps.sh`).
pub const GNU_TIME: &str = "/usr/bin/time";

/// Whether [`GNU_TIME`] is installed.
pub fn gnu_time_available() -> bool {
    Path::new(GNU_TIME).is_file()
}

/// The arguments of [`GNU_TIME`] that write the peak resident set size (KiB) of the program
/// that follows them to `report`.
pub fn time_args(report: &Path) -> Vec<OsString> {
    vec!["-f".into(), "%M".into(), "-o".into(), report.as_os_str().to_owned()]
}

/// The peak resident set size (KiB) GNU time wrote to `report` (its last line; a line saying
/// the command failed may come first).
pub fn read_peak_kib(report: &Path) -> Result<u64> {
    let text =
        std::fs::read_to_string(report).with_context(|| format!("no peak-memory report at {}", report.display()))?;
    let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
    last.trim()
        .parse()
        .with_context(|| format!("{} holds no peak memory figure: {text:?}", report.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::Duration;

    fn peak_of_dd(block: &str, dir: &Path) -> u64 {
        let report = dir.join(format!("dd-{block}"));
        let mut cmd = Command::new(GNU_TIME);
        cmd.args(time_args(&report))
            .arg("dd")
            .args(["if=/dev/zero", "of=/dev/null", "count=1"])
            .arg(format!("bs={block}"));
        let out = crate::process::run_with_timeout(&mut cmd, Duration::from_secs(60)).expect("time dd");
        assert!(out.success(), "{out}");
        read_peak_kib(&report).expect("report")
    }

    #[test]
    fn measures_a_child_that_holds_memory() {
        if !gnu_time_available() {
            crate::install::missing_dependency("GNU time (/usr/bin/time)", "apt-get install time");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        // dd allocates one buffer of its block size and fills it.
        let big = peak_of_dd("64M", dir.path());
        let small = peak_of_dd("4k", dir.path());
        assert!(big >= 64 * 1024, "a 64 MiB buffer shows: {big} KiB");
        assert!(
            small < 16 * 1024,
            "a 4 KiB buffer does not: {small} KiB (the test process's memory must not leak in)"
        );
    }

    #[test]
    fn reads_the_figure_after_a_failure_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let report = dir.path().join("r");
        std::fs::write(&report, "Command exited with non-zero status 1\n51234\n").expect("write");
        assert_eq!(read_peak_kib(&report).expect("read"), 51234);
        std::fs::write(&report, "garbage\n").expect("write");
        assert!(read_peak_kib(&report).is_err());
    }
}
