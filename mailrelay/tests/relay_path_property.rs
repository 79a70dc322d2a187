//! Property test over the whole relay path (issue 8): generated sessions with arbitrary
//! commands and ESMTP parameters, hostile and valid, go into the real MX listener; the strict
//! capturing next hop records every byte the relay writes. Whatever came in:
//! - every line written to the next hop is one of the commands the relay means to write, with
//!   parameters in their RFC syntax (no client CR/LF, no extra command), and each got its one
//!   reply (the sink counts no protocol error and every message arrives exactly once);
//! - each delivered message is the client's content behind exactly one `Received:` field of
//!   printable ASCII lines, and its ENVID/ORCPT are the client's decoded values re-encoded;
//! - each DSN is CRLF-clean and reports the decoded ENVID and ORCPT.
//!
//! Cases: `LIENTHONG_PROPERTY_CASES` sessions (default 100; CI runs the default), seed
//! `LIENTHONG_PROPERTY_SEED` (default fixed, printed on failure).

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::capture::{Capture, Transaction, is_xtext, xtext_decode};
use common::{Ports, certificates, wait_until};
use lienthong_mailrelay::{MailService, StaticLookup};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// What the model expects of one accepted message.
#[derive(Debug, Clone)]
struct Expected {
    envelope_id: Option<String>,
    /// Accepted recipient -> (decoded ORCPT, wants a failure notice).
    recipients: Vec<(String, Option<String>, bool)>,
    sender_null: bool,
    content: Vec<u8>,
    helo: String,
}

const REFUSED: &str = "khong-co@ninhthuan.gov.vn";

fn printable(random: &mut StdRng, max: usize) -> String {
    let length = random.random_range(1..=max);
    (0..length).map(|_| char::from(random.random_range(0x20u8..=0x7E))).collect()
}

fn xtext(text: &str, random: &mut StdRng) -> String {
    let lower = random.random_bool(0.3);
    text.bytes()
        .map(|byte| match byte {
            b'!'..=b'~' if byte != b'+' && byte != b'=' => char::from(byte).to_string(),
            _ if lower => format!("+{byte:02x}"),
            _ => format!("+{byte:02X}"),
        })
        .collect()
}

/// A hostile value: control characters (encoded or raw), bad hex, longer than `limit`, or a
/// truncated `+X`.
fn hostile_xtext(random: &mut StdRng, limit: usize) -> Vec<u8> {
    let injected = [
        "+0D+0ARCPT+20TO:<victim@ninhthuan.gov.vn>",
        "+0D+0ARSET+0D+0AMAIL+20FROM:<e@example.org>",
        "x+0A",
        "+00",
        "+7F",
        "+C3+A1",
    ];
    match random.random_range(0..5) {
        0 => injected[random.random_range(0..injected.len())].as_bytes().to_vec(),
        1 => b"a\rRSET".to_vec(),
        2 => b"bad+G1".to_vec(),
        3 => vec![b'a'; limit + 1 + random.random_range(0..50)],
        _ => b"+4".to_vec(),
    }
}

struct Client {
    reader: BufReader<tokio::net::TcpStream>,
}

impl Client {
    async fn connect(port: u16) -> Self {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut client = Self { reader: BufReader::new(stream) };
        assert_eq!(client.reply().await, 220);
        client
    }

    async fn reply(&mut self) -> u16 {
        let mut line = String::new();
        loop {
            line.clear();
            let read = tokio::time::timeout(Duration::from_secs(20), self.reader.read_line(&mut line)).await;
            if !matches!(read, Ok(Ok(count)) if count >= 4) {
                return 0;
            }
            if line.as_bytes()[3] == b' ' {
                return line[..3].parse().unwrap_or(0);
            }
        }
    }

    async fn send(&mut self, line: &[u8]) -> u16 {
        self.reader.get_mut().write_all(line).await.unwrap();
        self.reply().await
    }
}

