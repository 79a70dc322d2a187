//! A strict capturing next hop: records every byte the relay writes, answers every command
//! exactly once, and checks ESMTP parameters the way Postfix's smtpd does (ORCPT must be
//! `addr-type;xtext`, ENVID xtext; a control character in a command is refused), so a relay
//! that writes anything else is caught. Offers DSN, and STARTTLS when given a certificate.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One transaction that reached the end of DATA.
#[derive(Debug, Clone)]
pub struct Transaction {
    pub mail: String,
    pub rcpts: Vec<String>,
    /// Recipients (inside `<>`) the sink accepted.
    pub recipients: Vec<String>,
    pub content: Vec<u8>,
}

#[derive(Default)]
pub struct Capture {
    /// Every line each connection sent, outside DATA content, byte for byte.
    pub commands: Mutex<Vec<Vec<u8>>>,
    pub transactions: Mutex<Vec<Transaction>>,
    /// Replies this sink found it had to give to something that is not a valid command.
    pub protocol_errors: Mutex<Vec<String>>,
    pub refuse: Mutex<HashSet<String>>,
    pub connections: AtomicUsize,
    /// Answer the next MAIL with two replies (a next hop out of step with the relay).
    pub double_reply_once: AtomicBool,
    /// Offer REQUIRETLS (RFC 8689) after STARTTLS, and accept it on MAIL.
    pub offer_requiretls: AtomicBool,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Capture {
    pub async fn start(tls: Option<Arc<rustls::ServerConfig>>) -> (Arc<Capture>, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let capture = Arc::new(Capture { tls, ..Capture::default() });
        let shared = capture.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let capture = shared.clone();
                capture.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move { capture.serve(Box::new(stream)).await });
            }
        });
        (capture, address)
    }

    pub fn transactions(&self) -> Vec<Transaction> {
        self.transactions.lock().unwrap().clone()
    }

    pub fn commands(&self) -> Vec<String> {
        self.commands.lock().unwrap().iter().map(|line| String::from_utf8_lossy(line).into_owned()).collect()
    }

    async fn serve(&self, stream: Box<dyn Io>) {
        let mut reader = BufReader::new(stream);
        if reader.get_mut().write_all(b"220 capture ESMTP\r\n").await.is_err() {
            return;
        }
        let mut tls_done = false;
        loop {
            match self.session(&mut reader, tls_done).await {
                Some(true) => {
                    let Some(config) = self.tls.clone() else { return };
                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                    let Ok(stream) = acceptor.accept(reader.into_inner()).await else { return };
                    reader = BufReader::new(Box::new(stream));
                    tls_done = true;
                }
                _ => return,
            }
        }
    }

    /// Runs commands until the end (`None`) or STARTTLS (`Some(true)`).
    async fn session(&self, reader: &mut BufReader<Box<dyn Io>>, tls_done: bool) -> Option<bool> {
        let mut mail = String::new();
        let mut rcpts = Vec::new();
        let mut recipients = Vec::new();
        let mut line = Vec::new();
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line).await.ok()? == 0 {
                return None;
            }
            self.commands.lock().unwrap().push(line.clone());
            let text = String::from_utf8_lossy(&line).into_owned();
            let upper = text.to_ascii_uppercase();
            let body = line.strip_suffix(b"\r\n");
            let reply: Vec<u8> = if body.is_none_or(|body| body.iter().any(|&byte| byte.is_ascii_control())) {
                self.protocol_error(&text, "500 5.5.2 bad line ending or control character\r\n")
            } else if upper.starts_with("EHLO ") {
                let tls = if self.tls.is_some() && !tls_done { "250-STARTTLS\r\n" } else { "" };
                let requiretls =
                    if tls_done && self.offer_requiretls.load(Ordering::SeqCst) { "250-REQUIRETLS\r\n" } else { "" };
                format!("250-capture\r\n{tls}{requiretls}250-DSN\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n250 SIZE 10000000\r\n").into_bytes()
            } else if upper == "STARTTLS\r\n" && self.tls.is_some() && !tls_done {
                reader.get_mut().write_all(b"220 2.0.0 go ahead\r\n").await.ok()?;
                return Some(true);
            } else if upper.starts_with("MAIL FROM:<") {
                let requiretls = tls_done && self.offer_requiretls.load(Ordering::SeqCst);
                let allowed: &[&str] = if requiretls {
                    &["SIZE", "BODY", "SMTPUTF8", "RET", "ENVID", "REQUIRETLS"]
                } else {
                    &["SIZE", "BODY", "SMTPUTF8", "RET", "ENVID"]
                };
                match parameters_problem(&text, allowed) {
                    Some(problem) => self.protocol_error(&text, problem),
                    None => {
                        mail = text.clone();
                        rcpts.clear();
                        recipients.clear();
                        if self.double_reply_once.swap(false, Ordering::SeqCst) {
                            b"250 2.1.0 ok\r\n250 2.1.0 ok again\r\n".to_vec()
                        } else {
                            b"250 2.1.0 ok\r\n".to_vec()
                        }
                    }
                }
            } else if upper.starts_with("RCPT TO:<") {
                match parameters_problem(&text, &["NOTIFY", "ORCPT"]) {
                    Some(problem) => self.protocol_error(&text, problem),
                    None => {
                        let recipient = between(&text);
                        rcpts.push(text.clone());
                        if self.refuse.lock().unwrap().contains(&recipient) {
                            b"550 5.1.1 no such mailbox\r\n".to_vec()
                        } else {
                            recipients.push(recipient);
                            b"250 2.1.5 ok\r\n".to_vec()
                        }
                    }
                }
            } else if upper == "DATA\r\n" && !recipients.is_empty() {
                reader.get_mut().write_all(b"354 go ahead\r\n").await.ok()?;
                let content = read_data(reader).await?;
                let transaction =
                    Transaction { mail: mail.clone(), rcpts: rcpts.clone(), recipients: recipients.clone(), content };
                self.transactions.lock().unwrap().push(transaction);
                b"250 2.0.0 stored\r\n".to_vec()
            } else if upper == "RSET\r\n" {
                mail.clear();
                rcpts.clear();
                recipients.clear();
                b"250 2.0.0 ok\r\n".to_vec()
            } else if upper == "QUIT\r\n" {
                let _ = reader.get_mut().write_all(b"221 2.0.0 bye\r\n").await;
                return None;
            } else {
                self.protocol_error(&text, "502 5.5.2 not expected\r\n")
            };
            reader.get_mut().write_all(&reply).await.ok()?;
        }
    }

    fn protocol_error(&self, line: &str, reply: &str) -> Vec<u8> {
        self.protocol_errors.lock().unwrap().push(format!("{line:?} -> {}", reply.trim_end()));
        reply.as_bytes().to_vec()
    }
}

