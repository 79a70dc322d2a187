//! The query path under hostile input: a deterministic mutation run (bounded, so it runs in
//! every `cargo test`), and a check that the precomputed fast path and the general path agree.

mod common;

use std::net::IpAddr;

use hickory_proto::op::Message;
use hickory_proto::rr::{Name, RecordType};
use lienthong_dns::engine::{self, Action, Transport};

/// xorshift64*: deterministic, no dependency, good enough to shake bytes.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound.max(1) as u64) as usize
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for name in [
        "www.ninhthuan.gov.vn.",
        "nope.ninhthuan.gov.vn.",
        "a.wild.ninhthuan.gov.vn.",
        "www.huyen.ninhthuan.gov.vn.",
        "example.com.",
    ] {
        for record_type in [RecordType::A, RecordType::TXT, RecordType::ANY, RecordType::AXFR, RecordType::CNAME] {
            seeds.push(common::query(name, record_type, None));
            seeds.push(common::query(name, record_type, Some(4096)));
        }
    }
    // An IXFR with the client's SOA in the authority section, and a CHAOS question.
    let apex = hickory_proto::rr::Name::from_ascii("ninhthuan.gov.vn.").unwrap();
    let mut ixfr =
        hickory_proto::op::Message::new(7, hickory_proto::op::MessageType::Query, hickory_proto::op::OpCode::Query);
    ixfr.add_query(hickory_proto::op::Query::query(apex.clone(), RecordType::IXFR));
    let soa = hickory_proto::rr::rdata::SOA::new(apex.clone(), apex.clone(), 1, 0, 0, 0, 0);
    ixfr.add_authority(hickory_proto::rr::Record::from_rdata(apex, 0, hickory_proto::rr::RData::SOA(soa)));
    seeds.push(ixfr.to_vec().unwrap());
    let mut chaos = common::query("id.server.", RecordType::TXT, Some(1232));
    let class_at = 12 + "id.server.".len() + 1 + 2;
    chaos[class_at..class_at + 2].copy_from_slice(&3u16.to_be_bytes());
    seeds.push(chaos);
    seeds
}

fn mutate(random: &mut Random, seed: &[u8]) -> Vec<u8> {
    let mut packet = seed.to_vec();
    for _ in 0..=random.below(4) {
        match random.below(6) {
            0 if !packet.is_empty() => {
                let at = random.below(packet.len());
                packet[at] ^= 1 << random.below(8);
            }
            1 if !packet.is_empty() => {
                let at = random.below(packet.len());
                packet[at] = random.next() as u8;
            }
            2 => packet.truncate(random.below(packet.len() + 1)),
            3 => packet.extend((0..random.below(40)).map(|_| random.next() as u8)),
            4 if packet.len() > 12 => {
                // A compression pointer somewhere, possibly pointing at itself.
                let at = 12 + random.below(packet.len() - 12);
                packet[at] = 0xC0;
                if at + 1 < packet.len() {
                    packet[at + 1] = random.below(packet.len()) as u8;
                }
            }
            _ if packet.len() >= 12 => {
                let count = 4 + 2 * random.below(4);
                packet[count] = random.below(3) as u8;
                packet[count + 1] = random.next() as u8;
            }
            _ => {}
        }
    }
    packet
}

#[test]
fn mutated_queries_never_panic_and_answers_stay_well_formed() {
    let directory = tempfile::tempdir().unwrap();
    let config = common::config(directory.path(), "");
    let catalog = common::catalog(&config, &[]);
    let seeds = seeds();
    let mut random = Random(0x5EED_1234_ABCD_0001);
    let mut out = Vec::new();
    let (mut replies, mut drops) = (0, 0);
    for iteration in 0..60_000 {
        let seed = &seeds[iteration % seeds.len()];
        let packet = mutate(&mut random, seed);
        let client: IpAddr =
            if iteration % 2 == 0 { "127.0.0.1".parse().unwrap() } else { "10.1.2.3".parse().unwrap() };
        let transport = if iteration % 5 == 0 { Transport::Tcp } else { Transport::Udp };
        let outcome = engine::handle(&catalog, &packet, client, transport, &mut out);
        match outcome.action {
            Action::Reply => {
                replies += 1;
                if transport == Transport::Udp {
                    assert!(out.len() <= 1232, "UDP answer of {} bytes for {packet:02x?}", out.len());
                }
                assert!(out.len() >= 12);
                assert_eq!(out[0..2], packet[0..2], "the answer carries the query's id");
                assert!(out[2] & 0x80 != 0, "QR is set");
                if let Err(error) = Message::from_vec(&out) {
                    panic!("answer does not decode ({error}) for {packet:02x?}: {out:02x?}");
                }
            }
            Action::Drop => drops += 1,
            Action::Forward(_) | Action::Transfer(..) => {}
        }
    }
    assert!(replies > 10_000 && drops > 100, "the mutations reach both outcomes: {replies} replies, {drops} drops");
}

#[test]
fn fast_path_and_general_path_agree() {
    let directory = tempfile::tempdir().unwrap();
    let config = common::config(directory.path(), "");
    let catalog = common::catalog(&config, &[]);
    let view = catalog.view_for("127.0.0.1".parse().unwrap());
    let zone = &view.zones[0];
    let mut names: Vec<Name> = zone.nodes.keys().cloned().collect();
    names.push(Name::from_ascii("missing.ninhthuan.gov.vn.").unwrap());
    names.push(Name::from_ascii("deep.missing.ninhthuan.gov.vn.").unwrap());
    names.push(Name::from_ascii("x.www.ninhthuan.gov.vn.").unwrap());
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::MX,
        RecordType::TXT,
        RecordType::CNAME,
        RecordType::NS,
        RecordType::SOA,
        RecordType::SRV,
    ];
    let mut checked = 0;
    for name in &names {
        for record_type in types {
            let packet = common::query(&name.to_string(), record_type, Some(1232));
            let mut fast = Vec::new();
            engine::handle(&catalog, &packet, "127.0.0.1".parse().unwrap(), Transport::Tcp, &mut fast);
            let fast = Message::from_vec(&fast).unwrap();
            let resolution = zone.resolve(name, record_type);
            let lines = |records: &[hickory_proto::rr::Record]| common::lines(records);
            assert_eq!(lines(&fast.answers), lines(&resolution.answers), "{name} {record_type}");
            assert_eq!(lines(&fast.authorities), lines(&resolution.authorities), "{name} {record_type}");
            assert_eq!(fast.metadata.authoritative, resolution.authoritative, "{name} {record_type}");
            assert_eq!(fast.metadata.response_code, resolution.rcode.code(), "{name} {record_type}");
            checked += 1;
        }
    }
    assert!(checked > 100);
}
