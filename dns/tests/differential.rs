//! The differential test against a real NSD: both serve the same three zone files (a zone, a
//! sibling and a delegated child, so CNAME chains cross zones and leave them), and several
//! hundred generated questions (every name of the zones' categories crossed with every type,
//! then EDNS sizes and flags, case, TCP, truncation, classes and opcodes) must get the same
//! answer: its size (name compression as NSD's), header flags and counts, rcode, question,
//! every section (sorted), EDNS version, DO, payload size and options.
//!
//! Differences that are NSD's bugs, not ours, are listed in `NSD_BUGS` with the reason;
//! today there are none.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{NSD_SIBLING_ZONE as SIBLING, NSD_ZONE as ZONE, Nsd, exchange, free_port, query};
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use lienthong_dns::DnsService;

/// A child zone of the first, delegated there and served here too.
const CHILD: &str = r#"$ORIGIN sub.ninhthuan.gov.vn.
$TTL 3600
@    IN SOA ns hostmaster.ns 2024030303 7200 3600 1209600 900
@    IN NS  ns
ns   IN A   10.20.0.40
www  IN A   10.20.0.41
"#;

/// Names with many records, for truncation and the optional sections' limit.
fn sized_records() -> String {
    let mut text = String::new();
    for index in 1..=40 {
        text.push_str(&format!("many IN A 10.20.1.{index}\n"));
    }
    for index in 1..=26 {
        text.push_str(&format!("near IN A 10.20.2.{index}\n"));
    }
    let chunk = |letter: char, length: usize| format!("\"{}\"", letter.to_string().repeat(length));
    let big: Vec<String> = "abcde".chars().map(|letter| chunk(letter, 200)).collect();
    text.push_str(&format!("big 60 IN TXT {}\n", big.join(" ")));
    let huge: Vec<String> = "abcdefgh".chars().map(|letter| chunk(letter, 250)).collect();
    text.push_str(&format!("huge 60 IN TXT {}\n", huge.join(" ")));
    text
}

/// Differences that are NSD's bugs, each with why: (question label, reason).
const NSD_BUGS: &[(&str, &str)] = &[];

const NAMES: &[&str] = &[
    "ninhthuan.gov.vn.",
    "www.ninhthuan.gov.vn.",
    "WWW.NinhThuan.Gov.Vn.",
    "hub.ninhthuan.gov.vn.",
    "mail.ninhthuan.gov.vn.",
    "nope.ninhthuan.gov.vn.",
    "x.y.z.ninhthuan.gov.vn.",
    "motcua.ninhthuan.gov.vn.",
    "chain1.ninhthuan.gov.vn.",
    "c1.ninhthuan.gov.vn.",
    "loop1.ninhthuan.gov.vn.",
    "self.ninhthuan.gov.vn.",
    "dangling.ninhthuan.gov.vn.",
    "outside.ninhthuan.gov.vn.",
    "towild.ninhthuan.gov.vn.",
    "toent.ninhthuan.gov.vn.",
    "todeleg.ninhthuan.gov.vn.",
    "tomx.ninhthuan.gov.vn.",
    "a.wild.ninhthuan.gov.vn.",
    "A.B.Wild.ninhthuan.gov.vn.",
    "wild.ninhthuan.gov.vn.",
    "real.wild.ninhthuan.gov.vn.",
    "x.real.wild.ninhthuan.gov.vn.",
    "q.wc.ninhthuan.gov.vn.",
    "q.mx.ninhthuan.gov.vn.",
    "ent.ninhthuan.gov.vn.",
    "b.ent.ninhthuan.gov.vn.",
    "a.b.ent.ninhthuan.gov.vn.",
    "x.ent.ninhthuan.gov.vn.",
    "q.x.ent.ninhthuan.gov.vn.",
    "huyen.ninhthuan.gov.vn.",
    "www.huyen.ninhthuan.gov.vn.",
    "ns1.huyen.ninhthuan.gov.vn.",
    "nsonly.ninhthuan.gov.vn.",
    "_sip._tcp.ninhthuan.gov.vn.",
    "_tcp.ninhthuan.gov.vn.",
    "_ldap._tcp.ninhthuan.gov.vn.",
    "_wild._tcp.ninhthuan.gov.vn.",
    "mxg.ninhthuan.gov.vn.",
    "ptr.ninhthuan.gov.vn.",
    "caa.ninhthuan.gov.vn.",
    "mixed.ninhthuan.gov.vn.",
    "txtonly.ninhthuan.gov.vn.",
    "portal.example.com.",
    "tosib.ninhthuan.gov.vn.",
    "tosibnx.ninhthuan.gov.vn.",
    "tosibback.ninhthuan.gov.vn.",
    "tosibwild.ninhthuan.gov.vn.",
    "tosibdeleg.ninhthuan.gov.vn.",
    "tosibmx.ninhthuan.gov.vn.",
    "tosibent.ninhthuan.gov.vn.",
    "tosibout.ninhthuan.gov.vn.",
    "xloop.ninhthuan.gov.vn.",
    "tochild.ninhthuan.gov.vn.",
    "tochildnx.ninhthuan.gov.vn.",
    "khanhhoa.gov.vn.",
    "nope.khanhhoa.gov.vn.",
    "a.b.khanhhoa.gov.vn.",
    "ent.khanhhoa.gov.vn.",
    "x.a.ent.khanhhoa.gov.vn.",
    "back.khanhhoa.gov.vn.",
    "loop.khanhhoa.gov.vn.",
    "www.deleg.khanhhoa.gov.vn.",
    "sub.ninhthuan.gov.vn.",
    "nope.sub.ninhthuan.gov.vn.",
    "x.www.sub.ninhthuan.gov.vn.",
    "X.NS.Sub.NinhThuan.gov.vn.",
];

