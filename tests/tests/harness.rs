//! Smoke tests of the test harness itself, per supported PostgreSQL version.
//!
//! They prove, on every machine that runs the suite (developer or CI), that each PostgreSQL
//! install can be initialised and run as `postgres` from a root test process, that the harness
//! configuration (archiving, replication, checksums) is in effect, and that a copy of a stopped
//! data directory starts through `PgCluster::from_data_dir` (the path every restore test takes).
//! If these fail, every other integration test would fail in less obvious ways.

use std::time::Duration;

use pgvault_tests::{copy_dir_for_postgres, run_as_postgres, ClusterOptions, PgCluster, TempRepoDir};

pgvault_tests::per_pg_version!(smoke, smoke_test);
pgvault_tests::per_pg_version!(from_data_dir, from_data_dir_test);
pgvault_tests::per_pg_version!(archiving, archiving_test);

/// init, start, write, switch WAL, checkpoint, amcheck, crash + recovery, stop.
async fn smoke_test(install: pgvault_tests::PgInstall) {
    let mut pg = PgCluster::start_new(&install, ClusterOptions::default()).expect("start cluster");
    let version: String = pg.query_scalar("SHOW server_version").await.expect("server_version");
    assert!(
        version.starts_with(&format!("{}.", install.major())),
        "server reports {version}, expected major {}",
        install.major()
    );
    for (setting, expected) in [
        ("data_checksums", "on"),
        ("wal_level", "replica"),
        ("archive_mode", "on"),
        ("fsync", "off"),
    ] {
        let v: String = pg.query_scalar(&format!("SHOW {setting}")).await.expect("SHOW");
        assert_eq!(v, expected, "setting {setting}");
    }

    pg.execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g;",
    )
    .await
    .expect("create and fill table");
    let lsn_before = pg.current_lsn().await.expect("current_lsn");
    let seg = pg.switch_wal().await.expect("switch_wal");
    assert_eq!(seg.len(), 24, "segment name {seg:?}");
    let txid = pg.txid_current().await.expect("txid_current");
    assert!(txid > 0);
    pg.create_restore_point("smoke").await.expect("restore point");
    let now = pg.now().await.expect("now");
    assert!(
        (chrono::Utc::now() - now).num_seconds().abs() < 60,
        "server clock {now}"
    );
    pg.checkpoint().await.expect("checkpoint");
    assert!(!pg.is_in_recovery().await.expect("is_in_recovery"));
    pg.pg_amcheck().expect("pg_amcheck");
    eprintln!(
        "PostgreSQL {}: LSN {lsn_before}, switched from {seg}",
        install.version()
    );

    // A crash (immediate stop) and crash recovery keep committed rows.
    pg.execute("INSERT INTO t VALUES (1001, 'after checkpoint')")
        .await
        .expect("insert");
    pg.stop_immediate().expect("stop immediate");
    pg.start().expect("restart after crash");
    let n: i64 = pg.query_scalar("SELECT count(*) FROM t").await.expect("count");
    assert_eq!(n, 1001);
    pg.stop().expect("stop");
    assert!(!pg.is_running());
}

/// A copy of a stopped cluster starts via `from_data_dir` on its own port and socket while the
/// original runs too, and holds the same data.
async fn from_data_dir_test(install: pgvault_tests::PgInstall) {
    let mut pg = PgCluster::start_new(&install, ClusterOptions::default()).expect("start cluster");
    pg.execute("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 500) g")
        .await
        .expect("create table");
    pg.stop().expect("stop");

    let copies = TempRepoDir::with_prefix("pgvault-copy-").expect("temp dir");
    let copy = copies.join("data");
    copy_dir_for_postgres(pg.data_dir(), &copy).expect("copy data dir");

    pg.start().expect("restart original");
    let mut restored = PgCluster::from_data_dir(&install, &copy, None).expect("wrap copied data dir");
    assert_ne!(restored.port(), pg.port());
    restored.start().expect("start copy");
    restored
        .wait_for_recovery_end(Duration::from_secs(60))
        .await
        .expect("not in recovery");
    let n: i64 = restored.query_scalar("SELECT count(*) FROM t").await.expect("count");
    assert_eq!(n, 500);
    restored
        .execute("INSERT INTO t VALUES (501)")
        .await
        .expect("copy is writable");
    let original: i64 = pg.query_scalar("SELECT count(*) FROM t").await.expect("count");
    assert_eq!(original, 500, "the copy must be independent of the original");
    restored.pg_amcheck().expect("pg_amcheck on copy");
    restored.stop().expect("stop copy");
    drop(restored);
    assert!(
        copy.join("PG_VERSION").is_file(),
        "from_data_dir must not delete the data dir"
    );
}

