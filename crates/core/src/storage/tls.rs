//! HTTPS for object stores behind a private CA (`[repository] ca_file`).
//!
//! object_store builds its own `reqwest` client; with `ca_file` pgvault builds one instead (an
//! [`HttpConnector`]) whose rustls configuration trusts exactly the certificates in `ca_file`:
//!
//! - a server certificate *byte-identical* to one in `ca_file` is accepted (a pinned,
//!   self-signed certificate such as `openssl req -x509 … -subj /CN=127.0.0.1`, which is its own
//!   CA: webpki refuses a CA certificate presented as the end entity, so it cannot be verified as
//!   a chain). The handshake signature is still checked against that certificate's key, so only
//!   the holder of its private key can complete the handshake;
//! - any other certificate must chain to a root in `ca_file` and name the endpoint's host (normal
//!   webpki verification).
//!
//! The verifier itself ([`Policy::PinnedOrWebPki`]) lives in [`crate::tls_verify`], beside the
//! replication client's.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use object_store::client::{HttpClient, HttpConnector};
use object_store::ClientOptions;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use crate::tls_verify::{Policy, Verifier};

/// Reads the PEM certificates of `ca_file`; the error says what is wrong with the file.
pub(crate) fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let data = std::fs::read(path).map_err(|e| {
        format!(
            "cannot read ca_file {}: {e} (check the path and its permissions)",
            path.display()
        )
    })?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("ca_file {} is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "ca_file {} holds no certificate: it should contain -----BEGIN CERTIFICATE----- blocks",
            path.display()
        ));
    }
    Ok(certs)
}

/// The rustls configuration trusting `certs` (pinned end entities and roots).
pub(crate) fn client_config(certs: Vec<CertificateDer<'static>>, path: &Path) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs.iter().cloned());
    let webpki = if added > 0 {
        Some(
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("ca_file {}: cannot build a certificate verifier: {e}", path.display()))?,
        )
    } else {
        None
    };
    let verifier = Verifier::new(Policy::PinnedOrWebPki { pinned: certs, webpki }, provider.clone());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS protocol versions: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// An object_store [`HttpConnector`] building a reqwest client with pgvault's TLS configuration
/// and timeouts.
#[derive(Debug)]
pub(crate) struct CaFileConnector {
    pub tls: ClientConfig,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub allow_http: bool,
}

impl HttpConnector for CaFileConnector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        let client = reqwest::ClientBuilder::new()
            .user_agent(concat!("pgvault/", env!("CARGO_PKG_VERSION")))
            .use_preconfigured_tls(self.tls.clone())
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .no_gzip()
            .no_brotli()
            .no_zstd()
            .no_deflate()
            .https_only(!self.allow_http)
            .build()
            .map_err(|e| object_store::Error::Generic {
                store: "http",
                source: Box::new(e),
            })?;
        Ok(HttpClient::new(client))
    }
}