const TYPES: &[RecordType] = &[
    RecordType::A,
    RecordType::AAAA,
    RecordType::MX,
    RecordType::TXT,
    RecordType::CNAME,
    RecordType::NS,
    RecordType::SOA,
    RecordType::ANY,
    RecordType::DS,
    RecordType::SRV,
];

/// One generated question: a label for the report, the packet, and the transport.
struct Question {
    label: String,
    packet: Vec<u8>,
    tcp: bool,
}

fn with_rd(mut packet: Vec<u8>) -> Vec<u8> {
    packet[2] |= 0x01;
    packet
}

/// Sets bits in the OPT record's TTL (the last 11 bytes of a query from `common::query`).
fn edns_bits(mut packet: Vec<u8>, version: u8, dnssec_ok: bool) -> Vec<u8> {
    let opt = packet.len() - 11;
    packet[opt + 6] = version;
    if dnssec_ok {
        packet[opt + 7] |= 0x80;
    }
    packet
}

fn questions() -> Vec<Question> {
    let mut questions = Vec::new();
    let mut add = |label: String, packet: Vec<u8>, tcp: bool| questions.push(Question { label, packet, tcp });
    // Every category's names crossed with every type, UDP with EDNS 1232 (what resolvers send).
    for name in NAMES {
        for record_type in TYPES {
            add(format!("{name} {record_type} udp edns1232"), with_rd(query(name, *record_type, Some(1232))), false);
        }
    }
    // Sizes and truncation: no EDNS (512), EDNS 512, 4096, and TCP.
    let sized = [
        ("many.ninhthuan.gov.vn.", RecordType::A),
        ("near.ninhthuan.gov.vn.", RecordType::A),
        ("big.ninhthuan.gov.vn.", RecordType::TXT),
        ("huge.ninhthuan.gov.vn.", RecordType::TXT),
        ("ninhthuan.gov.vn.", RecordType::MX),
        ("www.ninhthuan.gov.vn.", RecordType::A),
        ("c1.ninhthuan.gov.vn.", RecordType::A),
        ("nope.ninhthuan.gov.vn.", RecordType::A),
        ("huyen.ninhthuan.gov.vn.", RecordType::A),
        ("a.wild.ninhthuan.gov.vn.", RecordType::TXT),
    ];
    for (name, record_type) in sized {
        add(format!("{name} {record_type} udp noedns"), with_rd(query(name, record_type, None)), false);
        add(format!("{name} {record_type} udp edns512"), with_rd(query(name, record_type, Some(512))), false);
        add(format!("{name} {record_type} udp edns4096"), with_rd(query(name, record_type, Some(4096))), false);
        add(format!("{name} {record_type} tcp noedns"), with_rd(query(name, record_type, None)), true);
        add(format!("{name} {record_type} tcp edns1232"), with_rd(query(name, record_type, Some(1232))), true);
    }
    // EDNS flags: DO=1 (unsigned zone: DO copied, nothing else changes), version 1 (BADVERS).
    for name in ["www.ninhthuan.gov.vn.", "nope.ninhthuan.gov.vn.", "ent.ninhthuan.gov.vn.", "huyen.ninhthuan.gov.vn."]
    {
        add(format!("{name} A do"), edns_bits(with_rd(query(name, RecordType::A, Some(1232))), 0, true), false);
        add(format!("{name} A version1"), edns_bits(query(name, RecordType::A, Some(1232)), 1, false), false);
        add(format!("{name} A version1 do"), edns_bits(query(name, RecordType::A, Some(1232)), 1, true), false);
    }
    // Header flags: RD clear, CD set, AD set.
    let www = || query("www.ninhthuan.gov.vn.", RecordType::A, Some(1232));
    add("www A rd=0".into(), www(), false);
    let mut checking_disabled = with_rd(www());
    checking_disabled[3] |= 0x10;
    add("www A cd=1".into(), checking_disabled, false);
    let mut authentic = with_rd(www());
    authentic[3] |= 0x20;
    add("www A ad=1".into(), authentic, false);
    // Classes: CHAOS identity and version, HS, ANY.
    let with_class = |name: &str, record_type: RecordType, class: u16, edns: Option<u16>| {
        let mut packet = with_rd(query(name, record_type, edns));
        let question_end = 12 + name.len() + 1 + 4;
        packet[question_end - 2..question_end].copy_from_slice(&class.to_be_bytes());
        packet
    };
    for edns in [None, Some(1232)] {
        let suffix = if edns.is_some() { "edns" } else { "noedns" };
        add(format!("id.server CH TXT {suffix}"), with_class("id.server.", RecordType::TXT, 3, edns), false);
        add(format!("hostname.bind CH TXT {suffix}"), with_class("hostname.bind.", RecordType::TXT, 3, edns), false);
        add(format!("version.bind CH TXT {suffix}"), with_class("version.bind.", RecordType::TXT, 3, edns), false);
        add(format!("version.server CH TXT {suffix}"), with_class("version.server.", RecordType::TXT, 3, edns), false);
        add(format!("id.server CH A {suffix}"), with_class("id.server.", RecordType::A, 3, edns), false);
        add(format!("other.name CH TXT {suffix}"), with_class("other.name.", RecordType::TXT, 3, edns), false);
        add(format!("www HS A {suffix}"), with_class("www.ninhthuan.gov.vn.", RecordType::A, 4, edns), false);
        add(format!("www ANY-class A {suffix}"), with_class("www.ninhthuan.gov.vn.", RecordType::A, 255, edns), false);
        add(
            format!("nope ANY-class A {suffix}"),
            with_class("nope.ninhthuan.gov.vn.", RecordType::A, 255, edns),
            false,
        );
    }
    // Opcodes: STATUS, UPDATE, an unassigned one, NOTIFY for a served and a foreign zone.
    for (opcode, name) in [(2u8, "status"), (5, "update"), (7, "unassigned"), (4, "notify")] {
        let mut packet = with_rd(query("ninhthuan.gov.vn.", RecordType::SOA, None));
        packet[2] |= opcode << 3;
        add(format!("opcode {name}"), packet, false);
    }
    let mut foreign_notify = query("example.org.", RecordType::SOA, None);
    foreign_notify[2] |= 4 << 3;
    add("opcode notify foreign zone".into(), foreign_notify, false);
    // Malformed: two questions, an answer record in a query.
    let mut two = with_rd(query("www.ninhthuan.gov.vn.", RecordType::A, None));
    two[5] = 2;
    add("qdcount=2".into(), two, false);
    let mut answer_count = with_rd(query("www.ninhthuan.gov.vn.", RecordType::A, None));
    answer_count[7] = 1;
    add("ancount=1".into(), answer_count, false);
    questions
}

