//! Delivery behaviour: per-recipient results, retries, bounces, TLS policy, queue commands.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Ports, Sink, certificates, codes, config, converse, wait_until};
use lienthong_mailrelay::{MailService, StaticLookup};
use mail_parser::MimeHeaders;

async fn send(port: u16, from: &str, recipients: &[&str], content: &str) -> String {
    let mut script = format!("EHLO test\r\nMAIL FROM:<{from}>\r\n");
    for recipient in recipients {
        script.push_str(&format!("RCPT TO:<{recipient}>\r\n"));
    }
    script.push_str(&format!("DATA\r\nFrom: <{from}>\r\n{content}.\r\nQUIT\r\n"));
    converse(port, script.as_bytes(), recipients.len() + 5).await
}

#[tokio::test]
async fn one_refused_recipient_does_not_fail_the_others_and_bounces_as_a_dsn() {
    let state = tempfile::tempdir().unwrap();
    let (sink, sink_address) = Sink::start().await;
    sink.refuse.lock().unwrap().insert("b@ninhthuan.gov.vn".into());
    let ports = Ports::new();
    // A trusted client (relay_from): its recipients are not verified at RCPT, so the mailbox
    // server refuses b only at delivery (a stranger would hear 550 at RCPT instead).
    let trusted = r#"relay_from = ["127.0.0.1/32"]"#;
    let service =
        MailService::start(config(state.path(), &ports, sink_address, trusted), certificates()).await.unwrap();
    let transcript = send(
        ports.mx,
        "sender@ninhthuan.gov.vn",
        &["a@ninhthuan.gov.vn", "b@ninhthuan.gov.vn", "c@ninhthuan.gov.vn"],
        "Subject: ba nguoi nhan\r\nMessage-ID: <goc@ninhthuan.gov.vn>\r\n\r\nNoi dung\r\n",
    )
    .await;
    assert!(transcript.contains("queued as"), "{transcript}");
    // The message to a and c, then the bounce to the sender.
    assert!(wait_until(Duration::from_secs(15), || sink.count() == 2).await, "{:?}", sink.all());
    let messages = sink.all();
    let delivered = messages.iter().find(|message| message.sender == "sender@ninhthuan.gov.vn").unwrap();
    assert_eq!(delivered.recipients, ["a@ninhthuan.gov.vn", "c@ninhthuan.gov.vn"]);
    let bounce = messages.iter().find(|message| message.sender.is_empty()).expect("a bounce with the null sender");
    assert_eq!(bounce.recipients, ["sender@ninhthuan.gov.vn"]);
    let parsed = mail_parser::MessageParser::new().parse(&bounce.content).expect("the DSN parses");
    let content_type = parsed.content_type().unwrap();
    assert_eq!(content_type.ctype(), "multipart");
    assert_eq!(content_type.subtype(), Some("report"));
    assert_eq!(content_type.attribute("report-type"), Some("delivery-status"));
    let report = parsed
        .parts
        .iter()
        .find(|part| part.content_type().is_some_and(|kind| kind.subtype() == Some("delivery-status")))
        .expect("a message/delivery-status part");
    let report = String::from_utf8_lossy(report.contents());
    assert!(report.contains("Final-Recipient: rfc822; b@ninhthuan.gov.vn"), "{report}");
    assert!(report.contains("Status: 5.1.1") && report.contains("Action: failed"), "{report}");
    assert!(!report.contains("a@ninhthuan.gov.vn"), "{report}");
    assert!(wait_until(Duration::from_secs(5), || service.queue_list_blocking().is_empty()).await);
    service.shutdown().await;
}

#[tokio::test]
async fn temporary_failure_is_retried_with_backoff() {
    let state = tempfile::tempdir().unwrap();
    let (sink, sink_address) = Sink::start().await;
    sink.temporary_failures.store(1, Ordering::SeqCst);
    let ports = Ports::new();
    let service = MailService::start(config(state.path(), &ports, sink_address, ""), certificates()).await.unwrap();
    send(ports.mx, "x@example.org", &["a@ninhthuan.gov.vn"], "Subject: retry\r\n\r\nx\r\n").await;
    assert!(
        wait_until(Duration::from_secs(5), || {
            service.queue_list_blocking().first().is_some_and(|entry| entry.attempts == 1)
        })
        .await
    );
    let entry = service.queue_list().await.remove(0);
    assert!(entry.last_error.as_deref().unwrap_or_default().contains("451"), "{entry:?}");
    let shown = service.queue_show(&entry.id).await.unwrap();
    assert!(shown.contains("deferred <a@ninhthuan.gov.vn>: 451") && shown.contains("Subject: retry"), "{shown}");
    assert!(!shown.contains("\r\n\r\nx"), "queue show must not print the body");
    assert!(wait_until(Duration::from_secs(10), || sink.count() == 1).await);
    assert!(wait_until(Duration::from_secs(5), || service.queue_list_blocking().is_empty()).await);
    service.shutdown().await;
}

