//! Finding the password for a connection the way libpq does, so that operators can keep using
//! the places they already know: pgvault's own `password_file`, `PGPASSWORD`, then
//! `PGPASSFILE` or `~/.pgpass` in libpq's `host:port:db:user:password` format.

use std::path::{Path, PathBuf};

use super::error::ProtocolError;
use super::params::is_socket_dir;

/// Looks up the password for a connection, in libpq's order:
/// 1. `password_file` (from pgvault's config): the whole file is the password (one trailing
///    newline is dropped);
/// 2. the `PGPASSWORD` environment variable, if not empty;
/// 3. the file named by `PGPASSFILE`, else `~/.pgpass`, in libpq's format. It is ignored with a
///    warning when it is group- or world-accessible, as libpq does.
///
/// For physical replication connections pass `"replication"` as `dbname`, as libpq does.
/// A socket directory as `host` matches `localhost` entries, as in libpq.
pub fn resolve_password(
    host: &str,
    port: u16,
    dbname: &str,
    user: &str,
    password_file: Option<&Path>,
) -> Result<Option<String>, ProtocolError> {
    let env_password = std::env::var("PGPASSWORD").ok();
    let passfile = match std::env::var_os("PGPASSFILE") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pgpass")),
    };
    resolve_password_from(
        host,
        port,
        dbname,
        user,
        password_file,
        env_password,
        passfile.as_deref(),
    )
}

/// [`resolve_password`] with the environment passed in (testable without touching the process
/// environment).
pub fn resolve_password_from(
    host: &str,
    port: u16,
    dbname: &str,
    user: &str,
    password_file: Option<&Path>,
    env_password: Option<String>,
    passfile: Option<&Path>,
) -> Result<Option<String>, ProtocolError> {
    if let Some(path) = password_file {
        return read_password_file(path).map(Some);
    }
    if let Some(pw) = env_password.filter(|p| !p.is_empty()) {
        return Ok(Some(pw));
    }
    let Some(passfile) = passfile else {
        return Ok(None);
    };
    let meta = match std::fs::metadata(passfile) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            tracing::warn!("cannot read password file {}: {e}; ignoring it", passfile.display());
            return Ok(None);
        }
    };
    if !meta.is_file() {
        tracing::warn!("password file {} is not a plain file; ignoring it", passfile.display());
        return Ok(None);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "password file {} has group or world access and is ignored, as libpq does: run chmod 0600 {}",
                passfile.display(),
                passfile.display()
            );
            return Ok(None);
        }
    }
    let contents = std::fs::read_to_string(passfile).map_err(|e| {
        ProtocolError::PgPass(format!(
            "cannot read {}: {e}; fix its permissions or remove it",
            passfile.display()
        ))
    })?;
    let lookup_host = if host.is_empty() || is_socket_dir(host) {
        "localhost"
    } else {
        host
    };
    Ok(lookup_pgpass(&contents, lookup_host, &port.to_string(), dbname, user))
}

/// The database name a session is looked up under in `.pgpass`: `replication` for a physical
/// replication session (libpq matches its `.pgpass` entries with the database name
/// `replication` there, whatever `dbname` says), else `dbname`.
pub fn pgpass_dbname(dbname: &str, replication: bool) -> &str {
    if replication {
        "replication"
    } else {
        dbname
    }
}

fn read_password_file(path: &Path) -> Result<String, ProtocolError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ProtocolError::PgPass(format!(
            "cannot read the password_file {} named in the config: {e}; check the path and that pgvault's user may read it",
            path.display()
        ))
    })?;
    let pw = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    if pw.is_empty() {
        return Err(ProtocolError::PgPass(format!(
            "the password_file {} named in the config is empty: write the password into it",
            path.display()
        )));
    }
    Ok(pw.to_string())
}

/// Finds the first matching line of a `.pgpass` text. Fields are `host:port:db:user:password`;
/// a field that is exactly `*` matches anything; `\:` and `\\` stand for `:` and `\`.
pub fn lookup_pgpass(contents: &str, host: &str, port: &str, dbname: &str, user: &str) -> Option<String> {
    for raw in contents.lines() {
        let line = raw.trim_end_matches('\r');
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields = split_pgpass_line(line);
        if fields.len() < 5 {
            continue;
        }
        let matches = |field: &(String, bool), value: &str| field.1 || field.0 == value;
        if matches(&fields[0], host)
            && matches(&fields[1], port)
            && matches(&fields[2], dbname)
            && matches(&fields[3], user)
        {
            return Some(fields[4].0.clone());
        }
    }
    None
}

