//! The conversation over scripted replies: no sockets.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use smtp_proto::{EXT_8BIT_MIME, EXT_DSN, EXT_SIZE};

use super::*;

const EHLO_CLEAR: &str = "250-mx.example.vn hello\r\n250-SIZE 10000000\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n";

fn address(text: &str) -> Address {
    Address::parse(text).unwrap()
}

/// Feeds one scripted reply and reports what the conversation does.
fn say(conversation: &mut Conversation, reply: &str) -> Action {
    conversation.feed(reply.as_bytes());
    conversation.advance()
}

fn written(conversation: &mut Conversation) -> String {
    String::from_utf8(conversation.take_output()).unwrap()
}

/// Greeting and `EHLO` done, in clear text, with `ehlo` as the `EHLO` reply.
fn ready(ehlo: &str) -> Conversation {
    let mut conversation = Conversation::new("relay.example.vn".into(), Encryption::WhenOffered);
    assert_eq!(conversation.advance(), Action::Read(Wait::Command));
    assert_eq!(say(&mut conversation, "220 mx.example.vn ESMTP\r\n"), Action::Read(Wait::Command));
    assert_eq!(written(&mut conversation), "EHLO relay.example.vn\r\n");
    assert_eq!(say(&mut conversation, ehlo), Action::Ready);
    conversation
}

fn message<'a>(recipients: &'a [Address], content: &'a [u8]) -> Outgoing<'a> {
    Outgoing {
        sender: None,
        recipients: recipients.iter().map(|recipient| (recipient, 0, None)).collect(),
        content,
        eight_bit: false,
        smtputf8: false,
        return_full: false,
        envelope_id: None,
        require_tls: false,
    }
}

fn recipients(count: usize) -> Vec<Address> {
    (0..count).map(|index| address(&format!("user{index}@example.vn"))).collect()
}

