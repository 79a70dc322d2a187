//! Issue 12's outbound trust through the real relay: MTA-STS (RFC 8461) policies looked up in
//! a DNS server of this test and fetched from a loopback HTTPS server whose certificate a test
//! CA signed (the relay trusts it through `mail.outbound.ca_file`), and REQUIRETLS (RFC 8689)
//! from intake to the next hop.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::capture::Capture;
use common::{Ports, Sink, certificates, config_text, tls_client, wait_until};
use lienthong_mailrelay::{MailService, Outside, StaticLookup};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A CA, and server configs for certificates it signed.
struct TestCa {
    pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    root: rustls::pki_types::CertificateDer<'static>,
}

impl TestCa {
    fn new() -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "CA thu nghiem MTA-STS");
        let certificate = params.self_signed(&key).unwrap();
        Self { pem: certificate.pem(), root: certificate.der().clone(), issuer: rcgen::Issuer::new(params, key) }
    }

    fn server(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let leaf = rcgen::CertificateParams::new(names).unwrap().signed_by(&key, &self.issuer).unwrap();
        let private = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone(), self.root.clone()], private)
            .unwrap();
        Arc::new(config)
    }
}

/// DNS on loopback: TXT for the names in `txt`, A 127.0.0.1 for every `mta-sts.` name of them.
async fn dns(txt: HashMap<String, String>) -> SocketAddr {
    use hickory_resolver::proto::op::ResponseCode;
    use hickory_resolver::proto::rr::rdata::{A, TXT};
    use hickory_resolver::proto::rr::{RData, Record, RecordType};
    common::fake_dns::serve(move |question, name, response| {
        let policy_host =
            name.strip_prefix("mta-sts.").is_some_and(|domain| txt.contains_key(&format!("_mta-sts.{domain}")));
        match (question.query_type(), txt.get(name)) {
            (RecordType::TXT, Some(text)) => {
                let rdata = RData::TXT(TXT::new(vec![text.clone()]));
                response.add_answer(Record::from_rdata(question.name().clone(), 60, rdata));
            }
            (RecordType::A, None) if policy_host => {
                let rdata = RData::A(A("127.0.0.1".parse().unwrap()));
                response.add_answer(Record::from_rdata(question.name().clone(), 60, rdata));
            }
            (_, None) if policy_host => {}
            _ => response.metadata.response_code = ResponseCode::NXDomain,
        }
        true
    })
    .await
}

