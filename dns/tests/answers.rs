//! Golden tests of answer semantics, through the sans-IO engine (no sockets).

mod common;

use common::{ask, ask_packet, catalog, config, lines, query};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use lienthong_dns::engine::Transport;

fn fixture() -> (tempfile::TempDir, lienthong_dns::catalog::Catalog) {
    let directory = tempfile::tempdir().unwrap();
    let config = config(directory.path(), "");
    let catalog = catalog(&config, &[]);
    (directory, catalog)
}

#[test]
fn positive_answer_is_authoritative_and_keeps_the_query_case() {
    let (_directory, catalog) = fixture();
    let answer = ask(&catalog, "WwW.NinhThuan.gov.vn.", RecordType::A);
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(answer.metadata.authoritative);
    assert!(!answer.metadata.recursion_available);
    assert_eq!(answer.queries[0].name().to_string(), "WwW.NinhThuan.gov.vn.");
    assert_eq!(
        lines(&answer.answers),
        ["WwW.NinhThuan.gov.vn. 300 IN A 10.20.0.10", "WwW.NinhThuan.gov.vn. 300 IN A 10.20.0.11"]
    );
}

#[test]
fn nodata_has_the_soa_with_the_negative_ttl() {
    let (_directory, catalog) = fixture();
    let answer = ask(&catalog, "www.ninhthuan.gov.vn.", RecordType::AAAA);
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(answer.metadata.authoritative && answer.answers.is_empty());
    assert_eq!(answer.authorities.len(), 1);
    assert_eq!(answer.authorities[0].record_type(), RecordType::SOA);
    assert_eq!(answer.authorities[0].ttl, 300);
}

#[test]
fn missing_name_is_nxdomain_with_the_soa() {
    let (_directory, catalog) = fixture();
    let answer = ask(&catalog, "Khong-Co.ninhthuan.gov.vn.", RecordType::A);
    assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);
    assert!(answer.metadata.authoritative && answer.answers.is_empty());
    assert_eq!(answer.authorities[0].record_type(), RecordType::SOA);
    assert_eq!(answer.authorities[0].name.to_string().to_lowercase(), "ninhthuan.gov.vn.");
    let deeper = ask(&catalog, "x.y.z.ninhthuan.gov.vn.", RecordType::MX);
    assert_eq!(deeper.metadata.response_code, ResponseCode::NXDomain);
}

#[test]
fn empty_non_terminal_is_nodata_not_nxdomain() {
    let (_directory, catalog) = fixture();
    let answer = ask(&catalog, "b.ent.ninhthuan.gov.vn.", RecordType::A);
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(answer.answers.is_empty());
}

#[test]
fn cname_chains_are_followed_inside_the_zone() {
    let (_directory, catalog) = fixture();
    let answer = ask(&catalog, "chain1.ninhthuan.gov.vn.", RecordType::A);
    assert_eq!(
        lines(&answer.answers),
        [
            "chain1.ninhthuan.gov.vn. 3600 IN CNAME chain2.ninhthuan.gov.vn.",
            "chain2.ninhthuan.gov.vn. 3600 IN CNAME www.ninhthuan.gov.vn.",
            "www.ninhthuan.gov.vn. 300 IN A 10.20.0.10",
            "www.ninhthuan.gov.vn. 300 IN A 10.20.0.11",
        ]
    );
    let cname_itself = ask(&catalog, "motcua.ninhthuan.gov.vn.", RecordType::CNAME);
    assert_eq!(lines(&cname_itself.answers), ["motcua.ninhthuan.gov.vn. 3600 IN CNAME www.ninhthuan.gov.vn."]);
    let dangling = ask(&catalog, "dangling.ninhthuan.gov.vn.", RecordType::A);
    assert_eq!(dangling.metadata.response_code, ResponseCode::NXDomain, "RFC 6604: rcode of the last name");
    assert_eq!(dangling.answers.len(), 1);
    let outside = ask(&catalog, "outside.ninhthuan.gov.vn.", RecordType::A);
    assert_eq!(outside.metadata.response_code, ResponseCode::NoError);
    assert_eq!(lines(&outside.answers), ["outside.ninhthuan.gov.vn. 3600 IN CNAME portal.example.com."]);
}

