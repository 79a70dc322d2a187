//! Limits that must hold under abuse, through the real listeners: one rate limit for every
//! answer path, per-client TCP caps, and the same over IPv6.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::FakeUpstream;
use hickory_proto::op::Message;
use hickory_proto::rr::{RData, RecordType};
use lienthong_dns::DnsService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

async fn start_with(directory: &std::path::Path, listen: &str, extra: &str) -> DnsService {
    common::write_zone(directory);
    let text = common::config_text(directory, extra).replace("listen = [\"127.0.0.1:0\"]", listen);
    let config = lienthong_config::parse(&text, "test.toml", directory).unwrap_or_else(|errors| panic!("{errors}"));
    DnsService::start(Arc::new(config), Vec::new()).await.expect("service starts")
}

/// Sends `count` copies of a query from `socket` and counts (full, slipped) answers.
async fn flood(socket: &UdpSocket, server: SocketAddr, name: &str, count: usize) -> (usize, usize, Duration) {
    let started = Instant::now();
    for id in 0..count {
        let mut packet = common::query(name, RecordType::A, None);
        packet[0..2].copy_from_slice(&(id as u16).to_be_bytes());
        socket.send_to(&packet, server).await.unwrap();
    }
    let sent_in = started.elapsed();
    let (mut full, mut slipped) = (0, 0);
    let mut buffer = [0u8; 1500];
    while let Ok(Ok((length, _))) =
        tokio::time::timeout(Duration::from_millis(1500), socket.recv_from(&mut buffer)).await
    {
        let answer = Message::from_vec(&buffer[..length]).unwrap();
        if answer.metadata.truncation { slipped += 1 } else { full += 1 }
    }
    (full, slipped, sent_in)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_answers_are_rate_limited_like_authoritative_ones() {
    let upstream = FakeUpstream::start("192.0.2.53".parse().unwrap()).await;
    let directory = tempfile::tempdir().unwrap();
    let extra = format!(
        "forwarders = [\"{}\"]\nrecursion_from = [\"127.0.0.0/8\"]\nrate_limit = 5\nrate_limit_exempt = []",
        upstream.address
    );
    let text = common::config_text(directory.path(), &extra).replace("recursion_from = [\"127.0.0.1/32\"]\n", "");
    common::write_zone(directory.path());
    let config = lienthong_config::parse(&text, "test.toml", directory.path()).unwrap();
    let service = DnsService::start(Arc::new(config), Vec::new()).await.unwrap();
    let server = service.local_addresses()[0];
    let socket = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let (full, slipped, took) = flood(&socket, server, "portal.example.com.", 60).await;
    // Each second window lets 5 through; the burst spans at most a few windows.
    let windows = took.as_secs() as usize + 2;
    assert!(full >= 1, "forwarding works at all");
    assert!(full <= 5 * windows, "{full} full forwarded answers in {took:?}: not limited");
    assert!(slipped >= 1, "{slipped} slips");
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_hold_every_tcp_slot() {
    let directory = tempfile::tempdir().unwrap();
    let service = start_with(
        directory.path(),
        "listen = [\"127.0.0.1:0\"]",
        "tcp_max_connections = 4\ntcp_max_per_client = 2\ntcp_idle_seconds = 30",
    )
    .await;
    let server = service.local_addresses()[0];
    // The hog opens four connections and sends nothing: two are kept, two closed at once.
    let mut hog = Vec::new();
    for _ in 0..4 {
        hog.push(TcpStream::connect(server).await.unwrap());
    }
    let mut closed = 0;
    for stream in &mut hog {
        let mut byte = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut byte)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 2, "connections over the per-client cap are closed");
    // Another client still gets answers while the hog holds its two.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = socket.connect(server).await.unwrap();
    let answer =
        tokio::time::timeout(Duration::from_secs(10), tcp_ask(&mut other, "www.ninhthuan.gov.vn.", RecordType::A))
            .await
            .expect("a second client is served while the first holds its cap");
    assert_eq!(answer.answers.len(), 2);
    drop(hog);
    service.shutdown().await;
}

async fn tcp_ask(stream: &mut TcpStream, name: &str, record_type: RecordType) -> Message {
    let packet = common::query(name, record_type, None);
    let mut framed = (packet.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&packet);
    stream.write_all(&framed).await.unwrap();
    let length = stream.read_u16().await.unwrap();
    let mut buffer = vec![0u8; usize::from(length)];
    stream.read_exact(&mut buffer).await.unwrap();
    Message::from_vec(&buffer).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_listener_serves_aaaa_and_applies_the_limits() {
    let directory = tempfile::tempdir().unwrap();
    let service = start_with(
        directory.path(),
        "listen = [\"127.0.0.1:0\", \"[::1]:0\"]",
        "rate_limit = 5\nrate_limit_exempt = []\ntcp_max_per_client = 1",
    )
    .await;
    let server = *service.local_addresses().iter().find(|address| address.is_ipv6()).expect("an IPv6 listener");
    // AAAA over UDP and TCP, through dig.
    for transport in ["+notcp", "+tcp"] {
        let output = tokio::process::Command::new("dig")
            .args(["@::1", "-p", &server.port().to_string(), "+time=3", "+tries=1", transport])
            .args(["hub.ninhthuan.gov.vn", "AAAA"])
            .output()
            .await
            .expect("dig runs");
        let output = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(output.contains("hub.ninhthuan.gov.vn.\t3600\tIN\tAAAA\t2001:db8::5"), "{transport}: {output}");
    }
    // The rate limit holds over IPv6.
    let socket = UdpSocket::bind("[::1]:0").await.unwrap();
    let (full, slipped, took) = flood(&socket, server, "nx.ninhthuan.gov.vn.", 40).await;
    assert!(full <= 5 * (took.as_secs() as usize + 2), "{full} full answers over IPv6");
    assert!(slipped >= 1);
    // And the per-client TCP cap: a second connection from ::1 is closed at once.
    let mut first = TcpStream::connect(server).await.unwrap();
    let answer = tcp_ask(&mut first, "hub.ninhthuan.gov.vn.", RecordType::AAAA).await;
    assert!(answer.answers.iter().any(|record| matches!(record.data, RData::AAAA(_))));
    let mut second = TcpStream::connect(server).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(2), second.read(&mut byte)).await;
    assert!(matches!(read, Ok(Ok(0))), "second IPv6 connection closed: {read:?}");
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_a_query_loses_its_slot_at_the_deadline() {
    let directory = tempfile::tempdir().unwrap();
    let service =
        start_with(directory.path(), "listen = [\"127.0.0.1:0\"]", "tcp_max_per_client = 1\ntcp_idle_seconds = 1")
            .await;
    let server = service.local_addresses()[0];
    // Half a length prefix, then a length and a few bytes of a 100-byte query: never whole.
    let mut slow = TcpStream::connect(server).await.unwrap();
    slow.write_all(&[0]).await.unwrap();
    let started = Instant::now();
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(10), slow.read(&mut byte)).await;
    assert!(matches!(closed, Ok(Ok(0))), "closed at the deadline: {closed:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    let mut partial = TcpStream::connect(server).await.unwrap();
    partial.write_all(&[0, 100, 1, 2, 3]).await.unwrap();
    let started = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(10), partial.read(&mut byte)).await;
    assert!(matches!(closed, Ok(Ok(0))), "closed at the deadline: {closed:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    // The slot is free again: the same client is served.
    let mut next = TcpStream::connect(server).await.unwrap();
    let answer = tcp_ask(&mut next, "www.ninhthuan.gov.vn.", RecordType::A).await;
    assert_eq!(answer.answers.len(), 2);
    service.shutdown().await;
}
