//! Split horizon as the README's production config sets it up: every view's copy of a zone
//! gets the derived records, each with the appliance addresses its clients reach, and
//! `lienthong check` warns when a private address would reach clients outside.

mod common;

use std::path::Path;

use common::{ask_packet, catalog, lines, query};
use hickory_proto::rr::RecordType;
use lienthong_dns::engine::Transport;

const INSIDE_ZONE: &str = "$ORIGIN ninhthuan.gov.vn.\n$TTL 3600\nportal IN A 10.20.0.40\nmail IN A 10.20.0.25\n";
const OUTSIDE_ZONE: &str = "$ORIGIN ninhthuan.gov.vn.\n$TTL 3600\nportal IN A 203.0.113.40\n";

/// The README's production layout: `inside` sees 10.20.0.5, everyone else the public
/// address; mail and conferences on, so MX, SPF, DMARC, SRV and three hostnames are derived.
fn production(directory: &Path, public: &str, outside_zone: &str, extra_views: &str) -> lienthong_config::Config {
    std::fs::write(directory.join("inside.zone"), INSIDE_ZONE).unwrap();
    std::fs::write(directory.join("outside.zone"), outside_zone).unwrap();
    let text = format!(
        r#"[server]
hostname = "hub.ninhthuan.gov.vn"
addresses = ["10.20.0.5"]
state_dir = "{state}"

[dns]
listen = ["127.0.0.1:0"]
{public}

[[dns.view]]
name = "inside"
clients = ["10.0.0.0/8"]
{extra_views}
[[dns.zone]]
name = "ninhthuan.gov.vn"
file = "inside.zone"
views = ["inside"]

[[dns.zone]]
name = "ninhthuan.gov.vn"
file = "outside.zone"

[mail]
hostname = "mail.ninhthuan.gov.vn"
submission_listen = "127.0.0.1:2587"

[[mail.domain]]
name = "ninhthuan.gov.vn"
deliver_to = "10.20.0.20:25"

[conference]
hostname = "hop.ninhthuan.gov.vn"
"#,
        state = directory.join("state").display(),
    );
    lienthong_config::parse(&text, "lienthong.toml", directory).unwrap_or_else(|errors| panic!("{errors}"))
}

fn answer(catalog: &lienthong_dns::catalog::Catalog, client: &str, name: &str, record_type: RecordType) -> Vec<String> {
    let message = ask_packet(catalog, &query(name, record_type, None), client, Transport::Udp).unwrap();
    lines(&message.answers)
}

#[test]
fn every_view_gets_the_derived_records_with_its_own_addresses() {
    let directory = tempfile::tempdir().unwrap();
    let config = production(directory.path(), "addresses = [\"203.0.113.5\"]", OUTSIDE_ZONE, "");
    let catalog = catalog(&config, &[]);
    for (client, address) in [("10.9.8.7", "10.20.0.5"), ("198.51.100.7", "203.0.113.5")] {
        let zone = "ninhthuan.gov.vn.";
        assert_eq!(
            answer(&catalog, client, zone, RecordType::MX),
            ["ninhthuan.gov.vn. 3600 IN MX 10 mail.ninhthuan.gov.vn."],
            "{client}"
        );
        assert_eq!(
            answer(&catalog, client, zone, RecordType::TXT),
            ["ninhthuan.gov.vn. 3600 IN TXT v=spf1 a:mail.ninhthuan.gov.vn -all"],
            "{client}"
        );
        assert_eq!(answer(&catalog, client, "_dmarc.ninhthuan.gov.vn.", RecordType::TXT).len(), 1, "{client}");
        assert_eq!(
            answer(&catalog, client, "_submission._tcp.ninhthuan.gov.vn.", RecordType::SRV),
            ["_submission._tcp.ninhthuan.gov.vn. 3600 IN SRV 0 1 2587 mail.ninhthuan.gov.vn."],
            "{client}"
        );
        for host in ["hub.ninhthuan.gov.vn.", "hop.ninhthuan.gov.vn."] {
            assert_eq!(
                answer(&catalog, client, host, RecordType::A),
                [format!("{host} 3600 IN A {address}")],
                "{client}"
            );
        }
    }
    // The operator's own record wins in the copy that has it, and only there.
    assert_eq!(
        answer(&catalog, "10.9.8.7", "mail.ninhthuan.gov.vn.", RecordType::A),
        ["mail.ninhthuan.gov.vn. 3600 IN A 10.20.0.25"]
    );
    assert_eq!(
        answer(&catalog, "198.51.100.7", "mail.ninhthuan.gov.vn.", RecordType::A),
        ["mail.ninhthuan.gov.vn. 3600 IN A 203.0.113.5"]
    );
    assert_eq!(
        answer(&catalog, "198.51.100.7", "portal.ninhthuan.gov.vn.", RecordType::A),
        ["portal.ninhthuan.gov.vn. 3600 IN A 203.0.113.40"]
    );
    let rendered = lienthong_dns::render_records(&config, &[]).unwrap();
    assert!(rendered.contains("; zone ninhthuan.gov.vn. (seen by views inside)\n"), "{rendered}");
    assert!(rendered.contains("; zone ninhthuan.gov.vn. (seen by clients in no view)\n"), "{rendered}");
    assert!(lienthong_dns::warnings(&config).is_empty(), "{:?}", lienthong_dns::warnings(&config));
}

