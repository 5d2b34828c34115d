//! Compose target: PostgreSQL with the archive command and the pgvault binaries mounted, the
//! pgvault scheduler as a sidecar, optional PgBouncer, health checks, secrets from `.env`, ports
//! on 127.0.0.1 unless told otherwise. Only keys of the `version: "3.8"` file format, so that
//! Debian's docker-compose 1.29 and current Docker Compose both accept the file.

use std::fmt::Write;
use std::net::IpAddr;

use super::postgres::{self, PgEndpoint, CONFIG_PATH};
use super::secrets::compose_env_keys;
use super::{prometheus, rendered, yq, Options, Rendered, Tls, METRICS_PORT};

/// Where the server reads its TLS pair inside the container (copied there, owned by postgres).
const TLS_DIR: &str = "/var/lib/postgresql/tls";
const DATA_DIR: &str = "/var/lib/postgresql/data";
const STATE_DIR: &str = "/var/lib/pgvault";

pub(super) fn render(opts: &Options) -> Vec<Rendered> {
    let tls = (opts.tls != Tls::Off).then(|| (format!("{TLS_DIR}/server.crt"), format!("{TLS_DIR}/server.key")));
    let pg = PgEndpoint {
        host: "postgres",
        user: "pgvault",
        pgdata: Some(DATA_DIR),
        sslmode: if opts.tls == Tls::Off { "prefer" } else { "require" },
    };
    let mut files = vec![
        rendered("docker-compose.yml", compose_file(opts), 0o644),
        rendered(
            "postgresql.conf",
            "# PostgreSQL configuration of the Compose stack, rendered by `pgvault deploy`.\n\
             listen_addresses = '*'\n\
             hba_file = '/etc/postgresql/pg_hba.conf'\n\
             include 'pgvault.conf'\n",
            0o644,
        ),
        rendered("pgvault.conf", postgres::include(opts, tls), 0o644),
        rendered("pg_hba.conf", postgres::hba(opts, Some("samenet"), false), 0o644),
        rendered(
            "pgvault.toml",
            postgres::pgvault_toml(opts, &pg, None, "0.0.0.0"),
            0o644,
        ),
        rendered("initdb/10-pgvault-roles.sh", postgres::roles_script(opts), 0o755),
    ];
    if opts.pgbouncer.is_some() {
        let tls = (opts.tls != Tls::Off).then_some(("/tmp/server.crt", "/tmp/server.key"));
        files.push(rendered(
            "pgbouncer.ini",
            postgres::pgbouncer_ini(opts, "postgres", "/tmp/userlist.txt", tls),
            0o644,
        ));
    }
    files.extend(prometheus::render(&["pgvault-scheduler"]));
    files
}

/// `HOST:PORT:PORT` for `ports:` (IPv6 hosts in brackets).
fn publish(bind: IpAddr, port: u16) -> String {
    match bind {
        IpAddr::V4(a) => yq(&format!("{a}:{port}:{port}")),
        IpAddr::V6(a) => yq(&format!("[{a}]:{port}:{port}")),
    }
}

/// The TLS pair's mounts (read-only, copied into place by the start script).
fn tls_mounts(opts: &Options) -> Vec<String> {
    match &opts.tls {
        Tls::Off => vec![],
        Tls::SelfSigned => vec![yq("./tls:/run/pgvault-tls:ro")],
        Tls::Files { cert, key } => vec![
            yq(&format!("{}:/run/pgvault-tls/server.crt:ro", cert.display())),
            yq(&format!("{}:/run/pgvault-tls/server.key:ro", key.display())),
        ],
    }
}

/// PostgreSQL's start: as root, give the repository volume to postgres and copy the TLS key
/// where the server accepts it (owned by postgres, 0600), then the image's own entrypoint.
fn postgres_start(opts: &Options) -> String {
    let mut s = format!("set -e; install -d -o postgres -g postgres -m 0700 {STATE_DIR}; ");
    if opts.tls != Tls::Off {
        let _ = write!(
            s,
            "install -d -o postgres -g postgres -m 0700 {TLS_DIR}; \
             install -o postgres -g postgres -m 0644 /run/pgvault-tls/server.crt {TLS_DIR}/server.crt; \
             install -o postgres -g postgres -m 0600 /run/pgvault-tls/server.key {TLS_DIR}/server.key; "
        );
    }
    s.push_str("exec docker-entrypoint.sh postgres -c config_file=/etc/postgresql/postgresql.conf");
    s
}

/// PgBouncer's start: its `auth_file` (the auth user's password, from the environment) and the
/// TLS pair in /tmp, readable only by PgBouncer's user.
fn pgbouncer_start(opts: &Options) -> String {
    let mut s = String::from(
        "set -e; umask 077; \
         printf '\"pgbouncer_auth\" \"%s\"\\n' \"$$PGBOUNCER_AUTH_PASSWORD\" > /tmp/userlist.txt; ",
    );
    if opts.tls != Tls::Off {
        s.push_str(
            "cp /run/pgvault-tls/server.crt /run/pgvault-tls/server.key /tmp/; \
             chown postgres /tmp/userlist.txt /tmp/server.crt /tmp/server.key; \
             exec pgbouncer -u postgres /etc/pgbouncer/pgbouncer.ini",
        );
    } else {
        s.push_str("exec pgbouncer /etc/pgbouncer/pgbouncer.ini");
    }
    s
}

fn healthcheck(s: &mut String, test: &[&str]) {
    let test: Vec<String> = test.iter().map(|t| yq(t)).collect();
    let _ = write!(
        s,
        "    healthcheck:\n      test: [{}]\n      interval: 10s\n      timeout: 5s\n      retries: 5\n      \
         start_period: 30s\n",
        test.join(", ")
    );
}

