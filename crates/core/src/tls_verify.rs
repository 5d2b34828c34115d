//! The rustls server-certificate verifier shared by pgvault's two TLS clients: the replication
//! connection ([`crate::protocol`], libpq's `sslmode` semantics) and HTTPS to object stores behind
//! a private CA ([`crate::storage`], `[repository] ca_file`).
//!
//! Both need certificate policies rustls does not offer (rustls alone does full webpki
//! verification), and both must still check the handshake signatures against the key of the
//! certificate presented, whatever the policy, so that only the holder of its private key can
//! complete the handshake. This module exists so that this second part is written once: a
//! [`Verifier`] is a [`Policy`] deciding about the certificate plus the signature checks of the
//! crypto provider.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

/// What a server certificate must be.
#[derive(Debug)]
pub(crate) enum Policy {
    /// Anything (libpq's prefer/require): the session is encrypted, the peer not authenticated.
    AnyCertificate,
    /// The chain must lead to a trusted root; the name is not checked (libpq's verify-ca).
    ChainOnly(Arc<WebPkiServerVerifier>),
    /// A certificate byte-identical to a pinned one is accepted; any other must pass `webpki`
    /// (chain and name), and with no `webpki` (no usable root) it is refused (`ca_file`).
    PinnedOrWebPki {
        pinned: Vec<CertificateDer<'static>>,
        webpki: Option<Arc<WebPkiServerVerifier>>,
    },
}

/// A [`Policy`] for the certificate; handshake signatures checked with `provider`'s algorithms.
#[derive(Debug)]
pub(crate) struct Verifier {
    policy: Policy,
    provider: Arc<CryptoProvider>,
}

impl Verifier {
    pub(crate) fn new(policy: Policy, provider: Arc<CryptoProvider>) -> Arc<Verifier> {
        Arc::new(Verifier { policy, provider })
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.policy {
            Policy::AnyCertificate => Ok(ServerCertVerified::assertion()),
            Policy::ChainOnly(webpki) => {
                match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
                    Err(rustls::Error::InvalidCertificate(
                        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
                    )) => Ok(ServerCertVerified::assertion()),
                    other => other,
                }
            }
            Policy::PinnedOrWebPki { pinned, webpki } => {
                if pinned.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
                    return Ok(ServerCertVerified::assertion());
                }
                match webpki {
                    Some(v) => v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now),
                    None => Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)),
                }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
