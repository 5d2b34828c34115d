//! Unit tests of `plan`: hostile catalogs are refused before anything is written, destinations
//! are routed to the right roots, and directory states decide fresh / resume / refuse.

use super::*;
use crate::lsn::Lsn;
use crate::repository::catalog::{BackupKind, DirEntry, FileEntry, LinkEntry, TablespaceEntry};
use crate::restore::conf::{ArchiveMode, RestoreType};
use crate::restore::{Target, TargetAction};

fn catalog() -> BackupCatalog {
    let now = chrono::Utc::now();
    let file = |p: &str| FileEntry {
        path: p.into(),
        size: 0,
        mode: 0o600,
        mtime: 0,
        pieces: vec![],
        incremental: None,
    };
    BackupCatalog {
        catalog_version: 1,
        id: "B1".into(),
        label: String::new(),
        kind: BackupKind::Full,
        pgvault_version: String::new(),
        system_identifier: 1,
        pg_version_num: 150000,
        timeline: 1,
        start_lsn: Lsn(0),
        stop_lsn: Lsn(0),
        stop_timeline: 1,
        start_wal: String::new(),
        stop_wal: String::new(),
        start_time: now,
        stop_time: now,
        wal_included: false,
        snapshot_after_stop: None,
        size: 0,
        stored_size: 0,
        compression: String::new(),
        encrypted: false,
        owner_uid: None,
        owner_gid: None,
        tablespaces: vec![TablespaceEntry {
            oid: 16384,
            location: "/srv/ts".into(),
        }],
        bundles: vec![],
        directories: vec![
            DirEntry {
                path: "global".into(),
                mode: 0o700,
            },
            DirEntry {
                path: "pg_tblspc".into(),
                mode: 0o700,
            },
            DirEntry {
                path: "pg_tblspc/16384/PG_15".into(),
                mode: 0o700,
            },
        ],
        symlinks: vec![
            LinkEntry {
                path: "pg_tblspc/16384".into(),
                target: "/srv/ts".into(),
            },
            LinkEntry {
                path: "log".into(),
                target: "/var/log/pg".into(),
            },
        ],
        files: vec![
            file("global/pg_control"),
            file("PG_VERSION"),
            file("pg_tblspc/16384/PG_15/1"),
        ],
        manifest_sha256: None,
        parent: None,
    }
}

fn request(pgdata: &Path) -> RestoreRequest {
    RestoreRequest {
        pgdata: pgdata.to_path_buf(),
        backup: None,
        target: Target::End,
        action: TargetAction::Promote,
        timeline: None,
        tablespace_map: vec![],
        link_map: vec![],
        archive_mode: ArchiveMode::Preserve,
        kind: RestoreType::Default,
        parallel: 1,
        archive_command: "/usr/bin/pgvault-archive".into(),
    }
}

fn with_ts_map(tmp: &Path) -> RestoreRequest {
    let mut r = request(&tmp.join("data"));
    r.tablespace_map = vec![format!("16384={}", tmp.join("ts").display())];
    r
}

#[test]
fn routes_entries_to_their_roots() {
    let tmp = tempfile::tempdir().unwrap();
    let p = plan_for(catalog(), &with_ts_map(tmp.path())).unwrap();
    assert_eq!(p.pg_control.rel, "global/pg_control.pgvault-restoring");
    assert_eq!(p.files[0], p.pg_control);
    assert_eq!(p.files[2].full(), tmp.path().join("ts/PG_15/1"));
    assert_eq!(p.tablespaces, vec![(16384, tmp.path().join("ts"))]);
    assert_eq!(p.plain_links.len(), 1, "log comes back as a directory");
    assert_eq!(p.plain_links[0].full(), tmp.path().join("data/log"));
    assert!(p.resume.is_none());
}

