//! Regression tests for issue 8's mail items, through the real listeners and a strict next hop
//! that records every byte the relay writes (`common::capture`).

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::capture::Capture;
use common::{Ports, certificates, codes, config_listing, converse, wait_until};
use lienthong_mailrelay::{MailService, StaticLookup};

struct Relay {
    service: MailService,
    ports: Ports,
    capture: Arc<Capture>,
    _state: tempfile::TempDir,
}

/// A relay delivering ninhthuan.gov.vn and (as its MX) example.org to one capturing sink. The
/// local recipients are a list, so the sink sees deliveries only, no verification probes, and
/// a listed recipient the sink refuses is bounced.
async fn relay(extra_mail: &str) -> Relay {
    let state = tempfile::tempdir().unwrap();
    let (capture, address) = Capture::start(None).await;
    let ports = Ports::new();
    let local = ["vanthu", "khong-co", "mot", "hai"];
    let config = config_listing(state.path(), &ports, address, extra_mail, &local);
    let lookup = StaticLookup { routes: HashMap::from([("example.org".to_owned(), vec![address])]) };
    let service = MailService::start_with_lookup(config, certificates(), Arc::new(lookup)).await.unwrap();
    Relay { service, ports, capture, _state: state }
}

fn message(subject: &str) -> String {
    format!("From: <doitac@example.org>\r\nSubject: {subject}\r\n\r\nNoi dung\r\n.\r\n")
}

#[tokio::test]
async fn item1_envid_with_crlf_is_refused_and_never_reaches_the_next_hop() {
    let relay = relay("").await;
    let script = format!(
        "EHLO attacker\r\nMAIL FROM:<a@example.org> ENVID=x+0D+0ARCPT+20TO:<victim@ninhthuan.gov.vn>\r\n\
         MAIL FROM:<a@example.org>\r\nRCPT TO:<vanthu@ninhthuan.gov.vn>\r\nDATA\r\n{}QUIT\r\n",
        message("sach")
    );
    let transcript = converse(relay.ports.mx, script.as_bytes(), 8).await;
    assert_eq!(codes(&transcript), ["220", "250", "501", "250", "250", "354", "250", "221"], "{transcript}");
    assert!(transcript.contains("501 5.5.4 Bad ENVID parameter syntax"), "{transcript}");
    assert!(wait_until(Duration::from_secs(10), || relay.capture.transactions().len() == 1).await);
    let commands = relay.capture.commands();
    assert!(!commands.iter().any(|line| line.contains("victim")), "{commands:?}");
    assert!(relay.capture.protocol_errors.lock().unwrap().is_empty(), "{commands:?}");
    relay.service.shutdown().await;
}

#[tokio::test]
async fn item1_orcpt_carrying_commands_is_refused() {
    let relay = relay("").await;
    let script = "EHLO attacker\r\nMAIL FROM:<a@example.org>\r\n\
         RCPT TO:<vanthu@ninhthuan.gov.vn> ORCPT=rfc822;x+0D+0ARSET+0D+0AMAIL+20FROM:<evil@example.org>\r\n\
         RCPT TO:<vanthu@ninhthuan.gov.vn> ORCPT=rfc822;x\rRSET\r\n\
         RCPT TO:<vanthu@ninhthuan.gov.vn> NOTIFY=FAILURE\x00\r\nQUIT\r\n";
    let transcript = converse(relay.ports.mx, script.as_bytes(), 7).await;
    assert_eq!(codes(&transcript), ["220", "250", "250", "501", "500", "500", "221"], "{transcript}");
    relay.service.shutdown().await;
}

#[tokio::test]
async fn item2_orcpt_and_envid_are_relayed_in_xtext_and_reported_decoded() {
    let relay = relay("").await;
    relay.capture.refuse.lock().unwrap().insert("khong-co@ninhthuan.gov.vn".into());
    let script = format!(
        "EHLO hopthu.example.org\r\nMAIL FROM:<doitac@example.org> ENVID=giao+20ban+2B1 RET=HDRS\r\n\
         RCPT TO:<vanthu@ninhthuan.gov.vn> NOTIFY=FAILURE ORCPT=rfc822;Van+2BThu@ninhthuan.gov.vn\r\n\
         RCPT TO:<khong-co@ninhthuan.gov.vn> ORCPT=RFC822;khong-co@ninhthuan.gov.vn\r\nDATA\r\n{}QUIT\r\n",
        message("giao ban")
    );
    let transcript = converse(relay.ports.mx, script.as_bytes(), 7).await;
    assert!(transcript.contains("queued as"), "{transcript}");
    // The message to vanthu, then the bounce for khong-co to doitac@example.org.
    assert!(wait_until(Duration::from_secs(15), || relay.capture.transactions().len() == 2).await);
    let transactions = relay.capture.transactions();
    let delivered = transactions.iter().find(|transaction| transaction.mail.contains("doitac")).unwrap();
    assert!(delivered.mail.ends_with(" RET=HDRS ENVID=giao+20ban+2B1\r\n"), "{}", delivered.mail);
    assert_eq!(
        delivered.rcpts[0],
        "RCPT TO:<vanthu@ninhthuan.gov.vn> NOTIFY=FAILURE ORCPT=rfc822;Van+2BThu@ninhthuan.gov.vn\r\n"
    );
    assert_eq!(delivered.recipients, ["vanthu@ninhthuan.gov.vn"]);
    assert!(relay.capture.protocol_errors.lock().unwrap().is_empty(), "{:?}", relay.capture.commands());
    let bounce = transactions.iter().find(|transaction| transaction.mail.starts_with("MAIL FROM:<>")).unwrap();
    let report = String::from_utf8_lossy(&bounce.content);
    assert!(report.contains("\r\nOriginal-Envelope-Id: giao ban+1\r\n"), "{report}");
    assert!(report.contains("\r\nOriginal-Recipient: rfc822; khong-co@ninhthuan.gov.vn\r\n"), "{report}");
    relay.service.shutdown().await;
}

