//! The restore marker: `pgvault_restore.json` in the data directory, written and fsynced before
//! anything else and removed after `global/pg_control` is in place.
//!
//! It is what makes a restore repeatable. A directory with a marker naming the same backup (and
//! the same tablespace and link destinations) is an interrupted restore of that backup: restore
//! removes what it wrote there and starts over. Any other non-empty directory is refused, with a
//! message that says exactly how to start over, because restore never overwrites what it did not
//! write.

use std::io::Read;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The marker's file name in the data directory.
pub const MARKER: &str = "pgvault_restore.json";

/// What the marker records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    pub backup_id: String,
    pub started_at: DateTime<Utc>,
    pub pid: u32,
    pub host: String,
    /// Tablespace oids and where they were being restored.
    pub tablespaces: Vec<(u32, PathBuf)>,
    /// Mapped links (path in the data directory, destination).
    pub links: Vec<(String, PathBuf)>,
}

impl Marker {
    pub fn new(backup_id: &str, tablespaces: Vec<(u32, PathBuf)>, links: Vec<(String, PathBuf)>) -> Marker {
        Marker {
            backup_id: backup_id.to_string(),
            started_at: Utc::now(),
            pid: std::process::id(),
            host: hostname(),
            tablespaces,
            links,
        }
    }

    /// Whether `other` restores the same thing to the same places.
    pub fn same_restore(&self, other: &Marker) -> bool {
        let sorted = |m: &Marker| {
            let mut t = m.tablespaces.clone();
            t.sort();
            let mut l = m.links.clone();
            l.sort();
            (m.backup_id.clone(), t, l)
        };
        sorted(self) == sorted(other)
    }

    /// Whether the process that wrote it still runs here (another restore in progress).
    pub fn writer_alive(&self) -> bool {
        if self.host != hostname() || self.pid == std::process::id() {
            return false;
        }
        std::fs::read_to_string(format!("/proc/{}/comm", self.pid))
            .map(|c| c.starts_with("pgvault"))
            .unwrap_or(false)
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// What a data directory holds, for deciding whether restore may write into it.
#[derive(Debug, PartialEq, Eq)]
pub enum DirState {
    /// Missing or empty.
    Fresh,
    /// Holds a marker (possibly unreadable: `None`).
    Marked(Option<Marker>),
    /// Non-empty, no marker.
    Foreign,
}

/// Looks at `dir` without following a link as the marker.
pub fn inspect(dir: &Path) -> std::io::Result<DirState> {
    let mut entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DirState::Fresh),
        Err(e) => return Err(e),
    };
    if entries.next().is_none() {
        return Ok(DirState::Fresh);
    }
    let path = dir.join(MARKER);
    match path.symlink_metadata() {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Ok(DirState::Marked(None)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DirState::Foreign),
        Err(e) => return Err(e),
    }
    let mut text = String::new();
    std::fs::File::open(&path)?.take(1 << 20).read_to_string(&mut text)?;
    Ok(DirState::Marked(serde_json::from_str(&text).ok()))
}

/// Whether a tablespace or link destination may be written: missing, empty, or the marked
/// restore's own destination.
pub fn dir_is_empty(dir: &Path) -> std::io::Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut e) => Ok(e.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("pgdata");
        assert_eq!(inspect(&d).unwrap(), DirState::Fresh);
        std::fs::create_dir(&d).unwrap();
        assert_eq!(inspect(&d).unwrap(), DirState::Fresh);
        std::fs::write(d.join("PG_VERSION"), "15").unwrap();
        assert_eq!(inspect(&d).unwrap(), DirState::Foreign);
        let m = Marker::new("B1", vec![(16384, "/ts".into())], vec![]);
        std::fs::write(d.join(MARKER), serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(inspect(&d).unwrap(), DirState::Marked(Some(m.clone())));
        std::fs::write(d.join(MARKER), "{garbage").unwrap();
        assert_eq!(inspect(&d).unwrap(), DirState::Marked(None));
    }

    #[test]
    fn same_restore_compares_backup_and_destinations() {
        let a = Marker::new("B1", vec![(1, "/a".into()), (2, "/b".into())], vec![]);
        let mut b = Marker::new("B1", vec![(2, "/b".into()), (1, "/a".into())], vec![]);
        b.pid += 1;
        assert!(a.same_restore(&b));
        assert!(!a.same_restore(&Marker::new("B2", a.tablespaces.clone(), vec![])));
        assert!(!a.same_restore(&Marker::new("B1", vec![(1, "/a".into())], vec![])));
        assert!(!a.writer_alive(), "our own pid is not another restore");
    }
}
