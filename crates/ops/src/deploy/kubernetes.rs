//! Kubernetes target: the scheduler as a Deployment (default) or one CronJob per job, never
//! both; pgvault.toml and the PostgreSQL include in a ConfigMap; credentials in a Secret; a
//! NetworkPolicy that lets in only the scrape and lets out only the database, DNS and HTTPS (the
//! object store); non-root pods with a read-only root file system.

use std::fmt::Write;

use super::postgres::{self, PgEndpoint, CONFIG_PATH};
use super::{prometheus, rendered, yq, K8sJobs, Options, Rendered, Tls, JOBS, METRICS_PORT};

/// The PostgreSQL Service the scheduler connects to and the label of its pods.
pub(super) const DB_SERVICE: &str = "postgresql";
const STATE_DIR: &str = "/var/lib/pgvault";
/// The postgres user of the official image (the pgvault image is built on it).
const UID: u32 = 999;

pub(super) fn render(opts: &Options) -> Vec<Rendered> {
    let mut files = vec![
        rendered("pgvault-config.yaml", config_map(opts), 0o644),
        rendered("pgvault-networkpolicy.yaml", network_policy(opts), 0o644),
        rendered("Dockerfile", dockerfile(opts), 0o644),
    ];
    match opts.k8s_jobs {
        K8sJobs::Deployment => {
            files.push(rendered("pgvault-scheduler.yaml", scheduler(opts), 0o644));
            files.extend(prometheus::render(&["pgvault-scheduler"]));
        }
        K8sJobs::CronJob => files.push(rendered("pgvault-cronjobs.yaml", cronjobs(opts), 0o644)),
    }
    if file_repository(opts) {
        files.push(rendered("pgvault-repository-pvc.yaml", pvc(), 0o644));
    }
    files
}

fn file_repository(opts: &Options) -> bool {
    opts.repository.starts_with("file://") || opts.repository.starts_with('/')
}

const LABELS: &str =
    "  labels:\n    app.kubernetes.io/name: pgvault\n    app.kubernetes.io/managed-by: pgvault-deploy\n";

