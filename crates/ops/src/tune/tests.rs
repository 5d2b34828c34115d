//! The formulas pinned at 1, 2, 8, 32 and 256 GB against values worked by hand (the working is
//! in the comments, in MB = 1024 kB), and the memory bound as a property.

use std::time::Duration;

use super::sizing::{GB, KB, MB};
use super::*;

pub(super) fn inputs(ram: u64, cpus: u32, storage: Storage, workload: Workload, connections: u32) -> Inputs {
    Inputs {
        memory_bytes: ram,
        cpus,
        storage,
        workload,
        connections,
        pooler: false,
        rpo: Duration::from_secs(300),
        server_major: Some(16),
    }
}

pub(super) fn get<'a>(recs: &'a [Recommendation], name: &str) -> &'a Recommendation {
    recs.iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", recs.iter().map(|r| r.name).collect::<Vec<_>>()))
}

pub(super) fn bytes(recs: &[Recommendation], name: &str) -> u64 {
    match get(recs, name).typed {
        Typed::Bytes(b) => b,
        ref t => panic!("{name} is not a size: {t:?}"),
    }
}

pub(super) fn int(recs: &[Recommendation], name: &str) -> i64 {
    match get(recs, name).typed {
        Typed::Integer(i) => i,
        ref t => panic!("{name} is not an integer: {t:?}"),
    }
}

fn value<'a>(recs: &'a [Recommendation], name: &str) -> &'a str {
    &get(recs, name).value
}

#[test]
fn one_gb_one_cpu_hdd_web() {
    let r = recommend(&inputs(GB, 1, Storage::Hdd, Workload::Web, 100));
    // shared_buffers = 1024MB / 4 = 256MB; effective_cache_size = 1024MB × 3/4 = 768MB.
    assert_eq!(value(&r, "shared_buffers"), "256MB");
    assert_eq!(value(&r, "effective_cache_size"), "768MB");
    // maintenance_work_mem = 1024MB / 16 = 64MB.
    assert_eq!(value(&r, "maintenance_work_mem"), "64MB");
    // wal_buffers = 3% of 256MB = 7.68MB = 7864.32kB, down to 8kB pages: 7864kB.
    assert_eq!(value(&r, "wal_buffers"), "7864kB");
    // One CPU: no parallel query, pgtune's factor 1.
    // work_mem = (1024MB − 256MB − 64MB − 7864kB) / (100 × 3 × 1) = 713032kB / 300
    //          = 2376.77kB → 2376kB (web: not halved).
    assert_eq!(value(&r, "work_mem"), "2376kB");
    assert_eq!(int(&r, "max_connections"), 100);
    assert_eq!(int(&r, "max_parallel_workers_per_gather"), 0);
    assert_eq!(int(&r, "max_parallel_workers"), 1);
    assert_eq!(int(&r, "max_worker_processes"), 8);
    assert_eq!(int(&r, "max_parallel_maintenance_workers"), 0);
    assert_eq!(value(&r, "random_page_cost"), "4");
    assert_eq!(int(&r, "effective_io_concurrency"), 2);
    assert_eq!(value(&r, "min_wal_size"), "1GB");
    assert_eq!(value(&r, "max_wal_size"), "4GB");
    assert_eq!(value(&r, "huge_pages"), "off");
}

#[test]
fn two_gb_two_cpus_ssd_oltp() {
    let r = recommend(&inputs(2 * GB, 2, Storage::Ssd, Workload::Oltp, 200));
    // 2048MB / 4 = 512MB; × 3/4 = 1536MB; / 16 = 128MB.
    assert_eq!(value(&r, "shared_buffers"), "512MB");
    assert_eq!(value(&r, "effective_cache_size"), "1536MB");
    assert_eq!(value(&r, "maintenance_work_mem"), "128MB");
    // 3% of 512MB = 15.36MB, above 14MB: a whole 16MB segment (pgtune rounds up there).
    assert_eq!(value(&r, "wal_buffers"), "16MB");
    // 2 CPUs: ceil(2/2) = 1 worker per gather → factor 1.
    // work_mem = (2048 − 512 − 128 − 16)MB / (200 × 3 × 1) = 1392MB / 600 = 2375.68kB → 2375kB.
    // (pgtune, which subtracts only shared_buffers: 1536MB / 600 = 2621kB.)
    assert_eq!(value(&r, "work_mem"), "2375kB");
    assert_eq!(int(&r, "max_parallel_workers_per_gather"), 1);
    assert_eq!(int(&r, "max_parallel_maintenance_workers"), 1);
    assert_eq!(value(&r, "random_page_cost"), "1.1");
    assert_eq!(int(&r, "effective_io_concurrency"), 200);
    assert_eq!(value(&r, "min_wal_size"), "2GB");
    assert_eq!(value(&r, "max_wal_size"), "8GB");
}

