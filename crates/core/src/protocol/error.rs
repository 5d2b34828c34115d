//! The one error type of the replication-protocol client. It exists so that every failure on the
//! way from "open a socket" to "last byte of a base backup" reaches the operator as a typed value
//! whose message says what failed, where, and what to check next — the message is what someone
//! paged at 3 a.m. reads first.

use std::fmt;
use std::time::Duration;

/// Everything that can go wrong while talking to a PostgreSQL server.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// A socket or file operation failed; `context` says which and against what.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// The server did not answer in time.
    #[error("timed out after {}s {what}: check that the server is up, reachable from this host and not overloaded, or raise connect_timeout", timeout.as_secs_f64())]
    Timeout { what: String, timeout: Duration },

    /// TLS could not be set up or the server's certificate was refused.
    #[error("TLS: {0}")]
    Tls(String),

    /// Authentication could not be carried out (unsupported method, broken SCRAM exchange...).
    #[error("authentication: {0}")]
    Auth(String),

    /// The server asked for a password and none was configured.
    #[error("the server at {host} asks for a password for user \"{user}\", but none was found: put it in the file named by password_file in the config, in the PGPASSWORD environment variable, or in ~/.pgpass (or the file named by PGPASSFILE)")]
    PasswordRequired { user: String, host: String },

    /// The server answered with an ErrorResponse.
    #[error("{}", DisplayServer { severity, code, message, detail, hint, context })]
    Server {
        severity: String,
        /// SQLSTATE, e.g. `28P01` for a wrong password.
        code: String,
        message: String,
        detail: Option<String>,
        hint: Option<String>,
        /// What we were doing and against which server, added on our side
        /// (e.g. `authenticating as user "x" at 127.0.0.1:5432`).
        context: Option<String>,
    },

    /// The server is older than pgvault supports.
    #[error("the server runs PostgreSQL {found}, but pgvault needs PostgreSQL {minimum} or newer: upgrade the server or point pgvault at a newer one")]
    UnsupportedVersion { found: String, minimum: u32 },

    /// The server sent something the protocol does not allow at this point.
    #[error("unexpected message from the server: {0}; this is a bug in pgvault or an incompatible server or proxy in between")]
    Protocol(String),

    /// A password file (~/.pgpass, PGPASSFILE, or password_file) could not be used.
    #[error("password file: {0}")]
    PgPass(String),

    /// A connection parameter or option is invalid.
    #[error("invalid setting: {0}")]
    Config(String),
}

impl ProtocolError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ProtocolError::Io {
            context: context.into(),
            source,
        }
    }

    /// SQLSTATE of a server error, if this is one.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            ProtocolError::Server { code, .. } => Some(code),
            _ => None,
        }
    }
}

struct DisplayServer<'a> {
    severity: &'a str,
    code: &'a str,
    message: &'a str,
    detail: &'a Option<String>,
    hint: &'a Option<String>,
    context: &'a Option<String>,
}

impl fmt::Display for DisplayServer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgreSQL {} {}", self.severity, self.code)?;
        if let Some(context) = self.context {
            write!(f, " while {context}")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(detail) = self.detail {
            write!(f, " (detail: {detail})")?;
        }
        if let Some(hint) = self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_error_message_carries_context_and_hint() {
        let e = ProtocolError::Server {
            severity: "FATAL".into(),
            code: "28P01".into(),
            message: "password authentication failed for user \"x\"".into(),
            detail: None,
            hint: Some("check PGPASSWORD".into()),
            context: Some("authenticating as user \"x\" at db:5432".into()),
        };
        let text = e.to_string();
        assert!(text.contains("FATAL 28P01 while authenticating"), "{text}");
        assert!(text.contains("hint: check PGPASSWORD"), "{text}");
        assert_eq!(e.sqlstate(), Some("28P01"));
    }
}
