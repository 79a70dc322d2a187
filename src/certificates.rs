//! The certificate every TLS listener presents: the operator's files, or a self-signed one
//! generated in the state directory on first start. Swapped in place on reload, so services
//! never rebuild their TLS configs.

use std::path::Path;
use std::sync::{Arc, RwLock};

use anyhow::Context as _;
use lienthong_config::{Config, TlsFiles, load_tls_material};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A `ResolvesServerCert` whose certificate can be replaced while listeners run.
#[derive(Debug)]
pub struct Certificates {
    current: RwLock<Arc<CertifiedKey>>,
}

impl Certificates {
    pub fn new(key: Arc<CertifiedKey>) -> Self {
        Self { current: RwLock::new(key) }
    }

    pub fn replace(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = key;
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone())
    }
}

/// Loads the configured certificate, or the self-signed one (creating it when absent).
pub fn load(config: &Config) -> anyhow::Result<Arc<CertifiedKey>> {
    if let Some(files) = &config.server.tls {
        return load_tls_material(files).map(|material| material.certified_key).map_err(anyhow::Error::msg);
    }
    let directory = config.server.state_dir.join("tls");
    let files = TlsFiles { cert: directory.join("self-signed.crt"), key: directory.join("self-signed.key") };
    if !files.cert.exists() || !files.key.exists() {
        generate_self_signed(config, &directory, &files)?;
    }
    load_tls_material(&files).map(|material| material.certified_key).map_err(anyhow::Error::msg)
}

fn generate_self_signed(config: &Config, directory: &Path, files: &TlsFiles) -> anyhow::Result<()> {
    let mut names = vec![
        config.server.hostname.to_string(),
        config.mail.hostname.to_string(),
        config.conference.hostname.to_string(),
        "localhost".to_owned(),
    ];
    names.extend(config.server.addresses.iter().map(ToString::to_string));
    names.sort();
    names.dedup();
    let generated =
        rcgen::generate_simple_self_signed(names.clone()).context("generating a self-signed certificate")?;
    lienthong_config::state::create_private_dir(directory)
        .with_context(|| format!("creating {}", directory.display()))?;
    for (path, contents) in [(&files.key, generated.signing_key.serialize_pem()), (&files.cert, generated.cert.pem())] {
        lienthong_config::state::write_private(path, contents.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    tracing::warn!(
        cert = %files.cert.display(),
        names = ?names,
        "no tls_cert configured: generated a self-signed certificate; clients will warn until you set server.tls_cert"
    );
    Ok(())
}