#[test]
fn wildcards_synthesize_with_the_query_name() {
    let (_directory, catalog) = fixture();
    let answer = ask(&catalog, "Phong-A.wild.ninhthuan.gov.vn.", RecordType::A);
    assert!(answer.metadata.authoritative);
    assert_eq!(lines(&answer.answers), ["Phong-A.wild.ninhthuan.gov.vn. 3600 IN A 10.20.0.99"]);
    let nodata = ask(&catalog, "x.wild.ninhthuan.gov.vn.", RecordType::MX);
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
    let none = ask(&catalog, "x.notwild.ninhthuan.gov.vn.", RecordType::A);
    assert_eq!(none.metadata.response_code, ResponseCode::NXDomain);
}

#[test]
fn delegations_refer_with_glue() {
    let (_directory, catalog) = fixture();
    for name in ["huyen.ninhthuan.gov.vn.", "www.huyen.ninhthuan.gov.vn.", "ns1.huyen.ninhthuan.gov.vn."] {
        let answer = ask(&catalog, name, RecordType::A);
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError, "{name}");
        assert!(!answer.metadata.authoritative, "{name}: a referral is not authoritative");
        assert!(answer.answers.is_empty(), "{name}");
        assert_eq!(lines(&answer.authorities), ["huyen.ninhthuan.gov.vn. 3600 IN NS ns1.huyen.ninhthuan.gov.vn."]);
        assert_eq!(lines(&answer.additionals), ["ns1.huyen.ninhthuan.gov.vn. 3600 IN A 10.20.0.30"]);
    }
}

#[test]
fn edns_is_echoed_and_its_payload_decides_truncation() {
    let (_directory, catalog) = fixture();
    let plain =
        ask_packet(&catalog, &query("big.ninhthuan.gov.vn.", RecordType::TXT, None), "127.0.0.1", Transport::Udp)
            .unwrap();
    assert!(plain.metadata.truncation && plain.answers.is_empty() && plain.edns.is_none());
    let edns =
        ask_packet(&catalog, &query("big.ninhthuan.gov.vn.", RecordType::TXT, Some(4096)), "127.0.0.1", Transport::Udp)
            .unwrap();
    assert!(!edns.metadata.truncation);
    assert_eq!(edns.answers.len(), 1);
    assert_eq!(edns.edns.as_ref().map(|edns| edns.max_payload()), Some(1232));
    let tcp = ask_packet(&catalog, &query("big.ninhthuan.gov.vn.", RecordType::TXT, None), "127.0.0.1", Transport::Tcp)
        .unwrap();
    assert!(!tcp.metadata.truncation && tcp.answers.len() == 1);
}

#[test]
fn foreign_names_are_refused_without_forwarders_or_permission() {
    let (_directory, catalog) = fixture();
    for client in ["127.0.0.1", "127.0.0.2", "10.9.9.9"] {
        let answer = ask_packet(&catalog, &query("example.com.", RecordType::A, None), client, Transport::Udp).unwrap();
        assert_eq!(answer.metadata.response_code, ResponseCode::Refused, "{client}");
        assert!(!answer.metadata.authoritative);
    }
}

#[test]
fn derived_records_are_served() {
    let (_directory, catalog) = fixture();
    let mx = ask(&catalog, "ninhthuan.gov.vn.", RecordType::MX);
    assert_eq!(lines(&mx.answers), ["ninhthuan.gov.vn. 3600 IN MX 10 mail.ninhthuan.gov.vn."]);
    let mail = ask(&catalog, "mail.ninhthuan.gov.vn.", RecordType::AAAA);
    assert_eq!(lines(&mail.answers), ["mail.ninhthuan.gov.vn. 3600 IN AAAA 2001:db8::5"]);
    let spf = ask(&catalog, "ninhthuan.gov.vn.", RecordType::TXT);
    assert_eq!(lines(&spf.answers), ["ninhthuan.gov.vn. 3600 IN TXT v=spf1 a:mail.ninhthuan.gov.vn -all"]);
    let dmarc = ask(&catalog, "_dmarc.ninhthuan.gov.vn.", RecordType::TXT);
    assert_eq!(dmarc.answers.len(), 1);
    let submission = ask(&catalog, "_submission._tcp.ninhthuan.gov.vn.", RecordType::SRV);
    assert_eq!(
        lines(&submission.answers),
        ["_submission._tcp.ninhthuan.gov.vn. 3600 IN SRV 0 1 2587 mail.ninhthuan.gov.vn."]
    );
    let submissions = ask(&catalog, "_submissions._tcp.ninhthuan.gov.vn.", RecordType::SRV);
    assert_eq!(submissions.answers.len(), 1);
    // The operator's own hub A (same address) wins over the derived one: one record, TTL 3600
    // from $TTL; the derived AAAA for hub is still there since the operator wrote none.
    let hub = ask(&catalog, "hub.ninhthuan.gov.vn.", RecordType::A);
    assert_eq!(lines(&hub.answers), ["hub.ninhthuan.gov.vn. 3600 IN A 10.20.0.5"]);
    let ns = ask(&catalog, "ninhthuan.gov.vn.", RecordType::NS);
    assert_eq!(lines(&ns.answers), ["ninhthuan.gov.vn. 3600 IN NS hub.ninhthuan.gov.vn."]);
}

