//! Shared pieces of the mail tests: a config on free loopback ports, a self-signed certificate,
//! and a small SMTP sink that records what it receives and can refuse on demand.

#![allow(dead_code)]

pub mod capture;
pub mod fake_dns;
pub mod tls_client;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lienthong_config::Config;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// The ports a test relay listens on.
pub struct Ports {
    pub mx: u16,
    pub submission: u16,
    pub submissions: u16,
}

/// A port free for TCP and UDP on 127.0.0.1, outside the kernel's ephemeral range (Linux:
/// 32768-60999). A port the kernel handed out for `:0` can be taken again, before the test
/// binds it, as the local port of any outgoing connection (a relay's delivery, a client);
/// these ports are never handed out that way. Each is given once per process, from an offset
/// by PID, and checked free by binding it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    for _ in 0..COUNT {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + (n + std::process::id().wrapping_mul(613)) % COUNT) as u16;
        let tcp = std::net::TcpListener::bind(("127.0.0.1", port));
        if tcp.is_ok() && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + COUNT)
}

impl Ports {
    pub fn new() -> Self {
        Self { mx: free_port(), submission: free_port(), submissions: free_port() }
    }
}

/// argon2id of "mat-khau-dung" (the test user's password).
pub fn password_hash() -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(b"ninhthuan-salt16").unwrap();
    argon2::Argon2::default().hash_password(b"mat-khau-dung", &salt).unwrap().to_string()
}

/// A relay config: `ninhthuan.gov.vn` delivered to `sink`, one user, fast retries.
pub fn config_text(state: &Path, ports: &Ports, sink: SocketAddr, extra_mail: &str) -> String {
    format!(
        r#"
[server]
hostname = "hub.ninhthuan.gov.vn"
addresses = ["127.0.0.1"]
state_dir = "{state}"
[admin]
listen = "127.0.0.1:{admin}"
[dns]
enabled = false
[conference]
enabled = false
[mail]
hostname = "mail.ninhthuan.gov.vn"
mx_listen = "127.0.0.1:{mx}"
submission_listen = "127.0.0.1:{submission}"
submissions_listen = "127.0.0.1:{submissions}"
max_message_size = 200000
# Sender checks look up SPF/DKIM/DMARC in DNS; tests/sender_checks.rs runs them against its
# own DNS server, the other tests have none.
check_senders = false
{extra_mail}
[[mail.domain]]
name = "ninhthuan.gov.vn"
deliver_to = "{sink}"
[[mail.user]]
login = "vanthu@ninhthuan.gov.vn"
password = "{hash}"
may_send_as = ["vanthu@ninhthuan.gov.vn", "ubnd@ninhthuan.gov.vn"]
[mail.outbound]
require_tls_to = ["secure.gov.vn"]
[mail.queue]
retry_after = "1s"
max_retry_interval = "2s"
give_up_after = "1d"
"#,
        state = state.display(),
        admin = free_port(),
        mx = ports.mx,
        submission = ports.submission,
        submissions = ports.submissions,
        hash = password_hash(),
    )
}

pub fn config(state: &Path, ports: &Ports, sink: SocketAddr, extra_mail: &str) -> Arc<Config> {
    let text = config_text(state, ports, sink, extra_mail);
    Arc::new(lienthong_config::parse(&text, "test.toml", state).unwrap_or_else(|errors| panic!("{errors}")))
}

/// Like [`config`], with the local domain's recipients given as a list (no verification
/// probe reaches the sink), for tests about what happens after RCPT.
#[allow(dead_code)]
pub fn config_listing(state: &Path, ports: &Ports, sink: SocketAddr, extra_mail: &str, local: &[&str]) -> Arc<Config> {
    let text = config_text(state, ports, sink, extra_mail);
    let domain = format!("deliver_to = \"{sink}\"\n");
    let quoted: Vec<String> = local.iter().map(|name| format!("\"{name}\"")).collect();
    let listing = format!("{domain}verify_recipients = \"list\"\nrecipients = [{}]\n", quoted.join(", "));
    assert!(text.contains(&domain));
    let text = text.replacen(&domain, &listing, 1);
    Arc::new(lienthong_config::parse(&text, "test.toml", state).unwrap_or_else(|errors| panic!("{errors}")))
}

/// A self-signed certificate for the relay's listeners.
pub fn certificates() -> Arc<dyn rustls::server::ResolvesServerCert> {
    let certified = rcgen::generate_simple_self_signed(vec!["mail.ninhthuan.gov.vn".into()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der()).unwrap();
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).unwrap();
    let key = rustls::sign::CertifiedKey::new(vec![certified.cert.der().clone()], signing);
    Arc::new(rustls::sign::SingleCertAndKey::from(key))
}

