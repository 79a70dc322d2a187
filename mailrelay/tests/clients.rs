//! Real SMTP clients against the relay on loopback: lettre for submission (STARTTLS, implicit
//! TLS, AUTH), raw sockets for the MX port (relay battery, pipelining, byte-exact content).

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::{Ports, Sink, certificates, codes, config, converse, wait_until};
use lettre::message::{Mailbox, Message, header::ContentType};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use lienthong_mailrelay::{MailService, StaticLookup};

struct Relay {
    service: MailService,
    ports: Ports,
    sink: Arc<Sink>,
    _state: tempfile::TempDir,
}

/// A relay delivering ninhthuan.gov.vn and (as its "MX") example.org to one sink.
async fn relay() -> Relay {
    let state = tempfile::tempdir().unwrap();
    let (sink, sink_address) = Sink::start().await;
    let ports = Ports::new();
    let config = config(state.path(), &ports, sink_address, "");
    let lookup = StaticLookup { routes: HashMap::from([("example.org".to_owned(), vec![sink_address])]) };
    let service = MailService::start_with_lookup(config, certificates(), Arc::new(lookup)).await.unwrap();
    Relay { service, ports, sink, _state: state }
}

fn tls_parameters() -> TlsParameters {
    TlsParameters::builder("mail.ninhthuan.gov.vn".into()).dangerous_accept_invalid_certs(true).build_rustls().unwrap()
}

fn client(port: u16, tls: Tls, password: &str) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .tls(tls)
        .credentials(Credentials::new("vanthu@ninhthuan.gov.vn".into(), password.into()))
        .authentication(vec![Mechanism::Plain, Mechanism::Login])
        .timeout(Some(Duration::from_secs(10)))
        .build()
}

fn letter(from: &str, to: &str, body: &str) -> Message {
    Message::builder()
        .from(from.parse::<Mailbox>().unwrap())
        .to(to.parse::<Mailbox>().unwrap())
        .subject("Giấy mời họp giao ban")
        .header(ContentType::TEXT_PLAIN)
        .body(body.to_owned())
        .unwrap()
}

#[tokio::test]
async fn submission_with_starttls_and_auth_relays_to_a_foreign_domain() {
    let relay = relay().await;
    let transport = client(relay.ports.submission, Tls::Required(tls_parameters()), "mat-khau-dung");
    let response = transport
        .send(letter("Văn thư <vanthu@ninhthuan.gov.vn>", "doitac@example.org", "Kính gửi quý cơ quan"))
        .await
        .unwrap();
    assert!(response.is_positive());
    assert!(wait_until(Duration::from_secs(10), || relay.sink.count() == 1).await);
    let delivered = &relay.sink.all()[0];
    assert_eq!(delivered.recipients, ["doitac@example.org"]);
    let text = String::from_utf8_lossy(&delivered.content);
    assert!(text.starts_with("Received: from "), "{text}");
    assert!(text.contains("with ESMTPSA id") && text.contains("(using TLSv1.3 with cipher"), "{text}");
    relay.service.shutdown().await;
}

#[tokio::test]
async fn submissions_with_implicit_tls() {
    let relay = relay().await;
    let transport = client(relay.ports.submissions, Tls::Wrapper(tls_parameters()), "mat-khau-dung");
    transport.send(letter("vanthu@ninhthuan.gov.vn", "doitac@example.org", "Chào")).await.unwrap();
    assert!(wait_until(Duration::from_secs(10), || relay.sink.count() == 1).await);
    relay.service.shutdown().await;
}

#[tokio::test]
async fn wrong_password_is_refused_and_rate_limited() {
    let relay = relay().await;
    let transport = client(relay.ports.submissions, Tls::Wrapper(tls_parameters()), "sai-mat-khau");
    let error = transport.send(letter("vanthu@ninhthuan.gov.vn", "a@example.org", "x")).await.unwrap_err();
    assert!(error.to_string().contains("535") || error.to_string().to_lowercase().contains("credentials"), "{error}");
    for _ in 0..5 {
        let _ = transport.send(letter("vanthu@ninhthuan.gov.vn", "a@example.org", "x")).await;
    }
    // Even the right password is refused while the address is blocked.
    let good = client(relay.ports.submissions, Tls::Wrapper(tls_parameters()), "mat-khau-dung");
    let error = good.send(letter("vanthu@ninhthuan.gov.vn", "a@example.org", "x")).await.unwrap_err();
    assert!(error.to_string().contains("454") || error.to_string().contains("4.7.0"), "{error}");
    assert_eq!(relay.sink.count(), 0);
    relay.service.shutdown().await;
}

