//! systemd target: the scheduler as a hardened long-running service, or (one or the other) one
//! timer per job; the PostgreSQL include, `pg_hba.conf`, `pgvault.toml` and the Prometheus files
//! for a host installation.

use std::fmt::Write;

use super::postgres::{self, PgEndpoint, CONFIG_PATH};
use super::{prometheus, rendered, Options, Rendered, JOBS};

/// Where the self-signed pair is installed on the host.
const TLS_DIR: &str = "/etc/postgresql/tls";
/// The scheduler's state and (for `file://` repositories) default repository location.
const STATE_DIR: &str = "/var/lib/pgvault";

pub(super) fn render(opts: &Options) -> Vec<Rendered> {
    let tls = postgres::tls_paths(opts, TLS_DIR);
    let pgdata = format!("/var/lib/postgresql/{}/main", opts.pg_version);
    let pg = PgEndpoint {
        host: "/var/run/postgresql",
        user: "postgres",
        pgdata: Some(&pgdata),
        sslmode: "prefer",
    };
    let mut files = vec![
        rendered("pgvault.conf", postgres::include(opts, tls), 0o644),
        rendered("pg_hba.conf", postgres::hba(opts, None, false), 0o644),
        rendered(
            "pgvault.toml",
            postgres::pgvault_toml(opts, &pg, Some("/etc/pgvault/pgvault-passphrase"), "127.0.0.1"),
            0o644,
        ),
        rendered("pgvault-schedule.service", schedule_service(opts), 0o644),
    ];
    for job in &JOBS {
        files.push(rendered(
            format!("pgvault-{}.service", job.name),
            job_service(opts, job),
            0o644,
        ));
        files.push(rendered(format!("pgvault-{}.timer", job.name), job_timer(job), 0o644));
    }
    if opts.pgbouncer.is_some() {
        let tls = postgres::tls_paths(opts, TLS_DIR);
        let tls = tls.as_ref().map(|(c, k)| (c.as_str(), k.as_str()));
        files.push(rendered(
            "pgbouncer.ini",
            postgres::pgbouncer_ini(opts, "127.0.0.1", "/etc/pgbouncer/userlist.txt", tls),
            0o644,
        ));
    }
    files.extend(prometheus::render(&["127.0.0.1"]));
    files
}

/// The paths the services may write: the state directory and a `file://` repository.
fn read_write_paths(opts: &Options) -> String {
    let mut paths = vec![STATE_DIR.to_string()];
    if let Some(p) = opts.repository.strip_prefix("file://") {
        if !p.starts_with(&format!("{STATE_DIR}/")) && p != STATE_DIR {
            paths.push(p.to_string());
        }
    }
    paths.join(" ")
}

/// The sandboxing every pgvault service gets.
fn hardening(opts: &Options) -> String {
    format!(
        "User=postgres\n\
         Group=postgres\n\
         Environment=PGVAULT_CONFIG={CONFIG_PATH}\n\
         NoNewPrivileges=yes\n\
         ProtectSystem=strict\n\
         ReadWritePaths={}\n\
         ProtectHome=yes\n\
         PrivateTmp=yes\n\
         PrivateDevices=yes\n\
         ProtectKernelTunables=yes\n\
         ProtectKernelModules=yes\n\
         ProtectKernelLogs=yes\n\
         ProtectControlGroups=yes\n\
         ProtectClock=yes\n\
         ProtectHostname=yes\n\
         RestrictSUIDSGID=yes\n\
         RestrictRealtime=yes\n\
         RestrictNamespaces=yes\n\
         LockPersonality=yes\n\
         RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n\
         CapabilityBoundingSet=\n\
         UMask=0077\n",
        read_write_paths(opts)
    )
}

fn pgvault_bin(opts: &Options) -> String {
    opts.bin_dir.join("pgvault").display().to_string()
}

fn schedule_service(opts: &Options) -> String {
    format!(
        "# The pgvault scheduler: backups, expire, verify and drills on the [schedule] of\n\
         # {CONFIG_PATH}, metrics on [metrics] listen. Use this OR the pgvault-*.timer units,\n\
         # not both (the timers conflict with this service).\n\
         [Unit]\n\
         Description=pgvault scheduler (backups, retention, verification, restore drills)\n\
         Wants=network-online.target\n\
         After=network-online.target postgresql.service\n\n\
         [Service]\n\
         Type=simple\n\
         ExecStart={} --config {CONFIG_PATH} schedule\n\
         Restart=on-failure\n\
         RestartSec=30s\n\
         {}\n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        pgvault_bin(opts),
        hardening(opts)
    )
}

fn job_service(opts: &Options, job: &super::Job) -> String {
    format!(
        "# pgvault {name}, started by pgvault-{name}.timer (alternative to pgvault-schedule.service).\n\
         [Unit]\n\
         Description=pgvault {name}: {what}\n\
         Wants=network-online.target\n\
         After=network-online.target postgresql.service\n\n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart={bin} --config {CONFIG_PATH} {args}\n\
         {hardening}",
        name = job.name,
        what = job.what,
        bin = pgvault_bin(opts),
        args = job.args.join(" "),
        hardening = hardening(opts),
    )
}

fn job_timer(job: &super::Job) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "# Runs pgvault-{name}.service at {cal}. Enable the timers OR pgvault-schedule.service.\n\
         [Unit]\n\
         Description=pgvault {name} ({cal})\n\
         Conflicts=pgvault-schedule.service\n\n\
         [Timer]\n\
         OnCalendar={cal}\n\
         Persistent=true\n\
         Unit=pgvault-{name}.service\n\n\
         [Install]\n\
         WantedBy=timers.target\n",
        name = job.name,
        cal = job.calendar,
    );
    s
}
