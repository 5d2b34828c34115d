//! Integration tests of pgvault's own PostgreSQL client (`pgvault_core::protocol`) against real
//! servers: authentication methods (trust, password, md5, SCRAM with and without channel
//! binding), libpq's sslmodes against a server with a test CA, `hostssl`, Unix sockets, simple
//! queries, IDENTIFY_SYSTEM, connect timeouts and BASE_BACKUP with a tablespace on every
//! supported major.
//!
//! They exist because the protocol details that matter (message order, COPY sub-messages, TLS
//! negotiation, SCRAM-PLUS) can only be trusted once a real server agreed; unit tests in
//! `crates/core` cover the pure parts. The tests call the library directly rather than the
//! binaries, so that a failure points at the protocol layer.
//!
//! Clusters are shared where natural to keep the file fast: one PostgreSQL 15 server with TLS
//! for authentication, sslmodes and IDENTIFY_SYSTEM; one plain 15 server for sockets, queries,
//! the non-TLS fallback and BASE_BACKUP error cases; one server per major for BASE_BACKUP (over
//! TLS where the build has OpenSSL: the 16 and 18 wheel builds have not, so TLS is tested on 15).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pgvault_core::lsn::Lsn;
use pgvault_core::protocol::{
    parse_server_version, BackupEvent, BaseBackupOptions, ConnParams, Connection, ProtocolError, SslMode,
    MIN_SERVER_VERSION_NUM,
};
use pgvault_tests::cluster::free_port;
use pgvault_tests::{install_under_test, ClusterOptions, PgCluster, PgInstall, TlsCluster};

const MD5_PASSWORD: &str = "md5 secret";
const SCRAM_PASSWORD: &str = "scram'secret";
const CLEARTEXT_PASSWORD: &str = "clear:secret";
const SSL_PASSWORD: &str = "ssl-secret";

/// Users, one per authentication method, with the method their `host` lines use.
const AUTH_USERS: &[(&str, &str)] = &[
    ("postgres", "trust"),
    ("trustuser", "trust"),
    ("md5user", "md5"),
    ("scramuser", "scram-sha-256"),
    ("pwuser", "password"),
];

// ------------------------------------------------------------------ helpers

/// `pg_hba.conf` for the authentication tests: trust over the socket, one method per user over
/// TCP (no line at all for other users), and with TLS a `hostssl`-only user `ssluser`.
fn auth_hba(tls: bool) -> Vec<String> {
    let mut hba = vec![
        "local all all trust".to_string(),
        "local replication all trust".to_string(),
    ];
    if tls {
        // Without ssl = on, PostgreSQL refuses to load hostssl lines at all.
        for db in ["all", "replication"] {
            hba.push(format!("hostssl {db} ssluser 127.0.0.1/32 scram-sha-256"));
        }
    }
    for (user, method) in AUTH_USERS {
        for db in ["all", "replication"] {
            hba.push(format!("host {db} {user} 127.0.0.1/32 {method}"));
        }
    }
    hba
}

fn auth_options(tls: bool) -> ClusterOptions {
    ClusterOptions {
        hba: Some(auth_hba(tls)),
        ..ClusterOptions::default()
    }
}

/// Creates the roles of [`auth_hba`] (through the harness's own client, not the code under
/// test), each password stored with the hash its method needs.
async fn create_roles(cluster: &PgCluster) {
    let q = |s: &str| s.replace('\'', "''");
    cluster
        .execute(&format!(
            "CREATE ROLE trustuser LOGIN REPLICATION;
             SET password_encryption = 'md5';
             CREATE ROLE md5user LOGIN REPLICATION PASSWORD '{}';
             SET password_encryption = 'scram-sha-256';
             CREATE ROLE scramuser LOGIN REPLICATION PASSWORD '{}';
             CREATE ROLE pwuser LOGIN REPLICATION PASSWORD '{}';
             CREATE ROLE ssluser LOGIN REPLICATION PASSWORD '{}';",
            q(MD5_PASSWORD),
            q(SCRAM_PASSWORD),
            q(CLEARTEXT_PASSWORD),
            q(SSL_PASSWORD)
        ))
        .await
        .expect("create test roles");
}

