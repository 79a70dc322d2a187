//! Recipient verification at RCPT (against backscatter), through the real MX listener, with a
//! scripted mailbox server that refuses unknown mailboxes at RCPT.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Ports, certificates, codes, config, converse, free_port, wait_until};
use lienthong_mailrelay::MailService;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// The mailbox server: knows some mailboxes, counts what it is asked, can answer slowly.
#[derive(Default)]
struct MailboxServer {
    mailboxes: HashSet<String>,
    /// RCPT commands in transactions that never sent DATA (probes) and in all.
    rcpts: AtomicUsize,
    /// Messages received: (sender, recipients).
    messages: Mutex<Vec<(String, Vec<String>)>>,
    open: AtomicUsize,
    /// RCPT commands being answered at once (each is inside one probe), and the most seen.
    answering: AtomicUsize,
    most_answering: AtomicUsize,
    rcpt_delay_milliseconds: u64,
}

impl MailboxServer {
    async fn start(mailboxes: &[&str], rcpt_delay_milliseconds: u64) -> (Arc<Self>, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = Arc::new(Self {
            mailboxes: mailboxes.iter().map(|mailbox| mailbox.to_string()).collect(),
            rcpt_delay_milliseconds,
            ..Self::default()
        });
        let shared = server.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let server = shared.clone();
                tokio::spawn(async move {
                    server.open.fetch_add(1, Ordering::SeqCst);
                    let _ = server.serve(stream).await;
                    server.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        (server, address)
    }

    async fn serve(&self, stream: tokio::net::TcpStream) -> std::io::Result<()> {
        let (read, mut write) = stream.into_split();
        let mut reader = BufReader::new(read);
        write.write_all(b"220 mailbox.ninhthuan.gov.vn ESMTP\r\n").await?;
        let (mut sender, mut recipients) = (String::new(), Vec::new());
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let upper = line.to_ascii_uppercase();
            let path = line.split_once('<').and_then(|(_, rest)| rest.split_once('>')).map(|(path, _)| path.to_owned());
            let reply: &[u8] = if upper.starts_with("EHLO") {
                b"250-mailbox\r\n250 8BITMIME\r\n"
            } else if upper.starts_with("MAIL FROM:") {
                sender = path.unwrap_or_default();
                recipients.clear();
                b"250 2.1.0 ok\r\n"
            } else if upper.starts_with("RCPT TO:") {
                self.rcpts.fetch_add(1, Ordering::SeqCst);
                let answering = self.answering.fetch_add(1, Ordering::SeqCst) + 1;
                self.most_answering.fetch_max(answering, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(self.rcpt_delay_milliseconds)).await;
                self.answering.fetch_sub(1, Ordering::SeqCst);
                let recipient = path.unwrap_or_default();
                if self.mailboxes.contains(&recipient.to_lowercase()) {
                    recipients.push(recipient);
                    b"250 2.1.5 ok\r\n"
                } else {
                    b"550 5.1.1 no such user here\r\n"
                }
            } else if upper.starts_with("DATA") {
                write.write_all(b"354 go\r\n").await?;
                let mut data = String::new();
                while data != ".\r\n" {
                    data.clear();
                    if reader.read_line(&mut data).await? == 0 {
                        return Ok(());
                    }
                }
                self.messages.lock().unwrap().push((sender.clone(), recipients.clone()));
                b"250 2.0.0 stored\r\n"
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

fn rcpt_script(recipients: &[&str]) -> String {
    let mut script = String::from("EHLO mx.example.org\r\nMAIL FROM:<forged@example.org>\r\n");
    for recipient in recipients {
        script.push_str(&format!("RCPT TO:<{recipient}>\r\n"));
    }
    script
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_local_recipients_are_refused_at_rcpt_so_nothing_bounces() {
    let state = tempfile::tempdir().unwrap();
    let (mailbox, address) = MailboxServer::start(&["vanthu@ninhthuan.gov.vn"], 0).await;
    let ports = Ports::new();
    let service = MailService::start(config(state.path(), &ports, address, ""), certificates()).await.unwrap();
    let mut script = rcpt_script(&["vanthu@ninhthuan.gov.vn", "khongco@ninhthuan.gov.vn"]);
    script.push_str("DATA\r\nFrom: <forged@example.org>\r\nSubject: thu\r\n\r\nnoi dung\r\n.\r\nQUIT\r\n");
    let transcript = converse(ports.mx, script.as_bytes(), 8).await;
    assert_eq!(codes(&transcript), ["220", "250", "250", "250", "550", "354", "250", "221"], "{transcript}");
    assert!(transcript.contains("550 5.1.1 <khongco@ninhthuan.gov.vn>: Recipient address rejected"), "{transcript}");
    assert!(wait_until(Duration::from_secs(15), || !mailbox.messages.lock().unwrap().is_empty()).await);
    let asked = mailbox.rcpts.load(Ordering::SeqCst);
    // Both answers are cached: asking again costs the mailbox server nothing.
    let again =
        converse(ports.mx, rcpt_script(&["KhongCo@ninhthuan.gov.vn", "vanthu@ninhthuan.gov.vn"]).as_bytes(), 5).await;
    assert_eq!(codes(&again), ["220", "250", "250", "550", "250"], "{again}");
    // The delivery's own RCPT is the only one added.
    assert_eq!(mailbox.rcpts.load(Ordering::SeqCst), asked);
    for _ in 0..250 {
        if service.queue_list().await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(service.queue_list().await.is_empty());
    let messages = mailbox.messages.lock().unwrap().clone();
    assert_eq!(messages, [("forged@example.org".to_owned(), vec!["vanthu@ninhthuan.gov.vn".to_owned()])]);
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailbox_server_that_cannot_be_asked_gives_450_not_250() {
    let state = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let nowhere: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let service = MailService::start(config(state.path(), &ports, nowhere, ""), certificates()).await.unwrap();
    let transcript = converse(ports.mx, rcpt_script(&["vanthu@ninhthuan.gov.vn"]).as_bytes(), 4).await;
    assert!(
        transcript.ends_with(
            "450 4.1.1 <vanthu@ninhthuan.gov.vn>: Recipient address rejected: unverified address; try again later\r\n"
        ),
        "{transcript}"
    );
    // A trusted client (the mailbox server itself, relay_from) is not checked.
    service.shutdown().await;
    service_with_trusted(&state, nowhere).await;
}

async fn service_with_trusted(state: &tempfile::TempDir, deliver_to: SocketAddr) {
    let ports = Ports::new();
    let trusted = r#"relay_from = ["127.0.0.1/32"]"#;
    let service = MailService::start(config(state.path(), &ports, deliver_to, trusted), certificates()).await.unwrap();
    let transcript = converse(ports.mx, rcpt_script(&["vanthu@ninhthuan.gov.vn"]).as_bytes(), 4).await;
    assert!(transcript.ends_with("250 2.1.5 Ok\r\n"), "{transcript}");
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_are_coalesced_and_bounded_so_they_cannot_flood_the_mailbox_server() {
    let state = tempfile::tempdir().unwrap();
    let (mailbox, address) = MailboxServer::start(&["vanthu@ninhthuan.gov.vn"], 400).await;
    let ports = Ports::new();
    let service = MailService::start(config(state.path(), &ports, address, ""), certificates()).await.unwrap();
    // Twenty sessions ask about the same unknown address at once: one probe.
    let same = (0..20).map(|_| {
        tokio::spawn(async move { converse(ports.mx, rcpt_script(&["ai-do@ninhthuan.gov.vn"]).as_bytes(), 4).await })
    });
    for session in same.collect::<Vec<_>>() {
        let transcript = session.await.unwrap();
        assert!(
            transcript.ends_with("550 5.1.1 <ai-do@ninhthuan.gov.vn>: Recipient address rejected: User unknown\r\n"),
            "{transcript}"
        );
    }
    assert_eq!(mailbox.rcpts.load(Ordering::SeqCst), 1);
    // Forty sessions ask about forty different addresses: at most 8 probes at once.
    let different = (0..40).map(|index| {
        tokio::spawn(async move {
            let recipient = format!("nguoi{index}@ninhthuan.gov.vn");
            converse(ports.mx, rcpt_script(&[&recipient]).as_bytes(), 4).await
        })
    });
    for session in different.collect::<Vec<_>>() {
        let transcript = session.await.unwrap();
        assert!(transcript.contains(" 5.1.1 ") || transcript.contains(" 4.1.1 "), "{transcript}");
    }
    assert_eq!(mailbox.rcpts.load(Ordering::SeqCst), 41);
    let most = mailbox.most_answering.load(Ordering::SeqCst);
    assert!((2..=8).contains(&most), "{most} probes at once");
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_with_a_recipient_list_needs_no_probe() {
    let state = tempfile::tempdir().unwrap();
    let (mailbox, address) = MailboxServer::start(&[], 0).await;
    let ports = Ports::new();
    let listed = format!(
        "[[mail.domain]]\nname = \"stttt.ninhthuan.gov.vn\"\ndeliver_to = \"{address}\"\n\
         verify_recipients = \"list\"\nrecipients = [\"vanthu\", \"tiepdan@stttt.ninhthuan.gov.vn\"]\n"
    );
    let service = MailService::start(config(state.path(), &ports, address, &listed), certificates()).await.unwrap();
    let script = rcpt_script(&[
        "VanThu@stttt.ninhthuan.gov.vn",
        "tiepdan@stttt.ninhthuan.gov.vn",
        "khongco@stttt.ninhthuan.gov.vn",
        "postmaster@stttt.ninhthuan.gov.vn",
    ]);
    let transcript = converse(ports.mx, script.as_bytes(), 7).await;
    assert_eq!(codes(&transcript), ["220", "250", "250", "250", "250", "550", "250"], "{transcript}");
    assert_eq!(mailbox.rcpts.load(Ordering::SeqCst), 0);
    assert_eq!(mailbox.open.load(Ordering::SeqCst), 0);
    service.shutdown().await;
}
