//! lienthong's internal DNS (placeholder: the DNS issue fills this in).

use std::sync::Arc;

use lienthong_config::Config;

/// Errors of the DNS service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listen socket could not be bound; names the address.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// The running DNS service.
pub struct DnsService {
    _config: Arc<Config>,
}

impl DnsService {
    /// Binds every listener and starts answering.
    pub async fn start(config: Arc<Config>, _published: Vec<String>) -> Result<Self, Error> {
        Ok(Self { _config: config })
    }

    /// Applies a new, already validated config.
    pub async fn reload(&self, _config: Arc<Config>, _published: Vec<String>) -> Result<(), Error> {
        Ok(())
    }

    /// True while every listener is serving.
    pub fn is_serving(&self) -> bool {
        true
    }

    /// Stops accepting and finishes in-flight work.
    pub async fn shutdown(self) {}
}

/// Checks what only the DNS service can check (zone files, inline record syntax).
/// Each problem is one line, `FILE:LINE:COL: key.path: message`.
pub fn check(_config: &Config) -> Vec<String> {
    Vec::new()
}

/// Every record the server will serve, in zone-file syntax (`lienthong dns records`).
pub fn render_records(_config: &Config, _published: &[String]) -> Result<String, Error> {
    Ok(String::new())
}
