//! Real WAL segments for the archiving tests, and the check those tests share: every marker a
//! killed push or worker left behind (`pg_wal/.pgvault/pushed/<name>`) must stand for a segment
//! the repository holds with exactly the bytes in `pg_wal`.

use std::path::Path;

use anyhow::{ensure, Context, Result};

use crate::{PgCluster, Vault};

/// Writes some rows and switches segment `n` times; returns the finished segments.
pub async fn make_segments(c: &PgCluster, n: usize) -> Result<Vec<String>> {
    c.execute("CREATE TABLE IF NOT EXISTS burst (x text)").await?;
    let mut segs = Vec::new();
    for _ in 0..n {
        c.execute("INSERT INTO burst SELECT md5(g::text) FROM generate_series(1, 3000) g")
            .await?;
        segs.push(c.switch_wal().await?);
    }
    Ok(segs)
}

/// The names in `dir`, sorted (none when it does not exist).
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Fetches `name` from the vault's repository into `dest` (outside any `pg_wal`: no prefetch).
pub fn fetch_bytes(vault: &Vault, name: &str, dest: &Path) -> Result<Vec<u8>> {
    vault.archive(["fetch", name, &dest.display().to_string()])?.check()?;
    Ok(std::fs::read(dest)?)
}

/// Checks every marker in `markers` (temporary files aside): the repository holds that segment
/// with the bytes `pg_wal` has. `scratch` is a file path for the fetched copy; `what` names the
/// round in messages. Returns how many markers were checked.
pub fn check_markers(vault: &Vault, markers: &Path, pg_wal: &Path, scratch: &Path, what: &str) -> Result<usize> {
    let mut checked = 0;
    for m in files_in(markers) {
        if m.contains(".tmp") {
            continue;
        }
        let got = fetch_bytes(vault, &m, scratch).with_context(|| format!("{what}: marker {m} without an object"))?;
        ensure!(
            got == std::fs::read(pg_wal.join(&m))?,
            "{what}: marker {m} for other bytes"
        );
        checked += 1;
    }
    Ok(checked)
}
