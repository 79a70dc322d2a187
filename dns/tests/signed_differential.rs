//! The DO=1 differential test against a signing setup NSD operators use: the same two zones
//! (the second reached by CNAME chains from the first) are signed for NSD by `ldns-signzone` (NSEC3, SHA-1, no salt, 0 extra iterations, algorithm
//! 13: what lienthong's `dnssec = true` does) and served by both. Keys, signatures and NSEC3
//! hashes differ, so each answer is compared by structure: its size less the NSEC3 type
//! bitmaps (so name compression must match too), rcode and header flags (AA, TC,
//! AD, ...) and counts, and per section which record types appear under which owner names
//! (NSEC3 owners as `nsec3.<apex>`), with TTLs, the types RRSIGs cover and their label count
//! (a wildcard's tells), so the NSEC3 records of every NXDOMAIN, NODATA, wildcard and
//! delegation proof are counted; and EDNS (DO copied, payload size).
//!
//! Differences that are NSD's bugs, not ours, are listed in `NSD_BUGS` with the reason.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{NSD_SIBLING_ZONE, NSD_ZONE, Nsd, exchange, free_port, query};
use hickory_proto::dnssec::rdata::DNSSECRData;
use hickory_proto::op::Message;
use hickory_proto::rr::{RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
use lienthong_dns::DnsService;

const APEX: &str = "ninhthuan.gov.vn.";

/// A DS at the `huyen` cut (its other cuts have none: their NSEC3 proves it).
const DS_RECORD: &str = "huyen IN DS 12345 13 2 2b9a7c2f4e7d0a1c2b9a7c2f4e7d0a1c2b9a7c2f4e7d0a1c2b9a7c2f4e7d0a1c\n";

/// An unsigned zone served alongside, whose CNAMEs lead into the signed ones: the signed
/// zones' sets in such a chain carry their signatures and proofs.
const UNSIGNED: &str = r#"$ORIGIN phanrang.gov.vn.
$TTL 3600
@      IN SOA ns1 hostmaster 2024040404 7200 3600 1209600 600
@      IN NS  ns1
ns1    IN A   10.40.0.1
tow    IN CNAME www.ninhthuan.gov.vn.
tonx   IN CNAME nope.ninhthuan.gov.vn.
towild IN CNAME q.wild.ninhthuan.gov.vn.
tosib  IN CNAME back.khanhhoa.gov.vn.
plain  IN A   10.40.0.2
"#;

/// Differences that are NSD's bugs, each with why: (question label, reason).
const NSD_BUGS: &[(&str, &str)] = &[];

const NAMES: &[&str] = &[
    "ninhthuan.gov.vn.",
    "www.ninhthuan.gov.vn.",
    "WWW.NinhThuan.Gov.Vn.",
    "hub.ninhthuan.gov.vn.",
    "nope.ninhthuan.gov.vn.",
    "x.y.z.ninhthuan.gov.vn.",
    "motcua.ninhthuan.gov.vn.",
    "chain1.ninhthuan.gov.vn.",
    "loop1.ninhthuan.gov.vn.",
    "dangling.ninhthuan.gov.vn.",
    "outside.ninhthuan.gov.vn.",
    "tosib.ninhthuan.gov.vn.",
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
    "x.ent.ninhthuan.gov.vn.",
    "q.x.ent.ninhthuan.gov.vn.",
    "huyen.ninhthuan.gov.vn.",
    "www.huyen.ninhthuan.gov.vn.",
    "ns1.huyen.ninhthuan.gov.vn.",
    "nsonly.ninhthuan.gov.vn.",
    "sub.ninhthuan.gov.vn.",
    "_sip._tcp.ninhthuan.gov.vn.",
    "_tcp.ninhthuan.gov.vn.",
    "mxg.ninhthuan.gov.vn.",
    "mixed.ninhthuan.gov.vn.",
    // CNAME chains into the sibling zone (signed too) and out of both.
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
    "khanhhoa.gov.vn.",
    "www.khanhhoa.gov.vn.",
    "nope.khanhhoa.gov.vn.",
    "back.khanhhoa.gov.vn.",
    "deleg.khanhhoa.gov.vn.",
    "tow.phanrang.gov.vn.",
    "tonx.phanrang.gov.vn.",
    "towild.phanrang.gov.vn.",
    "tosib.phanrang.gov.vn.",
    "plain.phanrang.gov.vn.",
    "nope.phanrang.gov.vn.",
];

/// Asked for every name. The apex's DNSKEY, CDS and CDNSKEY are asked separately
/// ([`KEY_TYPES`]); NSEC3PARAM is left out.
const TYPES: &[RecordType] = &[
    RecordType::A,
    RecordType::AAAA,
    RecordType::MX,
    RecordType::TXT,
    RecordType::CNAME,
    RecordType::NS,
    RecordType::SOA,
    RecordType::DS,
    RecordType::SRV,
];

/// The key sets asked at each signed apex, over UDP and TCP. ldns-signzone does not make CDS
/// and CDNSKEY: [`sign_for_nsd`] adds them from NSD's KSK, as an operator would for RFC 8078.
const KEY_TYPES: &[RecordType] = &[RecordType::DNSKEY, RecordType::CDS, RecordType::CDNSKEY];
const SIGNED_APEXES: &[&str] = &[APEX, "khanhhoa.gov.vn."];

/// A DO=1 query with RD set.
fn signed_query(name: &str, record_type: RecordType, payload: u16) -> Vec<u8> {
    let mut packet = query(name, record_type, Some(payload));
    packet[2] |= 0x01;
    let opt = packet.len() - 11;
    packet[opt + 7] |= 0x80;
    packet
}

/// The structure of one record: NSEC3 owners (and their RRSIGs) as `nsec3.<apex>`, RRSIGs as
/// the type they cover and their label count, other records whole.
fn record_shape(record: &Record) -> String {
    let owner = record.name.to_string().to_lowercase();
    let hashed = |owner: &str| match owner.split_once('.') {
        Some((_, rest)) => format!("nsec3.{rest}"),
        None => owner.to_owned(),
    };
    let rdata = || {
        let mut bytes = Vec::new();
        record.data.emit(&mut BinEncoder::new(&mut bytes)).unwrap();
        bytes
    };
    match &record.data {
        // Keys and digests differ: the flags, protocol and algorithm of a key, the algorithm
        // and digest type of a CDS, and the lengths (which the answer's size checks too).
        RData::DNSSEC(DNSSECRData::DNSKEY(_) | DNSSECRData::CDNSKEY(_)) => {
            let bytes = rdata();
            format!("{owner} {} {} {:?} len={}", record.ttl, record.record_type(), bytes.get(..4), bytes.len())
        }
        RData::DNSSEC(DNSSECRData::CDS(_)) => {
            let bytes = rdata();
            format!("{owner} {} CDS {:?} len={}", record.ttl, bytes.get(2..4), bytes.len())
        }
        RData::DNSSEC(DNSSECRData::NSEC3(_)) => format!("{} {} NSEC3", hashed(&owner), record.ttl),
        RData::DNSSEC(DNSSECRData::RRSIG(signature)) => {
            let input = signature.input();
            let covered = input.type_covered;
            let owner = if covered == RecordType::NSEC3 { hashed(&owner) } else { owner };
            format!("{owner} {} RRSIG {covered} labels={}", record.ttl, input.num_labels)
        }
        _ => record.to_string().to_lowercase(),
    }
}

fn structure(answer: &[u8]) -> String {
    let Some(header) = answer.get(2..12) else { return format!("short answer {answer:02x?}") };
    let Ok(message) = Message::from_vec(answer) else { return format!("undecodable {answer:02x?}") };
    let shapes = |records: &[Record]| -> Vec<String> {
        let mut shapes: Vec<String> = records.iter().map(record_shape).collect();
        shapes.sort();
        shapes
    };
    let edns = message.edns.as_ref().map(|edns| (edns.flags().dnssec_ok, edns.max_payload()));
    // The size, less each NSEC3's type bitmap (lienthong's apex also has CDS and CDNSKEY):
    // compression and the choice of records must match.
    let bitmaps: usize = message
        .answers
        .iter()
        .chain(&message.authorities)
        .chain(&message.additionals)
        .filter(|record| record.record_type() == RecordType::NSEC3)
        .map(|record| {
            let mut bytes = Vec::new();
            record.data.emit(&mut BinEncoder::new(&mut bytes)).unwrap();
            // Hash algorithm, flags, iterations, empty salt, then a 20-byte hash.
            bytes.len() - (1 + 1 + 2 + 1 + 1 + 20)
        })
        .sum();
    format!(
        "size={}\nheader={header:02x?}\nanswer={:#?}\nauthority={:#?}\nadditional={:#?}\nedns={edns:?}",
        answer.len() - bitmaps,
        shapes(&message.answers),
        shapes(&message.authorities),
        shapes(&message.additionals),
    )
}

/// Signs `plain` (a file in `directory`) for `apex` as an NSD operator would, into `signed`.
fn sign_for_nsd(directory: &Path, apex: &str, plain: &str, signed: &str) {
    let keygen = |ksk: bool| {
        let mut command = Command::new("ldns-keygen");
        command.current_dir(directory).args(["-a", "ECDSAP256SHA256", "-r", "/dev/urandom"]);
        if ksk {
            command.arg("-k");
        }
        let output = command
            .arg(apex)
            .output()
            .unwrap_or_else(|error| panic!("cannot run ldns-keygen ({error}); install it: apt-get install ldnsutils"));
        assert!(output.status.success(), "ldns-keygen: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    let (zsk, ksk) = (keygen(false), keygen(true));
    // CDS and CDNSKEY for the KSK (RFC 7344), in the zone before it is signed.
    let key = std::fs::read_to_string(directory.join(format!("{ksk}.key"))).expect("the KSK's .key file");
    let key = key.split(';').next().unwrap_or_default().trim();
    let digest = Command::new("ldns-key2ds").current_dir(directory).args(["-n", "-2", &format!("{ksk}.key")]).output();
    let digest = digest.expect("ldns-key2ds runs");
    assert!(digest.status.success(), "ldns-key2ds: {}", String::from_utf8_lossy(&digest.stderr));
    let digest = String::from_utf8_lossy(&digest.stdout);
    let cds = digest.trim().replacen("\tDS\t", "\tCDS\t", 1);
    let cdnskey = key.replacen("\tDNSKEY\t", "\tCDNSKEY\t", 1);
    assert!(cds.contains("CDS") && cdnskey.contains("CDNSKEY"), "unexpected key files: {cds:?} {cdnskey:?}");
    let mut zone = std::fs::read_to_string(directory.join(plain)).unwrap();
    zone.push_str(&format!("{cds}\n{cdnskey}\n"));
    std::fs::write(directory.join(plain), zone).unwrap();
    let output = Command::new("ldns-signzone")
        .current_dir(directory)
        .args(["-n", "-a", "1", "-t", "0", "-o", apex, "-f", signed, plain, &zsk, &ksk])
        .output()
        .expect("ldns-signzone runs");
    assert!(output.status.success(), "ldns-signzone: {}", String::from_utf8_lossy(&output.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_answers_have_the_structure_a_signing_nsd_gives() {
    let zone = format!("{NSD_ZONE}{DS_RECORD}");
    let directory = tempfile::tempdir().unwrap();
    std::fs::write(directory.path().join("signed.zone"), &zone).unwrap();
    std::fs::write(directory.path().join("sibling.zone"), NSD_SIBLING_ZONE).unwrap();
    std::fs::write(directory.path().join("unsigned.zone"), UNSIGNED).unwrap();
    let text = format!(
        "[server]\nhostname = \"hub.example.net\"\naddresses = [\"10.20.0.5\"]\nstate_dir = \"{}\"\n\n[dns]\nlisten = [\"127.0.0.1:0\"]\nrate_limit = 0\n\n[[dns.zone]]\nname = \"ninhthuan.gov.vn\"\nfile = \"signed.zone\"\ndnssec = true\n\n[[dns.zone]]\nname = \"khanhhoa.gov.vn\"\nfile = \"sibling.zone\"\ndnssec = true\n\n[[dns.zone]]\nname = \"phanrang.gov.vn\"\nfile = \"unsigned.zone\"\n\n[mail]\nenabled = false\n\n[conference]\nenabled = false\n",
        directory.path().join("state").display()
    );
    let config =
        lienthong_config::parse(&text, "test.toml", directory.path()).unwrap_or_else(|errors| panic!("{errors}"));
    let service = DnsService::start(Arc::new(config), Vec::new()).await.unwrap();
    let port = service.local_addresses()[0].port();

    let nsd_directory = tempfile::tempdir().unwrap();
    std::fs::write(nsd_directory.path().join("plain.zone"), &zone).unwrap();
    std::fs::write(nsd_directory.path().join("sibling.zone"), NSD_SIBLING_ZONE).unwrap();
    std::fs::write(nsd_directory.path().join("unsigned.zone"), UNSIGNED).unwrap();
    sign_for_nsd(nsd_directory.path(), APEX, "plain.zone", "signed.zone");
    sign_for_nsd(nsd_directory.path(), "khanhhoa.gov.vn.", "sibling.zone", "sibling.signed");
    let nsd_port = free_port();
    let nsd = Nsd::start_with(
        nsd_directory.path(),
        "  identity: \"hub.example.net\"\n  hide-version: yes\n",
        "zone:\n  name: \"ninhthuan.gov.vn\"\n  zonefile: \"signed.zone\"\nzone:\n  name: \"khanhhoa.gov.vn\"\n  zonefile: \"sibling.signed\"\nzone:\n  name: \"phanrang.gov.vn\"\n  zonefile: \"unsigned.zone\"\n",
        nsd_port,
    );
    let soa = query(APEX, RecordType::SOA, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while exchange(nsd_port, &soa, false).await.is_none_or(|answer| answer.get(7) != Some(&1)) {
        assert!(Instant::now() < deadline, "NSD did not start; its log:\n{}", nsd.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut questions: Vec<(String, Vec<u8>, bool)> = Vec::new();
    for name in NAMES {
        for record_type in TYPES {
            questions.push((format!("{name} {record_type} do"), signed_query(name, *record_type, 1232), false));
        }
    }
    // Sizes: signed answers that do not fit 512 bytes, and the same over TCP.
    for (name, record_type) in
        [(APEX, RecordType::MX), ("nope.ninhthuan.gov.vn.", RecordType::A), ("a.wild.ninhthuan.gov.vn.", RecordType::A)]
    {
        questions.push((format!("{name} {record_type} do 512"), signed_query(name, record_type, 512), false));
        questions.push((format!("{name} {record_type} do tcp"), signed_query(name, record_type, 1232), true));
    }
    for apex in SIGNED_APEXES {
        for record_type in KEY_TYPES {
            questions.push((format!("{apex} {record_type} do"), signed_query(apex, *record_type, 1232), false));
            questions.push((format!("{apex} {record_type} do tcp"), signed_query(apex, *record_type, 1232), true));
        }
    }
    assert!(questions.len() >= 60, "{} questions", questions.len());
    let mut differences = Vec::new();
    for (label, packet, tcp) in &questions {
        let ours = exchange(port, packet, *tcp).await.map(|answer| structure(&answer));
        let theirs = exchange(nsd_port, packet, *tcp).await.map(|answer| structure(&answer));
        if ours != theirs && !NSD_BUGS.iter().any(|(known, _)| known == label) {
            differences.push(format!(
                "{label}\n lienthong: {}\n nsd:       {}",
                ours.unwrap_or_else(|| "no answer".into()).replace('\n', "\n            "),
                theirs.unwrap_or_else(|| "no answer".into()).replace('\n', "\n            "),
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {} signed questions differ from NSD:\n{}",
        differences.len(),
        questions.len(),
        differences.join("\n")
    );
    drop(nsd);
    service.shutdown().await;
}
