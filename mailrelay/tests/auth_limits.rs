//! AUTH brute force through the real submissions listener: parallel sessions from one client
//! cannot get more password checks than the limit allows.

mod common;

use common::tls_client::{read_reply, ready_session};
use common::{Ports, Sink, certificates, config};
use lienthong_mailrelay::MailService;
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_sessions_get_no_password_check_past_the_limit() {
    let state = tempfile::tempdir().unwrap();
    let (_sink, sink_address) = Sink::start().await;
    let ports = Ports::new();
    let service = MailService::start(config(state.path(), &ports, sink_address, ""), certificates()).await.unwrap();
    let mut sessions = Vec::new();
    for _ in 0..16 {
        sessions.push(ready_session(ports.submissions).await);
    }
    // "\0vanthu@ninhthuan.gov.vn\0sai" in base64, sent by every session at the same moment.
    let wrong = b"AUTH PLAIN AHZhbnRodUBuaW5odGh1YW4uZ292LnZuAHNhaQ==\r\n";
    for session in &mut sessions {
        session.get_mut().write_all(wrong).await.unwrap();
    }
    let mut replies = Vec::new();
    for session in &mut sessions {
        replies.push(read_reply(session).await);
    }
    let checked = replies.iter().filter(|reply| reply.starts_with("535")).count();
    let limited = replies.iter().filter(|reply| reply.starts_with("454 4.7.0")).count();
    // At most the five allowed attempts reach argon2 (one may be answered 454 instead, when
    // all verification slots stay busy for 10 s on a loaded machine); every other session
    // is refused without a check.
    assert!((1..=5).contains(&checked), "{replies:?}");
    assert_eq!(checked + limited, 16, "{replies:?}");
    // The right password is refused too while the client is blocked.
    let mut late = ready_session(ports.submissions).await;
    late.get_mut().write_all(b"AUTH PLAIN AHZhbnRodUBuaW5odGh1YW4uZ292LnZuAG1hdC1raGF1LWR1bmc=\r\n").await.unwrap();
    assert!(read_reply(&mut late).await.starts_with("454 4.7.0"));
    service.shutdown().await;
}
