//! The outbound SMTP client: one transaction, one reply per recipient.
//!
//! Why not lettre here: lettre's `send` aborts the whole transaction when one `RCPT` is
//! refused, and then reports one error for the message. A relay has to deliver to the
//! recipients the next hop accepted, bounce only the ones it refused (5xx) and retry only the
//! ones it deferred (4xx), so it needs each `RCPT` reply. Per-recipient transactions with
//! lettre would send the content once per recipient. This small client on tokio and rustls
//! (replies parsed here, commands written by hand) sends the content once, keeps connections
//! open for the next message to the same host, and applies the TLS policy itself.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::address::Address;
use crate::esmtp::{EnvelopeId, OriginalRecipient};
use crate::tls::TlsInfoExt;
use wire::WireError;
pub use wire::{CommandLine, Reply};

mod wire;

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
}

impl TlsPolicy {
    /// Whether a server without STARTTLS or with a certificate that fails the check is refused.
    pub fn requires_tls(&self) -> bool {
        !matches!(self, Self::Opportunistic)
    }
}

/// What failed for the whole transaction.
#[derive(Debug, Clone)]
pub struct Failure {
    pub permanent: bool,
    pub message: String,
    /// The next hop could not give the TLS that was required: no STARTTLS, a certificate that
    /// does not verify, or no `REQUIRETLS` (not a network failure).
    pub security: bool,
}

impl Failure {
    fn temporary(message: String) -> Self {
        Self { permanent: false, message, security: false }
    }

    fn insecure(message: String) -> Self {
        Self { permanent: false, message, security: true }
    }
}

/// One message to send.
pub struct Outgoing<'a> {
    pub sender: Option<&'a Address>,
    pub recipients: Vec<(&'a Address, u64, Option<&'a OriginalRecipient>)>,
    pub content: &'a [u8],
    pub eight_bit: bool,
    pub smtputf8: bool,
    pub return_full: bool,
    pub envelope_id: Option<&'a EnvelopeId>,
    /// Pass `REQUIRETLS` on (RFC 8689 4.2.1); a next hop that does not offer it is refused
    /// with a [`Failure::security`] failure before `MAIL`.
    pub require_tls: bool,
}