#[test]
fn published_records_are_served_inside_local_zones_and_the_operator_wins() {
    let directory = tempfile::tempdir().unwrap();
    let config = config(directory.path(), "");
    let published = vec![
        "default._domainkey.ninhthuan.gov.vn. 3600 IN TXT \"v=DKIM1; k=rsa; p=MIIB\"".to_owned(),
        "default._domainkey.example.com. 3600 IN TXT \"v=DKIM1; p=x\"".to_owned(),
        "www.ninhthuan.gov.vn. 60 IN A 192.0.2.1".to_owned(),
    ];
    let catalog = catalog(&config, &published);
    let dkim = ask(&catalog, "default._domainkey.ninhthuan.gov.vn.", RecordType::TXT);
    assert_eq!(lines(&dkim.answers), ["default._domainkey.ninhthuan.gov.vn. 3600 IN TXT v=DKIM1; k=rsa; p=MIIB"]);
    let www = ask(&catalog, "www.ninhthuan.gov.vn.", RecordType::A);
    assert_eq!(www.answers.len(), 2, "the operator's www A set wins over a published one");
}

#[test]
fn views_split_the_horizon() {
    let directory = tempfile::tempdir().unwrap();
    let inside = "[[dns.view]]\nname = \"inside\"\nclients = [\"10.0.0.0/8\"]\n\n[[dns.zone]]\nname = \"portal.gov.vn\"\nrecords = [\"@ 60 IN A 10.20.0.40\"]\nviews = [\"inside\"]\n\n[[dns.zone]]\nname = \"portal.gov.vn\"\nrecords = [\"@ 60 IN A 203.0.113.40\"]\n";
    let config = config(directory.path(), inside);
    let catalog = catalog(&config, &[]);
    let packet = query("portal.gov.vn.", RecordType::A, None);
    let from_inside = ask_packet(&catalog, &packet, "10.20.3.4", Transport::Udp).unwrap();
    assert_eq!(lines(&from_inside.answers), ["portal.gov.vn. 60 IN A 10.20.0.40"]);
    let from_outside = ask_packet(&catalog, &packet, "198.51.100.7", Transport::Udp).unwrap();
    assert_eq!(lines(&from_outside.answers), ["portal.gov.vn. 60 IN A 203.0.113.40"]);
    // Zones without views are seen from every view.
    let www =
        ask_packet(&catalog, &query("www.ninhthuan.gov.vn.", RecordType::A, None), "10.1.1.1", Transport::Udp).unwrap();
    assert_eq!(www.answers.len(), 2);
}

#[test]
fn malformed_packets_get_formerr_or_nothing() {
    let (_directory, catalog) = fixture();
    assert!(ask_packet(&catalog, &[1, 2, 3], "127.0.0.1", Transport::Udp).is_none(), "shorter than a header");
    let mut response = query("www.ninhthuan.gov.vn.", RecordType::A, None);
    response[2] |= 0x80;
    assert!(ask_packet(&catalog, &response, "127.0.0.1", Transport::Udp).is_none(), "a response is never answered");
    let mut cut = query("www.ninhthuan.gov.vn.", RecordType::A, None);
    cut.truncate(20);
    let answer = ask_packet(&catalog, &cut, "127.0.0.1", Transport::Udp).unwrap();
    assert_eq!(answer.metadata.response_code, ResponseCode::FormErr);
    let mut two_questions = query("www.ninhthuan.gov.vn.", RecordType::A, None);
    two_questions[5] = 2;
    let answer = ask_packet(&catalog, &two_questions, "127.0.0.1", Transport::Udp).unwrap();
    assert_eq!(answer.metadata.response_code, ResponseCode::FormErr);
}