/// `archive_command` runs as `postgres` and can write into a `TempRepoDir`;
/// `wait_for_archived` sees the switched segment arrive.
async fn archiving_test(install: pgvault_tests::PgInstall) {
    let repo = TempRepoDir::new().expect("repo dir");
    let cmd = format!("test ! -f {0}/%f && cp %p {0}/%f", repo.path().display());
    let pg = PgCluster::start_new(&install, ClusterOptions::default().archive_command(cmd)).expect("start cluster");
    pg.execute("CREATE TABLE t AS SELECT 1 AS x")
        .await
        .expect("create table");
    let seg = pg.switch_wal().await.expect("switch_wal");
    pg.wait_for_archived(&seg, Duration::from_secs(60))
        .await
        .expect("archived");
    assert!(
        repo.join(&seg).is_file(),
        "{seg} missing from {}",
        repo.path().display()
    );
}

#[test]
fn runs_as_postgres() {
    let out = run_as_postgres("id", ["-un"], Duration::from_secs(30)).expect("run id");
    let out = out.check().expect("id -un");
    if nix::unistd::geteuid().is_root() {
        assert_eq!(out.stdout.trim(), "postgres");
    }
    let dir = TempRepoDir::new().expect("temp dir");
    let probe = dir.join("probe");
    run_as_postgres("touch", [&probe], Duration::from_secs(30))
        .expect("touch")
        .check()
        .expect("postgres can write its TempRepoDir");
    let path = dir.path().to_path_buf();
    drop(dir);
    if !pgvault_tests::keep_test_dirs() {
        assert!(!path.exists(), "TempRepoDir must be removed on drop");
    }
}

/// Every supported major that is found reports that major from its own `postgres --version`
/// and has the tools the tests use; amcheck is there unless the installation is the named
/// exception. In CI every supported major must be found (the version filter is ignored there).
#[test]
fn every_version_found_with_its_tools() {
    // Panics in CI when a supported version is missing.
    let found = pgvault_tests::pg_versions_under_test();
    if pgvault_tests::in_ci() {
        let majors: Vec<u32> = found.iter().map(|i| i.major()).collect();
        assert_eq!(
            majors,
            pgvault_tests::SUPPORTED_MAJORS,
            "CI tests every supported major"
        );
    }
    for i in &found {
        let mut cmd = std::process::Command::new(i.bin("postgres"));
        cmd.arg("--version");
        let out = pgvault_tests::run_with_timeout(&mut cmd, Duration::from_secs(30))
            .and_then(|o| o.check())
            .unwrap_or_else(|e| panic!("{e:#}"));
        let expected = format!("(PostgreSQL) {}.", i.major());
        assert!(
            out.stdout.contains(&expected),
            "{} is not PostgreSQL {}: {out}",
            i.bin_dir().display(),
            i.major()
        );
        for tool in ["initdb", "pg_ctl", "postgres"] {
            assert!(i.bin(tool).is_file(), "{} has no {tool}", i.bin_dir().display());
        }
        // Client tools may come from a newer installation (the npm build of 17 has none).
        assert!(
            i.tool("pg_isready").is_file(),
            "no pg_isready for PostgreSQL {}",
            i.major()
        );
        assert!(
            i.bin("pg_verifybackup").is_file() || i.verifybackup_exception().is_some(),
            "PostgreSQL {} at {} has no pg_verifybackup and is not a named exception",
            i.version(),
            i.bin_dir().display()
        );
        assert!(
            i.has_amcheck() || i.amcheck_exception().is_some(),
            "PostgreSQL {} at {} has no amcheck and is not a named exception",
            i.version(),
            i.bin_dir().display()
        );
        eprintln!(
            "PostgreSQL {} at {} (amcheck: {})",
            i.version(),
            i.bin_dir().display(),
            i.amcheck_exception()
                .map_or("yes".to_string(), |why| format!("no: {why}"))
        );
    }
}

/// The object-store emulators for the cloud-repository tests are installed and run.
#[test]
fn object_store_emulators_present() {
    let checks = [
        // The versions pinned in scripts/install-test-deps.sh; for fake-gcs (which has no
        // version flag) one of its own flags.
        ("seaweedfs (weed)", pgvault_tests::weed_bin(), vec!["version"], " 4.48 "),
        (
            "fake-gcs-server",
            pgvault_tests::fake_gcs_bin(),
            vec!["--help"],
            "-external-url",
        ),
        ("azurite", pgvault_tests::azurite_bin(), vec!["--version"], "3.37.0"),
    ];
    for (name, bin, args, expect) in checks {
        let Some(bin) = bin else {
            pgvault_tests::missing_dependency(name, "run scripts/install-test-deps.sh");
            continue;
        };
        let mut cmd = std::process::Command::new(&bin);
        cmd.args(&args);
        // Node takes a minute to load Azurite on a loaded 2-core machine.
        let out = pgvault_tests::run_with_timeout(&mut cmd, Duration::from_secs(180))
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let text = format!("{}{}", out.stdout, out.stderr);
        assert!(text.contains(expect), "{name} output lacks {expect:?}: {out}");
        eprintln!("{name}: {}", text.lines().next().unwrap_or(""));
    }
}