/// Per-recipient outcome: `Ok` with the final reply, or the refusal.
pub type RecipientOutcome = Result<Reply, Reply>;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Connection {
    stream: BufReader<Box<dyn Io>>,
    extensions: Vec<String>,
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
            if !wire::has_unread_input(&mut connection.stream).await {
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
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
            .await
            .map_err(|_| temporary(format!("connecting to {address} timed out")))?
            .map_err(|error| temporary(format!("cannot connect to {address}: {error}")))?;
        let _ = tcp.set_nodelay(true);
        let mut stream = BufReader::new(tcp);
        let greeting = wire::reply(&mut stream, wire::GREETING, COMMAND_TIMEOUT)
            .await
            .map_err(|error| temporary(format!("{address} sent no usable greeting: {error}")))?;
        if greeting.code != 220 {
            return Err(Failure {
                permanent: greeting.code >= 500,
                message: format!("{address} greeted with {greeting}"),
                security: false,
            });
        }
        let extensions = self.ehlo(&mut stream).await?;
        let offers_tls = extensions.iter().any(|extension| extension.eq_ignore_ascii_case("STARTTLS"));
        if !offers_tls {
            if policy.requires_tls() {
                return Err(Failure::insecure(format!(
                    "TLS is required for this destination but {address} does not offer STARTTLS"
                )));
            }
            let stream: BufReader<Box<dyn Io>> = BufReader::new(Box::new(stream.into_inner()));
            return Ok(Connection {
                stream,
                extensions,
                tls: None,
                policy: policy.clone(),
                idle_since: Instant::now(),
            });
        }
        let line = CommandLine::new("STARTTLS".into()).expect("a constant");
        // An empty buffer after the 220 also refuses replies injected before the handshake.
        let reply = wire::command(&mut stream, &line, wire::START_TLS, COMMAND_TIMEOUT)
            .await
            .map_err(|error| temporary(format!("{address}: STARTTLS failed: {error}")))?;
        if reply.code != 220 {
            return Err(Failure::insecure(format!("{address} refused STARTTLS: {reply}")));
        }
        let name = match ServerName::try_from(server_name.to_owned()) {
            Ok(name) => name,
            Err(_) if !policy.requires_tls() => ServerName::IpAddress(address.ip().into()),
            Err(_) => {
                return Err(Failure::insecure(format!("cannot verify {address}: `{server_name}` is not a host name")));
            }
        };
        let mut dane_match = None;
        let connector = match policy {
            TlsPolicy::Opportunistic => self.opportunistic.clone(),
            TlsPolicy::Required => self.verified.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone(),
            TlsPolicy::Dane(records) => {
                let (config, matched) = crate::dane::verifier::client_config(records.clone())
                    .map_err(|error| temporary(format!("DANE TLS setup failed: {error}")))?;
                dane_match = Some(matched);
                TlsConnector::from(config)
            }
        };
        let tls_stream = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, stream.into_inner()))
            .await
            .map_err(|_| temporary(format!("TLS handshake with {address} timed out")))?
            .map_err(|error| match policy {
                TlsPolicy::Required => Failure::insecure(format!(
                    "TLS is required for this destination but the certificate of {server_name} [{address}] does not verify: {error}"
                )),
                TlsPolicy::Dane(_) => Failure::insecure(format!(
                    "DANE: {server_name} [{address}] is not authenticated by its TLSA records: {error}"
                )),
                TlsPolicy::Opportunistic => temporary(format!("TLS handshake with {address} failed: {error}")),
            })?;
        let mut description = tls_stream.get_ref().1.describe();
        match dane_match.as_ref().and_then(|matched| matched.get()) {
            Some(usage) => description.push_str(&format!(", {} verified", usage.as_str())),
            None if policy.requires_tls() => description.push_str(", verified"),
            None => {}
        }
        let mut stream: BufReader<Box<dyn Io>> = BufReader::new(Box::new(tls_stream));
        let extensions = self.ehlo(&mut stream).await?;
        Ok(Connection {
            stream,
            extensions,
            tls: Some(description),
            policy: policy.clone(),
            idle_since: Instant::now(),
        })
    }

    async fn ehlo<S: AsyncRead + AsyncWrite + Unpin>(&self, stream: &mut BufReader<S>) -> Result<Vec<String>, Failure> {
        let temporary = Failure::temporary;
        let line = CommandLine::new(format!("EHLO {}", self.hostname))
            .ok_or_else(|| temporary("the relay's own hostname holds a control character".into()))?;
        let reply = wire::command(stream, &line, wire::OK, COMMAND_TIMEOUT)
            .await
            .map_err(|error| temporary(format!("EHLO failed: {error}")))?;
        if reply.code != 250 {
            return Err(Failure {
                permanent: reply.code >= 500,
                message: format!("EHLO refused: {reply}"),
                security: false,
            });
        }
        Ok(reply.text.lines().skip(1).map(|line| line.trim().to_owned()).collect())
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
        let utf8 = !recipient.is_ascii()
            && connection.extensions.iter().any(|extension| extension.eq_ignore_ascii_case("SMTPUTF8"));
        let stream = &mut connection.stream;
        let lost = |error: WireError| Failure::temporary(format!("recipient probe to {address}: {error}"));
        let line = |text: String| {
            CommandLine::new(text).ok_or_else(|| Failure {
                permanent: true,
                message: "a probe command holds a control character".into(),
                security: false,
            })
        };
        let quit = line("QUIT".into())?;
        let mail = line(if utf8 { "MAIL FROM:<> SMTPUTF8" } else { "MAIL FROM:<>" }.into())?;
        let reply = wire::command(stream, &mail, wire::OK, COMMAND_TIMEOUT).await.map_err(lost)?;
        if reply.code != 250 {
            let _ = wire::command(stream, &quit, wire::Expect(&[221]), PROBE_QUIT_TIMEOUT).await;
            return Err(Failure {
                permanent: reply.code >= 500,
                message: format!("MAIL FROM:<> refused: {reply}"),
                security: false,
            });
        }
        let rcpt = line(format!("RCPT TO:<{recipient}>"))?;
        let reply = wire::command(stream, &rcpt, wire::RECIPIENT, COMMAND_TIMEOUT).await.map_err(lost)?;
        let _ = wire::command(stream, &quit, wire::Expect(&[221]), PROBE_QUIT_TIMEOUT).await;
        Ok(reply)
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
    let has = |name: &str| {
        connection.extensions.iter().any(|extension| {
            extension.split_whitespace().next().is_some_and(|keyword| keyword.eq_ignore_ascii_case(name))
        })
    };
    let dsn = has("DSN");
    if message.require_tls && (connection.tls.is_none() || !has("REQUIRETLS")) {
        return Err(TransactionError::Failed(Failure {
            permanent: true,
            message: "550 5.7.10 REQUIRETLS: the next hop does not offer REQUIRETLS over TLS".into(),
            security: true,
        }));
    }
    let mut mail = format!("MAIL FROM:<{}>", message.sender.map(ToString::to_string).unwrap_or_default());
    if has("SIZE") {
        mail.push_str(&format!(" SIZE={}", message.content.len()));
    }
    if message.eight_bit && has("8BITMIME") {
        mail.push_str(" BODY=8BITMIME");
    }
    if message.smtputf8 && has("SMTPUTF8") {
        mail.push_str(" SMTPUTF8");
    }
    if message.require_tls {
        mail.push_str(" REQUIRETLS");
    }
    if dsn {
        mail.push_str(if message.return_full { " RET=FULL" } else { " RET=HDRS" });
        if let Some(id) = message.envelope_id {
            mail.push_str(&format!(" ENVID={}", id.to_xtext()));
        }
    }
    let mut rcpts = Vec::with_capacity(message.recipients.len());
    for (address, notify, original) in &message.recipients {
        let mut rcpt = format!("RCPT TO:<{address}>");
        if dsn {
            if let Some(notify) = notify_parameter(*notify) {
                rcpt.push_str(&format!(" NOTIFY={notify}"));
            }
            if let Some(original) = original {
                rcpt.push_str(&format!(" ORCPT={}", original.to_parameter()));
            }
        }
        rcpts.push(line(rcpt)?);
    }
    let stream = &mut connection.stream;
    let reply = match wire::command(stream, &line(mail)?, wire::OK, COMMAND_TIMEOUT).await {
        Ok(reply) if reply.code == 421 => return Err(TransactionError::Io),
        Ok(reply) => reply,
        Err(WireError::Io(_)) => return Err(TransactionError::Io),
        Err(error) => return Err(out_of_step(&error)),
    };
    if reply.code != 250 {
        // The connection is dropped either way; RSET tells the server so politely.
        reset(stream).await;
        let failure =
            Failure { permanent: reply.code >= 500, message: format!("MAIL FROM refused: {reply}"), security: false };
        return Err(TransactionError::Failed(failure));
    }
    let mut outcomes = Vec::with_capacity(rcpts.len());
    let mut accepted = 0;
    for rcpt in &rcpts {
        let reply =
            wire::command(stream, rcpt, wire::RECIPIENT, COMMAND_TIMEOUT).await.map_err(|error| out_of_step(&error))?;
        if reply.code == 250 || reply.code == 251 {
            accepted += 1;
            outcomes.push(Ok(reply));
        } else {
            outcomes.push(Err(reply));
        }
    }
    if accepted == 0 {
        let reusable = reset(stream).await;
        return Ok((outcomes, reusable));
    }
    let data = CommandLine::new("DATA".into()).expect("a constant");
    let reply =
        wire::command(stream, &data, wire::START_DATA, COMMAND_TIMEOUT).await.map_err(|error| out_of_step(&error))?;
    if reply.code != 354 {
        let reusable = reset(stream).await;
        return Ok((outcomes.into_iter().map(|outcome| outcome.and(Err(reply.clone()))).collect(), reusable));
    }
    let mut stuffed = dot_stuff(message.content);
    stuffed.extend_from_slice(b".\r\n");
    let lost = |error: WireError| {
        // The content was sent; the outcome is unknown. Retrying may duplicate, never lose.
        TransactionError::Failed(Failure::temporary(format!("no usable reply after the message content: {error}")))
    };
    wire::send_raw(stream, &stuffed).await.map_err(lost)?;
    let reply = wire::reply(stream, wire::OK, DATA_TIMEOUT).await.map_err(lost)?;
    let result = if reply.code == 250 { Ok(reply) } else { Err(reply) };
    Ok((outcomes.into_iter().map(|outcome| outcome.and(result.clone())).collect(), true))
}

