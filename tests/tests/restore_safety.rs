//! Restore that is safe to interrupt, repeat and feed hostile input (issue 6, items 3–5). These
//! check pgvault's own logic, so they run on PostgreSQL 15 only.
//!
//! - `kill_nine_at_any_instant`: `pgvault restore` SIGKILLed at named failpoints and after N
//!   bytes written (`PGVAULT_FAILPOINT`, never timers): every time `pg_ctl start` fails on the
//!   directory; a re-run resumes and completes (the cluster has the right rows), a restore of
//!   another backup or into a foreign directory is refused with how to start over.
//! - `forged_catalog_is_refused_as_root`: an unencrypted repository whose catalog names an
//!   absolute path, a `..` path, a link to outside with a file below it: refused, nothing written
//!   outside the data directory (a canary directory is unchanged), run as root.
//! - `hostile_config_and_data_paths`: a configuration path with a space, `'`, `"`, `$` and a
//!   backslash, a data directory with a space and a `'`: recovery fetches WAL through
//!   `restore_command` (rows committed after the backup are there).
//! - `archive_mode_off_and_standby`: `ArchiveMode::Off` restores a cluster that does not archive;
//!   `RestoreType::Standby` writes `standby.signal` and the server keeps following the archive.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use pgvault_core::config::Config;
use pgvault_core::repository::{layout, BackupCatalog, Repository};
use pgvault_core::restore::{self, ArchiveMode, RestoreRequest, RestoreType, Target, TargetAction};
use pgvault_tests::bins::default_cmd_timeout;
use pgvault_tests::cluster::free_port;
use pgvault_tests::{
    archiving_cluster, install_under_test, run_as_postgres, run_with_timeout, run_workspace_bin, workspace_bin,
    write_postgres_file, ClusterOptions, CmdOutput, PgCluster, PgInstall, Vault,
};

const RECOVERY: Duration = Duration::from_secs(180);

fn pg15() -> Option<PgInstall> {
    install_under_test(15)
}

/// A primary archiving into `vault`, a table `t` with `base` rows, one backup (returned), then
/// `after` rows committed and archived: a complete restore has both.
async fn primary_with_backup(install: &PgInstall, vault: &Vault) -> Result<(PgCluster, String)> {
    let primary = archiving_cluster(install, vault, ClusterOptions::default()).await?;
    primary
        .execute("CREATE TABLE t (id serial PRIMARY KEY, phase text NOT NULL, pad text)")
        .await?;
    // Some megabytes, so that byte-count failpoints land inside the files.
    primary
        .execute("INSERT INTO t (phase, pad) SELECT 'base', repeat(md5(g::text), 30) FROM generate_series(1, 8000) g")
        .await?;
    primary.checkpoint().await?;
    let id = vault.backup(&[])?;
    primary
        .execute("INSERT INTO t (phase) SELECT 'after' FROM generate_series(1, 100)")
        .await?;
    let seg = primary.switch_wal().await?;
    primary.wait_for_archived(&seg, Duration::from_secs(60)).await?;
    Ok((primary, id))
}

