//! The service over real UDP and TCP sockets, with `dig` as the client.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{FakeUpstream, dig};
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use lienthong_dns::DnsService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn start(directory: &std::path::Path, extra: &str) -> (DnsService, u16) {
    let config = Arc::new(common::config(directory, extra));
    let service = DnsService::start(config, Vec::new()).await.expect("service starts");
    let port = service.local_addresses()[0].port();
    (service, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_gets_authoritative_answers_over_udp_and_tcp() {
    let directory = tempfile::tempdir().unwrap();
    let (service, port) = start(directory.path(), "").await;
    assert!(service.is_serving());
    for transport in ["+notcp", "+tcp"] {
        let output = dig(port, &[transport, "+norec", "www.NinhThuan.gov.vn", "A"]).await;
        assert!(output.contains("status: NOERROR"), "{transport}: {output}");
        assert!(output.contains("flags: qr aa;"), "{transport}: {output}");
        assert!(output.contains("www.NinhThuan.gov.vn.\t300\tIN\tA\t10.20.0.10"), "{transport}: {output}");
        let missing = dig(port, &[transport, "nope.ninhthuan.gov.vn", "A"]).await;
        assert!(missing.contains("status: NXDOMAIN"), "{transport}: {missing}");
    }
    // Too big for UDP without EDNS: TC=1, then dig retries over TCP by itself.
    let big = dig(port, &["+noedns", "+ignore", "big.ninhthuan.gov.vn", "TXT"]).await;
    assert!(big.contains("flags: qr aa tc"), "{big}");
    let retried = dig(port, &["+noedns", "big.ninhthuan.gov.vn", "TXT"]).await;
    assert!(retried.contains("ANSWER: 1,"), "{retried}");
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_recursion_clients_are_forwarded_and_answers_are_cached() {
    let upstream = FakeUpstream::start("192.0.2.53".parse().unwrap()).await;
    let conditional = FakeUpstream::start("192.0.2.99".parse().unwrap()).await;
    let directory = tempfile::tempdir().unwrap();
    let extra = format!(
        "forwarders = [\"{}\"]\n\n[[dns.forward]]\nzone = \"example.org\"\nto = [\"{}\"]\n",
        upstream.address, conditional.address
    );
    let (service, port) = start(directory.path(), &extra).await;

    let outsider = dig(port, &["-b", "127.0.0.2", "portal.example.com", "A"]).await;
    assert!(outsider.contains("status: REFUSED"), "127.0.0.2 is not in recursion_from: {outsider}");
    assert_eq!(upstream.count(), 0, "a refused query never reaches the forwarder");
    let local = dig(port, &["-b", "127.0.0.2", "www.ninhthuan.gov.vn", "A"]).await;
    assert!(local.contains("status: NOERROR"), "local zones answer everyone: {local}");
    assert!(local.contains("flags: qr aa rd;"), "no recursion offered to 127.0.0.2: {local}");
    let local_insider = dig(port, &["-b", "127.0.0.1", "www.ninhthuan.gov.vn", "A"]).await;
    assert!(local_insider.contains("flags: qr aa rd ra;"), "recursion offered to 127.0.0.1: {local_insider}");

    let insider = dig(port, &["-b", "127.0.0.1", "portal.example.com", "A"]).await;
    assert!(insider.contains("status: NOERROR") && insider.contains("192.0.2.53"), "{insider}");
    assert!(insider.contains(" ra"), "forwarded answers say recursion available: {insider}");
    let again = dig(port, &["portal.example.com", "A"]).await;
    assert!(again.contains("192.0.2.53"), "{again}");
    assert_eq!(upstream.count(), 1, "the second answer comes from the cache");

    let negative = dig(port, &["nxthing.example.com", "A"]).await;
    assert!(negative.contains("status: NXDOMAIN"), "{negative}");
    let negative_again = dig(port, &["+tcp", "nxthing.example.com", "A"]).await;
    assert!(negative_again.contains("status: NXDOMAIN"), "{negative_again}");
    assert_eq!(upstream.count(), 2, "negative answers are cached too");

    let routed = dig(port, &["intranet.example.org", "A"]).await;
    assert!(routed.contains("192.0.2.99"), "conditional forwarding: {routed}");
    assert_eq!(conditional.count(), 1);
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_answers_pipelined_queries_in_order_and_closes_idle_connections() {
    let directory = tempfile::tempdir().unwrap();
    let (service, port) = start(directory.path(), "tcp_idle_seconds = 1").await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let names = ["www.ninhthuan.gov.vn.", "hub.ninhthuan.gov.vn.", "nope.ninhthuan.gov.vn."];
    let mut batch = Vec::new();
    for name in names {
        let packet = common::query(name, RecordType::A, None);
        batch.extend_from_slice(&(packet.len() as u16).to_be_bytes());
        batch.extend_from_slice(&packet);
    }
    stream.write_all(&batch).await.unwrap();
    for name in names {
        let length = stream.read_u16().await.unwrap();
        let mut buffer = vec![0u8; usize::from(length)];
        stream.read_exact(&mut buffer).await.unwrap();
        let answer = Message::from_vec(&buffer).unwrap();
        assert_eq!(answer.queries[0].name().to_string(), name);
    }
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(0))), "an idle connection is closed: {closed:?}");
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_zone_data_and_raises_the_serial() {
    let directory = tempfile::tempdir().unwrap();
    let (service, port) = start(directory.path(), "").await;
    let serial = |output: &str| output.split_whitespace().nth(2).and_then(|field| field.parse::<u32>().ok()).unwrap();
    let before = dig(port, &["+short", "ninhthuan.gov.vn", "SOA"]).await;
    let text =
        common::config_text(directory.path(), "").replace("extra 300 IN A 10.20.0.13", "extra 300 IN A 10.20.0.14");
    let config = lienthong_config::parse(&text, "test.toml", directory.path()).unwrap();
    service.reload(Arc::new(config), Vec::new()).await.unwrap();
    let extra = dig(port, &["+short", "extra.ninhthuan.gov.vn", "A"]).await;
    assert_eq!(extra.trim(), "10.20.0.14");
    let after = dig(port, &["+short", "ninhthuan.gov.vn", "SOA"]).await;
    assert!(serial(&after) > serial(&before), "{before} -> {after}");
    // A broken zone is refused and the old data stays.
    let broken = text.replace("extra 300 IN A 10.20.0.14", "extra 300 IN A nonsense");
    let config = lienthong_config::parse(&broken, "test.toml", directory.path()).unwrap();
    assert!(service.reload(Arc::new(config), Vec::new()).await.is_err());
    assert_eq!(dig(port, &["+short", "extra.ninhthuan.gov.vn", "A"]).await.trim(), "10.20.0.14");
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limiting_slips_and_drops_floods_from_one_prefix() {
    let directory = tempfile::tempdir().unwrap();
    let (service, port) = start(directory.path(), "rate_limit = 5\nrate_limit_exempt = []").await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let sent = 40;
    for id in 0..sent {
        let mut packet = common::query("nx.ninhthuan.gov.vn.", RecordType::A, None);
        packet[0..2].copy_from_slice(&(id as u16).to_be_bytes());
        socket.send_to(&packet, ("127.0.0.1", port)).await.unwrap();
    }
    let (mut full, mut slipped) = (0, 0);
    let mut buffer = [0u8; 1500];
    while let Ok(Ok((length, _))) =
        tokio::time::timeout(Duration::from_millis(500), socket.recv_from(&mut buffer)).await
    {
        let answer = Message::from_vec(&buffer[..length]).unwrap();
        if answer.metadata.truncation { slipped += 1 } else { full += 1 }
    }
    // The one-second window may roll over once during the burst: at most twice the limit.
    assert!((5..=10).contains(&full), "{full} full answers");
    assert!(slipped >= 10, "{slipped} TC=1 slips");
    assert!(full + slipped < sent, "some answers were dropped");
    service.shutdown().await;
}
