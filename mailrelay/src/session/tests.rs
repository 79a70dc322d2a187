//! The session driven in memory: bytes in, replies and actions out.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use super::*;

fn policy() -> Arc<Policy> {
    Arc::new(Policy {
        hostname: "mail.ninhthuan.gov.vn".into(),
        max_message_size: 1000,
        max_recipients: 3,
        max_errors: 10,
        local_domains: HashSet::from(["ninhthuan.gov.vn".to_owned()]),
        relay_from: vec!["10.20.0.20/32".parse().unwrap()],
        users: HashMap::from([(
            "vanthu@ninhthuan.gov.vn".to_owned(),
            vec!["vanthu@ninhthuan.gov.vn".to_owned(), "ubnd@ninhthuan.gov.vn".to_owned()],
        )]),
        max_connections_per_client: 50,
        memory: memory::MemoryBudget::new(usize::MAX),
        limits: Arc::new(crate::limits::Limits::with_clock(Box::new(std::time::Instant::now))),
        recipients: HashMap::new(),
    })
}

const STRANGER: &str = "203.0.113.9";

fn tls() -> TlsInfo {
    TlsInfo { protocol: "TLSv1.3".into(), cipher: "TLS13_AES_128_GCM_SHA256".into() }
}

/// Runs `input` through a session; returns the replies and the messages it wanted stored.
fn run(session: &mut Session, input: &str) -> (String, Vec<Incoming>) {
    session.receive(input.as_bytes());
    let mut stored = Vec::new();
    loop {
        match session.advance() {
            Action::NeedInput | Action::Close | Action::StartTls => break,
            Action::Authenticate { login, password } => {
                let outcome = if password == "dung" { AuthOutcome::Accepted } else { AuthOutcome::Rejected };
                session.authentication_result(&login, outcome);
            }
            Action::Enqueue(incoming) => {
                stored.push(*incoming);
                session.enqueue_result(Ok("Q1".into()));
            }
            // The mailbox server (a stand-in): "khong..." does not exist, "cham..." cannot be asked.
            Action::VerifyRecipient(address) => {
                let status = match address.local() {
                    local if local.starts_with("khong") => RecipientStatus::Unknown,
                    local if local.starts_with("cham") => RecipientStatus::Unverified,
                    _ => RecipientStatus::Exists,
                };
                session.verification_result(status);
            }
        }
    }
    (String::from_utf8(session.take_output()).unwrap(), stored)
}

fn mx(peer: &str) -> Session {
    let mut session = Session::new(policy(), Listener::Mx, peer.parse::<IpAddr>().unwrap(), None, true);
    session.take_output();
    session
}

fn codes(replies: &str) -> Vec<&str> {
    replies.lines().filter(|line| line.as_bytes().get(3) == Some(&b' ')).map(|line| &line[..3]).collect()
}

#[test]
fn pipelined_transaction_to_a_local_domain() {
    let mut session = mx(STRANGER);
    let (replies, stored) = run(
        &mut session,
        "EHLO client.example\r\nMAIL FROM:<a@example.org> BODY=8BITMIME\r\nRCPT TO:<VanThu@NinhThuan.Gov.VN.>\r\nDATA\r\nFrom: <a@example.org>\r\nSubject: Giấy mời họp\r\n\r\nKính gửi\r\n.\r\nQUIT\r\n",
    );
    assert_eq!(codes(&replies), ["250", "250", "250", "354", "250", "221"]);
    assert!(replies.contains("STARTTLS") && !replies.contains("AUTH"), "{replies}");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].envelope.recipients[0].address.domain(), "ninhthuan.gov.vn");
    assert!(stored[0].envelope.eight_bit);
    assert_eq!(stored[0].content, "From: <a@example.org>\r\nSubject: Giấy mời họp\r\n\r\nKính gửi\r\n".as_bytes());
}

#[test]
fn open_relay_battery() {
    let tricks = [
        "<user@evil.example>",
        "<user%evil.example@ninhthuan.gov.vn>",
        "<evil.example!user@ninhthuan.gov.vn>",
        "<\"user@evil.example\"@ninhthuan.gov.vn>",
        "<@ninhthuan.gov.vn:user@evil.example>",
        "<user@evil.example.>",
        "<user@EVIL.example>",
        "<user@ninhthuan.gov.vn.evil.example>",
        "<user@[203.0.113.1]>",
    ];
    for trick in tricks {
        let mut session = mx(STRANGER);
        let (replies, _) = run(&mut session, &format!("EHLO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:{trick}\r\n"));
        let last = replies.lines().last().unwrap();
        assert!(last.starts_with("554 5.7.1") || last.starts_with("501 5.1.3"), "{trick} got {last}");
    }
    // The same source route to a local domain is fine (RFC 5321: accept and ignore it).
    let mut session = mx(STRANGER);
    let (replies, _) =
        run(&mut session, "EHLO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<@relay.example:user@ninhthuan.gov.vn>\r\n");
    assert!(replies.lines().last().unwrap().starts_with("250 2.1.5"), "{replies}");
}

