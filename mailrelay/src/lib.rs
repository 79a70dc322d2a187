//! lienthong's mail relay (placeholder: the mail issue fills this in).

use std::sync::Arc;

use lienthong_config::Config;
use rustls::server::ResolvesServerCert;

/// Errors of the mail service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listen socket could not be bound; names the address.
    #[error("cannot listen on {address}: {source}")]
    Bind { address: std::net::SocketAddr, source: std::io::Error },
}

/// One queued message as the operator sees it (`lienthong queue list`).
#[derive(Debug, Clone)]
pub struct QueueEntry {
    pub id: String,
    pub sender: String,
    pub recipients: Vec<String>,
    pub size: u64,
    pub arrived_unix: u64,
    pub attempts: u32,
    pub next_attempt_unix: u64,
    pub last_error: Option<String>,
}

/// The running mail relay.
pub struct MailService {
    _config: Arc<Config>,
}

impl MailService {
    /// Opens the queue, binds every listener and starts delivering.
    pub async fn start(config: Arc<Config>, _certificates: Arc<dyn ResolvesServerCert>) -> Result<Self, Error> {
        Ok(Self { _config: config })
    }

    /// Applies a new, already validated config without dropping sessions in progress.
    pub async fn reload(&self, _config: Arc<Config>) -> Result<(), Error> {
        Ok(())
    }

    pub fn is_serving(&self) -> bool {
        true
    }

    /// Stops accepting, lets sessions and deliveries in flight finish within a bound.
    pub async fn shutdown(self) {}

    pub async fn queue_list(&self) -> Vec<QueueEntry> {
        Vec::new()
    }

    /// Envelope, headers and delivery history of one message; never its body.
    pub async fn queue_show(&self, _id: &str) -> Option<String> {
        None
    }

    /// Schedules one message (or all with `None`) for immediate delivery; returns how many.
    pub async fn queue_flush(&self, _id: Option<&str>) -> usize {
        0
    }

    /// Deletes a message from the queue without delivering it.
    pub async fn queue_remove(&self, _id: &str) -> bool {
        false
    }
}
