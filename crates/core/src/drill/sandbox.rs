//! The drill's sandbox: a private directory holding the restored data directory, the server's
//! socket, its own `pg_hba.conf` and its log, and the settings that seal the throwaway server off
//! from production.
//!
//! Sealing (issue 8, item 6): `archive_mode = off` (a promoted sandbox must never archive a
//! `.history` file into the production repository), `listen_addresses = ''` with the socket in
//! the 0700 sandbox, its own `hba_file` (the restored one may trust networks), a port that is
//! not production's, no synchronous standbys to wait for, no primary to connect to. The
//! settings recovery checks against the source (`max_connections`, ...) come from the restored
//! `pg_control`, so they are at the source's values even when the source's `postgresql.conf`
//! lived outside the data directory (Debian) and the sandbox gets an empty one of its own.
//! All of them are command-line `-c` options: they win over every configuration file.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::DrillError;

/// The settings recovery refuses to run below the source's values, as `pg_controldata` names them.
pub const RECOVERY_CRITICAL: &[(&str, &str)] = &[
    ("max_connections setting", "max_connections"),
    ("max_worker_processes setting", "max_worker_processes"),
    ("max_wal_senders setting", "max_wal_senders"),
    ("max_prepared_xacts setting", "max_prepared_transactions"),
    ("max_locks_per_xact setting", "max_locks_per_transaction"),
];

/// A sandbox directory and the places inside it.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub root: PathBuf,
    /// Whether the drill made `root` (then it removes it; a given existing empty one is emptied).
    pub created: bool,
}

impl Sandbox {
    /// Makes the sandbox (`dir`, or a new directory under `parent`), mode 0700. A given `dir`
    /// must not exist or be empty: a drill never writes over anything.
    pub fn create(dir: Option<&Path>, parent: &Path) -> Result<Sandbox, DrillError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| DrillError::Sandbox { path, source }
        };
        let (root, created) = match dir {
            Some(d) => {
                let d = std::path::absolute(d).map_err(io(d))?;
                let exists = d.exists();
                if exists && std::fs::read_dir(&d).map_err(io(&d))?.next().is_some() {
                    return Err(DrillError::SandboxNotEmpty(d));
                }
                (d, !exists)
            }
            None => {
                let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
                (
                    parent.join(format!("pgvault-drill-{stamp}-{}", std::process::id())),
                    true,
                )
            }
        };
        std::fs::create_dir_all(&root).map_err(io(&root))?;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).map_err(io(&root))?;
        let sb = Sandbox { root, created };
        std::fs::create_dir_all(sb.socket_dir()).map_err(io(&sb.socket_dir()))?;
        std::fs::set_permissions(sb.socket_dir(), std::fs::Permissions::from_mode(0o700))
            .map_err(io(&sb.socket_dir()))?;
        Ok(sb)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn socket_dir(&self) -> PathBuf {
        self.root.join("socket")
    }

    pub fn hba_file(&self) -> PathBuf {
        self.root.join("pg_hba.conf")
    }

    pub fn ident_file(&self) -> PathBuf {
        self.root.join("pg_ident.conf")
    }

    pub fn log_file(&self) -> PathBuf {
        self.root.join("server.log")
    }

    /// Where tablespace `oid` is restored.
    pub fn tablespace_dir(&self, oid: u32) -> PathBuf {
        self.root.join("tablespaces").join(oid.to_string())
    }

    /// Writes the sandbox's own `pg_hba.conf` (local connections of `os_user`'s socket only: the
    /// socket directory is 0700, so only that OS user reaches it) and an empty `pg_ident.conf`,
    /// and an empty `postgresql.conf` in the data directory when the backup has none.
    pub fn write_files(&self) -> Result<(), DrillError> {
        let write = |p: PathBuf, body: &str| {
            std::fs::write(&p, body).map_err(|source| DrillError::Sandbox {
                path: p.clone(),
                source,
            })
        };
        write(self.hba_file(), HBA)?;
        write(self.ident_file(), "")?;
        let conf = self.data_dir().join("postgresql.conf");
        if !conf.exists() {
            write(
                conf,
                "# written by pgvault drill: the source's postgresql.conf lives outside its data directory\n",
            )?;
        }
        Ok(())
    }

    /// Removes the sandbox (everything in it when the drill did not create it).
    pub fn remove(&self) -> Result<(), DrillError> {
        let res = if self.created {
            std::fs::remove_dir_all(&self.root)
        } else {
            std::fs::read_dir(&self.root).and_then(|rd| {
                for e in rd {
                    let p = e?.path();
                    if p.is_dir() && !p.is_symlink() {
                        std::fs::remove_dir_all(&p)?;
                    } else {
                        std::fs::remove_file(&p)?;
                    }
                }
                Ok(())
            })
        };
        res.map_err(|source| DrillError::Sandbox {
            path: self.root.clone(),
            source,
        })
    }
}

/// The sandbox's `pg_hba.conf`: Unix-socket connections only (there is no TCP listener at all).
pub const HBA: &str =
    "# written by pgvault drill: the sandbox is reached only through its 0700 socket directory\nlocal all all trust\n";

