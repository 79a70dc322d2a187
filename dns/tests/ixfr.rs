//! Incremental zone transfers (RFC 1995) through the real TCP listener: from a kept history
//! of reload differences, with the full zone when the history does not reach back.

mod common;

use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use lienthong_dns::DnsService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(directory: &std::path::Path, extra_address: &str) -> lienthong_config::Config {
    common::write_zone(directory);
    let text = common::config_text(directory, "")
        .replace("extra 300 IN A 10.20.0.13", extra_address)
        .replace("records = [", "secondaries = [\"127.0.0.1\"]\nrecords = [");
    lienthong_config::parse(&text, "test.toml", directory).unwrap_or_else(|errors| panic!("{errors}"))
}

fn ixfr_query(serial: u32) -> Vec<u8> {
    let apex = Name::from_ascii("ninhthuan.gov.vn.").unwrap();
    let mut message = Message::new(0x4242, MessageType::Query, OpCode::Query);
    message.add_query(Query::query(apex.clone(), RecordType::IXFR));
    let soa = SOA::new(apex.clone(), apex.clone(), serial, 0, 0, 0, 0);
    message.add_authority(Record::from_rdata(apex, 0, RData::SOA(soa)));
    message.to_vec().unwrap()
}

/// The records of a TCP transfer answer (the test zone fits in one message).
async fn transfer(port: u16, packet: &[u8]) -> Vec<Record> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut framed = (packet.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(packet);
    stream.write_all(&framed).await.unwrap();
    let length = stream.read_u16().await.unwrap();
    let mut buffer = vec![0u8; usize::from(length)];
    stream.read_exact(&mut buffer).await.unwrap();
    let message = Message::from_vec(&buffer).unwrap();
    assert_eq!(message.metadata.response_code, hickory_proto::op::ResponseCode::NoError);
    message.answers
}

fn serial(record: &Record) -> u32 {
    match &record.data {
        RData::SOA(soa) => soa.serial,
        _ => panic!("not an SOA: {record}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ixfr_sends_the_differences_since_the_clients_serial() {
    let directory = tempfile::tempdir().unwrap();
    let service =
        DnsService::start(Arc::new(config(directory.path(), "extra 300 IN A 10.20.0.13")), Vec::new()).await.unwrap();
    let port = service.local_addresses()[0].port();
    let first = transfer(port, &ixfr_query(1)).await;
    let first_serial = serial(&first[0]);
    assert!(first.len() > 10, "no history yet: the full zone, AXFR style ({} records)", first.len());
    assert_ne!(first[1].record_type(), RecordType::SOA);

    service.reload(Arc::new(config(directory.path(), "extra 300 IN A 10.20.0.14")), Vec::new()).await.unwrap();
    let answer = transfer(port, &ixfr_query(first_serial)).await;
    let lines: Vec<String> = answer.iter().map(ToString::to_string).collect();
    let second_serial = serial(&answer[0]);
    assert!(second_serial > first_serial);
    assert_eq!(answer.len(), 6, "{lines:#?}");
    assert_eq!(serial(&answer[1]), first_serial);
    assert_eq!(lines[2], "extra.ninhthuan.gov.vn. 300 IN A 10.20.0.13");
    assert_eq!(serial(&answer[3]), second_serial);
    assert_eq!(lines[4], "extra.ninhthuan.gov.vn. 300 IN A 10.20.0.14");
    assert_eq!(serial(&answer[5]), second_serial);

    // Up to date: the SOA alone. An unknown older serial: the full zone.
    let current = transfer(port, &ixfr_query(second_serial)).await;
    assert_eq!(current.len(), 1);
    let unknown = transfer(port, &ixfr_query(first_serial - 1)).await;
    assert!(unknown.len() > 10 && unknown[1].record_type() != RecordType::SOA);
    // Over UDP, the current SOA alone.
    let udp = common::udp_exchange(port, &ixfr_query(first_serial)).await.unwrap();
    assert_eq!(udp.answers.len(), 1);
    assert_eq!(serial(&udp.answers[0]), second_serial);
    // Anyone else is refused.
    let output = common::dig(port, &["-b", "127.0.0.2", "+tcp", "ninhthuan.gov.vn", "IXFR=1"]).await;
    assert!(output.contains("REFUSED") || output.contains("failed"), "{output}");
    service.shutdown().await;
}
