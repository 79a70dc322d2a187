//! lienthong's gov.vn mail relay: SMTP in (MX, submission, submissions), a durable queue, and
//! delivery to the province's mailbox servers and the outside world.
//!
//! Code map: [`session`] is the sans-IO SMTP server state machine; [`server`] drives it over
//! sockets; [`queue`] keeps messages on disk (group commit) and schedules retries;
//! [`delivery`] and [`outbound`] send them on; [`dsn`] writes bounces.

#![forbid(unsafe_code)]

pub mod address;
mod auth;
mod delivery;
pub mod dsn;
pub mod message;
pub mod outbound;
pub mod queue;
pub mod resolver;
mod server;
pub mod session;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use lienthong_config::{Config, QueuePolicy};
use rustls::server::ResolvesServerCert;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use auth::AuthFailures;
pub use resolver::{DnsLookup, Exchanger, LookupFailure, MailExchangerLookup, StaticLookup};
use session::{AuthOutcome, Incoming, Listener, Policy};

/// Errors of the mail service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listen socket could not be bound; names the address.
    #[error("cannot listen on {address}: {source}")]
    Bind { address: std::net::SocketAddr, source: std::io::Error },
    /// The queue directory could not be opened or recovered.
    #[error("cannot open the mail queue in {path}: {source}")]
    Queue { path: std::path::PathBuf, source: std::io::Error },
    /// TLS could not be set up.
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// One queued message as the operator sees it (`lienthong queue list`).
#[derive(Debug, Clone, serde::Serialize)]
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

/// Where mail goes, from the config (swapped on reload).
#[derive(Debug)]
pub(crate) struct Routes {
    pub hostname: String,
    pub local: HashMap<String, SocketAddr>,
    pub smarthost: Option<SocketAddr>,
    pub require_tls_to: Vec<String>,
    pub queue: QueuePolicy,
}

impl Routes {
    fn from_config(config: &Config) -> Self {
        let mail = &config.mail;
        Self {
            hostname: mail.hostname.as_str().to_owned(),
            local: mail.domains.iter().map(|domain| (domain.name.as_str().to_owned(), domain.deliver_to)).collect(),
            smarthost: mail.outbound.smarthost,
            require_tls_to: mail.outbound.require_tls_to.iter().map(|domain| domain.as_str().to_owned()).collect(),
            queue: mail.queue.clone(),
        }
    }

    /// Foreign domains listed in `require_tls_to` (or below them) are never sent in clear.
    pub fn requires_tls(&self, domain: &str) -> bool {
        self.require_tls_to.iter().any(|suffix| {
            domain == suffix || domain.strip_suffix(suffix.as_str()).is_some_and(|head| head.ends_with('.'))
        })
    }
}

/// What sessions and deliveries share.
pub(crate) struct Shared {
    policy: RwLock<Arc<Policy>>,
    routes: RwLock<Arc<Routes>>,
    passwords: RwLock<Arc<HashMap<String, String>>>,
    auth_failures: AuthFailures,
    pub queue: queue::Queue,
    pub client: outbound::Client,
    pub lookup: Arc<dyn MailExchangerLookup>,
    pub tls_server: Arc<rustls::ServerConfig>,
}

impl Shared {
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    pub fn routes(&self) -> Arc<Routes> {
        self.routes.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn apply(&self, config: &Config) {
        *self.policy.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(Policy::from_config(config));
        *self.routes.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(Routes::from_config(config));
        let passwords = config.mail.users.iter().map(|user| (user.login.clone(), user.password_hash.clone())).collect();
        *self.passwords.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(passwords);
    }

    /// Checks AUTH credentials: rate limit per client address first, then argon2id off the
    /// async threads. Never logs the password.
    pub async fn authenticate(&self, peer: std::net::IpAddr, login: &str, password: String) -> AuthOutcome {
        let now = std::time::Instant::now();
        if self.auth_failures.is_blocked(peer, now) {
            metrics::counter!("lienthong_mail_auth_total", "result" => "rate_limited").increment(1);
            tracing::warn!(%peer, login, "AUTH refused: too many recent failures from this address");
            return AuthOutcome::RateLimited;
        }
        let hash = self.passwords.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(login).cloned();
        let accepted =
            tokio::task::spawn_blocking(move || auth::verify(hash.as_deref(), &password)).await.unwrap_or(false);
        if accepted {
            metrics::counter!("lienthong_mail_auth_total", "result" => "ok").increment(1);
            tracing::info!(%peer, login, "AUTH accepted");
            AuthOutcome::Accepted
        } else {
            self.auth_failures.record(peer, std::time::Instant::now());
            metrics::counter!("lienthong_mail_auth_total", "result" => "failed").increment(1);
            tracing::warn!(%peer, login, "AUTH failed");
            AuthOutcome::Rejected
        }
    }

    /// Makes an accepted message durable; `Ok(queue id)` only once it is on disk.
    pub async fn accept_message(&self, incoming: Incoming, now_unix: u64) -> Result<String, String> {
        let id = new_queue_id();
        let hostname = self.routes().hostname.clone();
        let content = message::compose(&id, &incoming, &hostname, now_unix);
        let meta = queue::Meta::new(id.clone(), &incoming.envelope, content.len() as u64, now_unix);
        let recipients = incoming.envelope.recipients.len();
        match self.queue.enqueue(meta, content).await {
            Ok(()) => {
                metrics::counter!("lienthong_mail_accepted_total").increment(1);
                let sender = incoming.envelope.sender.as_ref().map(ToString::to_string).unwrap_or_default();
                tracing::info!(queue_id = %id, from = %sender, recipients, peer = %incoming.trace.peer,
                    user = incoming.trace.authenticated.as_deref().unwrap_or(""), "accepted");
                Ok(id)
            }
            Err(error) => {
                tracing::error!(%error, "cannot store an incoming message; client told to retry");
                Err("queue write failed".into())
            }
        }
    }
}

/// The running mail relay.
pub struct MailService {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    serving: Arc<AtomicBool>,
}

impl MailService {
    /// Opens the queue, binds every listener and starts delivering. MX lookups use
    /// `config.dns.forwarders`, else the system resolver configuration.
    pub async fn start(config: Arc<Config>, certificates: Arc<dyn ResolvesServerCert>) -> Result<Self, Error> {
        let lookup: Arc<dyn MailExchangerLookup> = match DnsLookup::new(&config.dns.forwarders) {
            Ok(lookup) => Arc::new(lookup),
            Err(reason) => {
                tracing::warn!(%reason, "no DNS for MX lookups: foreign mail will wait in the queue (set dns.forwarders)");
                Arc::new(resolver::UnavailableLookup { reason })
            }
        };
        Self::start_with_lookup(config, certificates, lookup).await
    }

