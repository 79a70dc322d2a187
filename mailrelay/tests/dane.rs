//! DANE (RFC 7672) through the real relay: MX hosts whose TLSA records a scripted DNS server
//! (common/fake_dns.rs) serves with or without the AD bit, and capturing next hops with
//! generated certificates. The MX hosts are the loopback captures; the lookup below says they
//! came from DNS, which is what lets the relay ask that DNS server about DNSSEC.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aws_lc_rs::digest;
use common::capture::Capture;
use common::{Ports, Sink, certificates, config_text, wait_until};
use lienthong_mailrelay::resolver::LookupResult;
use lienthong_mailrelay::{MailExchangerLookup, MailService, Outside, StaticLookup};
use rcgen::PublicKeyData as _;

/// Fixed MX answers that claim to come from DNS (as `DnsLookup`'s do).
struct FromDns(StaticLookup);

impl MailExchangerLookup for FromDns {
    fn mail_exchangers<'a>(&'a self, domain: &'a str) -> LookupResult<'a> {
        self.0.mail_exchangers(domain)
    }

    fn answers_from_dns(&self) -> bool {
        true
    }
}

/// A next hop's TLS: a self-signed certificate for `host`, and the SHA-256 of its SPKI
/// (what a `3 1 1` TLSA record holds).
fn next_hop_tls(host: &str) -> (Arc<rustls::ServerConfig>, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let certificate = rcgen::CertificateParams::new(vec![host.to_owned()]).unwrap().self_signed(&key).unwrap();
    let spki_sha256 = digest::digest(&digest::SHA256, &key.subject_public_key_info()).as_ref().to_vec();
    let private = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certificate.der().clone()], private)
        .unwrap();
    (Arc::new(config), spki_sha256)
}

/// A next hop that presents `host`'s certificate (the public part, which anyone can copy)
/// but signs the handshake with another key, and the `3 1 1` data of that certificate.
fn impostor_tls(host: &str) -> (Arc<rustls::ServerConfig>, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let certificate = rcgen::CertificateParams::new(vec![host.to_owned()]).unwrap().self_signed(&key).unwrap();
    let spki_sha256 = digest::digest(&digest::SHA256, &key.subject_public_key_info()).as_ref().to_vec();
    let other = rcgen::KeyPair::generate().unwrap();
    let private = rustls::pki_types::PrivateKeyDer::try_from(other.serialize_der()).unwrap();
    let signing = rustls::crypto::ring::sign::any_supported_type(&private).unwrap();
    let presented = rustls::sign::CertifiedKey::new(vec![certificate.der().clone()], signing);
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(presented)));
    (Arc::new(config), spki_sha256)
}

/// A CA whose servers send their chain (leaf, CA), as DANE-TA requires (RFC 7672 3.1.2).
struct TestCa {
    der: rustls::pki_types::CertificateDer<'static>,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    /// The CA and the SHA-256 of its certificate (what a `2 0 1` TLSA record holds).
    fn new() -> (Self, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "CA DANE-TA thu nghiem");
        let certificate = params.self_signed(&key).unwrap();
        let sha256 = digest::digest(&digest::SHA256, certificate.der()).as_ref().to_vec();
        (Self { der: certificate.der().clone(), issuer: rcgen::Issuer::new(params, key) }, sha256)
    }

    fn server(&self, host: &str) -> Arc<rustls::ServerConfig> {
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec![host.to_owned()]).unwrap().signed_by(&key, &self.issuer).unwrap();
        let private = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone(), self.der.clone()], private)
            .unwrap();
        Arc::new(config)
    }
}

/// What the DNS server says about one domain (its own MX host).
#[derive(Clone)]
struct Zone {
    /// AD on the MX answer.
    mx_secure: bool,
    /// AD on the A answer of the MX host.
    address_secure: bool,
    /// `3 1 1` data, or `None` for SERVFAIL on the TLSA question.
    tlsa: Option<Vec<u8>>,
    /// Usage, selector and matching type of the TLSA record.
    tlsa_kind: (u8, u8, u8),
    /// AD on the TLSA answer.
    tlsa_secure: bool,
}