#[test]
fn eight_gb_four_cpus_ssd_mixed() {
    let r = recommend(&inputs(8 * GB, 4, Storage::Ssd, Workload::Mixed, 100));
    // 8192MB / 4 = 2GB; × 3/4 = 6GB; / 16 = 512MB; wal_buffers 3% of 2GB = 61MB → cap 16MB.
    assert_eq!(value(&r, "shared_buffers"), "2GB");
    assert_eq!(value(&r, "effective_cache_size"), "6GB");
    assert_eq!(value(&r, "maintenance_work_mem"), "512MB");
    assert_eq!(value(&r, "wal_buffers"), "16MB");
    // 4 CPUs: ceil(4/2) = 2 per gather. work_mem = (8192 − 2048 − 512 − 16)MB / (100 × 3 × 2)
    // = 5616MB / 600 = 9.36MB; mixed halves it: 4.68MB = 4792.32kB → 4792kB.
    assert_eq!(value(&r, "work_mem"), "4792kB");
    assert_eq!(int(&r, "max_parallel_workers_per_gather"), 2);
    assert_eq!(int(&r, "max_parallel_workers"), 4);
    assert_eq!(int(&r, "max_worker_processes"), 8);
    assert_eq!(int(&r, "default_statistics_target"), 100);
}

#[test]
fn thirty_two_gb_eight_cpus_ssd_web() {
    let r = recommend(&inputs(32 * GB, 8, Storage::Ssd, Workload::Web, 200));
    // 32GB / 4 = 8GB; × 3/4 = 24GB; / 16 = 2GB (the cap, reached exactly).
    assert_eq!(value(&r, "shared_buffers"), "8GB");
    assert_eq!(value(&r, "effective_cache_size"), "24GB");
    assert_eq!(value(&r, "maintenance_work_mem"), "2GB");
    // 8 CPUs: ceil(8/2) = 4 per gather (also the cap). work_mem = (32768 − 8192 − 2048 − 16)MB
    // / (200 × 3 × 4) = 22512MB / 2400 = 9605.12kB → 9605kB. (pgtune: 24GB / 2400 = 10485kB.)
    assert_eq!(value(&r, "work_mem"), "9605kB");
    // 32GB: huge pages. (8GB + 3%) / 2MB = 8847632629 / 2097152 = 4218.9 → 4219 pages.
    assert_eq!(value(&r, "huge_pages"), "try");
    assert!(
        get(&r, "huge_pages").reason.contains("~4219 2MB pages"),
        "{}",
        get(&r, "huge_pages").reason
    );
}

#[test]
fn two_hundred_fifty_six_gb_thirty_two_cpus_dw() {
    let r = recommend(&inputs(256 * GB, 32, Storage::Ssd, Workload::Dw, 40));
    // 25% would be 64GB: capped at 32GB. × 3/4 of 256GB = 192GB. Warehouse: RAM/8 = 32GB → 2GB cap.
    assert_eq!(value(&r, "shared_buffers"), "32GB");
    assert_eq!(
        get(&r, "shared_buffers").reason,
        "25% of 256.0GB, capped at 32GB: the OS cache serves the rest"
    );
    assert_eq!(value(&r, "effective_cache_size"), "192GB");
    assert_eq!(value(&r, "maintenance_work_mem"), "2GB");
    // Warehouse: ceil(32/2) = 16 per gather, not capped at 4.
    // work_mem = (262144 − 32768 − 2048 − 16)MB / (40 × 3 × 16) = 227312MB / 1920 = 118.39MB,
    // halved for dw: 59.20MB = 60616.53kB → 60616kB.
    assert_eq!(value(&r, "work_mem"), "60616kB");
    assert_eq!(int(&r, "max_parallel_workers_per_gather"), 16);
    assert_eq!(int(&r, "max_parallel_maintenance_workers"), 4);
    assert_eq!(int(&r, "max_worker_processes"), 32);
    assert_eq!(int(&r, "default_statistics_target"), 500);
    assert_eq!(value(&r, "min_wal_size"), "4GB");
    assert_eq!(value(&r, "max_wal_size"), "16GB");
}

#[test]
fn connections_that_cannot_fit_are_cut() {
    // 1GB, 4 CPUs, dw, 10000 connections: per connection 3 × 2 workers × 64kB = 384kB;
    // budget 1024MB − 256MB − 128MB (dw: RAM/8) − 7864kB = 647496kB; / 384kB = 1686.2 → 1686.
    let r = recommend(&inputs(GB, 4, Storage::Ssd, Workload::Dw, 10_000));
    assert_eq!(value(&r, "work_mem"), "64kB");
    assert_eq!(int(&r, "max_connections"), 1686);
    assert!(get(&r, "max_connections")
        .reason
        .contains("10000 connections do not fit"));
}