#[test]
fn relay_from_network_may_relay() {
    let mut session = mx("10.20.0.20");
    let (replies, _) =
        run(&mut session, "EHLO mailbox\r\nMAIL FROM:<a@ninhthuan.gov.vn>\r\nRCPT TO:<b@example.org>\r\n");
    assert_eq!(codes(&replies), ["250", "250", "250"]);
}

#[test]
fn auth_refused_before_tls_and_submission_requires_it() {
    let mut session = Session::new(policy(), Listener::Submission, STRANGER.parse().unwrap(), None, true);
    let (replies, _) = run(
        &mut session,
        "EHLO x\r\nAUTH PLAIN AHZhbnRodUBuaW5odGh1YW4uZ292LnZuAGR1bmc=\r\nMAIL FROM:<vanthu@ninhthuan.gov.vn>\r\n",
    );
    assert_eq!(codes(&replies), ["220", "250", "538", "530"]);
}

#[test]
fn starttls_discards_pipelined_plaintext() {
    let mut session = mx(STRANGER);
    session.receive(b"EHLO x\r\nSTARTTLS\r\nMAIL FROM:<injected@example.org>\r\n");
    assert!(matches!(session.advance(), Action::StartTls));
    session.tls_started(tls());
    let (replies, _) = run(&mut session, "");
    assert!(!replies.contains("2.1.0"), "injected command was executed: {replies}");
    let (replies, _) = run(&mut session, "MAIL FROM:<a@example.org>\r\n");
    assert!(replies.starts_with("503 5.5.1"), "state must be reset after TLS: {replies}");
}

fn submission_after_auth(login_password: &str) -> (Session, String) {
    let mut session = Session::new(policy(), Listener::Submissions, STRANGER.parse().unwrap(), Some(tls()), true);
    let (mut replies, _) = run(&mut session, "EHLO laptop\r\n");
    let (more, _) = run(&mut session, &format!("AUTH PLAIN {login_password}\r\n"));
    replies.push_str(&more);
    (session, replies)
}

fn plain(login: &str, password: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("\0{login}\0{password}"))
}

#[test]
fn authenticated_user_relays_and_sender_is_checked() {
    let (mut session, replies) = submission_after_auth(&plain("vanthu@ninhthuan.gov.vn", "dung"));
    assert!(replies.contains("AUTH PLAIN LOGIN") && replies.contains("235 2.7.0"), "{replies}");
    let (replies, _) = run(&mut session, "MAIL FROM:<giamdoc@ninhthuan.gov.vn>\r\n");
    assert!(replies.starts_with("550 5.7.1"), "{replies}");
    let (replies, stored) = run(
        &mut session,
        "MAIL FROM:<ubnd@ninhthuan.gov.vn>\r\nRCPT TO:<someone@example.org>\r\nDATA\r\nFrom: Giam doc <giamdoc@ninhthuan.gov.vn>\r\n\r\nx\r\n.\r\n",
    );
    assert_eq!(codes(&replies), ["250", "250", "354", "550"]);
    assert!(replies.contains("5.7.1") && stored.is_empty(), "{replies}");
    let (replies, stored) = run(
        &mut session,
        "MAIL FROM:<ubnd@ninhthuan.gov.vn>\r\nRCPT TO:<someone@example.org>\r\nDATA\r\nFrom: UBND <UBND@ninhthuan.gov.vn>\r\n\r\nx\r\n.\r\n",
    );
    assert_eq!(codes(&replies), ["250", "250", "354", "250"]);
    assert_eq!(stored[0].trace.authenticated.as_deref(), Some("vanthu@ninhthuan.gov.vn"));
}

