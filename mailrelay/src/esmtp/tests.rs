use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

#[test]
fn envid_is_decoded_checked_and_reencoded() {
    let parameters = mail_parameters(b"MAIL FROM:<a@example.net> ENVID=QQ+2b123+20x RET=HDRS\r\n").unwrap();
    let id = parameters.envelope_id.unwrap();
    assert_eq!(id.as_str(), "QQ+123 x");
    assert_eq!(id.to_xtext().as_str(), "QQ+2B123+20x");
    assert_eq!(parameters.return_full, Some(false));
}

#[test]
fn envid_carrying_a_line_break_or_control_is_refused() {
    for line in [
        &b"MAIL FROM:<a@x.example> ENVID=x+0D+0ARCPT+20TO:<victim@y.example>\r\n"[..],
        b"MAIL FROM:<a@x.example> ENVID=x+0Ay\r\n",
        b"MAIL FROM:<a@x.example> ENVID=x+00\r\n",
        b"MAIL FROM:<a@x.example> ENVID=x+7F\r\n",
        b"MAIL FROM:<a@x.example> ENVID=x+C3+A1\r\n",
        b"MAIL FROM:<a@x.example> ENVID=x+0\r\n",
        b"MAIL FROM:<a@x.example> ENVID=x+GG\r\n",
        b"MAIL FROM:<a@x.example> ENVID=\r\n",
    ] {
        let error = mail_parameters(line).unwrap_err();
        assert_eq!(error.reply().0, 501, "{}", String::from_utf8_lossy(line));
        assert_eq!(error.reply().1, "5.5.4");
    }
    let long = format!("MAIL FROM:<a@x.example> ENVID={}\r\n", "a".repeat(101));
    assert_eq!(mail_parameters(long.as_bytes()), Err(ParameterError::Syntax("ENVID")));
    let exact = format!("MAIL FROM:<a@x.example> ENVID={}\r\n", "+41".repeat(100));
    assert_eq!(mail_parameters(exact.as_bytes()).unwrap().envelope_id.unwrap().as_str(), "A".repeat(100));
}

#[test]
fn raw_control_characters_among_parameters_are_refused() {
    for line in [
        &b"MAIL FROM:<a@x.example> ENVID=a\rb\r\n"[..],
        b"MAIL FROM:<a@x.example> SIZE=10\tBODY=8BITMIME\r\n",
        b"MAIL FROM:<a@x.example>ENVID=x\r\n",
        b"MAIL FROM:a@x.example ENVID=x\r\n",
        b"RCPT TO:<b@y.example> ORCPT=rfc822;b@y.example\x00\r\n",
        b"RCPT TO:<b@y.example> ORCPT=rfc822;b\xC3\xA1@y.example\r\n",
    ] {
        let result = if line.starts_with(b"MAIL") { mail_parameters(line).err() } else { rcpt_parameters(line).err() };
        assert!(result.is_some(), "{}", String::from_utf8_lossy(line));
    }
}

#[test]
fn orcpt_needs_its_type_and_xtext() {
    let parameters =
        rcpt_parameters(b"RCPT TO:<b@y.example> NOTIFY=FAILURE,DELAY ORCPT=rfc822;a+2Bb@y.example\r\n").unwrap();
    let original = parameters.original.unwrap();
    assert_eq!(original.address(), "a+b@y.example");
    assert_eq!(original.to_parameter(), "rfc822;a+2Bb@y.example");
    assert_eq!(original.to_string(), "rfc822; a+b@y.example");
    assert_eq!(parameters.notify, smtp_proto::RCPT_NOTIFY_FAILURE | smtp_proto::RCPT_NOTIFY_DELAY);
    for value in ["b@y.example", "x400;b@y.example", "rfc822;", "rfc822;a+0D+0ARSET", "rfc822;a=b"] {
        let line = format!("RCPT TO:<b@y.example> ORCPT={value}\r\n");
        assert_eq!(rcpt_parameters(line.as_bytes()), Err(ParameterError::Syntax("ORCPT")), "{value}");
    }
}