#[test]
fn a_pooler_needs_fewer_server_connections() {
    let mut i = inputs(32 * GB, 4, Storage::Ssd, Workload::Oltp, 500);
    i.pooler = true;
    let r = recommend(&i);
    // max(4 × 4, 20) = 20 server connections.
    assert_eq!(int(&r, "max_connections"), 20);
    // (32768 − 8192 − 2048 − 16)MB / (20 × 3 × 2) = 22512MB / 120 = 187.6MB = 192102.4kB.
    assert_eq!(value(&r, "work_mem"), "192102kB");
    // 10 clients through a pooler: still 10.
    i.connections = 10;
    assert_eq!(int(&recommend(&i), "max_connections"), 10);
}

#[test]
fn backups_are_wired_in() {
    let mut i = inputs(4 * GB, 2, Storage::Network, Workload::Web, 50);
    let r = recommend(&i);
    assert_eq!(value(&r, "wal_level"), "replica");
    assert_eq!(value(&r, "archive_mode"), "on");
    assert_eq!(value(&r, "archive_command"), "'pgvault-archive push %p'");
    assert_eq!(get(&r, "archive_command").unquoted(), "pgvault-archive push %p");
    // RPO 5min → half: 150s.
    assert_eq!(value(&r, "archive_timeout"), "150s");
    assert!(int(&r, "max_wal_senders") >= 3);
    assert!(r.iter().all(|x| x.name != "summarize_wal"), "16 has no summarize_wal");
    assert_eq!(int(&r, "effective_io_concurrency"), 300);
    i.server_major = Some(17);
    i.rpo = Duration::from_secs(60);
    let r = recommend_with_config(&i, Some(std::path::Path::new("/etc/my vault/pgvault.toml")));
    assert_eq!(value(&r, "summarize_wal"), "on");
    // RPO 1min: half is 30s, below the 60s floor.
    assert_eq!(value(&r, "archive_timeout"), "1min");
    assert!(get(&r, "archive_timeout").reason.contains("tighter"));
    assert_eq!(
        get(&r, "archive_command").unquoted(),
        "pgvault-archive --config \"/etc/my vault/pgvault.toml\" push %p"
    );
    i.rpo = Duration::from_secs(3600);
    assert_eq!(value(&recommend(&i), "archive_timeout"), "30min");
}

#[test]
fn bad_inputs_are_refused_by_validate() {
    assert!(inputs(128 * MB, 1, Storage::Ssd, Workload::Web, 10).validate().is_err());
    assert!(inputs(GB, 0, Storage::Ssd, Workload::Web, 10).validate().is_err());
    assert!(inputs(GB, 1, Storage::Ssd, Workload::Web, 0).validate().is_err());
    assert!(inputs(GB, 1, Storage::Ssd, Workload::Web, 1).validate().is_ok());
    assert_eq!("SSD".parse::<Storage>(), Ok(Storage::Ssd));
    assert!("tape".parse::<Storage>().is_err());
    assert!("batch".parse::<Workload>().is_err());
}

/// The worst case the settings allow: shared memory, one maintenance operation and every
/// connection using work_mem 3 times in each of its gather's workers.
fn committed(r: &[Recommendation]) -> u64 {
    let pf = int(r, "max_parallel_workers_per_gather").max(1) as u64;
    bytes(r, "shared_buffers")
        + bytes(r, "wal_buffers")
        + bytes(r, "maintenance_work_mem")
        + int(r, "max_connections") as u64 * 3 * pf * bytes(r, "work_mem")
}

