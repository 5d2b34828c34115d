//! The reviewed production set-ups as test cases: their machines, their settings and findings
//! (facts copied here; tests read nothing outside the project), and the ranges those documents
//! and PostgreSQL's documentation justify for each number `tune` gives.

use std::path::Path;
use std::time::Duration;

use super::sizing::{GB, MB};
use super::tests::{bytes, get, inputs, int};
use super::*;

/// Asserts `lo <= v <= hi`, naming the setting and why the range.
fn within(name: &str, v: u64, lo: u64, hi: u64, why: &str) {
    assert!((lo..=hi).contains(&v), "{name} = {v} outside [{lo}, {hi}]: {why}");
}

fn real(r: &[Recommendation], name: &str) -> f64 {
    get(r, name).value.parse().expect("a number")
}

/// Set-up 3 ("managed-style HA cluster"): primary db.r6i.xlarge = 32GB RAM, 4 vCPU, 500GB io1
/// (20K provisioned IOPS), PostgreSQL 16, PgBouncer in session mode, `max_connections = 100`,
/// 500 application connections, RPO < 5 minutes, a local read replica and a cross-region DR
/// replica. Its own tuning table: shared_buffers 8GB, effective_cache_size 24GB, work_mem 64MB,
/// maintenance_work_mem 2GB, random_page_cost 1.0, checkpoint_completion_target 0.9,
/// wal_buffers 16MB.
fn ha_primary(storage: Storage, pooler: bool, connections: u32) -> Inputs {
    let mut i = inputs(32 * GB, 4, storage, Workload::Oltp, connections);
    i.pooler = pooler;
    i.rpo = Duration::from_secs(5 * 60);
    i.server_major = Some(16);
    i
}

#[test]
fn ha_primary_32gb_4vcpu_provisioned_iops() {
    for storage in [Storage::Ssd, Storage::Network] {
        let r = recommend(&ha_primary(storage, false, 100));
        // PostgreSQL docs: 25% of RAM is a reasonable start, more than 40% unlikely to help.
        within(
            "shared_buffers",
            bytes(&r, "shared_buffers"),
            32 * GB / 5,
            32 * GB * 2 / 5,
            "docs 25%, < 40%",
        );
        assert_eq!(get(&r, "shared_buffers").value, "8GB", "the review's 8GB");
        // The docs' "half of memory is a normal conservative setting", up to the review's 75%.
        within(
            "effective_cache_size",
            bytes(&r, "effective_cache_size"),
            16 * GB,
            24 * GB,
            "50–75% of RAM",
        );
        within(
            "maintenance_work_mem",
            bytes(&r, "maintenance_work_mem"),
            256 * MB,
            2 * GB,
            "review 2GB",
        );
        // PostgreSQL's 4MB default up to the review's 64MB at its max_connections = 100.
        within("work_mem", bytes(&r, "work_mem"), 4 * MB, 64 * MB, "default..review");
        assert_eq!(int(&r, "max_connections"), 100);
        // SSD-class storage: the review's 1.0 to pgtune's 1.1 (well under the spinning 4).
        let rpc = real(&r, "random_page_cost");
        assert!((1.0..=1.5).contains(&rpc), "random_page_cost {rpc}");
        assert_eq!(real(&r, "checkpoint_completion_target"), 0.9);
        assert_eq!(get(&r, "wal_buffers").value, "16MB");
        assert_eq!(get(&r, "huge_pages").value, "try", "8GB of shared memory");
        // Two standbys plus pgvault's replication connection.
        assert!(int(&r, "max_wal_senders") >= 3);
        // RPO 5min: a forced switch at least every 2.5min, never below the docs' minute.
        let Typed::Millis(t) = get(&r, "archive_timeout").typed else {
            panic!("archive_timeout is a duration")
        };
        within("archive_timeout", t, 60_000, 150_000, "RPO 5min");
        assert_eq!(get(&r, "archive_mode").value, "on");
        assert_eq!(get(&r, "wal_level").value, "replica");
        assert!(r.iter().all(|x| x.name != "summarize_wal"), "PostgreSQL 16");
    }
}

#[test]
fn ha_primary_behind_pgbouncer() {
    // 500 application connections through PgBouncer: the server needs ~4 per vCPU, at least 20.
    let r = recommend(&ha_primary(Storage::Network, true, 500));
    assert_eq!(int(&r, "max_connections"), 20);
    assert!(get(&r, "max_connections").reason.contains("pooler"));
    // Fewer connections, more work_mem each, and still within RAM: 20 × 3 × 2 × work_mem
    // + 8GB + 2GB + 16MB ≤ 32GB.
    let wm = bytes(&r, "work_mem");
    within("work_mem", wm, 64 * MB, 256 * MB, "pooled: the review's 64MB and up");
    assert!(8 * GB + 2 * GB + 16 * MB + 20 * 3 * 2 * wm <= 32 * GB);
}

