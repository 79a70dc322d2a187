//! With `conference.tls = true` the page and the signaling WebSocket are served over HTTPS
//! with the certificate the binary hands in.

mod common;

use std::path::Path;
use std::sync::Arc;

use lienthong_sfu::ConferenceService;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug)]
struct OneCertificate(Arc<CertifiedKey>);

impl ResolvesServerCert for OneCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

#[tokio::test]
async fn the_page_is_served_over_tls_1_2_or_newer() {
    let generated = rcgen::generate_simple_self_signed(vec!["hub.ninhthuan.gov.vn".to_owned()]).unwrap();
    let certificate = CertificateDer::from(generated.cert.der().to_vec());
    let key = PrivateKeyDer::try_from(generated.signing_key.serialize_der()).unwrap();
    let signing_key = rustls::crypto::ring::default_provider().key_provider.load_private_key(key).unwrap();
    let resolver = OneCertificate(Arc::new(CertifiedKey::new(vec![certificate.clone()], signing_key)));

    let source = format!(
        r#"
[server]
hostname = "hub.ninhthuan.gov.vn"
addresses = ["127.0.0.1"]
[dns]
enabled = false
[mail]
enabled = false
[conference]
listen = "127.0.0.1:0"
tls = true
media_port = 10000
{}
"#,
        common::ROOMS
    );
    let mut config = lienthong_config::parse(&source, "test.toml", Path::new("/tmp")).unwrap();
    config.conference.media_port = 0;
    let config = Arc::new(config);
    let service = ConferenceService::start(config, Arc::new(resolver)).await.unwrap();
    let address = service.page_address().unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certificate).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let name = ServerName::try_from("hub.ninhthuan.gov.vn").unwrap();
    let mut stream = connector.connect(name, stream).await.expect("TLS 1.2 handshake");
    let request = "GET /r/giao-ban HTTP/1.1\r\nHost: hub.ninhthuan.gov.vn\r\nConnection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    // A TLS peer may close without close_notify; what was read before counts.
    let _ = stream.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("/assets/room.js"));

    // Plain HTTP on the TLS port gets nowhere.
    let mut plain = tokio::net::TcpStream::connect(address).await.unwrap();
    plain.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer).await;
    assert!(!String::from_utf8_lossy(&answer).contains("HTTP/1.1 200"));
    service.shutdown().await;
}
