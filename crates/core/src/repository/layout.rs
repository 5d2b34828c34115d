//! Where each kind of object lives in a repository (format version 1). Every key pgvault reads or
//! writes is spelled here and nowhere else, so the layout documented in docs/FORMAT.md has one
//! source of truth.

use crate::wal::{WalFileName, WalKind};

/// The plaintext repository descriptor: format version, cluster identity, wrapped key.
pub const META_KEY: &str = "pgvault.repo";
/// Prefix of all WAL objects.
pub const WAL_PREFIX: &str = "wal";
/// Prefix of all backups.
pub const BACKUPS_PREFIX: &str = "backups";

/// `wal/<timeline+log>/<name>` for segments, `.partial` and `.backup` files;
/// `wal/<timeline>.history` for history files.
pub fn wal_key(name: &WalFileName) -> String {
    match name.kind {
        WalKind::History => format!("{WAL_PREFIX}/{name}"),
        _ => format!("{WAL_PREFIX}/{:08X}{:08X}/{name}", name.timeline, name.log),
    }
}

/// Parses a key under `wal/` back into a WAL file name.
pub fn wal_name_of_key(key: &str) -> Option<WalFileName> {
    let name = key.rsplit('/').next()?;
    WalFileName::parse(name).ok()
}

pub fn backup_dir(id: &str) -> String {
    format!("{BACKUPS_PREFIX}/{id}")
}

/// The catalog object: written last; its presence is what makes a backup complete.
pub fn catalog_key(id: &str) -> String {
    format!("{BACKUPS_PREFIX}/{id}/catalog")
}

/// PostgreSQL's own `backup_manifest` for the backup.
pub fn manifest_key(id: &str) -> String {
    format!("{BACKUPS_PREFIX}/{id}/backup_manifest")
}

/// One bundle of file data.
pub fn bundle_key(id: &str, bundle: u32) -> String {
    format!("{BACKUPS_PREFIX}/{id}/bundles/{bundle:06}")
}

/// Prefix of the pins (`pins/<backup id>`): backups retention never expires.
pub const PINS_PREFIX: &str = "pins";

/// A pin of backup `id` (see [`super::state`]).
pub fn pin_key(id: &str) -> String {
    format!("{PINS_PREFIX}/{id}")
}

/// Where continuous WAL starts, as the last `expire` left it (see [`super::state`]).
pub const WAL_HORIZON_KEY: &str = "retention/wal-horizon";

/// The backup index (format v2): the summary of every complete backup, one sealed object, so
/// listing and planning read one object instead of every catalog (see [`super::index`]). A cache:
/// the catalogs stay the truth.
pub const BACKUP_INDEX_KEY: &str = "index/backups";

/// Prefix of the drill reports (`drills/<drill id>`, see [`super::drills`]).
pub const DRILLS_PREFIX: &str = "drills";

/// The report of drill `id` (a UTC timestamp `YYYYMMDD-HHMMSS`, so names sort by time).
pub fn drill_report_key(id: &str) -> String {
    format!("{DRILLS_PREFIX}/{id}")
}

/// Prefix of the verify records (`verify/<id>`, see [`super::reports`]).
pub const VERIFY_PREFIX: &str = "verify";

/// The record of verify run `id` (a UTC timestamp `YYYYMMDD-HHMMSS`, so names sort by time).
pub fn verify_report_key(id: &str) -> String {
    format!("{VERIFY_PREFIX}/{id}")
}

/// A repository lock's lease object (see [`super::lock`]): `locks/<name>`.
pub fn lock_key(name: &str) -> String {
    format!("locks/{name}")
}

/// Prefix of the declared WAL gaps (see [`super::gaps`]).
pub const WAL_GAPS_PREFIX: &str = "gaps";

/// The marker of dropped segments `first..=last`: `gaps/<timeline>/<first>-<last>`.
pub fn wal_gap_key(first: &WalFileName, last: &WalFileName) -> String {
    format!("{WAL_GAPS_PREFIX}/{:08X}/{first}-{last}", first.timeline)
}

/// Parses a key under `gaps/` back into its run.
pub fn wal_gap_of_key(key: &str) -> Option<(WalFileName, WalFileName)> {
    let (first, last) = key.rsplit('/').next()?.split_once('-')?;
    Some((WalFileName::parse(first).ok()?, WalFileName::parse(last).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        for n in [
            "000000010000000200000003",
            "00000002.history",
            "000000010000000000000002.00000028.backup",
            "000000020000000000000005.partial",
        ] {
            let w = WalFileName::parse(n).unwrap();
            let k = wal_key(&w);
            assert!(k.ends_with(n));
            assert_eq!(wal_name_of_key(&k), Some(w));
        }
        assert_eq!(
            wal_key(&WalFileName::parse("000000010000000200000003").unwrap()),
            "wal/0000000100000002/000000010000000200000003"
        );
        assert_eq!(
            bundle_key("20261123-101500F", 7),
            "backups/20261123-101500F/bundles/000007"
        );
        let (a, b) = (
            WalFileName::parse("000000020000000000000005").unwrap(),
            WalFileName::parse("000000020000000000000009").unwrap(),
        );
        let k = wal_gap_key(&a, &b);
        assert_eq!(k, "gaps/00000002/000000020000000000000005-000000020000000000000009");
        assert_eq!(wal_gap_of_key(&k), Some((a, b)));
        assert_eq!(wal_gap_of_key("gaps/00000002/junk"), None);
    }
}
