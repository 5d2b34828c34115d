//! What went wrong in the store, as a kind callers can act on and a message an operator can act on.
//!
//! Callers decide by [`StorageErrorKind`] (the archive command on a standby retries a store that is
//! down or throttled, a push reads "precondition failed" as "already there"), never by the text.
//! The message is rendered from the error's fields when it is displayed: the store, the operation,
//! the key, for cloud stores the bucket, full object name, endpoint and HTTP status, and a hint
//! that says what to check.

use std::fmt;

/// What kind of failure a storage operation met, for decisions (retry, report, give up).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StorageErrorKind {
    /// The object does not exist (a missing bucket is [`Permanent`](Self::Permanent)).
    NotFound,
    /// A conditional create met an existing object (409, or 412 "precondition failed").
    AlreadyExists,
    /// The store asks to slow down (429, 503 SlowDown) and its retries ran out.
    Throttled,
    /// Credentials missing, wrong or without the permission (401, 403, local EACCES).
    Auth,
    /// The store could not be reached or failed for now (timeouts, connection resets, 5xx):
    /// the same request may succeed later.
    Transient,
    /// Anything else: retrying the same request will not help.
    Permanent,
}

impl StorageErrorKind {
    /// Whether the store is down or busy rather than the request wrong: waiting may help.
    pub fn is_unavailable(self) -> bool {
        matches!(self, StorageErrorKind::Throttled | StorageErrorKind::Transient)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("repository URL '{url}': {message}")]
    BadUrl { url: String, message: String },
    #[error("{store}: object '{key}' does not exist")]
    NotFound { store: String, key: String },
    /// A failed operation (boxed: it carries the whole context for the message).
    #[error("{0}")]
    Operation(Box<OperationError>),
}

impl StorageError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound { .. })
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> StorageErrorKind {
        match self {
            StorageError::BadUrl { .. } => StorageErrorKind::Permanent,
            StorageError::NotFound { .. } => StorageErrorKind::NotFound,
            StorageError::Operation(op) => op.kind,
        }
    }
}

impl From<OperationError> for StorageError {
    fn from(e: OperationError) -> Self {
        StorageError::Operation(Box::new(e))
    }
}

/// Which kind of store failed, for the hint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The local-disk repository.
    Local,
    /// A cloud bucket: where exactly the object lives.
    Cloud {
        bucket_word: &'static str,
        bucket: String,
        object: String,
        endpoint: Option<String>,
    },
    /// A store wrapped by a caller (tests, in-memory).
    Other,
}

/// One failed storage operation with everything its message needs.
#[derive(Debug)]
pub struct OperationError {
    pub kind: StorageErrorKind,
    /// The store, as `file:///…` or `s3://bucket/prefix`.
    pub store: String,
    /// What was being done: `read`, `write`, `list`, …
    pub op: &'static str,
    /// The repository-relative key.
    pub key: String,
    /// The HTTP status the store answered with, if any.
    pub status: Option<u16>,
    /// The store's own words (whitespace collapsed, bounded).
    pub detail: String,
    pub backend: Backend,
}

impl OperationError {
    /// An error of `kind` with no HTTP status and a generic backend (tests, and errors pgvault
    /// itself decides on, such as a download cut off too often).
    pub fn new(kind: StorageErrorKind, store: &str, op: &'static str, key: &str, detail: impl Into<String>) -> Self {
        OperationError {
            kind,
            store: store.to_string(),
            op,
            key: key.to_string(),
            status: None,
            detail: bounded(&detail.into()),
            backend: Backend::Other,
        }
    }

