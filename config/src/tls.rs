//! Loading the operator's certificate and key, and checking that they belong together.

use std::sync::Arc;

use rustls::crypto::ring::default_provider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::server::TlsFiles;

/// A certificate chain with its private key, loaded and checked to match.
#[derive(Debug)]
pub struct TlsMaterial {
    pub certified_key: Arc<CertifiedKey>,
}

/// Reads both PEM files and checks that the key matches the first certificate.
/// The error text is meant for the operator and names the file at fault.
pub fn load_tls_material(files: &TlsFiles) -> Result<TlsMaterial, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|error| format!("cannot read certificate `{}`: {error}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|error| format!("`{}` is not a PEM certificate chain: {error}", files.cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "`{}` holds no certificate (expected PEM blocks `-----BEGIN CERTIFICATE-----`)",
            files.cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|error| {
        format!("`{}` holds no usable private key (expected PEM PKCS#8, PKCS#1 or SEC1): {error}", files.key.display())
    })?;
    let signing_key = default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|error| format!("`{}`: unsupported private key: {error}", files.key.display()))?;
    let certified_key = CertifiedKey::new(chain, signing_key);
    certified_key.keys_match().map_err(|_| {
        format!(
            "the key in `{}` does not match the certificate in `{}` (expected the key the certificate was issued for)",
            files.key.display(),
            files.cert.display()
        )
    })?;
    Ok(TlsMaterial { certified_key: Arc::new(certified_key) })
}