async fn dns(zones: HashMap<String, Zone>) -> SocketAddr {
    use hickory_resolver::proto::op::ResponseCode;
    use hickory_resolver::proto::rr::rdata::{A, MX};
    use hickory_resolver::proto::rr::{RData, Record, RecordType};
    common::fake_dns::serve(move |question, name, response| {
        let tlsa_owner = name.strip_prefix("_25._tcp.");
        let owner = question.name().clone();
        match (question.query_type(), tlsa_owner.and_then(|host| zones.get(host)), zones.get(name)) {
            (RecordType::TLSA, Some(zone), _) => match &zone.tlsa {
                Some(data) => {
                    let (usage, selector, matching) = zone.tlsa_kind;
                    response.add_answer(common::fake_dns::tlsa(&owner, usage, selector, matching, data.clone()));
                    response.metadata.authentic_data = zone.tlsa_secure;
                }
                None => response.metadata.response_code = ResponseCode::ServFail,
            },
            (RecordType::MX, _, Some(zone)) => {
                response.add_answer(Record::from_rdata(owner.clone(), 60, RData::MX(MX::new(10, owner))));
                response.metadata.authentic_data = zone.mx_secure;
            }
            (RecordType::A, _, Some(zone)) => {
                response.add_answer(Record::from_rdata(owner, 60, RData::A(A("127.0.0.1".parse().unwrap()))));
                response.metadata.authentic_data = zone.address_secure;
            }
            (_, _, Some(zone)) => response.metadata.authentic_data = zone.mx_secure,
            _ => response.metadata.response_code = ResponseCode::NXDomain,
        }
        true
    })
    .await
}

struct Relay {
    service: MailService,
    ports: Ports,
    state: tempfile::TempDir,
}

async fn relay(routes: &[(&str, SocketAddr)], zones: HashMap<String, Zone>) -> Relay {
    let state = tempfile::tempdir().unwrap();
    let dns = dns(zones).await;
    let (_sink, sink_address) = Sink::start().await;
    let ports = Ports::new();
    let text = config_text(state.path(), &ports, sink_address, "relay_from = [\"127.0.0.1\"]")
        .replace("[dns]\nenabled = false\n", &format!("[dns]\nenabled = false\nforwarders = [\"{dns}\"]\n"));
    let config = Arc::new(lienthong_config::parse(&text, "test.toml", state.path()).unwrap_or_else(|e| panic!("{e}")));
    let routes = routes.iter().map(|(domain, address)| ((*domain).to_owned(), vec![*address])).collect();
    let outside = Outside { lookup: Arc::new(FromDns(StaticLookup { routes })), mta_sts_port: 1 };
    let service = MailService::start_with(config, certificates(), outside).await.unwrap();
    Relay { service, ports, state }
}

async fn send(port: u16, recipient: &str) {
    let script = format!(
        "EHLO x\r\nMAIL FROM:<vanthu@ninhthuan.gov.vn>\r\nRCPT TO:<{recipient}>\r\nDATA\r\n\
         From: <vanthu@ninhthuan.gov.vn>\r\nSubject: cong van\r\n\r\nNoi dung mat.\r\n.\r\nQUIT\r\n"
    );
    let transcript = common::converse(port, script.as_bytes(), 7).await;
    assert!(transcript.contains("queued as"), "{transcript}");
}

async fn last_error(service: &MailService) -> String {
    service.queue_list().await.first().and_then(|entry| entry.last_error.clone()).unwrap_or_default()
}

/// Polls until the only queued message's last error contains `needle` (at most 15 s).
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

async fn clear_queue(service: &MailService) {
    for entry in service.queue_list().await {
        service.queue_remove(&entry.id).await;
    }
}

/// The audit attempt lines for `recipient`.
fn attempts(state: &std::path::Path, recipient: &str) -> Vec<serde_json::Value> {
    let directory = state.join("mail").join("audit");
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(directory).into_iter().flatten().flatten() {
        for line in std::fs::read_to_string(entry.path()).unwrap_or_default().lines() {
            let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            if value["event"] == "attempt" && value["recipient"] == recipient {
                lines.push(value);
            }
        }
    }
    lines
}

fn no_mail_command(capture: &Capture) -> bool {
    !capture.commands().iter().any(|line| line.to_ascii_uppercase().starts_with("MAIL"))
}