/// The values of [`RECOVERY_CRITICAL`] in `pg_controldata` output.
pub fn recovery_critical_from_controldata(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (label, setting) in RECOVERY_CRITICAL {
        let value = text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == *label).then(|| v.trim().to_string())
        });
        if let Some(v) = value.filter(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit())) {
            out.push((setting.to_string(), v));
        }
    }
    out
}

/// Every `-c` setting the sandbox server starts with.
pub fn seal_settings(sb: &Sandbox, port: u16, critical: &[(String, String)]) -> Vec<(String, String)> {
    let s = |k: &str, v: &str| (k.to_string(), v.to_string());
    let mut out = vec![
        s("archive_mode", "off"),
        s("listen_addresses", ""),
        s("port", &port.to_string()),
        s("unix_socket_directories", &sb.socket_dir().display().to_string()),
        s("unix_socket_permissions", "0700"),
        s("hba_file", &sb.hba_file().display().to_string()),
        s("ident_file", &sb.ident_file().display().to_string()),
        s("data_directory", &sb.data_dir().display().to_string()),
        s("external_pid_file", ""),
        s("ssl", "off"),
        s("synchronous_standby_names", ""),
        s("primary_conninfo", ""),
        s("primary_slot_name", ""),
        s("hot_standby", "on"),
        s("logging_collector", "off"),
        s("log_destination", "stderr"),
        s("cluster_name", "pgvault-drill"),
    ];
    out.extend(critical.iter().cloned());
    out
}

/// A port for the sandbox: free on localhost now, and never production's.
pub fn pick_port(production: u16) -> u16 {
    for _ in 0..20 {
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", 0)) {
            if let Ok(a) = l.local_addr() {
                if a.port() != production {
                    return a.port();
                }
            }
        }
    }
    if production == 54329 {
        54328
    } else {
        54329
    }
}

/// Bytes available to an unprivileged writer on the file system holding `path`.
pub fn free_bytes(path: &Path) -> Result<u64, DrillError> {
    let st = nix::sys::statvfs::statvfs(path).map_err(|e| DrillError::Sandbox {
        path: path.to_path_buf(),
        source: std::io::Error::from(e),
    })?;
    #[allow(clippy::unnecessary_cast)]
    Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
}

/// The space a restore of `backup_size` bytes plus `wal_bytes` of replayed WAL needs, with 10 % headroom.
pub fn space_needed(backup_size: u64, wal_bytes: u64) -> u64 {
    let base = backup_size.saturating_add(wal_bytes);
    base.saturating_add(base / 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb() -> Sandbox {
        Sandbox {
            root: PathBuf::from("/tmp/sb"),
            created: true,
        }
    }

    #[test]
    fn sealed_settings_close_every_door() {
        let s = seal_settings(&sb(), 6000, &[("max_connections".into(), "300".into())]);
        let get = |k: &str| s.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("archive_mode"), Some("off"));
        assert_eq!(get("listen_addresses"), Some(""));
        assert_eq!(get("unix_socket_directories"), Some("/tmp/sb/socket"));
        assert_eq!(get("hba_file"), Some("/tmp/sb/pg_hba.conf"));
        assert_eq!(get("port"), Some("6000"));
        assert_eq!(get("synchronous_standby_names"), Some(""));
        assert_eq!(get("max_connections"), Some("300"));
        assert!(crate::pgserver::command_line_options(&s).is_ok());
    }

    #[test]
    fn hba_has_no_network_line() {
        assert!(HBA
            .lines()
            .filter(|l| !l.starts_with('#'))
            .all(|l| l.starts_with("local ")));
    }

    #[test]
    fn recovery_critical_values_come_from_pg_control() {
        let text = "pg_control version number:            1300\nmax_connections setting:              250\nmax_worker_processes setting:         8\nmax_wal_senders setting:              10\nmax_prepared_xacts setting:           0\nmax_locks_per_xact setting:           64\n";
        let v = recovery_critical_from_controldata(text);
        assert_eq!(v.len(), 5);
        assert_eq!(v[0], ("max_connections".to_string(), "250".to_string()));
        assert_eq!(v[3], ("max_prepared_transactions".to_string(), "0".to_string()));
    }

    #[test]
    fn port_is_never_production() {
        for prod in [5432u16, 54329] {
            assert_ne!(pick_port(prod), prod);
        }
    }

    #[test]
    fn space_check_has_headroom() {
        assert_eq!(space_needed(1000, 0), 1100);
        assert_eq!(space_needed(u64::MAX, 1), u64::MAX);
    }

    #[test]
    fn a_given_sandbox_must_be_empty() {
        let t = tempfile::tempdir().expect("tmp");
        std::fs::write(t.path().join("x"), "x").expect("write");
        assert!(matches!(
            Sandbox::create(Some(t.path()), Path::new("/tmp")),
            Err(DrillError::SandboxNotEmpty(_))
        ));
        let fresh = t.path().join("new");
        let sb = Sandbox::create(Some(&fresh), Path::new("/tmp")).expect("create");
        let mode = std::fs::metadata(&sb.root).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        sb.remove().expect("remove");
        assert!(!fresh.exists());
    }
}