#[tokio::test]
async fn item1_a_next_hop_out_of_step_is_never_reused() {
    let relay = relay("").await;
    relay.capture.double_reply_once.store(true, Ordering::SeqCst);
    let send = |subject: &'static str| {
        let script = format!(
            "EHLO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<{subject}@ninhthuan.gov.vn>\r\nDATA\r\n{}QUIT\r\n",
            message(subject)
        );
        async move { converse(relay.ports.mx, script.as_bytes(), 7).await }
    };
    assert!(send("mot").await.contains("queued as"));
    // The first attempt met the extra reply; the second message comes while it is fresh.
    assert!(
        wait_until(Duration::from_secs(10), || relay.capture.commands().iter().any(|line| line.starts_with("RCPT")))
            .await
    );
    assert!(send("hai").await.contains("queued as"));
    assert!(wait_until(Duration::from_secs(15), || relay.capture.transactions().len() == 2).await);
    for transaction in relay.capture.transactions() {
        let content = String::from_utf8_lossy(&transaction.content);
        let recipient = transaction.recipients.join(",");
        assert_eq!(content.matches("Subject: ").count(), 1, "one message per transaction: {content}");
        let subject = recipient.split('@').next().unwrap();
        assert!(content.contains(&format!("Subject: {subject}\r\n")), "{recipient} got {content}");
        assert!(!content.contains("MAIL FROM"), "{content}");
    }
    relay.service.shutdown().await;
}

#[tokio::test]
async fn item5_outsiders_may_not_use_local_senders_on_the_mx_port() {
    let relay = relay("").await;
    for sender in ["ceo@ninhthuan.gov.vn", "CEO@NinhThuan.Gov.VN."] {
        let script = format!("EHLO x\r\nMAIL FROM:<{sender}>\r\nQUIT\r\n");
        let transcript = converse(relay.ports.mx, script.as_bytes(), 4).await;
        assert!(transcript.contains("550 5.7.1"), "{transcript}");
    }
    let transcript =
        converse(relay.ports.mx, b"EHLO x\r\nMAIL FROM:<a@example.org>\r\nMAIL FROM:<>\r\nQUIT\r\n", 5).await;
    assert_eq!(codes(&transcript), ["220", "250", "250", "503", "221"], "{transcript}");
    relay.service.shutdown().await;
    // From relay_from the same sender is fine (the mailbox server sending out).
    let relay = relay_from_loopback().await;
    let transcript = converse(relay.ports.mx, b"EHLO x\r\nMAIL FROM:<ceo@ninhthuan.gov.vn>\r\nQUIT\r\n", 4).await;
    assert_eq!(codes(&transcript), ["220", "250", "250", "221"], "{transcript}");
    relay.service.shutdown().await;
}

async fn relay_from_loopback() -> Relay {
    relay("relay_from = [\"127.0.0.1\"]").await
}

#[tokio::test]
async fn item6_bdat_ending_in_a_bare_cr_is_refused() {
    let relay = relay("").await;
    let content = b"From: <a@example.org>\r\n\r\nbody\r";
    let mut script = format!(
        "EHLO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<vanthu@ninhthuan.gov.vn>\r\nBDAT {} LAST\r\n",
        content.len()
    )
    .into_bytes();
    script.extend_from_slice(content);
    script.extend_from_slice(b"QUIT\r\n");
    let transcript = converse(relay.ports.mx, &script, 6).await;
    assert!(transcript.contains("550 5.6.0"), "{transcript}");
    assert!(relay.service.queue_list().await.is_empty());
    // Split over two chunks, the CR at the end of the first one is fine when LF starts the next.
    let script = b"EHLO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<vanthu@ninhthuan.gov.vn>\r\nBDAT 27\r\nFrom: <a@example.org>\r\n\r\nb\rBDAT 1 LAST\r\n\nQUIT\r\n";
    let transcript = converse(relay.ports.mx, script, 7).await;
    assert!(transcript.contains("queued as"), "{transcript}");
    relay.service.shutdown().await;
}
