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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::address::Address;
use crate::tls::TlsInfoExt;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
const DATA_TIMEOUT: Duration = Duration::from_secs(600);
const MAX_REPLY: usize = 64 * 1024;
const POOL_IDLE: Duration = Duration::from_secs(20);
const POOL_PER_HOST: usize = 16;

/// A server reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

impl std::fmt::Display for Reply {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{} {}", self.code, self.text)
    }
}

/// Whether this hop may be used without TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPolicy {
    /// Use STARTTLS when offered; clear text otherwise (RFC 3207 opportunistic).
    Opportunistic,
    /// Defer rather than send in clear text (`require_tls_to`).
    Required,
}

/// What failed for the whole transaction.
#[derive(Debug, Clone)]
pub struct Failure {
    pub permanent: bool,
    pub message: String,
}

/// One message to send.
pub struct Outgoing<'a> {
    pub sender: Option<&'a Address>,
    pub recipients: Vec<(&'a Address, u64, Option<&'a str>)>,
    pub content: &'a [u8],
    pub eight_bit: bool,
    pub smtputf8: bool,
    pub return_full: bool,
    pub envelope_id: Option<&'a str>,
}

/// Per-recipient outcome: `Ok` with the final reply, or the refusal.
pub type RecipientOutcome = Result<Reply, Reply>;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Connection {
    stream: BufStream<Box<dyn Io>>,
    extensions: Vec<String>,
    tls: Option<String>,
    idle_since: Instant,
}

/// Opens (or reuses) connections and runs transactions.
pub struct Client {
    hostname: String,
    tls: TlsConnector,
    pool: Mutex<std::collections::HashMap<SocketAddr, Vec<Connection>>>,
}

impl Client {
    pub fn new(hostname: String, tls_config: Arc<rustls::ClientConfig>) -> Self {
        Self { hostname, tls: TlsConnector::from(tls_config), pool: Mutex::default() }
    }

    /// Sends one message to `address`. `server_name` is used for TLS SNI.
    /// Returns the TLS description (for logs) and one outcome per recipient, in order.
    pub async fn send(
        &self,
        address: SocketAddr,
        server_name: &str,
        policy: TlsPolicy,
        message: &Outgoing<'_>,
    ) -> Result<(Option<String>, Vec<RecipientOutcome>), Failure> {
        if let Some(mut connection) = self.pooled(address) {
            // A pooled connection may have been closed by the server meanwhile: on any I/O
            // failure before the first reply, fall through to a fresh connection.
            match transaction(&mut connection, message).await {
                Ok(outcomes) => {
                    let tls = connection.tls.clone();
                    self.give_back(address, connection);
                    return Ok((tls, outcomes));
                }
                Err(TransactionError::Io) => {}
                Err(TransactionError::Failed(failure)) => return Err(failure),
            }
        }
        let mut connection = self.connect(address, server_name, policy).await?;
        match transaction(&mut connection, message).await {
            Ok(outcomes) => {
                let tls = connection.tls.clone();
                self.give_back(address, connection);
                Ok((tls, outcomes))
            }
            Err(TransactionError::Io) => Err(Failure {
                permanent: false,
                message: format!("connection to {address} lost during the transaction"),
            }),
            Err(TransactionError::Failed(failure)) => Err(failure),
        }
    }

    fn pooled(&self, address: SocketAddr) -> Option<Connection> {
        let mut pool = self.pool.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let connections = pool.get_mut(&address)?;
        while let Some(connection) = connections.pop() {
            if connection.idle_since.elapsed() < POOL_IDLE {
                return Some(connection);
            }
        }
        None
    }

    fn give_back(&self, address: SocketAddr, mut connection: Connection) {
        connection.idle_since = Instant::now();
        let mut pool = self.pool.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let connections = pool.entry(address).or_default();
        connections.retain(|connection| connection.idle_since.elapsed() < POOL_IDLE);
        if connections.len() < POOL_PER_HOST {
            connections.push(connection);
        }
    }

