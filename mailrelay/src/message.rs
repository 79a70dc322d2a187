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

/// Whether the header section has `TLS-Required: No` (RFC 8689 5: the sender asks that the
/// recipient domain's MTA-STS or DANE policy not stop delivery). Folded values are unfolded.
pub fn waives_tls_policy(headers: &[u8]) -> bool {
    let mut lines = headers.split(|&byte| byte == b'\n').peekable();
    while let Some(line) = lines.next() {
        let Some(colon) = line.iter().position(|&byte| byte == b':') else { continue };
        if !line[..colon].eq_ignore_ascii_case(b"TLS-Required") {
            continue;
        }
        let mut value = line[colon + 1..].to_vec();
        while let Some(next) = lines.next_if(|next| next.first().is_some_and(|&byte| byte == b' ' || byte == b'\t')) {
            value.extend_from_slice(next);
        }
        return value.trim_ascii().eq_ignore_ascii_case(b"No");
    }
    false
}

/// Whether the header section has a field named `name` (case-insensitive).
pub fn has_header(headers: &[u8], name: &str) -> bool {
    headers.split(|&byte| byte == b'\n').any(|line| {
        line.len() > name.len()
            && line[..name.len()].eq_ignore_ascii_case(name.as_bytes())
            && line[name.len()..].trim_ascii_start().first() == Some(&b':')
    })
}

/// The unfolded value of the first field named `name` (case-insensitive), lossy UTF-8.
pub fn header_value(headers: &[u8], name: &str) -> Option<String> {
    let mut lines = headers.split(|&byte| byte == b'\n').map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    while let Some(line) = lines.next() {
        let named = line.len() > name.len()
            && line[..name.len()].eq_ignore_ascii_case(name.as_bytes())
            && line[name.len()..].trim_ascii_start().first() == Some(&b':');
        if !named {
            continue;
        }
        let colon = line.iter().position(|&byte| byte == b':')?;
        let mut value = line[colon + 1..].to_vec();
        for continuation in lines.by_ref() {
            if !continuation.first().is_some_and(|byte| *byte == b' ' || *byte == b'\t') {
                break;
            }
            value.extend_from_slice(continuation);
        }
        return Some(String::from_utf8_lossy(&value).trim().to_owned());
    }
    None
}

/// The originator fields of a message (RFC 5322 3.6.2), addresses lowercase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Originators {
    /// Every mailbox of the one `From:` field (at least one).
    pub from: Vec<String>,
    /// The mailbox of the `Sender:` field, if there is one.
    pub sender: Option<String>,
}

/// Why a message's originator fields are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginatorProblem {
    /// No `From:` or more than one (RFC 5322 3.6: exactly one).
    FromCount,
    /// More than one `Sender:` (RFC 5322 3.6: at most one).
    SenderCount,
    /// A `From:` or `Sender:` field without a readable address.
    Unreadable,
}

impl OriginatorProblem {
    pub fn text(self) -> &'static str {
        match self {
            Self::FromCount => "Message must have exactly one From: header (RFC 5322 3.6); not accepted",
            Self::SenderCount => "Message must not have more than one Sender: header (RFC 5322 3.6); not accepted",
            Self::Unreadable => "From: or Sender: header holds no readable address; not accepted",
        }
    }
}

/// Finds the `From:` and `Sender:` fields in the header section. The fields are counted and
/// cut out here, and only those bytes are handed to the address parser, so what is checked is
/// what a mail client displays.
pub fn originators(content: &[u8]) -> Result<Originators, OriginatorProblem> {
    let mut from = Vec::new();
    let mut sender = Vec::new();
    for field in header_fields(header_section(content)) {
        let Some(colon) = field.iter().position(|&byte| byte == b':') else { continue };
        let name = field[..colon].trim_ascii_end();
        if name.eq_ignore_ascii_case(b"From") {
            from.push(field);
        } else if name.eq_ignore_ascii_case(b"Sender") {
            sender.push(field);
        }
    }
    let [from] = from.as_slice() else { return Err(OriginatorProblem::FromCount) };
    if sender.len() > 1 {
        return Err(OriginatorProblem::SenderCount);
    }
    let from = field_addresses(from);
    let sender = match sender.first() {
        Some(field) => Some(field_addresses(field).into_iter().next().ok_or(OriginatorProblem::Unreadable)?),
        None => None,
    };
    if from.is_empty() {
        return Err(OriginatorProblem::Unreadable);
    }
    Ok(Originators { from, sender })
}

