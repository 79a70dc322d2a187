//! Any bytes as a DNS query, from an allowed and a foreign client, over UDP and TCP: the
//! engine must never panic, and every UDP answer must fit in 1232 bytes.
#![no_main]

use std::net::IpAddr;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use lienthong_dns::catalog::Catalog;
use lienthong_dns::engine::{self, Action, Transport};
use lienthong_dns::serial::Serials;

const CONFIG: &str = r#"
[server]
hostname = "hub.ninhthuan.gov.vn"
addresses = ["10.20.0.5", "2001:db8::5"]
state_dir = "/tmp/lienthong-fuzz"

[dns]
forwarders = ["127.0.0.1:9"]

[[dns.view]]
name = "inside"
clients = ["10.0.0.0/8"]

[[dns.zone]]
name = "ninhthuan.gov.vn"
records = [
  "www 300 IN A 10.20.0.10",
  "motcua IN CNAME www",
  "*.wild IN A 10.20.0.99",
  "huyen IN NS ns1.huyen",
  "ns1.huyen IN A 10.20.0.30",
  "big IN TXT \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\" \"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\"",
]
secondaries = ["127.0.0.1"]

[[dns.zone]]
name = "portal.gov.vn"
records = ["@ IN A 10.20.0.40"]
views = ["inside"]
"#;

static CATALOG: LazyLock<Catalog> = LazyLock::new(|| {
    let config =
        lienthong_config::parse(CONFIG, "fuzz.toml", std::path::Path::new("/tmp")).expect("the fuzz config is valid");
    Catalog::build(&config, &[], &mut Serials::in_memory(), 1_700_000_000).expect("the fuzz zones load")
});

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    for client in ["127.0.0.1", "10.1.2.3", "198.51.100.7"] {
        let client: IpAddr = client.parse().expect("literal");
        for transport in [Transport::Udp, Transport::Tcp] {
            let outcome = engine::handle(&CATALOG, data, client, transport, &mut out);
            if matches!(outcome.action, Action::Reply) && transport == Transport::Udp {
                assert!(out.len() <= 1232);
            }
        }
    }
});
