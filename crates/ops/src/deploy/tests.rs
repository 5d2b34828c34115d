//! Unit tests of the renderers, the secret handling and the plan.

use std::path::Path;

use super::*;

/// Counts what it hands out, so that tests see when a secret was (not) generated.
struct Counting(u32);

impl SecretSource for Counting {
    fn password(&mut self) -> String {
        self.0 += 1;
        format!("pw{:030}", self.0)
    }
    fn self_signed(&mut self, _names: &[&str]) -> Result<(String, String), DeployError> {
        self.0 += 1;
        Ok((format!("CERT {}\n", self.0), format!("KEY {}\n", self.0)))
    }
}

fn all() -> Options {
    Options::new(Target::ALL.to_vec())
}

fn contents<'a>(plan: &'a Plan, path: &str) -> &'a str {
    let f = plan
        .files
        .iter()
        .find(|f| f.path == Path::new(path))
        .unwrap_or_else(|| panic!("{path} not planned: {:?}", plan.files));
    std::str::from_utf8(&f.contents).expect("utf-8")
}

#[test]
fn cidrs_are_checked() {
    assert_eq!(Cidr::parse("10.0.0.0/8").expect("ok").as_str(), "10.0.0.0/8");
    assert_eq!(Cidr::parse("2001:db8::/32").expect("ok").as_str(), "2001:db8::/32");
    for bad in [
        "10.0.0.1/8",
        "10.0.0.0",
        "10.0.0.0/33",
        "0.0.0.0/0",
        "host/8",
        "10.0.0.0/x",
    ] {
        assert!(Cidr::parse(bad).is_err(), "{bad} accepted");
    }
}

#[test]
fn archive_timeout_is_half_the_rpo_and_at_least_a_minute() {
    assert_eq!(archive_timeout(Duration::from_secs(300)), Duration::from_secs(150));
    assert_eq!(archive_timeout(Duration::from_secs(60)), Duration::from_secs(60));
    assert_eq!(archive_timeout(Duration::from_secs(3600)), Duration::from_secs(1800));
}

#[test]
fn the_include_archives_with_pgvault_and_keeps_tunes_archive_settings_out() {
    let mut opts = all();
    opts.tuning = vec![
        crate::tune::Recommendation {
            name: "shared_buffers",
            value: "8GB".into(),
            reason: "a quarter of RAM".into(),
            reference: "pgtune",
            typed: crate::tune::Typed::Bytes(8 << 30),
            restart: true,
            at_least: false,
        },
        crate::tune::Recommendation {
            name: "archive_timeout",
            value: "'1min'".into(),
            reason: "x".into(),
            reference: "x",
            typed: crate::tune::Typed::Millis(60_000),
            restart: false,
            at_least: false,
        },
    ];
    let inc = postgres::include(&opts, None);
    assert!(inc.contains("archive_mode = on\n"), "{inc}");
    assert!(inc.contains("archive_command = 'pgvault-archive --config /etc/pgvault/pgvault.toml push %p'\n"));
    assert!(inc.contains("archive_timeout = '150s'\n"), "{inc}");
    assert!(inc.contains("wal_level = replica\n"));
    assert!(inc.contains("# a quarter of RAM\nshared_buffers = 8GB\n"), "{inc}");
    assert_eq!(inc.matches("archive_timeout =").count(), 1, "{inc}");
    assert!(!inc.contains("ssl = on"));
}

#[test]
fn hba_has_no_trust_and_limits_to_the_given_networks() {
    let mut opts = all();
    opts.allow_cidrs = vec![Cidr::parse("10.0.0.0/8").expect("cidr")];
    let hba = postgres::hba(&opts, None, false);
    assert!(
        !hba.contains("trust") && !hba.contains("md5") && !hba.contains("0.0.0.0/0"),
        "{hba}"
    );
    assert!(
        hba.contains("host     all          all       10.0.0.0/8       scram-sha-256"),
        "{hba}"
    );
    opts.tls = Tls::SelfSigned;
    assert!(postgres::hba(&opts, None, false).contains("hostssl  all          all       10.0.0.0/8"));
    assert!(!postgres::hba(&opts, None, false).contains("replication  pgvault   10.0.0.0/8"));
    assert!(postgres::hba(&opts, None, true).contains("hostssl  replication  pgvault   10.0.0.0/8"));
}

#[test]
fn pgvault_toml_parses_as_a_configuration_with_its_schedule_and_metrics() {
    let opts = all();
    let pg = postgres::PgEndpoint {
        host: "/var/run/postgresql",
        user: "postgres",
        pgdata: Some("/var/lib/postgresql/17/main"),
        sslmode: "prefer",
    };
    let text = postgres::pgvault_toml(&opts, &pg, None, "127.0.0.1");
    assert!(text.contains("[schedule]\nbackup = \"0 2 * * *\"\n"), "{text}");
    assert!(text.contains("[metrics]\nlisten = \"127.0.0.1:9856\"\n"), "{text}");
    let config = pgvault_core::config::Config::parse(&text, Path::new("/etc/pgvault/pgvault.toml"))
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    let jobs = config
        .schedule
        .jobs()
        .unwrap_or_else(|(key, why)| panic!("{key}: {why}"));
    assert_eq!(jobs.len(), 4, "backup, expire, verify and drill are scheduled");
    assert!(
        config.metrics.listen_addr().is_ok_and(|a| a.is_some()),
        "metrics served"
    );
}