/// The header fields of a header section, each with its continuation lines.
pub(crate) fn header_fields(headers: &[u8]) -> Vec<&[u8]> {
    let mut fields = Vec::new();
    let mut start: Option<usize> = None;
    let mut position = 0;
    for line in headers.split_inclusive(|&byte| byte == b'\n') {
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !continuation {
            if let Some(begin) = start.take() {
                fields.push(&headers[begin..position]);
            }
            if line != b"\r\n" {
                start = Some(position);
            }
        }
        position += line.len();
    }
    if let Some(begin) = start {
        fields.push(&headers[begin..position]);
    }
    fields
}

/// The addresses of one `From:`/`Sender:` field, renamed so mail-parser reads it as `From:`.
fn field_addresses(field: &[u8]) -> Vec<String> {
    let colon = field.iter().position(|&byte| byte == b':').unwrap_or(0);
    let mut header = b"From:".to_vec();
    header.extend_from_slice(&field[colon + 1..]);
    if !header.ends_with(b"\n") {
        header.extend_from_slice(b"\r\n");
    }
    header.extend_from_slice(b"\r\n");
    let Some(message) = MessageParser::new().parse_headers(&header[..]) else { return Vec::new() };
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
    fn tls_required_no_is_read_from_the_header_only() {
        assert!(waives_tls_policy(b"Subject: x\r\nTLS-Required: No\r\n\r\n"));
        assert!(waives_tls_policy(b"tls-required:\r\n  no \r\nFrom: a@b\r\n\r\n"));
        for headers in [
            &b"TLS-Required: Yes\r\n\r\n"[..],
            b"TLS-Required: Nope\r\n\r\n",
            b"X-TLS-Required: No\r\n\r\n",
            b"Subject: TLS-Required: No\r\n\r\n",
        ] {
            assert!(!waives_tls_policy(headers), "{headers:?}");
        }
    }

    #[test]
    fn finds_headers_and_from() {
        let content = "From: \"Văn thư\" <VanThu@NinhThuan.gov.vn>, b@x.vn\r\nSubject: Giấy mời\r\n\r\nBody\r\nFrom: evil@x.vn\r\n".as_bytes();
        let found = originators(content).unwrap();
        assert_eq!(found.from, vec!["vanthu@ninhthuan.gov.vn", "b@x.vn"]);
        assert_eq!(found.sender, None);
        let headers = header_section(content);
        assert!(has_header(headers, "subject"));
        assert!(!has_header(headers, "Date"));
        assert!(!has_header(b"Subject-Date: x\r\n\r\n", "Subject"));
    }

    #[test]
    fn originator_fields_are_counted_and_read_as_sent() {
        let two = b"From: <a@x.vn>\r\nSubject: s\r\nfrom :\r\n <b@x.vn>\r\n\r\n";
        assert_eq!(originators(two), Err(OriginatorProblem::FromCount));
        assert_eq!(originators(b"Subject: s\r\n\r\nFrom: <a@x.vn>\r\n"), Err(OriginatorProblem::FromCount));
        let senders = b"From: <a@x.vn>\r\nSender: <a@x.vn>\r\nSENDER: <b@x.vn>\r\n\r\n";
        assert_eq!(originators(senders), Err(OriginatorProblem::SenderCount));
        assert_eq!(originators(b"From: nobody\r\n\r\n"), Err(OriginatorProblem::Unreadable));
        let folded = b"Subject: s\r\nFrom: =?utf-8?q?V=C4=83n?=\r\n\t<VanThu@X.vn>\r\nSender: <S@x.vn>\r\n\r\nbody";
        let found = originators(folded).unwrap();
        assert_eq!((found.from, found.sender), (vec!["vanthu@x.vn".to_owned()], Some("s@x.vn".to_owned())));
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