/// TCP parameters (127.0.0.1) for `user`, sslmode disable.
fn tcp_params(cluster: &PgCluster, user: &str, password: Option<&str>) -> ConnParams {
    ConnParams {
        host: "127.0.0.1".into(),
        port: cluster.port(),
        user: user.into(),
        dbname: Some("postgres".into()),
        password: password.map(String::from),
        sslmode: SslMode::Disable,
        sslrootcert: None,
        application_name: "pgvault-protocol-test".into(),
        connect_timeout: Duration::from_secs(20),
    }
}

/// Unix-socket parameters for the superuser.
fn socket_params(cluster: &PgCluster) -> ConnParams {
    ConnParams {
        host: cluster.socket_dir().display().to_string(),
        ..tcp_params(cluster, "postgres", None)
    }
}

fn expect_server_error(result: Result<Connection, ProtocolError>, code: &str) -> String {
    match result {
        Err(e @ ProtocolError::Server { .. }) => {
            assert_eq!(e.sqlstate(), Some(code), "{e}");
            e.to_string()
        }
        Err(other) => panic!("expected server error {code}, got {other:?}"),
        Ok(_) => panic!("expected server error {code}, but the connection succeeded"),
    }
}

/// One entry of a tar archive.
struct TarEntry {
    name: String,
    size: u64,
    typeflag: u8,
    /// Target of a symbolic link.
    linkname: String,
    /// Offset of the entry's data in the archive.
    data: usize,
}

/// Minimal tar walker. Panics on a header that is not ustar: pgvault stores the server's tar
/// stream as is, and restores rely on it being plain ustar.
fn tar_entries(tar: &[u8]) -> Vec<TarEntry> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while off + 512 <= tar.len() {
        let h = &tar[off..off + 512];
        if h.iter().all(|b| *b == 0) {
            break;
        }
        assert_eq!(&h[257..262], b"ustar", "header at offset {off} is not ustar");
        let cstr = |b: &[u8]| {
            let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
            String::from_utf8_lossy(&b[..end]).into_owned()
        };
        let prefix = cstr(&h[345..500]);
        let name = cstr(&h[0..100]);
        let name = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let size_text = cstr(&h[124..136]);
        let size = u64::from_str_radix(size_text.trim(), 8).unwrap_or_else(|_| panic!("bad tar size {size_text:?}"));
        out.push(TarEntry {
            name,
            size,
            typeflag: h[156],
            linkname: cstr(&h[157..257]),
            data: off + 512,
        });
        off += 512 + size.div_ceil(512) as usize * 512;
    }
    out
}

/// The contents of file `name` in a tar archive, as text.
fn tar_file_text(tar: &[u8], entries: &[TarEntry], name: &str) -> Option<String> {
    entries
        .iter()
        .find(|e| e.name == name)
        .map(|e| String::from_utf8_lossy(&tar[e.data..e.data + e.size as usize]).into_owned())
}

// ------------------------------------------------------------------ TLS server (PostgreSQL 15)

/// One TLS-enabled PostgreSQL 15 for authentication, sslmodes and IDENTIFY_SYSTEM: each part is
/// a function of its own so a failure still says which area broke.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_server_authentication_sslmodes_identify_system() {
    let Some(install) = install_under_test(15) else {
        return;
    };
    let cluster = TlsCluster::start_new(&install, auth_options(true)).expect("start TLS cluster");
    create_roles(&cluster).await;
    authentication_methods(&cluster).await;
    ssl_modes(&cluster).await;
    identify_system(&cluster).await;
}

