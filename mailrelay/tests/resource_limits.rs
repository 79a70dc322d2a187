//! Resource caps through the real MX listener: sessions per client address, and one memory
//! budget for message data across sessions.

mod common;

use std::time::Duration;

use common::{Ports, Sink, certificates, codes, config, converse, wait_until};
use lienthong_mailrelay::MailService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn read_until_final(stream: &mut TcpStream, finals: usize) -> String {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&received).into_owned();
        if codes(&text).len() >= finals {
            return text;
        }
        match tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buffer)).await {
            Ok(Ok(count)) if count > 0 => received.extend_from_slice(&buffer[..count]),
            _ => return text,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_gets_at_most_its_share_of_sessions() {
    let state = tempfile::tempdir().unwrap();
    let (_sink, sink_address) = Sink::start().await;
    let ports = Ports::new();
    // The default limit: 50 sessions per client.
    let service = MailService::start(config(state.path(), &ports, sink_address, ""), certificates()).await.unwrap();
    let mut open = Vec::new();
    for _ in 0..50 {
        let mut stream = TcpStream::connect(("127.0.0.1", ports.mx)).await.unwrap();
        assert!(read_until_final(&mut stream, 1).await.starts_with("220 "));
        open.push(stream);
    }
    let mut extra = TcpStream::connect(("127.0.0.1", ports.mx)).await.unwrap();
    let refused = read_until_final(&mut extra, 1).await;
    assert!(refused.starts_with("421 4.7.0"), "{refused}");
    // Closing one frees its slot.
    drop(open.pop());
    let mut accepted = false;
    for _ in 0..100 {
        let mut stream = TcpStream::connect(("127.0.0.1", ports.mx)).await.unwrap();
        if read_until_final(&mut stream, 1).await.starts_with("220 ") {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(accepted);
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_data_beyond_the_memory_budget_gets_452_and_a_retry_succeeds() {
    let state = tempfile::tempdir().unwrap();
    let (sink, sink_address) = Sink::start().await;
    let ports = Ports::new();
    // max_message_size is 200000 in the test config; the budget fits one big message.
    let extra = "max_message_memory = 300000";
    let service = MailService::start(config(state.path(), &ports, sink_address, extra), certificates()).await.unwrap();
    let body = "Noi dung giay moi hop giao ban tuan nay.\r\n".repeat(4000);
    let start = "EHLO a\r\nMAIL FROM:<doitac@example.org>\r\nRCPT TO:<postmaster@ninhthuan.gov.vn>\r\nDATA\r\n";

    // The first session holds ~170 kB of message data in memory, without ending it yet.
    let mut holding = TcpStream::connect(("127.0.0.1", ports.mx)).await.unwrap();
    holding
        .write_all(format!("{start}From: <doitac@example.org>\r\nSubject: mot\r\n\r\n{body}").as_bytes())
        .await
        .unwrap();
    let transcript = read_until_final(&mut holding, 5).await;
    assert!(transcript.contains("354"), "{transcript}");
    // Wait until the relay has read it all: then a second full message cannot fit.
    assert!(wait_until(Duration::from_secs(20), || service.message_memory_used() >= body.len()).await);
    let script = format!("{start}From: <doitac@example.org>\r\nSubject: hai\r\n\r\n{body}.\r\nQUIT\r\n");
    let refused = converse(ports.mx, script.as_bytes(), 7).await;
    assert!(refused.contains("452 4.3.1"), "{refused}");
    assert!(service.message_memory_used() <= 300_000);

    // The first message completes; then the second fits.
    holding.write_all(b".\r\nQUIT\r\n").await.unwrap();
    let transcript = read_until_final(&mut holding, 7).await;
    assert!(transcript.contains("queued as"), "{transcript}");
    let script = format!("{start}From: <doitac@example.org>\r\nSubject: hai\r\n\r\n{body}.\r\nQUIT\r\n");
    let retried = converse(ports.mx, script.as_bytes(), 7).await;
    assert!(retried.contains("queued as"), "{retried}");
    assert!(wait_until(Duration::from_secs(15), || sink.count() == 2).await);
    assert_eq!(service.message_memory_used(), 0);
    service.shutdown().await;
}
