//! Runs the conference service alone (page, signaling, SFU and TURN) from a lienthong config
//! file, with a fresh self-signed certificate, until Ctrl-C. For measuring the conference
//! path in a release build without building the mail relay and DNS:
//! `cargo run --release -p lienthong-sfu --example conference -- bench.toml`.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug)]
struct OneCertificate(Arc<CertifiedKey>);

impl ResolvesServerCert for OneCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: conference CONFIG.toml")?;
    let config = lienthong_config::load(std::path::Path::new(&path))
        .map_err(|errors| errors.0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))?;
    let generated = rcgen::generate_simple_self_signed(vec![config.conference.hostname.to_string()])?;
    let certificate = CertificateDer::from(generated.cert.der().to_vec());
    let key = PrivateKeyDer::try_from(generated.signing_key.serialize_der())?;
    let signing_key = rustls::crypto::ring::default_provider().key_provider.load_private_key(key)?;
    let resolver = Arc::new(OneCertificate(Arc::new(CertifiedKey::new(vec![certificate], signing_key))));
    let service = lienthong_sfu::ConferenceService::start(Arc::new(config), resolver).await?;
    println!("conference service listening on {:?}", service.page_address());
    tokio::signal::ctrl_c().await?;
    service.shutdown().await;
    Ok(())
}