#[test]
fn auth_login_and_failure() {
    let mut session = Session::new(policy(), Listener::Submissions, STRANGER.parse().unwrap(), Some(tls()), true);
    session.take_output();
    let (replies, _) = run(&mut session, "EHLO x\r\nAUTH LOGIN\r\ndmFudGh1QG5pbmh0aHVhbi5nb3Yudm4=\r\nc2Fp\r\n");
    assert_eq!(codes(&replies), ["250", "334", "334", "535"]);
    let (replies, _) = run(&mut session, "AUTH LOGIN\r\n*\r\n");
    assert_eq!(codes(&replies), ["334", "501"]);
    let (replies, _) = run(&mut session, "AUTH CRAM-MD5\r\n");
    assert_eq!(codes(&replies), ["504"]);
}

#[test]
fn limits() {
    let mut session = mx(STRANGER);
    let (replies, _) = run(&mut session, "EHLO x\r\nMAIL FROM:<a@example.org> SIZE=5000\r\n");
    assert!(replies.contains("552 5.3.4"), "{replies}");
    let (replies, _) = run(
        &mut session,
        "MAIL FROM:<a@example.org>\r\nRCPT TO:<a@ninhthuan.gov.vn>\r\nRCPT TO:<b@ninhthuan.gov.vn>\r\nRCPT TO:<c@ninhthuan.gov.vn>\r\nRCPT TO:<d@ninhthuan.gov.vn>\r\n",
    );
    assert_eq!(codes(&replies), ["250", "250", "250", "250", "452"]);
    let big = "x".repeat(200);
    let body: String = (0..10).map(|_| format!("{big}\r\n")).collect();
    let (replies, stored) = run(&mut session, &format!("DATA\r\n{body}.\r\n"));
    assert!(replies.contains("552 5.3.4") && stored.is_empty(), "{replies}");
    let long_line = "NOOP ".to_owned() + &"a".repeat(MAX_COMMAND_LINE + 10) + "\r\nNOOP\r\n";
    let (replies, _) = run(&mut session, &long_line);
    assert_eq!(codes(&replies), ["500", "250"]);
}

#[test]
fn smuggling_is_refused() {
    let mut session = mx(STRANGER);
    let (replies, stored) = run(
        &mut session,
        "EHLO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<a@ninhthuan.gov.vn>\r\nDATA\r\nSubject: x\r\n\r\nhi\n.\nMAIL FROM:<admin@ninhthuan.gov.vn>\nRCPT TO:<victim@ninhthuan.gov.vn>\nDATA\nforged\n.\r\n.\r\n",
    );
    assert!(stored.is_empty());
    assert_eq!(codes(&replies), ["250", "250", "250", "354", "550"]);
}

#[test]
fn bdat_chunks() {
    let mut session = mx(STRANGER);
    let (replies, stored) = run(
        &mut session,
        "EHLO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<a@ninhthuan.gov.vn>\r\nBDAT 32\r\nFrom: <a@example.org>\r\nSubject: BDAT 5 LAST\r\nhelloQUIT\r\n",
    );
    assert_eq!(codes(&replies), ["250", "250", "250", "250", "250", "221"], "{replies}");
    assert_eq!(stored[0].content, b"From: <a@example.org>\r\nSubject: hello");
}

#[test]
fn too_many_errors_disconnect() {
    let mut session = mx(STRANGER);
    let (replies, _) = run(&mut session, &"BOGUS\r\n".repeat(12));
    assert!(replies.ends_with("421 4.7.0 Too many errors; closing connection\r\n"), "{replies}");
    assert_eq!(replies.matches("500 5.5.2").count(), 10);
}

#[test]
fn sequence_errors() {
    let mut session = mx(STRANGER);
    let (replies, _) = run(
        &mut session,
        "MAIL FROM:<a@example.org>\r\nEHLO x\r\nRCPT TO:<a@ninhthuan.gov.vn>\r\nDATA\r\nMAIL FROM:<>\r\nDATA\r\n",
    );
    assert_eq!(codes(&replies), ["503", "250", "503", "503", "250", "554"]);
}

