//! Regression tests for issue 8's items 4 (one `From:`, `Sender:` checked) and 9 (outbound TLS
//! verified for `require_tls_to`), through the real listeners.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::capture::Capture;
use common::{Ports, Sink, certificates, config, config_text, wait_until};
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use lienthong_mailrelay::{MailService, StaticLookup};

fn submission(port: u16) -> AsyncSmtpTransport<Tokio1Executor> {
    let tls = TlsParameters::builder("mail.ninhthuan.gov.vn".into())
        .dangerous_accept_invalid_certs(true)
        .build_rustls()
        .unwrap();
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .tls(Tls::Wrapper(tls))
        .credentials(Credentials::new("vanthu@ninhthuan.gov.vn".into(), "mat-khau-dung".into()))
        .authentication(vec![Mechanism::Plain])
        .timeout(Some(Duration::from_secs(10)))
        .build()
}

#[tokio::test]
async fn item4_one_from_at_most_one_sender_both_checked_against_may_send_as() {
    let state = tempfile::tempdir().unwrap();
    let (sink, sink_address) = Sink::start().await;
    let ports = Ports::new();
    let service = MailService::start(config(state.path(), &ports, sink_address, ""), certificates()).await.unwrap();
    let transport = submission(ports.submissions);
    let envelope =
        Envelope::new(Some("vanthu@ninhthuan.gov.vn".parse().unwrap()), vec!["a@ninhthuan.gov.vn".parse().unwrap()])
            .unwrap();
    let refused = [
        // Clients show the first From:; the old check read the last.
        "From: Giam doc <giamdoc@ninhthuan.gov.vn>\r\nFrom: <vanthu@ninhthuan.gov.vn>\r\nSubject: x\r\n\r\nx\r\n",
        "FROM: <vanthu@ninhthuan.gov.vn>\r\nfrom : <giamdoc@ninhthuan.gov.vn>\r\n\r\nx\r\n",
        "Subject: no From at all\r\n\r\nx\r\n",
        "From: <vanthu@ninhthuan.gov.vn>\r\nSender: <giamdoc@ninhthuan.gov.vn>\r\n\r\nx\r\n",
        "From: <vanthu@ninhthuan.gov.vn>\r\nSender: <vanthu@ninhthuan.gov.vn>\r\nSender: <ubnd@ninhthuan.gov.vn>\r\n\r\nx\r\n",
        "From: undisclosed:;\r\n\r\nx\r\n",
        "From: <vanthu@ninhthuan.gov.vn>,\r\n <giamdoc@ninhthuan.gov.vn>\r\nSender: <vanthu@ninhthuan.gov.vn>\r\n\r\nx\r\n",
    ];
    for content in refused {
        let error = transport.send_raw(&envelope, content.as_bytes()).await.unwrap_err();
        assert!(error.is_permanent(), "{content:?}: {error}");
    }
    let accepted = [
        "From: =?utf-8?q?V=C4=83n_th=C6=B0?= <VanThu@NinhThuan.gov.vn>\r\nSubject: x\r\n\r\nFrom: body lines are not headers\r\n",
        "From: <ubnd@ninhthuan.gov.vn>\r\nSender: <vanthu@ninhthuan.gov.vn>\r\n\r\nx\r\n",
    ];
    for content in accepted {
        transport.send_raw(&envelope, content.as_bytes()).await.unwrap_or_else(|error| panic!("{content:?}: {error}"));
    }
    assert!(wait_until(Duration::from_secs(10), || sink.count() == 2).await, "{:?}", sink.all());
    service.shutdown().await;
}

/// A CA and a certificate it signed for `name`, as (CA PEM, server config).
fn signed_server(name: &str) -> (String, Arc<rustls::ServerConfig>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "CA so TTTT Ninh Thuan");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap().signed_by(&key, &issuer).unwrap();
    let private = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone(), ca.der().clone()], private)
        .unwrap();
    (ca.pem(), Arc::new(config))
}