    async fn connect(&self, address: SocketAddr, server_name: &str, policy: TlsPolicy) -> Result<Connection, Failure> {
        let temporary = |message: String| Failure { permanent: false, message };
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
            .await
            .map_err(|_| temporary(format!("connecting to {address} timed out")))?
            .map_err(|error| temporary(format!("cannot connect to {address}: {error}")))?;
        let _ = tcp.set_nodelay(true);
        let mut stream = BufStream::new(tcp);
        let greeting = read_reply(&mut stream, COMMAND_TIMEOUT)
            .await
            .map_err(|_| temporary(format!("{address} sent no greeting")))?;
        if greeting.code != 220 {
            return Err(Failure {
                permanent: greeting.code >= 500,
                message: format!("{address} greeted with {greeting}"),
            });
        }
        let extensions = self.ehlo(&mut stream).await?;
        let offers_tls = extensions.iter().any(|extension| extension.eq_ignore_ascii_case("STARTTLS"));
        if !offers_tls {
            if policy == TlsPolicy::Required {
                return Err(temporary(format!(
                    "TLS is required for this destination but {address} does not offer STARTTLS"
                )));
            }
            return Ok(Connection {
                stream: BufStream::new(Box::new(stream.into_inner())),
                extensions,
                tls: None,
                idle_since: Instant::now(),
            });
        }
        let reply = command(&mut stream, "STARTTLS\r\n", COMMAND_TIMEOUT)
            .await
            .map_err(|_| temporary(format!("{address}: STARTTLS failed")))?;
        if reply.code != 220 {
            return Err(temporary(format!("{address} refused STARTTLS: {reply}")));
        }
        let name =
            ServerName::try_from(server_name.to_owned()).unwrap_or_else(|_| ServerName::IpAddress(address.ip().into()));
        let tls_stream = tokio::time::timeout(CONNECT_TIMEOUT, self.tls.connect(name, stream.into_inner()))
            .await
            .map_err(|_| temporary(format!("TLS handshake with {address} timed out")))?
            .map_err(|error| temporary(format!("TLS handshake with {address} failed: {error}")))?;
        let description = tls_stream.get_ref().1.describe();
        let mut stream: BufStream<Box<dyn Io>> = BufStream::new(Box::new(tls_stream));
        let extensions = self.ehlo(&mut stream).await?;
        Ok(Connection { stream, extensions, tls: Some(description), idle_since: Instant::now() })
    }

    async fn ehlo<S: AsyncRead + AsyncWrite + Unpin>(&self, stream: &mut BufStream<S>) -> Result<Vec<String>, Failure> {
        let reply = command(stream, &format!("EHLO {}\r\n", self.hostname), COMMAND_TIMEOUT)
            .await
            .map_err(|_| Failure { permanent: false, message: "connection lost after EHLO".into() })?;
        if reply.code != 250 {
            return Err(Failure { permanent: reply.code >= 500, message: format!("EHLO refused: {reply}") });
        }
        Ok(reply.text.lines().skip(1).map(|line| line.trim().to_owned()).collect())
    }
}

enum TransactionError {
    Io,
    Failed(Failure),
}

