//! DNSSEC together with split horizon and IXFR: every view's copy of a signed zone is signed
//! with the same keys (one DS for the parent validates them all), and an incremental transfer
//! after a change or a re-signing carries the new RRSIG and NSEC3 records, so a secondary that
//! applies it holds exactly the new signed zone. Checked with BIND's `dnssec-verify` and
//! `dnssec-dsfromkey` over transfers from the running server.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::dig;
use hickory_proto::rr::RecordType;
use lienthong_dns::DnsService;
use lienthong_dns::catalog::Catalog;
use lienthong_dns::serial::Serials;

const ZONE: &str = "ninhthuan.gov.vn";
const INSIDE_ZONE: &str = "$ORIGIN ninhthuan.gov.vn.\n$TTL 3600\nportal IN A 10.20.0.40\nsub.ent IN A 10.20.0.41\n";
const OUTSIDE_ZONE: &str = "$ORIGIN ninhthuan.gov.vn.\n$TTL 3600\nportal IN A 203.0.113.40\n";

/// `inside` is 127.0.0.2 (dig -b), everyone else sees the public copy; both copies signed.
fn split_config(directory: &Path) -> lienthong_config::Config {
    std::fs::write(directory.join("inside.zone"), INSIDE_ZONE).unwrap();
    std::fs::write(directory.join("outside.zone"), OUTSIDE_ZONE).unwrap();
    let text = format!(
        r#"[server]
hostname = "hub.ninhthuan.gov.vn"
addresses = ["203.0.113.5"]
state_dir = "{state}"

[dns]
listen = ["127.0.0.1:0"]

[[dns.view]]
name = "inside"
clients = ["127.0.0.2/32"]
addresses = ["10.20.0.5"]

[[dns.zone]]
name = "ninhthuan.gov.vn"
file = "inside.zone"
views = ["inside"]
dnssec = true
secondaries = ["127.0.0.2"]

[[dns.zone]]
name = "ninhthuan.gov.vn"
file = "outside.zone"
dnssec = true
secondaries = ["127.0.0.1"]

[mail]
enabled = false

[conference]
enabled = false
"#,
        state = directory.join("state").display(),
    );
    lienthong_config::parse(&text, "test.toml", directory).unwrap_or_else(|errors| panic!("{errors}"))
}

fn signed_config(directory: &Path, extra: &str) -> lienthong_config::Config {
    common::write_zone(directory);
    let text = common::config_text(directory, "")
        .replacen(
            "name = \"ninhthuan.gov.vn\"\n",
            "name = \"ninhthuan.gov.vn\"\ndnssec = true\nsecondaries = [\"127.0.0.1\"]\n",
            1,
        )
        .replace("\"extra 300 IN A 10.20.0.13\"", extra);
    lienthong_config::parse(&text, "test.toml", directory).unwrap_or_else(|errors| panic!("{errors}"))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn run(program: &str, arguments: &[&str]) -> String {
    let output = Command::new(program)
        .args(arguments)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program} ({error}); install it: apt-get install bind9-utils"));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{program} {arguments:?} failed:\n{text}");
    text
}

/// The records of dig's transfer output, one whitespace-normalised line each, in order.
fn records(output: &str) -> Vec<String> {
    output
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with(';'))
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

fn is_soa(line: &str) -> bool {
    line.split(' ').nth(3) == Some("SOA")
}

async fn axfr(port: u16, source: &str) -> Vec<String> {
    let output = dig(port, &["-b", source, "+tcp", "+onesoa", "+nocomments", "+nostats", "+nocmd", ZONE, "AXFR"]).await;
    let lines = records(&output);
    assert!(lines.len() > 3 && is_soa(&lines[0]), "not a transfer:\n{output}");
    lines
}

