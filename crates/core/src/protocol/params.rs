//! Connection parameters and the small pure helpers around them (sslmode names, server version
//! numbers, SQL literal quoting). Kept apart from the socket code so they can be unit-tested and
//! reused by configuration parsing without pulling in any I/O.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::error::ProtocolError;

/// Oldest server pgvault talks to (PostgreSQL 15: new BASE_BACKUP option syntax, manifests,
/// server-side progress reporting as CopyData 'p' messages).
pub const MIN_SERVER_VERSION_NUM: u32 = 150000;

/// How to use TLS, with libpq's names and meanings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SslMode {
    /// Never use TLS.
    Disable,
    /// Use TLS when the server offers it, without verifying its certificate; else plain text.
    #[default]
    Prefer,
    /// TLS or fail; the certificate is not verified (encryption only, as in libpq).
    Require,
    /// TLS with the certificate chain verified against the trusted roots, but no host name check
    /// (libpq's `verify-ca`).
    VerifyCa,
    /// TLS with chain and host name (or IP address) verified.
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = ProtocolError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "disable" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            "allow" => Err(ProtocolError::Config(
                "sslmode \"allow\" is not supported: use \"prefer\" (TLS when offered) or \"disable\"".into(),
            )),
            other => Err(ProtocolError::Config(format!(
                "unknown sslmode \"{other}\": use one of disable, prefer, require, verify-ca, verify-full"
            ))),
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        })
    }
}

/// Where and how to connect. `password` is already resolved (see
/// [`resolve_password`](super::resolve_password)).
#[derive(Clone)]
pub struct ConnParams {
    /// Host name or IP address, or an absolute directory: then the Unix socket
    /// `<dir>/.s.PGSQL.<port>` is used (and never TLS).
    pub host: String,
    pub port: u16,
    pub user: String,
    /// Database; defaults to the user name, as in libpq. Ignored by physical replication.
    pub dbname: Option<String>,
    pub password: Option<String>,
    pub sslmode: SslMode,
    /// PEM bundle of trusted CAs for verify-ca/verify-full. Without it: the webpki roots plus
    /// `~/.postgresql/root.crt` if that exists.
    pub sslrootcert: Option<PathBuf>,
    pub application_name: String,
    /// Limit for the whole connection set-up (TCP, TLS, authentication). Zero means no limit.
    pub connect_timeout: Duration,
}

