//! Signed zones checked by independent software: the zone as transferred (AXFR with `dig`)
//! through BIND's `dnssec-verify` and ldns' `ldns-verify-zone`, and a real Unbound, given only
//! the DS that `dnssec::ds_for` prints as its trust anchor, validating answers from the
//! running server (positive, CNAME, NXDOMAIN, NODATA, empty non-terminal, wildcard).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::dig;
use lienthong_dns::DnsService;

const ZONE: &str = "ninhthuan.gov.vn";

fn signed_config(directory: &Path) -> lienthong_config::Config {
    common::write_zone(directory);
    let text = common::config_text(directory, "").replacen(
        "name = \"ninhthuan.gov.vn\"\n",
        "name = \"ninhthuan.gov.vn\"\ndnssec = true\nsecondaries = [\"127.0.0.1\"]\n",
        1,
    );
    lienthong_config::parse(&text, "test.toml", directory).unwrap_or_else(|errors| panic!("{errors}"))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn run(program: &str, arguments: &[&str], package: &str) -> (bool, String) {
    let output = Command::new(program)
        .args(arguments)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program} ({error}); install it: apt-get install {package}"));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transferred_zone_passes_dnssec_verify_and_ldns_verify_zone() {
    let directory = tempfile::tempdir().unwrap();
    let config = Arc::new(signed_config(directory.path()));
    let service = DnsService::start(config.clone(), Vec::new()).await.expect("service starts");
    let port = service.local_addresses()[0].port();
    let transfer = dig(port, &["+tcp", "+onesoa", "+nocomments", "+nostats", "+nocmd", ZONE, "AXFR"]).await;
    for wanted in [
        "\tDNSKEY\t257 3 13 ",
        "\tDNSKEY\t256 3 13 ",
        "\tRRSIG\tA 13 ",
        "NSEC3\t1 0 0 - ",
        "NSEC3PARAM 1 0 0 -",
        "\tCDS\t",
        "\tCDNSKEY\t",
    ] {
        assert!(transfer.contains(wanted), "the transfer lacks {wanted:?}:\n{transfer}");
    }
    let file = directory.path().join("transferred.zone");
    std::fs::write(&file, &transfer).unwrap();
    let file = file.to_str().unwrap();
    let (ok, output) = run("dnssec-verify", &["-o", ZONE, file], "bind9-utils");
    assert!(ok, "dnssec-verify rejects the transferred zone:\n{output}");
    let (ok, output) = run("ldns-verify-zone", &["-V", "2", file], "ldnsutils");
    assert!(ok, "ldns-verify-zone rejects the transferred zone:\n{output}");

    // DS for the parent: one line per KSK, matching the KSK in the zone.
    let ds = lienthong_dns::dnssec::ds_for(&config, ZONE, unix_now()).unwrap();
    assert_eq!(ds.len(), 1, "{ds:?}");
    assert!(ds[0].starts_with("ninhthuan.gov.vn. 3600 IN DS ") && ds[0].contains(" 13 2 "), "{}", ds[0]);
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbound_with_the_printed_ds_validates_every_kind_of_answer() {
    let directory = tempfile::tempdir().unwrap();
    let config = Arc::new(signed_config(directory.path()));
    let service = DnsService::start(config.clone(), Vec::new()).await.expect("service starts");
    let port = service.local_addresses()[0].port();
    let ds = lienthong_dns::dnssec::ds_for(&config, ZONE, unix_now()).unwrap();
    let unbound = Unbound::start(directory.path(), port, &ds[0]);

    // Unsigned when the query does not ask (no DO): no RRSIG in the answer.
    let plain = dig(port, &["+norec", "www.ninhthuan.gov.vn", "A"]).await;
    assert!(!plain.contains("RRSIG"), "{plain}");
    let signed = dig(port, &["+norec", "+dnssec", "www.ninhthuan.gov.vn", "A"]).await;
    assert!(signed.contains("RRSIG\tA 13 4 300"), "{signed}");
    assert!(signed.contains("flags: do;"), "the DO bit is copied: {signed}");

    let cases = [
        ("www.ninhthuan.gov.vn", "A", "NOERROR", Some("10.20.0.10")),
        ("motcua.ninhthuan.gov.vn", "A", "NOERROR", Some("10.20.0.11")),
        ("ninhthuan.gov.vn", "MX", "NOERROR", Some("mail.ninhthuan.gov.vn.")),
        ("nope.ninhthuan.gov.vn", "A", "NXDOMAIN", None),
        ("x.y.nope.ninhthuan.gov.vn", "AAAA", "NXDOMAIN", None),
        ("www.ninhthuan.gov.vn", "MX", "NOERROR", None),
        ("b.ent.ninhthuan.gov.vn", "A", "NOERROR", None),
        ("anything.wild.ninhthuan.gov.vn", "A", "NOERROR", Some("10.20.0.99")),
        ("deep.er.wild.ninhthuan.gov.vn", "A", "NOERROR", Some("10.20.0.99")),
        ("anything.wild.ninhthuan.gov.vn", "TXT", "NOERROR", None),
        ("dangling.ninhthuan.gov.vn", "A", "NXDOMAIN", None),
        ("huyen.ninhthuan.gov.vn", "DS", "NOERROR", None),
        ("ninhthuan.gov.vn", "DNSKEY", "NOERROR", Some("DNSKEY")),
    ];
    for (name, record_type, status, answer) in cases {
        let output = dig(unbound.port, &["+dnssec", name, record_type]).await;
        assert!(output.contains(&format!("status: {status}")), "{name} {record_type}: {output}\n{}", unbound.log());
        assert!(
            output.contains(" ad;") || output.contains(" ad "),
            "{name} {record_type}: Unbound did not validate it (no AD):\n{output}\n{}",
            unbound.log()
        );
        if let Some(answer) = answer {
            assert!(output.contains(answer), "{name} {record_type}: {output}");
        }
    }
    service.shutdown().await;
}

/// A private validating Unbound: the zone is a stub pointing at lienthong, its DS the only
/// trust anchor. Killed by PID when dropped.
struct Unbound {
    port: u16,
    child: std::process::Child,
    directory: std::path::PathBuf,
}

impl Unbound {
    fn start(directory: &Path, server_port: u16, ds: &str) -> Unbound {
        let directory = directory.join("unbound");
        std::fs::create_dir_all(&directory).unwrap();
        let port = common::free_port();
        let conf = format!(
            "server:\n  interface: 127.0.0.1\n  port: {port}\n  do-ip6: no\n  username: \"\"\n  chroot: \"\"\n  directory: \"{dir}\"\n  pidfile: \"{dir}/unbound.pid\"\n  logfile: \"{dir}/unbound.log\"\n  use-syslog: no\n  do-daemonize: no\n  verbosity: 1\n  val-log-level: 2\n  access-control: 127.0.0.0/8 allow\n  do-not-query-localhost: no\n  module-config: \"validator iterator\"\n  trust-anchor: \"{ds}\"\n  harden-referral-path: no\nstub-zone:\n  name: \"{ZONE}\"\n  stub-addr: 127.0.0.1@{server_port}\nforward-zone:\n  name: \".\"\n  forward-addr: 127.0.0.1@9\nremote-control:\n  control-enable: no\n",
            dir = directory.display()
        );
        std::fs::write(directory.join("unbound.conf"), conf).unwrap();
        let child = Command::new("unbound")
            .args(["-d", "-c"])
            .arg(directory.join("unbound.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run unbound ({error}); install it: apt-get install unbound"));
        let unbound = Unbound { port, child, directory };
        let deadline = Instant::now() + Duration::from_secs(30);
        // Ready when it answers anything (a query for the root's SOA, answered SERVFAIL).
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        probe.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let query = [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 1];
        let mut buffer = [0u8; 512];
        loop {
            assert!(Instant::now() < deadline, "unbound did not start:\n{}", unbound.log());
            let _ = probe.send_to(&query, ("127.0.0.1", port));
            if probe.recv_from(&mut buffer).is_ok() {
                return unbound;
            }
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.directory.join("unbound.log")).unwrap_or_default()
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (serial, DNSKEY tags, tags signing the key sets, tags signing the rest).
type KeyState = (u32, Vec<u16>, Vec<u16>, Vec<u16>);

/// Key tags of the DNSKEY set, and of the RRSIGs (over the key sets, over the rest), of the
/// catalog's zone at one moment, with its serial.
fn key_state(catalog: &lienthong_dns::catalog::Catalog) -> KeyState {
    use hickory_proto::dnssec::rdata::DNSSECRData;
    use hickory_proto::rr::RData;
    let zone = &catalog.zones[0].zone;
    let mut published = Vec::new();
    let mut dnskey_signers = Vec::new();
    let mut zone_signers = Vec::new();
    for record in zone.all_records() {
        match &record.data {
            RData::DNSSEC(DNSSECRData::DNSKEY(key)) => published.push(key.calculate_key_tag().unwrap()),
            RData::DNSSEC(DNSSECRData::RRSIG(signature)) => {
                let input = signature.input();
                use hickory_proto::rr::RecordType;
                if matches!(input.type_covered, RecordType::DNSKEY | RecordType::CDS | RecordType::CDNSKEY) {
                    dnskey_signers.push(input.key_tag);
                } else {
                    zone_signers.push(input.key_tag);
                }
            }
            _ => {}
        }
    }
    for tags in [&mut published, &mut dnskey_signers, &mut zone_signers] {
        tags.sort_unstable();
        tags.dedup();
    }
    (zone.serial(), published, dnskey_signers, zone_signers)
}

/// 75 days on a virtual clock, in 6-hour steps, through two ZSK rollovers: a validator that
/// cached the DNSKEY set at the previous step can check every signature of this one, and a
/// signature it cached at the previous step still has its key in today's DNSKEY set. The
/// serial rises whenever the signatures change.
#[test]
fn zsk_rollover_keeps_validation_green_on_a_virtual_clock() {
    let directory = tempfile::tempdir().unwrap();
    let config = signed_config(directory.path());
    let mut serials = lienthong_dns::serial::Serials::in_memory();
    let start = 1_800_000_000u64;
    let mut previous: Option<KeyState> = None;
    let mut zsks_seen = std::collections::BTreeSet::new();
    let mut rollovers = 0;
    for step in 0..(75 * 4) {
        let now = start + step * 6 * 3600;
        let catalog = lienthong_dns::catalog::Catalog::build(&config, &[], &mut serials, now).unwrap();
        let state = key_state(&catalog);
        let (serial, published, dnskey_signers, zone_signers) = &state;
        assert_eq!(zone_signers.len(), 1, "one ZSK signs at a time (step {step}): {state:?}");
        assert_eq!(dnskey_signers.len(), 1, "the KSK signs the DNSKEY set (step {step})");
        for tag in dnskey_signers.iter().chain(zone_signers) {
            assert!(published.contains(tag), "step {step}: signer {tag} is not in the DNSKEY set {published:?}");
        }
        if let Some((old_serial, old_published, _, old_signers)) = &previous {
            for tag in zone_signers {
                assert!(old_published.contains(tag), "step {step}: ZSK {tag} signs before a cached DNSKEY set has it");
            }
            for tag in old_signers {
                assert!(published.contains(tag), "step {step}: ZSK {tag} left while its signatures may be cached");
            }
            assert!(serial >= old_serial, "step {step}: the serial went down");
            if old_signers != zone_signers {
                rollovers += 1;
                assert!(serial > old_serial, "step {step}: new signatures under the old serial");
            }
        }
        zsks_seen.extend(zone_signers.iter().copied());
        previous = Some(state);
    }
    assert_eq!(rollovers, 2, "a ZSK rollover every 30 days: {zsks_seen:?}");
    assert_eq!(zsks_seen.len(), 3);
}

/// The refresh: signatures made in one refresh period stay valid for more than a week, and
/// the next build in a new period makes new ones (with a new serial).
#[test]
fn signatures_are_refreshed_well_before_they_expire() {
    use hickory_proto::dnssec::rdata::DNSSECRData;
    use hickory_proto::rr::RData;
    let directory = tempfile::tempdir().unwrap();
    let config = signed_config(directory.path());
    let mut serials = lienthong_dns::serial::Serials::in_memory();
    let now = 1_800_000_000u64;
    let first = lienthong_dns::catalog::Catalog::build(&config, &[], &mut serials, now).unwrap();
    let zone = &first.zones[0].zone;
    let signed = zone.dnssec.as_ref().expect("the zone is signed");
    assert!(signed.refresh_at > now && signed.refresh_at <= now + 7 * 86_400, "{}", signed.refresh_at);
    assert!(signed.expiration >= signed.refresh_at + 7 * 86_400, "a week of validity left at the refresh");
    for record in zone.all_records() {
        if let RData::DNSSEC(DNSSECRData::RRSIG(signature)) = &record.data {
            let input = signature.input();
            assert!(u64::from(input.sig_inception.get()) <= now);
            assert_eq!(u64::from(input.sig_expiration.get()), signed.expiration);
        }
    }
    let same = lienthong_dns::catalog::Catalog::build(&config, &[], &mut serials, now + 60).unwrap();
    assert_eq!(same.zones[0].zone.serial(), zone.serial(), "same period, same keys: same serial");
    let later = lienthong_dns::catalog::Catalog::build(&config, &[], &mut serials, signed.refresh_at).unwrap();
    let refreshed = later.zones[0].zone.dnssec.as_ref().unwrap();
    assert!(refreshed.expiration > signed.expiration);
    assert!(later.zones[0].zone.serial() > zone.serial(), "refreshed signatures get a new serial");
}

/// The operator's KSK rollover: `roll-ksk` adds a KSK that signs the DNSKEY set next to the
/// old one, CDS names it and `dns ds` prints both DS; `--finish` leaves only the new one.
#[test]
fn ksk_rollover_on_command_double_signs_and_publishes_cds_for_the_new_key() {
    use hickory_proto::dnssec::rdata::DNSSECRData;
    use hickory_proto::rr::RData;
    let directory = tempfile::tempdir().unwrap();
    let config = signed_config(directory.path());
    let mut serials = lienthong_dns::serial::Serials::in_memory();
    let now = 1_800_000_000u64;
    let before = lienthong_dns::catalog::Catalog::build(&config, &[], &mut serials, now).unwrap();
    let (_, _, old_ksk, _) = key_state(&before);
    assert_eq!(lienthong_dns::dnssec::ds_for(&config, ZONE, now).unwrap().len(), 1);
    let step = lienthong_dns::dnssec::KskStep::Finish;
    assert!(lienthong_dns::dnssec::roll_ksk(&config.server.state_dir, ZONE, step, now).is_err(), "nothing to finish");

    let message = lienthong_dns::dnssec::roll_ksk(
        &config.server.state_dir,
        ZONE,
        lienthong_dns::dnssec::KskStep::Start,
        now + 10,
    )
    .unwrap();
    assert!(message.contains("--finish"), "{message}");
    let during = lienthong_dns::catalog::Catalog::build(&config, &[], &mut serials, now + 20).unwrap();
    let (serial, published, ksk_signers, _) = key_state(&during);
    assert!(serial > before.zones[0].zone.serial());
    assert_eq!(ksk_signers.len(), 2, "both KSKs sign the DNSKEY set");
    let new_ksk: Vec<u16> = ksk_signers.iter().copied().filter(|tag| !old_ksk.contains(tag)).collect();
    assert_eq!(new_ksk.len(), 1);
    assert!(published.contains(&new_ksk[0]));
    let cds: Vec<u16> = during.zones[0]
        .zone
        .all_records()
        .iter()
        .filter_map(|record| match &record.data {
            RData::DNSSEC(DNSSECRData::CDS(cds)) => Some(cds.key_tag()),
            _ => None,
        })
        .collect();
    assert_eq!(cds, new_ksk, "CDS names the new KSK");
    let ds = lienthong_dns::dnssec::ds_for(&config, ZONE, now + 20).unwrap();
    assert_eq!(ds.len(), 2, "{ds:?}");

    lienthong_dns::dnssec::roll_ksk(&config.server.state_dir, ZONE, step, now + 30).unwrap();
    let after = lienthong_dns::catalog::Catalog::build(&config, &[], &mut serials, now + 40).unwrap();
    let (_, _, ksk_signers, _) = key_state(&after);
    assert_eq!(ksk_signers, new_ksk, "only the new KSK is left");
    let ds = lienthong_dns::dnssec::ds_for(&config, ZONE, now + 40).unwrap();
    assert_eq!(ds.len(), 1);
    assert!(ds[0].contains(&format!(" DS {} 13 2 ", new_ksk[0])), "{ds:?}");
}

/// A forwarding lienthong with `validate = true` in front of the signing one: AD only for
/// validated answers (positive and NXDOMAIN) and only to clients that ask with DO or AD;
/// with a trust anchor that does not match the zone's key, the answers are bogus: SERVFAIL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarder_validates_and_sets_ad_only_for_validated_answers() {
    let directory = tempfile::tempdir().unwrap();
    let config = Arc::new(signed_config(directory.path()));
    let primary = DnsService::start(config.clone(), Vec::new()).await.expect("primary starts");
    let primary_port = primary.local_addresses()[0].port();
    let keys = lienthong_dns::dnssec::KeyRing::load(&config.server.state_dir, ZONE).unwrap();
    let ksk = keys.newest_ksk().unwrap();
    let good_anchor = format!("{ZONE}. 3600 IN DNSKEY {}", ksk.dnskey);
    let other_directory = tempfile::tempdir().unwrap();
    let mut other = lienthong_dns::dnssec::KeyRing::load(other_directory.path(), ZONE).unwrap();
    other.update(unix_now(), &lienthong_dns::dnssec::Timing::default(), 3600, 3600).unwrap();
    let wrong_anchor = format!("{ZONE}. 3600 IN DNSKEY {}", other.newest_ksk().unwrap().dnskey);

    let forwarder = |anchor: String, name: &str| {
        let state = directory.path().join(name);
        let text = format!(
            "[server]\nhostname = \"hub.ninhthuan.gov.vn\"\nstate_dir = \"{}\"\n\n[dns]\nlisten = [\"127.0.0.1:0\"]\nforwarders = [\"127.0.0.1:{primary_port}\"]\nrecursion_from = [\"127.0.0.1/32\"]\nvalidate = true\ntrust_anchors = [\"{anchor}\"]\n\n[mail]\nenabled = false\n\n[conference]\nenabled = false\n",
            state.display()
        );
        Arc::new(
            lienthong_config::parse(&text, "forwarder.toml", directory.path())
                .unwrap_or_else(|errors| panic!("{errors}")),
        )
    };
    let validating = DnsService::start(forwarder(good_anchor, "good"), Vec::new()).await.expect("forwarder starts");
    let port = validating.local_addresses()[0].port();
    let positive = dig(port, &["+dnssec", "www.ninhthuan.gov.vn", "A"]).await;
    assert!(positive.contains("status: NOERROR") && positive.contains(" ad;"), "{positive}");
    assert!(positive.contains("10.20.0.10"), "{positive}");
    let with_ad = dig(port, &["+adflag", "motcua.ninhthuan.gov.vn", "A"]).await;
    assert!(with_ad.contains(" ad;"), "AD asked with the AD bit: {with_ad}");
    let plain = dig(port, &["+noadflag", "hub.ninhthuan.gov.vn", "A"]).await;
    assert!(
        plain.contains("status: NOERROR") && !plain.contains(" ad;"),
        "no AD to a client that did not ask: {plain}"
    );
    let missing = dig(port, &["+dnssec", "nope.ninhthuan.gov.vn", "A"]).await;
    assert!(missing.contains("status: NXDOMAIN") && missing.contains(" ad;"), "{missing}");

    let fooled = DnsService::start(forwarder(wrong_anchor, "wrong"), Vec::new()).await.expect("forwarder starts");
    let bogus = dig(fooled.local_addresses()[0].port(), &["+dnssec", "www.ninhthuan.gov.vn", "A"]).await;
    assert!(bogus.contains("status: SERVFAIL"), "a key that does not match the anchor: {bogus}");
    fooled.shutdown().await;
    validating.shutdown().await;
    primary.shutdown().await;
}

/// DO answers for missing names come from precomputed parts (one hash per query); for
/// generated names under every kind of encloser they hold exactly the records of the general
/// signed resolution (RFC 5155 §7.2.2 proofs).
#[test]
fn precomputed_name_errors_match_the_general_signed_resolution() {
    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};
    let directory = tempfile::tempdir().unwrap();
    let config = signed_config(directory.path());
    let catalog = common::catalog(&config, &[]);
    let zone = catalog.zones[0].zone.clone();
    let parents = ["", "www.", "ent.", "b.ent.", "wild.", "huyen.", "_tcp.", "nope.", "x.y."];
    let mut checked = 0;
    for (number, parent) in parents.iter().cycle().take(300).enumerate() {
        let name = format!("n{}{}.{parent}{ZONE}.", number * 7919 % 10_007, if number % 3 == 0 { "-X" } else { "" });
        let mut message = Message::new(7, MessageType::Query, OpCode::Query);
        message.add_query(Query::query(Name::from_ascii(&name).unwrap(), RecordType::A));
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        edns.enable_dnssec();
        message.set_edns(edns);
        let answer = common::ask_packet(
            &catalog,
            &message.to_vec().unwrap(),
            "127.0.0.1",
            lienthong_dns::engine::Transport::Tcp,
        )
        .unwrap();
        let lower = Name::from_ascii(&name).unwrap().to_lowercase();
        let expected =
            lienthong_dns::dnssec::answer::resolve(std::slice::from_ref(&zone), &lower, RecordType::A).unwrap();
        assert_eq!(answer.metadata.response_code, expected.rcode.code(), "{name}");
        assert_eq!(common::lines(&answer.answers), common::lines(&expected.answers), "{name}");
        assert_eq!(common::lines(&answer.authorities), common::lines(&expected.authorities), "{name}");
        if answer.metadata.response_code == hickory_proto::op::ResponseCode::NXDomain {
            checked += 1;
        }
    }
    assert!(checked > 150, "most generated names do not exist: {checked}");
}