async fn transaction(
    connection: &mut Connection,
    message: &Outgoing<'_>,
) -> Result<Vec<RecipientOutcome>, TransactionError> {
    let has = |name: &str| {
        connection.extensions.iter().any(|extension| {
            extension.split_whitespace().next().is_some_and(|keyword| keyword.eq_ignore_ascii_case(name))
        })
    };
    let dsn = has("DSN");
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
    if dsn {
        mail.push_str(if message.return_full { " RET=FULL" } else { " RET=HDRS" });
        if let Some(id) = message.envelope_id {
            mail.push_str(&format!(" ENVID={id}"));
        }
    }
    mail.push_str("\r\n");
    let stream = &mut connection.stream;
    let reply = command(stream, &mail, COMMAND_TIMEOUT).await.map_err(|_| TransactionError::Io)?;
    if reply.code == 421 {
        // The server is closing this (probably idle, pooled) connection: try a fresh one.
        return Err(TransactionError::Io);
    }
    if reply.code != 250 {
        let _ = command(stream, "RSET\r\n", COMMAND_TIMEOUT).await;
        return Err(TransactionError::Failed(Failure {
            permanent: reply.code >= 500,
            message: format!("MAIL FROM refused: {reply}"),
        }));
    }
    let mut outcomes = Vec::with_capacity(message.recipients.len());
    let mut accepted = 0;
    for (address, notify, original) in &message.recipients {
        let mut rcpt = format!("RCPT TO:<{address}>");
        if dsn {
            if let Some(notify) = notify_parameter(*notify) {
                rcpt.push_str(&format!(" NOTIFY={notify}"));
            }
            if let Some(original) = original {
                rcpt.push_str(&format!(" ORCPT={original}"));
            }
        }
        rcpt.push_str("\r\n");
        let reply = command(stream, &rcpt, COMMAND_TIMEOUT).await.map_err(|_| TransactionError::Io)?;
        if reply.code == 250 || reply.code == 251 {
            accepted += 1;
            outcomes.push(Ok(reply));
        } else {
            outcomes.push(Err(reply));
        }
    }
    if accepted == 0 {
        let _ = command(stream, "RSET\r\n", COMMAND_TIMEOUT).await;
        return Ok(outcomes);
    }
    let reply = command(stream, "DATA\r\n", COMMAND_TIMEOUT).await.map_err(|_| TransactionError::Io)?;
    if reply.code != 354 {
        let _ = command(stream, "RSET\r\n", COMMAND_TIMEOUT).await;
        return Ok(outcomes.into_iter().map(|outcome| outcome.and(Err(reply.clone()))).collect());
    }
    let stuffed = dot_stuff(message.content);
    stream.write_all(&stuffed).await.map_err(|_| TransactionError::Io)?;
    let reply = command(stream, ".\r\n", DATA_TIMEOUT).await.map_err(|_| {
        // The content was sent; the outcome is unknown. Retrying may duplicate, never lose.
        TransactionError::Failed(Failure {
            permanent: false,
            message: "connection lost after the message content".into(),
        })
    })?;
    let result = if reply.code == 250 { Ok(reply) } else { Err(reply) };
    Ok(outcomes.into_iter().map(|outcome| outcome.and(result.clone())).collect())
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

async fn command<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut BufStream<S>,
    line: &str,
    wait: Duration,
) -> std::io::Result<Reply> {
    stream.write_all(line.as_bytes()).await?;
    stream.flush().await?;
    read_reply(stream, wait).await
}

/// Reads one (possibly multi-line) reply; continuation lines are joined with `\n`.
async fn read_reply<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut BufStream<S>,
    wait: Duration,
) -> std::io::Result<Reply> {
    let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "reply timeout");
    tokio::time::timeout(wait, async {
        let mut text = String::new();
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = (&mut *stream).take(MAX_REPLY as u64).read_until(b'\n', &mut line).await?;
            if read == 0 || line.len() < 4 {
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed reply"));
            }
            let code: u16 = std::str::from_utf8(&line[..3])
                .ok()
                .and_then(|digits| digits.parse().ok())
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed reply code"))?;
            let content = String::from_utf8_lossy(&line[4.min(line.len())..]);
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(content.trim_end());
            if text.len() > MAX_REPLY {
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "reply too long"));
            }
            if line[3] != b'-' {
                return Ok(Reply { code, text });
            }
        }
    })
    .await
    .map_err(|_| timed_out())?
}

use tokio::io::AsyncReadExt;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing() {
        assert_eq!(dot_stuff(b".a\r\nb\r\n..c\r\n"), b"..a\r\nb\r\n...c\r\n");
        assert_eq!(dot_stuff(b"no end"), b"no end\r\n");
    }
}
