//! lienthong's gov.vn mail relay: SMTP in (MX, submission, submissions), a durable queue, and
//! delivery to the province's mailbox servers and the outside world.
//!
//! Code map: [`session`] is the sans-IO SMTP server state machine; [`server`] drives it over
//! sockets; [`queue`] keeps messages on disk (group commit) and schedules retries;
//! [`delivery`] and [`outbound`] send them on; [`dsn`] writes bounces; [`dkim`] signs the
//! province's outgoing mail at intake.

#![forbid(unsafe_code)]

pub mod address;
pub mod audit;
pub(crate) mod auth;
mod connections;
pub mod dane;
mod delivery;
pub mod dkim;
pub mod dsn;
pub mod esmtp;
pub mod limits;
pub mod message;
pub mod mta_sts;
pub mod outbound;
pub mod queue;
pub mod resolver;
pub mod senders;
mod server;
pub mod session;
pub mod tls;
mod verify;

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

pub use resolver::{DnsLookup, Exchanger, LookupFailure, MailExchangerLookup, Myself, StaticLookup};
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
    /// The audit directory could not be created or opened.
    #[error("cannot open the mail audit log in {path}: {source}")]
    Audit { path: std::path::PathBuf, source: std::io::Error },
    /// TLS could not be set up.
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
    /// `mail.outbound.ca_file` could not be read as PEM certificates.
    #[error("cannot use {path} as CA certificates: {reason}")]
    CaFile { path: std::path::PathBuf, reason: String },
    /// DKIM keys in `state_dir` could not be created, read or written.
    #[error("DKIM keys: {path}: {reason}")]
    Dkim { path: std::path::PathBuf, reason: String },
    /// An operator command named a domain that is not in `[[mail.domain]]`.
    #[error("{0} is not a local mail domain ([[mail.domain]])")]
    NotLocal(String),
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
    /// `mail.outbound.mta_sts`: look up recipient domains' MTA-STS policies.
    pub mta_sts: bool,
    /// `mail.outbound.dane`: look up TLSA records of MX hosts DNSSEC vouches for.
    pub dane: bool,
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
            mta_sts: mail.outbound.mta_sts,
            dane: mail.outbound.dane,
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
    authenticator: auth::Authenticator,
    /// Open sessions per client (for `max_connections_per_client`).
    pub connections: Arc<connections::ClientConnections>,
    /// Cached answers of the local mailbox servers about recipients, and the probes in flight.
    recipients: verify::RecipientVerifier,
    /// The one budget for message data held by sessions (kept across reloads).
    memory: Arc<session::memory::MemoryBudget>,
    /// Hourly counters and suspended users (kept across reloads, settings swapped).
    limits: Arc<limits::Limits>,
    pub queue: queue::Queue,
    pub client: outbound::Client,
    /// Recipient domains' MTA-STS policies (cache kept across reloads).
    pub mta_sts: mta_sts::MtaSts,
    /// DNSSEC status and TLSA records of MX hosts (RFC 7672).
    pub dane: dane::DaneLookup,
    pub lookup: Arc<dyn MailExchangerLookup>,
    pub tls_server: Arc<rustls::ServerConfig>,
    pub dkim: dkim::Signer,
    pub audit: audit::Audit,
    /// SPF/DKIM/ARC/DMARC of mail from outside (rebuilt on reload).
    senders: RwLock<Arc<SenderState>>,
}

/// Whether and how mail from outside is checked.
enum SenderState {
    Off,
    On(Box<senders::SenderChecks>),
    /// Checks are on but no resolver could be built: mail from outside is deferred.
    Broken,
}

/// A message refused after its data was read.
pub(crate) struct Refusal {
    pub code: u16,
    pub enhanced: &'static str,
    pub text: String,
}