/// trust, password, md5 and SCRAM accept the right password and reject a wrong or missing one
/// with a message that says where to look.
async fn authentication_methods(cluster: &PgCluster) {
    for replication in [false, true] {
        let c = Connection::connect(&tcp_params(cluster, "trustuser", None), replication)
            .await
            .expect("trust user connects");
        assert!(c.server_version_num() >= MIN_SERVER_VERSION_NUM);
        c.close().await.unwrap();
    }

    for (user, password) in [
        ("md5user", MD5_PASSWORD),
        ("scramuser", SCRAM_PASSWORD),
        ("pwuser", CLEARTEXT_PASSWORD),
    ] {
        for replication in [false, true] {
            let mut c = Connection::connect(&tcp_params(cluster, user, Some(password)), replication)
                .await
                .unwrap_or_else(|e| panic!("{user} (replication={replication}) with the right password: {e}"));
            if !replication {
                let rows = c.simple_query("SELECT current_user").await.unwrap();
                assert_eq!(rows, vec![vec![Some(user.to_string())]]);
            }
            c.close().await.unwrap();

            let text = expect_server_error(
                Connection::connect(&tcp_params(cluster, user, Some("wrong")), replication).await,
                "28P01",
            );
            assert!(text.contains("password authentication failed"), "{text}");
            assert!(
                text.contains(&format!("user \"{user}\" at 127.0.0.1:{}", cluster.port())),
                "{text}"
            );
            assert!(text.contains("PGPASSWORD"), "{text}");
        }

        match Connection::connect(&tcp_params(cluster, user, None), false).await {
            Err(e @ ProtocolError::PasswordRequired { .. }) => {
                let text = e.to_string();
                for place in ["password_file", "PGPASSWORD", "~/.pgpass"] {
                    assert!(text.contains(place), "{text}");
                }
                assert!(text.contains(user), "{text}");
            }
            other => panic!("{user} without a password: expected PasswordRequired, got {other:?}"),
        }
    }

    // A user with no pg_hba line at all.
    let text = expect_server_error(
        Connection::connect(&tcp_params(cluster, "nobody", Some("x")), false).await,
        "28000",
    );
    assert!(text.contains("pg_hba.conf"), "{text}");
}

/// disable/prefer/require/verify-ca/verify-full with the right and the wrong CA, SCRAM channel
/// binding, and a hostssl-only user.
async fn ssl_modes(tls: &TlsCluster) {
    let cluster: &PgCluster = tls;
    let ca = tls.certs.ca_cert.clone();
    let wrong_ca = tls.certs.wrong_ca_cert.clone();

    let connect = |mode: SslMode, host: &str, root: Option<&Path>, user: &str, pw: Option<&str>| {
        let mut p = tcp_params(cluster, user, pw);
        p.sslmode = mode;
        p.host = host.into();
        p.sslrootcert = root.map(Path::to_path_buf);
        async move { Connection::connect(&p, false).await }
    };

    let c = connect(SslMode::Disable, "127.0.0.1", None, "trustuser", None)
        .await
        .unwrap();
    assert!(!c.is_tls());
    c.close().await.unwrap();
    for mode in [SslMode::Prefer, SslMode::Require] {
        // No verification: the CA is unknown to the webpki roots, yet it works.
        let mut c = connect(mode, "127.0.0.1", None, "trustuser", None)
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert!(c.is_tls(), "{mode}");
        let rows = c
            .simple_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .await
            .unwrap();
        assert_eq!(rows, vec![vec![Some("t".to_string())]], "{mode}");
        c.close().await.unwrap();
    }
    for host in ["127.0.0.1", "localhost"] {
        let c = connect(SslMode::VerifyFull, host, Some(&ca), "trustuser", None)
            .await
            .unwrap_or_else(|e| panic!("verify-full to {host}: {e}"));
        assert!(c.is_tls());
        c.close().await.unwrap();
    }
    let c = connect(SslMode::VerifyCa, "127.0.0.1", Some(&ca), "trustuser", None)
        .await
        .expect("verify-ca with the right CA");
    assert!(c.is_tls());
    c.close().await.unwrap();

    for mode in [SslMode::VerifyFull, SslMode::VerifyCa] {
        match connect(mode, "127.0.0.1", Some(&wrong_ca), "trustuser", None).await {
            Err(ProtocolError::Tls(msg)) => {
                assert!(msg.contains("certificate"), "{msg}");
                assert!(msg.contains(&wrong_ca.display().to_string()), "{msg}");
            }
            other => panic!("{mode} with the wrong CA: expected a TLS error, got {other:?}"),
        }
        // Default roots (webpki + ~/.postgresql/root.crt) do not know our CA either.
        let default_roots = connect(mode, "127.0.0.1", None, "trustuser", None).await;
        assert!(
            matches!(default_roots, Err(ProtocolError::Tls(_))),
            "{mode} with default roots: expected a TLS error, got {default_roots:?}"
        );
    }

    // SCRAM over plain TCP is not bound; md5 over TLS is not either; SCRAM over TLS is.
    let c = connect(SslMode::Disable, "127.0.0.1", None, "scramuser", Some(SCRAM_PASSWORD))
        .await
        .unwrap();
    assert!(!c.is_channel_bound());
    c.close().await.unwrap();
    let c = connect(SslMode::Require, "127.0.0.1", None, "md5user", Some(MD5_PASSWORD))
        .await
        .unwrap();
    assert!(c.is_tls() && !c.is_channel_bound());
    c.close().await.unwrap();
    let mut c = connect(SslMode::Prefer, "127.0.0.1", None, "scramuser", Some(SCRAM_PASSWORD))
        .await
        .unwrap();
    assert!(c.is_channel_bound(), "SCRAM over TLS should use SCRAM-SHA-256-PLUS");
    let rows = c.simple_query("SELECT current_user").await.unwrap();
    assert_eq!(rows, vec![vec![Some("scramuser".to_string())]]);
    c.close().await.unwrap();

    // hostssl-only user: refused without TLS, accepted (with SCRAM-PLUS) over TLS.
    let text = expect_server_error(
        connect(SslMode::Disable, "127.0.0.1", None, "ssluser", Some(SSL_PASSWORD)).await,
        "28000",
    );
    assert!(text.contains("no encryption"), "{text}");
    let c = connect(SslMode::Require, "127.0.0.1", None, "ssluser", Some(SSL_PASSWORD))
        .await
        .unwrap();
    assert!(c.is_tls());
    assert!(c.is_channel_bound(), "SCRAM over TLS should use SCRAM-SHA-256-PLUS");
    c.close().await.unwrap();
    let mut p = tcp_params(cluster, "ssluser", Some(SSL_PASSWORD));
    p.sslmode = SslMode::VerifyFull;
    p.sslrootcert = Some(ca.clone());
    let mut c = Connection::connect(&p, true)
        .await
        .expect("replication over verify-full TLS");
    assert!(c.is_channel_bound());
    c.identify_system().await.expect("IDENTIFY_SYSTEM over verify-full TLS");
    c.close().await.unwrap();
}