/// Sends one message to `a@secure.gov.vn` (a `require_tls_to` domain) through a relay whose
/// `ca_file` is `ca` (or none), with the MX presenting a certificate for `certificate_name`.
async fn deliver_to_secure(ca: Option<bool>, certificate_name: &str) -> (usize, Option<String>) {
    let state = tempfile::tempdir().unwrap();
    let (ca_pem, server) = signed_server(certificate_name);
    let (capture, address) = Capture::start(Some(server)).await;
    let ports = Ports::new();
    let mut text = config_text(state.path(), &ports, address, "relay_from = [\"127.0.0.1\"]");
    if let Some(trusted) = ca {
        let pem = if trusted { ca_pem } else { signed_server("secure.gov.vn").0 };
        std::fs::write(state.path().join("ca.pem"), pem).unwrap();
        let ca_line = format!("ca_file = \"{}\"\n", state.path().join("ca.pem").display());
        text = text.replace(
            "require_tls_to = [\"secure.gov.vn\"]\n",
            &format!("require_tls_to = [\"secure.gov.vn\"]\n{ca_line}"),
        );
    }
    let config = Arc::new(lienthong_config::parse(&text, "test.toml", state.path()).unwrap_or_else(|e| panic!("{e}")));
    let lookup = StaticLookup { routes: HashMap::from([("secure.gov.vn".to_owned(), vec![address])]) };
    let service = MailService::start_with_lookup(config, certificates(), Arc::new(lookup)).await.unwrap();
    let script = "EHLO x\r\nMAIL FROM:<vanthu@ninhthuan.gov.vn>\r\nRCPT TO:<a@secure.gov.vn>\r\nDATA\r\nFrom: <vanthu@ninhthuan.gov.vn>\r\nSubject: mat\r\n\r\nx\r\n.\r\nQUIT\r\n";
    let transcript = common::converse(ports.mx, script.as_bytes(), 7).await;
    assert!(transcript.contains("queued as"), "{transcript}");
    let settled = wait_until(Duration::from_secs(10), || {
        !capture.transactions().is_empty()
            || futures_block_on(service.queue_list()).first().is_some_and(|entry| entry.attempts >= 1)
    })
    .await;
    assert!(settled);
    let last_error = service.queue_list().await.first().and_then(|entry| entry.last_error.clone());
    let delivered = capture.transactions().len();
    service.shutdown().await;
    (delivered, last_error)
}

#[tokio::test]
async fn item9_require_tls_destinations_need_a_certificate_that_verifies() {
    // Signed by an operator CA the relay was not told about: wait in the queue.
    let (delivered, error) = deliver_to_secure(None, "secure.gov.vn").await;
    assert_eq!(delivered, 0);
    assert!(error.as_deref().unwrap_or_default().contains("does not verify"), "{error:?}");
    // Another CA in ca_file does not help.
    let (delivered, _) = deliver_to_secure(Some(false), "secure.gov.vn").await;
    assert_eq!(delivered, 0);
    // The right CA, the right name: delivered.
    let (delivered, error) = deliver_to_secure(Some(true), "secure.gov.vn").await;
    assert_eq!((delivered, error), (1, None));
    // The right CA but a certificate for another host: wait.
    let (delivered, error) = deliver_to_secure(Some(true), "other.gov.vn").await;
    assert_eq!(delivered, 0);
    assert!(error.as_deref().unwrap_or_default().contains("does not verify"), "{error:?}");
}

fn futures_block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(value) = future.as_mut().poll(&mut context) {
            return value;
        }
    }
}

/// A one-zone DNS server on loopback: `example.org` MX 10 `mx.example.org`, which is 127.0.0.1.
async fn loopback_mx_dns() -> std::net::SocketAddr {
    use hickory_resolver::proto::rr::rdata::{A, MX};
    use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
    common::fake_dns::serve(|question, _, response| {
        let name = question.name().clone();
        let exchange = Name::from_ascii("mx.example.org.").unwrap();
        match question.query_type() {
            RecordType::MX => response.add_answer(Record::from_rdata(name, 60, RData::MX(MX::new(10, exchange)))),
            RecordType::A if name == exchange => {
                response.add_answer(Record::from_rdata(name, 60, RData::A(A("127.0.0.1".parse().unwrap()))))
            }
            _ => response,
        };
        true
    })
    .await
}

#[tokio::test]
async fn item9_an_mx_pointing_at_loopback_bounces_as_a_mail_loop() {
    let state = tempfile::tempdir().unwrap();
    let (sink, sink_address) = Sink::start().await;
    let dns = loopback_mx_dns().await;
    let ports = Ports::new();
    let text = config_text(state.path(), &ports, sink_address, "relay_from = [\"127.0.0.1\"]")
        .replace("[dns]\nenabled = false\n", &format!("[dns]\nenabled = false\nforwarders = [\"{dns}\"]\n"));
    let config = Arc::new(lienthong_config::parse(&text, "test.toml", state.path()).unwrap_or_else(|e| panic!("{e}")));
    let service = MailService::start(config, certificates()).await.unwrap();
    let script = "EHLO x\r\nMAIL FROM:<vanthu@ninhthuan.gov.vn>\r\nRCPT TO:<doitac@example.org>\r\nDATA\r\nFrom: <vanthu@ninhthuan.gov.vn>\r\nSubject: vong lap\r\n\r\nx\r\n.\r\nQUIT\r\n";
    let transcript = common::converse(ports.mx, script.as_bytes(), 7).await;
    assert!(transcript.contains("queued as"), "{transcript}");
    // The bounce comes back to vanthu through the local mailbox server (the sink).
    assert!(wait_until(Duration::from_secs(15), || sink.count() == 1).await, "{:?}", sink.all());
    let bounce = &sink.all()[0];
    assert_eq!(
        (bounce.sender.as_str(), bounce.recipients.as_slice()),
        ("", &["vanthu@ninhthuan.gov.vn".to_owned()][..])
    );
    let report = String::from_utf8_lossy(&bounce.content);
    assert!(report.contains("Status: 5.4.6") && report.contains("loops back to myself"), "{report}");
    service.shutdown().await;
}
