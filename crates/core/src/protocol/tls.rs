//! TLS set-up for PostgreSQL's in-band upgrade (SSLRequest). It exists to give pgvault libpq's
//! sslmode semantics on top of rustls: prefer/require encrypt without checking who is on the
//! other end (but still check the handshake signatures), verify-ca checks the chain, and
//! verify-full checks the chain and the host name or IP address.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use super::error::ProtocolError;
use super::params::SslMode;
use crate::tls_verify::{Policy, Verifier};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client configuration for a TLS-using sslmode.
pub(crate) fn client_config(mode: SslMode, sslrootcert: Option<&Path>) -> Result<Arc<ClientConfig>, ProtocolError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ProtocolError::Tls(format!("cannot set up TLS protocol versions: {e}")))?;
    let mut config = match mode {
        SslMode::Disable => return Err(ProtocolError::Config("TLS requested with sslmode=disable".into())),
        // libpq's prefer/require: any certificate, but the handshake must be signed by the key
        // in it (so the session keys are not trivially forged).
        SslMode::Prefer | SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Verifier::new(Policy::AnyCertificate, provider))
            .with_no_client_auth(),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let roots = Arc::new(root_store(sslrootcert)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| ProtocolError::Tls(format!("cannot build the certificate verifier: {e}")))?;
            if mode == SslMode::VerifyFull {
                builder.with_webpki_verifier(webpki).with_no_client_auth()
            } else {
                // libpq's verify-ca: the chain must lead to a trusted root; the name is not
                // checked.
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Verifier::new(Policy::ChainOnly(webpki), provider))
                    .with_no_client_auth()
            }
        }
    };
    // PostgreSQL 17+ accepts (and for direct TLS requires) this ALPN; older servers ignore it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Arc::new(config))
}

/// The name the server certificate must carry: an IP address SAN or a DNS name.
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, ProtocolError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_string()).map_err(|e| {
        ProtocolError::Tls(format!(
            "\"{host}\" is neither a valid DNS name nor an IP address for TLS: {e}"
        ))
    })
}

fn default_root_crt() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".postgresql").join("root.crt"))
}

/// Trusted roots: `sslrootcert` alone when given; else the webpki roots plus
/// `~/.postgresql/root.crt` if it exists.
fn root_store(sslrootcert: Option<&Path>) -> Result<RootCertStore, ProtocolError> {
    let mut store = RootCertStore::empty();
    match sslrootcert {
        Some(path) => add_pem_file(&mut store, path)?,
        None => {
            store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            if let Some(path) = default_root_crt().filter(|p| p.is_file()) {
                add_pem_file(&mut store, &path)?;
            }
        }
    }
    Ok(store)
}

fn add_pem_file(store: &mut RootCertStore, path: &Path) -> Result<(), ProtocolError> {
    let data = std::fs::read(path).map_err(|e| {
        ProtocolError::Tls(format!(
            "cannot read the CA bundle (sslrootcert) {}: {e}; check the path and its permissions",
            path.display()
        ))
    })?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| {
            ProtocolError::Tls(format!(
                "the CA bundle (sslrootcert) {} is not valid PEM: {e}",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(ProtocolError::Tls(format!(
            "the CA bundle (sslrootcert) {} holds no PEM certificate: it should contain -----BEGIN CERTIFICATE----- blocks",
            path.display()
        )));
    }
    let (added, ignored) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(ProtocolError::Tls(format!(
            "none of the {ignored} certificates in the CA bundle (sslrootcert) {} could be used as a trust anchor",
            path.display()
        )));
    }
    Ok(())
}

/// The `tls-server-end-point` channel-binding data (RFC 5929) for a server certificate: its
/// hash with the certificate's signature hash, SHA-256 for MD5/SHA-1. `None` when the signature
/// algorithm is not one we can map (then SCRAM runs without channel binding, as PostgreSQL
/// itself cannot bind such certificates either).
pub(crate) fn tls_server_end_point(cert_der: &[u8]) -> Option<Vec<u8>> {
    use ring::digest;
    const RSA: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01];
    const ECDSA_SHA1: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x01];
    const ECDSA: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03];
    let oid = signature_algorithm_oid(cert_der)?;
    let algorithm = if oid == ECDSA_SHA1 {
        &digest::SHA256
    } else if let Some(last) = oid.strip_prefix(RSA).filter(|l| l.len() == 1) {
        match last[0] {
            0x04 | 0x05 | 0x0B => &digest::SHA256, // md5, sha1, sha256 WithRSAEncryption
            0x0C => &digest::SHA384,
            0x0D => &digest::SHA512,
            _ => return None,
        }
    } else if let Some(last) = oid.strip_prefix(ECDSA).filter(|l| l.len() == 1) {
        match last[0] {
            0x02 => &digest::SHA256,
            0x03 => &digest::SHA384,
            0x04 => &digest::SHA512,
            _ => return None,
        }
    } else {
        return None;
    };
    Some(digest::digest(algorithm, cert_der).as_ref().to_vec())
}