/// `dnssec-verify` accepts the zone; returns the DS digests `dnssec-dsfromkey` makes of its
/// KSKs.
fn verify_and_ds(directory: &Path, name: &str, lines: &[String]) -> BTreeSet<String> {
    let file = directory.join(name);
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let file = file.to_str().unwrap();
    run("dnssec-verify", &["-o", ZONE, file]);
    let ds = run("dnssec-dsfromkey", &["-2", "-f", file, ZONE]);
    ds.lines().filter_map(|line| line.split_whitespace().last()).map(str::to_uppercase).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_views_copy_is_signed_with_the_same_keys() {
    let directory = tempfile::tempdir().unwrap();
    let config = Arc::new(split_config(directory.path()));
    let service = DnsService::start(config.clone(), Vec::new()).await.expect("service starts");
    let port = service.local_addresses()[0].port();
    let inside = axfr(port, "127.0.0.2").await;
    let outside = axfr(port, "127.0.0.1").await;
    let has = |lines: &[String], wanted: &str| lines.iter().any(|line| line.contains(wanted));
    assert!(has(&inside, "IN A 10.20.0.40") && !has(&inside, "203.0.113.40"), "{inside:#?}");
    assert!(has(&outside, "IN A 203.0.113.40") && !has(&outside, "10.20.0.40"), "{outside:#?}");
    // The derived records differ per view too, and are signed with the rest.
    assert!(has(&inside, "hub.ninhthuan.gov.vn. 3600 IN A 10.20.0.5"), "{inside:#?}");
    assert!(has(&outside, "hub.ninhthuan.gov.vn. 3600 IN A 203.0.113.5"), "{outside:#?}");
    for lines in [&inside, &outside] {
        assert!(has(lines, "RRSIG A 13 4 3600"), "{lines:#?}");
        assert!(has(lines, " NSEC3 1 0 0 - "), "{lines:#?}");
    }
    let dnskeys = |lines: &[String]| -> BTreeSet<String> {
        lines.iter().filter(|line| line.split(' ').nth(3) == Some("DNSKEY")).cloned().collect()
    };
    assert_eq!(dnskeys(&inside), dnskeys(&outside), "one key set for every view");

    let printed: BTreeSet<String> = lienthong_dns::dnssec::ds_for(&config, ZONE, unix_now())
        .unwrap()
        .iter()
        .filter_map(|line| line.split_whitespace().last().map(str::to_owned))
        .collect();
    assert_eq!(printed.len(), 1, "{printed:?}");
    assert_eq!(verify_and_ds(directory.path(), "inside.signed", &inside), printed, "the inside copy");
    assert_eq!(verify_and_ds(directory.path(), "outside.signed", &outside), printed, "the outside copy");
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_answers_sign_the_optional_sections_as_nsd_does() {
    let directory = tempfile::tempdir().unwrap();
    let service =
        DnsService::start(Arc::new(signed_config(directory.path(), "\"extra 300 IN A 10.20.0.13\"")), Vec::new())
            .await
            .expect("service starts");
    let port = service.local_addresses()[0].port();
    let output = dig(port, &["+norec", "+dnssec", "+bufsize=4096", ZONE, "MX"]).await;
    let output =
        records(&output.replace(";; AUTHORITY SECTION:", "AUTHORITY").replace(";; ADDITIONAL SECTION:", "ADDITIONAL"));
    let section = |name: &str| -> Vec<String> {
        output
            .iter()
            .skip_while(|line| *line != name)
            .skip(1)
            .take_while(|line| line.contains(" IN "))
            .cloned()
            .collect()
    };
    let authority = section("AUTHORITY");
    let additional = section("ADDITIONAL");
    assert!(authority.iter().any(|line| line.starts_with("ninhthuan.gov.vn. 3600 IN RRSIG NS 13 ")), "{output:#?}");
    assert!(
        additional.iter().any(|line| line.starts_with("mail.ninhthuan.gov.vn. ") && line.contains(" RRSIG A 13 ")),
        "{output:#?}"
    );
    service.shutdown().await;
}

/// The zone a secondary holding `old` has after applying dig's IXFR output `ixfr`.
fn apply(old: &[String], ixfr: &[String]) -> Vec<String> {
    assert!(ixfr.len() >= 4 && is_soa(&ixfr[0]) && is_soa(&ixfr[1]), "not an incremental transfer: {ixfr:#?}");
    let mut zone: BTreeSet<String> = old[1..].iter().cloned().collect();
    let mut adding = true;
    for line in &ixfr[1..ixfr.len() - 1] {
        if is_soa(line) {
            adding = !adding;
        } else if adding {
            zone.insert(line.clone());
        } else {
            assert!(zone.remove(line), "the increment removes a record the old zone lacks: {line}");
        }
    }
    let mut applied = vec![ixfr[0].clone()];
    applied.extend(zone);
    applied
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ixfr_after_a_change_carries_the_new_signatures() {
    let directory = tempfile::tempdir().unwrap();
    let before = Arc::new(signed_config(directory.path(), "\"extra 300 IN A 10.20.0.13\""));
    let service = DnsService::start(before, Vec::new()).await.expect("service starts");
    let port = service.local_addresses()[0].port();
    let old = axfr(port, "127.0.0.1").await;
    let old_serial = old[0].split(' ').nth(6).unwrap().to_owned();

    let after = signed_config(directory.path(), "\"extra 300 IN A 10.20.0.14\", \"moi 300 IN A 10.20.0.15\"");
    service.reload(Arc::new(after), Vec::new()).await.expect("reload");
    let new = axfr(port, "127.0.0.1").await;
    assert_ne!(new[0], old[0], "a higher serial");
    let ixfr = dig(port, &["+tcp", "+nocomments", "+nostats", "+nocmd", ZONE, &format!("IXFR={old_serial}")]).await;
    let ixfr = records(&ixfr);
    let added_rrsig = |owner: &str| {
        ixfr.iter().any(|line| line.starts_with(&format!("{owner}.ninhthuan.gov.vn. 300 IN RRSIG A 13 ")))
    };
    assert!(added_rrsig("extra") && added_rrsig("moi"), "the changed sets' signatures: {ixfr:#?}");
    assert!(ixfr.iter().any(|line| line.contains(" NSEC3 1 0 0 - ")), "the NSEC3 chain changes: {ixfr:#?}");
    // Unchanged sets keep their signatures: the increment is the change, not the whole zone.
    assert!(ixfr.len() < new.len() / 2, "incremental, not every signature again ({} vs {})", ixfr.len(), new.len());
    let applied = apply(&old, &ixfr);
    let mut expected = vec![new[0].clone()];
    expected.extend(new[1..].iter().cloned().collect::<BTreeSet<_>>());
    assert_eq!(applied, expected, "old zone + increment = new zone");
    verify_and_ds(directory.path(), "applied.signed", &applied);
    service.shutdown().await;
}

#[test]
fn a_re_signing_is_a_new_serial_with_its_own_difference() {
    let directory = tempfile::tempdir().unwrap();
    let config = signed_config(directory.path(), "\"extra 300 IN A 10.20.0.13\"");
    let mut serials = Serials::in_memory();
    let start = unix_now();
    let first = Catalog::build(&config, &[], &mut serials, start).unwrap();
    let zone = &first.zones[0].zone;
    let refresh_at = zone.dnssec.as_ref().unwrap().refresh_at;
    let same = Catalog::build_after(&config, &[], &mut serials, start + 1, Some(&first)).unwrap();
    assert_eq!(same.zones[0].zone.serial(), zone.serial());
    assert!(same.zones[0].zone.history.is_empty(), "nothing changed, nothing to transfer");

    // A change of one record re-signs only its set and the SOA.
    let changed = signed_config(directory.path(), "\"extra 300 IN A 10.20.0.14\"");
    let edited = Catalog::build_after(&changed, &[], &mut serials, start + 2, Some(&same)).unwrap();
    let difference = &edited.zones[0].zone.history[0];
    let covered = |records: &[hickory_proto::rr::Record]| -> Vec<String> {
        let mut covered: Vec<String> = records
            .iter()
            .filter_map(|record| match &record.data {
                hickory_proto::rr::RData::DNSSEC(hickory_proto::dnssec::rdata::DNSSECRData::RRSIG(rrsig)) => {
                    Some(format!("{} {}", record.name, rrsig.input().type_covered))
                }
                _ => None,
            })
            .collect();
        covered.sort();
        covered
    };
    let expected = ["extra.ninhthuan.gov.vn. A", "ninhthuan.gov.vn. SOA"];
    assert_eq!(covered(&difference.added), expected, "{:#?}", difference.added);
    assert_eq!(covered(&difference.removed), expected, "{:#?}", difference.removed);

    let resigned = Catalog::build_after(&changed, &[], &mut serials, refresh_at, Some(&edited)).unwrap();
    let new = &resigned.zones[0].zone;
    assert_ne!(new.serial(), zone.serial(), "the refresh timer's rebuild is a new serial");
    assert_eq!(new.history.len(), 2);
    let difference = &new.history[1];
    let types = |records: &[hickory_proto::rr::Record]| -> BTreeSet<RecordType> {
        records.iter().map(hickory_proto::rr::Record::record_type).collect()
    };
    // Only signatures change (NSEC3 records keep their data; their RRSIGs are new).
    assert_eq!(types(&difference.added), BTreeSet::from([RecordType::RRSIG]));
    assert_eq!(types(&difference.removed), BTreeSet::from([RecordType::RRSIG]));
    let signatures = new.dnssec.as_ref().unwrap().records();
    let rrsigs = signatures.iter().filter(|record| record.record_type() == RecordType::RRSIG).count();
    assert_eq!(difference.added.len(), rrsigs, "every signature is remade");
    let edited_serial = edited.zones[0].zone.serial();
    let records = lienthong_dns::history::incremental(new, edited_serial).expect("an increment");
    assert_eq!(records.len(), difference.added.len() + difference.removed.len() + 4);
}