/// One generated session; returns the messages the relay accepted.
async fn session(port: u16, case: usize, random: &mut StdRng) -> Vec<Expected> {
    let mut client = Client::connect(port).await;
    let mut accepted = Vec::new();
    if random.random_bool(0.3) {
        assert_eq!(client.send(b"EHLO bad\r\x01name\r\n").await, 500);
    }
    let helo: String = (0..random.random_range(1..20))
        .map(|_| ['a', 'b', '.', '-', '(', ')', ';', 'ễ', '[', '1'][random.random_range(0..10)])
        .collect();
    assert_eq!(client.send(format!("EHLO {helo}\r\n").as_bytes()).await, 250);
    let mut errors = 0;
    for transaction in 0..random.random_range(1..4) {
        if errors < 6 && random.random_bool(0.2) {
            let mut junk = b"X".to_vec();
            junk.extend(
                (0..random.random_range(0..30)).map(|_| random.random_range(0u8..=255)).filter(|&b| b != b'\n'),
            );
            junk.extend_from_slice(b"\r\n");
            assert!(client.send(&junk).await >= 500);
            errors += 1;
        }
        let sender_null = random.random_bool(0.15);
        let sender = if sender_null { String::new() } else { format!("gui{}@example.org", random.random_range(0..5)) };
        let mut mail = format!("MAIL FROM:<{sender}>").into_bytes();
        let mut envelope_id = None;
        let mut hostile = false;
        if random.random_bool(0.3) {
            mail.extend_from_slice(format!(" SIZE={}", random.random_range(0..100_000)).as_bytes());
        }
        if random.random_bool(0.3) {
            mail.extend_from_slice(if random.random_bool(0.5) { b" BODY=8BITMIME" } else { b" body=7bit" });
        }
        if random.random_bool(0.3) {
            mail.extend_from_slice(if random.random_bool(0.5) { b" RET=FULL" } else { b" RET=HDRS" });
        }
        if random.random_bool(0.6) {
            mail.extend_from_slice(b" ENVID=");
            if errors < 6 && random.random_bool(0.4) {
                mail.extend_from_slice(&hostile_xtext(random, 100));
                hostile = true;
            } else {
                let id = printable(random, 100);
                mail.extend_from_slice(xtext(&id, random).as_bytes());
                envelope_id = Some(id);
            }
        }
        mail.extend_from_slice(b"\r\n");
        let code = client.send(&mail).await;
        if hostile {
            assert!(code >= 500, "case {case}: hostile MAIL accepted: {:?}", String::from_utf8_lossy(&mail));
            errors += 1;
            continue;
        }
        assert_eq!(code, 250, "case {case}: {:?}", String::from_utf8_lossy(&mail));
        let mut recipients = Vec::new();
        for index in 0..random.random_range(1..4) {
            let address = if random.random_bool(0.3) {
                REFUSED.to_owned()
            } else {
                format!("nhan{index}-{transaction}@ninhthuan.gov.vn")
            };
            let mut rcpt = format!("RCPT TO:<{address}>").into_bytes();
            let mut notify_failure = true;
            if random.random_bool(0.3) {
                let (text, failure) =
                    [("NEVER", false), ("FAILURE", true), ("SUCCESS,DELAY", false), ("delay,failure", true)]
                        [random.random_range(0..4)];
                rcpt.extend_from_slice(format!(" NOTIFY={text}").as_bytes());
                notify_failure = failure;
            }
            let mut original = None;
            let mut hostile = false;
            if random.random_bool(0.6) {
                rcpt.extend_from_slice(b" ORCPT=");
                if errors < 6 && random.random_bool(0.4) {
                    if random.random_bool(0.5) {
                        rcpt.extend_from_slice(b"rfc822;");
                    }
                    rcpt.extend_from_slice(&hostile_xtext(random, 500));
                    hostile = true;
                } else {
                    let value = printable(random, 60);
                    let kind = if random.random_bool(0.5) { "rfc822" } else { "RFC822" };
                    rcpt.extend_from_slice(format!("{kind};{}", xtext(&value, random)).as_bytes());
                    original = Some(value);
                }
            }
            rcpt.extend_from_slice(b"\r\n");
            let code = client.send(&rcpt).await;
            if hostile {
                assert!(code >= 500, "case {case}: hostile RCPT accepted: {:?}", String::from_utf8_lossy(&rcpt));
                errors += 1;
            } else if code == 250 && !recipients.iter().any(|(known, _, _)| *known == address) {
                recipients.push((address, original, notify_failure));
            }
        }
        if recipients.is_empty() {
            assert!(client.send(b"RSET\r\n").await == 250);
            continue;
        }
        let author = if sender_null { "mailer-daemon@example.org" } else { &sender };
        let mut content =
            format!("From: <{author}>\r\nX-Case: c{case}-t{transaction}\r\nSubject: thu\r\n\r\n").into_bytes();
        for _ in 0..random.random_range(0..4) {
            let mut body = printable(random, 40);
            if random.random_bool(0.3) {
                body.insert(0, '.');
            }
            content.extend_from_slice(format!("{body}\r\nNội dung\r\n").as_bytes());
        }
        assert_eq!(client.send(b"DATA\r\n").await, 354);
        let mut stuffed = Vec::new();
        for line in content.split_inclusive(|&byte| byte == b'\n') {
            if line.starts_with(b".") {
                stuffed.push(b'.');
            }
            stuffed.extend_from_slice(line);
        }
        stuffed.extend_from_slice(b".\r\n");
        assert_eq!(client.send(&stuffed).await, 250, "case {case}: {:?}", String::from_utf8_lossy(&content));
        accepted.push(Expected { envelope_id, recipients, sender_null, content, helo: helo.clone() });
    }
    client.send(b"QUIT\r\n").await;
    accepted
}

