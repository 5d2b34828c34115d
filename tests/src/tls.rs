//! TLS for test clusters: a throw-away certificate authority, a server certificate it signed,
//! and a second ("wrong") CA that signed nothing, plus a way to start a [`PgCluster`] with
//! `ssl = on` using them.
//!
//! It exists because pgvault's own replication client implements libpq's sslmodes (`prefer`,
//! `require`, `verify-ca`, `verify-full`) and SCRAM channel binding, and those can only be
//! trusted once a real server with a real certificate agreed. The certificates are made with the
//! `openssl` command line tool at test time (nothing secret is checked in, nothing expires in the
//! repository): EC P-256 keys, valid for two days, the server certificate carrying
//! `subjectAltName = IP:127.0.0.1, DNS:localhost` so that `verify-full` succeeds for both names
//! the tests use.
//!
//! PostgreSQL refuses a private key that is readable by others, and the server runs as
//! `postgres`: every file is owned by `postgres`, keys with mode 0600.
//!
//! Only installations built with OpenSSL can do this (see [`PgInstall::has_openssl`]; the
//! PostgreSQL 16 and 18 builds from the PyPI wheels are not).

use std::fs;
use std::ops::{Deref, DerefMut};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::cluster::{conf_quote, ClusterOptions, PgCluster};
use crate::fsutil::{chown_to_postgres, TempRepoDir};
use crate::install::PgInstall;
use crate::process::run_with_timeout;

/// Certificates and keys for one test, in a `postgres`-owned temp dir removed on drop.
#[derive(Debug)]
pub struct TestCerts {
    /// The CA that signed the server certificate (PEM): the right `sslrootcert`.
    pub ca_cert: PathBuf,
    /// A CA that signed nothing here (PEM): a wrong `sslrootcert`.
    pub wrong_ca_cert: PathBuf,
    /// The server certificate (PEM), SAN `IP:127.0.0.1, DNS:localhost`.
    pub server_cert: PathBuf,
    /// The server's private key (PEM), owned by `postgres`, mode 0600.
    pub server_key: PathBuf,
    dir: TempRepoDir,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let mut cmd = Command::new("openssl");
    cmd.current_dir(dir).args(args);
    run_with_timeout(&mut cmd, Duration::from_secs(60))
        .context("running openssl (is it installed?)")?
        .check()?;
    Ok(())
}

/// `openssl req` arguments for a new EC P-256 key (unencrypted).
const EC_KEY: &[&str] = &["-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

impl TestCerts {
    /// Generates a CA, a server certificate signed by it and a wrong CA.
    pub fn generate() -> Result<TestCerts> {
        let dir = TempRepoDir::with_prefix("pgvault-tls-")?;
        let p = dir.path();
        for ca in ["ca", "wrong-ca"] {
            let (key, crt, subj) = (
                format!("{ca}.key"),
                format!("{ca}.crt"),
                format!("/CN=pgvault test {ca}"),
            );
            let mut args = vec!["req", "-x509", "-new"];
            args.extend_from_slice(EC_KEY);
            args.extend_from_slice(&["-keyout", &key, "-out", &crt, "-days", "2", "-subj", &subj]);
            openssl(p, &args).with_context(|| format!("creating test CA {ca}"))?;
        }
        let mut args = vec!["req", "-new"];
        args.extend_from_slice(EC_KEY);
        args.extend_from_slice(&["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]);
        openssl(p, &args).context("creating the server key")?;
        fs::write(
            p.join("server.ext"),
            "subjectAltName = IP:127.0.0.1, DNS:localhost\n\
             basicConstraints = CA:FALSE\n\
             keyUsage = critical, digitalSignature\n\
             extendedKeyUsage = serverAuth\n",
        )
        .context("writing server.ext")?;
        openssl(
            p,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
        )
        .context("signing the server certificate")?;

        for entry in fs::read_dir(p).with_context(|| format!("read dir {}", p.display()))? {
            let path = entry?.path();
            let is_key = path.extension().is_some_and(|e| e == "key");
            let mode = if is_key { 0o600 } else { 0o644 };
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .with_context(|| format!("chmod {mode:o} {}", path.display()))?;
            chown_to_postgres(&path)?;
        }
        Ok(TestCerts {
            ca_cert: p.join("ca.crt"),
            wrong_ca_cert: p.join("wrong-ca.crt"),
            server_cert: p.join("server.crt"),
            server_key: p.join("server.key"),
            dir,
        })
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `opts` plus `ssl = on` and this server certificate and key.
    pub fn cluster_options(&self, opts: ClusterOptions) -> ClusterOptions {
        opts.conf("ssl = on")
            .conf(format!(
                "ssl_cert_file = {}",
                conf_quote(&self.server_cert.display().to_string())
            ))
            .conf(format!(
                "ssl_key_file = {}",
                conf_quote(&self.server_key.display().to_string())
            ))
    }
}

/// A running [`PgCluster`] with `ssl = on`, and its certificates. Dereferences to the cluster.
/// The cluster is declared first so that it stops before the certificates are removed.
#[derive(Debug)]
pub struct TlsCluster {
    pub cluster: PgCluster,
    pub certs: TestCerts,
}

impl TlsCluster {
    /// Generates certificates and starts a new cluster with TLS on (`opts` as for
    /// [`PgCluster::start_new`]; its `pg_hba.conf` may use `hostssl` lines). Fails clearly when
    /// the installation was built without OpenSSL.
    pub fn start_new(install: &PgInstall, opts: ClusterOptions) -> Result<TlsCluster> {
        if !install.has_openssl() {
            bail!(
                "PostgreSQL {} at {} was built without OpenSSL: it cannot run with ssl = on",
                install.version(),
                install.bin_dir().display()
            );
        }
        let certs = TestCerts::generate()?;
        let cluster = PgCluster::start_new(install, certs.cluster_options(opts))?;
        Ok(TlsCluster { cluster, certs })
    }
}

impl Deref for TlsCluster {
    type Target = PgCluster;
    fn deref(&self) -> &PgCluster {
        &self.cluster
    }
}

impl DerefMut for TlsCluster {
    fn deref_mut(&mut self) -> &mut PgCluster {
        &mut self.cluster
    }
}
