//! `pgvault deploy`: ready-to-use deployment artifacts (systemd units, a Docker Compose stack,
//! Kubernetes manifests, a Prometheus scrape config and alert rules) with continuous archiving and
//! the pgvault scheduler wired in.
//!
//! The reviewed production set-ups all had to assemble this by hand and kept missing pieces
//! (archiving, TLS, tight `pg_hba.conf`, monitoring, strong passwords). This module renders them
//! from one set of [`Options`], split into a [`plan`] (what would be written, kept or left alone:
//! `--dry-run` prints it) and [`execute`] (atomic writes).
//!
//! Determinism: every generated file is a pure function of the options, byte for byte. Secrets
//! (passwords, the repository passphrase, a self-signed TLS pair) live in their own files
//! (`.env`, `pgvault-passphrase`, `pgvault-secret.yaml`, `tls/…`), are generated only when absent
//! and are never overwritten; generated files only refer to them by name.

mod compose;
mod fsio;
mod kubernetes;
mod postgres;
mod prometheus;
mod secrets;
mod systemd;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::tune::Recommendation;

pub use secrets::{OsSecrets, SecretSource};

/// What can go wrong planning or writing a deployment.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("invalid option {option}: {message}")]
    InvalidOption { option: &'static str, message: String },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    BadExisting { path: PathBuf, message: String },
    #[error("cannot generate the self-signed TLS pair: {0}")]
    Certificate(String),
}

/// Where the artifacts are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Compose,
    Systemd,
    Kubernetes,
}

impl Target {
    /// Every target, in the order `all` renders them.
    pub const ALL: [Target; 3] = [Target::Compose, Target::Systemd, Target::Kubernetes];

    /// The sub-directory of `--out` the target's files go to.
    pub fn dir(self) -> &'static str {
        match self {
            Target::Compose => "compose",
            Target::Systemd => "systemd",
            Target::Kubernetes => "kubernetes",
        }
    }
}

/// How Kubernetes runs the scheduled jobs: one scheduler Deployment, or one CronJob per job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum K8sJobs {
    #[default]
    Deployment,
    CronJob,
}

/// PgBouncer's pool mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolMode {
    Transaction,
    Session,
}

impl PoolMode {
    fn as_str(self) -> &'static str {
        match self {
            PoolMode::Transaction => "transaction",
            PoolMode::Session => "session",
        }
    }
}

/// TLS for client connections.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Tls {
    #[default]
    Off,
    /// The operator's certificate and key (absolute paths, PEM).
    Files { cert: PathBuf, key: PathBuf },
    /// A generated self-signed pair, for a first start (replace it with a real one).
    SelfSigned,
}

/// Container images.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Images {
    pub postgres: String,
    pub pgbouncer: String,
    /// The image the scheduler (Compose sidecar, Kubernetes) runs: PostgreSQL's image plus the
    /// pgvault binaries (`kubernetes/Dockerfile` builds it).
    pub pgvault: String,
}