/// IDENTIFY_SYSTEM over TCP (SCRAM) and over the Unix socket agrees with the server's SQL view.
async fn identify_system(cluster: &PgCluster) {
    let sysid: i64 = cluster
        .query_scalar("SELECT system_identifier FROM pg_control_system()")
        .await
        .unwrap();
    let current: Lsn = cluster.current_lsn().await.unwrap().parse().unwrap();

    let mut repl = Connection::connect(&tcp_params(cluster, "scramuser", Some(SCRAM_PASSWORD)), true)
        .await
        .unwrap();
    assert!(repl.is_replication());
    let id = repl.identify_system().await.unwrap();
    assert_eq!(id.system_identifier.to_string(), sysid.to_string());
    assert_eq!(id.timeline, 1);
    assert!(id.xlogpos >= current, "{} < {}", id.xlogpos, current);
    assert_eq!(id.dbname, None);
    repl.close().await.unwrap();

    let mut repl = Connection::connect(&socket_params(cluster), true).await.unwrap();
    assert!(repl.is_replication());
    let id = repl.identify_system().await.unwrap();
    assert_eq!(id.system_identifier.to_string(), sysid.to_string());
    repl.close().await.unwrap();
}

// ------------------------------------------------------------------ plain server (PostgreSQL 15)

/// One PostgreSQL 15 without TLS: Unix socket, simple_query behaviours, the sslmode fallback on
/// a server that does not offer TLS, and BASE_BACKUP error cases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_server_socket_queries_fallback_backup_errors() {
    let Some(install) = install_under_test(15) else {
        return;
    };
    let cluster = PgCluster::start_new(&install, ClusterOptions::default()).expect("start cluster");
    unix_socket_and_simple_query(&cluster).await;
    sslmode_on_a_server_without_tls(&cluster).await;
    base_backup_errors(&cluster).await;
}

