//! Detection on text fixtures (files under `fixtures/`, as the kernel writes them) and on fake
//! directory trees: no real `/sys` needed.

use std::path::Path;

use super::*;

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("fixtures/", $name))
    };
}

const GB: u64 = 1 << 30;
const MEMINFO_64GB: u64 = 65_842_328 * 1024;

#[test]
fn cgroup_v2_files() {
    assert_eq!(parse_v2_memory_max(fixture!("v2_memory.max_2GB")), Some(2 * GB));
    assert_eq!(parse_v2_memory_max(fixture!("v2_memory.max_unlimited")), None);
    assert_eq!(parse_v2_cpu_max(fixture!("v2_cpu.max_4")), Some(4));
    // 1.5 CPUs of quota: PostgreSQL can run two processes at once, so round up.
    assert_eq!(parse_v2_cpu_max(fixture!("v2_cpu.max_1.5")), Some(2));
    assert_eq!(parse_v2_cpu_max(fixture!("v2_cpu.max_unlimited")), None);
    assert_eq!(parse_v2_cpu_max("garbage"), None);
    assert_eq!(parse_v2_memory_max(""), None);
    assert_eq!(
        parse_v2_self_path(fixture!("proc_self_cgroup_v2")),
        Some("/system.slice/postgresql.service")
    );
}

#[test]
fn cgroup_v1_files() {
    assert_eq!(
        parse_v1_memory_limit(fixture!("v1_memory.limit_in_bytes_32GB")),
        Some(32 * GB)
    );
    assert_eq!(
        parse_v1_memory_limit(fixture!("v1_memory.limit_in_bytes_unlimited")),
        None
    );
    assert_eq!(
        parse_v1_cpu(fixture!("v1_cpu.cfs_quota_us_2"), fixture!("v1_cpu.cfs_period_us")),
        Some(2)
    );
    assert_eq!(
        parse_v1_cpu(
            fixture!("v1_cpu.cfs_quota_us_unlimited"),
            fixture!("v1_cpu.cfs_period_us")
        ),
        None
    );
    assert_eq!(parse_v1_cpu("100000", "0"), None);
}

#[test]
fn meminfo() {
    assert_eq!(parse_meminfo(fixture!("proc_meminfo_64GB")), Some(MEMINFO_64GB));
    assert_eq!(parse_meminfo("MemFree: 1 kB\n"), None);
    assert_eq!(parse_meminfo("MemTotal: lots kB\n"), None);
}

fn put(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("has a parent")).expect("mkdir");
    std::fs::write(p, text).expect("write fixture");
}

#[test]
fn container_with_v2_limits_wins_over_the_host() {
    // The reviewed Compose set-up: a 2GB container on a 64GB host, 4 CPUs of quota on 16.
    let d = tempfile::tempdir().expect("tempdir");
    put(d.path(), "proc/meminfo", fixture!("proc_meminfo_64GB"));
    put(d.path(), "proc/self/cgroup", "0::/\n");
    put(d.path(), "sys/fs/cgroup/memory.max", fixture!("v2_memory.max_2GB"));
    put(d.path(), "sys/fs/cgroup/cpu.max", fixture!("v2_cpu.max_4"));
    let m = detect_in(d.path(), Some(16));
    assert_eq!(m.memory_bytes, Some(2 * GB));
    assert_eq!(m.memory_source, Source::CgroupV2);
    assert_eq!((m.cpus, m.cpu_source), (4, Source::CgroupV2));
}

#[test]
fn host_service_cgroup_is_read_first() {
    let d = tempfile::tempdir().expect("tempdir");
    put(d.path(), "proc/meminfo", fixture!("proc_meminfo_64GB"));
    put(d.path(), "proc/self/cgroup", fixture!("proc_self_cgroup_v2"));
    put(
        d.path(),
        "sys/fs/cgroup/memory.max",
        fixture!("v2_memory.max_unlimited"),
    );
    put(
        d.path(),
        "sys/fs/cgroup/system.slice/postgresql.service/memory.max",
        fixture!("v2_memory.max_2GB"),
    );
    let m = detect_in(d.path(), Some(8));
    assert_eq!((m.memory_bytes, m.memory_source), (Some(2 * GB), Source::CgroupV2));
    assert_eq!((m.cpus, m.cpu_source), (8, Source::Nproc));
}

#[test]
fn cgroup_v1_then_proc() {
    let d = tempfile::tempdir().expect("tempdir");
    put(d.path(), "proc/meminfo", fixture!("proc_meminfo_64GB"));
    put(
        d.path(),
        "sys/fs/cgroup/memory/memory.limit_in_bytes",
        fixture!("v1_memory.limit_in_bytes_32GB"),
    );
    put(
        d.path(),
        "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us",
        fixture!("v1_cpu.cfs_quota_us_2"),
    );
    put(
        d.path(),
        "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us",
        fixture!("v1_cpu.cfs_period_us"),
    );
    let m = detect_in(d.path(), Some(16));
    assert_eq!((m.memory_bytes, m.memory_source), (Some(32 * GB), Source::CgroupV1));
    assert_eq!((m.cpus, m.cpu_source), (2, Source::CgroupV1));
}

#[test]
fn unlimited_cgroups_fall_back_to_proc() {
    let d = tempfile::tempdir().expect("tempdir");
    put(d.path(), "proc/meminfo", fixture!("proc_meminfo_64GB"));
    put(
        d.path(),
        "sys/fs/cgroup/memory.max",
        fixture!("v2_memory.max_unlimited"),
    );
    put(d.path(), "sys/fs/cgroup/cpu.max", fixture!("v2_cpu.max_unlimited"));
    put(
        d.path(),
        "sys/fs/cgroup/memory/memory.limit_in_bytes",
        fixture!("v1_memory.limit_in_bytes_unlimited"),
    );
    let m = detect_in(d.path(), Some(12));
    assert_eq!((m.memory_bytes, m.memory_source), (Some(MEMINFO_64GB), Source::Meminfo));
    assert_eq!((m.cpus, m.cpu_source), (12, Source::Nproc));
}

#[test]
fn a_limit_above_physical_memory_is_not_a_limit() {
    let d = tempfile::tempdir().expect("tempdir");
    put(d.path(), "proc/meminfo", "MemTotal: 2097152 kB\n");
    put(
        d.path(),
        "sys/fs/cgroup/memory/memory.limit_in_bytes",
        fixture!("v1_memory.limit_in_bytes_32GB"),
    );
    let m = detect_in(d.path(), None);
    assert_eq!((m.memory_bytes, m.memory_source), (Some(2 * GB), Source::Meminfo));
    assert_eq!((m.cpus, m.cpu_source), (1, Source::Fallback));
}

#[test]
fn nothing_readable() {
    let d = tempfile::tempdir().expect("tempdir");
    let m = detect_in(d.path(), None);
    assert_eq!(m.memory_bytes, None);
    assert_eq!(m.memory_source, Source::Fallback);
}