/// Bounded random input must never panic and must always get replies or a close.
#[test]
fn random_input_never_panics() {
    use rand::{Rng, SeedableRng};
    let mut random = rand::rngs::StdRng::seed_from_u64(0x6c69656e);
    let words: [&[u8]; 14] = [
        b"EHLO x\r\n",
        b"MAIL FROM:<a@b.c>\r\n",
        b"RCPT TO:<v@ninhthuan.gov.vn>\r\n",
        b"DATA\r\n",
        b".\r\n",
        b"BDAT 3\r\n",
        b"BDAT 0 LAST\r\n",
        b"AUTH PLAIN\r\n",
        b"\r\n",
        b"\n",
        b"\r",
        b"STARTTLS\r\n",
        b"RSET\r\n",
        b"\x00\xff",
    ];
    for _ in 0..2000 {
        let mut session = Session::new(policy(), Listener::Mx, STRANGER.parse().unwrap(), Some(tls()), true);
        for _ in 0..random.random_range(1..30) {
            let input: Vec<u8> = if random.random_bool(0.7) {
                words[random.random_range(0..words.len())].to_vec()
            } else {
                (0..random.random_range(0..40)).map(|_| random.random()).collect()
            };
            session.receive(&input);
            for _ in 0..100 {
                match session.advance() {
                    Action::NeedInput | Action::Close | Action::StartTls => break,
                    Action::Authenticate { login, .. } => session.authentication_result(&login, AuthOutcome::Rejected),
                    Action::Enqueue(_) => session.enqueue_result(Ok("Q".into())),
                    Action::VerifyRecipient(_) => session.verification_result(RecipientStatus::Unknown),
                }
            }
            session.take_output();
        }
    }
}

fn checking(recipients: Recipients) -> Session {
    let mut policy = (*policy()).clone();
    policy.recipients = HashMap::from([("ninhthuan.gov.vn".to_owned(), recipients)]);
    let mut session = Session::new(Arc::new(policy), Listener::Mx, STRANGER.parse().unwrap(), None, true);
    session.take_output();
    session
}

#[test]
fn local_recipients_of_strangers_are_probed() {
    let mut session = checking(Recipients::Probe);
    let script = "EHLO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<vanthu@ninhthuan.gov.vn>\r\n\
        RCPT TO:<khongco@ninhthuan.gov.vn>\r\nRCPT TO:<cham@ninhthuan.gov.vn>\r\nDATA\r\nFrom: <a@example.org>\r\n\r\nx\r\n.\r\n";
    let (replies, stored) = run(&mut session, script);
    assert_eq!(codes(&replies), ["250", "250", "250", "550", "450", "354", "250"], "{replies}");
    assert!(replies.contains("550 5.1.1 <khongco@ninhthuan.gov.vn>: Recipient address rejected: User unknown"));
    assert!(replies.contains("450 4.1.1 "));
    assert_eq!(stored[0].envelope.recipients.len(), 1);
}

#[test]
fn trusted_clients_are_not_probed_and_lists_need_no_probe() {
    let mut policy = (*policy()).clone();
    policy.recipients = HashMap::from([("ninhthuan.gov.vn".to_owned(), Recipients::Probe)]);
    let mut session = Session::new(Arc::new(policy), Listener::Mx, "10.20.0.20".parse().unwrap(), None, true);
    let (replies, _) =
        run(&mut session, "EHLO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<khongco@ninhthuan.gov.vn>\r\n");
    assert!(replies.ends_with("250 2.1.5 Ok\r\n"), "{replies}");

    let mut session = checking(Recipients::Listed(HashSet::from(["vanthu".to_owned()])));
    session.receive(b"EHLO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<VanThu@ninhthuan.gov.vn>\r\nRCPT TO:<khongco@ninhthuan.gov.vn>\r\nRCPT TO:<postmaster@ninhthuan.gov.vn>\r\n");
    assert!(matches!(session.advance(), Action::NeedInput), "a list needs no driver round trip");
    let replies = String::from_utf8(session.take_output()).unwrap();
    assert_eq!(codes(&replies), ["250", "250", "250", "550", "250"], "{replies}");
}

#[test]
fn message_data_beyond_the_memory_budget_is_refused_with_452_and_given_back() {
    let mut policy = (*policy()).clone();
    let budget = memory::MemoryBudget::new(300);
    policy.memory = budget.clone();
    let mut session = Session::new(Arc::new(policy), Listener::Mx, STRANGER.parse().unwrap(), None, true);
    session.take_output();
    let body = "x".repeat(400);
    let script = format!(
        "EHLO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<vanthu@ninhthuan.gov.vn>\r\nDATA\r\n{body}\r\n.\r\n\
         MAIL FROM:<a@example.org>\r\nRCPT TO:<vanthu@ninhthuan.gov.vn>\r\nBDAT 200\r\n{chunk}BDAT 200 LAST\r\n{chunk}\
         MAIL FROM:<a@example.org>\r\nRCPT TO:<vanthu@ninhthuan.gov.vn>\r\nDATA\r\nFrom: <a@example.org>\r\n\r\nsmall\r\n.\r\n",
        chunk = "y".repeat(200)
    );
    let (replies, stored) = run(&mut session, &script);
    assert_eq!(
        codes(&replies),
        ["250", "250", "250", "354", "452", "250", "250", "250", "452", "250", "250", "354", "250"],
        "{replies}"
    );
    assert_eq!(stored.len(), 1);
    assert_eq!(budget.used(), 0);
}