#[tokio::test]
async fn auth_is_refused_before_tls() {
    let relay = relay().await;
    let transport = client(relay.ports.submission, Tls::None, "mat-khau-dung");
    assert!(transport.send(letter("vanthu@ninhthuan.gov.vn", "a@example.org", "x")).await.is_err());
    let credentials = "AHZhbnRodUBuaW5odGh1YW4uZ292LnZuAG1hdC1raGF1LWR1bmc=";
    let transcript =
        converse(relay.ports.submission, format!("EHLO x\r\nAUTH PLAIN {credentials}\r\n").as_bytes(), 3).await;
    assert!(!transcript.contains("AUTH PLAIN LOGIN"), "{transcript}");
    assert_eq!(codes(&transcript), ["220", "250", "538"]);
    relay.service.shutdown().await;
}

#[tokio::test]
async fn sender_mismatch_is_refused() {
    let relay = relay().await;
    let transport = client(relay.ports.submissions, Tls::Wrapper(tls_parameters()), "mat-khau-dung");
    let error = transport.send(letter("giamdoc@ninhthuan.gov.vn", "a@example.org", "x")).await.unwrap_err();
    assert!(error.to_string().contains("5.7.1") || error.to_string().contains("550"), "{error}");
    assert_eq!(relay.sink.count(), 0);
    relay.service.shutdown().await;
}

#[tokio::test]
async fn size_limit_is_enforced() {
    let relay = relay().await;
    let transport = client(relay.ports.submissions, Tls::Wrapper(tls_parameters()), "mat-khau-dung");
    let body = "Nội dung dài. ".repeat(20_000);
    let error = transport.send(letter("vanthu@ninhthuan.gov.vn", "a@example.org", &body)).await.unwrap_err();
    assert!(error.to_string().contains("552") || error.to_string().contains("5.3.4"), "{error}");
    relay.service.shutdown().await;
}

#[tokio::test]
async fn open_relay_battery_on_the_mx_port() {
    let relay = relay().await;
    let tricks = [
        "<user@example.org>",
        "<user%example.org@ninhthuan.gov.vn>",
        "<example.org!user@ninhthuan.gov.vn>",
        "<\"user@example.org\"@ninhthuan.gov.vn>",
        "<@ninhthuan.gov.vn:user@example.org>",
        "<user@example.org.>",
        "<user@EXAMPLE.ORG>",
        "<user@ninhthuan.gov.vn.example.org>",
    ];
    for trick in tricks {
        let script = format!("EHLO attacker\r\nMAIL FROM:<spam@example.net>\r\nRCPT TO:{trick}\r\nQUIT\r\n");
        let transcript = converse(relay.ports.mx, script.as_bytes(), 5).await;
        let rcpt = &codes(&transcript)[3];
        assert!(rcpt == "554" || rcpt == "501", "{trick}: {transcript}");
    }
    let transcript =
        converse(relay.ports.mx, b"EHLO x\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<VanThu@NinhThuan.Gov.VN.>\r\n", 4)
            .await;
    assert_eq!(codes(&transcript), ["220", "250", "250", "250"]);
    relay.service.shutdown().await;
}

#[tokio::test]
async fn pipelining_and_vietnamese_content_byte_for_byte() {
    let relay = relay().await;
    let content = "From: Văn thư <vanthu@ninhthuan.gov.vn>\r\nTo: Phòng Tổ chức <tochuc@ninhthuan.gov.vn>\r\nSubject: Giấy mời họp giao ban tuần\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nKính gửi các đồng chí,\r\n.Dòng bắt đầu bằng dấu chấm.\r\nTrân trọng.\r\n";
    let stuffed = content.replace("\r\n.", "\r\n..");
    let script = format!(
        "EHLO hopthu.ninhthuan.gov.vn\r\nMAIL FROM:<doitac@example.org> BODY=8BITMIME SMTPUTF8\r\nRCPT TO:<tochuc@ninhthuan.gov.vn>\r\nRCPT TO:<nguyễn.văn.a@ninhthuan.gov.vn>\r\nDATA\r\n{stuffed}.\r\nQUIT\r\n"
    );
    let transcript = converse(relay.ports.mx, script.as_bytes(), 7).await;
    assert_eq!(
        codes(&transcript),
        ["220", "250", "250", "250", "250", "354", "250", "221"][..codes(&transcript).len()]
    );
    assert!(transcript.contains("PIPELINING") && transcript.contains("221"), "{transcript}");
    assert!(wait_until(Duration::from_secs(10), || relay.sink.count() == 1).await);
    let delivered = &relay.sink.all()[0];
    assert_eq!(delivered.recipients, ["tochuc@ninhthuan.gov.vn", "nguyễn.văn.a@ninhthuan.gov.vn"]);
    assert!(delivered.content.ends_with(content.as_bytes()), "content changed on the way");
    relay.service.shutdown().await;
}