/// Polls `check` every 20 ms until it holds or `limit` passes.
pub async fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

/// One message as the sink saw it.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub sender: String,
    pub recipients: Vec<String>,
    pub content: Vec<u8>,
}

/// A test SMTP server standing in for the mailbox server or a remote MX.
#[derive(Default)]
pub struct Sink {
    pub messages: Mutex<Vec<Delivered>>,
    /// Recipients refused with 550 at RCPT.
    pub refuse: Mutex<HashSet<String>>,
    /// This many DATA commands are answered 451 before the sink accepts.
    pub temporary_failures: AtomicUsize,
    pub connections: AtomicUsize,
    /// Milliseconds to wait before answering the end of DATA (a slow mailbox server).
    pub delay_milliseconds: std::sync::atomic::AtomicU64,
}

impl Sink {
    pub async fn start() -> (Arc<Sink>, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let sink = Arc::new(Sink::default());
        let shared = sink.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let sink = shared.clone();
                sink.connections.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let _ = sink.serve(stream).await;
                });
            }
        });
        (sink, address)
    }

    pub fn count(&self) -> usize {
        self.messages.lock().unwrap().len()
    }

    pub fn all(&self) -> Vec<Delivered> {
        self.messages.lock().unwrap().clone()
    }

    async fn serve(&self, stream: tokio::net::TcpStream) -> std::io::Result<()> {
        let (read, mut write) = stream.into_split();
        let mut reader = BufReader::new(read);
        write.write_all(b"220 sink ESMTP\r\n").await?;
        let mut sender = String::new();
        let mut recipients = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let upper = line.to_ascii_uppercase();
            let reply: &[u8] = if upper.starts_with("EHLO") {
                b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 10000000\r\n"
            } else if upper.starts_with("MAIL FROM:") {
                sender = between(&line);
                recipients.clear();
                b"250 2.1.0 ok\r\n"
            } else if upper.starts_with("RCPT TO:") {
                let recipient = between(&line);
                if self.refuse.lock().unwrap().contains(&recipient) {
                    b"550 5.1.1 no such mailbox\r\n"
                } else {
                    recipients.push(recipient);
                    b"250 2.1.5 ok\r\n"
                }
            } else if upper.starts_with("DATA") {
                write.write_all(b"354 go ahead\r\n").await?;
                let content = read_data(&mut reader).await?;
                let delay = self.delay_milliseconds.load(Ordering::Relaxed);
                if delay > 0 {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                let failing = self
                    .temporary_failures
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(1))
                    .is_ok();
                if failing {
                    b"451 4.3.0 try again later\r\n"
                } else {
                    self.messages.lock().unwrap().push(Delivered {
                        sender: sender.clone(),
                        recipients: recipients.clone(),
                        content,
                    });
                    b"250 2.0.0 stored\r\n"
                }
            } else if upper.starts_with("QUIT") {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            } else {
                b"250 ok\r\n"
            };
            write.write_all(reply).await?;
        }
    }
}

fn between(line: &str) -> String {
    let start = line.find('<').map_or(0, |index| index + 1);
    let end = line.rfind('>').unwrap_or(line.len());
    line[start..end.max(start)].to_owned()
}

async fn read_data(reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> std::io::Result<Vec<u8>> {
    let mut content = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == b".\r\n" {
            return Ok(content);
        }
        let unstuffed = if line.starts_with(b".") { &line[1..] } else { &line[..] };
        content.extend_from_slice(unstuffed);
    }
}

/// A raw SMTP conversation over plain TCP: sends `script` in one write, reads until `replies`
/// final reply lines arrived (or 10 s passed).
pub async fn converse(port: u16, script: &[u8], replies: usize) -> String {
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return String::new() };
    if stream.write_all(script).await.is_err() {
        return String::new();
    }
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = String::from_utf8_lossy(&received).into_owned();
        let finals = text.lines().filter(|line| line.as_bytes().get(3) == Some(&b' ')).count();
        if finals >= replies || Instant::now() > deadline {
            return text;
        }
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return text,
            Ok(Ok(count)) => received.extend_from_slice(&buffer[..count]),
        }
    }
}

/// The final reply codes in a transcript.
pub fn codes(transcript: &str) -> Vec<String> {
    transcript.lines().filter(|line| line.as_bytes().get(3) == Some(&b' ')).map(|line| line[..3].to_owned()).collect()
}