impl Shared {
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    pub fn routes(&self) -> Arc<Routes> {
        self.routes.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn apply(&self, config: &Config) {
        let mut policy = Policy::from_config(config);
        self.memory.set_limit(usize::try_from(config.mail.max_message_memory).unwrap_or(usize::MAX));
        policy.memory = self.memory.clone();
        self.limits.set_config(config);
        policy.limits = self.limits.clone();
        *self.policy.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(policy);
        *self.routes.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(Routes::from_config(config));
        let passwords = config.mail.users.iter().map(|user| (user.login.clone(), user.password_hash.clone())).collect();
        *self.passwords.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(passwords);
        let senders = if !config.mail.check_senders {
            SenderState::Off
        } else {
            match senders::SenderChecks::new(&config.dns.forwarders, config.mail.dmarc_enforcement) {
                Ok(checks) => SenderState::On(Box::new(checks)),
                Err(reason) => {
                    tracing::warn!(%reason, "no DNS for sender checks: mail from outside will be deferred (set dns.forwarders)");
                    SenderState::Broken
                }
            }
        };
        *self.senders.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(senders);
    }

    /// Checks SPF, DKIM, ARC and DMARC of a message from outside (not logged in, outside
    /// `relay_from`), replaces any `Authentication-Results:` that claims this relay with its
    /// own, and marks a quarantined message. `Ok(None)`: not checked (trusted, or checks off).
    pub(crate) async fn check_sender(&self, incoming: &mut Incoming) -> Result<Option<senders::Checked>, Refusal> {
        let policy = self.policy();
        if incoming.trace.authenticated.is_some() || policy.may_relay_without_auth(incoming.trace.peer) {
            return Ok(None);
        }
        let state = self.senders.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let checks = match &*state {
            SenderState::Off => return Ok(None),
            SenderState::Broken => {
                return Err(Refusal {
                    code: 451,
                    enhanced: "4.4.3",
                    text: "Sender authentication cannot be checked now (no DNS); try again later".into(),
                });
            }
            SenderState::On(checks) => checks,
        };
        let sender = incoming.envelope.sender.as_ref().map(ToString::to_string).unwrap_or_default();
        let context = senders::Context { peer: incoming.trace.peer, helo: &incoming.trace.helo, sender: &sender };
        let hostname = policy.hostname.clone();
        let checked = checks
            .check(&incoming.content, &context, &hostname, |domain| {
                policy.local_domains.contains(&domain.to_ascii_lowercase())
            })
            .await;
        let verdict = match &checked.verdict {
            senders::Verdict::Accept => "accept",
            senders::Verdict::Quarantine => "quarantine",
            senders::Verdict::Refuse { .. } => "refuse",
            senders::Verdict::Retry { .. } => "retry",
        };
        metrics::counter!("lienthong_mail_sender_checks_total", "dmarc" => checked.dmarc, "verdict" => verdict)
            .increment(1);
        tracing::info!(peer = %incoming.trace.peer, from = %sender, spf = checked.spf, dkim = checked.dkim,
            arc = checked.arc, dmarc = checked.dmarc, header_from = %checked.from_domain, verdict, "sender checked");
        match &checked.verdict {
            senders::Verdict::Refuse { enhanced, text } => {
                return Err(Refusal { code: 550, enhanced, text: text.clone() });
            }
            senders::Verdict::Retry { text } => {
                return Err(Refusal { code: 451, enhanced: "4.4.3", text: text.clone() });
            }
            senders::Verdict::Accept | senders::Verdict::Quarantine => {}
        }
        // One copy of the message while it is rebuilt; the received one is freed at once.
        let content = {
            let stripped = senders::strip_forged_results(&incoming.content, &hostname);
            let mut content = Vec::with_capacity(stripped.len() + checked.header.len() + 32);
            content.extend_from_slice(checked.header.as_bytes());
            if checked.verdict == senders::Verdict::Quarantine {
                content.extend_from_slice(b"X-Spam-Flag: YES\r\n");
            }
            content.extend_from_slice(&stripped);
            content
        };
        incoming.content = content;
        Ok(Some(checked))
    }

    /// Checks AUTH credentials: the attempt is counted against the client first, then argon2id
    /// runs off the async threads with a cap on verifications at once. Never logs the password.
    pub async fn authenticate(&self, peer: std::net::IpAddr, login: &str, password: String) -> AuthOutcome {
        let hash = self.passwords.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(login).cloned();
        let (outcome, result) = match self.authenticator.check(peer, hash, password).await {
            // Only after the password matched, so suspension reveals nothing to a guesser.
            auth::Verdict::Accepted if self.limits.is_suspended(login) => (AuthOutcome::Suspended, "suspended"),
            auth::Verdict::Accepted => (AuthOutcome::Accepted, "ok"),
            auth::Verdict::Rejected => (AuthOutcome::Rejected, "failed"),
            auth::Verdict::RateLimited => (AuthOutcome::RateLimited, "rate_limited"),
            auth::Verdict::Busy => (AuthOutcome::Busy, "busy"),
        };
        metrics::counter!("lienthong_mail_auth_total", "result" => result).increment(1);
        match outcome {
            AuthOutcome::Accepted => tracing::info!(%peer, login, "AUTH accepted"),
            AuthOutcome::Rejected => tracing::warn!(%peer, login, "AUTH failed"),
            AuthOutcome::RateLimited => {
                tracing::warn!(%peer, login, "AUTH refused: too many recent failures from this client")
            }
            AuthOutcome::Busy => tracing::warn!(%peer, login, "AUTH deferred: too many verifications in progress"),
            AuthOutcome::Suspended => tracing::warn!(%peer, login, "AUTH refused: account suspended by the operator"),
        }
        outcome
    }

    /// Whether a local domain's mailbox server takes mail for `recipient` (cached probe).
    pub async fn verify_recipient(&self, recipient: &address::Address) -> session::RecipientStatus {
        let server = self.routes().local.get(recipient.domain()).copied();
        match server {
            Some(server) => {
                let ask = || self.client.probe_recipient(server, outbound::TlsPolicy::Opportunistic, recipient);
                self.recipients.check(server, recipient, std::time::Instant::now(), ask).await
            }
            // Not a local domain (any more, after a reload): the delivery decides.
            None => session::RecipientStatus::Exists,
        }
    }

    /// Bytes of message data that sessions hold in memory now.
    pub fn message_memory_used(&self) -> usize {
        self.memory.used()
    }

    /// Makes an accepted message durable; `Ok(queue id)` only once it is on disk.
    pub(crate) async fn accept_message(
        &self,
        mut incoming: Incoming,
        checked: Option<&senders::Checked>,
        now_unix: u64,
    ) -> Result<String, String> {
        let id = new_queue_id();
        let hostname = self.routes().hostname.clone();
        let content = message::compose(&id, &incoming, &hostname, now_unix);
        // The composed copy is what gets stored: free the received one now (memory budget).
        incoming.content = Vec::new();
        let trusted =
            incoming.trace.authenticated.is_some() || self.policy().may_relay_without_auth(incoming.trace.peer);
        let (content, signed) = self.dkim.sign(content, trusted);
        let record =
            audit::accepted(&id, &incoming.trace, &incoming.envelope, &content, signed.as_ref(), checked, now_unix);
        let meta = queue::Meta::new(id.clone(), &incoming.envelope, content.len() as u64, now_unix);
        let recipients = incoming.envelope.recipients.len();
        // Both flushes run at once: the audit line costs no fsync of its own per message.
        let (queued, audited) =
            tokio::join!(self.queue.enqueue(meta, content), self.audit.write_durable(&record, now_unix));
        match (queued, audited) {
            (Ok(()), Ok(())) => {
                metrics::counter!("lienthong_mail_accepted_total").increment(1);
                let sender = incoming.envelope.sender.as_ref().map(ToString::to_string).unwrap_or_default();
                tracing::info!(queue_id = %id, from = %sender, recipients, peer = %incoming.trace.peer,
                    user = incoming.trace.authenticated.as_deref().unwrap_or(""), "accepted");
                Ok(id)
            }
            (Ok(()), Err(error)) => {
                // No 250 without its audit line: take the message back out, the client retries.
                tracing::error!(%error, "cannot write the mail audit log; client told to retry");
                self.queue.remove(&id).await;
                Err("audit log write failed".into())
            }
            (Err(error), audited) => {
                tracing::error!(%error, "cannot store an incoming message; client told to retry");
                if audited.is_ok() {
                    self.audit
                        .write(&audit::Record::NotQueued { queue_id: id, time: audit::rfc3339(now_unix) }, now_unix);
                }
                Err("queue write failed".into())
            }
        }
    }
}

/// What [`MailService::start_with`] takes from outside instead of the real world.
pub struct Outside {
    /// MX lookups.
    pub lookup: Arc<dyn MailExchangerLookup>,
    /// The port MTA-STS policies are fetched from (443; a loopback test server's port).
    pub mta_sts_port: u16,
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
        let myself = resolver::Myself {
            hostnames: vec![config.mail.hostname.as_str().to_owned(), config.server.hostname.as_str().to_owned()],
            addresses: config.server.addresses.clone(),
        };
        let lookup: Arc<dyn MailExchangerLookup> = match DnsLookup::new(&config.dns.forwarders, myself) {
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
        Self::start_with(config, certificates, Outside { lookup, mta_sts_port: 443 }).await
    }

