//! Header work on accepted messages: trace headers, missing `Message-ID:`/`Date:`, `From:`.
//!
//! The body is never changed: headers are only ever prepended, so Vietnamese 8-bit and UTF-8
//! content arrives byte for byte.

use mail_parser::{DateTime, MessageParser};

use crate::session::{Incoming, Listener};

/// The header section (up to and including the empty line, or everything if there is none).
pub fn header_section(content: &[u8]) -> &[u8] {
    if content.starts_with(b"\r\n") {
        return &content[..2];
    }
    match content.windows(4).position(|window| window == b"\r\n\r\n") {
        Some(end) => &content[..end + 4],
        None => content,
    }
}

/// Whether the header section has a field named `name` (case-insensitive).
pub fn has_header(headers: &[u8], name: &str) -> bool {
    headers.split(|&byte| byte == b'\n').any(|line| {
        line.len() > name.len()
            && line[..name.len()].eq_ignore_ascii_case(name.as_bytes())
            && line[name.len()..].trim_ascii_start().first() == Some(&b':')
    })
}

/// The addresses in the `From:` header(s), lowercase.
pub fn from_addresses(content: &[u8]) -> Vec<String> {
    let headers = header_section(content);
    let Some(message) = MessageParser::new().parse_headers(headers) else { return Vec::new() };
    let Some(from) = message.from() else { return Vec::new() };
    from.iter().filter_map(|address| address.address()).map(str::to_lowercase).collect()
}

/// The bytes stored in the queue: our `Received:` first, `Message-ID:`/`Date:` added for
/// submissions that lack them, then the message exactly as received.
pub fn compose(id: &str, incoming: &Incoming, hostname: &str, now_unix: u64) -> Vec<u8> {
    let date = rfc822_date(now_unix);
    let trace = &incoming.trace;
    let mut protocol = String::from(if trace.esmtp { "ESMTP" } else { "SMTP" });
    if trace.tls.is_some() {
        protocol.push('S');
    }
    if trace.authenticated.is_some() {
        protocol.push('A');
    }
    if incoming.envelope.smtputf8 {
        protocol = format!("UTF8{protocol}");
    }
    let tls = trace
        .tls
        .as_ref()
        .map(|tls| format!("\r\n\t(using {} with cipher {})", tls.protocol, tls.cipher))
        .unwrap_or_default();
    let recipient = match incoming.envelope.recipients.as_slice() {
        [only] => format!("\r\n\tfor <{}>", only.address),
        _ => String::new(),
    };
    let mut header = format!(
        "Received: from {helo} ([{peer}])\r\n\tby {hostname} (lienthong) with {protocol} id {id}{tls}{recipient};\r\n\t{date}\r\n",
        helo = if trace.helo.is_empty() { "unknown" } else { &trace.helo },
        peer = trace.peer,
    );
    if trace.listener != Listener::Mx {
        let headers = header_section(&incoming.content);
        if !has_header(headers, "Message-ID") {
            header.push_str(&format!("Message-ID: <{id}@{hostname}>\r\n"));
        }
        if !has_header(headers, "Date") {
            header.push_str(&format!("Date: {date}\r\n"));
        }
    }
    let mut stored = Vec::with_capacity(header.len() + incoming.content.len());
    stored.extend_from_slice(header.as_bytes());
    stored.extend_from_slice(&incoming.content);
    stored
}

pub fn rfc822_date(unix: u64) -> String {
    DateTime::from_timestamp(i64::try_from(unix).unwrap_or(i64::MAX)).to_rfc822()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_headers_and_from() {
        let content = "From: \"Văn thư\" <VanThu@NinhThuan.gov.vn>, b@x.vn\r\nSubject: Giấy mời\r\n\r\nBody\r\nFrom: evil@x.vn\r\n".as_bytes();
        assert_eq!(from_addresses(content), vec!["vanthu@ninhthuan.gov.vn", "b@x.vn"]);
        let headers = header_section(content);
        assert!(has_header(headers, "subject"));
        assert!(!has_header(headers, "Date"));
        assert!(!has_header(b"Subject-Date: x\r\n\r\n", "Subject"));
    }

    fn incoming(listener: Listener, content: &str) -> Incoming {
        use crate::session::{Envelope, TlsInfo, Trace};
        Incoming {
            envelope: Envelope::default(),
            trace: Trace {
                helo: "laptop".into(),
                peer: "10.20.3.4".parse().unwrap(),
                tls: Some(TlsInfo { protocol: "TLSv1.3".into(), cipher: "TLS13_AES_256_GCM_SHA384".into() }),
                authenticated: Some("vanthu@ninhthuan.gov.vn".into()),
                esmtp: true,
                listener,
            },
            content: content.as_bytes().to_vec(),
        }
    }

    #[test]
    fn submission_gets_message_id_and_date_relay_does_not() {
        let stored =
            compose("ABC", &incoming(Listener::Submission, "Subject: x\r\n\r\nbody\r\n"), "mail.ninhthuan.gov.vn", 0);
        let text = String::from_utf8(stored).unwrap();
        assert!(text.starts_with(
            "Received: from laptop ([10.20.3.4])\r\n\tby mail.ninhthuan.gov.vn (lienthong) with ESMTPSA id ABC"
        ));
        assert!(text.contains("(using TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384)"));
        assert!(text.contains("Message-ID: <ABC@mail.ninhthuan.gov.vn>\r\n") && text.contains("Date: "));
        assert!(text.ends_with("Subject: x\r\n\r\nbody\r\n"));
        let stored = compose("ABC", &incoming(Listener::Mx, "Subject: x\r\n\r\nbody\r\n"), "mail.ninhthuan.gov.vn", 0);
        assert!(!String::from_utf8(stored).unwrap().contains("Message-ID"));
        let already = "Message-ID: <a@b>\r\nDate: Mon, 23 Nov 2026 08:00:00 +0700\r\n\r\nx\r\n";
        let stored = compose("ABC", &incoming(Listener::Submission, already), "mail.ninhthuan.gov.vn", 0);
        assert_eq!(String::from_utf8(stored).unwrap().matches("Message-ID").count(), 1);
    }
}
