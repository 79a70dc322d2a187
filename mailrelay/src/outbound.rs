//! The outbound SMTP client: one transaction, one reply per recipient.
//!
//! Why not lettre here: lettre's `send` aborts the whole transaction when one `RCPT` is
//! refused, and then reports one error for the message. A relay has to deliver to the
//! recipients the next hop accepted, bounce only the ones it refused (5xx) and retry only the
//! ones it deferred (4xx), so it needs each `RCPT` reply. Per-recipient transactions with
//! lettre would send the content once per recipient. This small client on tokio and rustls
//! sends the content once, keeps connections open for the next message to the same host, and
//! applies the TLS policy itself. The conversation is the sans-IO [`client::Conversation`];
//! this file is its driver: sockets, the TLS handshake, timeouts and the connection pool.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::address::Address;
use crate::tls::TlsInfoExt;
use client::{Action, Conversation, Encryption, Wait};
pub use client::{Failure, Outgoing, RecipientOutcome, Reply};

pub mod client;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
const DATA_TIMEOUT: Duration = Duration::from_secs(600);
const POOL_IDLE: Duration = Duration::from_secs(20);
const POOL_PER_HOST: usize = 16;

/// Whether this hop may be used without TLS, and whether its certificate must verify.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TlsPolicy {
    /// Use STARTTLS when offered, without checking the certificate; clear text otherwise
    /// (RFC 3207, RFC 7435 opportunistic security).
    Opportunistic,
    /// Defer rather than send in clear text or to a certificate that does not verify for the
    /// host name (`require_tls_to`).
    Required,
    /// Defer rather than send in clear text or to a server that no usable TLSA record of the
    /// host authenticates (DANE, RFC 7672; see [`crate::dane::verifier`]).
    Dane(crate::dane::TlsaSet),
    /// Defer rather than send in clear text, without checking the certificate: the host has
    /// secure TLSA records, none of them usable for SMTP (RFC 7672 2.2, Postfix's `encrypt`).
    Encrypted,
}