fn list(s: &mut String, key: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    let _ = writeln!(s, "    {key}:");
    for i in items {
        let _ = writeln!(s, "      - {i}");
    }
}

fn env(s: &mut String, keys: &[&str]) {
    s.push_str("    environment:\n");
    for (name, var) in keys.iter().map(|k| k.split_once('=').unwrap_or((k, k))) {
        let _ = writeln!(
            s,
            "      {name}: {}",
            yq(&format!("${{{var}:?run pgvault deploy to create .env}}"))
        );
    }
}

fn compose_file(opts: &Options) -> String {
    let bin = |name: &str| {
        yq(&format!(
            "{}:/usr/local/bin/{name}:ro",
            opts.bin_dir.join(name).display()
        ))
    };
    let mut s = String::from(
        "# Docker Compose stack rendered by `pgvault deploy` (works with docker-compose 1.29 and\n\
         # Docker Compose v2). Secrets come from .env (generated once, mode 0600, never overwritten).\n\
         # Start: docker-compose up -d   (see docs/DEPLOY.md)\n\
         version: \"3.8\"\n\nservices:\n",
    );
    // PostgreSQL.
    let _ = writeln!(
        s,
        "  postgres:\n    image: {}\n    restart: unless-stopped",
        yq(&opts.images.postgres)
    );
    let _ = writeln!(
        s,
        "    entrypoint: [\"/bin/sh\", \"-c\"]\n    command: [{}]",
        yq(&postgres_start(opts))
    );
    env(&mut s, &compose_env_keys(opts));
    let mut vols = vec![
        yq(&format!("pgdata:{DATA_DIR}")),
        yq(&format!("pgvault-repository:{STATE_DIR}")),
        yq("./postgresql.conf:/etc/postgresql/postgresql.conf:ro"),
        yq("./pgvault.conf:/etc/postgresql/pgvault.conf:ro"),
        yq("./pg_hba.conf:/etc/postgresql/pg_hba.conf:ro"),
        yq(&format!("./pgvault.toml:{CONFIG_PATH}:ro")),
        yq("./initdb:/docker-entrypoint-initdb.d:ro"),
        bin("pgvault-archive"),
    ];
    vols.extend(tls_mounts(opts));
    list(&mut s, "volumes", &vols);
    let pg_bind = if opts.pgbouncer.is_some() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        opts.bind
    };
    list(&mut s, "ports", &[publish(pg_bind, 5432)]);
    list(&mut s, "networks", &["backend".into()]);
    healthcheck(
        &mut s,
        &["CMD", "pg_isready", "-h", "127.0.0.1", "-p", "5432", "-U", "postgres"],
    );
    // Docker's default 64MB /dev/shm is too small for parallel queries.
    s.push_str("    shm_size: \"256m\"\n    stop_grace_period: 1m\n\n");
    if opts.pgbouncer.is_some() {
        pgbouncer_service(&mut s, opts);
    }
    // The scheduler sidecar: the PostgreSQL image (its client tools serve drills) + pgvault.
    let _ = writeln!(
        s,
        "  pgvault-scheduler:\n    image: {}\n    restart: unless-stopped\n    user: postgres\n    \
         entrypoint: [\"pgvault\"]\n    command: [\"--config\", {}, \"schedule\"]",
        yq(&opts.images.postgres),
        yq(CONFIG_PATH)
    );
    env(&mut s, &["PGPASSWORD=PGVAULT_DB_PASSWORD", "PGVAULT_PASSPHRASE"]);
    let mut vols = vec![
        yq(&format!("pgvault-repository:{STATE_DIR}")),
        yq(&format!("./pgvault.toml:{CONFIG_PATH}:ro")),
        bin("pgvault"),
        bin("pgvault-archive"),
    ];
    vols.sort();
    list(&mut s, "volumes", &vols);
    list(&mut s, "ports", &[publish(IpAddr::from([127, 0, 0, 1]), METRICS_PORT)]);
    let mut nets = vec!["backend".to_string()];
    if opts.monitoring_network {
        nets.push("monitoring".into());
    }
    list(&mut s, "networks", &nets);
    s.push_str("    depends_on:\n      - postgres\n");
    let probe = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{METRICS_PORT} && printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q pgvault_ <&3"
    );
    healthcheck(&mut s, &["CMD", "bash", "-c", &probe]);
    s.push_str("\nvolumes:\n  pgdata: {}\n  pgvault-repository: {}\n\nnetworks:\n  backend:\n    driver: bridge\n");
    if opts.monitoring_network {
        s.push_str("  monitoring:\n    external: true\n    name: monitoring\n");
    }
    s
}

fn pgbouncer_service(s: &mut String, opts: &Options) {
    let _ = writeln!(
        s,
        "  pgbouncer:\n    image: {}\n    restart: unless-stopped",
        yq(&opts.images.pgbouncer)
    );
    if opts.tls != Tls::Off {
        s.push_str("    user: root\n");
    }
    let _ = writeln!(
        s,
        "    entrypoint: [\"/bin/sh\", \"-c\"]\n    command: [{}]",
        yq(&pgbouncer_start(opts))
    );
    env(s, &["PGBOUNCER_AUTH_PASSWORD"]);
    let mut vols = vec![yq("./pgbouncer.ini:/etc/pgbouncer/pgbouncer.ini:ro")];
    vols.extend(tls_mounts(opts));
    list(s, "volumes", &vols);
    list(s, "ports", &[publish(opts.bind, 6432)]);
    list(s, "networks", &["backend".into()]);
    s.push_str("    depends_on:\n      - postgres\n");
    healthcheck(s, &["CMD", "nc", "-z", "127.0.0.1", "6432"]);
    s.push('\n');
}