    /// Like [`MailService::start`] with another MX lookup (tests, isolated networks).
    pub async fn start_with_lookup(
        config: Arc<Config>,
        certificates: Arc<dyn ResolvesServerCert>,
        lookup: Arc<dyn MailExchangerLookup>,
    ) -> Result<Self, Error> {
        let queue_path = config.server.state_dir.join("mail").join("queue");
        let queue = queue::Queue::open(&queue_path).map_err(|source| Error::Queue { path: queue_path, source })?;
        let tls_server = tls::server_config(certificates)?;
        let client = outbound::Client::new(config.mail.hostname.as_str().to_owned(), tls::client_config()?);
        let shared = Arc::new(Shared {
            policy: RwLock::new(Arc::new(Policy::from_config(&config))),
            routes: RwLock::new(Arc::new(Routes::from_config(&config))),
            passwords: RwLock::new(Arc::new(HashMap::new())),
            auth_failures: AuthFailures::default(),
            queue,
            client,
            lookup,
            tls_server,
        });
        shared.apply(&config);

        let mut listeners = Vec::new();
        for (address, kind) in [
            (config.mail.mx_listen, Listener::Mx),
            (config.mail.submission_listen, Listener::Submission),
            (config.mail.submissions_listen, Listener::Submissions),
        ] {
            let Some(address) = address else { continue };
            let listener = TcpListener::bind(address).await.map_err(|source| Error::Bind { address, source })?;
            tracing::info!(%address, listener = ?kind, "mail listener ready");
            listeners.push((listener, kind));
        }

        let (shutdown, receiver) = watch::channel(false);
        let sessions = Arc::new(Semaphore::new(server::MAX_SESSIONS));
        let mut tasks = Vec::new();
        for (listener, kind) in listeners {
            tasks.push(tokio::spawn(server::accept_loop(
                listener,
                kind,
                shared.clone(),
                sessions.clone(),
                receiver.clone(),
            )));
        }
        tasks.push(tokio::spawn(delivery::run(shared.clone(), receiver)));
        Ok(Self { shared, shutdown, tasks, serving: Arc::new(AtomicBool::new(true)) })
    }

    /// Applies a new, already validated config without dropping sessions in progress: new
    /// domains, users and limits apply to new sessions and to the next delivery attempts.
    /// Listener addresses are bound at start; changing them needs a restart.
    pub async fn reload(&self, config: Arc<Config>) -> Result<(), Error> {
        self.shared.apply(&config);
        tracing::info!("mail relay configuration reloaded");
        Ok(())
    }

    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Relaxed) && self.tasks.iter().all(|task| !task.is_finished())
    }

    /// Stops accepting, tells idle sessions 421, lets deliveries in flight finish (<= 10 s).
    pub async fn shutdown(self) {
        self.serving.store(false, Ordering::Relaxed);
        let _ = self.shutdown.send(true);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        for task in self.tasks {
            let _ = tokio::time::timeout_at(deadline, task).await;
        }
    }

    pub async fn queue_list(&self) -> Vec<QueueEntry> {
        self.shared.queue.list()
    }

    /// Envelope, headers and delivery history of one message; never its body.
    pub async fn queue_show(&self, id: &str) -> Option<String> {
        self.shared.queue.show(id).await
    }

    /// Schedules one message (or all with `None`) for immediate delivery; returns how many.
    pub async fn queue_flush(&self, id: Option<&str>) -> usize {
        self.shared.queue.flush(id, unix_now())
    }

    /// Deletes a message from the queue without delivering it.
    pub async fn queue_remove(&self, id: &str) -> bool {
        let removed = self.shared.queue.remove(id).await;
        if removed {
            tracing::info!(queue_id = id, "removed by the operator");
        }
        removed
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_secs()).unwrap_or(0)
}

/// Queue ids: microseconds since the epoch and a per-process counter, in hex (sortable).
pub(crate) fn new_queue_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let micros = SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_micros() as u64).unwrap_or(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{micros:013X}{:04X}", count & 0xFFFF)
}
