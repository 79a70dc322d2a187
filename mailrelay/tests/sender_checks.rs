//! Issue 12's inbound checks through the real port-25 listener: SPF, DKIM, ARC and DMARC of
//! mail from outside, looked up in a DNS server of this test (the relay's `dns.forwarders`),
//! with an `Authentication-Results:` header on what is delivered and the results in the
//! audit line.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Ports, Sink, certificates, config_text, wait_until};
use lienthong_mailrelay::MailService;
use mail_auth::common::crypto::Ed25519Key;
use mail_auth::common::headers::HeaderWriter as _;
use mail_auth::dkim::DkimSigner;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const HOST: &str = "mail.ninhthuan.gov.vn";

/// A DNS server on loopback answering TXT questions from `records`; names in `silent` get no
/// answer at all (a timeout), names in `failing` SERVFAIL, anything else NXDOMAIN.
async fn dns(records: HashMap<String, String>, silent: HashSet<String>, failing: HashSet<String>) -> SocketAddr {
    use hickory_resolver::proto::op::ResponseCode;
    use hickory_resolver::proto::rr::rdata::TXT;
    use hickory_resolver::proto::rr::{RData, Record, RecordType};
    let under = |names: &HashSet<String>, name: &str| {
        names.iter().any(|listed| name == *listed || name.ends_with(&format!(".{listed}")))
    };
    common::fake_dns::serve(move |question, name, response| {
        if under(&silent, name) {
            return false;
        }
        if under(&failing, name) {
            response.metadata.response_code = ResponseCode::ServFail;
            return true;
        }
        match (question.query_type(), records.get(name)) {
            (RecordType::TXT, Some(text)) => {
                let chunks = text.as_bytes().chunks(255).map(|chunk| String::from_utf8_lossy(chunk).into_owned());
                let rdata = RData::TXT(TXT::new(chunks.collect()));
                response.add_answer(Record::from_rdata(question.name().clone(), 60, rdata));
            }
            (_, Some(_)) => {}
            (_, None) if records.keys().any(|known| known.ends_with(&format!(".{name}"))) => {}
            (_, None) => response.metadata.response_code = ResponseCode::NXDomain,
        }
        true
    })
    .await
}

/// A conversation that may take a while (a check waiting for DNS timeouts).
async fn converse(port: u16, script: &str, replies: usize, limit: Duration) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(script.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let text = String::from_utf8_lossy(&received).into_owned();
        if text.lines().filter(|line| line.as_bytes().get(3) == Some(&b' ')).count() >= replies {
            return text;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return text,
            Ok(Ok(count)) => received.extend_from_slice(&buffer[..count]),
        }
    }
}

/// The final reply to `DATA`'s end of one message from `sender` with `content`.
async fn send(port: u16, sender: &str, content: &str) -> String {
    let script = format!(
        "EHLO mx1.doitac.example\r\nMAIL FROM:<{sender}>\r\nRCPT TO:<vanthu@ninhthuan.gov.vn>\r\nDATA\r\n{content}.\r\nQUIT\r\n"
    );
    let transcript = converse(port, &script, 7, Duration::from_secs(60)).await;
    let finals: Vec<&str> = transcript.lines().filter(|line| line.as_bytes().get(3) == Some(&b' ')).collect();
    // The reply to the data, or the first refusal before it (of MAIL or RCPT).
    let refusal = finals.iter().skip(1).take(4).find(|line| !line.starts_with("250") && !line.starts_with("354"));
    refusal
        .or(finals.get(5))
        .map(|line| line.to_string())
        .unwrap_or_else(|| format!("no reply to the data: {transcript}"))
}

fn message(from: &str, subject: &str) -> String {
    format!(
        "From: <{from}>\r\nTo: <vanthu@ninhthuan.gov.vn>\r\nSubject: {subject}\r\nMessage-ID: <{subject}@doitac.example>\r\nDate: Tue, 1 Dec 2026 08:00:00 +0700\r\n\r\nKinh gui van thu.\r\n"
    )
}

struct Setup {
    service: MailService,
    sink: Arc<Sink>,
    port: u16,
    state: tempfile::TempDir,
    /// The PKCS#8 form of the key published for `s1._domainkey.doitac.example`.
    doitac_key: Vec<u8>,
}