impl TlsPolicy {
    /// Whether a server without STARTTLS or with a certificate that fails the check is refused.
    pub fn requires_tls(&self) -> bool {
        !matches!(self, Self::Opportunistic)
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Connection {
    stream: Box<dyn Io>,
    conversation: Conversation,
    tls: Option<String>,
    /// A connection serves its own policy and `TlsPolicy::Opportunistic`.
    policy: TlsPolicy,
    idle_since: Instant,
}

/// Opens (or reuses) connections and runs transactions.
pub struct Client {
    hostname: String,
    opportunistic: TlsConnector,
    verified: RwLock<TlsConnector>,
    pool: Mutex<std::collections::HashMap<(SocketAddr, String), Vec<Connection>>>,
}

impl Client {
    /// `opportunistic` encrypts without checking the peer; `verified` checks chain and name.
    pub fn new(
        hostname: String,
        opportunistic: Arc<rustls::ClientConfig>,
        verified: Arc<rustls::ClientConfig>,
    ) -> Self {
        Self {
            hostname,
            opportunistic: TlsConnector::from(opportunistic),
            verified: RwLock::new(TlsConnector::from(verified)),
            pool: Mutex::default(),
        }
    }

    /// New trust anchors (a reloaded `ca_file`); pooled connections made before stay valid.
    pub fn set_verified(&self, verified: Arc<rustls::ClientConfig>) {
        *self.verified.write().unwrap_or_else(std::sync::PoisonError::into_inner) = TlsConnector::from(verified);
    }

    /// Sends one message to `address`. `server_name` is the host name for TLS SNI and, under
    /// [`TlsPolicy::Required`], the name the certificate must carry.
    /// Returns the TLS description (for logs) and one outcome per recipient, in order.
    pub async fn send(
        &self,
        address: SocketAddr,
        server_name: &str,
        policy: TlsPolicy,
        message: &Outgoing<'_>,
    ) -> Result<(Option<String>, Vec<RecipientOutcome>), Failure> {
        let key = (address, server_name.to_owned());
        if let Some(mut connection) = self.pooled(&key, &policy).await {
            // A pooled connection may have been closed by the server meanwhile: on any I/O
            // failure before the first reply, fall through to a fresh connection.
            match transaction(&mut connection, message).await {
                Ok((outcomes, reusable)) => {
                    let tls = connection.tls.clone();
                    if reusable {
                        self.give_back(key, connection);
                    }
                    return Ok((tls, outcomes));
                }
                Err(TransactionError::Io) => {}
                Err(TransactionError::Failed(failure)) => return Err(failure),
            }
        }
        let mut connection = self.connect(address, server_name, &policy).await?;
        match transaction(&mut connection, message).await {
            Ok((outcomes, reusable)) => {
                let tls = connection.tls.clone();
                if reusable {
                    self.give_back(key, connection);
                }
                Ok((tls, outcomes))
            }
            Err(TransactionError::Io) => {
                Err(Failure::temporary(format!("connection to {address} lost during the transaction")))
            }
            Err(TransactionError::Failed(failure)) => Err(failure),
        }
    }

    /// An idle connection to the same host and name, good enough for `policy`, with nothing
    /// unread on it.
    async fn pooled(&self, key: &(SocketAddr, String), policy: &TlsPolicy) -> Option<Connection> {
        loop {
            let mut connection = {
                let mut pool = self.pool.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let connections = pool.get_mut(key)?;
                let position = connections.iter().rposition(|connection| {
                    connection.idle_since.elapsed() < POOL_IDLE
                        && (*policy == TlsPolicy::Opportunistic || connection.policy == *policy)
                })?;
                connections.remove(position)
            };
            if !has_unread_input(&mut connection.stream).await {
                return Some(connection);
            }
        }
    }

    fn give_back(&self, key: (SocketAddr, String), mut connection: Connection) {
        connection.idle_since = Instant::now();
        let mut pool = self.pool.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let connections = pool.entry(key).or_default();
        connections.retain(|connection| connection.idle_since.elapsed() < POOL_IDLE);
        if connections.len() < POOL_PER_HOST {
            connections.push(connection);
        }
    }

    async fn connect(&self, address: SocketAddr, server_name: &str, policy: &TlsPolicy) -> Result<Connection, Failure> {
        let temporary = Failure::temporary;
        let mut tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
            .await
            .map_err(|_| temporary(format!("connecting to {address} timed out")))?
            .map_err(|error| temporary(format!("cannot connect to {address}: {error}")))?;
        let _ = tcp.set_nodelay(true);
        let encryption = if policy.requires_tls() { Encryption::Required } else { Encryption::WhenOffered };
        let mut conversation = Conversation::new(self.hostname.clone(), encryption);
        // Failures before the first transaction name the host they came from.
        let at = |failure: Failure| Failure { message: format!("{address}: {}", failure.message), ..failure };
        match drive(&mut tcp, &mut conversation, &[]).await {
            Action::Ready => {
                let stream: Box<dyn Io> = Box::new(tcp);
                return Ok(Connection {
                    stream,
                    conversation,
                    tls: None,
                    policy: policy.clone(),
                    idle_since: Instant::now(),
                });
            }
            Action::StartTls => {}
            Action::Failed(failure) => return Err(at(failure)),
            _ => return Err(at(temporary("the conversation went out of order before STARTTLS".into()))),
        }
        let name = match ServerName::try_from(server_name.to_owned()) {
            Ok(name) => name,
            Err(_) if matches!(policy, TlsPolicy::Opportunistic | TlsPolicy::Encrypted) => {
                ServerName::IpAddress(address.ip().into())
            }
            Err(_) => {
                return Err(Failure::insecure(format!("cannot verify {address}: `{server_name}` is not a host name")));
            }
        };
        let mut dane_match = None;
        let connector = match policy {
            TlsPolicy::Opportunistic | TlsPolicy::Encrypted => self.opportunistic.clone(),
            TlsPolicy::Required => self.verified.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone(),
            TlsPolicy::Dane(records) => {
                let (config, matched) = crate::dane::verifier::client_config(records.clone())
                    .map_err(|error| temporary(format!("DANE TLS setup failed: {error}")))?;
                dane_match = Some(matched);
                TlsConnector::from(config)
            }
        };
        let mut tls_stream = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
            .await
            .map_err(|_| temporary(format!("TLS handshake with {address} timed out")))?
            .map_err(|error| match policy {
                TlsPolicy::Required => Failure::insecure(format!(
                    "TLS is required for this destination but the certificate of {server_name} [{address}] does not verify: {error}"
                )),
                TlsPolicy::Dane(_) => Failure::insecure(format!(
                    "DANE: {server_name} [{address}] is not authenticated by its TLSA records: {error}"
                )),
                TlsPolicy::Encrypted => {
                    Failure::insecure(format!("TLS is required by the TLSA records of {server_name} but the handshake with {address} failed: {error}"))
                }
                TlsPolicy::Opportunistic => temporary(format!("TLS handshake with {address} failed: {error}")),
            })?;
        let mut description = tls_stream.get_ref().1.describe();
        match dane_match.as_ref().and_then(|matched| matched.get()) {
            Some(usage) => description.push_str(&format!(", {} verified", usage.as_str())),
            None if *policy == TlsPolicy::Encrypted => description.push_str(", not authenticated (unusable TLSA)"),
            None if policy.requires_tls() => description.push_str(", verified"),
            None => {}
        }
        conversation.tls_started();
        match drive(&mut tls_stream, &mut conversation, &[]).await {
            Action::Ready => {
                let stream: Box<dyn Io> = Box::new(tls_stream);
                Ok(Connection {
                    stream,
                    conversation,
                    tls: Some(description),
                    policy: policy.clone(),
                    idle_since: Instant::now(),
                })
            }
            Action::Failed(failure) => Err(at(failure)),
            _ => Err(at(temporary("the conversation went out of order after STARTTLS".into()))),
        }
    }
}

/// Recipient verification ([`crate::verify`]) reuses the connection code above.
impl Client {
    /// Asks the server at `address` whether it takes mail for `recipient`: `MAIL FROM:<>`,
    /// `RCPT TO:`, then `QUIT`; no message is sent. Returns the `RCPT` reply.
    pub(crate) async fn probe_recipient(
        &self,
        address: SocketAddr,
        policy: TlsPolicy,
        recipient: &Address,
    ) -> Result<Reply, Failure> {
        let mut connection = self.connect(address, &address.ip().to_string(), &policy).await?;
        connection.conversation.start_probe(recipient);
        let action = drive(&mut connection.stream, &mut connection.conversation, &[]).await;
        // The answer is known: QUIT, and its reply is not waited for long.
        let quit = connection.conversation.take_output();
        if !quit.is_empty() {
            let stream = &mut connection.stream;
            let _ = tokio::time::timeout(PROBE_QUIT_TIMEOUT, async {
                stream.write_all(&quit).await?;
                stream.flush().await?;
                stream.read(&mut [0; 512]).await
            })
            .await;
        }
        match action {
            Action::Probed(reply) => Ok(reply),
            Action::Failed(failure) => Err(failure),
            _ => Err(Failure::temporary(format!("recipient probe to {address}: the conversation went out of order"))),
        }
    }
}

/// A probe's `QUIT` reply is not waited for long: the answer is already known.
const PROBE_QUIT_TIMEOUT: Duration = Duration::from_secs(5);

enum TransactionError {
    /// Lost before the first reply (a pooled connection the server closed): try a fresh one.
    Io,
    Failed(Failure),
}

/// Runs one transaction. `Ok((outcomes, reusable))`: `reusable` only when the connection is
/// known to be between transactions, in step.
async fn transaction(
    connection: &mut Connection,
    message: &Outgoing<'_>,
) -> Result<(Vec<RecipientOutcome>, bool), TransactionError> {
    connection.conversation.start_transaction(message);
    match drive(&mut connection.stream, &mut connection.conversation, message.content).await {
        Action::Finished { outcomes, reusable } => Ok((outcomes, reusable)),
        Action::Lost => Err(TransactionError::Io),
        Action::Failed(failure) => Err(TransactionError::Failed(failure)),
        _ => Err(TransactionError::Failed(Failure::temporary("the conversation went out of order".into()))),
    }
}

/// Writes what `conversation` has to say and feeds it what comes back until it decides
/// something: every action but [`Action::Read`] and [`Action::SendContent`] is returned.
async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    conversation: &mut Conversation,
    content: &[u8],
) -> Action {
    let mut buffer = vec![0; 8192];
    loop {
        let wait = match conversation.advance() {
            Action::Read(wait) => wait,
            Action::SendContent => {
                conversation.write_content(content);
                continue;
            }
            decided => return decided,
        };
        let limit = match wait {
            Wait::Command => COMMAND_TIMEOUT,
            Wait::Content => DATA_TIMEOUT,
        };
        let output = conversation.take_output();
        let exchange = tokio::time::timeout(limit, async {
            if !output.is_empty() {
                stream.write_all(&output).await?;
                stream.flush().await?;
            }
            stream.read(&mut buffer).await
        });
        match exchange.await {
            Err(_) => return conversation.closed("reply timeout"),
            Ok(Err(error)) => return conversation.closed(&error.to_string()),
            Ok(Ok(0)) => return conversation.closed("connection closed by the next hop"),
            Ok(Ok(read)) => conversation.feed(&buffer[..read]),
        }
    }
}

/// True when an idle connection has something to read (data nobody asked for, or the close):
/// it must not be used again.
async fn has_unread_input<S: AsyncRead + Unpin>(stream: &mut S) -> bool {
    // A zero timeout still polls the read once: ready means data, EOF or an error.
    tokio::time::timeout(Duration::ZERO, stream.read(&mut [0; 1])).await.is_ok()
}