async fn unix_socket_and_simple_query(cluster: &PgCluster) {
    let mut c = Connection::connect(&socket_params(cluster), false)
        .await
        .expect("socket connection");
    assert!(!c.is_tls());
    assert!(!c.is_replication());
    assert!(c.backend_pid().is_some());
    let version = c.parameter("server_version").unwrap().to_string();
    assert!(version.starts_with("15."), "{version}");
    assert_eq!(c.server_version_num() / 10000, 15);
    assert_eq!(c.parameter("client_encoding"), Some("UTF8"));

    // Several statements: rows of all of them, NULL as None, quotes intact.
    let rows = c
        .simple_query("SELECT 1 AS a, NULL::text AS b, 'it''s' AS c; SELECT 'x'")
        .await
        .unwrap();
    assert_eq!(
        rows,
        vec![
            vec![Some("1".into()), None, Some("it's".into())],
            vec![Some("x".into())]
        ]
    );
    match c.simple_query("SELECT * FROM no_such_table").await {
        Err(e @ ProtocolError::Server { .. }) => {
            assert_eq!(e.sqlstate(), Some("42P01"));
            assert!(e.to_string().contains("no_such_table"), "{e}");
        }
        other => panic!("expected 42P01, got {other:?}"),
    }
    // Still usable after an error, and notices are tolerated.
    let rows = c
        .simple_query("DO $$ BEGIN RAISE NOTICE 'hello'; RAISE WARNING 'careful'; END $$; SELECT 2")
        .await
        .unwrap();
    assert_eq!(rows, vec![vec![Some("2".into())]]);
    // The empty query.
    assert!(c.simple_query("").await.unwrap().is_empty());

    // Replication commands need a replication connection.
    assert!(matches!(c.identify_system().await, Err(ProtocolError::Config(_))));
    c.close().await.unwrap();
}

/// TLS off on the server: prefer falls back to plain text, require refuses.
async fn sslmode_on_a_server_without_tls(cluster: &PgCluster) {
    let mut p = tcp_params(cluster, "postgres", None);
    p.sslmode = SslMode::Prefer;
    let c = Connection::connect(&p, false)
        .await
        .expect("prefer falls back to plain text");
    assert!(!c.is_tls());
    c.close().await.unwrap();
    p.sslmode = SslMode::Require;
    match Connection::connect(&p, false).await {
        Err(ProtocolError::Tls(msg)) => assert!(msg.contains("does not accept TLS"), "{msg}"),
        other => {
            panic!("require against a server without TLS: expected a TLS error, got {other:?}")
        }
    }
}

/// A refused BASE_BACKUP is a server error and leaves the connection usable; a stream dropped
/// half-way poisons the connection clearly; `finish()` skips what was not read.
async fn base_backup_errors(cluster: &PgCluster) {
    let mut repl = Connection::connect(&socket_params(cluster), true).await.unwrap();
    // The server limits labels to MAXPGPATH - 1 bytes.
    let opts = BaseBackupOptions {
        label: "x".repeat(2000),
        ..Default::default()
    };
    match repl.base_backup(&opts).await {
        Err(e @ ProtocolError::Server { .. }) => assert!(e.to_string().contains("label"), "{e}"),
        other => panic!("expected a server error, got {:?}", other.map(|s| s.start_lsn)),
    }
    // Usable after the error; and a stream dropped half-way poisons the connection clearly.
    let mut stream = repl
        .base_backup(&BaseBackupOptions {
            manifest: false,
            ..Default::default()
        })
        .await
        .expect("BASE_BACKUP after a refused one");
    assert!(matches!(
        stream.next().await.unwrap(),
        Some(BackupEvent::NewArchive { .. })
    ));
    drop(stream);
    match repl.identify_system().await {
        Err(ProtocolError::Protocol(msg)) => assert!(msg.contains("new connection"), "{msg}"),
        other => panic!("expected a protocol error, got {other:?}"),
    }
    // finish() skips what was not read and still reports the end.
    let mut repl = Connection::connect(&socket_params(cluster), true).await.unwrap();
    let stream = repl
        .base_backup(&BaseBackupOptions {
            manifest: false,
            ..Default::default()
        })
        .await
        .unwrap();
    let start = stream.start_lsn;
    let end = stream.finish().await.unwrap();
    assert!(end.stop_lsn >= start);
    repl.identify_system().await.unwrap();
    repl.close().await.unwrap();
}

