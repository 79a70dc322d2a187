//! Hourly limits and suspension through the real submissions listener: one user over its
//! limit is deferred with 4.7.28 while another user's mail flows, and `suspended = true`
//! reaches even a session that authenticated before the reload.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine;
use common::tls_client::{Stream, command, ready_session};
use common::{Ports, Sink, certificates, config_text, password_hash, wait_until};
use lienthong_config::Config;
use lienthong_mailrelay::MailService;

const LIMITS: &str = "max_messages_per_hour_per_user = 2\nmax_recipients_per_hour_per_user = 4\n";

/// The test config plus a second user, `ketoan@`, with `ketoan_extra` in its table.
fn config_with_ketoan(
    state: &std::path::Path,
    ports: &Ports,
    sink: std::net::SocketAddr,
    ketoan_extra: &str,
) -> Arc<Config> {
    let mut text = config_text(state, ports, sink, LIMITS);
    text.push_str(&format!(
        "[[mail.user]]\nlogin = \"ketoan@ninhthuan.gov.vn\"\npassword = \"{}\"\n{ketoan_extra}\n",
        password_hash()
    ));
    Arc::new(lienthong_config::parse(&text, "test.toml", state).unwrap_or_else(|errors| panic!("{errors}")))
}

async fn authenticated(port: u16, login: &str) -> Stream {
    let mut session = ready_session(port).await;
    let plain = base64::engine::general_purpose::STANDARD.encode(format!("\0{login}\0mat-khau-dung"));
    let reply = command(&mut session, &format!("AUTH PLAIN {plain}")).await;
    assert!(reply.starts_with("235"), "{login}: {reply}");
    session
}

