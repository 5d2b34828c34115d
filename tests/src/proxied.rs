//! S3 behind the fault proxy, for one vault: the one setup the fault, fallback and standby
//! tests share (a prefix of the vault's own, the proxy in front of the emulator, and the
//! `[repository]` TOML that reaches the store through it with the test's timeouts).

use anyhow::{Context, Result};
use pgvault_core::config::RepositoryConfig;

use crate::faultproxy::{FaultPlan, FaultProxy, Upstream};
use crate::{ObjStore, Vault};

/// Client timeouts written into a proxied configuration.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub request_secs: u64,
    pub retry_max: usize,
    pub retry_secs: u64,
}

/// The store's direct configuration under a prefix unique to `vault`, and a proxy in front of it.
pub struct ProxiedS3 {
    pub direct: RepositoryConfig,
    pub prefix: String,
    pub proxy: FaultProxy,
}

impl ProxiedS3 {
    pub async fn start(store: &ObjStore, vault: &Vault, plan: FaultPlan) -> Result<ProxiedS3> {
        let name = vault
            .dir
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("proxied");
        let prefix = format!("repos/{name}");
        let direct = store.repository_config(&prefix);
        let upstream = Upstream::from_endpoint(
            direct.endpoint.as_deref().context("no endpoint")?,
            direct.ca_file.as_deref(),
        )?;
        let proxy = FaultProxy::start(upstream, plan).await?;
        Ok(ProxiedS3 { direct, prefix, proxy })
    }

    /// The `[repository]` body that reaches the store through the proxy.
    pub fn toml(&self, t: Timeouts) -> String {
        let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let mut out = format!(
            "url = {}\nendpoint = {}\nallow_http = true\n",
            q(&self.direct.url),
            q(&self.proxy.endpoint())
        );
        for (k, v) in [
            ("region", &self.direct.region),
            ("access_key_id", &self.direct.access_key_id),
            ("secret_access_key", &self.direct.secret_access_key),
        ] {
            if let Some(v) = v {
                out.push_str(&format!("{k} = {}\n", q(v)));
            }
        }
        out.push_str(&format!(
            "request_timeout = {}\nconnect_timeout = 2\nretry_max = {}\nretry_timeout = {}\n",
            t.request_secs, t.retry_max, t.retry_secs
        ));
        out
    }
}