/// Indents every line of `text` by `n` spaces (for block scalars).
fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines()
        .map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{pad}{l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn config_map(opts: &Options) -> String {
    let sslmode = if opts.tls == Tls::Off { "prefer" } else { "require" };
    let pg = PgEndpoint {
        host: DB_SERVICE,
        user: "pgvault",
        pgdata: Some("/var/lib/postgresql/data"),
        sslmode,
    };
    let tls = postgres::tls_paths(opts, "/etc/postgresql/tls").map(|_| {
        (
            "/etc/postgresql/tls/tls.crt".to_string(),
            "/etc/postgresql/tls/tls.key".to_string(),
        )
    });
    format!(
        "# pgvault.toml for the scheduler, and the PostgreSQL include and pg_hba.conf for the\n\
         # database pods (mount pgvault.conf and include it; see docs/DEPLOY.md).\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: pgvault-config\n{LABELS}data:\n  pgvault.toml: |\n{}  \
         pgvault.conf: |\n{}  pg_hba.conf: |\n{}",
        indent(&postgres::pgvault_toml(opts, &pg, None, "0.0.0.0"), 4),
        indent(&postgres::include(opts, tls), 4),
        indent(&postgres::hba(opts, None, true), 4),
    )
}

/// The Secret with the database password and the repository passphrase (a secret file).
pub(super) fn secret(db_password: &str, passphrase: &str) -> String {
    format!(
        "# Generated once by `pgvault deploy`, never overwritten. PGVAULT_PASSPHRASE encrypts the\n\
         # repository: keep a copy outside the cluster. Add the object store's credentials here\n\
         # (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, GOOGLE_SERVICE_ACCOUNT, AZURE_STORAGE_ACCOUNT_KEY).\n\
         apiVersion: v1\nkind: Secret\nmetadata:\n  name: pgvault-secret\n{LABELS}type: Opaque\nstringData:\n  \
         PGPASSWORD: {}\n  PGVAULT_PASSPHRASE: {}\n",
        yq(db_password),
        yq(passphrase)
    )
}

/// The TLS Secret for the database pods (a secret file).
pub(super) fn tls_secret(cert: &str, key: &str) -> String {
    format!(
        "# The PostgreSQL server's TLS pair, generated once by `pgvault deploy` (mount it at\n\
         # /etc/postgresql/tls with defaultMode 0600). Replace a self-signed pair with a real one.\n\
         apiVersion: v1\nkind: Secret\nmetadata:\n  name: pgvault-postgres-tls\n{LABELS}type: kubernetes.io/tls\n\
         stringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(cert, 4),
        indent(key, 4)
    )
}

fn dockerfile(opts: &Options) -> String {
    format!(
        "# The pgvault image: PostgreSQL's (its client tools serve restore drills) plus pgvault.\n\
         # Build beside the binaries: cp /usr/local/bin/pgvault* . && docker build -t {img} .\n\
         FROM {pg}\n\
         COPY pgvault pgvault-archive /usr/local/bin/\n\
         USER {UID}:{UID}\n\
         ENTRYPOINT [\"pgvault\"]\n",
        img = opts.images.pgvault,
        pg = opts.images.postgres
    )
}

/// The pod spec (indented for a Deployment's template; CronJobs indent it further).
fn pod_spec(opts: &Options, args: &[&str], serve_metrics: bool, restart: &str) -> String {
    let mut s = format!(
        "automountServiceAccountToken: false\nrestartPolicy: {restart}\nsecurityContext:\n  runAsNonRoot: true\n  \
         runAsUser: {UID}\n  runAsGroup: {UID}\n  fsGroup: {UID}\n  seccompProfile:\n    type: RuntimeDefault\n\
         containers:\n  - name: pgvault\n    image: {}\n    command: [\"pgvault\"]\n    args: [{}]\n    \
         envFrom:\n      - secretRef:\n          name: pgvault-secret\n",
        yq(&opts.images.pgvault),
        ["--config", CONFIG_PATH]
            .iter()
            .chain(args)
            .map(|a| yq(a))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if serve_metrics {
        let _ = write!(
            s,
            "    ports:\n      - name: metrics\n        containerPort: {METRICS_PORT}\n    \
             readinessProbe:\n      httpGet:\n        path: /metrics\n        port: metrics\n      periodSeconds: 30\n    \
             livenessProbe:\n      httpGet:\n        path: /metrics\n        port: metrics\n      \
             initialDelaySeconds: 30\n      periodSeconds: 60\n"
        );
    }
    s.push_str(
        "    resources:\n      requests:\n        cpu: 100m\n        memory: 256Mi\n      limits:\n        memory: 2Gi\n    \
         securityContext:\n      allowPrivilegeEscalation: false\n      readOnlyRootFilesystem: true\n      \
         capabilities:\n        drop: [\"ALL\"]\n    volumeMounts:\n      - name: config\n        mountPath: /etc/pgvault\n        \
         readOnly: true\n      - name: tmp\n        mountPath: /tmp\n",
    );
    let repo = file_repository(opts);
    if repo {
        let _ = writeln!(s, "      - name: repository\n        mountPath: {STATE_DIR}");
    }
    s.push_str(
        "volumes:\n  - name: config\n    configMap:\n      name: pgvault-config\n      items:\n        \
         - key: pgvault.toml\n          path: pgvault.toml\n  - name: tmp\n    emptyDir: {}\n",
    );
    if repo {
        s.push_str("  - name: repository\n    persistentVolumeClaim:\n      claimName: pgvault-repository\n");
    }
    s
}

fn scheduler(opts: &Options) -> String {
    format!(
        "# The pgvault scheduler (backups, expire, verify, drills on [schedule]; /metrics for Prometheus).\n\
         # One replica only: the repository lock also refuses a second one.\n\
         apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: pgvault-scheduler\n{LABELS}spec:\n  replicas: 1\n  \
         strategy:\n    type: Recreate\n  selector:\n    matchLabels:\n      app.kubernetes.io/name: pgvault\n  \
         template:\n    metadata:\n      labels:\n        app.kubernetes.io/name: pgvault\n    spec:\n{}---\n\
         apiVersion: v1\nkind: Service\nmetadata:\n  name: pgvault-scheduler\n{LABELS}spec:\n  selector:\n    \
         app.kubernetes.io/name: pgvault\n  ports:\n    - name: metrics\n      port: {METRICS_PORT}\n      \
         targetPort: metrics\n",
        indent(&pod_spec(opts, &["schedule"], true, "Always"), 6)
    )
}

fn cronjobs(opts: &Options) -> String {
    let mut s = String::from("# pgvault's jobs as CronJobs (instead of the scheduler Deployment; never both).\n");
    for (i, job) in JOBS.iter().enumerate() {
        if i > 0 {
            s.push_str("---\n");
        }
        let _ = write!(
            s,
            "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: pgvault-{name}\n{LABELS}spec:\n  \
             schedule: {cron}\n  timeZone: \"Etc/UTC\"\n  concurrencyPolicy: Forbid\n  \
             successfulJobsHistoryLimit: 3\n  failedJobsHistoryLimit: 3\n  jobTemplate:\n    spec:\n      \
             backoffLimit: 1\n      template:\n        metadata:\n          labels:\n            \
             app.kubernetes.io/name: pgvault\n        spec:\n{pod}",
            name = job.name,
            cron = yq(job.cron),
            pod = indent(&pod_spec(opts, job.args, false, "Never"), 10)
        );
    }
    s
}

fn network_policy(opts: &Options) -> String {
    let ingress = match opts.k8s_jobs {
        K8sJobs::Deployment => format!(
            "  ingress:\n    - from:\n        - namespaceSelector: {{}}\n          podSelector:\n            \
             matchLabels:\n              app.kubernetes.io/name: prometheus\n      ports:\n        \
             - protocol: TCP\n          port: {METRICS_PORT}\n"
        ),
        K8sJobs::CronJob => "  ingress: []\n".to_string(),
    };
    format!(
        "# Only Prometheus may reach the scheduler (metrics); pgvault may reach only PostgreSQL,\n\
         # DNS and HTTPS (the object store).\n\
         apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: pgvault\n{LABELS}spec:\n  \
         podSelector:\n    matchLabels:\n      app.kubernetes.io/name: pgvault\n  policyTypes:\n    - Ingress\n    \
         - Egress\n{ingress}  egress:\n    - to:\n        - podSelector:\n            matchLabels:\n              \
         app.kubernetes.io/name: {DB_SERVICE}\n      ports:\n        - protocol: TCP\n          port: 5432\n    \
         - ports:\n        - protocol: UDP\n          port: 53\n        - protocol: TCP\n          port: 53\n    \
         - ports:\n        - protocol: TCP\n          port: 443\n"
    )
}

fn pvc() -> String {
    format!(
        "# A file:// repository must be shared with the database pods (archive_command writes it):\n\
         # ReadWriteMany. An object store (s3://, gs://, az://) needs no volume.\n\
         apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: pgvault-repository\n{LABELS}spec:\n  \
         accessModes:\n    - ReadWriteMany\n  resources:\n    requests:\n      storage: 100Gi\n"
    )
}
