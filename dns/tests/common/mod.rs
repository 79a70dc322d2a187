//! Shared fixtures: the province's test zone, a config around it, query helpers.
#![allow(dead_code)]

use std::net::IpAddr;
use std::path::Path;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use lienthong_config::Config;
use lienthong_dns::catalog::Catalog;
use lienthong_dns::engine::{self, Action, Transport};
use lienthong_dns::serial::Serials;

pub const ZONE_FILE: &str = r#"$ORIGIN ninhthuan.gov.vn.
$TTL 3600
@       IN SOA hub hostmaster (
            2024010101 ; serial
            7200 3600 1209600 300 )
@       IN NS   hub
hub     IN A    10.20.0.5
www     300 IN A 10.20.0.10
www     300 IN A 10.20.0.11
motcua  IN CNAME www
chain1  IN CNAME chain2
chain2  IN CNAME www
dangling IN CNAME nowhere
outside IN CNAME portal.example.com.
*.wild  IN A    10.20.0.99
a.b.ent IN A    10.20.0.12
huyen   IN NS   ns1.huyen
ns1.huyen IN A  10.20.0.30
_sip._tcp IN SRV 0 1 5060 hub
ptr     IN PTR  hub
caa     IN CAA  0 issue "letsencrypt.org"
"#;

/// A config serving ZONE_FILE (written into `directory`) plus derived records.
pub fn config_text(directory: &Path, extra_dns: &str) -> String {
    format!(
        r#"[server]
hostname = "hub.ninhthuan.gov.vn"
addresses = ["10.20.0.5", "2001:db8::5"]
state_dir = "{state}"

[dns]
listen = ["127.0.0.1:0"]
recursion_from = ["127.0.0.1/32"]
{extra_dns}

[[dns.zone]]
name = "ninhthuan.gov.vn"
file = "ninhthuan.zone"
records = ["extra 300 IN A 10.20.0.13", 'big 60 IN TXT {big}']

[mail]
enabled = true
hostname = "mail.ninhthuan.gov.vn"
submission_listen = "127.0.0.1:2587"
submissions_listen = "127.0.0.1:2465"

[[mail.domain]]
name = "ninhthuan.gov.vn"
deliver_to = "10.20.0.20:25"

[conference]
enabled = false
"#,
        state = directory.join("state").display(),
        big = (0..5).map(|index| format!("\"{}\"", char::from(b'a' + index).to_string().repeat(200))).collect::<Vec<_>>().join(" "),
    )
}

pub fn write_zone(directory: &Path) {
    std::fs::write(directory.join("ninhthuan.zone"), ZONE_FILE).unwrap();
}

pub fn config(directory: &Path, extra_dns: &str) -> Config {
    write_zone(directory);
    let text = config_text(directory, extra_dns);
    lienthong_config::parse(&text, "test.toml", directory).unwrap_or_else(|errors| panic!("{errors}"))
}

pub fn catalog(config: &Config, published: &[String]) -> Catalog {
    Catalog::build(config, published, &mut Serials::in_memory(), 1_700_000_000).unwrap_or_else(|errors| panic!("{errors:?}"))
}

pub fn query(name: &str, record_type: RecordType, edns_payload: Option<u16>) -> Vec<u8> {
    let mut message = Message::new(0x1234, MessageType::Query, OpCode::Query);
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), record_type));
    if let Some(payload) = edns_payload {
        let mut edns = Edns::new();
        edns.set_max_payload(payload);
        message.set_edns(edns);
    }
    message.to_vec().unwrap()
}

/// Sends `packet` through the engine; returns the decoded answer.
pub fn ask_packet(catalog: &Catalog, packet: &[u8], client: &str, transport: Transport) -> Option<Message> {
    let mut out = Vec::new();
    let client: IpAddr = client.parse().unwrap();
    let outcome = engine::handle(catalog, packet, client, transport, &mut out);
    match outcome.action {
        Action::Reply => Some(Message::from_vec(&out).expect("the answer decodes")),
        Action::Drop => None,
        other => panic!("unexpected action {other:?}"),
    }
}

pub fn ask(catalog: &Catalog, name: &str, record_type: RecordType) -> Message {
    ask_packet(catalog, &query(name, record_type, None), "127.0.0.1", Transport::Udp).unwrap()
}

/// Records of a section as `name ttl class type data` lines, sorted.
pub fn lines(records: &[hickory_proto::rr::Record]) -> Vec<String> {
    let mut lines: Vec<String> = records.iter().map(ToString::to_string).collect();
    lines.sort();
    lines
}