#[test]
fn badvers_for_edns_version_one_and_refused_for_chaos() {
    let (_directory, catalog) = fixture();
    let mut packet = query("www.ninhthuan.gov.vn.", RecordType::A, Some(1232));
    let length = packet.len();
    packet[length - 5] = 1; // OPT TTL: extended rcode, VERSION, flags
    let answer = ask_packet(&catalog, &packet, "127.0.0.1", Transport::Udp).unwrap();
    assert_eq!(u16::from(answer.metadata.response_code), 16, "BADVERS");
    let mut chaos = query("version.bind.", RecordType::TXT, None);
    let length = chaos.len();
    chaos[length - 1] = 3;
    let answer = ask_packet(&catalog, &chaos, "127.0.0.1", Transport::Udp).unwrap();
    assert_eq!(answer.metadata.response_code, ResponseCode::Refused);
}

#[test]
fn other_record_types_are_served() {
    let (_directory, catalog) = fixture();
    assert_eq!(ask(&catalog, "_sip._tcp.ninhthuan.gov.vn.", RecordType::SRV).answers.len(), 1);
    assert_eq!(ask(&catalog, "ptr.ninhthuan.gov.vn.", RecordType::PTR).answers.len(), 1);
    assert_eq!(ask(&catalog, "caa.ninhthuan.gov.vn.", RecordType::CAA).answers.len(), 1);
    let soa = ask(&catalog, "ninhthuan.gov.vn.", RecordType::SOA);
    assert_eq!(soa.answers.len(), 1);
    let any = ask(&catalog, "www.ninhthuan.gov.vn.", RecordType::ANY);
    assert_eq!(any.answers.len(), 2);
}

#[test]
fn a_changed_zone_gets_a_higher_serial_and_an_unchanged_one_keeps_it() {
    let directory = tempfile::tempdir().unwrap();
    let config = config(directory.path(), "");
    let mut serials = lienthong_dns::serial::Serials::in_memory();
    let serial = |catalog: &lienthong_dns::catalog::Catalog| catalog.zones[0].zone.serial();
    let first = lienthong_dns::catalog::Catalog::build(&config, &[], &mut serials, 1_700_000_000).unwrap();
    let same = lienthong_dns::catalog::Catalog::build(&config, &[], &mut serials, 1_700_000_100).unwrap();
    assert_eq!(serial(&first), 2024010101);
    assert_eq!(serial(&same), serial(&first));
    let published = vec!["new.ninhthuan.gov.vn. 60 IN A 10.20.0.77".to_owned()];
    let changed = lienthong_dns::catalog::Catalog::build(&config, &published, &mut serials, 1_700_000_200).unwrap();
    assert!(serial(&changed) > serial(&first));
}

#[test]
fn check_reports_zone_file_and_inline_errors_with_positions() {
    let directory = tempfile::tempdir().unwrap();
    common::write_zone(directory.path());
    std::fs::write(directory.path().join("ninhthuan.zone"), "@ SOA hub hostmaster 1 2 3 4 5\nbad IN A 10.0.0.256\n")
        .unwrap();
    let text =
        common::config_text(directory.path(), "").replace("\"extra 300 IN A 10.20.0.13\"", "\"extra 300 IN MX mail\"");
    let config = lienthong_config::parse(&text, "test.toml", directory.path()).unwrap();
    let problems = lienthong_dns::check(&config);
    let zone_file = directory.path().join("ninhthuan.zone");
    assert_eq!(
        problems,
        [
            format!("{}:2:10: dns.zone[0].file: `10.0.0.256` is not an IPv4 address", zone_file.display()),
            "test.toml:14:12: dns.zone[0].records[0]: MX needs a preference and a mail server name (at column 17 of the record)"
                .to_owned(),
        ]
    );
}