#[tokio::test]
async fn require_tls_destinations_are_deferred_never_sent_in_clear() {
    let state = tempfile::tempdir().unwrap();
    let (sink, sink_address) = Sink::start().await;
    let ports = Ports::new();
    let config = config(state.path(), &ports, sink_address, "relay_from = [\"127.0.0.1\"]");
    let lookup = StaticLookup { routes: HashMap::from([("so.secure.gov.vn".to_owned(), vec![sink_address])]) };
    let service = MailService::start_with_lookup(config, certificates(), Arc::new(lookup)).await.unwrap();
    let transcript =
        send(ports.mx, "vanthu@ninhthuan.gov.vn", &["a@so.secure.gov.vn"], "Subject: mat\r\n\r\nx\r\n").await;
    assert!(codes(&transcript).contains(&"250".to_owned()), "{transcript}");
    assert!(
        wait_until(Duration::from_secs(5), || {
            service.queue_list_blocking().first().is_some_and(|entry| entry.attempts >= 1)
        })
        .await
    );
    let entry = service.queue_list().await.remove(0);
    assert!(entry.last_error.unwrap_or_default().contains("TLS is required"));
    assert_eq!(sink.count(), 0);
    // The operator gives up on it.
    assert!(service.queue_remove(&entry.id).await);
    assert!(service.queue_list().await.is_empty());
    assert_eq!(service.queue_flush(None).await, 0);
    service.shutdown().await;
}

#[tokio::test]
async fn queue_survives_a_restart_and_flush_delivers() {
    let state = tempfile::tempdir().unwrap();
    let (sink, sink_address) = Sink::start().await;
    sink.temporary_failures.store(1, Ordering::SeqCst);
    let ports = Ports::new();
    let service = MailService::start(config(state.path(), &ports, sink_address, ""), certificates()).await.unwrap();
    send(ports.mx, "x@example.org", &["a@ninhthuan.gov.vn"], "Subject: restart\r\n\r\nx\r\n").await;
    assert!(wait_until(Duration::from_secs(5), || sink.temporary_failures.load(Ordering::SeqCst) == 0).await);
    service.shutdown().await;
    let ports = Ports::new();
    let service = MailService::start(config(state.path(), &ports, sink_address, ""), certificates()).await.unwrap();
    assert_eq!(service.queue_flush(None).await, service.queue_list().await.len());
    assert!(wait_until(Duration::from_secs(10), || sink.count() == 1).await);
    service.shutdown().await;
}

#[tokio::test]
async fn reload_applies_new_domains_to_new_sessions() {
    let state = tempfile::tempdir().unwrap();
    let (sink, sink_address) = Sink::start().await;
    let ports = Ports::new();
    let service = MailService::start(config(state.path(), &ports, sink_address, ""), certificates()).await.unwrap();
    let before =
        converse(ports.mx, b"EHLO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@so-tttt.ninhthuan.gov.vn>\r\n", 4).await;
    assert_eq!(codes(&before)[3], "554", "{before}");
    // A session opened before the reload keeps its rules until it ends.
    let mut old_session = tokio::net::TcpStream::connect(("127.0.0.1", ports.mx)).await.unwrap();
    let extra = format!("[[mail.domain]]\nname = \"so-tttt.ninhthuan.gov.vn\"\ndeliver_to = \"{sink_address}\"");
    service.reload(config(state.path(), &ports, sink_address, &extra)).await.unwrap();
    let after =
        send(ports.mx, "a@example.org", &["b@so-tttt.ninhthuan.gov.vn"], "Subject: sau khi nap lai\r\n\r\nx\r\n").await;
    assert!(after.contains("queued as"), "{after}");
    assert!(wait_until(Duration::from_secs(10), || sink.count() == 1).await);
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    old_session.write_all(b"QUIT\r\n").await.unwrap();
    let mut transcript = Vec::new();
    old_session.read_to_end(&mut transcript).await.unwrap();
    assert!(String::from_utf8_lossy(&transcript).contains("221"), "the old session was dropped");
    service.shutdown().await;
}

trait BlockingList {
    fn queue_list_blocking(&self) -> Vec<lienthong_mailrelay::QueueEntry>;
}

impl BlockingList for MailService {
    /// `queue_list` only takes a lock; poll it from a synchronous closure.
    fn queue_list_blocking(&self) -> Vec<lienthong_mailrelay::QueueEntry> {
        futures_lite_block_on(self.queue_list())
    }
}

fn futures_lite_block_on<F: std::future::Future>(future: F) -> F::Output {
    let waker = std::task::Waker::noop();
    let mut context = std::task::Context::from_waker(waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
    }
}
