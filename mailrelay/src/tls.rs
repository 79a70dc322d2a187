//! TLS for both directions: the listeners (the appliance's certificate, via the binary's
//! reload-aware resolver) and outbound STARTTLS.

use std::path::Path;
use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ResolvesServerCert;

use crate::session::TlsInfo;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.2 and 1.3 with the certificate the binary provides (swapped behind it on SIGHUP).
pub fn server_config(certificates: Arc<dyn ResolvesServerCert>) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(certificates);
    Ok(Arc::new(config))
}

/// Outbound TLS for `require_tls_to` destinations: the chain must lead to a system root or to
/// one of `ca_file`'s certificates, and the certificate must name the host (RFC 6125), as with
/// Postfix's `smtp_tls_security_level = verify`. Returns the config and how many anchors it has.
pub fn verified_client_config(ca_file: Option<&Path>) -> Result<(Arc<rustls::ClientConfig>, usize), crate::Error> {
    let mut roots = rustls::RootCertStore::empty();
    let system = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(system.certs);
    let mut anchors = added;
    if let Some(path) = ca_file {
        let failure = |reason: String| crate::Error::CaFile { path: path.to_owned(), reason };
        let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|error| failure(error.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|error| failure(error.to_string()))?;
        if certificates.is_empty() {
            return Err(failure("no PEM certificate in the file".into()));
        }
        for certificate in certificates {
            roots.add(certificate).map_err(|error| failure(error.to_string()))?;
            anchors += 1;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((Arc::new(config), anchors))
}

/// Outbound TLS elsewhere. SMTP between relays encrypts opportunistically and does not authenticate the
/// peer (RFC 7435): most MX certificates do not match their names, and a failed check would
/// only push the message back to clear text. So the chain is not checked against trust
/// anchors, but the handshake signature is, which keeps the connection encrypted to whoever
/// holds the presented key.
pub fn client_config() -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let provider = provider();
    let verifier = Arc::new(EncryptOnly { provider: provider.clone() });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct EncryptOnly {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
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

/// A short description of a negotiated TLS session.
pub trait TlsInfoExt {
    fn info(&self) -> TlsInfo;
    fn describe(&self) -> String {
        let info = self.info();
        format!("{} {}", info.protocol, info.cipher)
    }
}

impl TlsInfoExt for rustls::CommonState {
    fn info(&self) -> TlsInfo {
        let protocol = match self.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
            Some(other) => format!("{other:?}"),
            None => "TLS".to_owned(),
        };
        let cipher =
            self.negotiated_cipher_suite().and_then(|suite| suite.suite().as_str()).unwrap_or("unknown").to_owned();
        TlsInfo { protocol, cipher }
    }
}
