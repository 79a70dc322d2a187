use super::*;

fn accepted(queue_id: &str, message_id: &str, sender: &str) -> Record {
    Record::Accepted(Accepted {
        queue_id: queue_id.into(),
        time: rfc3339(1_764_633_600),
        client: "203.0.113.7".into(),
        helo: "mail.example.org".into(),
        listener: "mx".into(),
        tls_version: Some("TLSv1_3".into()),
        tls_cipher: Some("TLS13_AES_256_GCM_SHA384".into()),
        user: None,
        sender: sender.into(),
        recipients: vec![format!("hopthu@{}", sender.rsplit('@').next().unwrap_or_default())],
        message_id: Some(message_id.into()),
        size: 1234,
        auth: None,
    })
}

#[test]
fn times_and_file_names_are_utc_days() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(1_764_633_599), "2025-12-01T23:59:59Z");
    assert_eq!(file_name(1_764_633_600), "audit-2025-12-02.jsonl");
    assert_eq!(file_date("audit-2025-12-02.jsonl"), Some("2025-12-02"));
    assert_eq!(file_date("audit-2025-12-2.jsonl"), None);
    assert_eq!(file_date("audit-../../x.jsonl"), None);
}

#[test]
fn no_control_character_is_written_raw() {
    // Every code point a hostile client could put in a Message-ID, HELO or reply text.
    let hostile: String = (0u32..0x3000).filter_map(char::from_u32).collect();
    let line = encode(&accepted("Q1", &hostile, "a\r\nb@x.vn")).unwrap();
    let text = String::from_utf8(line).unwrap();
    let body = text.strip_suffix('\n').unwrap();
    assert!(
        !body.chars().any(|character| character.is_control() || character == '\u{2028}' || character == '\u{2029}')
    );
    let back: Record = serde_json::from_str(body).unwrap();
    assert_eq!(back, accepted("Q1", &hostile, "a\r\nb@x.vn"), "escaping loses nothing");
}

#[test]
fn reply_lines_split_into_code_and_text() {
    assert_eq!(Attempt::reply_parts("250 2.0.0 Ok: queued"), (Some(250), "2.0.0 Ok: queued".into()));
    assert_eq!(Attempt::reply_parts("connection refused"), (None, "connection refused".into()));
    assert_eq!(Attempt::reply_parts("999 x"), (None, "999 x".into()));
}

#[tokio::test]
async fn lines_are_durable_private_and_traced() {
    use std::os::unix::fs::PermissionsExt;
    let state = tempfile::tempdir().unwrap();
    let directory = directory(state.path());
    // A file past retention and an unrelated file: only the first goes.
    std::fs::create_dir_all(&directory).unwrap();
    std::fs::write(directory.join("audit-2000-01-01.jsonl"), b"").unwrap();
    std::fs::write(directory.join("notes.txt"), b"").unwrap();
    let audit = Audit::open(&directory, 180).unwrap();
    let now = crate::unix_now();
    audit.write_durable(&accepted("Q1", "<giaymoi-1@ninhthuan.gov.vn>", "vanthu@ninhthuan.gov.vn"), now).await.unwrap();
    audit.write_durable(&accepted("Q2", "<other@x.vn>", "khac@x.vn"), now).await.unwrap();
    audit.write(
        &attempt("Q1", "vanthu@ninhthuan.gov.vn", Some("mx.x.vn"), "451 4.4.1 busy\u{1b}[2J", Outcome::Deferred, now),
        now,
    );
    let last = attempt("Q1", "vanthu@ninhthuan.gov.vn", Some("mx.x.vn"), "250 2.0.0 ok", Outcome::Delivered, now);
    audit.write_durable(&last, now).await.unwrap();

    let path = directory.join(file_name(now));
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(!directory.join("audit-2000-01-01.jsonl").exists(), "expired file kept");
    assert!(directory.join("notes.txt").exists());
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 4);

    for needle in ["giaymoi-1@ninhthuan.gov.vn", "<giaymoi-1@ninhthuan.gov.vn>", "VanThu@NinhThuan.gov.vn"] {
        let text = trace(&directory, &TraceQuery { needle: needle.into(), since: None }).unwrap();
        assert_eq!(text.matches("message ").count(), 1, "{needle}: {text}");
        assert!(text.contains("message Q1") && !text.contains("Q2"), "{text}");
        assert!(
            text.contains("deferred") && text.contains("delivered") && text.contains("via mx.x.vn: 250 2.0.0 ok"),
            "{text}"
        );
        assert!(!text.contains('\u{1b}') && text.contains("\\u{1b}"), "terminal escape printed raw: {text}");
    }
    let later = TraceQuery { needle: "khac@x.vn".into(), since: Some("2999-01-01".into()) };
    assert_eq!(trace(&directory, &later).unwrap(), "");
}

#[test]
fn an_attempt_under_dane_says_so_and_older_lines_still_read() {
    let now = 1_764_633_600;
    let dane = attempt("Q1", "a@khop.example", Some("mx.khop.example"), "250 2.0.0 ok", Outcome::Delivered, now)
        .under_dane(true);
    let line = String::from_utf8(encode(&dane).unwrap()).unwrap();
    assert!(line.contains("\"dane\":true"), "{line}");
    assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), dane);
    let plain = attempt("Q1", "a@x.vn", None, "451 4.4.1 busy", Outcome::Deferred, now).under_dane(false);
    let line = String::from_utf8(encode(&plain).unwrap()).unwrap();
    assert!(!line.contains("dane"), "only DANE attempts carry the field: {line}");
    assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), plain);

    let state = tempfile::tempdir().unwrap();
    std::fs::write(
        state.path().join(file_name(now)),
        [encode(&accepted("Q1", "<m@x.vn>", "v@x.vn")).unwrap(), encode(&dane).unwrap()].concat(),
    )
    .unwrap();
    let text = trace(state.path(), &TraceQuery { needle: "<m@x.vn>".into(), since: None }).unwrap();
    assert!(text.contains("via mx.khop.example (DANE): 250"), "{text}");
}