fn failed(action: &Action) -> &Failure {
    match action {
        Action::Failed(failure) => failure,
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn greeting_ehlo_and_starttls_then_ehlo_again() {
    let mut conversation = Conversation::new("relay.example.vn".into(), Encryption::Required);
    assert_eq!(say(&mut conversation, "220-mx.example.vn ESMTP\r\n220 no UCE\r\n"), Action::Read(Wait::Command));
    assert_eq!(written(&mut conversation), "EHLO relay.example.vn\r\n");
    // Odd case and spacing, a long keyword, an old-style AUTH= line: all understood or skipped.
    let ehlo = "250-mx.example.vn  says hi\r\n250-size 1000\r\n250-AUTH=LOGIN PLAIN\r\n\
                250-X-SOME-VERY-LONG-EXTENSION-KEYWORD arg\r\n250 starttls\r\n";
    assert_eq!(say(&mut conversation, ehlo), Action::Read(Wait::Command));
    assert_eq!(written(&mut conversation), "STARTTLS\r\n");
    assert_eq!(say(&mut conversation, "220 2.0.0 go ahead\r\n"), Action::StartTls);
    assert_eq!(conversation.advance(), Action::StartTls, "waits for the handshake");
    conversation.tls_started();
    assert_eq!(conversation.advance(), Action::Read(Wait::Command));
    assert_eq!(written(&mut conversation), "EHLO relay.example.vn\r\n");
    assert_eq!(say(&mut conversation, "250-mx.example.vn\r\n250-DSN\r\n250 REQUIRETLS\r\n"), Action::Ready);
    let extensions = conversation.extensions();
    assert!(extensions.offers(EXT_DSN) && extensions.offers(EXT_REQUIRE_TLS));
    assert!(!extensions.offers(EXT_SIZE), "what was said before TLS is forgotten");
}

#[test]
fn replies_may_arrive_a_byte_at_a_time() {
    let mut conversation = Conversation::new("relay.example.vn".into(), Encryption::WhenOffered);
    for byte in b"220 mx\r\n" {
        assert_eq!(conversation.advance(), Action::Read(Wait::Command));
        conversation.feed(&[*byte]);
    }
    assert_eq!(conversation.advance(), Action::Read(Wait::Command));
    let mut last = Action::Read(Wait::Command);
    for byte in EHLO_CLEAR.as_bytes() {
        conversation.feed(&[*byte]);
        last = conversation.advance();
    }
    assert_eq!(last, Action::Ready);
    assert!(conversation.extensions().offers(EXT_SIZE) && conversation.extensions().offers(EXT_8BIT_MIME));
}

#[test]
fn clear_text_only_when_tls_is_not_required() {
    let conversation = ready(EHLO_CLEAR);
    assert!(!conversation.extensions().offers(EXT_START_TLS));
    let mut required = Conversation::new("relay.example.vn".into(), Encryption::Required);
    say(&mut required, "220 mx\r\n");
    let action = say(&mut required, EHLO_CLEAR);
    let failure = failed(&action);
    assert!(failure.security && !failure.permanent && failure.message.contains("STARTTLS"), "{failure:?}");
}

#[test]
fn starttls_refused_is_a_security_failure_and_never_falls_back() {
    for encryption in [Encryption::Required, Encryption::WhenOffered] {
        let mut conversation = Conversation::new("relay.example.vn".into(), encryption);
        say(&mut conversation, "220 mx\r\n");
        say(&mut conversation, "250-mx\r\n250 STARTTLS\r\n");
        written(&mut conversation);
        let action = say(&mut conversation, "454 4.7.0 TLS not available\r\n");
        let failure = failed(&action);
        assert!(failure.security && failure.message.contains("454 4.7.0 TLS not available"), "{failure:?}");
        assert_eq!(written(&mut conversation), "", "no MAIL in clear text");
    }
}

#[test]
fn replies_injected_before_the_tls_handshake_fail_the_connection() {
    let mut conversation = Conversation::new("relay.example.vn".into(), Encryption::Required);
    say(&mut conversation, "220 mx\r\n");
    say(&mut conversation, "250-mx\r\n250 STARTTLS\r\n");
    let action = say(&mut conversation, "220 go ahead\r\n250-mx\r\n250 AUTH PLAIN\r\n");
    assert!(failed(&action).message.contains("more data after the reply"), "{action:?}");
}

#[test]
fn a_transaction_with_every_parameter_and_partial_acceptance() {
    let ehlo = "250-mx\r\n250-SIZE\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 DSN\r\n";
    let mut conversation = ready(ehlo);
    let sender = address("an@sender.vn");
    let to = recipients(4);
    let original = OriginalRecipient::new("old@example.vn").unwrap();
    let id = EnvelopeId::new("id+1").unwrap();
    let content = b"Subject: x\r\n\r\n.dot\r\nend";
    let mut outgoing = message(&to, content);
    outgoing.sender = Some(&sender);
    outgoing.eight_bit = true;
    outgoing.smtputf8 = true;
    outgoing.return_full = true;
    outgoing.envelope_id = Some(&id);
    outgoing.recipients[0].1 = smtp_proto::RCPT_NOTIFY_FAILURE | smtp_proto::RCPT_NOTIFY_DELAY;
    outgoing.recipients[0].2 = Some(&original);
    outgoing.recipients[1].1 = smtp_proto::RCPT_NOTIFY_NEVER;
    conversation.start_transaction(&outgoing);
    assert_eq!(conversation.advance(), Action::Read(Wait::Command));
    assert_eq!(
        written(&mut conversation),
        format!("MAIL FROM:<an@sender.vn> SIZE={} BODY=8BITMIME SMTPUTF8 RET=FULL ENVID=id+2B1\r\n", content.len())
    );
    assert_eq!(say(&mut conversation, "250 2.1.0 ok\r\n"), Action::Read(Wait::Command));
    assert_eq!(
        written(&mut conversation),
        "RCPT TO:<user0@example.vn> NOTIFY=FAILURE,DELAY ORCPT=rfc822;old@example.vn\r\n"
    );
    say(&mut conversation, "250 2.1.5 ok\r\n");
    assert_eq!(written(&mut conversation), "RCPT TO:<user1@example.vn> NOTIFY=NEVER\r\n");
    say(&mut conversation, "550 5.1.1 no such user\r\n");
    assert_eq!(written(&mut conversation), "RCPT TO:<user2@example.vn>\r\n");
    say(&mut conversation, "251 will forward\r\n");
    say(&mut conversation, "450 4.2.1 try later\r\n");
    assert_eq!(written(&mut conversation), "RCPT TO:<user3@example.vn>\r\nDATA\r\n");
    assert_eq!(say(&mut conversation, "354 go\r\n"), Action::SendContent);
    conversation.write_content(content);
    assert_eq!(conversation.advance(), Action::Read(Wait::Content));
    assert_eq!(written(&mut conversation), "Subject: x\r\n\r\n..dot\r\nend\r\n.\r\n");
    let Action::Finished { outcomes, reusable } = say(&mut conversation, "250 2.0.0 queued as X\r\n") else {
        panic!("not finished")
    };
    assert!(reusable);
    let codes: Vec<Result<u16, u16>> =
        outcomes.iter().map(|outcome| outcome.as_ref().map(|r| r.code).map_err(|r| r.code)).collect();
    assert_eq!(codes, [Ok(250), Err(550), Ok(250), Err(450)]);
    assert_eq!(outcomes[0].as_ref().unwrap().to_string(), "250 2.0.0 queued as X");
    assert_eq!(outcomes[1].as_ref().unwrap_err().to_string(), "550 5.1.1 no such user");
    // The connection is reusable: the next transaction starts at MAIL.
    assert_eq!(conversation.advance(), Action::Ready);
    conversation.start_transaction(&message(&to[..1], b"x\r\n"));
    assert_eq!(conversation.advance(), Action::Read(Wait::Command));
    assert!(written(&mut conversation).starts_with("MAIL FROM:<> SIZE=3 RET=HDRS\r\n"));
}

#[test]
fn parameters_are_sent_only_when_offered() {
    let mut conversation = ready("250 mx\r\n");
    let to = recipients(1);
    let original = OriginalRecipient::new("old@example.vn").unwrap();
    let mut outgoing = message(&to, b"x");
    outgoing.eight_bit = true;
    outgoing.smtputf8 = true;
    outgoing.recipients[0] = (&to[0], smtp_proto::RCPT_NOTIFY_SUCCESS, Some(&original));
    conversation.start_transaction(&outgoing);
    conversation.advance();
    assert_eq!(written(&mut conversation), "MAIL FROM:<>\r\n");
    say(&mut conversation, "250 ok\r\n");
    assert_eq!(written(&mut conversation), "RCPT TO:<user0@example.vn>\r\n");
}

#[test]
fn data_accepted_then_refused_after_the_content() {
    let mut conversation = ready(EHLO_CLEAR);
    let to = recipients(2);
    conversation.start_transaction(&message(&to, b"x\r\n"));
    conversation.advance();
    say(&mut conversation, "250 ok\r\n");
    say(&mut conversation, "250 ok\r\n");
    say(&mut conversation, "550 5.1.1 unknown\r\n");
    assert_eq!(say(&mut conversation, "354 go\r\n"), Action::SendContent);
    conversation.write_content(b"x\r\n");
    let Action::Finished { outcomes, reusable } = say(&mut conversation, "554 5.7.1 spam\r\n") else { panic!() };
    assert!(reusable);
    assert_eq!(outcomes[0], Err(Reply { code: 554, text: "5.7.1 spam".into() }));
    assert_eq!(outcomes[1], Err(Reply { code: 550, text: "5.1.1 unknown".into() }), "its own refusal stays");
}

#[test]
fn data_refused_resets_and_keeps_the_connection() {
    let mut conversation = ready(EHLO_CLEAR);
    let to = recipients(1);
    conversation.start_transaction(&message(&to, b"x\r\n"));
    conversation.advance();
    say(&mut conversation, "250 ok\r\n");
    say(&mut conversation, "250 ok\r\n");
    written(&mut conversation);
    assert_eq!(say(&mut conversation, "451 4.3.0 later\r\n"), Action::Read(Wait::Command));
    assert_eq!(written(&mut conversation), "RSET\r\n");
    let Action::Finished { outcomes, reusable } = say(&mut conversation, "250 reset\r\n") else { panic!() };
    assert!(reusable);
    assert_eq!(outcomes, [Err(Reply { code: 451, text: "4.3.0 later".into() })]);
}

#[test]
fn every_recipient_refused_sends_no_data() {
    let mut conversation = ready(EHLO_CLEAR);
    let to = recipients(2);
    conversation.start_transaction(&message(&to, b"x\r\n"));
    conversation.advance();
    written(&mut conversation);
    say(&mut conversation, "250 ok\r\n");
    say(&mut conversation, "550 no\r\n");
    say(&mut conversation, "450 later\r\n");
    assert_eq!(written(&mut conversation), "RCPT TO:<user0@example.vn>\r\nRCPT TO:<user1@example.vn>\r\nRSET\r\n");
    // A RSET reply out of step keeps the outcomes but not the connection.
    let Action::Finished { outcomes, reusable } = say(&mut conversation, "500 what\r\n250 ok\r\n") else { panic!() };
    assert!(!reusable);
    assert_eq!(outcomes.len(), 2);
}

#[test]
fn mail_refused_is_a_failure_for_the_whole_transaction() {
    let mut conversation = ready(EHLO_CLEAR);
    let to = recipients(2);
    conversation.start_transaction(&message(&to, b"x\r\n"));
    conversation.advance();
    written(&mut conversation);
    assert_eq!(say(&mut conversation, "553 5.1.8 bad sender\r\n"), Action::Read(Wait::Command));
    assert_eq!(written(&mut conversation), "RSET\r\n");
    let action = conversation.closed("connection reset");
    let failure = failed(&action);
    assert!(failure.permanent && failure.message == "MAIL FROM refused: 553 5.1.8 bad sender", "{failure:?}");
    let mut temporary = ready(EHLO_CLEAR);
    temporary.start_transaction(&message(&to, b"x\r\n"));
    temporary.advance();
    say(&mut temporary, "452 4.3.1 full\r\n");
    assert!(!failed(&say(&mut temporary, "250 ok\r\n")).permanent);
}

#[test]
fn closing_421_before_the_first_reply_is_a_lost_connection_later_a_failure() {
    let to = recipients(2);
    let mut conversation = ready(EHLO_CLEAR);
    conversation.start_transaction(&message(&to, b"x\r\n"));
    conversation.advance();
    assert_eq!(say(&mut conversation, "421 4.4.2 idle too long\r\n"), Action::Lost);
    let mut conversation = ready(EHLO_CLEAR);
    conversation.start_transaction(&message(&to, b"x\r\n"));
    assert_eq!(conversation.advance(), Action::Read(Wait::Command));
    assert_eq!(conversation.closed("connection closed"), Action::Lost);

    let mut conversation = ready(EHLO_CLEAR);
    conversation.start_transaction(&message(&to, b"x\r\n"));
    conversation.advance();
    say(&mut conversation, "250 ok\r\n");
    say(&mut conversation, "250 ok\r\n");
    let action = say(&mut conversation, "421 4.3.2 shutting down\r\n");
    let failure = failed(&action);
    assert!(!failure.permanent && failure.message.contains("421 4.3.2 shutting down"), "{failure:?}");
    assert!(matches!(conversation.advance(), Action::Failed(_)), "nothing more on this connection");
}

#[test]
fn a_lost_connection_after_the_content_is_a_temporary_failure() {
    let mut conversation = ready(EHLO_CLEAR);
    let to = recipients(1);
    conversation.start_transaction(&message(&to, b"x\r\n"));
    conversation.advance();
    say(&mut conversation, "250 ok\r\n");
    say(&mut conversation, "250 ok\r\n");
    say(&mut conversation, "354 go\r\n");
    conversation.write_content(b"x\r\n");
    assert_eq!(conversation.advance(), Action::Read(Wait::Content));
    let action = conversation.closed("reply timeout");
    let failure = failed(&action);
    assert!(!failure.permanent && failure.message.starts_with("no usable reply after the message content"));
}

#[test]
fn malformed_and_unasked_for_replies_fail_without_panicking() {
    let to = recipients(1);
    for garbage in [
        &b"250 ok\r\n250 ok\r\n"[..],
        b"354 go ahead\r\n",
        b"250-a\r\n251 b\r\n",
        b"25 short\r\n",
        b"250xok\r\n",
        b"199 what\r\n",
        b"600 what\r\n",
        b"\x00\xff\x1b[2J\r\n",
        b"\r\n",
        b"HTTP/1.1 400 Bad Request\r\n",
    ] {
        let mut conversation = ready(EHLO_CLEAR);
        conversation.start_transaction(&message(&to, b"x\r\n"));
        conversation.advance();
        say(&mut conversation, "250 ok\r\n");
        conversation.feed(garbage);
        let action = conversation.advance();
        let failure = failed(&action);
        assert!(!failure.permanent && failure.message.contains("out of step"), "{garbage:?}: {failure:?}");
    }
}

#[test]
fn oversize_replies_fail_and_the_input_stays_bounded() {
    let mut conversation = Conversation::new("relay.example.vn".into(), Encryption::WhenOffered);
    let long = format!("220 {}", "x".repeat(MAX_REPLY_BYTES));
    let action = say(&mut conversation, &long);
    assert!(failed(&action).message.contains("reply too long"), "{action:?}");

    let mut conversation = Conversation::new("relay.example.vn".into(), Encryption::WhenOffered);
    for _ in 0..1000 {
        conversation.feed(&[b'2'; 1024]);
        assert!(conversation.replies.input.len() <= MAX_REPLY_BYTES + 1);
    }
    assert!(matches!(conversation.advance(), Action::Failed(_)));

    let mut conversation = Conversation::new("relay.example.vn".into(), Encryption::WhenOffered);
    let many = "220-x\r\n".repeat(MAX_REPLY_LINES) + "220 x\r\n";
    assert!(many.len() < MAX_REPLY_BYTES);
    let action = say(&mut conversation, &many);
    assert!(failed(&action).message.contains("too many lines"), "{action:?}");
    let fits = "220-x\r\n".repeat(MAX_REPLY_LINES - 1) + "220 x\r\n";
    let mut conversation = Conversation::new("relay.example.vn".into(), Encryption::WhenOffered);
    assert_eq!(say(&mut conversation, &fits), Action::Read(Wait::Command));
}

#[test]
fn reply_text_is_sanitized_and_joined() {
    let mut conversation = ready(EHLO_CLEAR);
    conversation.start_transaction(&message(&recipients(1), b"x\r\n"));
    conversation.advance();
    say(&mut conversation, "250 ok\r\n");
    say(&mut conversation, "550-5.1.1 no\x00 such\x1b user \r\n550 5.1.1 see https://example.vn\r\n");
    let Action::Finished { outcomes, .. } = say(&mut conversation, "250 ok\r\n") else { panic!() };
    let refusal = outcomes[0].as_ref().unwrap_err();
    assert_eq!(refusal.text, "5.1.1 no? such? user\nsee https://example.vn");
    assert_eq!(refusal.to_string(), "550 5.1.1 no? such? user see https://example.vn");
}

#[test]
fn requiretls_needs_tls_and_the_extension() {
    let to = recipients(1);
    let mut outgoing = message(&to, b"x");
    outgoing.require_tls = true;
    let mut clear = ready("250-mx\r\n250 REQUIRETLS\r\n");
    clear.start_transaction(&outgoing);
    let action = clear.advance();
    let failure = failed(&action);
    assert!(failure.permanent && failure.security && failure.message.starts_with("550 5.7.10"));
    assert_eq!(written(&mut clear), "", "no MAIL written");

    let secured = |ehlo: &str| {
        let mut conversation = Conversation::new("relay.example.vn".into(), Encryption::Required);
        say(&mut conversation, "220 mx\r\n");
        say(&mut conversation, "250-mx\r\n250 STARTTLS\r\n");
        say(&mut conversation, "220 go\r\n");
        conversation.tls_started();
        assert_eq!(say(&mut conversation, ehlo), Action::Ready);
        written(&mut conversation);
        conversation
    };
    let mut without = secured("250 mx\r\n");
    without.start_transaction(&outgoing);
    assert!(failed(&without.advance()).security);
    let mut with = secured("250-mx\r\n250 REQUIRETLS\r\n");
    with.start_transaction(&outgoing);
    assert_eq!(with.advance(), Action::Read(Wait::Command));
    assert_eq!(written(&mut with), "MAIL FROM:<> REQUIRETLS\r\n");
}

#[test]
fn the_probe_asks_one_recipient_and_quits() {
    let mut conversation = ready("250-mx\r\n250 SMTPUTF8\r\n");
    conversation.start_probe(&address("nguyễn@example.vn"));
    assert_eq!(conversation.advance(), Action::Read(Wait::Command));
    assert_eq!(written(&mut conversation), "MAIL FROM:<> SMTPUTF8\r\n");
    say(&mut conversation, "250 ok\r\n");
    assert_eq!(written(&mut conversation), "RCPT TO:<nguyễn@example.vn>\r\n");
    let action = say(&mut conversation, "550 5.1.1 unknown\r\n");
    assert_eq!(action, Action::Probed(Reply { code: 550, text: "5.1.1 unknown".into() }));
    assert_eq!(written(&mut conversation), "QUIT\r\n");

    let mut refused = ready(EHLO_CLEAR);
    refused.start_probe(&address("user@example.vn"));
    refused.advance();
    assert_eq!(written(&mut refused), "MAIL FROM:<>\r\n");
    assert!(failed(&say(&mut refused, "550 no null sender\r\n")).permanent);
    assert_eq!(written(&mut refused), "QUIT\r\n");
}

#[test]
fn dot_stuffing() {
    assert_eq!(dot_stuff(b".a\r\nb\r\n..c\r\n"), b"..a\r\nb\r\n...c\r\n");
    assert_eq!(dot_stuff(b"no end"), b"no end\r\n");
}

#[test]
fn command_lines_cannot_carry_control_characters() {
    assert!(CommandLine::new("MAIL FROM:<a@b.example> ENVID=x+0D+0A".into()).is_some());
    assert!(CommandLine::new("RCPT TO:<nguyễn@b.example>".into()).is_some());
    for text in ["MAIL FROM:<a@b>\r\nRSET", "RCPT TO:<a@b>\n", "NOOP\x00", "NOOP\u{85}"] {
        assert!(CommandLine::new(text.into()).is_none(), "{text:?}");
    }
    let mut conversation = Conversation::new("relay\r\nRSET".into(), Encryption::WhenOffered);
    say(&mut conversation, "220 mx\r\n");
    assert_eq!(written(&mut conversation), "EHLO\r\n");
}

/// Random replies (good, refusing, closing, malformed, split anywhere) and random closes: the
/// conversation never panics, always ends, and a finished transaction has exactly one outcome
/// per recipient.
#[test]
fn random_reply_sequences_end_with_one_outcome_per_recipient() {
    const REPLIES: &[&str] = &[
        "220 mx\r\n",
        "250 ok\r\n",
        "250-mx\r\n250-STARTTLS\r\n250 DSN\r\n",
        "250-mx\r\n250 SIZE 10\r\n",
        "251 forwarded\r\n",
        "354 go\r\n",
        "421 4.4.2 closing\r\n",
        "450 4.2.1 later\r\n",
        "451-4.3.0 a\r\n451 4.3.0 b\r\n",
        "550 5.1.1 unknown\r\n",
        "554 5.7.1 no\r\n",
        "250 ok\r\n250 ok\r\n",
        "2",
        "25",
        "\r\n",
        "999 x\r\n",
        "250-unterminated",
        "\x00\x00\x00",
    ];
    let mut random = StdRng::seed_from_u64(12);
    let mut finished = 0;
    for case in 0..5000 {
        let count = random.random_range(0..5);
        let to = recipients(count);
        let outgoing = message(&to, b"x\r\n");
        let encryption = if random.random_bool(0.5) { Encryption::Required } else { Encryption::WhenOffered };
        let mut conversation = Conversation::new("relay.example.vn".into(), encryption);
        let mut started = false;
        let mut steps = 0;
        loop {
            steps += 1;
            assert!(steps < 200, "case {case}: no end");
            match conversation.advance() {
                Action::Read(_) => {
                    let output = conversation.take_output();
                    if random.random_bool(0.01) {
                        let ended = conversation.closed("closed");
                        assert!(matches!(ended, Action::Failed(_) | Action::Lost | Action::Finished { .. }));
                        if let Action::Finished { outcomes, .. } = ended {
                            assert_eq!(outcomes.len(), count, "case {case}");
                        }
                        break;
                    }
                    // Mostly a plausible server, sometimes anything at all.
                    let plausible: &[&str] = match output.get(..4) {
                        None => &["220 mx\r\n"],
                        Some(b"EHLO") => &["250-mx\r\n250-STARTTLS\r\n250 DSN\r\n", "250-mx\r\n250 SIZE 10\r\n"],
                        Some(b"STAR") => &["220 go\r\n"],
                        Some(b"DATA") => &["354 go\r\n"],
                        Some(b"RCPT") => {
                            &["250 ok\r\n", "251 forwarded\r\n", "450 4.2.1 later\r\n", "550 5.1.1 no\r\n"]
                        }
                        Some(_) => &["250 ok\r\n", "451-4.3.0 a\r\n451 4.3.0 b\r\n", "554 5.7.1 no\r\n"],
                    };
                    let pool = if random.random_bool(0.92) { plausible } else { REPLIES };
                    let reply = pool[random.random_range(0..pool.len())].as_bytes();
                    let split = random.random_range(0..=reply.len());
                    conversation.feed(&reply[..split]);
                    conversation.feed(&reply[split..]);
                    assert!(conversation.replies.input.len() <= MAX_REPLY_BYTES + 1);
                }
                Action::StartTls => conversation.tls_started(),
                Action::SendContent => conversation.write_content(outgoing.content),
                Action::Ready if !started => {
                    started = true;
                    conversation.start_transaction(&outgoing);
                }
                Action::Ready => panic!("case {case}: ready again without finishing"),
                Action::Finished { outcomes, .. } => {
                    assert!(started);
                    assert_eq!(outcomes.len(), count, "case {case}");
                    finished += 1;
                    break;
                }
                Action::Failed(_) | Action::Lost => break,
                Action::Probed(_) => panic!("case {case}: no probe was asked for"),
            }
        }
    }
    assert!(finished > 500, "only {finished} transactions finished: the generator tests little");
}