    fn hint(&self) -> String {
        let bucket = match &self.backend {
            Backend::Cloud {
                bucket_word, bucket, ..
            } => Some((*bucket_word, bucket.as_str())),
            _ => None,
        };
        // object_store's retry text always names its `retry_timeout` setting: not a timeout.
        let lower = self.detail.to_lowercase().replace("retry_timeout", "");
        match (self.status, bucket) {
            (Some(401 | 403), Some((word, b))) => return format!(
                "check the credentials ([repository] keys or the environment) and that they grant list, read, write and delete on {word} '{b}' (see docs/storage-*.md for the permissions pgvault needs)"
            ),
            (Some(404), Some((word, b))) => return format!(
                "{word} '{b}' does not exist or these credentials cannot see it: check the [repository] url and create the {word}"
            ),
            (Some(429 | 503), _) => return "the store kept throttling until the retries ran out; raise [repository] retry_max / retry_timeout or lower the load".into(),
            (Some(s), _) if s >= 500 => return "the store failed repeatedly; check its health, then retry ([repository] retry_max, retry_timeout)".into(),
            (Some(409 | 412), _) => return "the object changed concurrently; retry".into(),
            _ => {}
        }
        if self.backend == Backend::Local {
            return "check free space, permissions and that the repository is owned by the user running pgvault".into();
        }
        if lower.contains("certificate") || lower.contains("tls") || lower.contains("invalid peer") {
            return "check [repository] ca_file (the CA, or the self-signed certificate, of the endpoint) and that the certificate names the endpoint's host".into();
        }
        if lower.contains("timed out") || lower.contains("timeout") {
            return "the request timed out; check the endpoint and the network ([repository] request_timeout, connect_timeout)".into();
        }
        if lower.contains("connect") || lower.contains("reset") || lower.contains("dns") {
            return "cannot reach the store; check [repository] endpoint, DNS and the network".into();
        }
        match self.kind {
            StorageErrorKind::Transient => "check the network and the store's health".into(),
            _ => "check the endpoint, credentials and network".into(),
        }
    }
}

impl fmt::Display for OperationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: cannot {} '{}': ", self.store, self.op, self.key)?;
        if let Backend::Cloud {
            bucket_word,
            bucket,
            object,
            endpoint,
        } = &self.backend
        {
            write!(f, "{bucket_word} '{bucket}', object '{object}'")?;
            if let Some(ep) = endpoint {
                write!(f, ", endpoint {ep}")?;
            }
            if let Some(s) = self.status {
                write!(f, ", HTTP status {s}")?;
            }
            f.write_str(": ")?;
        }
        write!(f, "{} ({})", self.detail, self.hint())
    }
}