    /// Like [`MailService::start`] with the outside world replaced (tests).
    pub async fn start_with(
        config: Arc<Config>,
        certificates: Arc<dyn ResolvesServerCert>,
        outside: Outside,
    ) -> Result<Self, Error> {
        let Outside { lookup, mta_sts_port } = outside;
        let queue_path = config.server.state_dir.join("mail").join("queue");
        let queue = queue::Queue::open(&queue_path).map_err(|source| Error::Queue { path: queue_path, source })?;
        let audit_path = audit::directory(&config.server.state_dir);
        let audit = audit::Audit::open(&audit_path, config.mail.audit_retention_days)
            .map_err(|source| Error::Audit { path: audit_path, source })?;
        let tls_server = tls::server_config(certificates)?;
        let dkim = dkim::Signer::open(
            &config.server.state_dir,
            &domain_names(&config),
            dkim::in_flight_secs(config.mail.queue.give_up_after),
            unix_now(),
        )?;
        let verified = verified_client_config(&config)?;
        let client =
            outbound::Client::new(config.mail.hostname.as_str().to_owned(), tls::client_config()?, verified.clone());
        let mta_sts =
            mta_sts::MtaSts::new(&config.dns.forwarders, verified, mta_sts_port, &config.server.state_dir, unix_now());
        let shared = Arc::new(Shared {
            policy: RwLock::new(Arc::new(Policy::from_config(&config))),
            routes: RwLock::new(Arc::new(Routes::from_config(&config))),
            passwords: RwLock::new(Arc::new(HashMap::new())),
            authenticator: auth::Authenticator::default(),
            connections: Arc::default(),
            recipients: verify::RecipientVerifier::default(),
            memory: session::memory::MemoryBudget::new(0),
            limits: Arc::new(limits::Limits::new(&config)),
            queue,
            client,
            mta_sts,
            dane: dane::DaneLookup::new(&dane_resolvers(&config)),
            lookup,
            tls_server,
            dkim,
            audit,
            senders: RwLock::new(Arc::new(SenderState::Off)),
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
        let verified = verified_client_config(&config)?;
        self.shared.client.set_verified(verified.clone());
        self.shared.mta_sts.set_tls(verified);
        let in_flight = dkim::in_flight_secs(config.mail.queue.give_up_after);
        self.shared.dkim.reload(&domain_names(&config), in_flight, unix_now())?;
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

    /// Bytes of message data that sessions hold in memory now (within `max_message_memory`).
    pub fn message_memory_used(&self) -> usize {
        self.shared.message_memory_used()
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

impl MailService {
    /// New DKIM keys under a new selector for `domain` (`lienthong mail dkim rotate`); mail
    /// accepted from now on is signed with them. The caller republishes the DNS records.
    pub fn dkim_rotate(&self, domain: &str) -> Result<dkim::Selectors, Error> {
        self.shared.dkim.rotate(domain, unix_now())
    }
}

/// Generates the DKIM keys of every local domain that has none (first start, new domain), so
/// that DNS, started before the relay, publishes them from the start.
pub fn prepare_dkim(config: &Config) -> Result<(), Error> {
    dkim::Signer::open(
        &config.server.state_dir,
        &domain_names(config),
        dkim::in_flight_secs(config.mail.queue.give_up_after),
        unix_now(),
    )
    .map(drop)
}

/// The `_domainkey` TXT records DNS must publish (zone lines); reads `state_dir` only.
pub fn dkim_records(config: &Config) -> Vec<String> {
    let in_flight = dkim::in_flight_secs(config.mail.queue.give_up_after);
    dkim::records(&config.server.state_dir, &domain_names(config), in_flight, unix_now())
}

fn domain_names(config: &Config) -> Vec<String> {
    config.mail.domains.iter().map(|domain| domain.name.as_str().to_owned()).collect()
}

/// The resolvers DANE trusts the AD bit of (see [`dane::resolvers`]).
fn dane_resolvers(config: &Config) -> Vec<SocketAddr> {
    let dns = &config.dns;
    let own = (dns.enabled && dns.validate && !dns.forwarders.is_empty())
        .then_some((dns.listen.as_slice(), dns.recursion_from.as_slice()));
    dane::resolvers(own, &dns.forwarders)
}

/// The outbound TLS config for `require_tls_to`, with a warning when it can verify nothing.
fn verified_client_config(config: &Config) -> Result<Arc<rustls::ClientConfig>, Error> {
    let ca_file = config.mail.outbound.ca_file.as_deref();
    let (verified, anchors) = tls::verified_client_config(ca_file)?;
    if anchors == 0 && !config.mail.outbound.require_tls_to.is_empty() {
        tracing::warn!(
            "no trust anchors (no system roots, no mail.outbound.ca_file): mail to require_tls_to domains will wait in the queue"
        );
    }
    Ok(verified)
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