/// HTTPS on loopback serving `policies[host]` at /.well-known/mta-sts.txt; counts requests.
async fn policy_server(tls: Arc<rustls::ServerConfig>, policies: HashMap<String, String>) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = fetches.clone();
    let policies = Arc::new(policies);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (tls, policies, counter) = (tls.clone(), policies.clone(), counter.clone());
            tokio::spawn(async move {
                let Ok(mut stream) = tokio_rustls::TlsAcceptor::from(tls).accept(tcp).await else { return };
                let mut request = Vec::new();
                let mut buffer = [0u8; 1024];
                while !request.windows(4).any(|window| window == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => request.extend_from_slice(&buffer[..read]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let request = String::from_utf8_lossy(&request).into_owned();
                let host =
                    request.lines().find_map(|line| line.strip_prefix("Host: ")).unwrap_or_default().trim().to_owned();
                let right_path = request.starts_with("GET /.well-known/mta-sts.txt HTTP/1.1\r\n");
                let response = match policies.get(&host) {
                    Some(body) if right_path => format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    ),
                    _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned(),
                };
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (port, fetches)
}

fn policy(mode: &str, mx: &str) -> String {
    format!("version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\nmax_age: 86400\r\n")
}

struct Relay {
    service: MailService,
    sink: Arc<Sink>,
    ports: Ports,
    fetches: Arc<AtomicUsize>,
    _state: tempfile::TempDir,
}

/// A relay whose MX lookups send each domain of `routes` to its address, with `policies`
/// (domain -> (mode, mx)) published by DNS and the HTTPS server.
async fn relay(ca: &TestCa, routes: &[(&str, SocketAddr)], policies: &[(&str, &str, &str)]) -> Relay {
    relay_in(tempfile::tempdir().unwrap(), ca, routes, policies, "20261202T0400", true).await
}

/// Like [`relay`] in `state`, with TXT records announcing `id`, and the HTTPS server
/// answering 404 to everything unless `served`.
async fn relay_in(
    state: tempfile::TempDir,
    ca: &TestCa,
    routes: &[(&str, SocketAddr)],
    policies: &[(&str, &str, &str)],
    id: &str,
    served: bool,
) -> Relay {
    let txt =
        policies.iter().map(|(domain, _, _)| (format!("_mta-sts.{domain}"), format!("v=STSv1; id={id};"))).collect();
    let dns = dns(txt).await;
    let hosts: Vec<String> = policies.iter().map(|(domain, _, _)| format!("mta-sts.{domain}")).collect();
    let tls = ca.server(&hosts.iter().map(String::as_str).collect::<Vec<_>>());
    let bodies = policies
        .iter()
        .filter(|_| served)
        .map(|(domain, mode, mx)| (format!("mta-sts.{domain}"), policy(mode, mx)))
        .collect();
    let (port, fetches) = policy_server(tls, bodies).await;
    std::fs::write(state.path().join("ca.pem"), &ca.pem).unwrap();
    let (sink, sink_address) = Sink::start().await;
    let ports = Ports::new();
    let ca_line = format!("ca_file = \"{}\"\n", state.path().join("ca.pem").display());
    let text = config_text(state.path(), &ports, sink_address, "relay_from = [\"127.0.0.1\"]")
        .replace("[dns]\nenabled = false\n", &format!("[dns]\nenabled = false\nforwarders = [\"{dns}\"]\n"))
        .replace("require_tls_to = [\"secure.gov.vn\"]\n", &format!("require_tls_to = [\"secure.gov.vn\"]\n{ca_line}"));
    let config = Arc::new(lienthong_config::parse(&text, "test.toml", state.path()).unwrap_or_else(|e| panic!("{e}")));
    let routes = routes.iter().map(|(domain, address)| ((*domain).to_owned(), vec![*address])).collect();
    let outside = Outside { lookup: Arc::new(StaticLookup { routes }), mta_sts_port: port };
    let service = MailService::start_with(config, certificates(), outside).await.unwrap();
    Relay { service, sink, ports, fetches, _state: state }
}

/// Sends one message over the relay's port 25 in clear text (127.0.0.1 is in `relay_from`).
async fn send_clear(port: u16, recipient: &str, headers: &str) {
    let script = format!(
        "EHLO x\r\nMAIL FROM:<vanthu@ninhthuan.gov.vn>\r\nRCPT TO:<{recipient}>\r\nDATA\r\n\
         From: <vanthu@ninhthuan.gov.vn>\r\n{headers}Subject: cong van\r\n\r\nNoi dung mat.\r\n.\r\nQUIT\r\n"
    );
    let transcript = common::converse(port, script.as_bytes(), 7).await;
    assert!(transcript.contains("queued as"), "{transcript}");
}

async fn last_error(service: &MailService) -> String {
    service.queue_list().await.first().and_then(|entry| entry.last_error.clone()).unwrap_or_default()
}

/// Polls the queue until its message's last error mentions `needle` (at most 15 s).
async fn deferred_with(service: &MailService, needle: &str) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while tokio::time::Instant::now() < deadline {
        if last_error(service).await.contains(needle) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn mta_sts_enforce_never_sends_in_clear_and_testing_delivers() {
    let ca = TestCa::new();
    let (clear, clear_address) = Capture::start(None).await;
    let relay = relay(
        &ca,
        &[("enforce.example", clear_address), ("testing.example", clear_address), ("lac.example", clear_address)],
        &[
            ("enforce.example", "enforce", "enforce.example"),
            ("testing.example", "testing", "*.other.example"),
            ("lac.example", "enforce", "mx.other.example"),
        ],
    )
    .await;

    // enforce: the only MX host offers no STARTTLS: deferred, no MAIL ever written to it.
    send_clear(relay.ports.mx, "a@enforce.example", "").await;
    assert!(wait_until(Duration::from_secs(15), || clear.connections.load(Ordering::SeqCst) >= 1).await);
    assert!(deferred_with(&relay.service, "STARTTLS").await, "{}", last_error(&relay.service).await);
    assert!(!clear.commands().iter().any(|line| line.starts_with("MAIL")), "{:?}", clear.commands());
    assert!(clear.transactions().is_empty());
    let queued = relay.service.queue_list().await;
    assert_eq!(queued.len(), 1, "deferred, not bounced: {queued:?}");
    relay.service.queue_remove(&queued[0].id).await;

    // An MX that the enforced policy does not list: deferred without connecting.
    let connections = clear.connections.load(Ordering::SeqCst);
    send_clear(relay.ports.mx, "b@lac.example", "").await;
    assert!(deferred_with(&relay.service, "4.7.5").await, "{}", last_error(&relay.service).await);
    assert_eq!(clear.connections.load(Ordering::SeqCst), connections);
    let queued = relay.service.queue_list().await;
    relay.service.queue_remove(&queued[0].id).await;

    // TLS-Required: No (RFC 8689 4.2.2) lifts the enforced policy for this one message.
    send_clear(relay.ports.mx, "c@lac.example", "TLS-Required: No\r\n").await;
    assert!(wait_until(Duration::from_secs(15), || clear.transactions().len() == 1).await, "{:?}", clear.commands());

    // testing: delivered as before, in clear, although the MX is not in the policy.
    send_clear(relay.ports.mx, "d@testing.example", "").await;
    assert!(wait_until(Duration::from_secs(15), || clear.transactions().len() == 2).await, "{:?}", clear.commands());
    assert_eq!(clear.transactions()[1].recipients, vec!["d@testing.example".to_owned()]);
    // Each policy was fetched once, then served from the cache (same TXT id).
    assert!(relay.fetches.load(Ordering::SeqCst) <= 3, "{}", relay.fetches.load(Ordering::SeqCst));
    assert!(relay.service.queue_list().await.is_empty());
    relay.service.shutdown().await;
}

/// RFC 8461 5.1: a policy once fetched holds until its max_age, across a restart (it is saved
/// in `state_dir`), even when the TXT id changes and the new policy cannot be fetched.
#[tokio::test]
async fn a_cached_enforce_policy_survives_a_restart_and_a_failed_refresh() {
    use std::os::unix::fs::PermissionsExt as _;
    let ca = TestCa::new();
    let (clear, clear_address) = Capture::start(None).await;
    let routes = [("nho.example", clear_address)];
    let policies = [("nho.example", "enforce", "nho.example")];
    let first = relay(&ca, &routes, &policies).await;
    send_clear(first.ports.mx, "a@nho.example", "").await;
    assert!(deferred_with(&first.service, "STARTTLS").await, "{}", last_error(&first.service).await);
    let queued = first.service.queue_list().await;
    first.service.queue_remove(&queued[0].id).await;
    first.service.shutdown().await;
    let saved = first._state.path().join("mail").join("mta-sts.json");
    let mode = std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(std::fs::read_to_string(&saved).unwrap().contains("nho.example"));

    let second = relay_in(first._state, &ca, &routes, &policies, "changed2", false).await;
    send_clear(second.ports.mx, "b@nho.example", "").await;
    assert!(deferred_with(&second.service, "STARTTLS").await, "{}", last_error(&second.service).await);
    assert!(second.fetches.load(Ordering::SeqCst) >= 1, "the new id was tried");
    assert!(clear.transactions().is_empty(), "never delivered in clear: {:?}", clear.commands());
    second.service.shutdown().await;
}

#[tokio::test]
async fn requiretls_is_offered_and_accepted_only_over_tls() {
    let ca = TestCa::new();
    let relay = relay(&ca, &[], &[]).await;
    let clear =
        common::converse(relay.ports.mx, b"EHLO x\r\nMAIL FROM:<vanthu@ninhthuan.gov.vn> REQUIRETLS\r\nQUIT\r\n", 4)
            .await;
    let offered = |transcript: &str| transcript.lines().any(|line| line.trim_end().get(4..) == Some("REQUIRETLS"));
    assert!(clear.contains("STARTTLS") && !offered(&clear), "{clear}");
    assert!(clear.contains("530 5.7.10"), "{clear}");
    let mut session = tls_client::ready_session(relay.ports.submissions).await;
    let ehlo = tls_client::command(&mut session, "EHLO x").await;
    assert!(offered(&ehlo), "{ehlo}");
    relay.service.shutdown().await;
}

/// Submits over implicit TLS with AUTH, `MAIL FROM:<...> REQUIRETLS`.
async fn send_requiretls(port: u16, recipient: &str) {
    let mut session = tls_client::ready_session(port).await;
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode("\0vanthu@ninhthuan.gov.vn\0mat-khau-dung");
    assert!(tls_client::command(&mut session, &format!("AUTH PLAIN {token}")).await.starts_with("235"));
    let mail = tls_client::command(&mut session, "MAIL FROM:<vanthu@ninhthuan.gov.vn> REQUIRETLS").await;
    assert!(mail.starts_with("250"), "{mail}");
    assert!(tls_client::command(&mut session, &format!("RCPT TO:<{recipient}>")).await.starts_with("250"));
    assert!(tls_client::command(&mut session, "DATA").await.starts_with("354"));
    let content = "From: <vanthu@ninhthuan.gov.vn>\r\nSubject: mat\r\n\r\nNoi dung tuyet mat.\r\n.";
    let reply = tls_client::command(&mut session, content).await;
    assert!(reply.starts_with("250"), "{reply}");
}

#[tokio::test]
async fn requiretls_goes_only_to_a_verified_next_hop_that_offers_it() {
    let ca = TestCa::new();
    let (plain_tls, plain_address) = Capture::start(Some(ca.server(&["khong.example"]))).await;
    let (able, able_address) = Capture::start(Some(ca.server(&["co.example"]))).await;
    able.offer_requiretls.store(true, Ordering::SeqCst);
    let relay = relay(
        &ca,
        &[("khong.example", plain_address), ("co.example", able_address)],
        &[("khong.example", "enforce", "khong.example"), ("co.example", "testing", "co.example")],
    )
    .await;

    // Verified TLS but no REQUIRETLS: a permanent failure, a 5.7.10 bounce without the body.
    send_requiretls(relay.ports.submissions, "a@khong.example").await;
    assert!(wait_until(Duration::from_secs(15), || relay.sink.count() == 1).await, "{:?}", plain_tls.commands());
    let bounce = String::from_utf8_lossy(&relay.sink.all()[0].content).into_owned();
    assert!(bounce.contains("Status: 5.7.10"), "{bounce}");
    assert!(bounce.contains("text/rfc822-headers") && !bounce.contains("tuyet mat"), "{bounce}");
    assert!(!plain_tls.commands().iter().any(|line| line.starts_with("MAIL")), "{:?}", plain_tls.commands());
    assert!(relay.service.queue_list().await.is_empty());

    // Verified TLS and REQUIRETLS offered: delivered, REQUIRETLS passed on.
    send_requiretls(relay.ports.submissions, "b@co.example").await;
    assert!(wait_until(Duration::from_secs(15), || able.transactions().len() == 1).await, "{:?}", able.commands());
    let mail = &able.transactions()[0].mail;
    assert!(mail.trim_end().ends_with("REQUIRETLS") || mail.contains(" REQUIRETLS "), "{mail}");
    assert!(able.protocol_errors.lock().unwrap().is_empty());
    relay.service.shutdown().await;
}