/// The store's text, whitespace collapsed and cut at 600 bytes.
pub(super) fn bounded(text: &str) -> String {
    let mut message = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if message.len() > 600 {
        let mut cut = 600;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    message
}

/// Whether `op` writes (a failed precondition there means the object is already there).
fn is_write(op: &str) -> bool {
    matches!(
        op,
        "write" | "start upload of" | "upload" | "complete upload of" | "probe conditional create with"
    )
}

/// The kind of an object_store error. `status` is the HTTP status found in its text, if any.
pub(super) fn classify(
    e: &object_store::Error,
    op: &str,
    status: Option<u16>,
    missing_bucket: bool,
) -> StorageErrorKind {
    use object_store::Error as E;
    use StorageErrorKind as K;
    if missing_bucket {
        return K::Permanent;
    }
    match e {
        E::NotFound { .. } => return K::NotFound,
        E::AlreadyExists { .. } => return K::AlreadyExists,
        // A failed If-None-Match on a write: the object is there. On a read pinned by If-Match,
        // the object was replaced meanwhile: reading again gets the new one.
        E::Precondition { .. } => return if is_write(op) { K::AlreadyExists } else { K::Transient },
        E::Unauthenticated { .. } | E::PermissionDenied { .. } => return K::Auth,
        E::NotModified { .. } | E::NotImplemented | E::NotSupported { .. } | E::InvalidPath { .. } => {
            return K::Permanent
        }
        _ => {}
    }
    if let Some(kind) = status.and_then(|s| kind_of_status(s, op)) {
        return kind;
    }
    if chain_is_transient(e) {
        return K::Transient;
    }
    // object_store's retry text always names its `retry_timeout` setting: not a timeout.
    let lower = error_text(e).to_lowercase().replace("retry_timeout", "");
    if lower.contains("slowdown") || lower.contains("slow down") || lower.contains("too many requests") {
        return K::Throttled;
    }
    if [
        "timed out",
        "timeout",
        "connection reset",
        "connection refused",
        "broken pipe",
        "error sending request",
        "error reading a body",
        "end of file before message length",
    ]
    .iter()
    .any(|w| lower.contains(w))
    {
        return K::Transient;
    }
    K::Permanent
}

fn kind_of_status(status: u16, op: &str) -> Option<StorageErrorKind> {
    use StorageErrorKind as K;
    Some(match status {
        429 | 503 => K::Throttled,
        401 | 403 => K::Auth,
        404 => K::NotFound,
        409 | 412 if is_write(op) => K::AlreadyExists,
        408 | 409 | 412 => K::Transient,
        500..=599 => K::Transient,
        400..=499 => K::Permanent,
        _ => return None,
    })
}

/// Whether any error in the chain is a connection, timeout or interrupted-transfer failure.
fn chain_is_transient(e: &object_store::Error) -> bool {
    use std::io::ErrorKind as Io;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<object_store::client::HttpError>() {
            use object_store::client::HttpErrorKind as H;
            if matches!(h.kind(), H::Connect | H::Request | H::Timeout | H::Interrupted) {
                return true;
            }
        }
        if let Some(r) = s.downcast_ref::<reqwest::Error>() {
            if r.is_timeout() || r.is_connect() || r.is_request() || r.is_body() {
                return true;
            }
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                Io::TimedOut
                    | Io::ConnectionReset
                    | Io::ConnectionRefused
                    | Io::ConnectionAborted
                    | Io::NotConnected
                    | Io::BrokenPipe
                    | Io::UnexpectedEof
                    | Io::Interrupted
            ) {
                return true;
            }
        }
        source = s.source();
    }
    false
}

/// An object_store error with its sources, without repeating what the outer text already says.
pub(super) fn error_text(e: &object_store::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let t = s.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        source = s.source();
    }
    text
}

/// Whether a store's 404 text says the bucket (S3 `NoSuchBucket`, GCS "bucket does not exist",
/// Azure `ContainerNotFound`) rather than the object is missing.
pub(super) fn names_missing_bucket(text: &str) -> bool {
    let t = text.to_lowercase();
    !t.contains("nosuchkey")
        && !t.contains("blobnotfound")
        && (t.contains("nosuchbucket")
            || t.contains("containernotfound")
            || t.contains("the specified bucket does not exist")
            || t.contains("bucket not found"))
}

