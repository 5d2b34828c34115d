//! The checks a drill runs on its promoted sandbox server, each ending in a pass, a fail (with
//! the database, relation or file at fault) or a skip (with why: a skip is never a pass).
//!
//! User assertions are `*.sql` files in the `[drill] assertions` folder, run in name order. A
//! file's leading `--` comment lines may hold directives:
//!
//! ```sql
//! -- database: shop
//! -- expect: count 1..
//! SELECT count(*) FROM orders WHERE created_at > now() - interval '1 hour';
//! ```
//!
//! `expect: true` (the default) wants one row with one boolean, `t`; `expect: count MIN..MAX`
//! wants one integer within the bounds (either side may be left out: `1..` at least one,
//! `..0` none). `database` defaults to `postgres`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::DrillError;
use crate::pgserver::{output_with_timeout, server_command, Server};

/// How a check ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
    Skipped,
}

/// One check's result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub outcome: Outcome,
    /// What was found (for a fail: which database, relation, file; for a skip: why).
    pub detail: String,
    /// Lines that matter (tool output, server log).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<String>,
    pub seconds: f64,
}

impl CheckResult {
    pub fn new(name: &str, outcome: Outcome, detail: impl Into<String>, started: Instant) -> CheckResult {
        CheckResult {
            name: name.to_string(),
            outcome,
            detail: detail.into(),
            lines: Vec::new(),
            seconds: started.elapsed().as_secs_f64(),
        }
    }

    pub fn with_lines(mut self, lines: Vec<String>) -> CheckResult {
        self.lines = lines;
        self
    }
}

/// What an assertion file expects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    True,
    Count { min: Option<i64>, max: Option<i64> },
}

/// A parsed assertion file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assertion {
    pub name: String,
    pub database: String,
    pub expect: Expect,
    pub sql: String,
}

fn parse_bound(s: &str) -> Result<Option<i64>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|_| format!("bound '{s}' is not an integer"))
}

/// Parses an `expect:` value.
pub fn parse_expect(v: &str) -> Result<Expect, String> {
    let v = v.trim();
    if v.eq_ignore_ascii_case("true") {
        return Ok(Expect::True);
    }
    let Some(range) = v.strip_prefix("count") else {
        return Err(format!("expect '{v}': use 'true' or 'count MIN..MAX'"));
    };
    let (lo, hi) = range
        .trim()
        .split_once("..")
        .ok_or_else(|| format!("expect '{v}': the bounds are written MIN..MAX (one side may be empty)"))?;
    let (min, max) = (parse_bound(lo)?, parse_bound(hi)?);
    if min.is_none() && max.is_none() {
        return Err(format!("expect '{v}': give at least one bound"));
    }
    if let (Some(a), Some(b)) = (min, max) {
        if a > b {
            return Err(format!("expect '{v}': MIN is above MAX"));
        }
    }
    Ok(Expect::Count { min, max })
}

/// Parses one assertion file's text.
pub fn parse_assertion(name: &str, text: &str) -> Result<Assertion, String> {
    let mut database = "postgres".to_string();
    let mut expect = Expect::True;
    for line in text.lines() {
        let l = line.trim();
        if l.is_empty() {
            continue;
        }
        let Some(comment) = l.strip_prefix("--") else { break };
        if let Some((k, v)) = comment.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "database" => database = v.trim().to_string(),
                "expect" => expect = parse_expect(v)?,
                _ => {}
            }
        }
    }
    if database.is_empty() {
        return Err("'database:' names no database".to_string());
    }
    let body: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    if body.trim().is_empty() {
        return Err("holds no query".to_string());
    }
    Ok(Assertion {
        name: name.to_string(),
        database,
        expect,
        sql: text.to_string(),
    })
}