// ------------------------------------------------------------------ no server

#[tokio::test]
async fn connect_timeout_fires_against_a_silent_server() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts the TCP connection, then never says a word.
    let holder = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(sock);
    });
    let mut p = ConnParams::new("127.0.0.1", port, "u");
    p.connect_timeout = Duration::from_millis(300);
    let started = std::time::Instant::now();
    match Connection::connect(&p, false).await {
        Err(e @ ProtocolError::Timeout { .. }) => {
            assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}")
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    holder.abort();

    // Nothing listening: a clear I/O error naming the endpoint.
    let p = ConnParams::new("127.0.0.1", free_port().unwrap(), "u");
    match Connection::connect(&p, false).await {
        Err(e @ ProtocolError::Io { .. }) => {
            assert!(e.to_string().contains("is it running"), "{e}")
        }
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

/// `Connection::connect` refuses servers older than 15 by comparing
/// `parse_server_version(server_version)` with `MIN_SERVER_VERSION_NUM` and returning
/// `UnsupportedVersion`. No pre-15 server is available here (and a fake one would prove
/// nothing), so this checks the two pieces on the strings old servers really send; the parser
/// itself is unit-tested in `crates/core/src/protocol/params.rs`, and every real server in this
/// file passes the check.
#[test]
fn servers_older_than_15_are_refused_with_a_clear_message() {
    assert_eq!(MIN_SERVER_VERSION_NUM, 150000);
    for old in [
        "14.10",
        "14.10 (Debian 14.10-1.pgdg120+1)",
        "14beta3",
        "13.0",
        "10.23",
        "9.6.24",
    ] {
        let num = parse_server_version(old).unwrap_or_else(|| panic!("cannot parse {old:?}"));
        assert!(num < MIN_SERVER_VERSION_NUM, "{old} -> {num} is accepted");
    }
    for supported in ["15.0", "15.18 (Debian 15.18-0+deb12u1)", "16.2", "18beta1", "18.1"] {
        let num = parse_server_version(supported).unwrap();
        assert!(num >= MIN_SERVER_VERSION_NUM, "{supported} -> {num} is refused");
    }
    let e = ProtocolError::UnsupportedVersion {
        found: "14.10".into(),
        minimum: MIN_SERVER_VERSION_NUM / 10000,
    };
    let text = e.to_string();
    assert!(text.contains("PostgreSQL 14.10"), "{text}");
    assert!(text.contains("PostgreSQL 15 or newer"), "{text}");
    assert!(text.contains("upgrade"), "{text}");
}

// ------------------------------------------------------------------ BASE_BACKUP, every major

pgvault_tests::per_pg_version!(base_backup_with_tablespace, base_backup_test);

/// BASE_BACKUP with a tablespace, WAL, progress, manifest and tablespace map; over TLS where the
/// build supports it.
async fn base_backup_test(install: PgInstall) {
    if install.has_openssl() {
        let tls = TlsCluster::start_new(&install, ClusterOptions::default()).expect("start cluster");
        base_backup_with_tablespace(&tls, true).await;
    } else {
        let cluster = PgCluster::start_new(&install, ClusterOptions::default()).expect("start cluster");
        base_backup_with_tablespace(&cluster, false).await;
    }
}

#[derive(Default)]
struct BackupResult {
    /// Archive name -> (tablespace location, bytes).
    archives: BTreeMap<String, (Option<String>, Vec<u8>)>,
    manifest: Vec<u8>,
    progress: Vec<u64>,
}

async fn base_backup_with_tablespace(cluster: &PgCluster, tls: bool) {
    let ts_dir: PathBuf = cluster.tablespace_dir("ts1").unwrap();
    let ts_path = ts_dir.to_str().unwrap();
    let mut sql = Connection::connect(&socket_params(cluster), false).await.unwrap();
    sql.simple_query(&format!(
        "CREATE TABLESPACE ts1 LOCATION '{}'",
        ts_path.replace('\'', "''")
    ))
    .await
    .unwrap();
    sql.simple_query(
        "CREATE TABLE t (id int, pad text) TABLESPACE ts1;
         INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g;",
    )
    .await
    .unwrap();
    let ts_oid: u32 = sql
        .simple_query("SELECT oid FROM pg_tablespace WHERE spcname = 'ts1'")
        .await
        .unwrap()[0][0]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    let major = sql.server_version_num() / 10000;
    assert_eq!(major, cluster.install().major());
    sql.close().await.unwrap();

    let mut params = tcp_params(cluster, "postgres", None);
    params.sslmode = if tls { SslMode::Require } else { SslMode::Prefer };
    let mut repl = Connection::connect(&params, true).await.unwrap();
    assert_eq!(repl.is_tls(), tls, "PG{major}");
    let opts = BaseBackupOptions {
        label: "pgvault's test".into(),
        progress: true,
        wal: true,
        manifest: true,
        tablespace_map: true,
        ..Default::default()
    };
    let mut stream = repl
        .base_backup(&opts)
        .await
        .unwrap_or_else(|e| panic!("PG{major}: {e}"));
    assert!(stream.start_lsn > Lsn(0));
    assert_eq!(stream.start_timeline, 1);
    let start_lsn = stream.start_lsn;
    let ts = stream
        .tablespaces
        .iter()
        .find(|t| t.oid == Some(ts_oid))
        .unwrap_or_else(|| panic!("PG{major}: tablespace {ts_oid} not listed: {:?}", stream.tablespaces));
    assert_eq!(ts.location.as_deref(), Some(ts_path));
    assert!(ts.size_kb.unwrap() > 0, "PG{major}: no size estimate with PROGRESS");
    let main = stream
        .tablespaces
        .iter()
        .find(|t| t.oid.is_none())
        .expect("main data directory listed");
    assert!(main.location.is_none() && main.size_kb.unwrap() > 0);

    let mut result = BackupResult::default();
    let mut current: Option<String> = None;
    let mut manifest_started = false;
    while let Some(event) = stream.next().await.unwrap_or_else(|e| panic!("PG{major}: {e}")) {
        match event {
            BackupEvent::NewArchive {
                name,
                tablespace_location,
            } => {
                assert!(!manifest_started, "PG{major}: archive after the manifest");
                result.archives.insert(name.clone(), (tablespace_location, Vec::new()));
                current = Some(name);
            }
            BackupEvent::ArchiveData(bytes) => {
                let name = current.as_ref().expect("data after an archive header");
                result.archives.get_mut(name).unwrap().1.extend_from_slice(&bytes);
            }
            BackupEvent::Progress(n) => result.progress.push(n),
            BackupEvent::ManifestStart => manifest_started = true,
            BackupEvent::ManifestData(bytes) => {
                assert!(manifest_started);
                result.manifest.extend_from_slice(&bytes);
            }
        }
    }
    assert!(stream.next().await.unwrap().is_none(), "stays finished");
    let end = stream.finish().await.unwrap_or_else(|e| panic!("PG{major}: {e}"));
    assert!(
        end.stop_lsn >= start_lsn,
        "PG{major}: stop {} < start {}",
        end.stop_lsn,
        start_lsn
    );
    assert_eq!(end.stop_timeline, 1);

    // Archives: base.tar and <oid>.tar, real ustar, with the expected contents.
    let names: Vec<&str> = result.archives.keys().map(String::as_str).collect();
    let ts_tar = format!("{ts_oid}.tar");
    assert_eq!(names, vec![ts_tar.as_str(), "base.tar"], "PG{major}");
    let (base_loc, base) = &result.archives["base.tar"];
    assert!(base_loc.is_none());
    assert_eq!(&base[257..262], b"ustar");
    let entries = tar_entries(base);
    let has = |n: &str| entries.iter().any(|e| e.name == n);
    assert!(has("backup_label"), "PG{major}: no backup_label in base.tar");
    assert!(has("global/pg_control"), "PG{major}: no pg_control in base.tar");
    assert!(
        entries.iter().any(|e| e.name.starts_with("pg_wal/0000000100000000")),
        "PG{major}: WAL not included"
    );
    let label = tar_file_text(base, &entries, "backup_label").unwrap();
    assert!(label.contains("LABEL: pgvault's test"), "{label}");
    assert!(label.contains(&format!("START WAL LOCATION: {start_lsn}")), "{label}");
    // TABLESPACE_MAP: the map names the tablespace, and replaces the pg_tblspc symlink.
    let map = tar_file_text(base, &entries, "tablespace_map")
        .unwrap_or_else(|| panic!("PG{major}: no tablespace_map in base.tar with TABLESPACE_MAP"));
    assert_eq!(map.trim_end(), format!("{ts_oid} {ts_path}"), "PG{major}");
    // PostgreSQL writes directories and symlinks to directories with a trailing slash.
    let symlink = format!("pg_tblspc/{ts_oid}");
    assert!(
        !entries.iter().any(|e| e.name.trim_end_matches('/') == symlink),
        "PG{major}: {symlink} sent although the tablespace map replaces it"
    );

    let (ts_loc, ts_bytes) = &result.archives[&ts_tar];
    assert_eq!(ts_loc.as_deref(), Some(ts_path));
    assert_eq!(&ts_bytes[257..262], b"ustar");
    let ts_entries = tar_entries(ts_bytes);
    assert!(
        ts_entries.iter().any(|e| e.name.starts_with(&format!("PG_{major}_"))),
        "PG{major}: tablespace tar lacks PG_{major}_* dir: {:?}",
        ts_entries.iter().take(5).map(|e| &e.name).collect::<Vec<_>>()
    );

    // Manifest: JSON listing the files, its WAL range starting at the backup start.
    let manifest: serde_json::Value = serde_json::from_slice(&result.manifest).expect("manifest is JSON");
    assert!(manifest.get("PostgreSQL-Backup-Manifest-Version").is_some());
    let files = manifest["Files"].as_array().expect("Files array");
    for name in ["backup_label", "tablespace_map"] {
        assert!(
            files.iter().any(|f| f["Path"] == name),
            "PG{major}: manifest lacks {name}"
        );
    }
    let wal_start: Lsn = manifest["WAL-Ranges"][0]["Start-LSN"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(wal_start, start_lsn, "PG{major}");

    // Progress: reported, monotonic, and at most the size of the archives.
    assert!(!result.progress.is_empty(), "PG{major}: no progress messages");
    assert!(result.progress.windows(2).all(|w| w[0] <= w[1]));
    let total: u64 = result.archives.values().map(|(_, b)| b.len() as u64).sum();
    let last = *result.progress.last().unwrap();
    assert!(last > 0 && last <= total, "PG{major}: progress {last} of {total}");

    // The connection is usable again.
    let id = repl.identify_system().await.unwrap();
    assert!(id.xlogpos >= end.stop_lsn);

    // Without TABLESPACE_MAP: no map, the pg_tblspc symlink instead.
    let mut stream = repl
        .base_backup(&BaseBackupOptions {
            manifest: false,
            tablespace_map: false,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("PG{major}: {e}"));
    let mut base = Vec::new();
    let mut in_base = false;
    while let Some(event) = stream.next().await.unwrap() {
        match event {
            BackupEvent::NewArchive { name, .. } => in_base = name == "base.tar",
            BackupEvent::ArchiveData(bytes) if in_base => base.extend_from_slice(&bytes),
            _ => {}
        }
    }
    stream.finish().await.unwrap();
    let entries = tar_entries(&base);
    assert!(
        !entries.iter().any(|e| e.name == "tablespace_map"),
        "PG{major}: tablespace_map sent without TABLESPACE_MAP"
    );
    let link = entries
        .iter()
        .find(|e| e.name.trim_end_matches('/') == symlink)
        .unwrap_or_else(|| panic!("PG{major}: no {symlink} without TABLESPACE_MAP"));
    assert_eq!(link.typeflag, b'2', "PG{major}: {symlink} is not a symlink");
    assert_eq!(link.linkname, ts_path, "PG{major}: {symlink} target");
    repl.close().await.unwrap();
}