async fn setup(enforcement: &str) -> Setup {
    let der = Ed25519Key::generate_pkcs8().unwrap();
    let doitac_key = Ed25519Key::from_pkcs8_der(&der).unwrap();
    let public = base64(doitac_key.public_key().as_ref());
    let records: HashMap<String, String> = [
        // A partner that does everything right: SPF for loopback, a DKIM key, p=reject.
        ("doitac.example", "v=spf1 ip4:127.0.0.1 -all".to_owned()),
        ("s1._domainkey.doitac.example", format!("v=DKIM1; k=ed25519; p={public}")),
        ("_dmarc.doitac.example", "v=DMARC1; p=reject".to_owned()),
        // A bank whose name is forged: SPF elsewhere, p=reject.
        ("nganhang.example", "v=spf1 ip4:192.0.2.10 -all".to_owned()),
        ("_dmarc.nganhang.example", "v=DMARC1; p=reject".to_owned()),
        // p=quarantine.
        ("canhbao.example", "v=spf1 ip4:192.0.2.10 -all".to_owned()),
        ("_dmarc.canhbao.example", "v=DMARC1; p=quarantine".to_owned()),
        // SPF only, -all, no DMARC.
        ("chispf.example", "v=spf1 ip4:192.0.2.10 -all".to_owned()),
        // SPF pass, no DMARC.
        ("mo.example", "v=spf1 ip4:127.0.0.1 ~all".to_owned()),
        // The province's own domain, as its DNS publishes it.
        ("ninhthuan.gov.vn", "v=spf1 mx -all".to_owned()),
        ("_dmarc.ninhthuan.gov.vn", "v=DMARC1; p=none".to_owned()),
    ]
    .into_iter()
    .map(|(name, text)| (name.to_owned(), text))
    .collect();
    let silent = HashSet::from(["chậm.example".to_owned(), "cham.example".to_owned()]);
    let failing = HashSet::from(["loi.example".to_owned()]);
    let dns = dns(records, silent, failing).await;
    let state = tempfile::tempdir().unwrap();
    let (sink, sink_address) = Sink::start().await;
    let ports = Ports::new();
    let text = config_text(state.path(), &ports, sink_address, &format!("dmarc_enforcement = \"{enforcement}\""))
        .replace("check_senders = false\n", "")
        .replace("[dns]\nenabled = false\n", &format!("[dns]\nenabled = false\nforwarders = [\"{dns}\"]\n"));
    let config = Arc::new(lienthong_config::parse(&text, "test.toml", state.path()).unwrap_or_else(|e| panic!("{e}")));
    let service = MailService::start(config, certificates()).await.unwrap();
    Setup { service, sink, port: ports.mx, state, doitac_key: der }
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let value =
            chunk.iter().enumerate().fold(0u32, |value, (index, byte)| value | u32::from(*byte) << (16 - 8 * index));
        for index in 0..4 {
            if index <= chunk.len() {
                out.push(ALPHABET[(value >> (18 - 6 * index) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The delivered copy of the message with this subject.
async fn delivered(sink: &Sink, subject: &str) -> String {
    let needle = format!("Subject: {subject}\r\n");
    let found = wait_until(Duration::from_secs(15), || {
        sink.all().iter().any(|message| String::from_utf8_lossy(&message.content).contains(&needle))
    })
    .await;
    assert!(found, "{subject} was not delivered");
    let all = sink.all();
    let message = all.iter().find(|message| String::from_utf8_lossy(&message.content).contains(&needle)).unwrap();
    String::from_utf8_lossy(&message.content).into_owned()
}

fn results_of(content: &str) -> Vec<&str> {
    let headers = content.split("\r\n\r\n").next().unwrap();
    let mut fields: Vec<&str> = Vec::new();
    let mut start = None;
    for line_start in std::iter::once(0).chain(headers.match_indices("\r\n").map(|(index, _)| index + 2)) {
        let rest = &headers[line_start..];
        if rest.starts_with(' ') || rest.starts_with('\t') {
            continue;
        }
        if let Some(begin) = start.take() {
            fields.push(&headers[begin..line_start]);
        }
        start = Some(line_start);
    }
    if let Some(begin) = start {
        fields.push(&headers[begin..]);
    }
    fields.into_iter().filter(|field| field.to_ascii_lowercase().starts_with("authentication-results:")).collect()
}

#[tokio::test]
async fn mail_from_outside_is_checked_and_the_published_policy_followed() {
    let setup = setup("follow").await;
    let port = setup.port;

    // 1. A partner's signed message, with a forged "pass" claiming this relay: delivered with
    //    one Authentication-Results of ours (dkim, spf and dmarc pass), the forgery gone.
    let content = message("congvan@doitac.example", "hop-le");
    let content = format!(
        "Authentication-Results: {HOST}; dmarc=pass header.from=nganhang.example\r\n{}",
        sign_with(&setup, &content)
    );
    let reply = send(port, "congvan@doitac.example", &content).await;
    assert!(reply.starts_with("250 "), "{reply}");
    let copy = delivered(&setup.sink, "hop-le").await;
    let results = results_of(&copy);
    assert_eq!(results.len(), 1, "{copy}");
    let ours = results[0];
    assert!(ours.starts_with(&format!("Authentication-Results: {HOST};")), "{ours}");
    for expected in
        ["dkim=pass", "header.d=doitac.example", "spf=pass", "dmarc=pass", "header.from=doitac.example", "arc=none"]
    {
        assert!(ours.contains(expected), "{expected} missing: {ours}");
    }
    assert!(!copy.contains("nganhang.example"), "the forged result survived: {copy}");
    assert!(!copy.contains("X-Spam-Flag"), "{copy}");

    // 2. A forged bank (p=reject), unsigned, from the wrong address: refused, not delivered.
    let reply = send(port, "thongbao@nganhang.example", &message("thongbao@nganhang.example", "gia-mao")).await;
    assert!(reply.starts_with("550 5.7.1 "), "{reply}");
    assert!(reply.contains("nganhang.example"), "{reply}");

    // 3. The province's own domain from outside: refused whatever its published p=none says.
    let reply = send(port, "giamdoc@ninhthuan.gov.vn", &message("giamdoc@ninhthuan.gov.vn", "gia-mao-tinh")).await;
    assert!(reply.starts_with("5"), "{reply}");
    // ...also behind an aligned-looking envelope from a domain that passes SPF.
    let reply = send(port, "x@mo.example", &message("GiamDoc@NinhThuan.gov.vn", "gia-mao-tinh-2")).await;
    assert!(reply.starts_with("550 5.7.1 "), "{reply}");

    // 4. p=quarantine: delivered, marked for the mailbox server.
    let reply = send(port, "tin@canhbao.example", &message("tin@canhbao.example", "cach-ly")).await;
    assert!(reply.starts_with("250 "), "{reply}");
    let copy = delivered(&setup.sink, "cach-ly").await;
    assert!(copy.contains("X-Spam-Flag: YES\r\n"), "{copy}");
    assert!(results_of(&copy)[0].contains("dmarc=fail"), "{copy}");
    assert!(results_of(&copy)[0].contains("policy.dmarc=quarantine"), "{copy}");

    // 5. SPF -all fails and there is no DMARC record: refused as SPF failed.
    let reply = send(port, "a@chispf.example", &message("a@chispf.example", "spf-sai")).await;
    assert!(reply.starts_with("550 5.7.23 "), "{reply}");

    // 6. SPF pass, no DMARC: delivered with spf=pass and dmarc=none.
    let reply = send(port, "a@mo.example", &message("a@mo.example", "khong-dmarc")).await;
    assert!(reply.starts_with("250 "), "{reply}");
    let copy = delivered(&setup.sink, "khong-dmarc").await;
    let ours = results_of(&copy)[0];
    assert!(ours.contains("spf=pass") && ours.contains("dmarc=none") && ours.contains("dkim=none"), "{ours}");

    // 7. The sender domain's DNS fails (SERVFAIL) or does not answer at all: 451, never a 250.
    let reply = send(port, "a@loi.example", &message("a@loi.example", "dns-loi")).await;
    assert!(reply.starts_with("451 4.4.3 "), "{reply}");
    let started = Instant::now();
    let reply = send(port, "a@cham.example", &message("a@cham.example", "dns-cham")).await;
    assert!(reply.starts_with("451 4.4.3 "), "{reply} after {:?}", started.elapsed());

    // The audit lines carry the results of what was accepted.
    let audit = audit_text(setup.state.path());
    assert!(audit.contains(r#""dmarc":"pass""#) && audit.contains(r#""from_domain":"doitac.example""#), "{audit}");
    assert!(audit.contains(r#""verdict":"quarantined""#), "{audit}");
    assert_eq!(setup.sink.count(), 3, "only the three accepted messages arrive");
    setup.service.shutdown().await;
}

#[tokio::test]
async fn dmarc_enforcement_report_records_but_refuses_only_local_spoofs() {
    let setup = setup("report").await;
    let reply = send(setup.port, "thongbao@nganhang.example", &message("thongbao@nganhang.example", "bao-cao")).await;
    assert!(reply.starts_with("250 "), "{reply}");
    let copy = delivered(&setup.sink, "bao-cao").await;
    let ours = results_of(&copy)[0];
    assert!(ours.contains("dmarc=fail") && ours.contains("policy.dmarc=reject"), "{ours}");
    assert!(!copy.contains("X-Spam-Flag"), "{copy}");
    let reply = send(setup.port, "x@mo.example", &message("vanthu@ninhthuan.gov.vn", "tinh-gia")).await;
    assert!(reply.starts_with("550 5.7.1 "), "{reply}");
    setup.service.shutdown().await;
}

#[tokio::test]
async fn dmarc_enforcement_quarantine_marks_what_follow_would_refuse() {
    let setup = setup("quarantine").await;
    let reply = send(setup.port, "thongbao@nganhang.example", &message("thongbao@nganhang.example", "danh-dau")).await;
    assert!(reply.starts_with("250 "), "{reply}");
    let copy = delivered(&setup.sink, "danh-dau").await;
    assert!(copy.contains("X-Spam-Flag: YES\r\n"), "{copy}");
    setup.service.shutdown().await;
}

fn sign_with(setup: &Setup, content: &str) -> String {
    let signature = DkimSigner::from_key(Ed25519Key::from_pkcs8_der(&setup.doitac_key).unwrap())
        .domain("doitac.example")
        .selector("s1")
        .headers(["From", "To", "Subject", "Message-ID", "Date"])
        .sign(content.as_bytes())
        .unwrap();
    format!("{}{content}", signature.to_header())
}

fn audit_text(state: &std::path::Path) -> String {
    let dir = state.join("mail").join("audit");
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        text.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    text
}