#[tokio::test]
async fn dane_authenticates_defers_and_ignores_insecure_answers() {
    let (good_tls, good_key) = next_hop_tls("khop.example");
    let (good, good_address) = Capture::start(Some(good_tls)).await;
    let (wrong_tls, _) = next_hop_tls("sai.example");
    let (wrong, wrong_address) = Capture::start(Some(wrong_tls)).await;
    let (clear, clear_address) = Capture::start(None).await;
    let (insecure, insecure_address) = Capture::start(None).await;
    let (failing, failing_address) = Capture::start(None).await;
    let other_key = next_hop_tls("khac.example").1;
    let (impostor_tls, copied_key) = impostor_tls("gia.example");
    let (impostor, impostor_address) = Capture::start(Some(impostor_tls)).await;
    let secure = |tlsa: Option<Vec<u8>>| Zone {
        mx_secure: true,
        address_secure: true,
        tlsa,
        tlsa_kind: (3, 1, 1),
        tlsa_secure: true,
    };
    let (ca, ca_sha256) = TestCa::new();
    let (anchored, anchored_address) = Capture::start(Some(ca.server("ta.example"))).await;
    let (misnamed, misnamed_address) = Capture::start(Some(ca.server("khac.example"))).await;
    let dane_ta = Zone { tlsa_kind: (2, 0, 1), ..secure(Some(ca_sha256)) };
    // PKIX-EE (1 1 1): secure, but unusable for SMTP (RFC 7672 3.1.3).
    let unusable = Zone { tlsa_kind: (1, 1, 1), ..secure(Some(vec![7; 32])) };
    let (unusable_clear, unusable_clear_address) = Capture::start(None).await;
    let (unusable_tls, _) = next_hop_tls("bat-ky.example");
    let (unusable_encrypted, unusable_encrypted_address) = Capture::start(Some(unusable_tls)).await;
    let zones = HashMap::from([
        ("khop.example".to_owned(), secure(Some(good_key))),
        ("sai.example".to_owned(), secure(Some(other_key.clone()))),
        ("ro.example".to_owned(), secure(Some(other_key.clone()))),
        // TLSA without AD; TLSA with AD under an MX answer, or an address answer, without
        // it: not DANE (RFC 7672 2.2.1, 2.2.2).
        ("khongad.example".to_owned(), Zone { tlsa_secure: false, ..secure(Some(other_key.clone())) }),
        ("mxkhongad.example".to_owned(), Zone { mx_secure: false, ..secure(Some(other_key.clone())) }),
        ("akhongad.example".to_owned(), Zone { address_secure: false, ..secure(Some(other_key)) }),
        ("hong.example".to_owned(), secure(None)),
        ("gia.example".to_owned(), secure(Some(copied_key))),
        ("ta.example".to_owned(), dane_ta.clone()),
        ("tasai.example".to_owned(), dane_ta),
        ("khongdung.example".to_owned(), unusable.clone()),
        ("macoa.example".to_owned(), unusable),
    ]);
    let relay = relay(
        &[
            ("khop.example", good_address),
            ("sai.example", wrong_address),
            ("ro.example", clear_address),
            ("khongad.example", insecure_address),
            ("mxkhongad.example", insecure_address),
            ("akhongad.example", insecure_address),
            ("hong.example", failing_address),
            ("gia.example", impostor_address),
            ("ta.example", anchored_address),
            ("tasai.example", misnamed_address),
            ("khongdung.example", unusable_clear_address),
            ("macoa.example", unusable_encrypted_address),
        ],
        zones,
    )
    .await;

    // (1) The TLSA record matches the next hop's key: delivered over TLS, audited as DANE.
    send(relay.ports.mx, "a@khop.example").await;
    assert!(wait_until(Duration::from_secs(15), || good.transactions().len() == 1).await, "{:?}", good.commands());
    assert!(good.commands().iter().any(|line| line == "STARTTLS\r\n"));
    let state = relay.state.path().to_owned();
    assert!(
        wait_until(Duration::from_secs(15), || attempts(&state, "a@khop.example")
            .iter()
            .any(|line| line["dane"] == true))
        .await,
        "{:?}",
        attempts(&state, "a@khop.example")
    );
    let delivered = attempts(&state, "a@khop.example");
    assert!(delivered[0]["remote"].as_str().unwrap().contains("DANE-EE verified"), "{delivered:?}");

    // (2) A certificate no TLSA record matches: deferred, nothing sent, not even MAIL.
    send(relay.ports.mx, "b@sai.example").await;
    assert!(
        deferred_with(&relay.service, "not authenticated by its TLSA records").await,
        "{}",
        last_error(&relay.service).await
    );
    assert!(
        last_error(&relay.service).await.contains("no TLSA record of the MX host matches"),
        "{}",
        last_error(&relay.service).await
    );
    assert!(wrong.commands().iter().any(|line| line == "STARTTLS\r\n"), "{:?}", wrong.commands());
    assert!(no_mail_command(&wrong) && wrong.transactions().is_empty(), "{:?}", wrong.commands());
    assert!(attempts(&state, "b@sai.example").iter().all(|line| line["dane"] == true && line["outcome"] == "deferred"));
    clear_queue(&relay.service).await;

    // (3) A DANE host that offers no STARTTLS: deferred, never sent in clear.
    send(relay.ports.mx, "c@ro.example").await;
    assert!(deferred_with(&relay.service, "STARTTLS").await, "{}", last_error(&relay.service).await);
    assert!(clear.connections.load(Ordering::SeqCst) >= 1);
    assert!(no_mail_command(&clear) && clear.transactions().is_empty(), "{:?}", clear.commands());
    clear_queue(&relay.service).await;

    // (4) TLSA answers without AD, or under MX answers without AD, are ignored: delivered
    // as before (in clear to a next hop without STARTTLS), although the records match nothing.
    send(relay.ports.mx, "d@khongad.example").await;
    send(relay.ports.mx, "e@mxkhongad.example").await;
    send(relay.ports.mx, "g@akhongad.example").await;
    assert!(
        wait_until(Duration::from_secs(15), || insecure.transactions().len() == 3).await,
        "{:?} {}",
        insecure.commands(),
        last_error(&relay.service).await
    );
    assert!(attempts(&state, "d@khongad.example").iter().all(|line| line.get("dane").is_none()));

    // (5) SERVFAIL on the TLSA question of a secure MX host: deferred without connecting.
    send(relay.ports.mx, "f@hong.example").await;
    assert!(deferred_with(&relay.service, "4.7.5 DANE").await, "{}", last_error(&relay.service).await);
    assert!(last_error(&relay.service).await.contains("Server Failure"), "{}", last_error(&relay.service).await);
    assert_eq!(failing.connections.load(Ordering::SeqCst), 0);
    clear_queue(&relay.service).await;

    // (6) A matching certificate presented without its private key (copied from the real
    // server): the handshake signature does not verify, deferred, nothing sent.
    send(relay.ports.mx, "h@gia.example").await;
    assert!(
        deferred_with(&relay.service, "not authenticated by its TLSA records").await,
        "{}",
        last_error(&relay.service).await
    );
    assert!(impostor.connections.load(Ordering::SeqCst) >= 1);
    assert!(no_mail_command(&impostor) && impostor.transactions().is_empty(), "{:?}", impostor.commands());
    clear_queue(&relay.service).await;

    // (7) DANE-TA 2 0 1: a chain to the named CA, sent by the server, for the MX host name.
    send(relay.ports.mx, "i@ta.example").await;
    assert!(
        wait_until(Duration::from_secs(15), || anchored.transactions().len() == 1).await,
        "{:?} {}",
        anchored.commands(),
        last_error(&relay.service).await
    );
    assert!(
        wait_until(Duration::from_secs(15), || attempts(&state, "i@ta.example")
            .iter()
            .any(|line| line["dane"] == true))
        .await
    );
    assert!(attempts(&state, "i@ta.example")[0]["remote"].as_str().unwrap().contains("DANE-TA verified"));
    // The same CA's certificate for another name: deferred (RFC 7672 3.2.2).
    send(relay.ports.mx, "j@tasai.example").await;
    assert!(
        deferred_with(&relay.service, "not authenticated by its TLSA records").await,
        "{}",
        last_error(&relay.service).await
    );
    assert!(no_mail_command(&misnamed) && misnamed.transactions().is_empty(), "{:?}", misnamed.commands());
    clear_queue(&relay.service).await;

    // (8) Secure TLSA records, none usable: TLS is still required (RFC 7672 2.2), without
    // authentication. A next hop without STARTTLS is deferred, never sent in clear...
    send(relay.ports.mx, "k@khongdung.example").await;
    assert!(deferred_with(&relay.service, "STARTTLS").await, "{}", last_error(&relay.service).await);
    assert!(unusable_clear.connections.load(Ordering::SeqCst) >= 1);
    assert!(
        no_mail_command(&unusable_clear) && unusable_clear.transactions().is_empty(),
        "{:?}",
        unusable_clear.commands()
    );
    clear_queue(&relay.service).await;
    // ...and one with STARTTLS gets the message, whatever its certificate.
    send(relay.ports.mx, "l@macoa.example").await;
    assert!(
        wait_until(Duration::from_secs(15), || unusable_encrypted.transactions().len() == 1).await,
        "{:?} {}",
        unusable_encrypted.commands(),
        last_error(&relay.service).await
    );
    assert!(
        wait_until(Duration::from_secs(15), || !attempts(&state, "l@macoa.example").is_empty()).await,
        "no audit line"
    );
    let line = &attempts(&state, "l@macoa.example")[0];
    assert!(line["remote"].as_str().unwrap().contains("not authenticated (unusable TLSA)"), "{line:?}");
    relay.service.shutdown().await;
}