/// What Postfix's smtpd would refuse in the parameters of this MAIL or RCPT line.
fn parameters_problem(line: &str, allowed: &[&str]) -> Option<&'static str> {
    let line = line.trim_end_matches("\r\n");
    // The paths here never hold '>'; a parameter value may.
    let close = line.find('>')?;
    for parameter in line[close + 1..].split(' ').filter(|parameter| !parameter.is_empty()) {
        let (keyword, value) = parameter.split_once('=').unwrap_or((parameter, ""));
        let keyword = keyword.to_ascii_uppercase();
        if !allowed.contains(&keyword.as_str()) {
            return Some("555 5.5.4 Unsupported option\r\n");
        }
        match keyword.as_str() {
            "ENVID" if !is_xtext(value) => return Some("501 5.5.4 Bad ENVID parameter syntax\r\n"),
            "ORCPT" => match value.split_once(';') {
                Some((kind, address)) if !kind.is_empty() && !address.is_empty() && is_xtext(address) => {}
                _ => return Some("501 5.5.4 Error: Bad ORCPT parameter syntax\r\n"),
            },
            _ => {}
        }
    }
    None
}

pub fn is_xtext(value: &str) -> bool {
    let bytes = value.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'+' if bytes.get(index + 1..index + 3).is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) => {
                index += 3
            }
            byte if (b'!'..=b'~').contains(&byte) && byte != b'+' && byte != b'=' => index += 1,
            _ => return false,
        }
    }
    true
}

/// Decodes xtext (for comparing with what the client sent).
pub fn xtext_decode(value: &str) -> String {
    let mut decoded = Vec::new();
    let bytes = value.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'+' && index + 2 < bytes.len() + 1 {
            let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).unwrap();
            decoded.push(u8::from_str_radix(hex, 16).unwrap());
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

fn between(line: &str) -> String {
    let start = line.find('<').map_or(0, |index| index + 1);
    let end = line.find('>').unwrap_or(line.len());
    line[start..end.max(start)].to_owned()
}

async fn read_data(reader: &mut BufReader<Box<dyn Io>>) -> Option<Vec<u8>> {
    let mut content = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await.ok()? == 0 {
            return None;
        }
        if line == b".\r\n" {
            return Some(content);
        }
        let unstuffed = if line.starts_with(b".") { &line[1..] } else { &line[..] };
        content.extend_from_slice(unstuffed);
    }
}
