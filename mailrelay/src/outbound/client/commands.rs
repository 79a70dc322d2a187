//! The commands of a transaction, built from the queued message and what the next hop offers.

use std::collections::VecDeque;

use smtp_proto::{EXT_8BIT_MIME, EXT_DSN, EXT_SIZE, EXT_SMTP_UTF8};

use super::{Extensions, Outgoing};

/// One command line: no control character anywhere, CRLF added when written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine(String);

impl CommandLine {
    /// `None` when `text` holds a control character (CR, LF, NUL, DEL, C1...).
    pub fn new(text: String) -> Option<Self> {
        (!text.chars().any(char::is_control)).then_some(Self(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A fixed command written in the conversation's own code.
    pub(super) fn constant(text: &'static str) -> Self {
        Self(text.to_owned())
    }
}

/// `MAIL FROM:` and one `RCPT TO:` per recipient, with the parameters the next hop offers,
/// still to be checked for control characters.
pub(super) fn transaction(message: &Outgoing<'_>, extensions: Extensions) -> (String, VecDeque<String>) {
    let offers = |extension| extensions.offers(extension);
    let dsn = offers(EXT_DSN);
    let mut mail = format!("MAIL FROM:<{}>", message.sender.map(ToString::to_string).unwrap_or_default());
    if offers(EXT_SIZE) {
        mail.push_str(&format!(" SIZE={}", message.content.len()));
    }
    if message.eight_bit && offers(EXT_8BIT_MIME) {
        mail.push_str(" BODY=8BITMIME");
    }
    if message.smtputf8 && offers(EXT_SMTP_UTF8) {
        mail.push_str(" SMTPUTF8");
    }
    if message.require_tls {
        mail.push_str(" REQUIRETLS");
    }
    if dsn {
        mail.push_str(if message.return_full { " RET=FULL" } else { " RET=HDRS" });
        if let Some(id) = message.envelope_id {
            mail.push_str(&format!(" ENVID={}", id.to_xtext()));
        }
    }
    let mut pending = VecDeque::with_capacity(message.recipients.len());
    for (address, notify, original) in &message.recipients {
        let mut rcpt = format!("RCPT TO:<{address}>");
        if dsn {
            if let Some(notify) = notify_parameter(*notify) {
                rcpt.push_str(&format!(" NOTIFY={notify}"));
            }
            if let Some(original) = original {
                rcpt.push_str(&format!(" ORCPT={}", original.to_parameter()));
            }
        }
        pending.push_back(rcpt);
    }
    (mail, pending)
}

fn notify_parameter(flags: u64) -> Option<String> {
    if flags == 0 {
        return None;
    }
    if flags & smtp_proto::RCPT_NOTIFY_NEVER != 0 {
        return Some("NEVER".into());
    }
    let mut parts = Vec::new();
    for (bit, name) in [
        (smtp_proto::RCPT_NOTIFY_SUCCESS, "SUCCESS"),
        (smtp_proto::RCPT_NOTIFY_FAILURE, "FAILURE"),
        (smtp_proto::RCPT_NOTIFY_DELAY, "DELAY"),
    ] {
        if flags & bit != 0 {
            parts.push(name);
        }
    }
    (!parts.is_empty()).then(|| parts.join(","))
}

/// Adds the transparency dot (RFC 5321 4.5.2) and ends the content with CRLF.
/// Content in the queue only has CRLF line endings (bare CR/LF are refused on the way in).
pub fn dot_stuff(content: &[u8]) -> Vec<u8> {
    let mut stuffed = Vec::with_capacity(content.len() + content.len() / 64 + 8);
    let mut at_line_start = true;
    for &byte in content {
        if at_line_start && byte == b'.' {
            stuffed.push(b'.');
        }
        stuffed.push(byte);
        at_line_start = byte == b'\n';
    }
    if !content.is_empty() && !content.ends_with(b"\r\n") {
        stuffed.extend_from_slice(b"\r\n");
    }
    stuffed
}