impl fmt::Debug for ConnParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnParams")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("dbname", &self.dbname)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("sslmode", &self.sslmode)
            .field("sslrootcert", &self.sslrootcert)
            .field("application_name", &self.application_name)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl ConnParams {
    /// Parameters with libpq-like defaults for everything but host and user.
    pub fn new(host: impl Into<String>, port: u16, user: impl Into<String>) -> Self {
        ConnParams {
            host: host.into(),
            port,
            user: user.into(),
            dbname: None,
            password: None,
            sslmode: SslMode::Prefer,
            sslrootcert: None,
            application_name: "pgvault".into(),
            connect_timeout: Duration::from_secs(30),
        }
    }

    /// True when `host` names a Unix socket directory.
    pub fn is_unix_socket(&self) -> bool {
        is_socket_dir(&self.host)
    }

    /// `host:port`, or the socket path, for messages.
    pub fn endpoint(&self) -> String {
        if self.is_unix_socket() {
            format!("{}/.s.PGSQL.{}", self.host.trim_end_matches('/'), self.port)
        } else if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

pub(crate) fn is_socket_dir(host: &str) -> bool {
    host.starts_with('/')
}

/// Turns a `server_version` ParameterStatus into PostgreSQL's `server_version_num` form:
/// "15.4" -> 150004, "16.2 (Debian 16.2-1)" -> 160002, "18beta1" -> 180000, "9.6.24" -> 90624.
pub fn parse_server_version(text: &str) -> Option<u32> {
    let numeric: String = text
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut parts = numeric.split('.').filter(|p| !p.is_empty());
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next().map(str::parse).transpose().ok()?.unwrap_or(0);
    if major >= 10 {
        major.checked_mul(10000)?.checked_add(minor)
    } else {
        let patch: u32 = parts.next().map(str::parse).transpose().ok()?.unwrap_or(0);
        Some(major * 10000 + minor * 100 + patch)
    }
}

/// Quotes a string as a literal for a replication command or SQL with
/// standard_conforming_strings (the replication grammar knows no backslash escapes).
pub fn quote_literal(value: &str) -> Result<String, ProtocolError> {
    if value.contains('\0') {
        return Err(ProtocolError::Config(
            "a string sent to the server contains a NUL byte, which PostgreSQL cannot accept: remove it".into(),
        ));
    }
    Ok(format!("'{}'", value.replace('\'', "''")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_server_versions() {
        assert_eq!(parse_server_version("15.4"), Some(150004));
        assert_eq!(parse_server_version("16.2 (Debian 16.2-1.pgdg120+2)"), Some(160002));
        assert_eq!(parse_server_version("18beta1"), Some(180000));
        assert_eq!(parse_server_version("17rc1"), Some(170000));
        assert_eq!(parse_server_version("18devel"), Some(180000));
        assert_eq!(parse_server_version("15.18 (Debian 15.18-0+deb12u1)"), Some(150018));
        assert_eq!(parse_server_version("9.6.24"), Some(90624));
        assert_eq!(parse_server_version("14.10"), Some(140010));
        assert_eq!(parse_server_version(""), None);
        assert_eq!(parse_server_version("beta"), None);
        assert!(parse_server_version("14.10").unwrap() < MIN_SERVER_VERSION_NUM);
        assert!(parse_server_version("15.0").unwrap() >= MIN_SERVER_VERSION_NUM);
    }

    #[test]
    fn parses_sslmodes() {
        assert_eq!("disable".parse::<SslMode>().unwrap(), SslMode::Disable);
        assert_eq!("prefer".parse::<SslMode>().unwrap(), SslMode::Prefer);
        assert_eq!("Require".parse::<SslMode>().unwrap(), SslMode::Require);
        assert_eq!("verify-ca".parse::<SslMode>().unwrap(), SslMode::VerifyCa);
        assert_eq!("verify-full".parse::<SslMode>().unwrap(), SslMode::VerifyFull);
        let err = "allow".parse::<SslMode>().unwrap_err().to_string();
        assert!(err.contains("prefer"), "{err}");
        let err = "verify".parse::<SslMode>().unwrap_err().to_string();
        assert!(err.contains("verify-full"), "{err}");
        for mode in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
            assert_eq!(mode.parse::<SslMode>().unwrap().to_string(), mode);
        }
    }

    #[test]
    fn quotes_literals() {
        assert_eq!(quote_literal("plain").unwrap(), "'plain'");
        assert_eq!(quote_literal("it's").unwrap(), "'it''s'");
        assert_eq!(quote_literal("a\\b").unwrap(), "'a\\b'");
        assert_eq!(quote_literal("''").unwrap(), "''''''");
        assert!(quote_literal("nul\0").is_err());
    }

    #[test]
    fn endpoints_and_sockets() {
        let p = ConnParams::new("/var/run/postgresql", 5433, "u");
        assert!(p.is_unix_socket());
        assert_eq!(p.endpoint(), "/var/run/postgresql/.s.PGSQL.5433");
        assert_eq!(ConnParams::new("db", 5432, "u").endpoint(), "db:5432");
        assert_eq!(ConnParams::new("::1", 5432, "u").endpoint(), "[::1]:5432");
        let dbg = format!(
            "{:?}",
            ConnParams {
                password: Some("secret".into()),
                ..p
            }
        );
        assert!(!dbg.contains("secret"));
    }
}