/// The OID bytes of `Certificate.signatureAlgorithm` (DER).
fn signature_algorithm_oid(cert_der: &[u8]) -> Option<&[u8]> {
    let (tag, cert, _) = der_tlv(cert_der)?;
    if tag != 0x30 {
        return None;
    }
    let (_, _, rest) = der_tlv(cert)?; // tbsCertificate
    let (tag, alg, _) = der_tlv(rest)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, oid, _) = der_tlv(alg)?;
    (tag == 0x06).then_some(oid)
}

/// Splits one DER tag-length-value off `buf`: (tag, value, rest).
fn der_tlv(buf: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *buf.first()?;
    let first = *buf.get(1)? as usize;
    let (len, header) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7F;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *buf.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    if end > buf.len() {
        return None;
    }
    Some((tag, &buf[header..end], &buf[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_parsing_finds_signature_algorithms() {
        // Certificate { tbs: SEQUENCE{}, alg: SEQUENCE { OID ecdsa-with-SHA256 }, sig: BIT STRING }
        let ecdsa256 = [
            0x30, 0x10, 0x30, 0x00, 0x30, 0x0A, 0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02, 0x03, 0x00,
        ];
        let hash = tls_server_end_point(&ecdsa256).unwrap();
        assert_eq!(hash, ring::digest::digest(&ring::digest::SHA256, &ecdsa256).as_ref());
        let mut rsa384 = vec![0x30, 0x11, 0x30, 0x00, 0x30, 0x0B, 0x06, 0x09];
        rsa384.extend_from_slice(&[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0C, 0x03, 0x00]);
        assert_eq!(tls_server_end_point(&rsa384).unwrap().len(), 48);
        // Ed25519 (1.3.101.112): no mapping.
        let ed = [
            0x30, 0x0B, 0x30, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x70, 0x03, 0x00,
        ];
        assert_eq!(tls_server_end_point(&ed), None);
        // Truncated or garbage input never panics.
        for cut in 0..ecdsa256.len() {
            let _ = tls_server_end_point(&ecdsa256[..cut]);
        }
        assert_eq!(tls_server_end_point(&[0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF]), None);
        // Long-form lengths.
        assert_eq!(der_tlv(&[0x04, 0x81, 0x01, 0xAA]), Some((0x04, &[0xAA][..], &[][..])));
    }

    #[test]
    fn server_names() {
        assert!(matches!(server_name("127.0.0.1").unwrap(), ServerName::IpAddress(_)));
        assert!(matches!(server_name("::1").unwrap(), ServerName::IpAddress(_)));
        assert!(matches!(server_name("db.example.com").unwrap(), ServerName::DnsName(_)));
        assert!(server_name("bad name!").is_err());
    }

    #[test]
    fn bad_ca_bundles_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a cert\n").unwrap();
        let err = client_config(SslMode::VerifyFull, Some(&empty))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
        let err = client_config(SslMode::VerifyFull, Some(&dir.path().join("missing.pem")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read the CA bundle"), "{err}");
        assert!(client_config(SslMode::Require, None).is_ok());
        assert!(client_config(SslMode::VerifyFull, None).is_ok());
    }
}