#[test]
fn a_view_without_its_own_copy_sees_the_shared_copy_with_its_addresses() {
    let directory = tempfile::tempdir().unwrap();
    let dmz = "\n[[dns.view]]\nname = \"dmz\"\nclients = [\"172.20.0.0/16\"]\naddresses = [\"172.20.0.5\"]\n";
    let config = production(directory.path(), "addresses = [\"203.0.113.5\"]", OUTSIDE_ZONE, dmz);
    let catalog = catalog(&config, &[]);
    assert_eq!(
        answer(&catalog, "172.20.1.1", "hub.ninhthuan.gov.vn.", RecordType::A),
        ["hub.ninhthuan.gov.vn. 3600 IN A 172.20.0.5"]
    );
    assert_eq!(
        answer(&catalog, "172.20.1.1", "portal.ninhthuan.gov.vn.", RecordType::A),
        ["portal.ninhthuan.gov.vn. 3600 IN A 203.0.113.40"]
    );
    assert_eq!(
        answer(&catalog, "198.51.100.7", "hub.ninhthuan.gov.vn.", RecordType::A),
        ["hub.ninhthuan.gov.vn. 3600 IN A 203.0.113.5"]
    );
    assert_eq!(
        answer(&catalog, "10.1.1.1", "hub.ninhthuan.gov.vn.", RecordType::A),
        ["hub.ninhthuan.gov.vn. 3600 IN A 10.20.0.5"]
    );
}

#[test]
fn check_warns_where_a_private_address_would_reach_the_outside() {
    let directory = tempfile::tempdir().unwrap();
    // No public address given: the outside copy would carry server.addresses (10.20.0.5),
    // and the outside zone file itself has a private record on line 4.
    let leaky = format!("{OUTSIDE_ZONE}intranet IN A 192.168.1.10\n");
    let config = production(directory.path(), "", &leaky, "");
    let warnings = lienthong_dns::warnings(&config);
    let file = directory.path().join("outside.zone");
    let expected_file = format!("{}:4:15: dns.zone[1].file: warning: zone `ninhthuan.gov.vn`", file.display());
    assert!(warnings.iter().any(|warning| warning.starts_with(&expected_file)), "{warnings:#?}");
    assert!(
        warnings.iter().any(|warning| warning.starts_with("lienthong.toml:3:14: server.addresses[0]: warning:")
            && warning.contains("10.20.0.5")
            && warning.contains("`hub.ninhthuan.gov.vn.`")),
        "{warnings:#?}"
    );
    assert!(
        warnings.iter().all(|warning| !warning.contains("10.20.0.25")),
        "the inside copy is private: {warnings:#?}"
    );
    assert!(warnings.iter().all(|warning| !warning.contains("dns.zone[0]")), "{warnings:#?}");
}

#[test]
fn the_readme_production_config_publishes_no_private_address_outside() {
    let readme = include_str!("../../README.md");
    let start = readme.find("## A production config, step by step").unwrap();
    let block = &readme[start..];
    let block = &block[block.find("```toml\n").unwrap() + 8..];
    let block = &block[..block.find("```").unwrap()];
    let directory = tempfile::tempdir().unwrap();
    std::fs::create_dir(directory.path().join("zones")).unwrap();
    std::fs::write(directory.path().join("zones/ninhthuan.gov.vn.inside.zone"), "").unwrap();
    std::fs::write(directory.path().join("zones/ninhthuan.gov.vn.zone"), "").unwrap();
    // Only what this test cannot reproduce is changed: certificate files and the state path.
    let text: String = block
        .lines()
        .filter(|line| !line.starts_with("tls_cert") && !line.starts_with("tls_key") && !line.starts_with("ca_file"))
        .map(|line| line.replace("/var/lib/lienthong", &directory.path().join("state").display().to_string()))
        .map(|line| {
            line.replace(
                "$argon2id$v=19$m=19456,t=2,p=1$...",
                "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$Wv1l7vb5Cd4/mgIZv3AGc3rwFb6X0p6O4Hs1cbVqDM0",
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    let config =
        lienthong_config::parse(&text, "lienthong.toml", directory.path()).unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(lienthong_dns::warnings(&config), Vec::<String>::new());
    let catalog = catalog(&config, &[]);
    for host in ["hub.ninhthuan.gov.vn.", "mail.ninhthuan.gov.vn.", "hop.ninhthuan.gov.vn."] {
        assert_eq!(answer(&catalog, "198.51.100.7", host, RecordType::A), [format!("{host} 3600 IN A 203.0.113.5")]);
        assert_eq!(answer(&catalog, "10.1.2.3", host, RecordType::A), [format!("{host} 3600 IN A 10.20.0.5")]);
    }
    assert_eq!(answer(&catalog, "10.1.2.3", "ninhthuan.gov.vn.", RecordType::MX).len(), 1);
}