#[test]
fn prop_no_recommendation_exceeds_memory() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let config = Config {
        cases: 2000,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &[10; 32]));
    let storage = prop_oneof![Just(Storage::Ssd), Just(Storage::Hdd), Just(Storage::Network)];
    let workload = prop_oneof![
        Just(Workload::Web),
        Just(Workload::Oltp),
        Just(Workload::Dw),
        Just(Workload::Mixed)
    ];
    let strategy = (
        MIN_MEMORY..(4u64 << 40),
        1u32..512,
        storage,
        workload,
        1u32..50_000,
        any::<bool>(),
    );
    runner
        .run(&strategy, |(ram, cpus, storage, workload, conns, pooler)| {
            let mut i = inputs(ram, cpus, storage, workload, conns);
            i.pooler = pooler;
            let r = recommend(&i);
            prop_assert!(committed(&r) <= ram, "{} > {ram} for {i:?}", committed(&r));
            prop_assert!(bytes(&r, "shared_buffers") <= ram / 4);
            prop_assert!(bytes(&r, "effective_cache_size") <= ram);
            prop_assert!(bytes(&r, "work_mem") >= 64 * KB);
            prop_assert!(bytes(&r, "maintenance_work_mem") <= 2 * GB);
            prop_assert!(bytes(&r, "wal_buffers") <= 16 * MB);
            let conn = int(&r, "max_connections");
            prop_assert!(conn >= 1 && conn <= i64::from(conns));
            prop_assert!(int(&r, "max_parallel_workers_per_gather") <= int(&r, "max_parallel_workers"));
            prop_assert!(int(&r, "max_parallel_workers") <= int(&r, "max_worker_processes"));
            for x in &r {
                prop_assert!(
                    !x.reason.is_empty() && !x.reference.is_empty(),
                    "{} unexplained",
                    x.name
                );
                prop_assert!(x.typed.render() == x.value);
            }
            let mut names: Vec<_> = r.iter().map(|x| x.name).collect();
            names.sort_unstable();
            names.dedup();
            prop_assert_eq!(names.len(), r.len());
            Ok(())
        })
        .expect("the memory bound holds");
}

#[test]
fn outputs_carry_every_setting_and_its_reason() {
    let i = inputs(8 * GB, 4, Storage::Ssd, Workload::Mixed, 100);
    let r = recommend(&i);
    let conf = render::conf(&i, &r, &["a note".into()]);
    let sql = render::sql(&i, &r, &[]);
    for x in &r {
        assert!(conf.contains(&format!("# {}", x.reason)), "{} reason missing", x.name);
        assert!(
            conf.contains(&format!("\n{} = {}\n", x.name, x.value)),
            "{} missing",
            x.name
        );
        assert!(
            sql.contains(&format!("ALTER SYSTEM SET {} = '", x.name)),
            "{} missing",
            x.name
        );
    }
    assert!(conf.contains("# a note\n"));
    assert!(sql.contains("ALTER SYSTEM SET archive_command = 'pgvault-archive push %p';"));
    assert!(sql.ends_with("SELECT pg_reload_conf();\n"));
    let json = render::json(&i, &r, serde_json::json!({"memory_source": "flag"}));
    assert_eq!(json["inputs"]["memory"], "8GB");
    assert_eq!(json["inputs"]["memory_source"], "flag");
    assert_eq!(json["settings"].as_array().map(Vec::len), Some(r.len()));
    let ac = &json["settings"].as_array().expect("settings")
        [r.iter().position(|x| x.name == "archive_command").expect("ac")];
    assert_eq!(ac["value"], "pgvault-archive push %p");
    assert!(!ac["reference"].as_str().unwrap_or_default().is_empty());
}

#[test]
fn diff_names_only_what_differs() {
    let r = recommend(&inputs(8 * GB, 4, Storage::Ssd, Workload::Mixed, 100));
    let row = |name: &str, setting: &str, unit: Option<&str>, display: &str| render::Current {
        name: name.into(),
        setting: setting.into(),
        unit: unit.map(String::from),
        display: display.into(),
    };
    let current = vec![
        row("shared_buffers", "16384", Some("8kB"), "128MB"),
        row("effective_cache_size", "786432", Some("8kB"), "6GB"),
        row("archive_timeout", "0", Some("s"), "0"),
        row("checkpoint_completion_target", "0.9", None, "0.9"),
        row("wal_compression", "pglz", None, "pglz"),
    ];
    let d = render::diff(&r, &current);
    let names: Vec<_> = d.iter().map(|x| x.name).collect();
    assert!(names.contains(&"shared_buffers"));
    assert!(names.contains(&"archive_timeout"));
    assert!(!names.contains(&"effective_cache_size"), "6GB = 786432 × 8kB");
    assert!(!names.contains(&"checkpoint_completion_target"));
    assert!(!names.contains(&"wal_compression"));
    // A floor: more WAL senders than recommended comply, fewer do not.
    let senders = get(&r, "max_wal_senders");
    assert!(senders.at_least && senders.matches("20", None) && !senders.matches("2", None));
    // Settings the server did not report are listed as unknown to it.
    let wl = d.iter().find(|x| x.name == "wal_level").expect("wal_level");
    assert_eq!(wl.current, None);
    let sb = d.iter().find(|x| x.name == "shared_buffers").expect("shared_buffers");
    assert_eq!(
        (sb.current.as_deref(), sb.recommended.as_str(), sb.restart),
        (Some("128MB"), "2GB", true)
    );
    let text = render::diff_text(&d, r.len());
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("shared_buffers "))
        .expect("a line");
    assert!(line.ends_with(" 128MB → 2GB  (restart)"), "{line}");
}
