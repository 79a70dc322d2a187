//! lienthong's conferences (placeholder: the conference issue fills this in).

use std::sync::Arc;

use lienthong_config::Config;
use rustls::server::ResolvesServerCert;

/// Errors of the conference service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listen socket could not be bound; names the address.
    #[error("cannot listen on {address}: {source}")]
    Bind { address: std::net::SocketAddr, source: std::io::Error },
}

/// The running conference service: web page, signaling and the media port.
pub struct ConferenceService {
    _config: Arc<Config>,
}

impl ConferenceService {
    pub async fn start(config: Arc<Config>, _certificates: Arc<dyn ResolvesServerCert>) -> Result<Self, Error> {
        Ok(Self { _config: config })
    }

    /// Applies new rooms and PINs; removed rooms end with a message to their participants.
    pub async fn reload(&self, _config: Arc<Config>) -> Result<(), Error> {
        Ok(())
    }

    pub fn is_serving(&self) -> bool {
        true
    }

    pub async fn shutdown(self) {}
}