/// The command lines the relay means to write, and nothing else.
fn is_relay_command(line: &str) -> bool {
    let Some(line) = line.strip_suffix("\r\n") else { return false };
    if ["EHLO mail.ninhthuan.gov.vn", "DATA", "RSET", "QUIT"].contains(&line) {
        return true;
    }
    let parameters = match (line.strip_prefix("MAIL FROM:<"), line.strip_prefix("RCPT TO:<")) {
        (Some(rest), _) | (_, Some(rest)) => match rest.split_once('>') {
            Some((path, parameters)) if !path.contains(['<', ' ']) => parameters,
            _ => return false,
        },
        _ => return false,
    };
    let spaced = parameters.is_empty() || parameters.starts_with(' ');
    spaced
        && parameters.split(' ').skip(1).all(|parameter| match parameter.split_once('=') {
            Some(("SIZE", value)) => value.bytes().all(|byte| byte.is_ascii_digit()),
            Some(("RET", value)) => value == "FULL" || value == "HDRS",
            Some(("BODY", value)) => value == "8BITMIME",
            Some(("ENVID", value)) => is_xtext(value) && !value.is_empty(),
            Some(("NOTIFY", value)) => {
                value.split(',').all(|item| ["NEVER", "SUCCESS", "FAILURE", "DELAY"].contains(&item))
            }
            Some(("ORCPT", value)) => {
                value.strip_prefix("rfc822;").is_some_and(|address| is_xtext(address) && !address.is_empty())
            }
            None => parameter == "SMTPUTF8",
            _ => false,
        })
}

fn parameter<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.trim_end().split(' ').find_map(|part| part.strip_prefix(name)?.strip_prefix('='))
}

fn check_delivered(transaction: &Transaction, expected: &Expected) {
    // Exactly one Received: field (MX mail gets no Message-ID/Date), then the client's bytes.
    let content = &transaction.content;
    assert!(content.ends_with(&expected.content), "content changed");
    let added = String::from_utf8(content[..content.len() - expected.content.len()].to_vec()).unwrap();
    let lines: Vec<&str> = added.split_inclusive("\r\n").collect();
    assert!(
        lines[0].starts_with("Received: from ") && lines[1..].iter().all(|line| line.starts_with('\t')),
        "{added:?}"
    );
    assert!(added.bytes().all(|byte| (0x20..=0x7E).contains(&byte) || b"\r\n\t".contains(&byte)), "{added:?}");
    assert_eq!(added.matches("\r\n").count(), lines.len(), "{added:?}");
    let shown: String =
        expected.helo.chars().map(|c| if c.is_ascii_graphic() && c != '(' && c != ')' { c } else { '?' }).collect();
    assert!(lines[0].starts_with(&format!("Received: from {shown} ([127.0.0.1])")), "{added:?}");
    assert_eq!(transaction.rcpts.len(), expected.recipients.len(), "{:?}", transaction.rcpts);
    assert_eq!(parameter(&transaction.mail, "ENVID").map(xtext_decode), expected.envelope_id, "{}", transaction.mail);
    for rcpt in &transaction.rcpts {
        let address = rcpt.split_once('<').and_then(|(_, rest)| rest.split_once('>')).unwrap().0;
        let (_, original, _) =
            expected.recipients.iter().find(|(known, _, _)| known == address).expect("an accepted recipient");
        let relayed = parameter(rcpt, "ORCPT").map(|value| xtext_decode(value.strip_prefix("rfc822;").unwrap()));
        assert_eq!(&relayed, original, "{rcpt}");
    }
}

fn check_bounce(transaction: &Transaction, expected: &Expected) {
    let report = &transaction.content;
    for (index, &byte) in report.iter().enumerate() {
        let paired = match byte {
            b'\r' => report.get(index + 1) == Some(&b'\n'),
            b'\n' => index > 0 && report[index - 1] == b'\r',
            _ => true,
        };
        assert!(paired, "bare CR or LF in a DSN at {index}");
    }
    let text = String::from_utf8_lossy(report);
    let status =
        text.split("Content-Type: message/delivery-status\r\n\r\n").nth(1).unwrap().split("\r\n--").next().unwrap();
    for line in status.lines() {
        assert!(line.chars().all(|c| !c.is_control()), "{line:?}");
    }
    match &expected.envelope_id {
        Some(id) => assert!(status.contains(&format!("\r\nOriginal-Envelope-Id: {id}\r\n")), "{status}"),
        None => assert!(!status.contains("Original-Envelope-Id"), "{status}"),
    }
    let originals: Vec<&str> =
        status.lines().filter_map(|line| line.strip_prefix("Original-Recipient: rfc822; ")).collect();
    let expected_originals: Vec<&str> = expected
        .recipients
        .iter()
        .filter(|(address, _, wants)| address == REFUSED && *wants)
        .filter_map(|(_, original, _)| original.as_deref())
        .collect();
    assert_eq!(originals, expected_originals, "{status}");
}

