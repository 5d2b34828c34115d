//! The secret files of a deployment: passwords and the repository passphrase (`.env`,
//! `pgvault-passphrase`, `pgvault-secret.yaml`) and a self-signed TLS pair. They are generated
//! only when absent and never overwritten, so re-running `deploy` after a change of options keeps
//! the credentials the running database already uses; generated files only name them.

use std::path::{Path, PathBuf};

use rand::distributions::Alphanumeric;
use rand::Rng;

use super::{fsio, Action, DeployError, Options, Target, Tls};

/// Where fresh secrets come from (strong randomness in production; tests may count calls).
pub trait SecretSource {
    /// A strong password: 32 alphanumerics (~190 bits), safe in URLs, `.env` and shell.
    fn password(&mut self) -> String;
    /// A self-signed certificate and its key (PEM) for `names`.
    fn self_signed(&mut self, names: &[&str]) -> Result<(String, String), DeployError>;
}

/// The operating system's randomness (`rand`'s `OsRng`) and `rcgen` for certificates.
pub struct OsSecrets;

impl SecretSource for OsSecrets {
    fn password(&mut self) -> String {
        rand::rngs::OsRng
            .sample_iter(&Alphanumeric)
            .take(32)
            .map(char::from)
            .collect()
    }

    fn self_signed(&mut self, names: &[&str]) -> Result<(String, String), DeployError> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let ck = rcgen::generate_simple_self_signed(names).map_err(|e| DeployError::Certificate(e.to_string()))?;
        Ok((ck.cert.pem(), ck.key_pair.serialize_pem()))
    }
}

/// One secret file of the plan.
pub(super) struct SecretFile {
    pub path: PathBuf,
    pub action: Action,
    pub contents: Vec<u8>,
}

/// The `.env` keys of the Compose stack.
pub(super) fn compose_env_keys(opts: &Options) -> Vec<&'static str> {
    let mut keys = vec!["POSTGRES_PASSWORD", "PGVAULT_DB_PASSWORD", "PGVAULT_PASSPHRASE"];
    if opts.pgbouncer.is_some() {
        keys.push("PGBOUNCER_AUTH_PASSWORD");
    }
    keys
}

/// Host names the self-signed certificate is valid for.
const TLS_NAMES: [&str; 4] = ["localhost", "postgres", "pgbouncer", "postgresql"];

/// The secret files of `target`, whose directory is `dir`.
pub(super) fn plan_target(
    opts: &Options,
    target: Target,
    dir: &Path,
    source: &mut dyn SecretSource,
) -> Result<Vec<SecretFile>, DeployError> {
    let mut out = Vec::new();
    match target {
        Target::Compose => out.push(env_file(&dir.join(".env"), &compose_env_keys(opts), source)?),
        Target::Systemd => out.push(once(dir, "pgvault-passphrase", || {
            Ok(format!("{}\n", source.password()).into_bytes())
        })?),
        Target::Kubernetes => out.push(once(dir, "pgvault-secret.yaml", || {
            let (pw, pass) = (source.password(), source.password());
            Ok(super::kubernetes::secret(&pw, &pass).into_bytes())
        })?),
    }
    match (&opts.tls, target) {
        (Tls::Off, _) => {}
        (Tls::SelfSigned, Target::Compose | Target::Systemd) => out.extend(tls_pair(dir, source)?),
        (tls, Target::Kubernetes) => out.push(once(dir, "tls-secret.yaml", || {
            let (cert, key) = match tls {
                Tls::Files { cert, key } => (read_text(cert)?, read_text(key)?),
                _ => source.self_signed(&TLS_NAMES)?,
            };
            Ok(super::kubernetes::tls_secret(&cert, &key).into_bytes())
        })?),
        (Tls::Files { .. }, _) => {}
    }
    Ok(out)
}

fn read_text(path: &Path) -> Result<String, DeployError> {
    std::fs::read_to_string(path).map_err(|source| DeployError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// A secret file made by `make` only when `dir/name` does not exist.
fn once(
    dir: &Path,
    name: &str,
    make: impl FnOnce() -> Result<Vec<u8>, DeployError>,
) -> Result<SecretFile, DeployError> {
    let path = PathBuf::from(name);
    if fsio::read_existing(&dir.join(name))?.is_some() {
        return Ok(SecretFile {
            path,
            action: Action::Keep,
            contents: Vec::new(),
        });
    }
    Ok(SecretFile {
        path,
        action: Action::Create,
        contents: make()?,
    })
}

/// `tls/server.crt` and `tls/server.key`: both kept when both exist, both made when neither does.
fn tls_pair(dir: &Path, source: &mut dyn SecretSource) -> Result<Vec<SecretFile>, DeployError> {
    let (crt, key) = (PathBuf::from("tls/server.crt"), PathBuf::from("tls/server.key"));
    let have_crt = fsio::read_existing(&dir.join(&crt))?.is_some();
    let have_key = fsio::read_existing(&dir.join(&key))?.is_some();
    let (action, cert_pem, key_pem) = match (have_crt, have_key) {
        (true, true) => (Action::Keep, String::new(), String::new()),
        (false, false) => {
            let (c, k) = source.self_signed(&TLS_NAMES)?;
            (Action::Create, c, k)
        }
        _ => {
            return Err(DeployError::BadExisting {
                path: dir.join("tls"),
                message: "holds only one of server.crt and server.key; restore the other or remove both".into(),
            })
        }
    };
    Ok(vec![
        SecretFile {
            path: crt,
            action,
            contents: cert_pem.into_bytes(),
        },
        SecretFile {
            path: key,
            action,
            contents: key_pem.into_bytes(),
        },
    ])
}

/// The keys an `.env` file defines (`KEY=…` lines; comments and blanks skipped).
pub(super) fn env_keys(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, _)| k.trim().trim_start_matches("export ").to_string())
        })
        .collect()
}

/// `.env`: created with every key, kept when complete, extended with the missing keys otherwise
/// (existing lines byte for byte first).
fn env_file(path: &Path, keys: &[&str], source: &mut dyn SecretSource) -> Result<SecretFile, DeployError> {
    let existing = fsio::read_existing(path)?;
    let (mut text, present, action) = match existing {
        None => (ENV_HEADER.to_string(), Vec::new(), Action::Create),
        Some(bytes) => {
            let text = String::from_utf8(bytes).map_err(|_| DeployError::BadExisting {
                path: path.to_path_buf(),
                message: "is not UTF-8 text".into(),
            })?;
            let present = env_keys(&text);
            (text, present, Action::Extend)
        }
    };
    let missing: Vec<&str> = keys
        .iter()
        .copied()
        .filter(|k| !present.iter().any(|p| p == k))
        .collect();
    if action == Action::Extend && missing.is_empty() {
        return Ok(SecretFile {
            path: PathBuf::from(".env"),
            action: Action::Keep,
            contents: Vec::new(),
        });
    }
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    for key in missing {
        text.push_str(&format!("{key}={}\n", source.password()));
    }
    Ok(SecretFile {
        path: PathBuf::from(".env"),
        action,
        contents: text.into_bytes(),
    })
}

const ENV_HEADER: &str = "\
# Secrets of the pgvault Compose stack, generated by `pgvault deploy` (mode 0600).
# Kept as they are when deploy runs again; keep a copy in your password manager.
# PGVAULT_PASSPHRASE encrypts the repository: without it no backup can be restored.
";
