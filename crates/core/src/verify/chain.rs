//! Chains of incremental backups in `verify`: a backup is restorable only if every link down to
//! its full backup is present and whole, so each link is checked and a damaged or missing link
//! is reported against every backup that depends on it.

use super::report::Finding;
use crate::repository::summary::BackupSummary;

/// The ancestors of `id` (parent first) present in `backups`, and the first parent that is
/// missing, if the chain breaks.
pub fn ancestors(backups: &[BackupSummary], id: &str) -> (Vec<String>, Option<String>) {
    let mut out = Vec::new();
    let mut cur = backups.iter().find(|b| b.id == id);
    while let Some(parent) = cur.and_then(|b| b.parent.clone()) {
        if out.contains(&parent) || out.len() > backups.len() {
            break;
        }
        cur = backups.iter().find(|b| b.id == parent);
        if cur.is_none() {
            return (out, Some(parent));
        }
        out.push(parent);
    }
    (out, None)
}

/// Findings for the backups `ids` whose chain is broken or has a damaged link.
pub fn chain_findings(backups: &[BackupSummary], ids: &[String], findings: &[Finding]) -> Vec<Finding> {
    let mut out = Vec::new();
    for id in ids {
        let (links, missing) = ancestors(backups, id);
        if let Some(parent) = missing {
            out.push(Finding::ParentMissing {
                backup: id.clone(),
                parent,
            });
        }
        if let Some(bad) = links
            .iter()
            .find(|l| findings.iter().any(|f| f.backup() == Some(l.as_str())))
        {
            out.push(Finding::ParentDamaged {
                backup: id.clone(),
                parent: bad.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::catalog::BackupKind;

    fn summary(id: &str, parent: Option<&str>) -> BackupSummary {
        let mut s: BackupSummary = serde_json::from_value(serde_json::json!({
            "id": id, "label": "l", "kind": "full", "system_identifier": "1", "pg_version_num": 170000,
            "timeline": 1, "start_lsn": "0/1000000", "stop_lsn": "0/2000000", "stop_timeline": 1,
            "start_wal": "000000010000000000000001", "stop_wal": "000000010000000000000002",
            "start_time": "2026-01-01T00:00:00Z", "stop_time": "2026-01-01T00:00:01Z",
            "wal_included": false, "snapshot_after_stop": null, "size": 0, "stored_size": 0,
            "file_count": 0, "compression": "zstd", "encrypted": false
        }))
        .unwrap();
        s.parent = parent.map(str::to_string);
        if parent.is_some() {
            s.kind = BackupKind::Incr;
        }
        s
    }

    #[test]
    fn a_missing_or_damaged_link_is_reported_against_its_dependents() {
        let backups = vec![
            summary("1F", None),
            summary("2I", Some("1F")),
            summary("3I", Some("2I")),
        ];
        assert_eq!(
            ancestors(&backups, "3I"),
            (vec!["2I".to_string(), "1F".to_string()], None)
        );
        let ids: Vec<String> = backups.iter().map(|b| b.id.clone()).collect();
        assert!(chain_findings(&backups, &ids, &[]).is_empty());
        let damaged = [Finding::ManifestMissing { backup: "1F".into() }];
        let found = chain_findings(&backups, &ids, &damaged);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found
            .iter()
            .all(|f| matches!(f, Finding::ParentDamaged { parent, .. } if parent == "1F")));
        let broken = vec![summary("2I", Some("1F")), summary("3I", Some("2I"))];
        let found = chain_findings(&broken, &["3I".to_string()], &[]);
        assert_eq!(
            found,
            vec![Finding::ParentMissing {
                backup: "3I".into(),
                parent: "1F".into()
            }]
        );
    }
}