#[test]
fn link_map_makes_a_root() {
    let tmp = tempfile::tempdir().unwrap();
    let mut req = with_ts_map(tmp.path());
    req.link_map = vec![format!("log={}", tmp.path().join("log").display())];
    let mut cat = catalog();
    cat.files.push(FileEntry {
        path: "log/x".into(),
        size: 0,
        mode: 0o600,
        mtime: 0,
        pieces: vec![],
        incremental: None,
    });
    let p = plan_for(cat.clone(), &req).unwrap();
    assert!(p.plain_links.is_empty());
    assert_eq!(p.files[3].full(), tmp.path().join("log/x"));
    req.link_map = vec!["pg_wal=/x".into()];
    assert!(matches!(plan_for(cat.clone(), &req), Err(RestoreError::UnknownLink(_))));
    req.link_map = vec!["log=relative".into()];
    assert!(matches!(plan_for(cat, &req), Err(RestoreError::BadLinkMapping(_))));
}

#[test]
fn hostile_catalogs_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let req = with_ts_map(tmp.path());
    let file = |p: &str| FileEntry {
        path: p.into(),
        size: 0,
        mode: 0o600,
        mtime: 0,
        pieces: vec![],
        incremental: None,
    };
    for bad in [
        "/etc/passwd",
        "../escape",
        "base/../../x",
        "pg_tblspc/abc/x",
        "pg_tblspc/99/x",
        "pg_tblspc/16384",
        "a//b",
        "",
    ] {
        let mut cat = catalog();
        cat.files.push(file(bad));
        assert!(plan_for(cat, &req).is_err(), "file {bad:?}");
        let mut cat = catalog();
        cat.directories.push(DirEntry {
            path: bad.into(),
            mode: 0o700,
        });
        if bad != "pg_tblspc/16384" {
            assert!(plan_for(cat, &req).is_err(), "dir {bad:?}");
        }
    }
    let mut cat = catalog();
    cat.symlinks.push(LinkEntry {
        path: "../up".into(),
        target: "/".into(),
    });
    assert!(plan_for(cat, &req).is_err());
    let mut cat = catalog();
    cat.tablespaces[0].location = "relative/ts".into();
    assert!(
        plan_for(cat, &request(&tmp.path().join("data"))).is_err(),
        "tablespace location must be absolute"
    );
    let mut cat = catalog();
    cat.files.remove(0);
    assert!(matches!(plan_for(cat, &req), Err(RestoreError::NoPgControl(_))));
    let mut r = request(&tmp.path().join("data"));
    r.tablespace_map = vec![format!("16384={}", tmp.path().join("data/inside").display())];
    assert!(matches!(plan_for(catalog(), &r), Err(RestoreError::Overlap { .. })));
    assert!(!tmp.path().join("data").exists(), "planning writes nothing");
}

#[test]
fn directory_states_decide() {
    let tmp = tempfile::tempdir().unwrap();
    let req = with_ts_map(tmp.path());
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("PG_VERSION"), "15").unwrap();
    let e = plan_for(catalog(), &req).unwrap_err();
    assert!(matches!(e, RestoreError::NotEmpty { .. }));
    assert!(e.to_string().contains("rm -rf"), "{e}");

    let p = {
        std::fs::remove_file(data.join("PG_VERSION")).unwrap();
        plan_for(catalog(), &req).unwrap()
    };
    std::fs::write(data.join(marker::MARKER), serde_json::to_string(&p.marker()).unwrap()).unwrap();
    std::fs::create_dir_all(tmp.path().join("ts/PG_15")).unwrap();
    let again = plan_for(catalog(), &req).unwrap();
    assert!(again.resume.is_some(), "same backup, same places: resume");

    let mut other = catalog();
    other.id = "B2".into();
    let e = plan_for(other, &req).unwrap_err();
    assert!(
        matches!(e, RestoreError::OtherRestore { ref backup, .. } if backup == "B1"),
        "{e}"
    );
    assert!(
        e.to_string().contains("--backup B1") && e.to_string().contains("rm -rf"),
        "{e}"
    );

    let mut moved = with_ts_map(tmp.path());
    moved.tablespace_map = vec![format!("16384={}", tmp.path().join("ts2").display())];
    assert!(matches!(
        plan_for(catalog(), &moved),
        Err(RestoreError::OtherRestore { .. })
    ));

    std::fs::remove_file(data.join(marker::MARKER)).unwrap();
    std::fs::remove_dir(&data).unwrap();
    let e = plan_for(catalog(), &req).unwrap_err();
    assert!(matches!(e, RestoreError::TablespaceNotEmpty { .. }), "{e}");
}
