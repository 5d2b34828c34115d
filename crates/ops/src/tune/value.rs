//! Typed setting values, so that a recommendation (`8GB`) can be compared with what a server
//! reports in `pg_settings` (`setting = 1048576`, `unit = 8kB`) without string games.

use pgvault_core::units;

/// A recommended value, typed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Typed {
    /// A size in bytes (`shared_buffers`).
    Bytes(u64),
    /// A duration in milliseconds (`archive_timeout`).
    Millis(u64),
    /// A whole number (`max_connections`).
    Integer(i64),
    /// A real number, in thousandths (`random_page_cost = 1.1` is 1100).
    Real(i64),
    /// A boolean (`wal_compression = on`).
    Bool(bool),
    /// An enum or string value, unquoted (`replica`, `pgvault-archive push %p`).
    Text(String),
}

impl Typed {
    /// The value written as in `postgresql.conf` (sizes and durations in PostgreSQL's units,
    /// strings quoted).
    pub fn render(&self) -> String {
        match self {
            Typed::Bytes(b) => units::format_size(*b),
            Typed::Millis(ms) => units::format_duration(std::time::Duration::from_millis(*ms)),
            Typed::Integer(i) => i.to_string(),
            Typed::Real(t) => render_real(*t),
            Typed::Bool(b) => if *b { "on" } else { "off" }.to_string(),
            Typed::Text(s) if is_bare_word(s) => s.clone(),
            Typed::Text(s) => quote(s),
        }
    }

    /// Whether `pg_settings.setting` with `pg_settings.unit` is this value.
    pub fn matches(&self, setting: &str, unit: Option<&str>) -> bool {
        let setting = setting.trim();
        match self {
            Typed::Bytes(b) => scaled(setting, unit, size_unit) == Some(u128::from(*b)),
            Typed::Millis(ms) => scaled(setting, unit, time_unit) == Some(u128::from(*ms)),
            Typed::Integer(i) => setting.parse::<i64>().ok() == Some(*i),
            Typed::Real(t) => setting
                .parse::<f64>()
                .map(|v| (v * 1000.0).round() as i64 == *t)
                .unwrap_or(false),
            Typed::Bool(b) => parse_bool(setting) == Some(*b),
            Typed::Text(s) => setting == s,
        }
    }
}

fn render_real(thousandths: i64) -> String {
    let (whole, frac) = (thousandths / 1000, (thousandths % 1000).abs());
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:03}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// `pg_settings` values: `setting` is a count of `unit` (`8kB`, `MB`, `s`, `min`…); without a
/// unit (a value read from a file), PostgreSQL's own units are accepted.
fn scaled(setting: &str, unit: Option<&str>, unit_of: fn(&str) -> Option<u128>) -> Option<u128> {
    match unit.map(str::trim).filter(|u| !u.is_empty()) {
        Some(u) => {
            let n: u128 = setting.parse().ok()?;
            let digits = u.find(|c: char| !c.is_ascii_digit()).unwrap_or(u.len());
            let factor: u128 = if digits == 0 { 1 } else { u[..digits].parse().ok()? };
            Some(n * factor * unit_of(&u[digits..])?)
        }
        None => {
            let digits = setting.find(|c: char| !c.is_ascii_digit()).unwrap_or(setting.len());
            let n: u128 = setting[..digits].parse().ok()?;
            Some(n * unit_of(setting[digits..].trim())?)
        }
    }
}

fn size_unit(u: &str) -> Option<u128> {
    Some(match u {
        "" | "B" => 1,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        _ => return None,
    })
}

fn time_unit(u: &str) -> Option<u128> {
    Some(match u {
        "" | "ms" => 1,
        "s" => 1000,
        "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    })
}

/// PostgreSQL's booleans; `wal_compression`'s methods (15+ shows `on` as `pglz`) count as on.
fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" | "pglz" | "lz4" | "zstd" => Some(true),
        "off" | "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

/// A word PostgreSQL reads unquoted in `postgresql.conf` (`replica`, `try`).
fn is_bare_word(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `'…'` with embedded quotes doubled, as both `postgresql.conf` and SQL read it.
pub(crate) fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The inverse of [`quote`]; a bare value comes back as it is.
pub(crate) fn unquote(s: &str) -> String {
    match s.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        Some(inner) => inner.replace("''", "'"),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_in_postgres_units() {
        assert_eq!(Typed::Bytes(8 << 30).render(), "8GB");
        assert_eq!(Typed::Bytes(7864 << 10).render(), "7864kB");
        assert_eq!(Typed::Millis(150_000).render(), "150s");
        assert_eq!(Typed::Real(1100).render(), "1.1");
        assert_eq!(Typed::Real(4000).render(), "4");
        assert_eq!(Typed::Real(900).render(), "0.9");
        assert_eq!(Typed::Bool(true).render(), "on");
        assert_eq!(Typed::Text("replica".into()).render(), "replica");
        assert_eq!(Typed::Text("it's %p".into()).render(), "'it''s %p'");
        assert_eq!(unquote("'it''s %p'"), "it's %p");
    }

    #[test]
    fn matches_pg_settings_rows() {
        // shared_buffers 8GB is 1048576 pages of 8kB.
        assert!(Typed::Bytes(8 << 30).matches("1048576", Some("8kB")));
        assert!(!Typed::Bytes(8 << 30).matches("16384", Some("8kB")));
        assert!(Typed::Bytes(4 << 30).matches("4096", Some("MB")));
        assert!(Typed::Bytes(64 << 20).matches("65536", Some("kB")));
        assert!(Typed::Bytes(64 << 20).matches("64MB", None));
        assert!(!Typed::Bytes(16 << 20).matches("-1", Some("8kB")));
        assert!(Typed::Millis(150_000).matches("150", Some("s")));
        assert!(Typed::Millis(300_000).matches("5min", None));
        assert!(Typed::Real(900).matches("0.9", None));
        assert!(!Typed::Real(1100).matches("4", None));
        assert!(Typed::Bool(true).matches("on", None));
        assert!(!Typed::Bool(true).matches("off", None));
        assert!(Typed::Bool(true).matches("pglz", None));
        assert!(Typed::Integer(100).matches("100", None));
        assert!(Typed::Text("replica".into()).matches("replica", None));
        assert!(!Typed::Text("replica".into()).matches("minimal", None));
    }
}