/// Everything an answer says, comparable across servers: its size (so name compression
/// must match too), the header's flags and counts exactly, and every section and the OPT
/// record decoded, sorted, lowercase.
fn summary(answer: &[u8]) -> String {
    let Some(header) = answer.get(2..12) else { return format!("short answer {answer:02x?}") };
    let Ok(message) = Message::from_vec(answer) else { return format!("undecodable {answer:02x?}") };
    let lower = |records: &[hickory_proto::rr::Record]| -> Vec<String> {
        let mut lines: Vec<String> = records.iter().map(|record| record.to_string().to_lowercase()).collect();
        lines.sort();
        lines
    };
    let questions: Vec<String> = message.queries.iter().map(|query| query.to_string()).collect();
    let edns = message.edns.as_ref().map(|edns| format!("{edns} {:?}", edns.options()));
    format!(
        "size={}\nheader={header:02x?}\nquestion={questions:?}\nanswer={:?}\nauthority={:?}\nadditional={:?}\nedns={edns:?}",
        answer.len(),
        lower(&message.answers),
        lower(&message.authorities),
        lower(&message.additionals),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_questions_get_the_answers_nsd_gives() {
    let directory = tempfile::tempdir().unwrap();
    let zone = format!("{ZONE}{}", sized_records());
    std::fs::write(directory.path().join("differential.zone"), &zone).unwrap();
    std::fs::write(directory.path().join("sibling.zone"), SIBLING).unwrap();
    std::fs::write(directory.path().join("child.zone"), CHILD).unwrap();
    let text = format!(
        "[server]\nhostname = \"hub.example.net\"\naddresses = [\"10.20.0.5\"]\nstate_dir = \"{}\"\n\n[dns]\nlisten = [\"127.0.0.1:0\"]\nrate_limit = 0\n\n[[dns.zone]]\nname = \"ninhthuan.gov.vn\"\nfile = \"differential.zone\"\n\n[[dns.zone]]\nname = \"khanhhoa.gov.vn\"\nfile = \"sibling.zone\"\n\n[[dns.zone]]\nname = \"sub.ninhthuan.gov.vn\"\nfile = \"child.zone\"\n\n[mail]\nenabled = false\n\n[conference]\nenabled = false\n",
        directory.path().join("state").display()
    );
    let config =
        lienthong_config::parse(&text, "test.toml", directory.path()).unwrap_or_else(|errors| panic!("{errors}"));
    let service = DnsService::start(Arc::new(config), Vec::new()).await.unwrap();
    let port = service.local_addresses()[0].port();

    let nsd_directory = tempfile::tempdir().unwrap();
    std::fs::write(nsd_directory.path().join("primary.zone"), &zone).unwrap();
    std::fs::write(nsd_directory.path().join("sibling.zone"), SIBLING).unwrap();
    std::fs::write(nsd_directory.path().join("child.zone"), CHILD).unwrap();
    let nsd_port = free_port();
    let nsd = Nsd::start_with(
        nsd_directory.path(),
        "  identity: \"hub.example.net\"\n  hide-version: yes\n",
        "zone:\n  name: \"ninhthuan.gov.vn\"\n  zonefile: \"primary.zone\"\nzone:\n  name: \"khanhhoa.gov.vn\"\n  zonefile: \"sibling.zone\"\nzone:\n  name: \"sub.ninhthuan.gov.vn\"\n  zonefile: \"child.zone\"\n",
        nsd_port,
    );
    let soa = query("ninhthuan.gov.vn.", RecordType::SOA, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while exchange(nsd_port, &soa, false).await.is_none_or(|answer| answer.get(7) != Some(&1)) {
        assert!(Instant::now() < deadline, "NSD did not start; its log:\n{}", nsd.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let questions = questions();
    assert!(questions.len() >= 150, "{} questions", questions.len());
    let mut differences = Vec::new();
    for question in &questions {
        let ours = exchange(port, &question.packet, question.tcp).await.map(|answer| summary(&answer));
        let theirs = exchange(nsd_port, &question.packet, question.tcp).await.map(|answer| summary(&answer));
        if ours != theirs && !NSD_BUGS.iter().any(|(label, _)| *label == question.label) {
            differences.push(format!(
                "{}\n lienthong: {}\n nsd:       {}",
                question.label,
                ours.unwrap_or_else(|| "no answer".into()).replace('\n', "\n            "),
                theirs.unwrap_or_else(|| "no answer".into()).replace('\n', "\n            "),
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {} questions differ from NSD:\n{}",
        differences.len(),
        questions.len(),
        differences.join("\n")
    );
    drop(nsd);
    service.shutdown().await;
}