#[test]
fn each_known_parameter_is_checked_by_its_rfc() {
    let ok = mail_parameters(b"MAIL FROM:<\"a >b\"@x.example> size=123 Body=8bitmime SMTPUTF8 AUTH=<> RET=FULL\r\n")
        .unwrap();
    assert_eq!((ok.size, ok.body, ok.smtputf8, ok.return_full), (Some(123), BodyType::EightBitMime, true, Some(true)));
    assert_eq!(mail_parameters(b"MAIL FROM:<>\r\n"), Ok(MailParameters::default()));
    assert!(mail_parameters(b"MAIL FROM:<a@x> requiretls\r\n").unwrap().require_tls);
    assert_eq!(
        mail_parameters(b"MAIL FROM:<a@x> REQUIRETLS REQUIRETLS\r\n"),
        Err(ParameterError::Duplicate("REQUIRETLS"))
    );
    assert_eq!(rcpt_parameters(b"RCPT TO:<b@y> REQUIRETLS\r\n"), Err(ParameterError::Unsupported("REQUIRETLS".into())));
    let refused: [(&[u8], ParameterError); 10] = [
        (b"MAIL FROM:<a@x> SIZE=12a\r\n", ParameterError::Syntax("SIZE")),
        (b"MAIL FROM:<a@x> SIZE=123456789012345678901\r\n", ParameterError::Syntax("SIZE")),
        (b"MAIL FROM:<a@x> BODY=BINARYMIME\r\n", ParameterError::Syntax("BODY")),
        (b"MAIL FROM:<a@x> RET=ALL\r\n", ParameterError::Syntax("RET")),
        (b"MAIL FROM:<a@x> SMTPUTF8=yes\r\n", ParameterError::Syntax("SMTPUTF8")),
        (b"MAIL FROM:<a@x> AUTH=a+0Db\r\n", ParameterError::Syntax("AUTH")),
        (b"MAIL FROM:<a@x> RET=FULL ret=HDRS\r\n", ParameterError::Duplicate("RET")),
        (b"MAIL FROM:<a@x> REQUIRETLS=YES\r\n", ParameterError::Syntax("REQUIRETLS")),
        (b"MAIL FROM:<a@x> NOTIFY=NEVER\r\n", ParameterError::Unsupported("NOTIFY".into())),
        (b"MAIL FROM:<a@x> X=\r\n", ParameterError::Malformed),
    ];
    for (line, expected) in refused {
        assert_eq!(mail_parameters(line), Err(expected), "{}", String::from_utf8_lossy(line));
    }
    assert_eq!(rcpt_parameters(b"RCPT TO:<b@y> NOTIFY=NEVER,SUCCESS\r\n"), Err(ParameterError::Syntax("NOTIFY")));
    assert_eq!(rcpt_parameters(b"RCPT TO:<b@y> NOTIFY=never\r\n").unwrap().notify, smtp_proto::RCPT_NOTIFY_NEVER);
    assert_eq!(rcpt_parameters(b"RCPT TO:<b@y> SIZE=1\r\n"), Err(ParameterError::Unsupported("SIZE".into())));
}

#[test]
fn stored_values_that_no_longer_validate_are_dropped() {
    #[derive(serde::Deserialize)]
    struct Record {
        #[serde(default, deserialize_with = "lenient")]
        id: Option<EnvelopeId>,
        #[serde(default, deserialize_with = "lenient")]
        original: Option<OriginalRecipient>,
    }
    let record: Record = serde_json::from_str(r#"{"id":"x\r\nRCPT TO:<v@y>","original":"a@b"}"#).unwrap();
    assert!(record.id.is_none());
    assert_eq!(record.original.unwrap().address(), "a@b");
    let record: Record = serde_json::from_str(r#"{"id":"ok","original":null}"#).unwrap();
    assert_eq!(record.id.unwrap().as_str(), "ok");
    assert!(record.original.is_none());
}

/// Property over generated values: whatever bytes follow `ENVID=` or `ORCPT=rfc822;`, a value
/// either is refused or decodes to printable ASCII whose encoding is xtext and decodes back to
/// the same value; and no accepted wire form holds a byte outside xtext.
#[test]
fn generated_parameters_either_fail_or_round_trip_clean() {
    let mut random = StdRng::seed_from_u64(0x6E69_6E68);
    let alphabet: Vec<u8> = b"+0123456789ABCDEFabcdef\r\n\t =<>;:@.\x00\x7F\xC3\xA1RCPT".to_vec();
    let mut accepted = 0;
    for _ in 0..20_000 {
        let length = random.random_range(0..24);
        let value: Vec<u8> = (0..length).map(|_| alphabet[random.random_range(0..alphabet.len())]).collect();
        let mut mail = b"MAIL FROM:<a@x.example> ENVID=".to_vec();
        mail.extend_from_slice(&value);
        mail.extend_from_slice(b"\r\n");
        if let Ok(MailParameters { envelope_id: Some(id), .. }) = mail_parameters(&mail) {
            accepted += 1;
            let wire = id.to_xtext();
            assert!(wire.as_str().bytes().all(|byte| is_xchar(byte) || byte == b'+'), "{wire}");
            assert!(id.as_str().bytes().all(|byte| (0x20..=0x7E).contains(&byte)));
            assert_eq!(EnvelopeId::from_xtext(&XText::parse(wire.as_str()).unwrap()), Some(id));
        }
        let mut rcpt = b"RCPT TO:<b@y.example> ORCPT=rfc822;".to_vec();
        rcpt.extend_from_slice(&value);
        rcpt.extend_from_slice(b"\r\n");
        if let Ok(RcptParameters { original: Some(original), .. }) = rcpt_parameters(&rcpt) {
            let wire = original.to_parameter();
            assert!(wire.bytes().all(|byte| (0x21..=0x7E).contains(&byte)), "{wire}");
            assert_eq!(OriginalRecipient::from_parameter(&wire), Ok(original));
        }
    }
    assert!(accepted > 100, "the generator should also produce valid values ({accepted})");
}