/// Set-up 5 (Compose with pgBackRest and memory auto-configuration): a 2GB container limit read
/// from cgroup v2 on a bigger host, 4 CPUs from nproc; its auto-config logged shared_buffers =
/// 512MB and effective_cache_size = 1536MB; its memory map: shared_buffers 15–25% of RAM (capped
/// at 32GB), effective_cache_size 75–85%, maintenance_work_mem 3.1% (capped at 2GB), work_mem
/// RAM / (max_connections × 4) capped at 32MB; PgBouncer takes up to 200 clients.
#[test]
fn compose_2gb_container() {
    let root = tempfile::tempdir().expect("tempdir");
    let put = |rel: &str, text: &str| {
        let p = root.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    };
    put("proc/meminfo", "MemTotal:       65842328 kB\n");
    put("sys/fs/cgroup/memory.max", "2147483648\n");
    put("sys/fs/cgroup/cpu.max", "max 100000\n");
    let m = machine::detect_in(Path::new(root.path()), Some(4));
    assert_eq!(
        m.memory_bytes,
        Some(2 * GB),
        "the container's limit, not the host's 64GB"
    );
    for (pooler, connections) in [(false, 100), (true, 200)] {
        let mut i = inputs(
            m.memory_bytes.expect("memory"),
            m.cpus,
            Storage::Ssd,
            Workload::Mixed,
            connections,
        );
        i.pooler = pooler;
        let r = recommend(&i);
        assert_eq!(get(&r, "shared_buffers").value, "512MB", "as the auto-config logged");
        assert_eq!(
            get(&r, "effective_cache_size").value,
            "1536MB",
            "as the auto-config logged"
        );
        within(
            "shared_buffers",
            bytes(&r, "shared_buffers"),
            2 * GB * 15 / 100,
            2 * GB / 4,
            "15–25%",
        );
        within(
            "effective_cache_size",
            bytes(&r, "effective_cache_size"),
            2 * GB * 3 / 4,
            2 * GB * 85 / 100,
            "75–85%",
        );
        // 3.1% (their map) to 6.25% (pgtune's RAM/16).
        within(
            "maintenance_work_mem",
            bytes(&r, "maintenance_work_mem"),
            2 * GB * 31 / 1000,
            2 * GB / 16,
            "3.1–6.25%",
        );
        // At most their 32MB cap; at least 1MB, enough for a small sort in memory.
        within("work_mem", bytes(&r, "work_mem"), MB, 32 * MB, "their cap");
    }
}

/// Set-up 1 (Docker, PgBouncer, WAL-G): "shared_buffers at 128MB is low for production";
/// PgBouncer's max_client_conn 100.
#[test]
fn docker_pgbouncer_default_shared_buffers_is_raised() {
    for ram in [GB, 2 * GB, 4 * GB] {
        let mut i = inputs(ram, 2, Storage::Ssd, Workload::Web, 100);
        i.pooler = true;
        let r = recommend(&i);
        assert!(
            bytes(&r, "shared_buffers") > 128 * MB,
            "above the default the review calls low"
        );
        assert!(int(&r, "max_connections") <= 100);
        assert_eq!(get(&r, "archive_mode").value, "on");
    }
}

/// Set-up 4 (development box): the application's pool is 15 connections plus 30 overflow = 45,
/// directly to the server; even a 1GB box holds them without cutting.
#[test]
fn dev_box_45_direct_connections() {
    let r = recommend(&inputs(GB, 2, Storage::Ssd, Workload::Web, 45));
    assert_eq!(int(&r, "max_connections"), 45);
    assert!(get(&r, "max_connections").reason.contains("45 direct"));
}

/// Set-up 2 (Kubernetes, postgres:15-alpine, CronJob backups): on 15 no summarize_wal; the
/// same machine on 17 gets it, for incremental backups.
#[test]
fn kubernetes_postgres_15_and_17() {
    let mut i = inputs(4 * GB, 2, Storage::Network, Workload::Web, 100);
    i.server_major = Some(15);
    assert!(recommend(&i).iter().all(|x| x.name != "summarize_wal"));
    i.server_major = Some(17);
    assert_eq!(get(&recommend(&i), "summarize_wal").value, "on");
}
