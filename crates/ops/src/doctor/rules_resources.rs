//! The resources check: the server's memory and WAL sizes against `pgvault tune`'s advice for
//! the machine. Only settings where "far off" has a clear meaning are compared (sizes, by a
//! factor), so a server tuned by hand within reason is not nagged.

use super::facts::{Facts, ResourceFacts};
use super::rules::Hit;

/// The size settings compared with tune's advice.
pub const COMPARED: &[&str] = &[
    "shared_buffers",
    "effective_cache_size",
    "work_mem",
    "maintenance_work_mem",
    "wal_buffers",
    "max_wal_size",
    "min_wal_size",
];

/// A current value this many times below or above the advice is "far".
pub const FACTOR: f64 = 2.0;

pub fn far_from_advice(f: &Facts) -> Vec<Hit> {
    let ResourceFacts::Advised {
        machine,
        recommendations,
    } = &f.resources
    else {
        return vec![];
    };
    let mut hits = Vec::new();
    for rec in recommendations.iter().filter(|r| COMPARED.contains(&r.name)) {
        let current = f.setting(rec.name);
        let (Some(have), Some(want)) = (size(current), size(&rec.value)) else {
            continue;
        };
        if have == 0 || want == 0 {
            continue;
        }
        let ratio = have as f64 / want as f64;
        if !(1.0 / FACTOR..=FACTOR).contains(&ratio) {
            hits.push(Hit {
                evidence: format!(
                    "{} = {current}; pgvault tune advises {} for {machine}",
                    rec.name, rec.value
                ),
                fix: Some(format!(
                    "ALTER SYSTEM SET {} = '{}': {}",
                    rec.name, rec.value, rec.reason
                )),
                sql: Some(format!(
                    "ALTER SYSTEM SET {} = '{}'",
                    rec.name,
                    rec.value.trim_matches('\'')
                )),
            });
        }
    }
    hits
}

/// A size as PostgreSQL shows it (`128MB`, `8kB`, `-1` is no size).
fn size(v: &str) -> Option<u64> {
    pgvault_core::server::parse_size(v.trim().trim_matches('\''))
}