impl Images {
    /// The defaults for PostgreSQL major `pg_version`.
    pub fn defaults(pg_version: u32) -> Images {
        Images {
            postgres: format!("postgres:{pg_version}"),
            pgbouncer: "edoburu/pgbouncer:latest".into(),
            pgvault: format!("pgvault:{}-pg{pg_version}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// A client address range for `pg_hba.conf` (`10.0.0.0/8`, `2001:db8::/32`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cidr(String);

impl Cidr {
    /// Parses `ADDR/BITS`; the address must have no bits set beyond the prefix.
    pub fn parse(text: &str) -> Result<Cidr, DeployError> {
        let bad = |message: String| DeployError::InvalidOption {
            option: "--allow-cidr",
            message,
        };
        let (addr, bits) = text
            .split_once('/')
            .ok_or_else(|| bad(format!("{text:?} is not ADDRESS/PREFIX (e.g. 10.0.0.0/8)")))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| bad(format!("{addr:?} is not an IP address")))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits: u32 = bits
            .parse()
            .ok()
            .filter(|b| *b <= max)
            .ok_or_else(|| bad(format!("prefix {bits:?} must be 0..={max}")))?;
        let host_bits = max - bits;
        let value: u128 = match addr {
            IpAddr::V4(a) => u32::from(a).into(),
            IpAddr::V6(a) => a.into(),
        };
        if host_bits > 0 && value & ((1u128 << host_bits) - 1) != 0 {
            return Err(bad(format!(
                "{text} has host bits set (did you mean the network address?)"
            )));
        }
        if bits == 0 {
            return Err(bad(format!(
                "{text} allows every address; name the networks clients come from"
            )));
        }
        Ok(Cidr(format!("{addr}/{bits}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Everything a deployment depends on.
#[derive(Clone, Debug)]
pub struct Options {
    pub targets: Vec<Target>,
    pub pg_version: u32,
    pub k8s_jobs: K8sJobs,
    pub pgbouncer: Option<PoolMode>,
    pub tls: Tls,
    pub allow_cidrs: Vec<Cidr>,
    /// The host address Compose publishes ports on (default `127.0.0.1`).
    pub bind: IpAddr,
    /// Compose: the scheduler also joins an external `monitoring` network for scraping.
    pub monitoring_network: bool,
    pub images: Images,
    /// `[repository] url` of the rendered pgvault.toml.
    pub repository: String,
    /// Recovery-point objective: `archive_timeout` and `[objectives] rpo`.
    pub rpo: Duration,
    /// `tune`'s recommendations (when `--memory/--cpus` were given), appended to the include.
    pub tuning: Vec<Recommendation>,
    /// Where `pgvault`/`pgvault-archive` are installed on hosts (systemd `ExecStart`, Compose mounts).
    pub bin_dir: PathBuf,
}

impl Options {
    /// The defaults for `targets`: PostgreSQL 17, no PgBouncer, no TLS, RPO 5min.
    pub fn new(targets: Vec<Target>) -> Options {
        Options {
            targets,
            pg_version: 17,
            k8s_jobs: K8sJobs::Deployment,
            pgbouncer: None,
            tls: Tls::Off,
            allow_cidrs: Vec::new(),
            bind: IpAddr::from([127, 0, 0, 1]),
            monitoring_network: false,
            images: Images::defaults(17),
            repository: DEFAULT_REPOSITORY.into(),
            rpo: Duration::from_secs(300),
            tuning: Vec::new(),
            bin_dir: PathBuf::from("/usr/local/bin"),
        }
    }

    fn check(&self) -> Result<(), DeployError> {
        let bad = |option, message: &str| {
            Err(DeployError::InvalidOption {
                option,
                message: message.into(),
            })
        };
        if !(12..=30).contains(&self.pg_version) {
            return bad("--pg-version", "must be a PostgreSQL major version (e.g. 17)");
        }
        if self.rpo < Duration::from_secs(60) {
            return bad(
                "--rpo",
                "must be at least 1min (archive_timeout below a minute bloats the archive)",
            );
        }
        if !self.bin_dir.is_absolute() {
            return bad("--bin-dir", "must be an absolute path");
        }
        if let Tls::Files { cert, key } = &self.tls {
            if !cert.is_absolute() || !key.is_absolute() {
                return bad("--tls", "certificate and key paths must be absolute");
            }
        }
        for image in [&self.images.postgres, &self.images.pgbouncer, &self.images.pgvault] {
            if image.is_empty() || image.chars().any(|c| c.is_whitespace() || c == '"' || c == '\'') {
                return bad("--image", "an image reference has no spaces or quotes");
            }
        }
        if self.repository.is_empty() || self.repository.chars().any(|c| c.is_control() || c == '"') {
            return bad("--repository", "must be a URL without quotes");
        }
        Ok(())
    }
}

/// The repository the rendered configuration points at unless `--repository` says otherwise.
pub const DEFAULT_REPOSITORY: &str = "file:///var/lib/pgvault/repository";

/// Whether a file holds secrets (generated once, kept) or is generated from the options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Generated,
    Secret,
}

/// What [`execute`] does with one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Absent: written.
    Create,
    /// Present with other contents: replaced (generated files only).
    Update,
    /// Present with the same contents: left alone.
    Unchanged,
    /// A secret that exists: kept as it is.
    Keep,
    /// `.env` exists but lacks keys this deployment needs: they are appended, the rest kept.
    Extend,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Unchanged => "unchanged",
            Action::Keep => "keep",
            Action::Extend => "extend",
        }
    }
}

/// One file of the plan. The contents of secrets are never shown.
pub struct PlannedFile {
    /// Relative to the output directory.
    pub path: PathBuf,
    pub kind: FileKind,
    pub action: Action,
    pub mode: u32,
    contents: Vec<u8>,
}

impl std::fmt::Debug for PlannedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlannedFile")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("action", &self.action)
            .field("mode", &format_args!("{:o}", self.mode))
            .finish()
    }
}

/// What a deployment would do in `out`.
#[derive(Debug)]
pub struct Plan {
    pub out: PathBuf,
    pub files: Vec<PlannedFile>,
    /// Things the operator should know before starting the result (printed, not fatal).
    pub notes: Vec<String>,
}

/// A file a renderer produces, before it is compared with what is on disk.
pub(crate) struct Rendered {
    pub path: PathBuf,
    pub contents: Vec<u8>,
    pub mode: u32,
}

pub(crate) fn rendered(path: impl Into<PathBuf>, contents: impl Into<Vec<u8>>, mode: u32) -> Rendered {
    Rendered {
        path: path.into(),
        contents: contents.into(),
        mode,
    }
}

/// Plans the deployment into `out`: renders every generated file, and decides for each secret
/// whether to keep it or to generate it (with `source`).
pub fn plan(opts: &Options, out: &Path, source: &mut dyn SecretSource) -> Result<Plan, DeployError> {
    opts.check()?;
    let mut targets = opts.targets.clone();
    targets.sort();
    targets.dedup();
    let mut files = Vec::new();
    for target in targets {
        let dir = Path::new(target.dir());
        let generated = match target {
            Target::Compose => compose::render(opts),
            Target::Systemd => systemd::render(opts),
            Target::Kubernetes => kubernetes::render(opts),
        };
        for r in generated {
            let path = dir.join(&r.path);
            let action = match fsio::read_existing(&out.join(&path))? {
                None => Action::Create,
                Some(old) if old == r.contents => Action::Unchanged,
                Some(_) => Action::Update,
            };
            files.push(PlannedFile {
                path,
                kind: FileKind::Generated,
                action,
                mode: r.mode,
                contents: r.contents,
            });
        }
        for s in secrets::plan_target(opts, target, &out.join(dir), source)? {
            files.push(PlannedFile {
                path: dir.join(s.path),
                kind: FileKind::Secret,
                action: s.action,
                mode: 0o600,
                contents: s.contents,
            });
        }
    }
    Ok(Plan {
        out: out.to_path_buf(),
        files,
        notes: notes(opts),
    })
}

/// What the options leave for the operator to do or to decide.
fn notes(opts: &Options) -> Vec<String> {
    let mut notes = Vec::new();
    if opts.targets.contains(&Target::Kubernetes) && opts.allow_cidrs.is_empty() {
        notes.push(
            "kubernetes: no --allow-cidr, so pg_hba.conf admits only loopback: pass the pod network \
             (e.g. --allow-cidr 10.244.0.0/16) for the scheduler to reach the database"
                .into(),
        );
    }
    if opts.pgbouncer.is_some() && opts.images.pgbouncer.ends_with(":latest") {
        notes.push(format!(
            "compose: {} is not pinned; pin it with --image pgbouncer=REF",
            opts.images.pgbouncer
        ));
    }
    if opts.tls == Tls::SelfSigned {
        notes.push("tls: the self-signed pair is for a first start; replace it with a real certificate".into());
    }
    if opts.repository.starts_with("file://") && opts.targets.contains(&Target::Kubernetes) {
        notes.push(
            "kubernetes: a file:// repository needs a ReadWriteMany volume shared with the database pods; \
             an object store (--repository s3://...) needs none"
                .into(),
        );
    }
    notes
}

/// Writes the plan: generated files atomically (replacing older renderings), secrets created
/// exclusively (never over an existing file), `.env` extended with only the missing keys.
pub fn execute(plan: &Plan) -> Result<(), DeployError> {
    for f in &plan.files {
        let path = plan.out.join(&f.path);
        match (f.action, f.kind) {
            (Action::Unchanged | Action::Keep, _) => {}
            (Action::Create, FileKind::Secret) => fsio::create_new(&path, &f.contents, f.mode)?,
            (Action::Extend, _) | (Action::Create | Action::Update, FileKind::Generated) => {
                fsio::replace(&path, &f.contents, f.mode)?
            }
            (Action::Update, FileKind::Secret) => {
                return Err(DeployError::BadExisting {
                    path,
                    message: "a secret is never overwritten".into(),
                })
            }
        }
    }
    Ok(())
}

/// Quotes `s` as a YAML double-quoted scalar (JSON strings are valid YAML).
pub(crate) fn yq(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// `archive_timeout` for the RPO: the same rule `pgvault tune` recommends.
pub use crate::tune::archive_timeout_for as archive_timeout;

/// Cron expressions (for `[schedule]` and CronJobs) and systemd calendar events (for timers),
/// the same times: daily backup at 02:00, expire at 03:30, weekly verify and drill on Sunday.
pub(crate) const JOBS: [Job; 4] = [
    Job {
        name: "backup",
        cron: "0 2 * * *",
        calendar: "*-*-* 02:00:00",
        args: &["backup"],
        what: "take a full base backup",
    },
    Job {
        name: "expire",
        cron: "30 3 * * *",
        calendar: "*-*-* 03:30:00",
        args: &["expire"],
        what: "delete what the [retention] policy no longer keeps",
    },
    Job {
        name: "verify",
        cron: "0 5 * * 0",
        calendar: "Sun *-*-* 05:00:00",
        args: &["verify"],
        what: "read every object back and check WAL continuity",
    },
    Job {
        name: "drill",
        cron: "0 6 * * 0",
        calendar: "Sun *-*-* 06:00:00",
        args: &["drill", "--random"],
        what: "restore into a sandbox and measure RTO and RPO",
    },
];

pub(crate) struct Job {
    pub name: &'static str,
    pub cron: &'static str,
    pub calendar: &'static str,
    pub args: &'static [&'static str],
    pub what: &'static str,
}

/// The port the scheduler serves `/metrics` on.
pub(crate) const METRICS_PORT: u16 = pgvault_core::metrics::DEFAULT_PORT;

#[cfg(test)]
mod tests;