/// Splits a line into unescaped fields; each comes with "was exactly an unescaped `*`".
/// The fifth field (password) ends at the next unescaped `:` or the end of the line, as in libpq.
fn split_pgpass_line(line: &str) -> Vec<(String, bool)> {
    let mut fields = Vec::with_capacity(5);
    let mut current = String::new();
    let mut raw_len = 0usize;
    let mut star_only = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(next) => {
                    current.push(next);
                    raw_len += 2;
                    star_only = false;
                }
                None => {
                    current.push('\\');
                    raw_len += 1;
                }
            },
            ':' => {
                fields.push((std::mem::take(&mut current), star_only && raw_len == 1));
                raw_len = 0;
                star_only = false;
                if fields.len() == 5 {
                    return fields;
                }
            }
            _ => {
                star_only = raw_len == 0 && c == '*';
                current.push(c);
                raw_len += 1;
            }
        }
    }
    fields.push((current, star_only && raw_len == 1));
    // The password is never a wildcard.
    if fields.len() == 5 {
        fields[4].1 = false;
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# comment line
db1.example:5432:appdb:alice:alicepw
*:5433:*:bob:bob\\:pw\\\\x
db\\:weird:*:*:carol:carolpw
\\*:*:*:dave:literal-star-host
*:*:replication:*:replpw
*:*:*:*:fallback:ignored-after-colon
";

    #[test]
    fn exact_match() {
        assert_eq!(
            lookup_pgpass(FILE, "db1.example", "5432", "appdb", "alice").as_deref(),
            Some("alicepw")
        );
    }

    #[test]
    fn wildcards_and_escapes() {
        assert_eq!(
            lookup_pgpass(FILE, "any", "5433", "x", "bob").as_deref(),
            Some("bob:pw\\x")
        );
        assert_eq!(
            lookup_pgpass(FILE, "db:weird", "1", "d", "carol").as_deref(),
            Some("carolpw")
        );
        // An escaped star is a literal host name "*", not a wildcard.
        assert_eq!(
            lookup_pgpass(FILE, "*", "1", "d", "dave").as_deref(),
            Some("literal-star-host")
        );
        assert_eq!(
            lookup_pgpass(FILE, "otherhost", "1", "d", "dave").as_deref(),
            Some("fallback")
        );
        assert_eq!(
            lookup_pgpass(FILE, "h", "1", "replication", "zed").as_deref(),
            Some("replpw")
        );
    }

    #[test]
    fn first_match_wins_and_mismatch_is_none() {
        assert_eq!(
            lookup_pgpass(FILE, "db1.example", "5432", "appdb", "mallory").as_deref(),
            Some("fallback")
        );
        assert_eq!(lookup_pgpass("h:1:d:u:p\n", "h", "2", "d", "u"), None);
        assert_eq!(lookup_pgpass("too:few:fields\n", "too", "few", "fields", ""), None);
        assert_eq!(lookup_pgpass("h:1:d:u:p\r\n", "h", "1", "d", "u").as_deref(), Some("p"));
    }

    #[cfg(unix)]
    #[test]
    fn replication_sessions_use_the_replication_entry() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pgpass = dir.path().join("pgpass");
        std::fs::write(&pgpass, "*:*:replication:u:replpw\n*:*:postgres:u:sqlpw\n").unwrap();
        std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
        let r = |replication| {
            let db = pgpass_dbname("postgres", replication);
            resolve_password_from("h", 5432, db, "u", None, None, Some(&pgpass)).unwrap()
        };
        assert_eq!(r(true).as_deref(), Some("replpw"));
        assert_eq!(r(false).as_deref(), Some("sqlpw"));
    }

    #[cfg(unix)]
    #[test]
    fn file_order_and_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pgpass = dir.path().join("pgpass");
        std::fs::write(&pgpass, "*:*:*:u:frompgpass\n").unwrap();
        std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
        let explicit = dir.path().join("pw");
        std::fs::write(&explicit, "fromfile\n").unwrap();

        let r = |pf: Option<&Path>, env: Option<&str>| {
            resolve_password_from("h", 5432, "d", "u", pf, env.map(String::from), Some(&pgpass)).unwrap()
        };
        assert_eq!(r(Some(&explicit), Some("env")).as_deref(), Some("fromfile"));
        assert_eq!(r(None, Some("env")).as_deref(), Some("env"));
        assert_eq!(r(None, Some("")).as_deref(), Some("frompgpass"));
        assert_eq!(r(None, None).as_deref(), Some("frompgpass"));

        // Group/world readable: ignored, like libpq.
        std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(r(None, None), None);

        // Socket directory hosts match "localhost" lines.
        std::fs::write(&pgpass, "localhost:5432:*:u:sockpw\n").unwrap();
        std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
        let got = resolve_password_from("/run/postgresql", 5432, "d", "u", None, None, Some(&pgpass)).unwrap();
        assert_eq!(got.as_deref(), Some("sockpw"));

        // Missing files.
        let missing = dir.path().join("missing");
        assert_eq!(
            resolve_password_from("h", 1, "d", "u", None, None, Some(&missing)).unwrap(),
            None
        );
        let err = resolve_password_from("h", 1, "d", "u", Some(&missing), None, None).unwrap_err();
        assert!(err.to_string().contains("password_file"), "{err}");
        std::fs::write(&explicit, "\n").unwrap();
        let err = resolve_password_from("h", 1, "d", "u", Some(&explicit), None, None).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
    }
}