/// One transaction; returns the MAIL reply, each RCPT reply and (if any RCPT was accepted)
/// the reply to the end of DATA.
async fn send(session: &mut Stream, from: &str, recipients: &[&str]) -> Vec<String> {
    let mut replies = vec![command(session, &format!("MAIL FROM:<{from}>")).await];
    if !replies[0].starts_with("250") {
        return replies;
    }
    for recipient in recipients {
        replies.push(command(session, &format!("RCPT TO:<{recipient}>")).await);
    }
    if replies[1..].iter().any(|reply| reply.starts_with("250")) {
        assert!(command(session, "DATA").await.starts_with("354"));
        let message = format!("From: <{from}>\r\nSubject: bao cao\r\n\r\nNoi dung.\r\n.");
        replies.push(command(session, &message).await);
    } else {
        command(session, "RSET").await;
    }
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_over_the_limit_is_deferred_while_another_users_mail_flows() {
    let state = tempfile::tempdir().unwrap();
    let (sink, sink_address) = Sink::start().await;
    let ports = Ports::new();
    let ketoan_limits = "max_messages_per_hour = 5\nmax_recipients_per_hour = 20";
    let config = config_with_ketoan(state.path(), &ports, sink_address, ketoan_limits);
    let service = MailService::start(config, certificates()).await.unwrap();
    let mut vanthu = authenticated(ports.submissions, "vanthu@ninhthuan.gov.vn").await;
    let mut ketoan = authenticated(ports.submissions, "ketoan@ninhthuan.gov.vn").await;
    let from = "vanthu@ninhthuan.gov.vn";

    let first = send(&mut vanthu, from, &["a@ninhthuan.gov.vn", "b@ninhthuan.gov.vn", "c@ninhthuan.gov.vn"]).await;
    assert!(first.iter().all(|reply| reply.starts_with("250")), "{first:?}");
    // The fifth recipient this hour is over the limit of 4: 452, the message goes to the rest.
    let second = send(&mut vanthu, from, &["d@ninhthuan.gov.vn", "e@ninhthuan.gov.vn"]).await;
    assert!(second[1].starts_with("250"), "{second:?}");
    assert!(second[2].starts_with("452 4.7.28"), "{second:?}");
    assert!(second[3].starts_with("250"), "{second:?}");
    // The third message this hour is over the limit of 2.
    let third = send(&mut vanthu, from, &["f@ninhthuan.gov.vn"]).await;
    assert_eq!(third.len(), 1);
    assert!(third[0].starts_with("450 4.7.28"), "{third:?}");

    // Meanwhile ketoan@, with its own (larger) limits, sends all five of its messages.
    for index in 0..5 {
        let replies = send(&mut ketoan, "ketoan@ninhthuan.gov.vn", &["g@ninhthuan.gov.vn"]).await;
        assert!(replies.iter().all(|reply| reply.starts_with("250")), "message {index}: {replies:?}");
    }
    let sixth = send(&mut ketoan, "ketoan@ninhthuan.gov.vn", &["g@ninhthuan.gov.vn"]).await;
    assert!(sixth[0].starts_with("450 4.7.28"), "{sixth:?}");
    // vanthu@ is still deferred, now from a new session too.
    let mut again = authenticated(ports.submissions, "vanthu@ninhthuan.gov.vn").await;
    assert!(send(&mut again, from, &["a@ninhthuan.gov.vn"]).await[0].starts_with("450 4.7.28"));

    assert!(wait_until(Duration::from_secs(20), || sink.count() == 7).await, "delivered {}", sink.count());
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspension_by_reload_refuses_auth_and_new_mail_but_queued_mail_is_delivered() {
    let state = tempfile::tempdir().unwrap();
    let (sink, sink_address) = Sink::start().await;
    // The first delivery attempt is deferred, so the message is still queued at the reload.
    sink.temporary_failures.store(1, Ordering::Relaxed);
    let ports = Ports::new();
    let service =
        MailService::start(config_with_ketoan(state.path(), &ports, sink_address, ""), certificates()).await.unwrap();
    let mut before = authenticated(ports.submissions, "ketoan@ninhthuan.gov.vn").await;
    let queued = send(&mut before, "ketoan@ninhthuan.gov.vn", &["a@ninhthuan.gov.vn"]).await;
    assert!(queued.iter().all(|reply| reply.starts_with("250")), "{queued:?}");

    service.reload(config_with_ketoan(state.path(), &ports, sink_address, "suspended = true")).await.unwrap();

    // The session that authenticated before the reload may not start a new transaction.
    let refused = command(&mut before, "MAIL FROM:<ketoan@ninhthuan.gov.vn>").await;
    assert!(refused.starts_with("550 5.7.13"), "{refused}");
    assert!(refused.contains("suspended"), "{refused}");
    // A new AUTH with the right password is refused; a wrong one still gets the usual 535.
    let mut session = ready_session(ports.submissions).await;
    let plain = base64::engine::general_purpose::STANDARD.encode("\0ketoan@ninhthuan.gov.vn\0mat-khau-dung");
    let reply = command(&mut session, &format!("AUTH PLAIN {plain}")).await;
    assert!(reply.starts_with("525 5.7.13"), "{reply}");
    let wrong = base64::engine::general_purpose::STANDARD.encode("\0ketoan@ninhthuan.gov.vn\0sai");
    assert!(command(&mut session, &format!("AUTH PLAIN {wrong}")).await.starts_with("535 5.7.8"));
    // Other users are not affected.
    let mut vanthu = authenticated(ports.submissions, "vanthu@ninhthuan.gov.vn").await;
    let other = send(&mut vanthu, "vanthu@ninhthuan.gov.vn", &["b@ninhthuan.gov.vn"]).await;
    assert!(other.iter().all(|reply| reply.starts_with("250")), "{other:?}");

    // The message accepted before the suspension is delivered on its retry.
    let delivered = || sink.all().iter().any(|message| message.sender == "ketoan@ninhthuan.gov.vn");
    assert!(wait_until(Duration::from_secs(20), delivered).await, "{:?}", sink.all());
    assert_eq!(sink.temporary_failures.load(Ordering::Relaxed), 0);
    service.shutdown().await;
}