/// "phase:count …" of table `t`.
async fn phases(c: &PgCluster) -> Result<String> {
    let rows = c
        .client()
        .await?
        .query("SELECT phase, count(*) FROM t GROUP BY phase ORDER BY phase", &[])
        .await?;
    Ok(rows
        .iter()
        .map(|r| format!("{}:{}", r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect::<Vec<_>>()
        .join(" "))
}

/// `pgvault --config CONFIG restore --pgdata DIR args…` as `postgres`, with `failpoint` in
/// `PGVAULT_FAILPOINT` when given.
fn restore_cmd(config: &Path, dir: &Path, args: &[&str], failpoint: Option<&str>) -> Result<CmdOutput> {
    let mut all: Vec<String> = vec![
        "--config".into(),
        config.display().to_string(),
        "restore".into(),
        "--pgdata".into(),
        dir.display().to_string(),
    ];
    all.extend(args.iter().map(|s| s.to_string()));
    let fp = failpoint.map(std::ffi::OsString::from);
    let envs: Vec<(&str, &std::ffi::OsStr)> = fp.iter().map(|v| ("PGVAULT_FAILPOINT", v.as_os_str())).collect();
    run_workspace_bin("pgvault", all, &envs, default_cmd_timeout())
}

/// Whether the command was SIGKILLed (directly, or `runuser`'s 128+9 for its killed child).
fn killed(out: &CmdOutput) -> bool {
    matches!(out.code(), None | Some(137))
}

/// `pg_ctl start` on `dir` must fail (no `global/pg_control` yet); stops it if it started.
fn assert_does_not_start(install: &PgInstall, dir: &Path, what: &str) -> Result<()> {
    let port = free_port()?.to_string();
    let log = dir.with_extension("start.log");
    let opts = format!("-p {port} -c listen_addresses='' -c unix_socket_directories=/tmp");
    let d = dir.display().to_string();
    let out = run_as_postgres(
        install.bin("pg_ctl"),
        [
            "-D",
            &d,
            "-l",
            &log.display().to_string(),
            "-w",
            "-t",
            "20",
            "-o",
            &opts,
            "start",
        ],
        Duration::from_secs(60),
    )?;
    if out.success() {
        let _ = run_as_postgres(
            install.bin("pg_ctl"),
            ["-D", &d, "-m", "immediate", "stop"],
            Duration::from_secs(60),
        );
        bail!("PostgreSQL started on a half-restored directory ({what}): {out}");
    }
    Ok(())
}

async fn start_and_count(install: &PgInstall, dir: &Path) -> Result<String> {
    let auto = dir.join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&auto)?;
    text.push_str("archive_mode = off\n");
    write_postgres_file(&auto, text, 0o600)?;
    let mut c = PgCluster::from_data_dir(install, dir, None)?;
    c.start()?;
    c.wait_for_recovery_end(RECOVERY).await?;
    let p = phases(&c).await;
    c.stop()?;
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_at_any_instant() {
    let Some(install) = pg15() else { return };
    let run = async {
        let vault = Vault::new()?;
        let (primary, id) = primary_with_backup(&install, &vault).await?;
        let second = vault.backup(&[])?;
        drop(primary);
        let backup = ["--backup", id.as_str()];
        let instants = [
            "restore:after-marker",
            "restore:after-skeleton",
            "restore:after-bytes=1",
            "restore:after-bytes=100000",
            "restore:after-bytes=1000000",
            "restore:after-bytes=4000000",
            "restore:after-bytes=9000000",
            "restore:after-bytes=16000000",
            "restore:after-files",
            "restore:after-settings",
            "restore:after-modes",
            "restore:before-pg-control",
        ];
        for (i, fp) in instants.iter().enumerate() {
            let dir = vault.restore_path(&format!("killed-{i}"));
            let out = restore_cmd(&vault.config, &dir, &backup, Some(fp))?;
            ensure!(killed(&out), "{fp}: the restore was not killed: {out}");
            ensure!(dir.join("pgvault_restore.json").is_file(), "{fp}: the marker is there");
            ensure!(
                !dir.join("global/pg_control").exists(),
                "{fp}: pg_control is written last"
            );
            assert_does_not_start(&install, &dir, fp)?;
            if i % 4 == 1 {
                // Killed again while the re-run cleans up: still not startable, and a third run finishes.
                let out = restore_cmd(&vault.config, &dir, &backup, Some("restore:during-cleanup"))?;
                ensure!(killed(&out), "{fp}: the cleanup was not killed: {out}");
                assert_does_not_start(&install, &dir, "during cleanup")?;
            }
            let out = restore_cmd(&vault.config, &dir, &backup, None)?;
            ensure!(out.success(), "{fp}: the re-run must resume and finish: {out}");
            ensure!(
                !dir.join("pgvault_restore.json").exists(),
                "{fp}: the marker is removed at the end"
            );
            if i % 4 == 0 {
                assert_eq!(
                    start_and_count(&install, &dir).await?,
                    "after:100 base:8000",
                    "{fp}: every row after the resumed restore"
                );
            }
        }

        // Killed, then asked for another backup: refused, saying how to finish or start over.
        let dir = vault.restore_path("killed-other");
        let out = restore_cmd(&vault.config, &dir, &backup, Some("restore:after-bytes=1000000"))?;
        ensure!(killed(&out), "{out}");
        let out = restore_cmd(&vault.config, &dir, &["--backup", &second], None)?;
        ensure!(
            !out.success(),
            "another backup into an interrupted restore must be refused: {out}"
        );
        ensure!(
            out.stderr.contains(&format!("--backup {id}")) && out.stderr.contains("rm -rf"),
            "says how to start over: {out}"
        );
        assert_does_not_start(&install, &dir, "after the refusal")?;

        // A non-empty directory without a marker: refused, untouched.
        let foreign = vault.dir.subdir("foreign")?;
        std::fs::write(foreign.join("keep-me"), b"data")?;
        let out = restore_cmd(&vault.config, &foreign, &backup, None)?;
        ensure!(!out.success() && out.stderr.contains("rm -rf"), "{out}");
        ensure!(
            std::fs::read_dir(&foreign)?.count() == 1,
            "nothing written into a foreign directory"
        );
        Ok(())
    };
    run.await.unwrap_or_else(|e: anyhow::Error| panic!("{e:#}"));
}

/// Replaces backup `id`'s catalog with `forge(catalog)`. The one place that knows how catalogs are
/// stored (the format may change: adapt here).
async fn forge_catalog(config: &Path, id: &str, forge: impl FnOnce(&mut BackupCatalog)) -> Result<()> {
    let config = Config::load(Some(config))?;
    let repo = Repository::open(&config).await?;
    let mut cat = repo.load_catalog(id).await?;
    forge(&mut cat);
    repo.put_sealed(&layout::catalog_key(id), &serde_json::to_vec(&cat)?)
        .await?;
    Ok(())
}

/// One way to forge a catalog.
type Forgery = Box<dyn FnOnce(&mut BackupCatalog)>;

fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            out.push(e.path());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_catalog_is_refused_as_root() {
    let Some(install) = pg15() else { return };
    if !pgvault_tests::process::is_root() {
        eprintln!("forged_catalog_is_refused_as_root: needs root (restore may run as root)");
        return;
    }
    let run = async {
        let vault = Vault::new()?;
        let mut primary = PgCluster::init(
            &install,
            ClusterOptions::default().archive_command(vault.archive_command()),
        )?;
        // Unencrypted: a forger needs no key.
        let text = format!(
            "[postgres]\nhost = \"{}\"\nport = {}\nuser = \"postgres\"\npgdata = \"{}\"\n\n[repository]\nurl = \"file://{}\"\n\n[encryption]\ncipher = \"none\"\n\n[backup]\narchive_wait_timeout = 120\n",
            primary.socket_dir().display(),
            primary.port(),
            primary.data_dir().display(),
            vault.repo.display()
        );
        write_postgres_file(&vault.config, text, 0o600)?;
        primary.start()?;
        vault.pgvault(["init"])?.check()?;
        let id = vault.backup(&[])?;
        drop(primary);

        let canary = vault.dir.subdir("canary")?;
        std::fs::write(canary.join("precious"), b"keep")?;
        let before = tree(&canary);
        let canary_s = canary.display().to_string();
        let rel_up = format!("../../../../../../../..{canary_s}/evil");
        let cases: Vec<(&str, Forgery)> = vec![
            (
                "absolute file",
                Box::new({
                    let c = canary_s.clone();
                    move |cat| cat.files[1].path = format!("{c}/evil")
                }),
            ),
            (
                "dotdot file",
                Box::new({
                    let r = rel_up.clone();
                    move |cat| cat.files[1].path = r
                }),
            ),
            (
                "dotdot directory",
                Box::new({
                    let r = rel_up.clone();
                    move |cat| cat.directories[0].path = r
                }),
            ),
            (
                "link to outside then a file below it",
                Box::new({
                    let c = canary_s.clone();
                    move |cat| {
                        cat.symlinks.push(pgvault_core::repository::catalog::LinkEntry {
                            path: "escape".into(),
                            target: c,
                        });
                        cat.files[1].path = "escape/evil".into();
                    }
                }),
            ),
            (
                "tablespace oid not a number",
                Box::new(|cat| cat.files[1].path = "pg_tblspc/..x/evil".into()),
            ),
        ];
        for (i, (what, forge)) in cases.into_iter().enumerate() {
            let original = {
                let config = Config::load(Some(&vault.config))?;
                Repository::open(&config).await?.load_catalog(&id).await?
            };
            forge_catalog(&vault.config, &id, forge).await?;
            let dir = vault.restore_path(&format!("forged-{i}"));
            // As root, directly (not as postgres).
            let mut cmd = std::process::Command::new(workspace_bin("pgvault"));
            cmd.args([
                "--config",
                &vault.config.display().to_string(),
                "restore",
                "--pgdata",
                &dir.display().to_string(),
                "--backup",
                &id,
            ]);
            let out = run_with_timeout(&mut cmd, default_cmd_timeout())?;
            ensure!(!out.success(), "{what}: a forged catalog must be refused: {out}");
            ensure!(
                out.stderr.contains("unsafe path"),
                "{what}: the refusal names the unsafe path: {out}"
            );
            ensure!(!dir.exists(), "{what}: refused before anything was written");
            assert_eq!(
                tree(&canary),
                before,
                "{what}: nothing written outside the data directory"
            );
            ensure!(std::fs::read(canary.join("precious"))? == b"keep", "{what}");
            forge_catalog(&vault.config, &id, move |c| *c = original).await?;
        }
        Ok(())
    };
    run.await.unwrap_or_else(|e: anyhow::Error| panic!("{e:#}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_config_and_data_paths() {
    let Some(install) = pg15() else { return };
    let run = async {
        let vault = Vault::new()?;
        let (primary, id) = primary_with_backup(&install, &vault).await?;
        drop(primary);
        let weird_dir = vault.dir.subdir("cfg dir 'q' \"dq\" $HOME \\b")?;
        let weird_cfg = weird_dir.join("it's a \"cfg\" $USER \\n.toml");
        write_postgres_file(&weird_cfg, std::fs::read(&vault.config)?, 0o600)?;
        let dir = vault.restore_path("data dir's copy");
        let out = restore_cmd(&weird_cfg, &dir, &["--backup", &id], None)?;
        ensure!(out.success(), "{out}");
        let auto = std::fs::read_to_string(dir.join("postgresql.auto.conf"))?;
        ensure!(auto.contains("restore_command"), "{auto}");
        // Rows committed after the backup exist only in archived WAL: fetched through the command.
        assert_eq!(
            start_and_count(&install, &dir).await?,
            "after:100 base:8000",
            "recovery fetched WAL through restore_command"
        );
        Ok(())
    };
    run.await.unwrap_or_else(|e: anyhow::Error| panic!("{e:#}"));
}

fn request(dir: &Path, id: &str, kind: RestoreType, archive_mode: ArchiveMode) -> RestoreRequest {
    RestoreRequest {
        pgdata: dir.to_path_buf(),
        backup: Some(id.to_string()),
        target: Target::End,
        action: TargetAction::Promote,
        timeline: None,
        tablespace_map: vec![],
        link_map: vec![],
        archive_mode,
        kind,
        parallel: 2,
        archive_command: workspace_bin("pgvault-archive"),
    }
}

/// Restores in-process (the library; the CLI flags are added separately) as the test's user.
async fn restore_lib(vault: &Vault, req: &RestoreRequest) -> Result<()> {
    let config = Config::load(Some(&vault.config))?;
    let repo = Repository::open(&config).await?;
    restore::run(&config, &repo, req, Arc::new(pgvault_core::progress::Quiet)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_mode_off_and_standby() {
    let Some(install) = pg15() else { return };
    let run = async {
        let vault = Vault::new()?;
        let (primary, id) = primary_with_backup(&install, &vault).await?;

        // archive_mode off: recovers, promotes, and archives nothing on its new timeline.
        let dir = vault.restore_path("no-archive");
        restore_lib(&vault, &request(&dir, &id, RestoreType::Default, ArchiveMode::Off)).await?;
        let mut c = PgCluster::from_data_dir(&install, &dir, None)?;
        c.start()?;
        c.wait_for_recovery_end(RECOVERY).await?;
        assert_eq!(c.query_scalar::<String>("SHOW archive_mode").await?, "off");
        assert_eq!(phases(&c).await?, "after:100 base:8000");
        c.execute("INSERT INTO t (phase) VALUES ('copy')").await?;
        c.switch_wal().await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let archived: i64 = c.query_scalar("SELECT archived_count FROM pg_stat_archiver").await?;
        assert_eq!(archived, 0, "a restored copy with archive_mode off archives nothing");
        let tl2: Vec<String> = vault
            .raw_storage()?
            .list("wal")
            .await?
            .into_iter()
            .map(|o| o.key)
            .filter(|k| k.contains("/00000002"))
            .collect();
        ensure!(
            tl2.is_empty(),
            "nothing of the copy's timeline reached the repository: {tl2:?}"
        );
        c.stop()?;

        // standby: standby.signal, stays in recovery and follows the archive.
        let dir = vault.restore_path("standby");
        restore_lib(&vault, &request(&dir, &id, RestoreType::Standby, ArchiveMode::Preserve)).await?;
        ensure!(dir.join("standby.signal").is_file() && !dir.join("recovery.signal").exists());
        let mut s = PgCluster::from_data_dir(&install, &dir, None)?;
        s.start()?;
        ensure!(s.is_in_recovery().await?, "a standby stays in recovery");
        primary
            .execute("INSERT INTO t (phase) SELECT 'late' FROM generate_series(1, 7)")
            .await?;
        let seg = primary.switch_wal().await?;
        primary.wait_for_archived(&seg, Duration::from_secs(60)).await?;
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let p = phases(&s).await?;
            if p.contains("late:7") {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "the standby did not replay WAL archived after it started: {p}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        ensure!(s.is_in_recovery().await?, "still a standby after catching up");
        s.stop()?;
        Ok(())
    };
    run.await.unwrap_or_else(|e: anyhow::Error| panic!("{e:#}"));
}