#[test]
fn rendering_is_deterministic_and_secrets_are_separate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = all();
    opts.pgbouncer = Some(PoolMode::Transaction);
    opts.tls = Tls::SelfSigned;
    let a = plan(&opts, dir.path(), &mut Counting(0)).expect("plan");
    let b = plan(&opts, dir.path(), &mut Counting(100)).expect("plan");
    for (x, y) in a.files.iter().zip(&b.files) {
        assert_eq!(x.path, y.path);
        if x.kind == FileKind::Generated {
            assert_eq!(x.contents, y.contents, "{} differs", x.path.display());
            assert!(
                !String::from_utf8_lossy(&x.contents).contains("pw0"),
                "{} holds a secret",
                x.path.display()
            );
        } else {
            assert_ne!(x.contents, y.contents, "{} is not generated", x.path.display());
        }
    }
    let secrets: Vec<_> = a
        .files
        .iter()
        .filter(|f| f.kind == FileKind::Secret)
        .map(|f| f.path.clone())
        .collect();
    let names: Vec<_> = secrets.iter().map(|p| p.display().to_string()).collect();
    assert_eq!(
        names,
        [
            "compose/.env",
            "compose/tls/server.crt",
            "compose/tls/server.key",
            "systemd/pgvault-passphrase",
            "systemd/tls/server.crt",
            "systemd/tls/server.key",
            "kubernetes/pgvault-secret.yaml",
            "kubernetes/tls-secret.yaml"
        ]
    );
}

#[test]
fn execute_writes_then_keeps_secrets_and_extends_env() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = Options::new(vec![Target::Compose]);
    let mut src = Counting(0);
    execute(&plan(&opts, dir.path(), &mut src).expect("plan")).expect("execute");
    let env_path = dir.path().join("compose/.env");
    let env1 = std::fs::read_to_string(&env_path).expect(".env");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&env_path).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let again = plan(&opts, dir.path(), &mut src).expect("plan");
    assert!(
        again
            .files
            .iter()
            .all(|f| matches!(f.action, Action::Unchanged | Action::Keep)),
        "{again:?}"
    );
    let calls = src.0;
    // PgBouncer needs one more key: appended, the others kept byte for byte.
    let mut more = opts.clone();
    more.pgbouncer = Some(PoolMode::Session);
    let p = plan(&more, dir.path(), &mut src).expect("plan");
    assert_eq!(src.0, calls + 1);
    execute(&p).expect("execute");
    let env2 = std::fs::read_to_string(&env_path).expect(".env");
    assert!(
        env2.starts_with(&env1) && env2.contains("PGBOUNCER_AUTH_PASSWORD="),
        "{env2}"
    );
    assert!(contents(&p, "compose/pgbouncer.ini").contains("pool_mode = session\n"));
}

#[test]
fn kubernetes_runs_a_deployment_or_cronjobs_never_both() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = Options::new(vec![Target::Kubernetes]);
    let p = plan(&opts, dir.path(), &mut Counting(0)).expect("plan");
    assert!(contents(&p, "kubernetes/pgvault-scheduler.yaml").contains("kind: Deployment"));
    assert!(!p.files.iter().any(|f| f.path.ends_with("pgvault-cronjobs.yaml")));
    opts.k8s_jobs = K8sJobs::CronJob;
    let p = plan(&opts, dir.path(), &mut Counting(0)).expect("plan");
    assert_eq!(
        contents(&p, "kubernetes/pgvault-cronjobs.yaml")
            .matches("kind: CronJob")
            .count(),
        4
    );
    assert!(!p
        .files
        .iter()
        .any(|f| String::from_utf8_lossy(&f.contents).contains("kind: Deployment")));
}

#[test]
fn compose_publishes_on_localhost_by_default() {
    let text = compose::render(&Options::new(vec![Target::Compose]))
        .into_iter()
        .find(|r| r.path == Path::new("docker-compose.yml"))
        .expect("compose file");
    let text = String::from_utf8(text.contents).expect("utf-8");
    for line in text
        .lines()
        .filter(|l| l.trim_start().starts_with("- \"") && l.contains(":5432:"))
    {
        assert!(line.contains("127.0.0.1:5432:5432"), "{line}");
    }
    assert!(text.contains("version: \"3.8\""));
    assert!(!text.contains("!reset") && !text.contains("condition:"));
}

#[test]
fn options_are_validated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = all();
    opts.rpo = Duration::from_secs(10);
    assert!(matches!(
        plan(&opts, dir.path(), &mut Counting(0)),
        Err(DeployError::InvalidOption { option: "--rpo", .. })
    ));
    let mut opts = all();
    opts.images.postgres = "postgres:17 ; rm".into();
    assert!(plan(&opts, dir.path(), &mut Counting(0)).is_err());
}
