//! Delivery status notifications (RFC 3464) for recipients that failed for good.

use crate::message::{header_section, rfc822_date};
use crate::queue::{Meta, StoredRecipient};

/// One recipient that will not get the message.
pub struct FailedRecipient {
    pub recipient: StoredRecipient,
    /// The remote reply or our own reason, e.g. `550 5.1.1 no such user`.
    pub diagnostic: String,
    /// The host that answered, if one did.
    pub remote: Option<String>,
}

/// Whether the sender asked (or by default wants) to hear about this failure (RFC 3461 4.1).
pub fn wants_failure_notice(recipient: &StoredRecipient) -> bool {
    let notify = recipient.notify;
    notify == 0 || notify & smtp_proto::RCPT_NOTIFY_FAILURE != 0 && notify & smtp_proto::RCPT_NOTIFY_NEVER == 0
}

/// Builds the bounce for `original` (queued as `meta`), to go to `meta.sender`.
pub fn bounce(
    hostname: &str,
    meta: &Meta,
    original: &[u8],
    failed: &[FailedRecipient],
    id: &str,
    now_unix: u64,
) -> Vec<u8> {
    let boundary = format!("{id}/{hostname}");
    let date = rfc822_date(now_unix);
    let sender = meta.sender.as_ref().map(ToString::to_string).unwrap_or_default();
    let mut text = String::new();
    text.push_str(&format!("From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n"));
    text.push_str(&format!("To: <{sender}>\r\n"));
    text.push_str("Subject: Undelivered Mail Returned to Sender (Thư không gửi được)\r\n");
    text.push_str(&format!("Date: {date}\r\nMessage-ID: <{id}@{hostname}>\r\n"));
    text.push_str("Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n");
    text.push_str(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\r\n"
    ));
    text.push_str(&format!(
        "--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    ));
    text.push_str(&format!(
        "This is the mail system at {hostname}.\r\n\r\nYour message could not be delivered to one or more recipients.\r\n\
         Thư của bạn không gửi được tới một hoặc nhiều người nhận.\r\n\r\n"
    ));
    for failure in failed {
        text.push_str(&format!("<{}>: {}\r\n", failure.recipient.address, one_line(&failure.diagnostic)));
    }
    text.push_str(&format!("\r\n--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"));
    text.push_str(&format!("Reporting-MTA: dns; {hostname}\r\nX-Lienthong-Queue-ID: {}\r\n", meta.id));
    if let Some(envelope_id) = &meta.envelope_id {
        text.push_str(&format!("Original-Envelope-Id: {}\r\n", envelope_id.as_str()));
    }
    text.push_str(&format!("Arrival-Date: {}\r\n", rfc822_date(meta.arrived_unix)));
    for failure in failed {
        text.push_str(&format!("\r\nFinal-Recipient: rfc822; {}\r\n", failure.recipient.address));
        if let Some(original) = &failure.recipient.original {
            text.push_str(&format!("Original-Recipient: {original}\r\n"));
        }
        text.push_str(&format!("Action: failed\r\nStatus: {}\r\n", status_code(&failure.diagnostic)));
        if let Some(remote) = &failure.remote {
            text.push_str(&format!("Remote-MTA: dns; {remote}\r\n"));
        }
        text.push_str(&format!(
            "Diagnostic-Code: smtp; {}\r\nLast-Attempt-Date: {date}\r\n",
            one_line(&failure.diagnostic)
        ));
    }
    let mut message = text.into_bytes();
    // RFC 8689 5: the way back may not be protected; a REQUIRETLS message's body stays out.
    if meta.return_full && !meta.require_tls {
        message.extend_from_slice(format!("\r\n--{boundary}\r\nContent-Type: message/rfc822\r\n\r\n").as_bytes());
        message.extend_from_slice(original);
    } else {
        message.extend_from_slice(format!("\r\n--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n").as_bytes());
        message.extend_from_slice(header_section(original));
    }
    if !message.ends_with(b"\r\n") {
        message.extend_from_slice(b"\r\n");
    }
    message.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    message
}

/// The enhanced status code in a reply, or a generic permanent failure.
fn status_code(diagnostic: &str) -> String {
    diagnostic
        .split_whitespace()
        .take(2)
        .find(|word| {
            let parts: Vec<&str> = word.split('.').collect();
            parts.len() == 3 && parts.iter().all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_digit()))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| "5.0.0".to_owned())
}

/// A diagnostic (a remote reply or our own reason) as one line without control characters.
fn one_line(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes() {
        assert_eq!(status_code("550 5.1.1 no such user"), "5.1.1");
        assert_eq!(status_code("550 no such user"), "5.0.0");
    }
}