#[test]
fn dns_records_lists_every_served_record_with_the_derived_ones() {
    let directory = tempfile::tempdir().unwrap();
    let config = config(directory.path(), "");
    let published = vec!["default._domainkey.ninhthuan.gov.vn. 3600 IN TXT \"v=DKIM1; p=MIIB\"".to_owned()];
    let text = lienthong_dns::render_records(&config, &published).unwrap();
    assert!(text.starts_with("; zone ninhthuan.gov.vn. (seen by every client)\nninhthuan.gov.vn. 3600 IN SOA hub.ninhthuan.gov.vn. hostmaster.ninhthuan.gov.vn. 2024010101 7200 3600 1209600 300\n"), "{text}");
    for line in [
        "ninhthuan.gov.vn. 3600 IN MX 10 mail.ninhthuan.gov.vn.",
        "mail.ninhthuan.gov.vn. 3600 IN A 10.20.0.5",
        "_dmarc.ninhthuan.gov.vn. 3600 IN TXT \"v=DMARC1; p=quarantine; adkim=r; aspf=r\"",
        "default._domainkey.ninhthuan.gov.vn. 3600 IN TXT \"v=DKIM1; p=MIIB\"",
        "www.ninhthuan.gov.vn. 300 IN A 10.20.0.10",
    ] {
        assert!(text.contains(&format!("{line}\n")), "missing {line:?} in:\n{text}");
    }
    // The listing is itself a valid zone file (comments and all).
    let root = hickory_proto::rr::Name::root();
    let parsed = lienthong_dns::zonefile::parse(&text, &root, &root, 3600).expect("the listing parses back");
    assert_eq!(parsed.len(), text.lines().filter(|line| !line.is_empty() && !line.starts_with(';')).count());
}

#[test]
fn check_refuses_a_cname_beside_other_data_and_a_second_soa() {
    let directory = tempfile::tempdir().unwrap();
    common::write_zone(directory.path());
    let text = common::config_text(directory.path(), "")
        .replace("\"extra 300 IN A 10.20.0.13\"", "\"www IN CNAME hub\", \"@ IN SOA hub hostmaster 1 2 3 4 5\"");
    let config = lienthong_config::parse(&text, "test.toml", directory.path()).unwrap();
    let problems = lienthong_dns::check(&config);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(problems[0].ends_with("dns.zone[0]: the zone has 2 SOA records (expected at most one)"), "{problems:#?}");
    assert!(
        problems[1]
            .ends_with("dns.zone[0]: `www.ninhthuan.gov.vn.` has a CNAME and other records (a CNAME must stand alone)"),
        "{problems:#?}"
    );
}

#[test]
fn the_do_bit_is_copied_into_the_answer() {
    let (_directory, catalog) = fixture();
    let mut packet = query("www.ninhthuan.gov.vn.", RecordType::A, Some(1232));
    let opt = packet.len() - 11;
    packet[opt + 7] |= 0x80;
    for name_packet in [packet.clone(), {
        let mut missing = query("nope.ninhthuan.gov.vn.", RecordType::A, Some(1232));
        let opt = missing.len() - 11;
        missing[opt + 7] |= 0x80;
        missing
    }] {
        let answer = ask_packet(&catalog, &name_packet, "127.0.0.1", Transport::Udp).unwrap();
        assert!(answer.edns.as_ref().unwrap().flags().dnssec_ok, "RFC 3225: DO copied");
    }
    let plain =
        ask_packet(&catalog, &query("www.ninhthuan.gov.vn.", RecordType::A, Some(1232)), "127.0.0.1", Transport::Udp)
            .unwrap();
    assert!(!plain.edns.as_ref().unwrap().flags().dnssec_ok);
}

#[test]
fn a_cname_to_a_wildcard_name_is_followed_on_every_path() {
    let directory = tempfile::tempdir().unwrap();
    common::write_zone(directory.path());
    let text = common::config_text(directory.path(), "").replace(
        "records = [\"extra 300 IN A 10.20.0.13\"",
        "records = [\"towild IN CNAME x.wild\", \"extra 300 IN A 10.20.0.13\"",
    );
    assert!(text.contains("towild"));
    let config = lienthong_config::parse(&text, "test.toml", directory.path()).unwrap();
    let catalog = catalog(&config, &[]);
    for record_type in [RecordType::A, RecordType::AAAA, RecordType::MX] {
        let answer = ask(&catalog, "towild.ninhthuan.gov.vn.", record_type);
        let first = &answer.answers[0];
        assert_eq!(first.to_string(), "towild.ninhthuan.gov.vn. 3600 IN CNAME x.wild.ninhthuan.gov.vn.");
        if record_type == RecordType::A {
            assert_eq!(lines(&answer.answers[1..]), ["x.wild.ninhthuan.gov.vn. 3600 IN A 10.20.0.99"]);
        } else {
            assert_eq!(answer.answers.len(), 1, "{record_type}: the wildcard has no such data");
            assert_eq!(answer.authorities[0].record_type(), RecordType::SOA);
        }
    }
}
