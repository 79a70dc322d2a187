//! Building audit lines from what the relay knows at acceptance and after an attempt.

use super::{Accepted, Attempt, AuthResults, DkimSigned, Outcome, Record, SenderResults, rfc3339};
use crate::dkim::Signed;
use crate::session::{Envelope, Listener, Trace};

/// Longest Message-ID kept (a header line's limit, RFC 5322 2.1.1).
const MAX_MESSAGE_ID: usize = 998;

/// The acceptance line of a message; `content` is the stored message (headers read only).
pub fn accepted(
    queue_id: &str,
    trace: &Trace,
    envelope: &Envelope,
    content: &[u8],
    signed: Option<&Signed>,
    checked: Option<&crate::senders::Checked>,
    now_unix: u64,
) -> Record {
    let headers = crate::message::header_section(content);
    let message_id = crate::message::header_value(headers, "Message-ID").map(|value| {
        let mut value = value.trim().to_owned();
        if value.len() > MAX_MESSAGE_ID {
            let mut end = MAX_MESSAGE_ID;
            while !value.is_char_boundary(end) {
                end -= 1;
            }
            value.truncate(end);
        }
        value
    });
    Record::Accepted(Accepted {
        queue_id: queue_id.to_owned(),
        time: rfc3339(now_unix),
        client: trace.peer.to_string(),
        helo: trace.helo.clone(),
        listener: match trace.listener {
            Listener::Mx => "mx",
            Listener::Submission => "submission",
            Listener::Submissions => "submissions",
        }
        .to_owned(),
        tls_version: trace.tls.as_ref().map(|tls| tls.protocol.clone()),
        tls_cipher: trace.tls.as_ref().map(|tls| tls.cipher.clone()),
        user: trace.authenticated.clone(),
        sender: envelope.sender.as_ref().map(ToString::to_string).unwrap_or_default(),
        recipients: envelope.recipients.iter().map(|recipient| recipient.address.to_string()).collect(),
        message_id,
        size: content.len() as u64,
        auth: (signed.is_some() || checked.is_some()).then(|| AuthResults {
            dkim_signed: signed
                .map(|signed| DkimSigned { domain: signed.domain.clone(), selectors: signed.selectors.to_vec() }),
            checked: checked.map(|checked| {
                Box::new(SenderResults {
                    spf: checked.spf.to_owned(),
                    dkim: checked.dkim.to_owned(),
                    arc: checked.arc.to_owned(),
                    dmarc: checked.dmarc.to_owned(),
                    from_domain: checked.from_domain.clone(),
                    verdict: match checked.verdict {
                        crate::senders::Verdict::Quarantine => "quarantined",
                        _ => "accepted",
                    }
                    .to_owned(),
                })
            }),
        }),
    })
}

/// One attempt's line; `reply` is the SMTP reply or the relay's own diagnostic.
pub fn attempt(
    queue_id: &str,
    recipient: &str,
    remote: Option<&str>,
    reply: &str,
    outcome: Outcome,
    now_unix: u64,
) -> Record {
    let (reply_code, reply) = Attempt::reply_parts(reply);
    Record::Attempt(Attempt {
        queue_id: queue_id.to_owned(),
        time: rfc3339(now_unix),
        recipient: recipient.to_owned(),
        remote: remote.map(str::to_owned),
        reply_code,
        reply,
        outcome,
        dane: false,
    })
}