/// Ends a transaction the server refused; true when the connection is back in step.
async fn reset<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut BufReader<S>) -> bool {
    let line = CommandLine::new("RSET".into()).expect("a constant");
    matches!(wire::command(stream, &line, wire::OK, COMMAND_TIMEOUT).await, Ok(reply) if reply.code == 250)
}

/// A command line built from queued values; a control character in one is a bug upstream
/// (everything is validated on the way in), so the message waits rather than being sent.
fn line(text: String) -> Result<CommandLine, TransactionError> {
    CommandLine::new(text).ok_or_else(|| {
        TransactionError::Failed(Failure::temporary("refusing to send a command holding a control character".into()))
    })
}

fn out_of_step(error: &WireError) -> TransactionError {
    TransactionError::Failed(Failure::temporary(format!("{error}")))
}

fn notify_parameter(flags: u64) -> Option<String> {
    if flags == 0 {
        return None;
    }
    if flags & smtp_proto::RCPT_NOTIFY_NEVER != 0 {
        return Some("NEVER".into());
    }
    let mut parts = Vec::new();
    for (bit, name) in [
        (smtp_proto::RCPT_NOTIFY_SUCCESS, "SUCCESS"),
        (smtp_proto::RCPT_NOTIFY_FAILURE, "FAILURE"),
        (smtp_proto::RCPT_NOTIFY_DELAY, "DELAY"),
    ] {
        if flags & bit != 0 {
            parts.push(name);
        }
    }
    (!parts.is_empty()).then(|| parts.join(","))
}

/// Adds the transparency dot (RFC 5321 4.5.2) and ends the content with CRLF.
/// Content in the queue only has CRLF line endings (bare CR/LF are refused on the way in).
pub fn dot_stuff(content: &[u8]) -> Vec<u8> {
    let mut stuffed = Vec::with_capacity(content.len() + content.len() / 64 + 8);
    let mut at_line_start = true;
    for &byte in content {
        if at_line_start && byte == b'.' {
            stuffed.push(b'.');
        }
        stuffed.push(byte);
        at_line_start = byte == b'\n';
    }
    if !content.is_empty() && !content.ends_with(b"\r\n") {
        stuffed.extend_from_slice(b"\r\n");
    }
    stuffed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing() {
        assert_eq!(dot_stuff(b".a\r\nb\r\n..c\r\n"), b"..a\r\nb\r\n...c\r\n");
        assert_eq!(dot_stuff(b"no end"), b"no end\r\n");
    }
}
