//! Test support, not shipped: runs only the mail relay from a config file, without TLS
//! certificates, so the crash test can `kill -9` a real process and start it again.
//! Usage: `mailrelay-test-server CONFIG`.

use std::path::Path;
use std::sync::Arc;

use lienthong_mailrelay::MailService;

/// No certificate: STARTTLS handshakes fail, plain SMTP works.
#[derive(Debug)]
struct NoCertificate;

impl rustls::server::ResolvesServerCert for NoCertificate {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        None
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: mailrelay-test-server CONFIG");
        return std::process::ExitCode::from(2);
    };
    let config = match lienthong_config::load(Path::new(&path)) {
        Ok(config) => Arc::new(config),
        Err(errors) => {
            eprintln!("{errors}");
            return std::process::ExitCode::from(2);
        }
    };
    match MailService::start(config, Arc::new(NoCertificate)).await {
        Ok(_service) => {
            println!("ready");
            std::future::pending::<()>().await;
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            std::process::ExitCode::FAILURE
        }
    }
}
