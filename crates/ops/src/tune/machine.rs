//! The machine's memory and CPUs as PostgreSQL will see them: a container's cgroup limits first
//! (v2 `memory.max`, `cpu.max`; then v1 `memory.limit_in_bytes`, `cpu.cfs_quota_us` /
//! `cpu.cfs_period_us`), then `/proc/meminfo` and the available parallelism.
//!
//! Tuning a 2GB container from the host's 64GB is the failure the reviewed Compose set-up warns
//! about, so each figure says where it came from. The parsers take text, so they are tested on
//! fixtures; [`detect_in`] takes a root directory, so detection is tested on a fake tree.

use std::path::{Path, PathBuf};

/// Where a figure came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    Flag,
    CgroupV2,
    CgroupV1,
    Meminfo,
    Nproc,
    /// Nothing readable: a conservative guess (1 CPU).
    Fallback,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Flag => "flag",
            Source::CgroupV2 => "cgroup-v2",
            Source::CgroupV1 => "cgroup-v1",
            Source::Meminfo => "meminfo",
            Source::Nproc => "nproc",
            Source::Fallback => "fallback",
        }
    }
}

/// What detection found.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Machine {
    pub memory_bytes: Option<u64>,
    pub memory_source: Source,
    pub cpus: u32,
    pub cpu_source: Source,
}

/// cgroup v1 reports "no limit" as a number near 2^63 (rounded to the page size).
const V1_UNLIMITED_FROM: u64 = 1 << 60;

/// cgroup v2 `memory.max`: bytes, or `max` (no limit).
pub fn parse_v2_memory_max(text: &str) -> Option<u64> {
    let t = text.trim();
    if t == "max" {
        return None;
    }
    t.parse().ok().filter(|&b| b > 0)
}

/// cgroup v2 `cpu.max`: `QUOTA PERIOD` or `max PERIOD`; CPUs = ceil(quota / period).
pub fn parse_v2_cpu_max(text: &str) -> Option<u32> {
    let mut it = text.split_whitespace();
    let quota = it.next()?;
    let period: u64 = it.next().map_or(Some(100_000), |p| p.parse().ok())?;
    if quota == "max" {
        return None;
    }
    cpus_from_quota(quota.parse().ok()?, period)
}

/// cgroup v1 `memory.limit_in_bytes`: bytes; "unlimited" is a huge number.
pub fn parse_v1_memory_limit(text: &str) -> Option<u64> {
    let b: u64 = text.trim().parse().ok()?;
    (b > 0 && b < V1_UNLIMITED_FROM).then_some(b)
}

/// cgroup v1 `cpu.cfs_quota_us` (−1: no limit) and `cpu.cfs_period_us`.
pub fn parse_v1_cpu(quota: &str, period: &str) -> Option<u32> {
    let quota: i64 = quota.trim().parse().ok()?;
    let period: u64 = period.trim().parse().ok()?;
    if quota <= 0 {
        return None;
    }
    cpus_from_quota(quota.unsigned_abs(), period)
}

fn cpus_from_quota(quota: u64, period: u64) -> Option<u32> {
    if period == 0 || quota == 0 {
        return None;
    }
    u32::try_from(quota.div_ceil(period)).ok()
}

/// `/proc/meminfo`'s `MemTotal:  16318236 kB`, in bytes.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut it = line["MemTotal:".len()..].split_whitespace();
    let n: u64 = it.next()?.parse().ok()?;
    match it.next() {
        Some("kB") | None => n.checked_mul(1024),
        Some(_) => None,
    }
}

/// The cgroup v2 directory of this process: `/proc/self/cgroup`'s `0::/path`.
pub fn parse_v2_self_path(text: &str) -> Option<&str> {
    text.lines().find_map(|l| l.strip_prefix("0::")).map(str::trim)
}

fn read(root: &Path, rel: &str) -> Option<String> {
    std::fs::read_to_string(root.join(rel.trim_start_matches('/'))).ok()
}

/// The cgroup v2 directories to look in, own cgroup first (on a host), then the mount root (in
/// a container, where the namespace makes the root the container's cgroup).
fn v2_dirs(root: &Path) -> Vec<PathBuf> {
    let base = root.join("sys/fs/cgroup");
    let mut dirs = Vec::new();
    if let Some(p) = read(root, "proc/self/cgroup").as_deref().and_then(parse_v2_self_path) {
        let p = p.trim_start_matches('/');
        if !p.is_empty() {
            dirs.push(base.join(p));
        }
    }
    dirs.push(base);
    dirs
}

fn v2_memory(root: &Path) -> Option<u64> {
    v2_dirs(root).iter().find_map(|d| {
        std::fs::read_to_string(d.join("memory.max"))
            .ok()
            .as_deref()
            .and_then(parse_v2_memory_max)
    })
}

fn v2_cpus(root: &Path) -> Option<u32> {
    v2_dirs(root).iter().find_map(|d| {
        std::fs::read_to_string(d.join("cpu.max"))
            .ok()
            .as_deref()
            .and_then(parse_v2_cpu_max)
    })
}

fn v1_memory(root: &Path) -> Option<u64> {
    read(root, "sys/fs/cgroup/memory/memory.limit_in_bytes")
        .as_deref()
        .and_then(parse_v1_memory_limit)
}

fn v1_cpus(root: &Path) -> Option<u32> {
    ["sys/fs/cgroup/cpu", "sys/fs/cgroup/cpu,cpuacct"].iter().find_map(|d| {
        let q = read(root, &format!("{d}/cpu.cfs_quota_us"))?;
        let p = read(root, &format!("{d}/cpu.cfs_period_us"))?;
        parse_v1_cpu(&q, &p)
    })
}

/// Detects memory and CPUs under `root` (`/` for the real machine). A cgroup limit larger than
/// the physical memory is not a limit: the smaller figure wins. `nproc` is the machine's
/// available parallelism (already narrowed by CPU affinity), used when no quota is set.
pub fn detect_in(root: &Path, nproc: Option<u32>) -> Machine {
    let physical = read(root, "proc/meminfo").as_deref().and_then(parse_meminfo);
    let limit = v2_memory(root)
        .map(|b| (b, Source::CgroupV2))
        .or_else(|| v1_memory(root).map(|b| (b, Source::CgroupV1)));
    let (memory_bytes, memory_source) = match (limit, physical) {
        (Some((l, src)), Some(p)) if l < p => (Some(l), src),
        (Some((l, src)), None) => (Some(l), src),
        (_, Some(p)) => (Some(p), Source::Meminfo),
        (None, None) => (None, Source::Fallback),
    };
    let quota = v2_cpus(root)
        .map(|c| (c, Source::CgroupV2))
        .or_else(|| v1_cpus(root).map(|c| (c, Source::CgroupV1)));
    let (cpus, cpu_source) = match (quota, nproc) {
        (Some((q, src)), Some(n)) if q < n => (q, src),
        (Some((q, src)), None) => (q, src),
        (_, Some(n)) => (n, Source::Nproc),
        (None, None) => (1, Source::Fallback),
    };
    Machine {
        memory_bytes,
        memory_source,
        cpus: cpus.max(1),
        cpu_source,
    }
}

/// Detects the machine this process runs on.
pub fn detect() -> Machine {
    let nproc = std::thread::available_parallelism()
        .ok()
        .and_then(|n| u32::try_from(n.get()).ok());
    detect_in(Path::new("/"), nproc)
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