/// A policy whose limits run on a virtual clock the test moves.
fn limited(client: lienthong_config::HourlyLimits) -> (Arc<Policy>, Arc<std::sync::Mutex<std::time::Instant>>) {
    let now = Arc::new(std::sync::Mutex::new(std::time::Instant::now()));
    let clock = now.clone();
    let limits = crate::limits::Limits::with_clock(Box::new(move || *clock.lock().unwrap()));
    let user = lienthong_config::HourlyLimits { messages: 1, recipients: 10 };
    limits.configure([("vanthu@ninhthuan.gov.vn".to_owned(), user, false)], client);
    let mut policy = (*policy()).clone();
    policy.limits = Arc::new(limits);
    (Arc::new(policy), now)
}

#[test]
fn hourly_limits_per_client_on_a_virtual_clock() {
    let (policy, now) = limited(lienthong_config::HourlyLimits { messages: 2, recipients: 3 });
    let transaction =
        "MAIL FROM:<a@example.org>\r\nRCPT TO:<vanthu@ninhthuan.gov.vn>\r\nRCPT TO:<ubnd@ninhthuan.gov.vn>\r\nRSET\r\n";
    let mut stranger = Session::new(policy.clone(), Listener::Mx, STRANGER.parse().unwrap(), None, true);
    let (replies, _) = run(&mut stranger, &format!("EHLO x\r\n{transaction}{transaction}{transaction}"));
    // Recipients: 3 of 4 accepted, the 4th "452 4.7.28"; the third MAIL "450 4.7.28".
    assert_eq!(
        codes(&replies),
        ["220", "250", "250", "250", "250", "250", "250", "250", "452", "250", "450", "503", "503", "250"]
    );
    assert!(replies.contains("452 4.7.28") && replies.contains("450 4.7.28"), "{replies}");
    // relay_from is exempt, another client has its own counters.
    let mut trusted = Session::new(policy.clone(), Listener::Mx, "10.20.0.20".parse().unwrap(), None, true);
    let (replies, _) = run(&mut trusted, &format!("EHLO x\r\n{transaction}{transaction}{transaction}"));
    assert!(!replies.contains("4.7.28"), "{replies}");
    let mut other = Session::new(policy.clone(), Listener::Mx, "198.51.100.7".parse().unwrap(), None, true);
    assert!(!run(&mut other, &format!("EHLO x\r\n{transaction}")).0.contains("4.7.28"));
    // Two hours later the client starts afresh.
    *now.lock().unwrap() += std::time::Duration::from_secs(2 * 3600);
    let (replies, _) = run(&mut stranger, transaction);
    assert_eq!(codes(&replies), ["250", "250", "250", "250"]);
}

#[test]
fn suspension_reaches_an_authenticated_session_and_user_limits_apply() {
    let (policy, _now) = limited(lienthong_config::HourlyLimits::CLIENT_DEFAULT);
    let mut session = Session::new(policy.clone(), Listener::Submission, STRANGER.parse().unwrap(), Some(tls()), true);
    let login = plain("vanthu@ninhthuan.gov.vn", "dung");
    let mail = "MAIL FROM:<vanthu@ninhthuan.gov.vn>\r\nRSET\r\n";
    let (replies, _) = run(&mut session, &format!("EHLO x\r\nAUTH PLAIN {login}\r\n{mail}{mail}"));
    assert_eq!(codes(&replies), ["220", "250", "235", "250", "250", "450", "250"]);
    let user = lienthong_config::HourlyLimits { messages: 1, recipients: 10 };
    let client = lienthong_config::HourlyLimits::CLIENT_DEFAULT;
    policy.limits.configure([("vanthu@ninhthuan.gov.vn".to_owned(), user, true)], client);
    let (replies, _) = run(&mut session, mail);
    assert!(replies.starts_with("550 5.7.13"), "{replies}");
    session.authentication_result("vanthu@ninhthuan.gov.vn", AuthOutcome::Suspended);
    assert!(String::from_utf8(session.take_output()).unwrap().starts_with("525 5.7.13"));
}