/// Judges an assertion's output (psql unaligned, tuples only): `Ok(description)` or `Err(why)`.
pub fn judge(expect: &Expect, output: &str) -> Result<String, String> {
    let rows: Vec<&str> = output.lines().filter(|l| !l.is_empty()).collect();
    let [value] = rows.as_slice() else {
        return Err(format!(
            "returned {} rows; an assertion returns exactly one value",
            rows.len()
        ));
    };
    if value.contains('|') {
        return Err(format!(
            "returned several columns ({value}); an assertion returns one value"
        ));
    }
    match expect {
        Expect::True => match *value {
            "t" => Ok("true".to_string()),
            "f" => Err("returned false".to_string()),
            other => Err(format!("returned '{other}', not a boolean")),
        },
        Expect::Count { min, max } => {
            let n: i64 = value
                .trim()
                .parse()
                .map_err(|_| format!("returned '{value}', not an integer"))?;
            let range = format!(
                "{}..{}",
                min.map(|v| v.to_string()).unwrap_or_default(),
                max.map(|v| v.to_string()).unwrap_or_default()
            );
            if min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m) {
                Err(format!("count {n} is outside {range}"))
            } else {
                Ok(format!("count {n} within {range}"))
            }
        }
    }
}

/// The `*.sql` files of the assertions folder, in name order.
pub fn assertion_files(dir: &Path) -> Result<Vec<PathBuf>, DrillError> {
    let rd = std::fs::read_dir(dir).map_err(|source| DrillError::Assertions {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Runs every assertion file; a file that cannot be read or parsed is a failed check.
pub fn run_assertions(server: &Server, dir: &Path) -> Result<Vec<CheckResult>, DrillError> {
    let mut out = Vec::new();
    for file in assertion_files(dir)? {
        let started = Instant::now();
        let name = format!(
            "assertion {}",
            file.file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default()
        );
        let parsed = std::fs::read_to_string(&file)
            .map_err(|e| e.to_string())
            .and_then(|t| parse_assertion(&name, &t));
        let a = match parsed {
            Ok(a) => a,
            Err(why) => {
                out.push(CheckResult::new(
                    &name,
                    Outcome::Fail,
                    format!("{}: {why}", file.display()),
                    started,
                ));
                continue;
            }
        };
        let result = match server.psql(&a.database, &a.sql, Duration::from_secs(600)) {
            Err(e) => CheckResult::new(&name, Outcome::Fail, e.to_string(), started),
            Ok(o) if !o.status.success() => CheckResult::new(
                &name,
                Outcome::Fail,
                format!(
                    "in database {}: the query failed: {}",
                    a.database,
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                started,
            ),
            Ok(o) => match judge(&a.expect, &String::from_utf8_lossy(&o.stdout)) {
                Ok(d) => CheckResult::new(
                    &name,
                    Outcome::Pass,
                    format!("in database {}: {d}", a.database),
                    started,
                ),
                Err(d) => CheckResult::new(
                    &name,
                    Outcome::Fail,
                    format!("in database {}: {d}", a.database),
                    started,
                ),
            },
        };
        out.push(result);
    }
    Ok(out)
}

/// The lines of `pg_amcheck` output that name a corrupt relation.
pub fn amcheck_findings(output: &str) -> Vec<String> {
    output
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            l.starts_with("heap table")
                || l.starts_with("btree index")
                || l.starts_with("index ")
                || l.contains("error:")
        })
        .map(str::to_string)
        .collect()
}

/// `pg_amcheck` (heap and btree) over `databases` (every connectable one when empty); the SQL
/// fallback `bt_index_check` when the binary is missing; skipped when the server has no amcheck.
pub fn amcheck(server: &Server, databases: &[String]) -> CheckResult {
    let started = Instant::now();
    let available = server.query(
        "postgres",
        "SELECT count(*) FROM pg_available_extensions WHERE name = 'amcheck'",
    );
    match available.as_deref().map(str::trim) {
        Ok("0") => {
            return CheckResult::new(
                "amcheck",
                Outcome::Skipped,
                "not available: this PostgreSQL installation has no amcheck extension (contrib)",
                started,
            )
        }
        Err(e) => return CheckResult::new("amcheck", Outcome::Fail, format!("cannot ask the server: {e}"), started),
        Ok(_) => {}
    }
    if !server.bin.has("pg_amcheck") {
        return amcheck_sql(server, databases, started);
    }
    let mut cmd = server_command(&server.bin.tool("pg_amcheck"));
    cmd.arg("--install-missing")
        .arg("-h")
        .arg(&server.spec.socket_dir)
        .args(["-p", &server.spec.port.to_string(), "-U", &server.spec.user]);
    if databases.is_empty() {
        cmd.arg("--all");
    } else {
        for d in databases {
            cmd.args(["-d", d]);
        }
    }
    server.client_env(&mut cmd);
    match output_with_timeout(cmd, Duration::from_secs(6 * 3600)) {
        Err(e) => CheckResult::new("amcheck", Outcome::Fail, e.to_string(), started),
        Ok(o) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            if o.status.success() {
                CheckResult::new(
                    "amcheck",
                    Outcome::Pass,
                    "pg_amcheck: heap and btree, no corruption",
                    started,
                )
            } else {
                let findings = amcheck_findings(&text);
                let lines = if findings.is_empty() {
                    text.lines().take(40).map(str::to_string).collect()
                } else {
                    findings.into_iter().take(40).collect()
                };
                CheckResult::new(
                    "amcheck",
                    Outcome::Fail,
                    format!("pg_amcheck found corruption or failed (exit {:?})", o.status.code()),
                    started,
                )
                .with_lines(lines)
            }
        }
    }
}

const BT_CHECK_SQL: &str = "CREATE EXTENSION IF NOT EXISTS amcheck; DO $$ DECLARE r record; BEGIN FOR r IN SELECT c.oid, c.oid::regclass::text AS name FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam WHERE a.amname = 'btree' AND i.indisvalid AND i.indisready AND c.relpersistence <> 't' LOOP BEGIN PERFORM bt_index_check(r.oid); EXCEPTION WHEN OTHERS THEN RAISE WARNING 'amcheck: index %: %', r.name, SQLERRM; END; END LOOP; END $$;";

fn amcheck_sql(server: &Server, databases: &[String], started: Instant) -> CheckResult {
    let dbs = if databases.is_empty() {
        match server.query(
            "postgres",
            "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1",
        ) {
            Ok(t) => t.lines().map(str::to_string).collect(),
            Err(e) => return CheckResult::new("amcheck", Outcome::Fail, e.to_string(), started),
        }
    } else {
        databases.to_vec()
    };
    let mut bad = Vec::new();
    for db in &dbs {
        match server.psql(db, BT_CHECK_SQL, Duration::from_secs(6 * 3600)) {
            Err(e) => bad.push(format!("database {db}: {e}")),
            Ok(o) => {
                let err = String::from_utf8_lossy(&o.stderr);
                bad.extend(
                    err.lines()
                        .filter(|l| l.contains("amcheck: index"))
                        .map(|l| format!("database {db}: {l}")),
                );
                if !o.status.success() {
                    bad.push(format!("database {db}: {}", err.trim()));
                }
            }
        }
    }
    if bad.is_empty() {
        CheckResult::new(
            "amcheck",
            Outcome::Pass,
            "bt_index_check over every btree index (pg_amcheck not installed: heap not checked)",
            started,
        )
    } else {
        CheckResult::new(
            "amcheck",
            Outcome::Fail,
            "bt_index_check found corrupt indexes",
            started,
        )
        .with_lines(bad)
    }
}

/// `pg_checksums --check` on the stopped cluster's data directory.
pub fn checksums(server: &Server, enabled: bool, clean_stop: bool) -> CheckResult {
    let started = Instant::now();
    if !enabled {
        return CheckResult::new(
            "checksums",
            Outcome::Skipped,
            "the cluster has no data checksums",
            started,
        );
    }
    if !clean_stop {
        return CheckResult::new(
            "checksums",
            Outcome::Fail,
            "the server did not stop cleanly, so pg_checksums cannot run",
            started,
        );
    }
    if !server.bin.has("pg_checksums") {
        return CheckResult::new(
            "checksums",
            Outcome::Skipped,
            "not available: no pg_checksums binary",
            started,
        );
    }
    let mut cmd = server_command(&server.bin.tool("pg_checksums"));
    cmd.arg("--check").arg("-D").arg(&server.spec.data_dir);
    match output_with_timeout(cmd, Duration::from_secs(6 * 3600)) {
        Err(e) => CheckResult::new("checksums", Outcome::Fail, e.to_string(), started),
        Ok(o) if o.status.success() => CheckResult::new(
            "checksums",
            Outcome::Pass,
            "pg_checksums --check: no bad blocks",
            started,
        ),
        Ok(o) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            let lines: Vec<String> = text
                .lines()
                .filter(|l| l.contains("checksum verification failed") || l.contains("error"))
                .take(40)
                .map(str::to_string)
                .collect();
            CheckResult::new("checksums", Outcome::Fail, "pg_checksums found bad blocks", started).with_lines(lines)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assertion_headers() {
        let a = parse_assertion(
            "x",
            "-- orders arrive\n-- database: shop\n-- expect: count 1..\nSELECT count(*) FROM orders;\n",
        )
        .expect("parse");
        assert_eq!(a.database, "shop");
        assert_eq!(
            a.expect,
            Expect::Count {
                min: Some(1),
                max: None
            }
        );
        let b = parse_assertion("y", "SELECT true;").expect("parse");
        assert_eq!((b.database.as_str(), &b.expect), ("postgres", &Expect::True));
        // Directives after the query starts are not headers.
        let c = parse_assertion("z", "SELECT true;\n-- expect: count 5..6\n").expect("parse");
        assert_eq!(c.expect, Expect::True);
    }

    #[test]
    fn bad_assertions_are_refused() {
        assert!(parse_assertion("x", "-- expect: count\nSELECT 1").is_err());
        assert!(parse_assertion("x", "-- expect: count ..\nSELECT 1").is_err());
        assert!(parse_assertion("x", "-- expect: count 5..1\nSELECT 1").is_err());
        assert!(parse_assertion("x", "-- expect: maybe\nSELECT 1").is_err());
        assert!(parse_assertion("x", "-- only a comment\n").is_err());
        assert!(parse_expect("count x..").is_err());
    }

    #[test]
    fn judging() {
        assert!(judge(&Expect::True, "t\n").is_ok());
        assert_eq!(judge(&Expect::True, "f\n"), Err("returned false".to_string()));
        assert!(judge(&Expect::True, "t\nt\n").is_err());
        assert!(judge(&Expect::True, "").is_err());
        assert!(judge(&Expect::True, "t|f").is_err());
        let c = Expect::Count {
            min: Some(1),
            max: Some(10),
        };
        assert!(judge(&c, "5").is_ok());
        assert!(judge(&c, "0").is_err());
        assert!(judge(&c, "11").is_err());
        assert!(judge(&c, "ten").is_err());
        let none = Expect::Count {
            min: None,
            max: Some(0),
        };
        assert!(judge(&none, "0").is_ok());
        assert!(judge(&none, "1").is_err());
    }

    #[test]
    fn amcheck_output_names_relations() {
        let out = "heap table \"db.public.t\", block 0, offset 1:\n    xmin 5 precedes relation freeze threshold\nbtree index \"db.public.t_pkey\":\n    mismatch\n";
        let f = amcheck_findings(out);
        assert_eq!(f.len(), 2);
        assert!(f[0].contains("db.public.t"));
    }
}
