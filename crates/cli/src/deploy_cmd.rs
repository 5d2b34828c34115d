//! `pgvault deploy`: renders systemd, Compose and Kubernetes artifacts with backups wired in
//! (the work is in `pgvault_ops::deploy`; this parses the flags and shows the plan).

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};
use pgvault_core::config::Config;
use pgvault_core::units;
use pgvault_ops::deploy::{self, Cidr, Images, K8sJobs, Options, OsSecrets, PoolMode, Target, Tls};
use pgvault_ops::tune;
use serde_json::json;

use crate::commands::Context;

#[derive(Clone, Copy, ValueEnum)]
pub enum TargetArg {
    Compose,
    Systemd,
    Kubernetes,
    All,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum JobsArg {
    Deployment,
    Cronjob,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum PoolArg {
    Transaction,
    Session,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum StorageArg {
    Ssd,
    Hdd,
    Network,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum WorkloadArg {
    Web,
    Oltp,
    Dw,
    Mixed,
}

#[derive(Args)]
pub struct DeployArgs {
    /// What to render for (`all`: each into its own sub-directory of --out).
    #[arg(long, value_enum)]
    target: TargetArg,
    /// The directory to render into (created when missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// List the files that would be created, updated or kept; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
    /// PostgreSQL major version (images, data directory paths).
    #[arg(long, value_name = "N", default_value_t = 17)]
    pg_version: u32,
    /// Kubernetes: the scheduler as one Deployment, or each job as a CronJob.
    #[arg(long, value_enum, default_value = "deployment")]
    k8s_jobs: JobsArg,
    /// Put PgBouncer in front of PostgreSQL (SCRAM, auth_query) with this pool mode.
    #[arg(long, value_enum, value_name = "MODE")]
    pgbouncer: Option<PoolArg>,
    /// TLS for client connections: `CERT.pem,KEY.pem` (absolute paths) or `self-signed`.
    #[arg(long, value_name = "CERT,KEY|self-signed")]
    tls: Option<String>,
    /// Networks allowed to connect (pg_hba.conf, scram-sha-256); repeatable.
    #[arg(long = "allow-cidr", value_name = "CIDR")]
    allow_cidr: Vec<String>,
    /// Host address Compose publishes ports on.
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Compose: the scheduler also joins the external `monitoring` network for scraping.
    #[arg(long)]
    monitoring_network: bool,
    /// Image override, repeatable: `postgres=REF`, `pgbouncer=REF`, `pgvault=REF`.
    #[arg(long, value_name = "NAME=REF")]
    image: Vec<String>,
    /// Repository URL written into pgvault.toml.
    #[arg(long, value_name = "URL", default_value = deploy::DEFAULT_REPOSITORY)]
    repository: String,
    /// Recovery-point objective (archive_timeout is half of it); default [objectives] rpo, else 5min.
    #[arg(long, value_name = "DURATION")]
    rpo: Option<String>,
    /// Where pgvault and pgvault-archive are installed on the host.
    #[arg(long, value_name = "DIR", default_value = "/usr/local/bin")]
    bin_dir: PathBuf,
    /// Memory for PostgreSQL (adds `pgvault tune`'s settings to the include), e.g. 32GB.
    #[arg(long, value_name = "SIZE", requires = "cpus")]
    memory: Option<String>,
    /// CPUs for PostgreSQL (with --memory).
    #[arg(long, value_name = "N", requires = "memory")]
    cpus: Option<u32>,
    /// Storage kind, for tune.
    #[arg(long, value_enum, default_value = "ssd")]
    storage: StorageArg,
    /// Workload, for tune.
    #[arg(long, value_enum, default_value = "mixed")]
    workload: WorkloadArg,
    /// Expected client connections, for tune.
    #[arg(long, value_name = "N", default_value_t = 100)]
    connections: u32,
}

fn rpo(ctx: &Context, args: &DeployArgs) -> Result<std::time::Duration> {
    let text = match (&args.rpo, &ctx.config_path) {
        (Some(r), _) => r.clone(),
        (None, Some(path)) => {
            let config = Config::load(Some(path))?;
            config.objectives.rpo.unwrap_or_else(|| "5min".into())
        }
        (None, None) => "5min".into(),
    };
    units::parse_duration(&text).with_context(|| format!("--rpo {text}"))
}

fn tls(arg: Option<&str>) -> Result<Tls> {
    Ok(match arg {
        None => Tls::Off,
        Some("self-signed") => Tls::SelfSigned,
        Some(pair) => match pair.split_once(',') {
            Some((cert, key)) if !cert.is_empty() && !key.is_empty() => Tls::Files {
                cert: cert.into(),
                key: key.into(),
            },
            _ => bail!("--tls takes CERT.pem,KEY.pem or self-signed, not {pair:?}"),
        },
    })
}

fn images(pg_version: u32, overrides: &[String]) -> Result<Images> {
    let mut images = Images::defaults(pg_version);
    for o in overrides {
        let (name, reference) = o
            .split_once('=')
            .with_context(|| format!("--image {o:?}: expected NAME=REF (postgres, pgbouncer, pgvault)"))?;
        let slot = match name {
            "postgres" => &mut images.postgres,
            "pgbouncer" => &mut images.pgbouncer,
            "pgvault" => &mut images.pgvault,
            other => bail!("--image {other}=…: the images are postgres, pgbouncer and pgvault"),
        };
        *slot = reference.to_string();
    }
    Ok(images)
}

fn options(ctx: &Context, args: &DeployArgs) -> Result<Options> {
    let targets = match args.target {
        TargetArg::Compose => vec![Target::Compose],
        TargetArg::Systemd => vec![Target::Systemd],
        TargetArg::Kubernetes => vec![Target::Kubernetes],
        TargetArg::All => Target::ALL.to_vec(),
    };
    let mut opts = Options::new(targets);
    opts.pg_version = args.pg_version;
    opts.k8s_jobs = match args.k8s_jobs {
        JobsArg::Deployment => K8sJobs::Deployment,
        JobsArg::Cronjob => K8sJobs::CronJob,
    };
    opts.pgbouncer = args.pgbouncer.map(|p| match p {
        PoolArg::Transaction => PoolMode::Transaction,
        PoolArg::Session => PoolMode::Session,
    });
    opts.tls = tls(args.tls.as_deref())?;
    opts.allow_cidrs = args
        .allow_cidr
        .iter()
        .map(|c| Cidr::parse(c))
        .collect::<Result<_, _>>()?;
    opts.bind = args.bind;
    opts.monitoring_network = args.monitoring_network;
    opts.images = images(args.pg_version, &args.image)?;
    opts.repository = args.repository.clone();
    opts.rpo = rpo(ctx, args)?;
    opts.bin_dir = args.bin_dir.clone();
    if let (Some(memory), Some(cpus)) = (&args.memory, args.cpus) {
        let inputs = tune::Inputs {
            memory_bytes: units::parse_size(memory).with_context(|| format!("--memory {memory}"))?,
            cpus,
            storage: match args.storage {
                StorageArg::Ssd => tune::Storage::Ssd,
                StorageArg::Hdd => tune::Storage::Hdd,
                StorageArg::Network => tune::Storage::Network,
            },
            workload: match args.workload {
                WorkloadArg::Web => tune::Workload::Web,
                WorkloadArg::Oltp => tune::Workload::Oltp,
                WorkloadArg::Dw => tune::Workload::Dw,
                WorkloadArg::Mixed => tune::Workload::Mixed,
            },
            connections: args.connections,
            pooler: args.pgbouncer.is_some(),
            rpo: opts.rpo,
            server_major: Some(args.pg_version),
        };
        opts.tuning = tune::recommend(&inputs);
    }
    Ok(opts)
}

pub async fn deploy(ctx: &Context, args: DeployArgs) -> Result<()> {
    let opts = options(ctx, &args)?;
    let plan = deploy::plan(&opts, &args.out, &mut OsSecrets)?;
    if !args.dry_run {
        deploy::execute(&plan)?;
    }
    for note in &plan.notes {
        crate::logging::note(note);
    }
    if args.json {
        let files: Vec<_> = plan
            .files
            .iter()
            .map(|f| {
                json!({
                    "path": f.path,
                    "kind": match f.kind { deploy::FileKind::Generated => "generated", deploy::FileKind::Secret => "secret" },
                    "action": f.action.as_str(),
                    "mode": format!("{:o}", f.mode),
                })
            })
            .collect();
        println!(
            "{}",
            json!({"out": args.out, "dry_run": args.dry_run, "files": files, "notes": plan.notes})
        );
        return Ok(());
    }
    let verb = if args.dry_run { "would" } else { "did" };
    println!("{} ({verb}):", args.out.display());
    for f in &plan.files {
        let secret = if f.kind == deploy::FileKind::Secret {
            "  (secret)"
        } else {
            ""
        };
        println!("  {:<9} {}{secret}", f.action.as_str(), f.path.display());
    }
    if !args.dry_run {
        println!("next: see docs/DEPLOY.md for how to start each target");
    }
    Ok(())
}