#[tokio::test]
async fn arbitrary_sessions_write_only_intended_commands_headers_and_dsns() {
    let cases: usize = std::env::var("LIENTHONG_PROPERTY_CASES").ok().and_then(|text| text.parse().ok()).unwrap_or(100);
    let seed: u64 = std::env::var("LIENTHONG_PROPERTY_SEED").ok().and_then(|text| text.parse().ok()).unwrap_or(0x6E74);
    let state = tempfile::tempdir().unwrap();
    let (capture, address) = Capture::start(None).await;
    capture.refuse.lock().unwrap().insert(REFUSED.into());
    let ports = Ports::new();
    // The recipients are listed (no verification probe), so the mailbox server refuses
    // REFUSED only at delivery and the relay's DSNs are exercised too.
    let listed: Vec<String> =
        (0..4).flat_map(|index| (0..4).map(move |transaction| format!("nhan{index}-{transaction}"))).collect();
    let mut listed: Vec<&str> = listed.iter().map(String::as_str).collect();
    listed.push("khong-co");
    let config = common::config_listing(state.path(), &ports, address, "", &listed);
    let lookup = StaticLookup { routes: HashMap::from([("example.org".to_owned(), vec![address])]) };
    let service = MailService::start_with_lookup(config, certificates(), Arc::new(lookup)).await.unwrap();
    let mut random = StdRng::seed_from_u64(seed);
    // Keyed by the `X-Case:` marker line of each accepted message.
    let mut expected: HashMap<String, Expected> = HashMap::new();
    for case in 0..cases {
        for message in session(ports.mx, case, &mut random).await {
            let marker = String::from_utf8_lossy(&message.content).lines().nth(1).unwrap().to_owned();
            expected.insert(marker, message);
        }
    }
    let deliveries =
        expected.values().filter(|message| message.recipients.iter().any(|(a, _, _)| a != REFUSED)).count();
    let bounces = expected
        .values()
        .filter(|message| !message.sender_null && message.recipients.iter().any(|(a, _, wants)| a == REFUSED && *wants))
        .count();
    let settled = wait_until(Duration::from_secs(60), || capture.transactions().len() >= deliveries + bounces).await;
    // Let anything extra arrive before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let transactions = capture.transactions();
    if transactions.len() != deliveries + bounces {
        for entry in service.queue_list().await {
            eprintln!("still queued: {entry:?}");
        }
        let seen: Vec<String> = transactions
            .iter()
            .map(|t| {
                format!(
                    "{} {}",
                    t.mail.trim_end(),
                    String::from_utf8_lossy(&t.content).lines().find(|l| l.starts_with("X-Case")).unwrap_or("")
                )
            })
            .collect();
        eprintln!("seen: {seen:#?}");
        eprintln!("protocol errors: {:#?}", capture.protocol_errors.lock().unwrap());
        for (marker, message) in &expected {
            eprintln!("expected {marker}: {:?} null={}", message.recipients, message.sender_null);
        }
    }
    assert!(
        settled && transactions.len() == deliveries + bounces,
        "seed {seed}: {} transactions, expected {deliveries} + {bounces}",
        transactions.len()
    );
    assert!(
        capture.protocol_errors.lock().unwrap().is_empty(),
        "seed {seed}: {:?}",
        capture.protocol_errors.lock().unwrap()
    );
    for line in capture.commands() {
        assert!(is_relay_command(&line), "seed {seed}: the relay wrote {line:?}");
    }
    for transaction in &transactions {
        let text = String::from_utf8_lossy(&transaction.content).into_owned();
        let marker = text.lines().find(|line| line.starts_with("X-Case: ")).expect("a marker").to_owned();
        let message = &expected[&marker];
        if transaction.mail.starts_with("MAIL FROM:<>") && text.contains("report-type=delivery-status") {
            check_bounce(transaction, message);
        } else {
            check_delivered(transaction, message);
        }
    }
    assert!(deliveries > cases / 2 && bounces > 0, "the generator should produce both ({deliveries}, {bounces})");
    service.shutdown().await;
}
