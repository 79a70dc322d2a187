//! The certificate check of a DANE connection (RFC 7672 3): a rustls verifier that accepts the
//! server's chain only when a usable TLSA record of the MX host matches it.
//!
//! - DANE-EE(3): the end-entity certificate (selector 0) or its key (selector 1) matches;
//!   names, dates and the rest of the chain are not looked at (RFC 7672 3.1.1).
//! - DANE-TA(2): a certificate the server sent after its own matches, and the end-entity
//!   certificate chains to it and names the host, checked by webpki with that certificate
//!   as the only trust anchor (RFC 7672 3.1.2, 3.2.2; the TLSA base domain is the MX host
//!   name, as CNAMEs are not followed).
//!
//! Handshake signatures are checked by the ring provider as for any other connection.

use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore};

use super::tlsa::{TlsaSet, Usage};

/// Certificates after the end-entity one considered as DANE-TA anchors.
const MAX_CHAIN: usize = 8;

/// A client config for one connection to a host with `records`, and where the verifier
/// notes which usage authenticated the server.
pub fn client_config(records: TlsaSet) -> Result<(Arc<rustls::ClientConfig>, Arc<OnceLock<Usage>>), rustls::Error> {
    let verifier = DaneVerifier::new(records);
    let (provider, matched) = (verifier.provider.clone(), verifier.matched.clone());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok((Arc::new(config), matched))
}

/// Checks a server's chain against its host's usable TLSA records.
#[derive(Debug)]
pub struct DaneVerifier {
    records: TlsaSet,
    provider: Arc<CryptoProvider>,
    matched: Arc<OnceLock<Usage>>,
}

impl DaneVerifier {
    pub fn new(records: TlsaSet) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Self { records, provider, matched: Arc::default() }
    }

    /// Which usage matched in the last successful check.
    pub fn matched(&self) -> Option<Usage> {
        self.matched.get().copied()
    }

    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Option<Usage> {
        if self.records.with_usage(Usage::DaneEe).any(|record| record.matches(end_entity)) {
            return Some(Usage::DaneEe);
        }
        let chain = &intermediates[..intermediates.len().min(MAX_CHAIN)];
        for record in self.records.with_usage(Usage::DaneTa) {
            for anchor in chain.iter().filter(|certificate| record.matches(certificate)) {
                let mut roots = RootCertStore::empty();
                if roots.add(anchor.clone().into_owned()).is_err() {
                    continue;
                }
                let Ok(pkix) =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone()).build()
                else {
                    continue;
                };
                if pkix.verify_server_cert(end_entity, chain, server_name, &[], now).is_ok() {
                    return Some(Usage::DaneTa);
                }
            }
        }
        None
    }
}

impl ServerCertVerifier for DaneVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.verify(end_entity, intermediates, server_name, now) {
            Some(usage) => {
                let _ = self.matched.set(usage);
                Ok(ServerCertVerified::assertion())
            }
            None => {
                Err(rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(NoMatch)))))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            certificate,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            certificate,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// No usable TLSA record matches the chain. Its `Debug` is its message too: rustls shows
/// `CertificateError::Other` with `Debug`.
struct NoMatch;

impl std::fmt::Debug for NoMatch {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, formatter)
    }
}

impl std::fmt::Display for NoMatch {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("no TLSA record of the MX host matches its certificate chain")
    }
}

impl std::error::Error for NoMatch {}