/// The HTTP status an object_store error message reports, if any.
pub(super) fn http_status(message: &str) -> Option<u16> {
    for marker in ["status code: ", "status: ", "HTTP status "] {
        if let Some(i) = message.find(marker) {
            let digits: String = message[i + marker.len()..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            if let Ok(n) = digits.parse::<u16>() {
                if (100..600).contains(&n) {
                    return Some(n);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use StorageErrorKind as K;

    fn generic(text: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: text.to_string().into(),
        }
    }

    #[test]
    fn tells_a_missing_bucket_from_a_missing_object() {
        assert!(names_missing_bucket(
            "<Error><Code>NoSuchBucket</Code><BucketName>b</BucketName></Error>"
        ));
        assert!(names_missing_bucket("<Code>ContainerNotFound</Code>"));
        assert!(!names_missing_bucket(
            "<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message><BucketName>b</BucketName></Error>"
        ));
        assert!(!names_missing_bucket("<Code>BlobNotFound</Code> container"));
    }

    #[test]
    fn finds_http_status() {
        assert_eq!(
            http_status("Server returned non-2xx status code: 503 Service Unavailable: x"),
            Some(503)
        );
        assert_eq!(http_status("Client error with status 403 Forbidden"), None);
        assert_eq!(http_status("nothing"), None);
    }

    #[test]
    fn kinds_follow_the_status() {
        let c = |status: u16, op: &str| {
            let e = generic(&format!("Server returned non-2xx status code: {status}: body"));
            classify(&e, op, http_status(&error_text(&e)), false)
        };
        assert_eq!(c(429, "read"), K::Throttled);
        assert_eq!(c(503, "read"), K::Throttled);
        assert_eq!(c(401, "list"), K::Auth);
        assert_eq!(c(403, "write"), K::Auth);
        assert_eq!(c(500, "read"), K::Transient);
        assert_eq!(c(502, "write"), K::Transient);
        assert_eq!(c(400, "read"), K::Permanent);
        assert_eq!(c(412, "write"), K::AlreadyExists);
        assert_eq!(c(409, "write"), K::AlreadyExists);
    }

    #[test]
    fn kinds_of_typed_errors() {
        let path = || "p".to_string();
        let src = || Box::<dyn std::error::Error + Send + Sync>::from("x");
        let pre = object_store::Error::Precondition {
            path: path(),
            source: src(),
        };
        assert_eq!(classify(&pre, "write", None, false), K::AlreadyExists);
        assert_eq!(classify(&pre, "read", None, false), K::Transient);
        let nf = object_store::Error::NotFound {
            path: path(),
            source: src(),
        };
        assert_eq!(classify(&nf, "read", None, false), K::NotFound);
        assert_eq!(
            classify(&nf, "read", Some(404), true),
            K::Permanent,
            "a missing bucket is not a missing object"
        );
        let denied = object_store::Error::PermissionDenied {
            path: path(),
            source: src(),
        };
        assert_eq!(classify(&denied, "read", None, false), K::Auth);
        assert_eq!(
            classify(&object_store::Error::NotImplemented, "write", None, false),
            K::Permanent
        );
    }

    #[test]
    fn connection_failures_are_transient_by_type_not_text() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "nope");
        let e = object_store::Error::Generic {
            store: "local",
            source: Box::new(io),
        };
        assert_eq!(classify(&e, "read", None, false), K::Transient);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, "nope");
        let e = object_store::Error::Generic {
            store: "local",
            source: Box::new(io),
        };
        assert_eq!(classify(&e, "read", None, false), K::Permanent);
        assert_eq!(
            classify(&generic("<Code>SlowDown</Code>"), "write", None, false),
            K::Throttled
        );
    }

    #[test]
    fn message_is_rendered_from_fields() {
        let e = OperationError {
            kind: K::Auth,
            store: "s3://b/p".into(),
            op: "read",
            key: "wal/x".into(),
            status: Some(403),
            detail: "Access Denied".into(),
            backend: Backend::Cloud {
                bucket_word: "bucket",
                bucket: "b".into(),
                object: "p/wal/x".into(),
                endpoint: Some("https://s3.local".into()),
            },
        };
        let text = StorageError::from(e).to_string();
        assert_eq!(
            text,
            "s3://b/p: cannot read 'wal/x': bucket 'b', object 'p/wal/x', endpoint https://s3.local, HTTP status 403: Access Denied (check the credentials ([repository] keys or the environment) and that they grant list, read, write and delete on bucket 'b' (see docs/storage-*.md for the permissions pgvault needs))"
        );
        let local = OperationError {
            backend: Backend::Local,
            status: None,
            ..OperationError::new(K::Permanent, "file:///r", "write", "k", "disk full")
        };
        assert!(local.to_string().contains("check free space"), "{local}");
        let reset = OperationError::new(
            K::Transient,
            "s3://b",
            "read",
            "k",
            "Error performing GET http://x in 1ms, after 1 retries, max_retries: 1, retry_timeout: 5s - HTTP error: connection error: Connection reset by peer",
        );
        let text = reset.to_string();
        assert!(
            text.contains("cannot reach the store") && !text.contains("timed out"),
            "{text}"
        );
    }
}
